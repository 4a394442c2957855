"""The scaffolding the fusion modules share: their layer template and the stack around it.

Every fusion module of :mod:`mnerqg_graph.fusion` is a stack of layers with the same three residual
sub-steps per node type ``v`` (the paper's two interactions plus a feed-forward block):

1. multi-scale cross-modality interaction: ``h_v <- LN(h_v + drop(c_v))``;
2. existence-aware unimodality interaction: ``h_v <- LN(h_v + drop(u_v))``, where the module has
   already scaled ``u_v`` by the existence probability where it gates;
3. ``h_v <- LN(h_v + drop(FFN(h_v)))``.

Node types that receive no message in a sub-step keep their features. The modules differ only in
how they compute the messages ``c`` and ``u``: :class:`InteractionLayer` holds the residual parts
and the order of the sub-steps, subclasses implement :meth:`InteractionLayer.cross_messages` and
:meth:`InteractionLayer.unimodal_messages`. :class:`RelationConvLayer` is the common case of one
PyG conv per edge type, summed at the destination. :class:`StackedFusion` is the module around the
layers (input projections, the layer loop, the last layer's attention); a fusion module is a
subclass that names its layer class.

Parameter names (``layers.{i}.norm_cross.{type}``, ``layers.{i}.convs.{src__rel__dst}``, ...) are
those of saved checkpoints and must not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from mnerqg_graph.fusion.base import FusionModule, FusionOutput, gate_messages
from mnerqg_graph.graph.schema import EdgeType, NodeType, is_alignment_edge, is_unimodal

Attention = dict[EdgeType, tuple[Tensor, Tensor]]


def edge_key(edge_type: EdgeType) -> str:
    """``("token", "uni", "token")`` -> ``"token__uni__token"`` (a ``ModuleDict`` key)."""
    return "__".join(edge_type)


def gate_all(
    messages: dict[NodeType, Tensor], batch: dict[NodeType, Tensor], gate: Tensor | None
) -> dict[NodeType, Tensor]:
    """Scale every node type's messages by its example's existence probability (None: as is)."""
    if gate is None:
        return messages
    return {nt: gate_messages(m, batch[nt], gate) for nt, m in messages.items()}


@dataclass
class LayerGraph:
    """The graph every layer of one forward pass reads (its messages follow it).

    Attributes:
        edge_index: ``[2, E_r]`` per edge type ``r``.
        edge_attr: ``[E_r, EDGE_ATTR_DIM]`` per edge type.
        batch: ``[N_t]`` example index per node type ``t``.
        num_examples: number of (tweet, type) examples.
    """

    edge_index: dict[EdgeType, Tensor]
    edge_attr: dict[EdgeType, Tensor]
    batch: dict[NodeType, Tensor]
    num_examples: int


class InteractionLayer(nn.Module):
    """One fusion layer: cross-modal, then (gated) unimodal messages, then a feed-forward block.

    Subclasses take ``(node_types, edge_types, dim, heads, dropout)`` (how :class:`StackedFusion`
    builds them), build their message modules in ``__init__`` and then call
    :meth:`build_residual_blocks` (in that order, which fixes the order of random initialisation).

    Shapes:
        x[t]: ``[N_t, D]`` -> ``[N_t, D]``; graph: :class:`LayerGraph`; gate:
        ``[num_examples]`` or None (gating off); attention[region->token or token->query]:
        ``(edge_index [2, E], weights [E])``.
    """

    norm_cross: nn.ModuleDict
    norm_uni: nn.ModuleDict
    norm_ffn: nn.ModuleDict
    ffn: nn.ModuleDict
    drop: nn.Dropout

    def build_residual_blocks(self, node_types: list[NodeType], dim: int, dropout: float) -> None:
        """The three layer norms and the feed-forward block per node type, and the dropout.

        Args:
            node_types: the node types the layer updates.
            dim: feature size.
            dropout: dropout on every sub-step's update and inside the feed-forward block.
        """
        self.norm_cross = nn.ModuleDict({nt: nn.LayerNorm(dim) for nt in node_types})
        self.norm_uni = nn.ModuleDict({nt: nn.LayerNorm(dim) for nt in node_types})
        self.norm_ffn = nn.ModuleDict({nt: nn.LayerNorm(dim) for nt in node_types})
        self.ffn = nn.ModuleDict(
            {
                nt: nn.Sequential(
                    nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
                )
                for nt in node_types
            }
        )
        self.drop = nn.Dropout(dropout)

    def cross_messages(
        self,
        x: dict[NodeType, Tensor],
        graph: LayerGraph,
        want_attn: bool,
    ) -> tuple[dict[NodeType, Tensor], Attention]:
        """Cross-modal and multi-scale messages per node type; attention on alignment edges.

        The attention (when ``want_attn``) covers every alignment edge type of the graph
        (:func:`~mnerqg_graph.graph.schema.is_alignment_edge`): region->token and token->query.
        """
        raise NotImplementedError

    def unimodal_messages(
        self,
        x: dict[NodeType, Tensor],
        graph: LayerGraph,
        gate: Tensor | None,
    ) -> dict[NodeType, Tensor]:
        """Unimodal messages per destination node type, already scaled by ``gate`` where gated."""
        raise NotImplementedError

    def forward(
        self,
        x: dict[NodeType, Tensor],
        graph: LayerGraph,
        gate: Tensor | None,
        want_attn: bool,
    ) -> tuple[dict[NodeType, Tensor], Attention]:
        """The three residual sub-steps (see the class docstring)."""
        cross, attn = self.cross_messages(x, graph, want_attn)
        x = {
            nt: self.norm_cross[nt](h + self.drop(cross[nt])) if nt in cross else h
            for nt, h in x.items()
        }
        uni = self.unimodal_messages(x, graph, gate)
        x = {
            nt: self.norm_uni[nt](h + self.drop(uni[nt])) if nt in uni else h for nt, h in x.items()
        }
        x = {nt: self.norm_ffn[nt](h + self.drop(self.ffn[nt](h))) for nt, h in x.items()}
        return x, attn


class RelationConvLayer(InteractionLayer):
    """One conv per edge type; a node's message is the sum of its incoming relations' outputs.

    Subclasses implement :meth:`make_conv`; the conv is called as
    ``conv((x_src, x_dst), edge_index, edge_attr[, return_attention_weights=True])``.

    Args:
        node_types: the node types the layer updates.
        edge_types: the edge types the graph carries.
        dim: feature size.
        heads: attention heads.
        dropout: dropout on attention, messages and in the feed-forward block.
    """

    def __init__(
        self,
        node_types: list[NodeType],
        edge_types: list[EdgeType],
        dim: int,
        heads: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.edge_types = list(edge_types)
        self.convs = nn.ModuleDict(
            {edge_key(et): self.make_conv(dim, heads, dropout) for et in self.edge_types}
        )
        self.build_residual_blocks(node_types, dim, dropout)

    def make_conv(self, dim: int, heads: int, dropout: float) -> nn.Module:
        """The conv of one edge type (``dim`` -> ``heads * (dim // heads)`` features)."""
        raise NotImplementedError

    def empty_message(self, conv: nn.Module, x_dst: Tensor) -> Tensor | None:
        """The message of a relation with no edge in the batch, or None to run the conv anyway."""
        return None

    def _messages(
        self,
        x: dict[NodeType, Tensor],
        graph: LayerGraph,
        unimodal: bool,
        want_attn: bool,
    ) -> tuple[dict[NodeType, Tensor], Attention]:
        ei, ea = graph.edge_index, graph.edge_attr
        out: dict[NodeType, Tensor] = {}
        attn: Attention = {}
        for et in self.edge_types:
            if is_unimodal(et) != unimodal or et not in ei:
                continue
            src, _, dst = et
            if src not in x or dst not in x:
                continue
            conv = self.convs[edge_key(et)]
            msg = self.empty_message(conv, x[dst]) if ei[et].size(1) == 0 else None
            if msg is not None:
                if want_attn and is_alignment_edge(et):
                    attn[et] = (ei[et], x[dst].new_zeros(0))
            elif want_attn and is_alignment_edge(et):
                msg, (e_idx, alpha) = conv(
                    (x[src], x[dst]), ei[et], ea[et], return_attention_weights=True
                )
                attn[et] = (e_idx, alpha.mean(-1))
            else:
                msg = conv((x[src], x[dst]), ei[et], ea[et])
            out[dst] = out[dst] + msg if dst in out else msg
        return out, attn

    def cross_messages(
        self,
        x: dict[NodeType, Tensor],
        graph: LayerGraph,
        want_attn: bool,
    ) -> tuple[dict[NodeType, Tensor], Attention]:
        """Sum over the non-``uni`` relations into each node type."""
        return self._messages(x, graph, False, want_attn)

    def unimodal_messages(
        self,
        x: dict[NodeType, Tensor],
        graph: LayerGraph,
        gate: Tensor | None,
    ) -> dict[NodeType, Tensor]:
        """Sum over the ``uni`` relations into each node type, gated."""
        return gate_all(self._messages(x, graph, True, False)[0], graph.batch, gate)


class StackedFusion(FusionModule):
    """Input projections and a stack of ``layer_class`` layers: the body of a fusion module.

    A fusion module names its layer and nothing else::

        @register_fusion("gat")
        class GatFusion(StackedFusion):
            layer_class = GatLayer

    Each layer is built as ``layer_class(node_types, edge_types, hidden_dim, heads, dropout)``
    (the :class:`RelationConvLayer` signature), after the projections (which fixes the order of
    random initialisation), and stored as ``layers.{i}`` (the checkpoint layout).

    Args:
        in_dims: input feature size per node type.
        hidden_dim: feature size after fusion (every node type).
        num_layers: number of fusion layers.
        edge_types: the edge types the graph carries.
        existence_gating: pass the existence probability to the layers (else None), which scale
            their unimodal messages by it.
        dropout: dropout on attention, messages and in the feed-forward block.
        heads: attention heads (``hidden_dim`` must be divisible by it).

    Shapes:
        x_dict[t]: ``[N_t, in_dims[t]]`` -> ``[N_t, hidden_dim]``; gate: ``[num_examples]``;
        attention[region->token or token->query]: ``(edge_index [2, E], weights [E])``.
    """

    #: The layer class; set by every fusion module.
    layer_class: ClassVar[type[InteractionLayer]]

    def __init__(
        self,
        in_dims: dict[NodeType, int],
        hidden_dim: int,
        num_layers: int,
        edge_types: list[EdgeType],
        existence_gating: bool = True,
        dropout: float = 0.1,
        heads: int = 4,
    ) -> None:
        super().__init__()
        if hidden_dim % heads:
            raise ValueError(f"hidden_dim {hidden_dim} not divisible by heads {heads}")
        self.hidden_dim = hidden_dim
        self.existence_gating = existence_gating
        self.proj = nn.ModuleDict({nt: nn.Linear(d, hidden_dim) for nt, d in in_dims.items()})
        self.layers = nn.ModuleList(
            self.layer_class(list(in_dims), list(edge_types), hidden_dim, heads, dropout)
            for _ in range(num_layers)
        )

    def output_dims(self) -> dict[NodeType, int]:
        """Every node type comes out with ``hidden_dim`` features."""
        return {nt: self.hidden_dim for nt in self.proj}

    def forward(
        self,
        x_dict: dict[NodeType, Tensor],
        edge_index_dict: dict[EdgeType, Tensor],
        edge_attr_dict: dict[EdgeType, Tensor],
        batch_dict: dict[NodeType, Tensor],
        gate: Tensor,
        return_attention: bool = False,
    ) -> FusionOutput:
        """Project, run the layers; the attention is the last layer's (see the class docstring)."""
        x = {nt: self.proj[nt](h) for nt, h in x_dict.items() if nt in self.proj}
        g = gate if self.existence_gating else None
        graph = LayerGraph(edge_index_dict, edge_attr_dict, batch_dict, gate.size(0))
        attn: Attention = {}
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x, attn = layer(x, graph, g, return_attention and last)
        return FusionOutput(x, attn if return_attention else None)
