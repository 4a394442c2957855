"""The scaffolding the fusion modules share: their layer template and the stack around it.

Every fusion module of :mod:`mnerqg_graph.fusion` is a stack of layers with the same three residual
sub-steps per node type ``v`` (the paper's two interactions plus a feed-forward block):

1. multi-scale cross-modality interaction: ``h_v <- LN(h_v + drop(c_v))``;
2. existence-aware unimodality interaction: ``h_v <- LN(h_v + drop(u_v))``, where the module has
   already scaled ``u_v`` by the existence probability where it gates;
3. ``h_v <- LN(h_v + drop(FFN(h_v)))``.

Node types that receive no message in a sub-step keep their features. The modules differ only in
how they compute the messages ``c`` and ``u``: :class:`InteractionLayer` holds the residual parts
and the order of the sub-steps, subclasses build their message modules in
:meth:`InteractionLayer.build_messages` and implement :meth:`InteractionLayer.cross_messages` and
:meth:`InteractionLayer.unimodal_messages`. :class:`RelationConvLayer` is the common case of one
PyG conv per edge type, summed at the destination. :class:`StackedFusion` is the module around the
layers (input projections, the layer loop, the last layer's attention); a fusion module is a
subclass that names its layer class.

Parameter names (``layers.{i}.norm_cross.{type}``, ``layers.{i}.convs.{src__rel__dst}``, ...) are
those of saved checkpoints and must not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from mnerqg_graph.fusion.base import (
    Attention,
    FusionOutput,
    LayerGraph,
    NodeTensors,
    ProjectedFusion,
    gate_messages,
)
from mnerqg_graph.graph.schema import (
    EDGE_ATTR_DIM,
    EdgeType,
    NodeType,
    is_alignment_edge,
    is_unimodal,
)

#: Messages per node type and the attention on the alignment edges.
Messages = tuple[NodeTensors, Attention]


def edge_key(edge_type: EdgeType) -> str:
    """``("token", "uni", "token")`` -> ``"token__uni__token"`` (a ``ModuleDict`` key)."""
    return "__".join(edge_type)


def gate_all(messages: NodeTensors, batch: NodeTensors, gate: Tensor | None) -> NodeTensors:
    """Scale every node type's messages by its example's existence probability (None: as is)."""
    if gate is None:
        return messages
    return {nt: gate_messages(m, batch[nt], gate) for nt, m in messages.items()}


@dataclass(frozen=True)
class LayerSpec:
    """What a layer is built from (the arguments of :class:`InteractionLayer`).

    Attributes:
        node_types: the node types the layer updates.
        edge_types: the edge types the graph carries.
        dim: feature size.
        heads: attention heads.
        dropout: dropout on attention, messages and in the feed-forward block.
    """

    node_types: list[NodeType]
    edge_types: list[EdgeType]
    dim: int
    heads: int
    dropout: float


class InteractionLayer(nn.Module):
    """One fusion layer: cross-modal, then (gated) unimodal messages, then a feed-forward block.

    Built as ``layer_class(node_types, edge_types, dim, heads, dropout)`` (how
    :class:`StackedFusion` builds it): subclasses build their message modules in
    :meth:`build_messages`, which runs before :meth:`build_residual_blocks` (that order fixes the
    order of random initialisation).

    Args:
        node_types, edge_types, dim, heads, dropout: see :class:`LayerSpec`.

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

    def __init__(
        self,
        node_types: list[NodeType],
        edge_types: list[EdgeType],
        dim: int,
        heads: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.build_messages(LayerSpec(node_types, edge_types, dim, heads, dropout))
        self.build_residual_blocks(node_types, dim, dropout)

    def build_messages(self, spec: LayerSpec) -> None:
        """Build the modules that compute the messages (set as attributes of the layer).

        Args:
            spec: the layer's arguments.
        """
        raise NotImplementedError

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

    def cross_messages(self, x: NodeTensors, graph: LayerGraph, want_attn: bool) -> Messages:
        """Cross-modal and multi-scale messages per node type; attention on alignment edges.

        The attention (when ``want_attn``) covers every alignment edge type of the graph
        (:func:`~mnerqg_graph.graph.schema.is_alignment_edge`): region->token and token->query.
        """
        raise NotImplementedError

    def unimodal_messages(
        self, x: NodeTensors, graph: LayerGraph, gate: Tensor | None
    ) -> NodeTensors:
        """Unimodal messages per destination node type, already scaled by ``gate`` where gated."""
        raise NotImplementedError

    def forward(
        self, x: NodeTensors, graph: LayerGraph, gate: Tensor | None, want_attn: bool
    ) -> Messages:
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

    Subclasses name a PyG conv class (``conv_class``, and the options it needs beyond the common
    ones in ``conv_options``) or override :meth:`make_conv`; the conv is called as
    ``conv((x_src, x_dst), edge_index, edge_attr[, return_attention_weights=True])``. Takes the
    arguments of :class:`InteractionLayer`.
    """

    #: The conv class of the default :meth:`make_conv`.
    conv_class: ClassVar[Callable[..., nn.Module]]
    #: Its keyword arguments beyond those :meth:`make_conv` passes to every conv.
    conv_options: ClassVar[dict[str, object]] = {}

    def build_messages(self, spec: LayerSpec) -> None:
        """One conv per edge type, stored as ``convs.{src__rel__dst}``."""
        self.edge_types = list(spec.edge_types)
        self.convs = nn.ModuleDict(
            {
                edge_key(et): self.make_conv(spec.dim, spec.heads, spec.dropout)
                for et in self.edge_types
            }
        )

    def make_conv(self, dim: int, heads: int, dropout: float) -> nn.Module:
        """The conv of one edge type (``dim`` -> ``heads * (dim // heads)`` features).

        Args:
            dim: feature size.
            heads: attention heads (concatenated).
            dropout: attention dropout.

        Returns:
            ``conv_class((dim, dim), dim // heads, heads=heads, concat=True, dropout=dropout,
            edge_dim=EDGE_ATTR_DIM, **conv_options)``.
        """
        return self.conv_class(
            (dim, dim),
            dim // heads,
            heads=heads,
            concat=True,
            dropout=dropout,
            edge_dim=EDGE_ATTR_DIM,
            **self.conv_options,
        )

    def empty_message(self, conv: nn.Module, x_dst: Tensor) -> Tensor | None:
        """The message of a relation with no edge in the batch, or None to run the conv anyway."""
        return None

    def _messages(
        self, x: NodeTensors, graph: LayerGraph, unimodal: bool, want_attn: bool
    ) -> Messages:
        ei, ea = graph.edge_index, graph.edge_attr
        out: NodeTensors = {}
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

    def cross_messages(self, x: NodeTensors, graph: LayerGraph, want_attn: bool) -> Messages:
        """Sum over the non-``uni`` relations into each node type."""
        return self._messages(x, graph, False, want_attn)

    def unimodal_messages(
        self, x: NodeTensors, graph: LayerGraph, gate: Tensor | None
    ) -> NodeTensors:
        """Sum over the ``uni`` relations into each node type, gated."""
        return gate_all(self._messages(x, graph, True, False)[0], graph.batch, gate)


class StackedFusion(ProjectedFusion):
    """Input projections and a stack of ``layer_class`` layers: the body of a fusion module.

    A fusion module names its layer and nothing else::

        @register_fusion("gat")
        class GatFusion(StackedFusion):
            layer_class = GatLayer

    Each layer is built as ``layer_class(node_types, edge_types, hidden_dim, heads, dropout)``
    (the :class:`InteractionLayer` signature), after the projections (which fixes the order of
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

    def fuse(
        self, x_dict: NodeTensors, graph: LayerGraph, gate: Tensor, return_attention: bool
    ) -> FusionOutput:
        """Project, run the layers; the attention is the last layer's (see the class docstring)."""
        x = self.project(x_dict)
        g = gate if self.existence_gating else None
        attn: Attention = {}
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x, attn = layer(x, graph, g, return_attention and last)
        return FusionOutput(x, attn if return_attention else None)
