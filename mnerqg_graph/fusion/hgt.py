"""``hgt``: the Heterogeneous Graph Transformer (:class:`~torch_geometric.nn.HGTConv`) as fusion.

HGTConv puts every edge type it knows into one attention softmax per destination node, so a single
conv cannot gate some messages and leave others alone. Each layer therefore runs two HGTConvs, in
the layout of PyG's ``examples/hetero/hgt_dblp.py`` (``x_dict = conv(x_dict, edge_index_dict)``):

1. multi-scale cross-modality interaction: ``HGT_cross`` over the ``cross``, ``to_coarse`` and
   ``to_fine`` edge types; ``h_v <- LN(h_v + u_v)`` with ``u_v = HGT_cross(h)_v - h_v``;
2. existence-aware unimodality interaction: ``HGT_uni`` over the ``uni`` edge types;
   ``h_v <- LN(h_v + p_t * u_v)`` with ``u_v = HGT_uni(h)_v - h_v`` and ``p_t`` the existence
   probability of the node's (tweet, type) example (``p_t = 1`` when gating is off);
3. a position-wise feed-forward block with residual.

HGTConv mixes its output with its input through a learned skip gate ``a`` per node type:
``HGT(h)_v = a m_v + (1 - a) h_v``, where ``m_v`` is the transformed sum of attention-weighted
messages. The update ``u_v = a (m_v - h_v)`` is therefore exactly what the messages change in
``h_v``, and it is this update that the existence probability scales (``p_t = 0``: the unimodal
messages leave the node as it was). HGTConv omits node types that receive no message from its
output; those keep their features (residual). HGT uses relation-specific key/value/prior
parameters instead of edge attributes, so ``edge_attr_dict`` is not used.

Attention: HGTConv does not return its attention. With ``return_attention`` the last layer's
cross-modal conv is run with a message hook that recomputes HGT's coefficients from the exact
arguments its ``message`` receives (``softmax_j(<q_i, W_rel k_j> * mu_rel / sqrt(d))``), so the
returned weights are the ones the conv used, averaged over heads, on the alignment edges
(region->token and token->query). They come from the one softmax HGT takes over *all* incoming
cross-modal edges of a node: a token's (query, image and the three region scales), so a token's
weights on its region edges sum to at most 1, the remainder going to its query and image nodes;
and the query node's (its tokens, the image node and the region cells), so the query's weights on
its tokens sum to 1 in a text-only graph and to less where the graph has image nodes (also the
learned "no image" node of a tweet without an image).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor
from torch_geometric.nn import HGTConv
from torch_geometric.utils import softmax

from mnerqg_graph.fusion.base import Attention, LayerGraph, NodeTensors, register_fusion
from mnerqg_graph.fusion.layers import (
    InteractionLayer,
    LayerSpec,
    Messages,
    StackedFusion,
    gate_all,
)
from mnerqg_graph.graph.schema import EdgeType, is_alignment_edge, is_unimodal


def hgt_attention(message_kwargs: dict[str, Any]) -> Tensor:
    """HGTConv's attention coefficients, recomputed from the arguments of its ``message``.

    Args:
        message_kwargs: the keyword arguments of :meth:`HGTConv.message` as a message forward hook
            receives them (``q_i``, ``k_j``, ``edge_attr``, ``index``, ``ptr``, ``size_i``).

    Shapes:
        q_i, k_j: ``[E, H, D]``; edge_attr: ``[E, H]`` -> ``[E, H]`` (softmax over each
        destination's incoming edges of all the conv's edge types).
    """
    q_i, k_j = message_kwargs["q_i"], message_kwargs["k_j"]
    score = (q_i * k_j).sum(-1) * message_kwargs["edge_attr"] / math.sqrt(q_i.size(-1))
    return softmax(score, message_kwargs["index"], message_kwargs["ptr"], message_kwargs["size_i"])


def _make_conv(edge_types: list[EdgeType], dim: int, heads: int) -> HGTConv | None:
    """An HGTConv over ``edge_types`` and the node types they touch (None without edge types)."""
    if not edge_types:
        return None
    touched = {nt for et in edge_types for nt in (et[0], et[2])}
    return HGTConv(dim, dim, (sorted(touched), edge_types), heads=heads)


class _Layer(InteractionLayer):
    def build_messages(self, spec: LayerSpec) -> None:
        known = set(spec.node_types)
        usable = [et for et in spec.edge_types if et[0] in known and et[2] in known]
        # HGTConv's relation-wise linear layers expect the edge types in their metadata order
        # (``HeteroLinear(is_sorted=True)``): these lists fix that order.
        self.cross_types = [et for et in usable if not is_unimodal(et)]
        self.uni_types = [et for et in usable if is_unimodal(et)]
        self.conv_cross = _make_conv(self.cross_types, spec.dim, spec.heads)
        self.conv_uni = _make_conv(self.uni_types, spec.dim, spec.heads)

    @staticmethod
    def _updates(
        conv: HGTConv | None,
        types: list[EdgeType],
        x: NodeTensors,
        ei: dict[EdgeType, Tensor],
        want_attn: bool,
        attn: Attention,
    ) -> NodeTensors:
        """``HGT(h)_v - h_v`` for every node type the conv sends messages to."""
        sub_ei = {et: ei[et] for et in types if et in ei and et[0] in x and et[2] in x}
        if conv is None or not sub_ei:
            return {}
        sub_x = {nt: x[nt] for nt in conv.node_types if nt in x}
        captured: list[Tensor] = []
        handle = (
            conv.register_message_forward_hook(
                lambda _m, inputs, _out: captured.append(hgt_attention(inputs[0]))
            )
            if want_attn
            else None
        )
        try:
            out = conv(sub_x, sub_ei)
        finally:
            if handle is not None:
                handle.remove()
        if captured:
            # HGTConv concatenates the edge types in the order of ``sub_ei``
            alpha = captured[0].mean(-1)  # [E_all]
            sizes = [e.size(1) for e in sub_ei.values()]
            for et, a in zip(sub_ei, alpha.split(sizes), strict=True):
                if is_alignment_edge(et):
                    attn[et] = (sub_ei[et], a)
        return {nt: h - x[nt] for nt, h in out.items() if h is not None}

    def cross_messages(self, x: NodeTensors, graph: LayerGraph, want_attn: bool) -> Messages:
        attn: Attention = {}
        return self._updates(
            self.conv_cross, self.cross_types, x, graph.edge_index, want_attn, attn
        ), attn

    def unimodal_messages(
        self, x: NodeTensors, graph: LayerGraph, gate: Tensor | None
    ) -> NodeTensors:
        uni = self._updates(self.conv_uni, self.uni_types, x, graph.edge_index, False, {})
        return gate_all(uni, graph.batch, gate)


@register_fusion("hgt")
class HGTFusion(StackedFusion):
    """Two HGTConvs per layer (cross-modal + multi-scale; existence-gated unimodal).

    Takes the arguments of :class:`~mnerqg_graph.fusion.layers.StackedFusion` (``existence_gating``
    scales the unimodal updates).

    Shapes:
        x_dict[t]: ``[N_t, in_dims[t]]`` -> ``[N_t, hidden_dim]``; gate: ``[num_examples]``;
        attention[region->token or token->query]: ``(edge_index [2, E], weights [E])``.
    """

    layer_class = _Layer
