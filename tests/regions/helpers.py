"""A detector with known boxes (registered as ``fixed_boxes``) and samples for region tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from detectors.detection import DETECTOR_REGISTRY, Detections, DetectorBackend
from mnerqg_graph.data.types import Box, Sample, Span, Tweet
from tests.helpers import TWEETS, write_image

#: Boxes (normalised xyxy, score, class) the fixed detector gives the i-th image of a call,
#: cycling: no box, one box, five boxes (one under the default score threshold 0.3).
TABLE: list[list[tuple[list[float], float, int]]] = [
    [],
    [([0.1, 0.1, 0.5, 0.75], 0.9, 0)],
    [
        ([0.05, 0.05, 0.95, 0.95], 0.95, 1),  # large: coarsest scale
        ([0.1, 0.1, 0.5, 0.5], 0.9, 0),  # medium
        ([0.3, 0.3, 0.6, 0.6], 0.8, 2),  # medium, overlaps the one above
        ([0.7, 0.7, 0.8, 0.8], 0.7, 3),  # small: finest scale
        ([0.2, 0.6, 0.3, 0.7], 0.1, 0),  # under the score threshold
    ],
]


@DETECTOR_REGISTRY.register("fixed_boxes")
class FixedBoxes(DetectorBackend):
    """Gives the i-th image of each call the boxes of ``TABLE[i % 3]`` (tests only)."""

    name = "fixed_boxes"

    def __init__(self, types: Sequence[str] = ("PER", "LOC", "ORG", "OTHER")) -> None:
        super().__init__(types)
        self.weight = nn.Parameter(torch.zeros(1))

    def config(self) -> dict[str, Any]:
        """Its types."""
        return {"types": list(self.types)}

    def detect(self, images: Tensor | Sequence[Tensor]) -> list[Detections]:
        """The table's boxes (best first)."""
        out = []
        for i in range(len(images)):
            rows = TABLE[i % len(TABLE)]
            out.append(
                Detections(
                    torch.tensor([r[0] for r in rows], dtype=torch.float32).reshape(-1, 4),
                    torch.tensor([r[1] for r in rows], dtype=torch.float32),
                    torch.tensor([r[2] for r in rows], dtype=torch.long),
                )
            )
        return out


def fixed_detector(root: Path) -> Path:
    """A saved ``fixed_boxes`` detector checkpoint folder."""
    return FixedBoxes().save(root / "fixed_detector")


def image_samples(tmp: Path) -> list[Sample]:
    """Three tweets with images (their images get 0, 1 and 4 boxes in a batch) and one without."""
    imgs = [write_image(tmp / f"r{i}.jpg", i) for i in range(3)]
    box = {Span(0, 1, "PER"): [Box(8, 8, 40, 60)]}
    return [
        Sample(TWEETS[0], imgs[0], (80, 80), box),
        Sample(TWEETS[1], imgs[1], (80, 80), {Span(3, 5, "ORG"): [Box(20, 20, 50, 50)]}),
        Sample(TWEETS[2], imgs[2], (80, 80), {}),
        Sample(Tweet("t4", ["Kelvo", "again"], ["B-PER", "O"])),
    ]
