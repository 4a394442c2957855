"""Fixtures for model tests: one tiny encoder per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import tiny_encoder


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT directory."""
    return tiny_encoder(tmp_path_factory.mktemp("tiny"))
