"""Axis-aligned boxes in ``xyxy``: the toolkit's one IoU and one normaliser.

A box is ``(x0, y0, x1, y1)`` in continuous coordinates (pixels, or ``[0, 1]`` of the image
side once normalised; no "+1" on the far edge).

**Empty and degenerate boxes, the one rule.** A box with ``x1 <= x0`` or ``y1 <= y0`` is *empty*:
its area is 0 (never negative). An empty box overlaps nothing, so its IoU with any box is 0, and
the IoU of two boxes whose union is empty is 0 too, never ``nan`` (the union is clamped to
``1e-9``, far below any real box). Normalising clips a box to the image; :func:`normalise_boxes`
then leaves out the boxes that are empty after clipping (a box with no area inside the image marks
nothing), while :func:`normalise_box` returns what clipping gives, empty or not (a detection file
is read back as written, one box per score).

Why not ``torchvision.ops.box_iou``: torchvision is an optional extra (``vision``) and the core
(metrics, heads, graph builder) must work without it; and it returns ``nan`` for two empty boxes
(``0 / 0``), against the rule above. The functions here are the same arithmetic otherwise, and
broadcast over leading dimensions (differentiable, so the heads' losses use them).

Importing this module does not import torch (the tensor functions use tensor methods, and
:func:`as_tensor` imports it when called), so the data and metrics modules that read it stay light.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from mnerqg_graph.data.types import Box

if TYPE_CHECKING:
    import torch
    from torch import Tensor

#: A normalised box ``(x0, y0, x1, y1)`` in ``[0, 1]`` image coordinates.
NormBox = tuple[float, float, float, float]

#: The smallest union (and hull) an IoU divides by: an empty union gives IoU 0, not ``nan``.
EPS = 1e-9


def box_area(boxes: Tensor) -> Tensor:
    """Area of each box; 0 for an empty box.

    Args:
        boxes: ``xyxy`` boxes.

    Returns:
        The areas.

    Shapes:
        - boxes: ``[..., 4]`` -> ``[...]``.
    """
    return (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(-1)


def box_intersection(a: Tensor, b: Tensor) -> Tensor:
    """Area of the intersection of paired boxes (broadcast); 0 when they do not overlap.

    Shapes:
        - a, b: ``[..., 4]`` (broadcastable) -> ``[...]``.
    """
    lt = a[..., :2].maximum(b[..., :2])
    rb = a[..., 2:].minimum(b[..., 2:])
    return (rb - lt).clamp(min=0).prod(-1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of paired boxes (broadcast), by the module's rule for empty boxes.

    Args:
        a: ``xyxy`` boxes.
        b: ``xyxy`` boxes, broadcastable against ``a``.

    Returns:
        IoU in ``[0, 1]``; 0 for an empty box or an empty union.

    Shapes:
        - a, b: ``[..., 4]`` -> ``[...]``.
    """
    return _iou_and_union(a, b)[0]


def _iou_and_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    inter = box_intersection(a, b)
    union = box_area(a) + box_area(b) - inter
    return inter / union.clamp(min=EPS), union


def pairwise_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every box of ``a`` with every box of ``b`` (per leading index, e.g. per example).

    Shapes:
        - a: ``[..., N, 4]``; b: ``[..., M, 4]`` -> ``[..., N, M]``.
    """
    return box_iou(a[..., :, None, :], b[..., None, :, :])


def generalized_box_iou(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """IoU and generalised IoU (GIoU) of paired boxes (broadcast).

    GIoU is ``IoU - (hull - union) / hull`` with ``hull`` the area of the smallest box holding
    both; the hull is clamped like the union.

    Args:
        a: ``xyxy`` boxes.
        b: ``xyxy`` boxes, broadcastable against ``a``.

    Returns:
        ``(iou, giou)``.

    Shapes:
        - a, b: ``[..., 4]`` -> iou, giou: ``[...]``.
    """
    iou, union = _iou_and_union(a, b)
    hull = (a[..., 2:].maximum(b[..., 2:]) - a[..., :2].minimum(b[..., :2])).prod(-1)
    giou = iou - (hull - union) / hull.clamp(min=EPS)
    return iou, giou


def as_tensor(boxes: Sequence[Box], dtype: torch.dtype | None = None) -> Tensor:
    """:class:`~mnerqg_graph.data.types.Box` objects as an ``xyxy`` tensor.

    Args:
        boxes: boxes (pixels or normalised).
        dtype: the tensor's type; None: float64, the precision of the boxes' own floats.

    Shapes:
        - output: ``[len(boxes), 4]``.
    """
    import torch

    dtype = torch.float64 if dtype is None else dtype
    rows = [(b.xmin, b.ymin, b.xmax, b.ymax) for b in boxes]
    return torch.tensor(rows, dtype=dtype).reshape(-1, 4)


def normalise_box(box: Sequence[float], size: tuple[float, float]) -> NormBox:
    """One ``xyxy`` box in pixels, divided by the image size and clipped to ``[0, 1]``.

    The result may be empty (module docstring); :func:`normalise_boxes` leaves such boxes out.

    Args:
        box: ``(x0, y0, x1, y1)`` in pixels.
        size: the image's ``(width, height)`` in pixels.

    Returns:
        The normalised box.

    Raises:
        ZeroDivisionError: a zero width or height.
    """
    w, h = size
    x0, y0, x1, y1 = box
    return (
        min(max(x0 / w, 0.0), 1.0),
        min(max(y0 / h, 0.0), 1.0),
        min(max(x1 / w, 0.0), 1.0),
        min(max(y1 / h, 0.0), 1.0),
    )


def normalise_boxes(boxes: Iterable[Box], size: tuple[float, float]) -> list[NormBox]:
    """Boxes in pixels as normalised boxes, leaving out those empty after clipping to the image.

    Args:
        boxes: boxes in pixels of an image of ``size``.
        size: the image's ``(width, height)`` in pixels.

    Returns:
        The non-empty normalised boxes, in the order given.
    """
    out = []
    for b in boxes:
        box = normalise_box((b.xmin, b.ymin, b.xmax, b.ymax), size)
        if box[2] > box[0] and box[3] > box[1]:
            out.append(box)
    return out


__all__ = [
    "EPS",
    "NormBox",
    "as_tensor",
    "box_area",
    "box_intersection",
    "box_iou",
    "generalized_box_iou",
    "normalise_box",
    "normalise_boxes",
    "pairwise_box_iou",
]
