"""Vectorised construction of the MNER-QG heterogeneous graph for a whole batch at once.

One graph per (tweet, type) example; a batch of ``N`` examples is built directly as one disjoint
:class:`~torch_geometric.data.HeteroData` (no per-graph objects, no ``Batch.from_data_list``, no
per-edge Python loop): every edge set is made with ``repeat_interleave``/broadcasting from
per-example
counts, and grid edges come from one template per scale offset by each example's first node. Nodes
are ordered by example, so ``data[node_type].batch`` is sorted; ``batch`` gives each node's example.

See :mod:`mnerqg_graph.graph.schema` for the node and edge types.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from detectors.regions import grid_neighbors, parent_index
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


@dataclass(frozen=True)
class GraphSpec:
    """The static shape of the graph.

    Args:
        grids: ``(rows, cols)`` of the region grid per scale, coarsest first (empty: text only).
        token_window: token-token edges join tokens at most this many positions apart.
        use_image: whether region and image nodes exist at all (False: text-only graph).
    """

    grids: tuple[tuple[int, int], ...] = ((2, 2), (4, 4), (8, 8))
    token_window: int = 2
    use_image: bool = True

    @property
    def num_scales(self) -> int:
        """Number of region scales in use."""
        return len(self.grids)


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


def build_graph(token_valid: Tensor, example_has_image: Tensor, spec: GraphSpec) -> HeteroData:
    """Build the disjoint union of the graphs of ``N`` examples.

    Node features are not set here (the model fills ``x`` per node type); positions are: ``token``
    nodes carry ``pos`` (original token index) and ``batch``; region nodes carry ``cell`` (index in
    their grid) and ``batch``; ``query`` and ``image`` nodes are one per example (``batch`` =
    ``arange(N)``).

    Args:
        token_valid: which original tokens of each example become nodes (tokens with at least one
            word piece that survived truncation).
        example_has_image: whether each example's tweet has an image (else no region nodes; its
            ``image`` node is the learned "no image" node).
        spec: grid sizes, token window, image on/off.

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
