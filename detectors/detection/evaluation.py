"""Running a detector on a split: detection files (JSON lines) and box average precision.

:func:`detect_split` gives one JSON-ready record per tweet with an image (boxes in pixels of the
original image), :func:`read_detections` reads such a file back as normalised :class:`Detections`;
:func:`evaluate_split` reports :func:`box_average_precision`: the box AP of each type at IoU 0.5
(all-point interpolated, as Pascal VOC 2010+), their mean (mAP@0.5), and the mean over IoU
0.5:0.95 (COCO's thresholds, same interpolation) on a split's gold boxes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from detectors.detection.base import Detections, DetectorBackend, Target
from detectors.detection.data import detection_targets
from detectors.images import load_image_set
from mnerqg_graph.boxes import normalise_box, pairwise_box_iou
from mnerqg_graph.data.types import Sample
from mnerqg_graph.errors import DataError, check_counts


@dataclass(frozen=True)
class SplitImages:
    """The images of a data-set split to run a detector on.

    Attributes:
        data: the data-set folder.
        split: the split.
        image_size: side the images are resized to before detection.
        batch_size: images per forward pass.
        limit: only the first ``limit`` tweets (None: all).
    """

    data: str | Path
    split: str = "test"
    image_size: int = 128
    batch_size: int = 16
    limit: int | None = None

    def __post_init__(self) -> None:
        check_counts(image_size=self.image_size, batch_size=self.batch_size, limit=self.limit)


def _detect(
    detector: DetectorBackend, images: SplitImages
) -> tuple[list[Sample], list[Detections]]:
    """The tweets of a split with a readable image, and the detections of each (on the CPU)."""
    from mnerqg_graph.data.dataset import load_split

    samples = load_split(images.data, images.split).samples
    if images.limit is not None:
        samples = samples[: images.limit]
    image_set = load_image_set(samples, images.image_size)
    dev = next(detector.parameters()).device
    dets: list[Detections] = []
    batch_size = images.batch_size
    for start in range(0, len(image_set.samples), batch_size):
        idx = list(range(start, min(start + batch_size, len(image_set.samples))))
        dets += [d.to("cpu") for d in detector.detect(image_set.batch(idx, dev))]
    return image_set.samples, dets


def detect_split(detector: DetectorBackend, images: SplitImages) -> list[dict[str, Any]]:
    """Detect boxes in every image of a split; one JSON-ready record per tweet with an image.

    Args:
        detector: the detector (on its device).
        images: the split, and how its images are read and batched.

    Returns:
        ``{"id", "image", "width", "height", "detections": [{"type", "score", "box"}]}`` records,
        boxes in pixels of the original image (xyxy).
    """
    samples, detections = _detect(detector, images)
    records = []
    for sample, det in zip(samples, detections, strict=True):
        assert sample.image_size is not None and sample.image_path is not None
        w, h = sample.image_size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        boxes = (det.boxes * scale).tolist()
        records.append(
            {
                "id": sample.tweet.id,
                "image": sample.image_path.name,
                "width": w,
                "height": h,
                "detections": [
                    {
                        "type": detector.types[int(lab)],
                        "score": round(float(s), 5),
                        "box": [round(float(v), 2) for v in box],
                    }
                    for box, s, lab in zip(
                        boxes, det.scores.tolist(), det.labels.tolist(), strict=True
                    )
                ],
            }
        )
    return records


def read_detections(path: str | Path, types: Sequence[str]) -> dict[str, Detections]:
    """Read the JSON lines of :func:`detect_split` back as normalised :class:`Detections`.

    Args:
        path: the ``.jsonl`` file.
        types: the type order of the labels.

    Returns:
        ``{tweet id: Detections}``.

    Raises:
        DataError: a malformed line or an unknown type (names the file and line).
    """
    index = {t: i for i, t in enumerate(types)}
    out: dict[str, Detections] = {}
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                w, h = float(rec["width"]), float(rec["height"])
                dets = rec["detections"]
                boxes = [normalise_box(d["box"], (w, h)) for d in dets]
                labels = [index[d["type"]] for d in dets]
                scores = [float(d["score"]) for d in dets]
                out[str(rec["id"])] = Detections(
                    torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    torch.tensor(scores, dtype=torch.float32),
                    torch.tensor(labels, dtype=torch.int64),
                )
            except (
                json.JSONDecodeError,
                KeyError,
                TypeError,
                IndexError,
                ValueError,
                ZeroDivisionError,
            ) as e:
                raise DataError(
                    str(path), f"malformed detection record ({e!r})", line=lineno
                ) from None
    return out


def _average_precision(
    detections: Sequence[Detections], targets: Sequence[Target], label: int, iou: float
) -> float:
    """All-point interpolated AP of one class at one IoU threshold (nan: no gold box)."""
    n_gold = sum(int((t["labels"] == label).sum()) for t in targets)
    if n_gold == 0:
        return math.nan
    scores, hits = [], []
    for det, tgt in zip(detections, targets, strict=True):
        sel = det.labels == label
        boxes, sc = det.boxes[sel], det.scores[sel]
        gold = tgt["boxes"][tgt["labels"] == label]
        order = sc.argsort(descending=True)
        boxes, sc = boxes[order], sc[order]
        taken = torch.zeros(gold.shape[0], dtype=torch.bool)
        overlaps = pairwise_box_iou(boxes, gold) if gold.numel() and boxes.numel() else None
        for i in range(boxes.shape[0]):  # greedy matching, best score first (VOC)
            hit = False
            if overlaps is not None:
                o = overlaps[i].masked_fill(taken, -1.0)
                best, j = o.max(0)
                if float(best) >= iou:
                    taken[j] = True
                    hit = True
            hits.append(hit)
        scores.append(sc)
    if not hits:
        return 0.0
    order = torch.cat(scores).argsort(descending=True)
    tp = torch.tensor(hits, dtype=torch.float64)[order]
    ctp, cfp = tp.cumsum(0), (1 - tp).cumsum(0)
    recall = ctp / n_gold
    precision = ctp / (ctp + cfp)
    # precision envelope (non-increasing from the right), then area under the step curve
    envelope = precision.flip(0).cummax(0).values.flip(0)
    prev = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
    return float(((recall - prev) * envelope).sum())


def box_average_precision(
    detections: Sequence[Detections], targets: Sequence[Target], types: Sequence[str]
) -> dict[str, float]:
    """Box AP of detections against gold boxes: per type at IoU 0.5, mAP@0.5, mAP@0.5:0.95.

    Args:
        detections: per image.
        targets: per image, ``boxes [n, 4]`` and ``labels [n]`` (as :func:`detection_targets`).
        types: the type of each label.

    Returns:
        ``{"AP50_<type>": ..., "mAP50": ..., "mAP50_95": ...}``; a type without gold boxes is
        left out of the means (its AP is nan).
    """
    out: dict[str, float] = {}
    per_iou: dict[float, list[float]] = {}
    for iou in [0.5 + 0.05 * i for i in range(10)]:
        aps = [_average_precision(detections, targets, k, iou) for k in range(len(types))]
        per_iou[iou] = [a for a in aps if not math.isnan(a)]
        if iou == 0.5:
            out.update({f"AP50_{t}": a for t, a in zip(types, aps, strict=True)})
    out["mAP50"] = sum(per_iou[0.5]) / len(per_iou[0.5]) if per_iou[0.5] else math.nan
    means = [sum(v) / len(v) for v in per_iou.values() if v]
    out["mAP50_95"] = sum(means) / len(means) if means else math.nan
    return out


def evaluate_split(detector: DetectorBackend, images: SplitImages) -> dict[str, float]:
    """:func:`box_average_precision` of a detector on a split's images and gold boxes.

    Every tweet with a readable image counts (an image without gold boxes contributes its false
    positives); ``images`` is added to the result.

    Args:
        detector: the detector (on its device).
        images: the split, and how its images are read and batched.

    Returns:
        :func:`box_average_precision`'s scores and ``images``, the number of images scored.
    """
    samples, dets = _detect(detector, images)
    targets = detection_targets(samples, detector.types)
    result = box_average_precision(dets, targets, detector.types)
    result["images"] = float(len(dets))
    return result


__all__ = [
    "SplitImages",
    "box_average_precision",
    "detect_split",
    "evaluate_split",
    "read_detections",
]
