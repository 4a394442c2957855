"""``cross_attention``: a dense, non-graph reference with the graph modules' inputs and outputs.

No edge is used for message passing: per (tweet, type) example, the nodes of each kind are laid side
by side in padded tensors (:func:`torch_geometric.utils.to_dense_batch` over the sorted ``batch``
vectors) and attend to each other with :class:`torch.nn.MultiheadAttention`. The *text side* of an
example is its query node and its tokens; the *vision side* is its image node (the learned "no
image" node when the tweet has none) and all its region cells of all scales (none without image).

Each layer does:

1. cross-modality interaction (ungated):
   text rows attend to the example's vision side and to the other text kind (tokens to the query,
   the query to the tokens), mirroring the graph's ``cross`` edges; vision rows attend to the text
   side; ``h <- LN(h + msg)``;
2. unimodality interaction: tokens attend to the example's tokens (dense self-attention), the
   message scaled by the existence probability ``p_t`` of the example (``p_t = 1`` when gating is
   off); vision rows attend to the whole vision side (dense self-attention across cells and scales,
   which also carries the multi-scale interaction and is therefore not gated); ``h <- LN(h + msg)``;
3. a position-wise feed-forward block with residual.

An example without an image has only its "no image" node on the vision side, so its tokens attend to
that node (and their query); a text-only graph (no vision node types) keeps only the
query <-> token attention and the token self-attention.

Attention: with ``return_attention`` the last layer's text cross-attention weights (averaged over
heads) are gathered onto the graph's alignment edges, so the visualiser draws them like a graph
module's: a token's row read at the region columns, onto the region->token ``edge_index`` of each
scale, and the query's row read at the token columns, onto the ``(token, cross, query)``
``edge_index``. One softmax spans a text row's keys of the other kinds, so a token's weights on its
region edges sum to at most 1 over the three scales (the rest goes to its query and image nodes),
and the query's weights on its tokens sum to 1 in a text-only graph and to less where the model
has an image branch: its image node (the "no image" node of a tweet without an image) and region
cells take the rest. The query's weights are returned for every example: with an image, without
one, and in a text-only graph (no vision node types), where only they are returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.utils import to_dense_batch

from mnerqg_graph.fusion.base import (
    LayerGraph,
    NodeTensors,
    gate_messages,
    register_fusion,
)
from mnerqg_graph.fusion.layers import InteractionLayer, LayerSpec, Messages, StackedFusion
from mnerqg_graph.graph.schema import (
    QUERY,
    TOKEN,
    EdgeType,
    NodeType,
    is_query_token,
    is_token_region,
)

TEXT_TYPES: tuple[NodeType, ...] = (QUERY, TOKEN)


def node_positions(batch: Tensor, num_examples: int) -> Tensor:
    """Index of each node within its example (nodes are sorted by example).

    Shapes:
        batch: ``[N]`` -> ``[N]``.
    """
    counts = torch.bincount(batch, minlength=num_examples)
    start = counts.cumsum(0) - counts
    return torch.arange(batch.numel(), device=batch.device) - start[batch]


@dataclass
class _Seq:
    """Node types laid side by side per example.

    Attributes:
        x: ``[B, L, D]`` features (zeros on padding).
        mask: ``[B, L]`` True on real nodes.
        start: first column of each node type.
        width: number of columns of each node type.
    """

    x: Tensor
    mask: Tensor
    start: dict[NodeType, int]
    width: dict[NodeType, int]

    @property
    def length(self) -> int:
        """Number of columns ``L``."""
        return self.x.size(1)

    def nodes(self, rows: Tensor, node_type: NodeType) -> Tensor:
        """The rows of ``node_type``'s real nodes, in node order.

        Shapes:
            rows: ``[B, L, D]`` -> ``[n, D]``.
        """
        s, w = self.start[node_type], self.width[node_type]
        return rows[:, s : s + w][self.mask[:, s : s + w]]


def _pack(
    x: dict[NodeType, Tensor],
    batch: dict[NodeType, Tensor],
    types: list[NodeType],
    num_examples: int,
) -> _Seq:
    parts, masks = [], []
    start: dict[NodeType, int] = {}
    width: dict[NodeType, int] = {}
    offset = 0
    for nt in types:
        dense, mask = to_dense_batch(x[nt], batch[nt], batch_size=num_examples)
        parts.append(dense)
        masks.append(mask)
        start[nt], width[nt] = offset, dense.size(1)
        offset += dense.size(1)
    return _Seq(torch.cat(parts, 1), torch.cat(masks, 1), start, width)


def _safe_padding(mask: Tensor) -> Tensor:
    """``key_padding_mask`` (True = ignore) that leaves column 0 open in examples with no key.

    Such examples have no real query row either, so what they compute is never read; the open
    column only keeps the softmax (and its gradient) finite. Shapes: ``[B, L] -> [B, L]``.
    """
    pad = ~mask
    pad[:, 0] &= mask.any(1)
    return pad


def _mha(spec: LayerSpec) -> nn.MultiheadAttention:
    return nn.MultiheadAttention(spec.dim, spec.heads, dropout=spec.dropout, batch_first=True)


class _Layer(InteractionLayer):
    def build_messages(self, spec: LayerSpec) -> None:
        self.heads = spec.heads
        self.text_types = [nt for nt in TEXT_TYPES if nt in spec.node_types]
        self.vision_types = [nt for nt in spec.node_types if nt not in TEXT_TYPES]
        self.text_cross = _mha(spec)
        self.token_self = _mha(spec)
        self.vision_cross = _mha(spec) if self.vision_types else None
        self.vision_self = _mha(spec) if self.vision_types else None

    def _cross(
        self, x: dict[NodeType, Tensor], batch: dict[NodeType, Tensor], n: int, want_attn: bool
    ) -> tuple[dict[NodeType, Tensor], Tensor | None, _Seq, _Seq | None]:
        """Cross-modal messages per node type, and the text rows' attention ``[B, Lt, Lk]``."""
        text_types = [nt for nt in self.text_types if nt in x]
        vision_types = [nt for nt in self.vision_types if nt in x]
        text = _pack(x, batch, text_types, n)
        vision = _pack(x, batch, vision_types, n) if vision_types else None
        msgs: dict[NodeType, Tensor] = {}
        keys = (
            text
            if vision is None
            else _Seq(
                torch.cat([text.x, vision.x], 1), torch.cat([text.mask, vision.mask], 1), {}, {}
            )
        )
        # kind of every column: 0, 1, ... per text type, -1 on the vision side; a text row does not
        # attend to its own kind (that is the unimodal step)
        kind = torch.full((keys.length,), -1, dtype=torch.long, device=text.x.device)
        for i, nt in enumerate(text_types):
            kind[text.start[nt] : text.start[nt] + text.width[nt]] = i
        allowed = keys.mask.unsqueeze(1) & (kind[: text.length, None] != kind[None, :])  # [B,Lt,Lk]
        has_key = allowed.any(-1)  # [B, Lt]
        allowed[..., 0] |= ~has_key  # keep the softmax finite; the message is zeroed below
        out, weights = self.text_cross(
            text.x,
            keys.x,
            keys.x,
            attn_mask=(~allowed).repeat_interleave(self.heads, 0),
            need_weights=want_attn,
            average_attn_weights=True,
        )
        out = out * has_key.unsqueeze(-1).to(out.dtype)
        msgs.update({nt: text.nodes(out, nt) for nt in text_types})
        if vision is not None and self.vision_cross is not None:
            v_out, _ = self.vision_cross(
                vision.x,
                text.x,
                text.x,
                key_padding_mask=_safe_padding(text.mask),
                need_weights=False,
            )
            msgs.update({nt: vision.nodes(v_out, nt) for nt in vision_types})
        return msgs, weights, text, vision

    def unimodal_messages(
        self, x: NodeTensors, graph: LayerGraph, gate: Tensor | None
    ) -> NodeTensors:
        """Token self-attention (gated) and vision self-attention across cells and scales."""
        batch, n = graph.batch, graph.num_examples
        msgs: dict[NodeType, Tensor] = {}
        if TOKEN in x and x[TOKEN].size(0):
            tok = _pack(x, batch, [TOKEN], n)
            out, _ = self.token_self(
                tok.x, tok.x, tok.x, key_padding_mask=_safe_padding(tok.mask), need_weights=False
            )
            m = tok.nodes(out, TOKEN)
            msgs[TOKEN] = gate_messages(m, batch[TOKEN], gate) if gate is not None else m
        vision_types = [nt for nt in self.vision_types if nt in x]
        if vision_types and self.vision_self is not None:
            vis = _pack(x, batch, vision_types, n)
            out, _ = self.vision_self(
                vis.x, vis.x, vis.x, key_padding_mask=_safe_padding(vis.mask), need_weights=False
            )
            msgs.update({nt: vis.nodes(out, nt) for nt in vision_types})
        return msgs

    def cross_messages(self, x: NodeTensors, graph: LayerGraph, want_attn: bool) -> Messages:
        batch, n = graph.batch, graph.num_examples
        cross, weights, text, vision = self._cross(x, batch, n, want_attn)
        attn = (
            self._gather(weights, graph.edge_index, batch, n, text, vision)
            if weights is not None
            else {}
        )
        return cross, attn

    @staticmethod
    def _gather(
        weights: Tensor,
        ei: dict[EdgeType, Tensor],
        batch: dict[NodeType, Tensor],
        n: int,
        text: _Seq,
        vision: _Seq | None,
    ) -> dict[EdgeType, tuple[Tensor, Tensor]]:
        """The dense text-row weights ``[B, Lt, Lk]`` read at each alignment edge.

        Region->token edges: the token's row at the region's column (only with a vision side);
        token->query edges: the query's row at the token's column.
        """
        attn: dict[EdgeType, tuple[Tensor, Tensor]] = {}
        if TOKEN not in text.start:
            return attn
        tok_pos = node_positions(batch[TOKEN], n)
        for et, e in ei.items():
            src, dst = e
            if is_query_token(et) and QUERY in text.start:
                row = text.start[QUERY] + node_positions(batch[QUERY], n)[dst]
                col = text.start[TOKEN] + tok_pos[src]
                attn[et] = (e, weights[batch[QUERY][dst], row, col])
            elif is_token_region(et) and vision is not None and et[0] in vision.start:
                row = text.start[TOKEN] + tok_pos[dst]
                col = text.length + vision.start[et[0]] + node_positions(batch[et[0]], n)[src]
                attn[et] = (e, weights[batch[TOKEN][dst], row, col])
        return attn


@register_fusion("cross_attention")
class CrossAttentionFusion(StackedFusion):
    """Dense multi-head cross- and self-attention per example (no message passing on edges).

    Takes the arguments of :class:`~mnerqg_graph.fusion.layers.StackedFusion`; ``edge_types`` is
    unused (no message follows an edge; the ``edge_index`` of the alignment edges is read only to
    return attention on it), ``existence_gating`` scales the token self-attention messages.

    Shapes:
        x_dict[t]: ``[N_t, in_dims[t]]`` -> ``[N_t, hidden_dim]``; batch_dict[t]: ``[N_t]`` sorted
        example index; gate: ``[num_examples]``; attention[region->token or token->query]:
        ``(edge_index [2, E], weights [E])``.
    """

    layer_class = _Layer
