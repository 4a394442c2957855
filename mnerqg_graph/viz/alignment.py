"""What a model aligned, as plain data: one graph per (tweet, entity-type query).

:func:`explain` runs a model once over a list of samples with
``forward(batch, return_attention=True, return_graph=True)`` and cuts the batch graph into one
:class:`Alignment` per (tweet, type): the tweet's token nodes (original tokens that kept at least
one word piece, with their pieces), the query node, the image node and the region nodes of every
scale (when the model has an image branch and the tweet an image), **every** token-region edge
with the attention weight the last fusion layer gave it for this input, and every query-token edge
with the query node's attention over its tokens in that layer. Nothing here draws;
:mod:`mnerqg_graph.viz.draw` does.

:func:`to_networkx` turns an alignment into a :class:`networkx.DiGraph` whose edges go the
direction of the message whose attention is recorded: region -> token (``kind="region"``, a
token's attention over the image cells) and token -> query (``kind="query"``, the query's attention
over the tweet's tokens); :func:`write_graph` saves it as GraphML and as node-link JSON. Node ids:
``query``, ``image``, ``token:<position>``, ``region_s<k>:<cell>``. Node attributes:

=========  ===========================  ==================================================
attribute  nodes                        meaning
=========  ===========================  ==================================================
kind       all                          ``token``, ``query``, ``region`` or ``image``
x, y       all                          position in the drawing (:func:`graph_layout`)
text       token, query                 the token / the query sentence
pieces     token                        its word pieces, space separated
position   token                        index in the tweet's original tokens
entity     token                        predicted entity type covering it ("" when none)
scale      region                       1 = coarsest grid
cell       region                       row-major index in its grid (detector regions: the
                                        box's index among the example's boxes of its scale)
row, col   region                       the cell's row and column (-1 for detector boxes)
box        region                       the cell (or detected box) in normalised xyxy (a list
                                        in JSON, a JSON string in GraphML, which has no list
                                        type)
has_image  image                        False for the learned "no image" node
=========  ===========================  ==================================================

Edge attributes:

=========  ===========================  ==================================================
attribute  edges                        meaning
=========  ===========================  ==================================================
kind       all                          ``region`` (region -> token) or ``query``
                                        (token -> query)
weight     all                          the attention value (float): of the token over the
                                        regions of one scale (``region``), of the query
                                        over the tweet's tokens (``query``)
scale      region                       the region's scale
=========  ===========================  ==================================================

The two kinds come from different softmaxes, so compare weights within a kind. A module without
attention (``none``) gives no edges. Graph attributes: ``tweet_id``, ``type``, ``query``,
``fusion``, ``has_image``, ``attention`` (whether the fusion module returned attention at all).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor

from mnerqg_graph.boxes import NormBox
from mnerqg_graph.data.mrc import MrcExample
from mnerqg_graph.data.types import Sample, Span
from mnerqg_graph.graph.schema import CROSS, QUERY, TOKEN, EdgeType, is_query_token, region_types
from mnerqg_graph.io import atomic_write_text


@dataclass(frozen=True)
class TokenNode:
    """A token node of one (tweet, type) graph.

    Attributes:
        position: index in the tweet's original tokens.
        text: the token.
        pieces: its word pieces in the model's input.
    """

    position: int
    text: str
    pieces: tuple[str, ...]

    @property
    def node_id(self) -> str:
        """The node's id in :func:`to_networkx`."""
        return f"{TOKEN}:{self.position}"


@dataclass(frozen=True)
class RegionNode:
    """A region node: one cell of one grid scale, or one detected box.

    Attributes:
        node_type: ``region_s1`` (coarsest) ... ``region_s3``.
        scale: 1-based scale index (1 = coarsest).
        cell: row-major index in its grid (a box: its index among its scale's boxes).
        row: the cell's row (-1 for a box).
        col: the cell's column (-1 for a box).
        box: the cell or the detected box, normalised xyxy.
    """

    node_type: str
    scale: int
    cell: int
    row: int
    col: int
    box: NormBox

    @property
    def node_id(self) -> str:
        """The node's id in :func:`to_networkx`."""
        return f"{self.node_type}:{self.cell}"


def grid_regions(grids: Sequence[tuple[int, int]]) -> list[RegionNode]:
    """The region nodes of every scale, coarsest first, cells row-major.

    Args:
        grids: ``(rows, cols)`` per scale, coarsest first (``model.spec.grids``).
    """
    out: list[RegionNode] = []
    for level, (rtype, (rows, cols)) in enumerate(
        zip(region_types(len(grids)), grids, strict=True)
    ):
        for cell in range(rows * cols):
            r, c = divmod(cell, cols)
            out.append(
                RegionNode(
                    rtype,
                    level + 1,
                    cell,
                    r,
                    c,
                    (c / cols, r / rows, (c + 1) / cols, (r + 1) / rows),
                )
            )
    return out


@dataclass
class Alignment:
    """The graph of one (tweet, entity type) example and the attention the model put on it.

    Attributes:
        tweet_id: the tweet's id.
        type: the entity type asked about.
        query: the query sentence.
        fusion: the fusion module's registered name.
        tokens: token nodes, in sentence order.
        n_tokens: number of original tokens of the tweet (token nodes may be fewer).
        regions: region nodes (empty without image), coarsest scale first.
        grids: ``(rows, cols)`` per scale of the model (also when this tweet has no image); empty
            for a model whose regions are detected boxes (``box_scales`` scales).
        image_branch: whether the model has image nodes at all.
        has_image: whether this tweet had an image.
        attention: whether the fusion module returned attention (token-region and query-token).
        edge_token: ``[E]`` position of each edge's token.
        edge_region: ``[E]`` index in :attr:`regions` of each edge's region.
        edge_weight: ``[E]`` attention weight of the last fusion layer (averaged over heads).
        query_token: ``[Q]`` positions of the tokens that the graph joins to the query node
            (query-token edges, both directions; every token node of the example), ascending.
        query_weight: ``[Q]`` the last fusion layer's attention of the query node over each of
            those tokens (token -> query edges, averaged over heads), aligned with
            :attr:`query_token`; empty when the fusion module returns no attention.
        token_start: ``[len(tokens)]`` the span heads' probability that each token node starts
            an entity of this type: what this type's query picked out of the tweet.
        token_end: ``[len(tokens)]`` the same for ending an entity.
        entities: the tweet's predicted entities of every type, resolved across types, as
            ``(start, end_exclusive, type, score)``.
        box: the best grounding box of this type (normalised xyxy) and its confidence, or None.
        grounding_threshold: confidence under which the type counts as not in the image.
        box_scales: the number of scales of a model whose regions are detected boxes (0: grid).
    """

    tweet_id: str
    type: str
    query: str
    fusion: str
    tokens: list[TokenNode]
    n_tokens: int
    regions: list[RegionNode]
    grids: tuple[tuple[int, int], ...]
    image_branch: bool
    has_image: bool
    attention: bool
    edge_token: np.ndarray
    edge_region: np.ndarray
    edge_weight: np.ndarray
    query_token: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    query_weight: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    token_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    token_end: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    entities: list[tuple[int, int, str, float]] = field(default_factory=list)
    box: tuple[NormBox, float] | None = None
    grounding_threshold: float = 0.5
    box_scales: int = 0

    @property
    def num_scales(self) -> int:
        """Number of region scales of the model (grid or box regions)."""
        return len(self.grids) or self.box_scales

    def scale_sizes(self) -> list[int]:
        """Regions per scale: ``rows * cols`` of a grid, else this example's boxes of the scale."""
        if self.grids:
            return [r * c for r, c in self.grids]
        return [sum(r.scale == k + 1 for r in self.regions) for k in range(self.box_scales)]

    @property
    def num_edges(self) -> int:
        """Number of token-region edges (all of them, not only those drawn)."""
        return int(self.edge_weight.size)

    @property
    def spans(self) -> list[tuple[int, int, float]]:
        """Predicted entities of this alignment's type: ``(start, end_exclusive, score)``."""
        return [(a, b, s) for a, b, t, s in self.entities if t == self.type]

    def entity_of(self) -> dict[int, str]:
        """Token position -> type of the predicted entity covering it (any type)."""
        return {i: typ for start, end, typ, _ in self.entities for i in range(start, end)}

    @property
    def grounded(self) -> bool:
        """Whether the model puts this type in the image (best confidence over the threshold)."""
        return self.box is not None and self.box[1] >= self.grounding_threshold

    def note(self) -> str:
        """Why the picture shows no edges, or "" when it has some."""
        if not self.image_branch:
            return f"fusion '{self.fusion}' has no image branch: text side only"
        if not self.has_image:
            return "no image: text side only"
        if not self.attention:
            return f"fusion '{self.fusion}' returns no attention: no token-region edges"
        return ""

    def region_weights(self, positions: Sequence[int]) -> np.ndarray:
        """Mean attention of some tokens over every region (0 for a token without edges).

        Args:
            positions: token positions (e.g. an entity's).

        Returns:
            ``[len(regions)]`` float array aligned with :attr:`regions`.
        """
        out = np.zeros(len(self.regions), dtype=np.float64)
        if not len(positions) or not self.num_edges:
            return out
        sel = np.isin(self.edge_token, np.asarray(positions))
        np.add.at(out, self.edge_region[sel], self.edge_weight[sel].astype(np.float64))
        return out / len(positions)

    def focus(self) -> tuple[list[int], str]:
        """The tokens whose attention the heat map shows, and a caption.

        The best-scoring predicted entity of this type; else the token whose attention is most
        peaked (largest weight relative to a uniform spread over its scale's cells).
        """
        spans = sorted(self.spans, key=lambda s: -s[2])
        text = {t.position: t.text for t in self.tokens}
        if spans:
            a, b, score = spans[0]
            words = " ".join(text.get(i, "") for i in range(a, b)).strip()
            return list(range(a, b)), f"'{words}' (predicted {self.type}, {score:.2f})"
        if not self.num_edges:
            return [], ""
        sizes = self.scale_sizes()
        cells = np.array([sizes[r.scale - 1] for r in self.regions])
        rel = self.edge_weight * cells[self.edge_region]
        pos = int(self.edge_token[int(np.argmax(rel))])
        return [pos], f"'{text.get(pos, '')}' (strongest token; no {self.type} predicted)"


@dataclass
class TweetExplanation:
    """A tweet, its predictions and one :class:`Alignment` per entity type.

    Attributes:
        sample: the input (image path and gold boxes included, when known).
        alignments: per type, in query order.
        entities: predicted entities resolved across types, with their scores.
    """

    sample: Sample
    alignments: dict[str, Alignment]
    entities: list[tuple[Span, float]]

    @property
    def tweet_id(self) -> str:
        """The tweet's id."""
        return self.sample.tweet.id

    @property
    def types(self) -> list[str]:
        """The entity types, in query order."""
        return list(self.alignments)


def _pieces(ex: MrcExample, tokenizer: Any, special: set[int]) -> list[tuple[str, ...]]:
    """The word pieces of each original token of an example (empty for a token without pieces)."""
    starts = {p for p in ex.first_piece if p >= 0}
    out: list[tuple[str, ...]] = []
    for p in ex.first_piece:
        if p < 0:
            out.append(())
            continue
        end = p + 1
        while end < len(ex.input_ids) and end not in starts and ex.input_ids[end] not in special:
            end += 1
        out.append(tuple(tokenizer.convert_ids_to_tokens(ex.input_ids[p:end])))
    return out


def _token_region_attention(
    attention: dict[EdgeType, tuple[Tensor, Tensor]] | None,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per region type: ``(region node ids, token node ids, weights)`` of the token-region edges.

    Accepts either direction (region -> token, the contract, or token -> region) and weights with
    a trailing head dimension (averaged).
    """
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for (src, _, dst), (ei, w) in (attention or {}).items():
        if src.startswith("region_") and dst == TOKEN:
            rtype, r_ids, t_ids = src, ei[0], ei[1]
        elif src == TOKEN and dst.startswith("region_"):
            rtype, r_ids, t_ids = dst, ei[1], ei[0]
        else:
            continue
        weights = w.detach().float()
        if weights.dim() > 1:
            weights = weights.flatten(1).mean(-1)
        out[rtype] = (r_ids.cpu().numpy(), t_ids.cpu().numpy(), weights.cpu().numpy())
    return out


def _query_token_attention(
    attention: dict[EdgeType, tuple[Tensor, Tensor]] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(query node ids, token node ids, weights)`` of the token -> query attention, or None.

    Accepts weights with a trailing head dimension (averaged).
    """
    for et, (ei, w) in (attention or {}).items():
        if is_query_token(et):
            weights = w.detach().float()
            if weights.dim() > 1:
                weights = weights.flatten(1).mean(-1)
            return ei[1].cpu().numpy(), ei[0].cpu().numpy(), weights.cpu().numpy()
    return None


def _query_token_edges(graph: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(query node, token node)`` of every query->token edge of a batch graph.

    The query node of example ``n`` is node ``n`` of type ``query``.
    """
    et = (QUERY, CROSS, TOKEN)
    if et not in graph.edge_types:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ei = graph[et].edge_index.cpu().numpy()
    return ei[0], ei[1]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def explain(
    model: Any,
    processor: Any,
    samples: Sequence[Sample],
    batch_size: int = 8,
) -> list[TweetExplanation]:
    """Run ``model`` over ``samples`` and return one explanation per tweet, in input order.

    Entities and boxes are decoded by the one decoding step
    (:func:`~mnerqg_graph.decoding.decode_batch`) with the model config's decoder and
    thresholds, as ``mnerqg predict`` decodes them; the forward pass also returns the attention
    and the graph drawn.

    Args:
        model: a :class:`~mnerqg_graph.model.MnerqgModel` (its train/eval mode is restored).
        processor: its :class:`~mnerqg_graph.processing.MnerqgProcessor` (tokenizer, queries,
            preprocessing options).
        samples: the tweets (an image path, when there is one; gold boxes are only carried along).
        batch_size: tweets per forward pass.

    Returns:
        One :class:`TweetExplanation` per tweet, in input order.
    """
    from mnerqg_graph import pipeline
    from mnerqg_graph.data.collate import collate
    from mnerqg_graph.decoding import DecoderInput, Decoding, check_decodings, decode_batch

    cfg = model.config
    device = next(model.parameters()).device
    samples = list(samples)
    tokenizer, queries = processor.tokenizer, processor.queries
    decoding = Decoding.of(cfg)
    check_decodings(model, [decoding])
    items, _ = processor.prepare(samples)
    special = set(tokenizer.all_special_ids)
    grids: tuple[tuple[int, int], ...] = tuple(model.spec.grids) if model.spec.use_image else ()
    image_branch = bool(model.spec.use_image)
    box_scales = model.spec.num_scales if image_branch and not grids else 0
    regions_all = grid_regions(grids) if grids else []
    offset: dict[str, int] = {}
    for i, r in enumerate(regions_all):
        offset.setdefault(r.node_type, i)
    was_training = model.training
    model.eval()
    result: list[TweetExplanation] = []
    try:
        for chunk in _chunks(items, max(1, batch_size)):
            batch = collate(
                chunk, cfg.heads.max_span_len, cfg.image.image_size, processor.pad_id
            ).to(device)
            with pipeline.inference_precision(device):  # as predict runs on this device
                out = model(batch, return_attention=True, return_graph=True)
            decoded = decode_batch(model, DecoderInput(out, chunk, samples), [decoding])
            graph = out.graph
            tok_batch = graph[TOKEN].batch.cpu().numpy()
            tok_pos = graph[TOKEN].pos.cpu().numpy()
            cells = {rt: graph[rt].cell.cpu().numpy() for rt in offset if rt in graph.node_types}
            box_nodes = {
                rt: (graph[rt].batch.cpu().numpy(), graph[rt].box.float().cpu().numpy())
                for rt in region_types(box_scales or 1)
                if box_scales and rt in graph.node_types
            }
            attn = _token_region_attention(out.attention)
            q_attn = _query_token_attention(out.attention)
            has_attention = bool(attn) or q_attn is not None
            p_start, p_end, _, _ = model.span_probabilities(out)
            p_start = p_start[..., 0].float().cpu().numpy()  # [N, W]
            p_end = p_end[..., 0].float().cpu().numpy()  # [N, W]: token i ends a span
            q_src, q_tok = _query_token_edges(graph)
            row = 0
            for k_tweet, it in enumerate(chunk):
                sample = samples[it.index]
                n_tok = len(sample.tweet.tokens)
                entities = [
                    (sp.start, sp.end, sp.type, sc)
                    for sp, sc in decoded.entities[decoding][k_tweet]
                ]
                has_image = image_branch and (it.image is not None or it.regions is not None)
                alignments: dict[str, Alignment] = {}
                for ex in it.examples:
                    pieces = _pieces(ex, tokenizer, special)
                    positions = tok_pos[tok_batch == row]
                    tokens = [
                        TokenNode(int(p), sample.tweet.tokens[p], pieces[p])
                        for p in sorted(positions.tolist())
                    ]
                    regions = regions_all if has_image else []
                    local: dict[str, np.ndarray] = {}  # box model: node id -> index in regions
                    if box_scales and has_image:
                        regions = []
                        for level, (rtype, (b_ex, b_box)) in enumerate(box_nodes.items()):
                            ids = np.flatnonzero(b_ex == row)
                            local[rtype] = np.full(b_ex.size, -1, np.int64)
                            local[rtype][ids] = len(regions) + np.arange(ids.size)
                            regions += [
                                RegionNode(rtype, level + 1, j, -1, -1, tuple(b_box[i].tolist()))
                                for j, i in enumerate(ids.tolist())
                            ]
                    e_tok, e_reg, e_w = [], [], []
                    for rtype, (r_ids, t_ids, w) in attn.items():
                        sel = tok_batch[t_ids] == row
                        if not sel.any():
                            continue
                        e_tok.append(tok_pos[t_ids[sel]])
                        if box_scales:
                            e_reg.append(local[rtype][r_ids[sel]])
                        else:
                            e_reg.append(offset[rtype] + cells[rtype][r_ids[sel]])
                        e_w.append(w[sel])
                    pred = decoded.normalised[k_tweet][ex.type]
                    node_pos = np.asarray([t.position for t in tokens], dtype=np.int64)
                    if q_attn is not None:
                        sel = q_attn[0] == row
                        q_pos = tok_pos[q_attn[1][sel]]
                        order = np.argsort(q_pos, kind="stable")
                        query_token, query_weight = q_pos[order], q_attn[2][sel][order]
                    else:
                        query_token = np.sort(tok_pos[q_tok[q_src == row]])
                        query_weight = np.zeros(0, np.float32)
                    alignments[ex.type] = Alignment(
                        tweet_id=sample.tweet.id,
                        type=ex.type,
                        query=queries.get(ex.type, ""),
                        fusion=cfg.fusion.name,
                        tokens=tokens,
                        n_tokens=n_tok,
                        regions=regions,
                        grids=grids,
                        image_branch=image_branch,
                        has_image=has_image,
                        attention=has_attention,
                        edge_token=np.concatenate(e_tok) if e_tok else np.zeros(0, np.int64),
                        edge_region=np.concatenate(e_reg) if e_reg else np.zeros(0, np.int64),
                        edge_weight=np.concatenate(e_w) if e_w else np.zeros(0, np.float32),
                        query_token=query_token,
                        query_weight=query_weight,
                        token_start=p_start[row, node_pos],
                        token_end=p_end[row, node_pos],
                        entities=entities,
                        box=None
                        if pred is None
                        else ((pred[0][0], pred[0][1], pred[0][2], pred[0][3]), float(pred[1])),
                        grounding_threshold=float(cfg.decoding.grounding_threshold),
                        box_scales=box_scales,
                    )
                    row += 1
                result.append(
                    TweetExplanation(
                        sample, alignments, [(Span(a, b, t), s) for a, b, t, s in entities]
                    )
                )
    finally:
        model.train(was_training)
    return result


def graph_layout(al: Alignment) -> dict[str, tuple[float, float]]:
    """Node positions of the drawing, in data units with y growing downwards.

    Tokens form one column at ``x = 0``, placed by their index in the tweet (``y = position``;
    never a bipartite layout, which does not keep the sentence order), the query node above
    them; the region grids are stacked on the right, coarsest on top, each cell (or detected
    box) at its centre (one square per scale, the image's frame), the image node above them.

    Returns:
        Node id -> ``(x, y)`` for every node of :func:`to_networkx`.
    """
    pos: dict[str, tuple[float, float]] = {QUERY: (0.0, -1.5)}
    for t in al.tokens:
        pos[t.node_id] = (0.0, float(t.position))
    if not al.image_branch:
        return pos
    x0, side, tops = grid_frame(al)
    pos["image"] = (x0 + side / 2, -1.5)
    for r in al.regions:
        cx, cy = (r.box[0] + r.box[2]) / 2, (r.box[1] + r.box[3]) / 2
        if r.row >= 0:  # a grid cell: its centre, as (col + 0.5) / cols
            rows, cols = al.grids[r.scale - 1]
            cx, cy = (r.col + 0.5) / cols, (r.row + 0.5) / rows
        pos[r.node_id] = (x0 + cx * side, tops[r.scale - 1] + cy * side)
    return pos


def grid_frame(al: Alignment) -> tuple[float, float, list[float]]:
    """Where the region grids go: left edge, side of each square, top of each scale's square."""
    span = max(al.n_tokens - 1, 5)
    n = max(al.num_scales, 1)
    gap = 0.08 * span
    side = max((span - gap * (n - 1)) / n, 1.5)
    x0 = max(0.6 * span, 5.0)
    return x0, side, [i * (side + gap) for i in range(n)]


def to_networkx(al: Alignment) -> nx.DiGraph:
    """The alignment as a graph: nodes with attributes, edges weighted by attention.

    Region -> token edges (``kind="region"``) and token -> query edges (``kind="query"``); see the
    module docstring for the attributes. Every token-region and query-token edge with attention
    is there (not only the strongest), so the data is complete.
    """
    pos = graph_layout(al)
    g = nx.DiGraph(
        tweet_id=al.tweet_id,
        type=al.type,
        query=al.query,
        fusion=al.fusion,
        has_image=al.has_image,
        attention=al.attention,
    )
    entity = al.entity_of()

    def add_node(node: str, **attrs: Any) -> None:
        """Add ``node`` with ``attrs`` and its place in the layout (``x``, ``y``, last)."""
        x, y = pos[node]
        g.add_node(node, **attrs, x=x, y=y)

    add_node(QUERY, kind="query", text=al.query)
    for t in al.tokens:
        add_node(
            t.node_id,
            kind="token",
            text=t.text,
            pieces=" ".join(t.pieces),
            position=t.position,
            entity=entity.get(t.position, ""),
        )
    if al.image_branch:
        add_node("image", kind="image", has_image=al.has_image)
    for r in al.regions:
        add_node(
            r.node_id,
            kind="region",
            scale=r.scale,
            cell=r.cell,
            row=r.row,
            col=r.col,
            box=[float(v) for v in r.box],
        )
    for p, ri, w in zip(
        al.edge_token.tolist(), al.edge_region.tolist(), al.edge_weight.tolist(), strict=True
    ):
        r = al.regions[ri]
        g.add_edge(r.node_id, f"{TOKEN}:{p}", kind="region", weight=float(w), scale=r.scale)
    if al.query_weight.size:
        for p, w in zip(al.query_token.tolist(), al.query_weight.tolist(), strict=True):
            g.add_edge(f"{TOKEN}:{p}", QUERY, kind="query", weight=float(w))
    return g


def write_graph(al: Alignment, out_dir: str | Path, stem: str | None = None) -> list[Path]:
    """Write ``alignment_<TYPE>.graphml`` and ``alignment_<TYPE>.json`` (node-link).

    Args:
        al: the alignment.
        out_dir: the folder (created).
        stem: file name without extension (default ``alignment_<TYPE>``).

    Returns:
        The two paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"alignment_{safe_name(al.type)}"
    g = to_networkx(al)
    data = nx.node_link_data(g, edges="edges")
    json_path = out / f"{stem}.json"
    atomic_write_text(json_path, json.dumps(data, ensure_ascii=False) + "\n")
    flat = g.copy()
    for _, attrs in flat.nodes(data=True):
        if "box" in attrs:
            attrs["box"] = json.dumps(attrs["box"])
    graphml_path = out / f"{stem}.graphml"
    atomic_write_text(graphml_path, "\n".join(nx.generate_graphml(flat)) + "\n")
    return [graphml_path, json_path]


def safe_name(name: str) -> str:
    """``name`` made safe as a file or folder name (letters, digits, ``.``, ``-``, ``_``)."""
    out = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip(".")
    return out or "_"
