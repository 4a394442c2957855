"""The fusion-module contract and its registry.

A fusion module is the graph "neck" of MNER-QG: GNN layers over the heterogeneous graph of
:mod:`mnerqg_graph.graph.schema` that perform

* the multi-scale cross-modality interaction: messages along ``cross``, ``to_coarse`` and
``to_fine``
  edges;
* the existence-aware unimodality interaction: messages along ``uni`` edges, multiplied at their
  destination by the existence probability ``gate`` of that node's (tweet, type) example when
  ``existence_gating`` is on, so that an absent type does not reshape the text.

Registered builders (``FUSION_REGISTRY``) take these keyword arguments and return a
:class:`FusionModule`:

    in_dims: dict[NodeType, int]   input feature size per node type present in the graph
    hidden_dim: int                 feature size of every node type after fusion
    num_layers: int                 number of fusion layers
    edge_types: list[EdgeType]      the edge types the graph will carry
    existence_gating: bool          gate unimodal messages by existence
    dropout: float

plus any module-specific keyword arguments with defaults.

A module overrides :meth:`FusionModule.forward`, or (the built-in ones) :meth:`FusionModule.fuse`,
which receives the graph as one :class:`LayerGraph`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mnerqg_graph.graph.schema import EdgeType, NodeType
from mnerqg_graph.registry import Registry

#: Features (or messages) per node type, ``[N_t, D]`` each.
NodeTensors = dict[NodeType, Tensor]
#: Attention per alignment edge type: ``(edge_index [2, E], weights [E])``.
Attention = dict[EdgeType, tuple[Tensor, Tensor]]


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
    batch: NodeTensors
    num_examples: int


@dataclass
class FusionOutput:
    """What a fusion module returns.

    Attributes:
        x_dict: fused features per node type, ``[num_nodes, output_dims()[type]]``.
        attention: when asked for, attention weights of the last layer per alignment edge type
            (:func:`~mnerqg_graph.graph.schema.is_alignment_edge`): every region->token edge type
            (a token's attention over the image cells) and ``(token, cross, query)`` (the query
            node's attention over its tweet's tokens), each ``(edge_index [2, E], weights [E])``
            with ``edge_index`` that of the graph and weights averaged over heads; an edge type
            with no edge in the batch maps to empty tensors. A module without attention returns
            ``{}``; None when not asked for.
    """

    x_dict: NodeTensors
    attention: Attention | None = None


class FusionModule(nn.Module):
    """Base class of fusion modules (see the module docstring for the contract)."""

    def output_dims(self) -> dict[NodeType, int]:
        """Output feature size per node type."""
        raise NotImplementedError

    def forward(
        self,
        x_dict: NodeTensors,
        edge_index_dict: dict[EdgeType, Tensor],
        edge_attr_dict: dict[EdgeType, Tensor],
        batch_dict: NodeTensors,
        gate: Tensor,
        return_attention: bool = False,
    ) -> FusionOutput:
        """Fuse the node features over the graph: :meth:`fuse` of it as one :class:`LayerGraph`.

        Args:
            x_dict: input features per node type.
            edge_index_dict: ``edge_index`` per edge type.
            edge_attr_dict: ``edge_attr`` per edge type.
            batch_dict: example index of every node, per node type.
            gate: existence probability per (tweet, type) example.
            return_attention: also return the attention (see :class:`FusionOutput`).

        Returns:
            The fused features (and the attention when asked for).

        Shapes:
            x_dict[t]: ``[N_t, in_dims[t]]`` -> ``[N_t, output_dims()[t]]``; edge_index_dict[r]:
            ``[2, E_r]``; edge_attr_dict[r]: ``[E_r, EDGE_ATTR_DIM]``; batch_dict[t]: ``[N_t]``;
            gate: ``[num_examples]``.
        """
        graph = LayerGraph(edge_index_dict, edge_attr_dict, batch_dict, gate.size(0))
        return self.fuse(x_dict, graph, gate, return_attention)

    def fuse(
        self, x_dict: NodeTensors, graph: LayerGraph, gate: Tensor, return_attention: bool
    ) -> FusionOutput:
        """What :meth:`forward` returns, from the graph as one :class:`LayerGraph`.

        Args:
            x_dict: input features per node type.
            graph: the edges, their attributes and the nodes' example indices.
            gate: existence probability per example.
            return_attention: also return the attention.

        Returns:
            See :meth:`forward`.
        """
        raise NotImplementedError


class ProjectedFusion(FusionModule):
    """A module whose every node type comes out of ``proj`` with ``hidden_dim`` features.

    Subclasses set ``hidden_dim`` and ``proj`` (one module per node type) in ``__init__``.
    """

    hidden_dim: int
    proj: nn.ModuleDict

    def output_dims(self) -> dict[NodeType, int]:
        """Every node type comes out with ``hidden_dim`` features."""
        return {nt: self.hidden_dim for nt in self.proj}

    def project(self, x_dict: NodeTensors) -> NodeTensors:
        """``proj`` applied to each node type it has (other node types are dropped).

        Shapes:
            x_dict[t]: ``[N_t, in_dims[t]]`` -> ``[N_t, hidden_dim]``.
        """
        return {nt: self.proj[nt](h) for nt, h in x_dict.items() if nt in self.proj}


def gate_messages(messages: Tensor, batch: Tensor, gate: Tensor) -> Tensor:
    """Scale each destination node's unimodal messages by its example's existence probability.

    Shapes:
        messages: ``[N, D]``; batch: ``[N]`` example index per node; gate: ``[num_examples]``.
    """
    return messages * gate.index_select(0, batch).unsqueeze(-1).to(messages.dtype)


FUSION_REGISTRY: Registry[FusionModule] = Registry("fusion module", FusionModule, doc=__doc__ or "")


def register_fusion(name: str):  # type: ignore[no-untyped-def]
    """Decorator: register a fusion module class under ``name``."""
    return FUSION_REGISTRY.register(name)


def zeros_like_nodes(x: Tensor, dim: int) -> Tensor:
    """A ``[x.size(0), dim]`` zero tensor on ``x``'s device and dtype."""
    return torch.zeros(x.size(0), dim, device=x.device, dtype=x.dtype)
