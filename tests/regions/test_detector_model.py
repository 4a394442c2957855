"""The model on detector regions: nodes per image, every fusion module trains, grounding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnerqg_graph.config import ModelConfig
from mnerqg_graph.fusion import FUSION_REGISTRY
from mnerqg_graph.heads import BoxGroundingHead
from mnerqg_graph.model import build_model
from tests.helpers import index_gathers, items_and_batch, repeats_a_row, tiny_config
from tests.regions.helpers import image_samples

IMAGE_MODULES = [
    m for m in FUSION_REGISTRY.names() if getattr(FUSION_REGISTRY.get(m), "uses_image", True)
]


def detector_config(
    encoder: Path, detector: Path, over: dict[str, object] | None = None
) -> ModelConfig:
    """A tiny model on the fixed detector's boxes (score threshold 0.3, K = 16)."""
    return tiny_config(
        encoder,
        {
            "image.regions": "detector",
            "image.detector": str(detector),
            "image.region_kwargs": {"max_regions": 16, "score_threshold": 0.3},
            **(over or {}),
        },
    )


def test_detector_regions_in_the_graph(
    tmp_path: Path, encoder_dir: Path, detector_dir: Path
) -> None:
    cfg = detector_config(encoder_dir, detector_dir)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert cfg.image.detector_config == {"backend": "fixed_boxes", "kwargs": {"types": cfg.types}}
    assert not any(p.requires_grad for p in model.detector.parameters())  # type: ignore[union-attr]
    assert not hasattr(model, "region_pos") and model.spec.grids == ()
    _, batch = items_and_batch(image_samples(tmp_path), encoder_dir, cfg)
    out = model(batch, return_graph=True)
    g = out.graph
    t = len(cfg.types)
    # images of tweets 0, 1, 2 get 0, 1 and 4 boxes (scales 1: 0,1,1; 2: 0,0,2; 3: 0,0,1), each
    # copied to the tweet's T examples; tweet 3 has no image
    for rtype, per_tweet in (
        ("region_s1", [0, 1, 1]),
        ("region_s2", [0, 0, 2]),
        ("region_s3", [0, 0, 1]),
    ):
        counts = torch.bincount(g[rtype].batch, minlength=4 * t).view(4, t)
        assert counts.tolist() == [[c] * t for c in per_tweet + [0]], rtype
    assert g["image"].num_nodes == 4 * t
    # grounding over each example's own regions: C = 4 (tweet 2's boxes), mask per example
    assert out.grounding_mask is not None and out.grounding_logits is not None
    assert out.grounding_mask.sum(1).tolist() == [0] * t + [1] * t + [4] * t
    assert out.grounding_logits.shape == (3 * t, 4)
    # an example whose image has no region is "not in the image"
    _, boxes = model.decode(out)
    assert all(b is None for b in boxes[:t])  # no box to point at, whatever the threshold
    assert all(b is not None for b in boxes[t : 3 * t])  # tweets 1 and 2 have boxes
    assert out.grounding_anchors is not None
    assert torch.allclose(out.grounding_anchors[t, 0], torch.tensor([0.1, 0.1, 0.5, 0.75]))


@pytest.mark.parametrize("module", IMAGE_MODULES)
def test_every_fusion_module_trains_on_detector_regions(
    module: str, tmp_path: Path, encoder_dir: Path, detector_dir: Path
) -> None:
    cfg = detector_config(encoder_dir, detector_dir, {"fusion.name": module})
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert model.detector is not None and not model.detector.training
    _, batch = items_and_batch(image_samples(tmp_path), encoder_dir, cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = model.losses(batch, model(batch))
    assert torch.isfinite(losses["total"]) and "grounding" in losses
    opt.zero_grad()
    losses["total"].backward()
    geo = model.region_geometry[0].weight
    assert geo.grad is not None and geo.grad.abs().sum() > 0
    assert model.backbone is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    opt.step()


def test_frozen_image_side(tmp_path: Path, encoder_dir: Path, detector_dir: Path) -> None:
    cfg = detector_config(encoder_dir, detector_dir, {"image.freeze_image": True})
    model = build_model(cfg).train()
    assert model.backbone is not None and not model.backbone.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    _, batch = items_and_batch(image_samples(tmp_path), encoder_dir, cfg)
    model.losses(batch, model(batch))["total"].backward()


def test_detector_regions_need_a_detector(encoder_dir: Path) -> None:
    from mnerqg_graph.errors import ConfigError

    with pytest.raises(ConfigError, match="model.image.detector=DIR"):
        build_model(tiny_config(encoder_dir, {"image.regions": "detector"}))
    with pytest.raises(ConfigError, match="gives no graph nodes"):
        build_model(tiny_config(encoder_dir, {"image.regions": "detector_boxes"}))


def test_box_grounding_targets_and_refinement() -> None:
    head = BoxGroundingHead(8, 8, num_scales=1, hidden_dim=8)
    anchors = torch.tensor([[[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9], [0.0, 0.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    gt = torch.tensor([[[0.12, 0.1, 0.5, 0.52], [0.6, 0.6, 1.0, 1.0]]])
    conf, box = head.targets(anchors, mask, gt, torch.tensor([[True, True]]))
    # region 0 overlaps gold 0 (IoU > 0.5); region 1 is gold 1's best region (IoU 0.39)
    assert conf.tolist() == [[1.0, 1.0, 0.0]]
    assert torch.equal(box[0, 1], gt[0, 1])
    conf, _ = head.targets(anchors, mask, gt, torch.tensor([[False, False]]))
    assert conf.sum() == 0
    # the refined box stays around its region; padded slots are never picked
    logits, boxes, anc, m = head(
        [torch.randn(2, 8)], [anchors[0, :2]], [torch.tensor([0, 0])], torch.randn(1, 8)
    )
    assert m.tolist() == [[True, True]] and torch.equal(anc[0], anchors[0, :2])
    centre = (boxes[0, :, :2] + boxes[0, :, 2:]) / 2
    anchor_centre = (anchors[0, :2, :2] + anchors[0, :2, 2:]) / 2
    assert ((centre - anchor_centre).abs() <= 0.2 + 1e-6).all()


def test_checkpoint_rebuilds_the_detector_without_its_folder(
    tmp_path: Path, encoder_dir: Path, detector_dir: Path
) -> None:
    import shutil

    from transformers import AutoTokenizer

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.training.checkpoint import load_model, save_model

    moved = tmp_path / "det"
    shutil.copytree(detector_dir, moved)
    cfg = detector_config(encoder_dir, moved)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    save_model(model, model.config, load_queries(), tok, tmp_path / "ckpt")
    shutil.rmtree(moved)
    loaded, loaded_cfg, _, _ = load_model(tmp_path / "ckpt")
    assert (
        loaded_cfg.image.regions == "detector"
        and loaded_cfg.image.detector_config["backend"] == "fixed_boxes"
    )
    _, batch = items_and_batch(image_samples(tmp_path), encoder_dir, cfg)
    a, b = model(batch), loaded(batch)
    assert a.grounding_logits is not None and b.grounding_logits is not None
    assert torch.allclose(a.grounding_logits, b.grounding_logits)
    assert torch.allclose(a.span_logits[0], b.span_logits[0])


def test_no_gather_of_repeated_rows_in_the_training_backward(
    tmp_path: Path, encoder_dir: Path, detector_dir: Path
) -> None:
    """Each image's box nodes are copied to its examples with a deterministic backward.

    See ``tests/model/test_determinism.py``.
    """
    torch.manual_seed(0)
    cfg = detector_config(
        encoder_dir, detector_dir, {"encoder.query_encoding": "packed", "heads.tag_head": True}
    )
    model = build_model(cfg).train()
    _, batch = items_and_batch(image_samples(tmp_path), encoder_dir, cfg)
    loss = model.losses(batch, model(batch))["total"]
    gathers = index_gathers(loss)
    assert gathers and not any(repeats_a_row(fn) for fn in gathers)
