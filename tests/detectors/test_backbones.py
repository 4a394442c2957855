"""Tests of the image backbones and region sources (CPU, tiny inputs, no downloaded weights)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from detectors import (
    BACKBONE_REGISTRY,
    REGION_SOURCE_REGISTRY,
    ImageBackbone,
    RegionSet,
    ShapeSpec,
    build_backbone,
    build_region_source,
    grid_boxes,
    grid_neighbors,
    parent_index,
)
from mnerqg_graph.errors import CheckpointError, ConfigError
from mnerqg_graph.regions import assign_levels

TINY: dict[str, dict[str, int]] = {
    "small_cnn": {"width": 8, "out_channels": 16},
    "resnet18_fpn": {"out_channels": 16},
    "mobilenet_v3_fpn": {"out_channels": 16},
}
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
needs_torchvision = pytest.mark.skipif(
    not HAS_TORCHVISION, reason="torchvision not installed (the 'vision' extra)"
)
ALL_BACKBONES = [
    pytest.param(name, marks=[] if name == "small_cnn" else [needs_torchvision])
    for name in sorted(TINY)
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _maps_match_spec(maps: list[torch.Tensor], specs: list[ShapeSpec], size: int) -> None:
    assert len(maps) == len(specs) == 3
    assert [s.stride for s in specs] == sorted((s.stride for s in specs), reverse=True)
    for fmap, spec in zip(maps, specs, strict=True):
        assert fmap.shape == (2, spec.channels, size // spec.stride, size // spec.stride)


# --------------------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------------------


def test_registry_lists_all_backbones() -> None:
    assert {"small_cnn", "resnet18_fpn", "mobilenet_v3_fpn"} <= set(BACKBONE_REGISTRY.names())
    with pytest.raises(ConfigError, match="known: .*small_cnn"):
        build_backbone("no_such_backbone")


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_backbone_maps_match_output_shape(name: str) -> None:
    model = build_backbone(name, weights=None, **TINY[name])
    assert isinstance(model, ImageBackbone)
    specs = model.output_shape()
    assert [s.stride for s in specs] == [32, 16, 8]
    maps = model(torch.rand(2, 3, 64, 64))
    assert [tuple(m.shape[-2:]) for m in maps] == [(2, 2), (4, 4), (8, 8)]
    _maps_match_spec(maps, specs, 64)


@needs_torchvision
def test_build_accepts_instance_and_mobilenet_large() -> None:
    model = build_backbone("mobilenet_v3_fpn", variant="large", out_channels=8)
    assert build_backbone(model) is model
    _maps_match_spec(model(torch.rand(2, 3, 64, 64)), model.output_shape(), 64)
    with pytest.raises(ConfigError, match="variant"):
        build_backbone("mobilenet_v3_fpn", variant="medium")


def test_small_cnn_min_stride_and_256px() -> None:
    model = build_backbone("small_cnn", width=4, out_channels=8, min_stride=4)
    assert [s.stride for s in model.output_shape()] == [16, 8, 4]
    _maps_match_spec(model(torch.rand(2, 3, 64, 64)), model.output_shape(), 64)
    model = build_backbone("small_cnn", width=4, out_channels=8)
    maps = model(torch.rand(2, 3, 256, 256))
    assert [tuple(m.shape[-2:]) for m in maps] == [(8, 8), (16, 16), (32, 32)]
    with pytest.raises(ConfigError, match="min_stride"):
        build_backbone("small_cnn", min_stride=6)


def test_backbone_rejects_bad_input_shape() -> None:
    model = build_backbone("small_cnn", **TINY["small_cnn"])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.rand(2, 1, 64, 64))


def test_small_cnn_forward_backward_reaches_every_parameter() -> None:
    model = build_backbone("small_cnn")  # default size (its speed: the throughput benchmark)
    images = torch.rand(2, 3, 64, 64)
    loss = sum(m.square().mean() for m in model(images))
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_every_scale_sees_coarser_context() -> None:
    """The top-down merge makes the finest map depend on pixels far outside its local window."""
    model = build_backbone("small_cnn", **TINY["small_cnn"]).eval()
    images = torch.rand(1, 3, 64, 64, requires_grad=True)
    fine = model(images)[-1]
    fine[0, :, 0, 0].sum().backward()  # top-left cell of the stride-8 map
    assert images.grad is not None
    assert images.grad[0, :, 48:, 48:].abs().sum() > 0  # bottom-right corner influences it


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_safetensors_weights_roundtrip(name: str, tmp_path: Path) -> None:
    model = build_backbone(name, **TINY[name]).eval()
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    torch.manual_seed(123)
    fresh = build_backbone(name, weights=str(path), **TINY[name]).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(images), fresh(images), strict=True):
            torch.testing.assert_close(a, b)


@needs_torchvision
@pytest.mark.parametrize("name", ["resnet18_fpn", "mobilenet_v3_fpn"])
def test_torchvision_classifier_state_dict_loads_into_trunk(name: str, tmp_path: Path) -> None:
    """A torchvision ``.pth`` (classifier state dict, with its head keys) loads via torch.load."""
    from torchvision.models import mobilenet_v3_small, resnet18

    classifier: nn.Module = resnet18() if name == "resnet18_fpn" else mobilenet_v3_small()
    path = tmp_path / "classifier.pth"
    torch.save(classifier.state_dict(), path)
    model = build_backbone(name, weights=str(path), freeze=True, **TINY[name])
    ref = {k: v for k, v in classifier.state_dict().items() if "num_batches" not in k}
    body, fpn = model.get_submodule("body"), model.get_submodule("fpn")
    prefix = "features." if name == "mobilenet_v3_fpn" else ""
    for key, value in body.state_dict().items():
        if "num_batches" not in key:
            torch.testing.assert_close(value, ref[prefix + key])
    assert not any(p.requires_grad for p in body.parameters())
    assert any(p.requires_grad for p in fpn.parameters())
    model.train()
    assert not body.training and fpn.training


def test_wrong_weights_file_names_the_file(tmp_path: Path) -> None:
    wrong = tmp_path / "other_model.safetensors"
    save_file({"foo.weight": torch.zeros(3)}, str(wrong))
    for name in sorted(TINY) if HAS_TORCHVISION else ["small_cnn"]:
        with pytest.raises(CheckpointError, match=r"other_model\.safetensors.*missing keys"):
            build_backbone(name, weights=str(wrong), **TINY[name])
    small = build_backbone("small_cnn", width=4, out_channels=8)
    shapes = tmp_path / "small_w4.safetensors"
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(shapes))
    with pytest.raises(CheckpointError, match=r"small_w4\.safetensors.*shape keys"):
        build_backbone("small_cnn", width=8, out_channels=8, weights=str(shapes))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pth: cannot read weights"):
        build_backbone("small_cnn", weights=str(garbage))
    with pytest.raises(CheckpointError, match=r"missing\.pth: weights file not found"):
        build_backbone("small_cnn", weights=str(tmp_path / "missing.pth"))


# --------------------------------------------------------------------------------------------------
# Region helpers and sources
# --------------------------------------------------------------------------------------------------


def test_grid_boxes_tile_the_image() -> None:
    boxes = grid_boxes(4, 2)
    assert boxes.shape == (8, 4)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    torch.testing.assert_close((widths * heights).sum(), torch.tensor(1.0))
    assert boxes.min() == 0.0 and boxes.max() == 1.0
    torch.testing.assert_close(boxes[3], torch.tensor([0.5, 0.25, 1.0, 0.5]))  # row 1, col 1


def test_parent_index_2x2_to_4x4() -> None:
    parent = parent_index(4, 4, 2, 2).view(4, 4)
    expected = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    assert torch.equal(parent, expected)
    odd = parent_index(7, 7, 4, 4)  # odd map sizes still give one valid parent per cell
    assert odd.shape == (49,) and odd.min() == 0 and odd.max() == 15


def test_grid_neighbors_3x3() -> None:
    edges = grid_neighbors(3, 3)
    assert edges.shape == (2, 40)
    degree = torch.bincount(edges[0], minlength=9)
    assert degree.tolist() == [3, 5, 3, 5, 8, 5, 3, 5, 3]
    pairs = set(map(tuple, edges.t().tolist()))
    assert all((d, s) in pairs for s, d in pairs)  # both directions
    assert all(s != d for s, d in pairs)
    assert grid_neighbors(1, 1).shape == (2, 0)


def test_grid_regions() -> None:
    source = build_region_source("grid")
    maps = [torch.rand(2, 5, n, n) for n in (2, 4, 8)]
    sets = source.regions(maps, image_size=64)
    assert len(sets) == 3 and all(isinstance(s, RegionSet) for s in sets)
    for fmap, rs in zip(maps, sets, strict=True):
        n = fmap.shape[-1]
        assert rs.grid == (n, n) and rs.mask is None
        assert rs.features.shape == (2, n * n, 5) and rs.boxes.shape == (n * n, 4)
        torch.testing.assert_close(rs.features[1, n + 1], fmap[1, :, 1, 1])  # row-major cells
        torch.testing.assert_close(rs.boxes, grid_boxes(n, n))
        assert rs.batched_boxes().shape == (2, n * n, 4) and rs.valid_mask().all()
    assert (sets[0].parent == -1).all()
    assert torch.equal(sets[1].parent, parent_index(4, 4, 2, 2))
    assert torch.equal(sets[2].parent, parent_index(8, 8, 4, 4))
    coarse = build_region_source("grid", scales=1).regions(maps, image_size=64)
    assert len(coarse) == 1 and coarse[0].grid == (2, 2)
    with pytest.raises(ConfigError, match="scales"):
        build_region_source("grid", scales=4)
    assert {"grid", "detector_boxes"} <= set(REGION_SOURCE_REGISTRY.names())


def test_assign_levels() -> None:
    boxes = torch.tensor(
        [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.3, 0.3], [0.5, 0.5, 0.6, 0.6], [0.1, 0.1, 0.1, 0.1]]
    )
    assert assign_levels(boxes).tolist() == [0, 1, 2, 2]
    assert assign_levels(boxes, num_scales=2).tolist() == [0, 1, 1, 1]


@needs_torchvision
def test_detector_box_regions_shapes_mask_and_parents() -> None:
    source = build_region_source("detector_boxes", max_regions=3)
    maps = [torch.rand(2, 6, n, n) for n in (2, 4, 8)]
    boxes = [
        torch.tensor(
            [
                [0.0, 0.0, 0.8, 0.8],  # large -> scale 0
                [0.1, 0.1, 0.4, 0.4],  # medium -> scale 1, inside box 0
                [0.2, 0.2, 0.3, 0.3],  # small -> scale 2, inside the medium box
                [0.6, 0.6, 0.7, 0.7],  # small -> scale 2
                [0.7, 0.7, 0.8, 0.8],  # small -> scale 2
                [0.8, 0.8, 0.9, 0.9],  # small -> scale 2, over max_regions: dropped
            ]
        ),
        torch.zeros(0, 4),  # an image without boxes
    ]
    sets = source.regions(maps, image_size=64, boxes=boxes)
    assert len(sets) == 3
    for rs in sets:
        assert rs.grid is None
        assert rs.features.shape == (2, 3, 6)
        assert rs.boxes.shape == (2, 3, 4) and rs.parent.shape == (2, 3)
        assert rs.mask is not None and rs.mask.shape == (2, 3)
        assert not rs.mask[1].any() and (rs.features[1] == 0).all() and (rs.parent[1] == -1).all()
    assert [rs.valid_mask()[0].sum().item() for rs in sets] == [1, 1, 3]
    torch.testing.assert_close(sets[2].boxes[0, 2], boxes[0][4])
    assert sets[1].parent[0].tolist() == [0, -1, -1]
    assert sets[2].parent[0].tolist() == [0, -1, -1]  # only the first small box overlaps box 1
    # The pooled feature of a box equals RoIAlign on its scale's map, averaged.
    from torchvision.ops import roi_align

    roi = torch.tensor([[0.0, 0.0, 0.0, 1.6, 1.6]])  # box 0 on the 2x2 map
    ref = roi_align(maps[0], roi, (2, 2), 1.0, 2, aligned=True).mean(dim=(2, 3))[0]
    torch.testing.assert_close(sets[0].features[0, 0], ref)
    with pytest.raises(ConfigError, match="needs detector boxes"):
        source.regions(maps, image_size=64)


@needs_torchvision
def test_detector_box_regions_backprop() -> None:
    source = build_region_source("detector_boxes", max_regions=2)
    maps = [torch.rand(1, 4, n, n, requires_grad=True) for n in (2, 4, 8)]
    sets = source.regions(maps, 64, boxes=[torch.tensor([[0.1, 0.1, 0.2, 0.2]])])
    sum(rs.features.sum() for rs in sets).backward()  # type: ignore[union-attr]
    assert maps[2].grad is not None and maps[2].grad.abs().sum() > 0
