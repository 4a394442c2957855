"""Vectorised construction of the MNER-QG heterogeneous graph for a whole batch at once.

One graph per (tweet, type) example; a batch of ``N`` examples is built directly as one disjoint
:class:`~torch_geometric.data.HeteroData` (no per-graph objects, no ``Batch.from_data_list``, no
per-edge Python loop): every edge set is made with ``repeat_interleave``/broadcasting from
per-example
counts, and grid edges come from one template per scale offset by each example's first node. Nodes
are ordered by example, so ``data[node_type].batch`` is sorted; ``batch`` gives each node's example.

Region nodes come in two layouts. Grid regions (``GraphSpec.grids``): every cell of every scale,
region-region edges between 8-connected cells, multi-scale edges from a cell to its parent cell.
Box regions (:class:`BoxLayout`, e.g. a detector's boxes): each example has its own number of boxes
per scale (0 included); region-region edges join boxes of one scale that overlap or are among each
other's ``knn`` nearest (box centres), and multi-scale edges join a box to the coarser-scale boxes
that contain at least ``containment`` of it or are among its ``knn`` nearest. Box relations are
computed on per-example dense blocks (``[N, K_a, K_b]``, ``K`` = the most boxes of one example), so
no Python loop runs over boxes or edges either.

See :mod:`mnerqg_graph.graph.schema` for the node and edge types.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.utils import to_dense_batch

from mnerqg_graph.boxes import box_area, box_intersection, box_iou
from mnerqg_graph.graph.schema import (
    CROSS,
    EDGE_ATTR_DIM,
    IMAGE,
    QUERY,
    TO_COARSE,
    TO_FINE,
    TOKEN,
    UNI,
    region_types,
)
from mnerqg_graph.regions import grid_neighbors, parent_index


@dataclass(frozen=True)
class GraphSpec:
    """The static shape of the graph.

    Args:
        grids: ``(rows, cols)`` of the region grid per scale, coarsest first (empty: text only, or
            box regions).
        token_window: token-token edges join tokens at most this many positions apart.
        use_image: whether region and image nodes exist at all (False: text-only graph).
        box_scales: the number of scales of box regions (used when ``grids`` is empty; the graph is
            then built from a :class:`BoxLayout`).
        knn: box regions: each box is joined to its ``knn`` nearest boxes of the same scale and of
            the next coarser scale.
        containment: box regions: a box is joined to a coarser-scale box holding at least this
            fraction of its area.
    """

    grids: tuple[tuple[int, int], ...] = ((2, 2), (4, 4), (8, 8))
    token_window: int = 2
    use_image: bool = True
    box_scales: int = 0
    knn: int = 3
    containment: float = 0.5

    @property
    def num_scales(self) -> int:
        """Number of region scales in use."""
        return len(self.grids) if self.grids else self.box_scales


@dataclass
class BoxLayout:
    """Box region nodes of a batch of examples, per scale (coarsest first).

    Args:
        example: the example of each node, sorted (nodes are ordered by example).
        boxes: each node's normalised ``xyxy`` box.

    Shapes:
        example[k]: ``[n_k]`` int64; boxes[k]: ``[n_k, 4]``.
    """

    example: list[Tensor]
    boxes: list[Tensor]


def _both(data: HeteroData, src: str, dst: str, rel: str, ei: Tensor, attr: Tensor) -> None:
    """Store an edge set and its reverse (same attributes)."""
    data[src, rel, dst].edge_index = ei
    data[src, rel, dst].edge_attr = attr
    data[dst, rel, src].edge_index = ei.flip(0)
    data[dst, rel, src].edge_attr = attr


def _attr(n: int, device: torch.device, **cols: Tensor | float) -> Tensor:
    """An ``[n, EDGE_ATTR_DIM]`` edge-attribute block: columns offset, dx, dy, scale."""
    out = torch.zeros(n, EDGE_ATTR_DIM, device=device)
    for i, name in enumerate(("offset", "dx", "dy", "scale")):
        if name in cols:
            out[:, i] = cols[name]
    return out


def build_graph(
    token_valid: Tensor,
    example_has_image: Tensor,
    spec: GraphSpec,
    boxes: BoxLayout | None = None,
) -> HeteroData:
    """Build the disjoint union of the graphs of ``N`` examples.

    Node features are not set here (the model fills ``x`` per node type); positions are: ``token``
    nodes carry ``pos`` (original token index) and ``batch``; grid region nodes carry ``cell``
    (index in their grid) and ``batch``, box region nodes ``box`` (normalised xyxy) and ``batch``;
    ``query`` and ``image`` nodes are one per example (``batch`` = ``arange(N)``).

    Args:
        token_valid: which original tokens of each example become nodes (tokens with at least one
            word piece that survived truncation).
        example_has_image: whether each example's tweet has an image (else no region nodes; its
            ``image`` node is the learned "no image" node).
        spec: grid sizes (or box scales and relations), token window, image on/off.
        boxes: the box region nodes (only when ``spec.grids`` is empty and ``spec.use_image``);
            their examples must have ``example_has_image``.

    Shapes:
        token_valid: ``[N, W]`` bool; example_has_image: ``[N]`` bool.

    Returns:
        The batch graph with ``edge_index`` and ``edge_attr`` for every edge type of
        :func:`mnerqg_graph.graph.schema.edge_types`.
    """
    device = token_valid.device
    n_ex = token_valid.size(0)
    data = HeteroData()

    ex, pos = token_valid.nonzero(as_tuple=True)  # sorted by example, then position
    n_tok = ex.numel()
    data[TOKEN].batch, data[TOKEN].pos = ex, pos
    data[TOKEN].num_nodes = n_tok
    data[QUERY].batch = torch.arange(n_ex, device=device)
    data[QUERY].num_nodes = n_ex
    tok_ids = torch.arange(n_tok, device=device)

    # query <-> token
    _both(data, QUERY, TOKEN, CROSS, torch.stack([ex, tok_ids]), _attr(n_tok, device))

    # token <-> token within the window (loop over the window size only)
    src_l, dst_l, off_l = [], [], []
    for d in range(1, spec.token_window + 1):
        s = torch.arange(max(n_tok - d, 0), device=device)
        same = ex[s] == ex[s + d]
        s = s[same]
        src_l += [s, s + d]
        dst_l += [s + d, s]
        off = (pos[s + d] - pos[s]).float() / spec.token_window
        off_l += [off, -off]
    tt = (
        torch.stack([torch.cat(src_l), torch.cat(dst_l)])
        if src_l
        else torch.empty(2, 0, dtype=torch.long, device=device)
    )
    off_all = torch.cat(off_l) if off_l else torch.empty(0, device=device)
    data[TOKEN, UNI, TOKEN].edge_index = tt
    data[TOKEN, UNI, TOKEN].edge_attr = _attr(tt.size(1), device, offset=off_all)

    if not spec.use_image:
        return data

    img_ex = example_has_image.nonzero(as_tuple=True)[0]  # examples that have region nodes
    n_img = img_ex.numel()
    # token nodes of examples with an image, and each example's rank among image examples
    rank = torch.full((n_ex,), -1, dtype=torch.long, device=device)
    rank[img_ex] = torch.arange(n_img, device=device)
    tok_sel = tok_ids[example_has_image[ex]]
    tok_rank = rank[ex[tok_sel]]

    # image node: one per example (the "no image" node where there is none)
    data[IMAGE].batch = torch.arange(n_ex, device=device)
    data[IMAGE].num_nodes = n_ex
    data[IMAGE].has_image = example_has_image
    _both(data, TOKEN, IMAGE, CROSS, torch.stack([tok_ids, ex]), _attr(n_tok, device))
    q_ids = torch.arange(n_ex, device=device)
    _both(data, QUERY, IMAGE, CROSS, torch.stack([q_ids, q_ids]), _attr(n_ex, device))

    if not spec.grids:
        if boxes is None or len(boxes.example) != spec.box_scales:
            raise ValueError(
                f"a graph of box regions needs a BoxLayout of {spec.box_scales} scales"
            )
        _box_regions(data, ex, tok_ids, n_ex, boxes, spec)
        return data
    rtypes = region_types(spec.num_scales)
    for level, (rtype, (rows, cols)) in enumerate(zip(rtypes, spec.grids, strict=True)):
        n_cells = rows * cols
        cell = torch.arange(n_cells, device=device)
        data[rtype].batch = img_ex.repeat_interleave(n_cells)
        data[rtype].cell = cell.repeat(n_img)
        data[rtype].num_nodes = n_img * n_cells
        cx = ((cell % cols).float() + 0.5) / cols
        cy = ((cell // cols).float() + 0.5) / rows
        scale = float(level) / max(spec.num_scales - 1, 1)

        # token <-> region: complete bipartite within each example
        t_src = tok_sel.repeat_interleave(n_cells)
        r_dst = (tok_rank * n_cells).repeat_interleave(n_cells) + cell.repeat(tok_sel.numel())
        cell_of_edge = cell.repeat(tok_sel.numel())
        _both(
            data,
            TOKEN,
            rtype,
            CROSS,
            torch.stack([t_src, r_dst]),
            _attr(t_src.numel(), device, dx=cx[cell_of_edge], dy=cy[cell_of_edge], scale=scale),
        )
        # query <-> region
        r_all = torch.arange(n_img * n_cells, device=device)
        q_src = img_ex.repeat_interleave(n_cells)
        _both(
            data,
            QUERY,
            rtype,
            CROSS,
            torch.stack([q_src, r_all]),
            _attr(r_all.numel(), device, dx=cx.repeat(n_img), dy=cy.repeat(n_img), scale=scale),
        )
        # region <-> region grid neighbours: one template, offset per image example
        tmpl = grid_neighbors(rows, cols).to(device)
        offs = (torch.arange(n_img, device=device) * n_cells).repeat_interleave(tmpl.size(1))
        rr = tmpl.repeat(1, n_img) + offs
        dxy = (
            (tmpl[1] % cols - tmpl[0] % cols).float() / cols,
            (tmpl[1] // cols - tmpl[0] // cols).float() / rows,
        )
        data[rtype, UNI, rtype].edge_index = rr
        data[rtype, UNI, rtype].edge_attr = _attr(
            rr.size(1), device, dx=dxy[0].repeat(n_img), dy=dxy[1].repeat(n_img)
        )

    # multi-scale: each cell to its parent at the next coarser scale, and back
    for level in range(1, spec.num_scales):
        (rf, cf), (rc, cc) = spec.grids[level], spec.grids[level - 1]
        parent = parent_index(rf, cf, rc, cc).to(device)
        n_f, n_c = rf * cf, rc * cc
        fine = torch.arange(n_img * n_f, device=device)
        coarse = parent.repeat(n_img) + (
            torch.arange(n_img, device=device) * n_c
        ).repeat_interleave(n_f)
        fine_t, coarse_t = rtypes[level], rtypes[level - 1]
        ei = torch.stack([fine, coarse])
        data[fine_t, TO_COARSE, coarse_t].edge_index = ei
        data[fine_t, TO_COARSE, coarse_t].edge_attr = _attr(ei.size(1), device, scale=1.0)
        data[coarse_t, TO_FINE, fine_t].edge_index = ei.flip(0)
        data[coarse_t, TO_FINE, fine_t].edge_attr = _attr(ei.size(1), device, scale=-1.0)
    return data


def _centres(boxes: Tensor) -> Tensor:
    """Box centres ``[..., 2]`` of ``[..., 4]`` xyxy boxes."""
    return (boxes[..., :2] + boxes[..., 2:]) / 2


def _box_pairs(
    ex_a: Tensor,
    box_a: Tensor,
    ex_b: Tensor,
    box_b: Tensor,
    n_ex: int,
    spec: GraphSpec,
    same_scale: bool,
) -> tuple[Tensor, Tensor]:
    """Edges between the boxes of two node sets, within each example, from spatial relations.

    Same scale: boxes that overlap (IoU > 0) or are among each other's ``knn`` nearest, both
    directions, no self loops; edge attribute ``offset`` = IoU. Across scales (``a`` fine, ``b``
    coarse): ``a`` to the ``b`` boxes holding at least ``spec.containment`` of it or among its
    ``knn`` nearest; ``offset`` = the contained fraction. ``dx``/``dy`` are centre differences
    (``b - a``).

    Shapes:
        ex_a: ``[n_a]`` sorted; box_a: ``[n_a, 4]``; ex_b, box_b likewise
        -> edge_index ``[2, E]`` (``a`` -> ``b`` node indices), edge_attr ``[E, EDGE_ATTR_DIM]``.
    """
    device = box_a.device
    dense_a, mask_a = to_dense_batch(box_a, ex_a, batch_size=n_ex)  # [N, Ka, 4]
    dense_b, mask_b = to_dense_batch(box_b, ex_b, batch_size=n_ex)  # [N, Kb, 4]
    pair_a, pair_b = dense_a[:, :, None], dense_b[:, None]  # [N, Ka, 1, 4], [N, 1, Kb, 4]
    iou = box_iou(pair_a, pair_b)  # [N, Ka, Kb]
    inside = box_intersection(pair_a, pair_b) / box_area(pair_a).clamp(min=1e-9)  # share of a in b
    valid = mask_a[:, :, None] & mask_b[:, None, :]
    if same_scale:
        eye = torch.eye(valid.size(1), dtype=torch.bool, device=device)
        valid = valid & ~eye
    delta = _centres(dense_b)[:, None, :, :] - _centres(dense_a)[:, :, None, :]  # [N, Ka, Kb, 2]
    dist = delta.norm(dim=-1).masked_fill(~valid, float("inf"))
    near = torch.zeros_like(valid)
    k = min(spec.knn, valid.size(2))
    if k > 0 and valid.numel():
        idx = dist.topk(k, dim=2, largest=False).indices
        near.scatter_(2, idx, True)
        near &= valid
    if same_scale:
        rel = ((iou > 0) | near) & valid
        rel = rel | rel.transpose(1, 2)
        value = iou
    else:
        rel = ((inside >= spec.containment) | near) & valid
        value = inside
    m, i, j = rel.nonzero(as_tuple=True)
    start_a = torch.cumsum(mask_a.sum(1), 0) - mask_a.sum(1)
    start_b = torch.cumsum(mask_b.sum(1), 0) - mask_b.sum(1)
    ei = torch.stack([start_a[m] + i, start_b[m] + j])
    d = delta[m, i, j]
    return ei, _attr(ei.size(1), device, offset=value[m, i, j], dx=d[:, 0], dy=d[:, 1])


def _box_regions(
    data: HeteroData, ex: Tensor, tok_ids: Tensor, n_ex: int, boxes: BoxLayout, spec: GraphSpec
) -> None:
    """Region nodes and edges of box regions (see :func:`build_graph` and :func:`_box_pairs`)."""
    device = ex.device
    n_tok_ex = torch.bincount(ex, minlength=n_ex)  # tokens per example
    tok_start = torch.cumsum(n_tok_ex, 0) - n_tok_ex
    rtypes = region_types(spec.num_scales)
    for level, rtype in enumerate(rtypes):
        e, b = boxes.example[level].to(device), boxes.boxes[level].to(device)
        n = e.numel()
        data[rtype].batch, data[rtype].box = e, b
        data[rtype].num_nodes = n
        c = _centres(b)
        scale = float(level) / max(spec.num_scales - 1, 1)
        # token <-> region: every token of the box's example
        cnt = n_tok_ex[e]
        r_rep = torch.repeat_interleave(torch.arange(n, device=device), cnt)
        first = torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
        t_src = tok_start[e[r_rep]] + torch.arange(r_rep.numel(), device=device) - first
        _both(
            data,
            TOKEN,
            rtype,
            CROSS,
            torch.stack([tok_ids[t_src], r_rep]),
            _attr(r_rep.numel(), device, dx=c[r_rep, 0], dy=c[r_rep, 1], scale=scale),
        )
        # query <-> region
        _both(
            data,
            QUERY,
            rtype,
            CROSS,
            torch.stack([e, torch.arange(n, device=device)]),
            _attr(n, device, dx=c[:, 0], dy=c[:, 1], scale=scale),
        )
        # region <-> region of one scale: overlap or nearest
        rr, attr = _box_pairs(e, b, e, b, n_ex, spec, same_scale=True)
        data[rtype, UNI, rtype].edge_index = rr
        data[rtype, UNI, rtype].edge_attr = attr
    # multi-scale: a box to the coarser boxes containing it or nearest to it, and back
    for level in range(1, spec.num_scales):
        fine_t, coarse_t = rtypes[level], rtypes[level - 1]
        ei, attr = _box_pairs(
            boxes.example[level].to(device),
            boxes.boxes[level].to(device),
            boxes.example[level - 1].to(device),
            boxes.boxes[level - 1].to(device),
            n_ex,
            spec,
            same_scale=False,
        )
        attr[:, 3] = 1.0
        data[fine_t, TO_COARSE, coarse_t].edge_index = ei
        data[fine_t, TO_COARSE, coarse_t].edge_attr = attr
        back = attr.clone()
        back[:, 3] = -1.0
        back[:, 1:3] = -back[:, 1:3]
        data[coarse_t, TO_FINE, fine_t].edge_index = ei.flip(0)
        data[coarse_t, TO_FINE, fine_t].edge_attr = back
