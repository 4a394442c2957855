"""Tests of :mod:`mnerqg_graph.boxes`: the one IoU and the one normaliser, empty boxes above all."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnerqg_graph.boxes import (
    as_tensor,
    box_area,
    box_intersection,
    box_iou,
    generalized_box_iou,
    normalise_box,
    normalise_boxes,
    pairwise_box_iou,
)
from mnerqg_graph.data.types import Box

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


def t(*rows: tuple[float, float, float, float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def test_iou_of_ordinary_boxes() -> None:
    a = t((0, 0, 10, 10))
    assert box_iou(a, a).tolist() == [1.0]
    assert box_iou(a, t((5, 0, 15, 10))).item() == pytest.approx(50 / 150)
    assert box_iou(a, t((10, 10, 20, 20))).item() == 0.0  # touching corners
    assert box_iou(a, t((2, 2, 4, 4))).item() == pytest.approx(4 / 100)


def test_empty_boxes_have_zero_area_and_zero_iou_never_nan() -> None:
    empty = t((1, 1, 1, 1), (5, 5, 2, 8), (0, 3, 10, 3))  # a point, inverted, a line
    ordinary = t((0, 0, 10, 10))
    assert box_area(empty).tolist() == [0.0, 0.0, 0.0]
    assert box_iou(empty, empty).tolist() == [0.0, 0.0, 0.0]  # empty union
    assert box_iou(empty, ordinary).tolist() == [0.0, 0.0, 0.0]  # inside the other box, still 0
    iou, giou = generalized_box_iou(empty, empty)
    assert not iou.isnan().any() and not giou.isnan().any()
    pair = pairwise_box_iou(empty, t())  # no boxes on one side
    assert pair.shape == (3, 0)
    assert pairwise_box_iou(t(), t()).shape == (0, 0)


def test_pairwise_iou_broadcasts_over_examples_and_matches_paired() -> None:
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(3, 5, 2, generator=gen)
    a = torch.cat([xy, xy + torch.rand(3, 5, 2, generator=gen)], -1)
    xy = torch.rand(3, 4, 2, generator=gen)
    b = torch.cat([xy, xy + torch.rand(3, 4, 2, generator=gen)], -1)
    pair = pairwise_box_iou(a, b)
    assert pair.shape == (3, 5, 4)
    assert torch.equal(pair[1, 2, 3], box_iou(a[1, 2], b[1, 3]))
    assert torch.equal(box_intersection(a[0, 0], a[0, 0]), box_area(a[0, 0]))


def test_giou_is_iou_minus_the_empty_share_of_the_hull() -> None:
    iou, giou = generalized_box_iou(t((0, 0, 1, 1)), t((2, 0, 3, 1)))
    assert iou.item() == 0.0
    assert giou.item() == pytest.approx(0.0 - (3 - 2) / 3)


def test_iou_is_differentiable() -> None:
    a = t((0.1, 0.1, 0.6, 0.6)).requires_grad_()
    _, giou = generalized_box_iou(a, t((0.2, 0.2, 0.7, 0.7)))
    giou.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision not installed (the 'vision' extra)")
def test_matches_torchvision_on_non_empty_boxes() -> None:
    from torchvision.ops import box_iou as tv_box_iou

    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(7, 2, generator=gen)
    a = torch.cat([xy, xy + 0.05 + torch.rand(7, 2, generator=gen)], -1)
    xy = torch.rand(6, 2, generator=gen)
    b = torch.cat([xy, xy + 0.05 + torch.rand(6, 2, generator=gen)], -1)
    assert torch.allclose(pairwise_box_iou(a, b), tv_box_iou(a, b), atol=0, rtol=1e-6)
    # where they part: torchvision divides 0 by 0 for two empty boxes
    assert tv_box_iou(t((1, 1, 1, 1)), t((1, 1, 1, 1))).isnan().all()
    assert pairwise_box_iou(t((1, 1, 1, 1)), t((1, 1, 1, 1))).tolist() == [[0.0]]


def test_as_tensor_keeps_the_boxes_precision() -> None:
    boxes = as_tensor([Box(0.1, 0.2, 0.3, 0.4), Box(1, 2, 3, 4, confidence=0.5)])
    assert boxes.dtype == torch.float64
    assert boxes.tolist() == [[0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0]]
    assert as_tensor([]).shape == (0, 4)


def test_normalise_clips_to_the_image() -> None:
    assert normalise_box((10, 20, 110, 220), (200, 400)) == (0.05, 0.05, 0.55, 0.55)
    assert normalise_box((-10, -5, 250, 500), (200, 400)) == (0.0, 0.0, 1.0, 1.0)
    # a box outside the image clips to an empty box, which normalise_box returns as it is
    assert normalise_box((210, 10, 260, 50), (200, 400)) == (1.0, 0.025, 1.0, 0.125)
    with pytest.raises(ZeroDivisionError):
        normalise_box((0, 0, 1, 1), (0, 10))


def test_normalise_boxes_leaves_out_the_boxes_empty_after_clipping() -> None:
    boxes = [
        Box(10, 20, 110, 220),  # kept
        Box(210, 10, 260, 50),  # right of the image: empty after clipping
        Box(50, 50, 50, 90),  # zero width
        Box(-30, -30, -1, 10),  # left of the image
        Box(150, 300, 400, 800),  # partly outside: clipped, kept
    ]
    out = normalise_boxes(boxes, (200, 400))
    assert out == [(0.05, 0.05, 0.55, 0.55), (0.75, 0.75, 1.0, 1.0)]
    assert normalise_boxes([], (200, 400)) == []
    assert all(not math.isnan(v) for box in out for v in box)


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, mnerqg_graph.boxes, mnerqg_graph.metrics; assert 'torch' not in sys.modules"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
