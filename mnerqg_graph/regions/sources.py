"""Region sources: backbone feature maps in, region nodes (features, boxes, hierarchy) out.

A :class:`RegionSource` turns the backbone's maps (coarsest first) into one :class:`RegionSet` per
scale kept; the graph builder makes the ``region_s1`` (coarsest) .. ``region_s3`` nodes from them.
Sources do not change channel counts: scale ``k``'s region features have the channels of map ``k``
(``backbone.output_shape()[k].channels``).

The model reads regions as graph nodes through :meth:`RegionSource.nodes`: the maps of ``B``
images (and, for box sources, their detections) in, one flat :class:`RegionNodes` out, each scale's
nodes with the index of their image (a PyG-style batch vector; no padding nodes).

Registered sources (``REGION_SOURCE_REGISTRY``):

``grid``
    Every cell of every kept scale is a region (the default; no detector needed).
``detector``
    Up to ``max_regions`` detections per image over a score threshold, each RoIAligned from the
    scale that fits its size, with its geometry (box, area, score, class) as node features
    (:mod:`mnerqg_graph.regions.detector`; needs torchvision).
``detector_boxes``
    Boxes from a detector, each assigned to the scale that matches its size and RoIAligned from that
    scale's map, padded to a fixed count per scale with a mask (:meth:`RegionSource.regions` only;
    :func:`detectors.detection.regions.detection_regions` uses it).

Helpers used by the graph builder: :func:`grid_boxes`, :func:`grid_neighbors`, :func:`parent_index`.
All index computations are vectorised (no Python loops over cells or boxes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from mnerqg_graph.boxes import box_area, box_intersection
from mnerqg_graph.errors import ConfigError
from mnerqg_graph.registry import Registry

# 8-connected neighbourhood offsets (dy, dx), in a fixed order.
_OFFSETS: tuple[tuple[int, int], ...] = (
    (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1),
)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Grid helpers
# --------------------------------------------------------------------------------------------------


def grid_boxes(h: int, w: int, device: torch.device | str | None = None) -> Tensor:
    """Normalised ``xyxy`` boxes of the cells of an ``h x w`` grid, row-major.

    Args:
        h: grid rows.
        w: grid columns.
        device: device of the result.

    Returns:
        Cell ``i * w + j`` is ``[j / w, i / h, (j + 1) / w, (i + 1) / h]``; the cells tile
        ``[0, 1]^2``.

    Shapes:
        - output: ``[h * w, 4]``, float32.
    """
    ys = torch.arange(h, device=device, dtype=torch.float32)
    xs = torch.arange(w, device=device, dtype=torch.float32)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    boxes = torch.stack([xx / w, yy / h, (xx + 1) / w, (yy + 1) / h], dim=-1)
    return boxes.reshape(h * w, 4)


def grid_neighbors(h: int, w: int, device: torch.device | str | None = None) -> Tensor:
    """Directed 8-connected neighbour edges of an ``h x w`` grid (row-major cell indices).

    Every pair of neighbouring cells appears in both directions; no self loops. A 3x3 grid has
    40 edges (4 corners x 3 + 4 sides x 5 + centre x 8).

    Args:
        h: grid rows.
        w: grid columns.
        device: device of the result.

    Returns:
        ``edge_index`` with sources in row 0 and destinations in row 1, sorted by source.

    Shapes:
        - output: ``[2, E]``, int64.
    """
    off = torch.tensor(_OFFSETS, device=device, dtype=torch.long)  # [8, 2]
    ii = torch.arange(h, device=device).view(h, 1, 1)
    jj = torch.arange(w, device=device).view(1, w, 1)
    ni = ii + off[:, 0].view(1, 1, -1)  # [h, 1, 8]
    nj = jj + off[:, 1].view(1, 1, -1)  # [1, w, 8]
    valid = (ni >= 0) & (ni < h) & (nj >= 0) & (nj < w)  # [h, w, 8]
    src = (ii * w + jj).expand(h, w, len(_OFFSETS))
    dst = ni * w + nj  # [h, w, 8]
    return torch.stack([src[valid], dst[valid]], dim=0)


def parent_index(
    h_fine: int,
    w_fine: int,
    h_coarse: int,
    w_coarse: int,
    device: torch.device | str | None = None,
) -> Tensor:
    """Index of the coarse cell containing each fine cell's centre (row-major on both grids).

    With an exact 2x ratio, fine cell ``(i, j)`` has parent ``(i // 2, j // 2)``; other ratios
    (odd map sizes) use the cell centre, so every fine cell gets exactly one parent.

    Args:
        h_fine: rows of the fine grid.
        w_fine: columns of the fine grid.
        h_coarse: rows of the coarse grid.
        w_coarse: columns of the coarse grid.
        device: device of the result.

    Returns:
        ``parent[i * w_fine + j]`` = the coarse cell index.

    Shapes:
        - output: ``[h_fine * w_fine]``, int64, values in ``[0, h_coarse * w_coarse)``.
    """
    rows = ((2 * torch.arange(h_fine, device=device) + 1) * h_coarse) // (2 * h_fine)
    cols = ((2 * torch.arange(w_fine, device=device) + 1) * w_coarse) // (2 * w_fine)
    return (rows.view(-1, 1) * w_coarse + cols.view(1, -1)).reshape(-1)


# --------------------------------------------------------------------------------------------------
# Region sets and the source contract
# --------------------------------------------------------------------------------------------------


@dataclass
class RegionSet:
    """The regions of one scale for a batch of images.

    Grid sources share boxes and hierarchy across the batch (``boxes [N, 4]``, ``parent [N]``,
    ``mask None``); box sources have per-image ones (``boxes [B, N, 4]``, ``parent [B, N]``,
    ``mask [B, N]``). Use :meth:`batched_boxes`, :meth:`batched_parent` and :meth:`valid_mask` to
    read either form as per-image tensors.

    Attributes:
        features: region features, ``[B, N, C]`` (zeros at padded slots).
        boxes: normalised ``xyxy`` boxes in ``[0, 1]``, ``[N, 4]`` or ``[B, N, 4]``.
        parent: index of each region's parent in the next coarser scale's ``RegionSet``,
            ``-1`` for the coarsest scale (and for regions without a parent), ``[N]`` or ``[B, N]``.
        grid: ``(h, w)`` with ``N == h * w`` for grid regions (row-major cells), else ``None``.
        mask: ``True`` for real regions, ``[B, N]`` bool; ``None`` means all are real.
    """

    features: Tensor
    boxes: Tensor
    parent: Tensor
    grid: tuple[int, int] | None = None
    mask: Tensor | None = None

    @property
    def batch_size(self) -> int:
        """``B``."""
        return int(self.features.shape[0])

    @property
    def num_regions(self) -> int:
        """``N`` (including padded slots)."""
        return int(self.features.shape[1])

    def batched_boxes(self) -> Tensor:
        """Boxes as ``[B, N, 4]`` (a broadcast view for shared boxes)."""
        if self.boxes.dim() == 3:
            return self.boxes
        return self.boxes.unsqueeze(0).expand(self.batch_size, -1, -1)

    def batched_parent(self) -> Tensor:
        """Parent indices as ``[B, N]`` (a broadcast view for shared ones)."""
        if self.parent.dim() == 2:
            return self.parent
        return self.parent.unsqueeze(0).expand(self.batch_size, -1)

    def valid_mask(self) -> Tensor:
        """``[B, N]`` bool, ``True`` for real regions."""
        if self.mask is not None:
            return self.mask
        return torch.ones(
            self.batch_size, self.num_regions, dtype=torch.bool, device=self.features.device
        )


class BoxDetections(Protocol):
    """What a box source reads from a detector's output (see ``detectors.detection.Detections``).

    Shapes:
        - boxes: ``[K, 4]`` normalised xyxy; scores: ``[K]``; labels: ``[K]`` int64 class indices.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor


@dataclass
class RegionNodes:
    """The region nodes of a batch of ``B`` images, flat per scale: no padding nodes.

    Scale ``k``'s nodes are ordered by image (``image[k]`` is sorted), so ``image[k]`` is the PyG
    batch vector of that scale's nodes over the images. Grid sources set ``grids`` (every image
    has ``h_k * w_k`` nodes at scale ``k``, row-major cells); box sources leave it None and give
    each image its own count (0 included).

    Attributes:
        features: region features per scale (channels of the backbone's map ``k``).
        image: the image (row of the batch) of each node, per scale.
        boxes: normalised ``xyxy`` box of each node, per scale.
        geometry: per-node geometry features per scale (box, area, score, class one-hot for box
            sources; ``G = 0`` for grids).
        pooled: each image's global feature (the mean of its coarsest map), for the ``image`` node.
        grids: ``(h_k, w_k)`` per scale for grid regions, else None.

    Shapes:
        - features[k]: ``[n_k, C_k]``; image[k]: ``[n_k]`` int64; boxes[k]: ``[n_k, 4]``;
          geometry[k]: ``[n_k, G]``; pooled: ``[B, C_0]``.
    """

    features: list[Tensor]
    image: list[Tensor]
    boxes: list[Tensor]
    geometry: list[Tensor]
    pooled: Tensor
    grids: tuple[tuple[int, int], ...] | None = None

    @property
    def num_images(self) -> int:
        """``B``."""
        return int(self.pooled.shape[0])

    @property
    def num_scales(self) -> int:
        """Number of scales."""
        return len(self.features)

    def counts(self, scale: int) -> Tensor:
        """Nodes per image at ``scale``, ``[B]`` int64."""
        return torch.bincount(self.image[scale], minlength=self.num_images)

    def _map(self, fn: Any) -> RegionNodes:
        return RegionNodes(
            [fn(t) for t in self.features],
            [fn(t) for t in self.image],
            [fn(t) for t in self.boxes],
            [fn(t) for t in self.geometry],
            fn(self.pooled),
            self.grids,
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> RegionNodes:
        """A copy on ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> RegionNodes:
        """A copy in pinned host memory."""
        return self._map(lambda t: t.pin_memory())

    def per_image(self) -> list[dict[str, Tensor]]:
        """Each image's nodes as flat tensors, the form of a region-cache entry.

        Keys ``s{k}.features``, ``s{k}.boxes``, ``s{k}.geometry`` (``k`` = 1 coarsest) and
        ``pooled``; :meth:`cat` is the inverse.
        """
        out: list[dict[str, Tensor]] = [{} for _ in range(self.num_images)]
        for k in range(self.num_scales):
            counts = self.counts(k).tolist()
            for name, t in (
                ("features", self.features[k]),
                ("boxes", self.boxes[k]),
                ("geometry", self.geometry[k]),
            ):
                for i, part in enumerate(torch.split(t, counts)):
                    out[i][f"s{k + 1}.{name}"] = part.clone()
        for i in range(self.num_images):
            out[i]["pooled"] = self.pooled[i].clone()
        return out

    @staticmethod
    def cat(
        entries: Sequence[dict[str, Tensor]],
        grids: tuple[tuple[int, int], ...] | None = None,
    ) -> RegionNodes:
        """The batch of the images ``entries`` (each as :meth:`per_image` gives it), in order.

        Args:
            entries: per image, its tensors (at least one image).
            grids: the grid layout (grid sources), else None.
        """
        num_scales = sum(1 for key in entries[0] if key.endswith(".features"))
        feats, image, boxes, geometry = [], [], [], []
        for k in range(1, num_scales + 1):
            parts = [e[f"s{k}.features"] for e in entries]
            counts = torch.tensor([p.shape[0] for p in parts], dtype=torch.long)
            feats.append(torch.cat(parts))
            image.append(torch.repeat_interleave(torch.arange(len(entries)), counts))
            boxes.append(torch.cat([e[f"s{k}.boxes"] for e in entries]))
            geometry.append(torch.cat([e[f"s{k}.geometry"] for e in entries]))
        pooled = torch.stack([e["pooled"] for e in entries])
        return RegionNodes(feats, image, boxes, geometry, pooled, grids)


class RegionSource(nn.Module):
    """Base class of region sources (see the module docstring and ``REGION_SOURCE_REGISTRY``).

    Args:
        scales: how many scales to keep, the coarsest ``scales`` of the backbone's maps (1..3).
    """

    def __init__(self, scales: int = 3) -> None:
        super().__init__()
        if not 1 <= scales <= 3:
            raise ConfigError(f"region source scales must be 1..3, got {scales}")
        self.num_scales = scales

    #: Whether :meth:`nodes` needs detections (the model then runs a detector).
    uses_detector: ClassVar[bool] = False
    #: Whether the nodes are boxes with a count of their own per image (the graph joins them by
    #: spatial relations) rather than the cells of fixed grids.
    box_layout: ClassVar[bool] = False

    @property
    def geometry_dim(self) -> int:
        """``G``, the size of each node's geometry features (0: none)."""
        return 0

    def nodes(
        self, features: Sequence[Tensor], detections: Sequence[BoxDetections] | None = None
    ) -> RegionNodes:
        """The region nodes of a batch of images (what the model puts in the graph).

        Args:
            features: the backbone's maps, coarsest first, each ``[B, C_k, h_k, w_k]``.
            detections: per image, the detector's output (box sources), best first.

        Returns:
            ``num_scales`` scales of flat nodes (see :class:`RegionNodes`).
        """
        raise NotImplementedError

    def regions(
        self,
        features: Sequence[Tensor],
        image_size: int,
        boxes: Sequence[Tensor] | None = None,
    ) -> list[RegionSet]:
        """The regions of each kept scale, coarsest first.

        Args:
            features: the backbone's maps, coarsest first, each ``[B, C_k, h_k, w_k]``.
            image_size: the (square) input image side in pixels.
            boxes: per image, detector boxes ``[n_i, 4]`` in normalised ``xyxy`` (sources that use
                boxes require them; others ignore them).

        Returns:
            ``num_scales`` :class:`RegionSet` objects, coarsest first.
        """
        raise NotImplementedError

    def forward(
        self,
        features: Sequence[Tensor],
        image_size: int,
        boxes: Sequence[Tensor] | None = None,
    ) -> list[RegionSet]:
        """Same as :meth:`regions`."""
        return self.regions(features, image_size, boxes)

    def _kept(self, features: Sequence[Tensor]) -> list[Tensor]:
        if len(features) < self.num_scales:
            raise ConfigError(
                f"{type(self).__name__} keeps {self.num_scales} scales but the backbone gave "
                f"{len(features)} feature maps"
            )
        for f in features:
            if f.dim() != 4:
                raise ValueError(f"expected feature maps [B, C, h, w], got {tuple(f.shape)}")
        return list(features[: self.num_scales])


REGION_SOURCE_REGISTRY: Registry[RegionSource] = Registry(
    "region source",
    RegionSource,
    doc="""Region sources, by name.

    A registered builder takes keyword arguments only (all with defaults, including
    ``scales: int = 3``) and returns a :class:`RegionSource` whose
    ``regions(features, image_size, boxes=None)`` maps the backbone's feature maps (coarsest first,
    ``[B, C_k, h_k, w_k]``) to ``scales`` :class:`RegionSet` objects, coarsest first, with features
    ``[B, N_k, C_k]`` (channels unchanged), normalised ``xyxy`` boxes and the index of each region's
    parent in the next coarser set (-1 for the coarsest). Index structures are built vectorised.

    A source the model can put in its graph (``model.image.regions``) also implements
    ``nodes(features, detections=None)``, returning a :class:`RegionNodes` (flat nodes per scale
    with their image index, boxes, geometry ``[n_k, geometry_dim]`` and each image's pooled
    feature); ``uses_detector = True`` asks the model for a detector's boxes.
    """,
)


#: Build the region source registered under a name with its constructor arguments, or return
#: an instance as is: :meth:`~mnerqg_graph.registry.Registry.build`.
build_region_source = REGION_SOURCE_REGISTRY.build


# --------------------------------------------------------------------------------------------------
# grid
# --------------------------------------------------------------------------------------------------


@REGION_SOURCE_REGISTRY.register("grid")
class GridRegions(RegionSource):
    """Every cell of the coarsest ``scales`` maps is a region.

    Args:
        scales: number of scales kept (1..3), coarsest first.

    Shapes:
        - features[k]: ``[B, C_k, h_k, w_k]``
        - output[k].features: ``[B, h_k * w_k, C_k]``; ``.boxes`` ``[h_k * w_k, 4]``;
          ``.parent`` ``[h_k * w_k]``; ``.grid`` ``(h_k, w_k)``; ``.mask`` ``None``.
    """

    def regions(
        self,
        features: Sequence[Tensor],
        image_size: int,
        boxes: Sequence[Tensor] | None = None,
    ) -> list[RegionSet]:
        """Grid-cell regions of each kept scale, coarsest first (see :class:`RegionSource`)."""
        maps = self._kept(features)
        out: list[RegionSet] = []
        prev: tuple[int, int] | None = None
        for fmap in maps:
            h, w = int(fmap.shape[2]), int(fmap.shape[3])
            dev = fmap.device
            if prev is None:
                parent = torch.full((h * w,), -1, dtype=torch.long, device=dev)
            else:
                parent = parent_index(h, w, prev[0], prev[1], device=dev)
            out.append(
                RegionSet(
                    features=fmap.flatten(2).transpose(1, 2),  # (B, h*w, C)
                    boxes=grid_boxes(h, w, device=dev),
                    parent=parent,
                    grid=(h, w),
                )
            )
            prev = (h, w)
        return out

    def nodes(
        self, features: Sequence[Tensor], detections: Sequence[BoxDetections] | None = None
    ) -> RegionNodes:
        """Every cell of each kept map, image-major then row-major (see :class:`RegionNodes`).

        Shapes:
            - features[k]: ``[B, C_k, h_k, w_k]`` -> nodes ``[B * h_k * w_k, C_k]``.
        """
        maps = self._kept(features)
        b = int(maps[0].shape[0])
        feats, image, boxes, geometry, grids = [], [], [], [], []
        for fmap in maps:
            h, w = int(fmap.shape[2]), int(fmap.shape[3])
            dev = fmap.device
            feats.append(fmap.flatten(2).transpose(1, 2).reshape(b * h * w, -1))
            image.append(torch.arange(b, device=dev).repeat_interleave(h * w))
            boxes.append(grid_boxes(h, w, device=dev).repeat(b, 1))
            geometry.append(fmap.new_zeros(b * h * w, 0))
            grids.append((h, w))
        return RegionNodes(feats, image, boxes, geometry, maps[0].mean((2, 3)), tuple(grids))


# --------------------------------------------------------------------------------------------------
# detector_boxes
# --------------------------------------------------------------------------------------------------


def assign_levels(
    boxes: Tensor, num_scales: int = 3, canonical_size: float = 0.25, eps: float = 1e-6
) -> Tensor:
    """The scale (0 = coarsest) matching each box's size, FPN-style, in normalised units.

    A box of side ``sqrt(w * h) >= 2 * canonical_size`` goes to scale 0, one of side in
    ``[canonical_size, 2 * canonical_size)`` to scale 1, each halving one scale finer, clamped to
    ``[0, num_scales - 1]``.

    Args:
        boxes: normalised ``xyxy`` boxes.
        num_scales: number of scales available.
        canonical_size: normalised box side that maps to scale 1.
        eps: guards ``log2`` of degenerate boxes.

    Shapes:
        - boxes: ``[K, 4]``
        - output: ``[K]``, int64.
    """
    side = (
        (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    ).sqrt()
    level = 1 - torch.floor(torch.log2(side / canonical_size + eps))
    return level.clamp(0, num_scales - 1).to(torch.long)


def _containment(child: Tensor, parent: Tensor) -> Tensor:
    """Fraction of each child box's area inside each parent box, ``[B, Nc, 4] x [B, Np, 4]``."""
    inter = box_intersection(child[:, :, None], parent[:, None])  # (B, Nc, Np)
    return inter / box_area(child).clamp(min=1e-12).unsqueeze(-1)


@REGION_SOURCE_REGISTRY.register("detector_boxes")
class DetectorBoxRegions(RegionSource):
    """Detector boxes as regions, RoIAligned from the map of the scale matching each box's size.

    Each box goes to one scale (:func:`assign_levels`); its feature is the mean of a
    ``pool_size x pool_size`` :func:`torchvision.ops.roi_align` grid on that scale's map. Each scale
    holds at most ``max_regions`` boxes per image, in input order (pass boxes sorted by detector
    score; the rest are dropped), padded with zeros and ``mask == False``. A box's parent is the
    box of the next coarser scale (same image) covering the largest part of it, -1 if none overlaps.

    Args:
        scales: number of scales kept (1..3), coarsest first; boxes are assigned among them.
        max_regions: slots per scale and image.
        canonical_size: normalised box side assigned to the middle scale (see
            :func:`assign_levels`).
        pool_size: RoIAlign output side before averaging.
        sampling_ratio: RoIAlign sampling points per bin side.

    Shapes:
        - features[k]: ``[B, C_k, h_k, w_k]``; boxes: ``B`` tensors ``[n_i, 4]``, normalised xyxy.
        - output[k].features: ``[B, max_regions, C_k]``; ``.boxes`` ``[B, max_regions, 4]``;
          ``.parent`` ``[B, max_regions]``; ``.mask`` ``[B, max_regions]``; ``.grid`` ``None``.
    """

    def __init__(
        self,
        scales: int = 3,
        max_regions: int = 16,
        canonical_size: float = 0.25,
        pool_size: int = 2,
        sampling_ratio: int = 2,
    ) -> None:
        super().__init__(scales)
        if max_regions < 1 or pool_size < 1:
            raise ConfigError("detector_boxes max_regions and pool_size must be positive")
        if not 0 < canonical_size <= 1:
            raise ConfigError(
                f"detector_boxes canonical_size must be in (0, 1], got {canonical_size}"
            )
        try:
            from torchvision.ops import roi_align  # noqa: F401
        except ImportError:
            raise ConfigError(
                "region source 'detector_boxes' needs torchvision (RoIAlign): "
                "pip install 'mnerqg-graph[vision]'"
            ) from None
        self.max_regions = max_regions
        self.canonical_size = canonical_size
        self.pool_size = pool_size
        self.sampling_ratio = sampling_ratio

    def regions(
        self,
        features: Sequence[Tensor],
        image_size: int,
        boxes: Sequence[Tensor] | None = None,
    ) -> list[RegionSet]:
        """Box regions of each kept scale, coarsest first (see the class docstring)."""
        from torchvision.ops import roi_align

        maps = self._kept(features)
        batch = int(maps[0].shape[0])
        if boxes is None:
            raise ConfigError("region source 'detector_boxes' needs detector boxes (got none)")
        if len(boxes) != batch:
            raise ValueError(f"got boxes for {len(boxes)} images but features for {batch}")
        dev = maps[0].device
        counts = torch.tensor([int(b.shape[0]) for b in boxes], device=dev, dtype=torch.long)
        all_boxes = torch.cat([b.reshape(-1, 4).to(dev, torch.float32) for b in boxes])
        all_boxes = all_boxes.clamp(0.0, 1.0)  # (K, 4)
        image_of = torch.repeat_interleave(torch.arange(batch, device=dev), counts)  # (K,)
        level = assign_levels(all_boxes, self.num_scales, self.canonical_size)

        out: list[RegionSet] = []
        m = self.max_regions
        for k, fmap in enumerate(maps):
            sel = level == k
            b_img = image_of[sel]  # sorted, since boxes are concatenated image by image
            b_box = all_boxes[sel]
            per_img = torch.bincount(b_img, minlength=batch)
            start = torch.cumsum(per_img, 0) - per_img
            slot = torch.arange(b_img.numel(), device=dev) - start[b_img]
            keep = slot < m
            b_img, b_box, slot = b_img[keep], b_box[keep], slot[keep]

            h, w = int(fmap.shape[2]), int(fmap.shape[3])
            scale = torch.tensor([w, h, w, h], device=dev, dtype=torch.float32)
            rois = torch.cat([b_img.to(torch.float32).unsqueeze(1), b_box * scale], dim=1)
            pooled = roi_align(
                fmap,
                rois.to(fmap.dtype),
                output_size=(self.pool_size, self.pool_size),
                spatial_scale=1.0,
                sampling_ratio=self.sampling_ratio,
                aligned=True,
            ).mean(dim=(2, 3))  # (K_k, C)

            feats = fmap.new_zeros(batch, m, fmap.shape[1])
            feats[b_img, slot] = pooled.to(feats.dtype)
            set_boxes = torch.zeros(batch, m, 4, device=dev)
            set_boxes[b_img, slot] = b_box
            mask = torch.zeros(batch, m, dtype=torch.bool, device=dev)
            mask[b_img, slot] = True
            if k == 0:
                parent = torch.full((batch, m), -1, dtype=torch.long, device=dev)
            else:
                prev = out[-1]
                cover = _containment(set_boxes, prev.batched_boxes())  # (B, m, m_prev)
                cover = cover.masked_fill(~prev.valid_mask().unsqueeze(1), -1.0)
                best, idx = cover.max(dim=-1)
                parent = torch.where((best > 0) & mask, idx, torch.full_like(idx, -1))
            out.append(RegionSet(features=feats, boxes=set_boxes, parent=parent, mask=mask))
        return out


__all__ = [
    "REGION_SOURCE_REGISTRY",
    "BoxDetections",
    "RegionNodes",
    "DetectorBoxRegions",
    "GridRegions",
    "RegionSet",
    "RegionSource",
    "assign_levels",
    "build_region_source",
    "grid_boxes",
    "grid_neighbors",
    "parent_index",
]
