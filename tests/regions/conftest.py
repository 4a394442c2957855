"""Fixtures for region tests: a tiny encoder and a saved detector with known boxes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import tiny_encoder
from tests.regions.helpers import fixed_detector


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread: None) -> None:
    """One intra-op thread (``tests/conftest.py``'s fixture) for every module of the folder."""


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT directory."""
    return tiny_encoder(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def detector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``fixed_boxes`` detector checkpoint."""
    return fixed_detector(tmp_path_factory.mktemp("det"))
