"""Fixtures for region tests: a tiny encoder and a saved detector with known boxes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_encoder
from tests.regions.helpers import fixed_detector


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: tiny ops run faster on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT directory."""
    return tiny_encoder(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def detector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``fixed_boxes`` detector checkpoint."""
    return fixed_detector(tmp_path_factory.mktemp("det"))
