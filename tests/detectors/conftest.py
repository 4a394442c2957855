"""Fixtures of the detector tests: one intra-op thread and seed 0 for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import one_torch_thread


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread (faster on a shared, busy CPU, and deterministic), seed 0."""
    with one_torch_thread(seed=0):
        yield
