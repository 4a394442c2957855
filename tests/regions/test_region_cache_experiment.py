"""The experiment with ``data.region_cache``: same metrics as a frozen image side run on images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sacred import SETTINGS

from detectors.region_cache import main as extract
from experiments.train import ex
from mnerqg_graph.data.synth import generate

SETTINGS.CAPTURE_MODE = "sys"  # pytest owns the file descriptors

FAST_BACKBONE = {"width": 8, "out_channels": 16, "min_stride": 16}  # the fast config's


def test_cached_run_equals_frozen_run_on_images(tmp_path: Path) -> None:
    root = tmp_path / "synth"
    generate(root, seed=0, n_train=24, n_valid=12, n_test=12)  # what the fast config generates
    cache = tmp_path / "regions"
    argv = ["--grid", "--data", str(root), "--out", str(cache), "--no-progress"]
    assert extract([*argv, "--backbone-kwargs", json.dumps(FAST_BACKBONE)]) == 0
    common = {"data": {"root": str(root)}, "seed": 1, "visualize": 0}
    cached = ex.run(
        named_configs=["fast"],
        config_updates={**common, "data": {"root": str(root), "region_cache": str(cache)}},
    )
    frozen = ex.run(
        named_configs=["fast"],
        config_updates={
            **common,
            "model": {
                "image": {
                    "freeze_image": True,
                    "backbone_kwargs": {
                        **FAST_BACKBONE,
                        "weights": str(cache / "backbone.safetensors"),
                    },
                },
            },
        },
        options={"--force": True},  # a new backbone_kwargs key (sacred -f)
    )
    info = cached.info  # type: ignore[attr-defined]
    assert info["region_cache_train"]["read"] > 0
    assert "region_cache_train" not in frozen.info  # type: ignore[attr-defined]
    a, b = cached.result, frozen.result  # type: ignore[attr-defined]
    for key in ("valid/f1", "test/f1", "test/grounding_acc", "test/grounded_f1"):
        assert a[key] == pytest.approx(b[key], abs=1e-9), key
    la = [h["train/loss_total"] for h in info["history"]]
    lb = [h["train/loss_total"] for h in frozen.info["history"]]  # type: ignore[attr-defined]
    assert la == pytest.approx(lb, rel=1e-4)
