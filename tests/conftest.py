"""Fixtures shared by the test suite: the real Twitter-2015/2017 files when present, one thread."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def real_data_root() -> Path | None:
    """The folder holding ``twitter2015/`` and ``twitter2017/``, or None.

    ``$MNERQG_DATA`` when set, else ``<repo>/../shared/data``.
    """
    env = os.environ.get("MNERQG_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    return root if (root / "twitter2015").is_dir() and (root / "twitter2017").is_dir() else None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real data folder; the test is skipped (with the reason) when it is absent."""
    root = real_data_root()
    if root is None:
        pytest.skip("real Twitter-2015/2017 files not found: set MNERQG_DATA to their folder")
    return root


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a test module (``pytestmark = pytest.mark.usefixtures(...)``).

    On a shared 2-core machine, tiny ops run 10x+ faster with one thread than with two.
    """
    from tests.helpers import one_torch_thread

    with one_torch_thread():
        yield
