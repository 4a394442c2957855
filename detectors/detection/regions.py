"""Detections as region sets of the padded ``detector_boxes`` source (:func:`detection_regions`).

The model's own ``detector`` region source (:mod:`mnerqg_graph.regions.detector`) reads detections
directly and gives flat nodes instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from detectors.detection.base import Detections
from mnerqg_graph.regions import DetectorBoxRegions, RegionSet


def detection_regions(
    features: Sequence[Tensor],
    detections: Sequence[Detections],
    image_size: int,
    max_regions: int = 16,
    min_score: float = 0.0,
    **kwargs: Any,
) -> list[RegionSet]:
    """Region sets of the ``detector_boxes`` source from detections, best-scoring boxes first.

    Args:
        features: the image backbone's maps, coarsest first, ``[B, C_k, h_k, w_k]``.
        detections: one :class:`Detections` per image of the batch.
        image_size: the (square) input side in pixels.
        max_regions: region slots per scale and image.
        min_score: detections under this score are not used.
        **kwargs: further options of :class:`mnerqg_graph.regions.DetectorBoxRegions`.

    Returns:
        One :class:`RegionSet` per scale, coarsest first (see ``DetectorBoxRegions``).

    Shapes:
        - output[k].features: ``[B, max_regions, C_k]``; ``.boxes`` ``[B, max_regions, 4]``.
    """
    boxes = []
    for det in detections:
        keep = det.scores >= min_score
        order = det.scores[keep].argsort(descending=True)
        boxes.append(det.boxes[keep][order])
    source = DetectorBoxRegions(scales=len(features), max_regions=max_regions, **kwargs)
    return source.regions(features, image_size, boxes)


__all__ = ["detection_regions"]
