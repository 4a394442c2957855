"""Detection targets from a data set's VOC boxes: class = the type of the entity a box belongs to.

:func:`detection_targets` gives, per sample, the normalised boxes and type indices that
:meth:`~detectors.detection.base.DetectorBackend.fit_step` and the box AP of
:mod:`detectors.detection.evaluation` read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mnerqg_graph.boxes import normalise_boxes
from mnerqg_graph.data.types import Sample
from mnerqg_graph.errors import ConfigError


def normalised_boxes(sample: Sample, entity_type: str) -> Tensor:
    """The boxes of ``entity_type``'s entities in ``sample``, normalised by its image size.

    Boxes are clipped to the image; those that become empty are left out
    (:func:`mnerqg_graph.boxes.normalise_boxes`).

    Shapes:
        - output: ``[n, 4]`` normalised xyxy (``n`` may be 0).
    """
    if sample.image_size is None:
        return torch.zeros(0, 4)
    rows = normalise_boxes(sample.boxes_of_type(entity_type), sample.image_size)
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def detection_targets(samples: Sequence[Sample], types: Sequence[str]) -> list[dict[str, Tensor]]:
    """Per sample, ``{"boxes": [n, 4] normalised xyxy, "labels": [n] type indices}``.

    Raises:
        ConfigError: a box belongs to an entity whose type is not in ``types``.
    """
    index = {t: i for i, t in enumerate(types)}
    out = []
    for sample in samples:
        unknown = {span.type for span in sample.boxes if span.type not in index}
        if unknown:
            raise ConfigError(
                f"tweet IMGID:{sample.tweet.id} has boxes of type(s) {', '.join(sorted(unknown))} "
                f"that the detector does not know (types: {', '.join(types)})"
            )
        boxes, labels = [], []
        for t, i in index.items():
            b = normalised_boxes(sample, t)
            boxes.append(b)
            labels.append(torch.full((b.shape[0],), i, dtype=torch.int64))
        out.append({"boxes": torch.cat(boxes), "labels": torch.cat(labels)})
    return out


__all__ = ["detection_targets", "normalised_boxes"]
