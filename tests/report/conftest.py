"""A small SynthTweets set, a tiny random checkpoint and its report page, shared by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report_page import tiny_checkpoint
from tests.helpers import one_torch_thread


@dataclass
class Built:
    root: Path  # the data-set folder (images and boxes)
    checkpoint: Path
    page: Path  # the report of the valid split
    data: dict[str, Any]  # the data embedded in the page


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread (OpenMP threads spin badly on a shared, busy CPU)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    from mnerqg_graph.data.dataset import load_split
    from mnerqg_graph.data.synth import generate
    from mnerqg_graph.report import extract_data
    from mnerqg_graph.report.cli import main

    tmp = tmp_path_factory.mktemp("report")
    root = tmp / "synth"
    generate(root, seed=0, n_train=6, n_valid=14, n_test=2, image_size=48)
    train = load_split(root, "train").samples
    page = tmp / "report.html"
    # a random model's span probabilities sit near 0.5: pick the span bias at which it gets some
    # entities right and misses others (the page then has tweets of every kind to filter)
    for bias in (-0.15, -0.1, -0.2, -0.05, -0.25, 0.0):
        ckpt = tiny_checkpoint([s.tweet.tokens for s in train], tmp / "checkpoint", span_bias=bias)
        argv = ["--checkpoint", str(ckpt), "--data", str(root), "--out", str(page)]
        assert main([*argv, "--device", "cpu"]) == 0
        data = extract_data(page.read_text(encoding="utf-8"))
        kinds = {k for t in data["tweets"] for k in t["kinds"]}
        if {"missed", "spurious", "boundary"} <= kinds:
            break
    return Built(root, ckpt, page, data)
