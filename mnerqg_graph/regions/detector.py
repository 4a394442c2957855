"""The ``detector`` region source: detected boxes as graph nodes (UMGF, the GMNER baselines).

Each image gives at most ``max_regions`` of its detections whose score passes ``score_threshold``
(the best first); each box is assigned, FPN-style, to the scale that fits its size
(:func:`mnerqg_graph.regions.assign_levels`) and RoIAligned (:func:`torchvision.ops.roi_align`) from
that scale's map. A node's geometry ``[x0, y0, x1, y1, area, score, one-hot class]`` goes with its
feature. An image may have no box at all (its tweet keeps its ``image`` node); nothing is padded.
Everything is computed for the whole batch at once: no Python loop over images or boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mnerqg_graph.errors import ConfigError
from mnerqg_graph.regions.sources import (
    REGION_SOURCE_REGISTRY,
    BoxDetections,
    RegionNodes,
    RegionSource,
    assign_levels,
)

#: Geometry features before the class one-hot: x0, y0, x1, y1, area, score.
GEOMETRY_BASE = 6


@REGION_SOURCE_REGISTRY.register("detector")
class DetectorRegions(RegionSource):
    """Detected boxes, RoIAligned at the scale that fits them, as region nodes.

    Args:
        scales: number of scales kept (1..3), coarsest first; boxes are assigned among them.
        max_regions: ``K``, the most boxes an image gives (over all scales).
        score_threshold: detections under this score are not used.
        num_classes: the detector's classes (the size of the class one-hot).
        canonical_size: normalised box side assigned to the middle scale
            (see :func:`~mnerqg_graph.regions.assign_levels`).
        pool_size: RoIAlign output side before averaging.
        sampling_ratio: RoIAlign sampling points per bin side.

    Shapes:
        - features[k]: ``[B, C_k, h_k, w_k]``; detections: ``B`` of ``boxes [n_i, 4]``
          (normalised xyxy), ``scores [n_i]``, ``labels [n_i]``.
        - output: ``RegionNodes`` with ``sum_k n_k <= B * max_regions`` nodes, geometry
          ``[n_k, 6 + num_classes]``.
    """

    uses_detector = True
    box_layout = True

    def __init__(
        self,
        scales: int = 3,
        max_regions: int = 16,
        score_threshold: float = 0.3,
        num_classes: int = 4,
        canonical_size: float = 0.25,
        pool_size: int = 2,
        sampling_ratio: int = 2,
    ) -> None:
        super().__init__(scales)
        if max_regions < 1 or pool_size < 1 or num_classes < 1:
            raise ConfigError("detector regions: max_regions, pool_size, num_classes must be >= 1")
        if not 0.0 <= score_threshold <= 1.0:
            raise ConfigError(f"detector regions: score_threshold {score_threshold} not in [0, 1]")
        if not 0 < canonical_size <= 1:
            raise ConfigError(f"detector regions: canonical_size {canonical_size} not in (0, 1]")
        try:
            from torchvision.ops import roi_align  # noqa: F401
        except ImportError:
            raise ConfigError(
                "region source 'detector' needs torchvision (RoIAlign): "
                "pip install 'mnerqg-graph[vision]'"
            ) from None
        self.max_regions = max_regions
        self.score_threshold = score_threshold
        self.num_classes = num_classes
        self.canonical_size = canonical_size
        self.pool_size = pool_size
        self.sampling_ratio = sampling_ratio

    @property
    def geometry_dim(self) -> int:
        """``6 + num_classes``: box, area, score and the class one-hot."""
        return GEOMETRY_BASE + self.num_classes

    def select(
        self, detections: Sequence[BoxDetections], device: torch.device
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The kept detections of a batch, ordered by image then by score (best first).

        Returns:
            ``(image [n], boxes [n, 4], scores [n], labels [n])``: at most ``max_regions`` per
            image, each with score ``>= score_threshold``.
        """
        counts = torch.tensor([int(d.scores.shape[0]) for d in detections], dtype=torch.long)
        counts = counts.to(device)
        if not len(detections) or int(counts.sum()) == 0:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return empty, torch.zeros(0, 4, device=device), torch.zeros(0, device=device), empty
        image = torch.repeat_interleave(torch.arange(len(detections), device=device), counts)
        boxes = torch.cat([d.boxes.reshape(-1, 4) for d in detections]).to(device, torch.float32)
        scores = torch.cat([d.scores.reshape(-1) for d in detections]).to(device, torch.float32)
        labels = torch.cat([d.labels.reshape(-1) for d in detections]).to(device, torch.long)
        keep = scores >= self.score_threshold
        image, boxes, scores, labels = (
            image[keep],
            boxes[keep].clamp(0, 1),
            scores[keep],
            labels[keep],
        )
        # best first within each image: sort by score, then stably by image
        order = scores.argsort(descending=True, stable=True)
        order = order[image[order].argsort(stable=True)]
        image, boxes, scores, labels = image[order], boxes[order], scores[order], labels[order]
        per_image = torch.bincount(image, minlength=len(detections))
        start = torch.cumsum(per_image, 0) - per_image
        rank = torch.arange(image.numel(), device=device) - start[image]
        keep = rank < self.max_regions
        return image[keep], boxes[keep], scores[keep], labels[keep]

    def nodes(
        self, features: Sequence[Tensor], detections: Sequence[BoxDetections] | None = None
    ) -> RegionNodes:
        """The kept detections of each image as nodes at their scale (see the class docstring)."""
        from torchvision.ops import roi_align

        maps = self._kept(features)
        b = int(maps[0].shape[0])
        if detections is None:
            raise ConfigError("region source 'detector' needs a detector's boxes (got none)")
        if len(detections) != b:
            raise ValueError(f"got detections for {len(detections)} images but features for {b}")
        dev = maps[0].device
        image, boxes, scores, labels = self.select(detections, dev)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ConfigError(
                f"detector regions: class index {int(labels.max())} outside the "
                f"{self.num_classes} classes the source was built for"
            )
        level = assign_levels(boxes, self.num_scales, self.canonical_size)
        wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
        geometry = torch.cat(
            [
                boxes,
                (wh[:, 0] * wh[:, 1]).unsqueeze(1),
                scores.unsqueeze(1),
                torch.nn.functional.one_hot(labels, self.num_classes).to(boxes.dtype),
            ],
            1,
        )
        feats, images, set_boxes, geoms = [], [], [], []
        for k, fmap in enumerate(maps):  # one RoIAlign per scale
            sel = level == k
            h, w = int(fmap.shape[2]), int(fmap.shape[3])
            scale = torch.tensor([w, h, w, h], device=dev, dtype=torch.float32)
            rois = torch.cat([image[sel].to(torch.float32).unsqueeze(1), boxes[sel] * scale], 1)
            pooled = roi_align(
                fmap,
                rois.to(fmap.dtype),
                output_size=(self.pool_size, self.pool_size),
                spatial_scale=1.0,
                sampling_ratio=self.sampling_ratio,
                aligned=True,
            ).mean(dim=(2, 3))  # [n_k, C_k]
            feats.append(pooled)
            images.append(image[sel])
            set_boxes.append(boxes[sel])
            geoms.append(geometry[sel].to(fmap.dtype))
        return RegionNodes(feats, images, set_boxes, geoms, maps[0].mean((2, 3)), None)


__all__ = ["GEOMETRY_BASE", "DetectorRegions"]
