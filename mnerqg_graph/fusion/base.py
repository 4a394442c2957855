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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mnerqg_graph.graph.schema import EdgeType, NodeType
from mnerqg_graph.registry import Registry


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

    x_dict: dict[NodeType, Tensor]
    attention: dict[EdgeType, tuple[Tensor, Tensor]] | None = None


class FusionModule(nn.Module):
    """Base class of fusion modules (see the module docstring for the contract)."""

    def output_dims(self) -> dict[NodeType, int]:
        """Output feature size per node type."""
        raise NotImplementedError

    def forward(  # noqa: D102 - documented per module
        self,
        x_dict: dict[NodeType, Tensor],
        edge_index_dict: dict[EdgeType, Tensor],
        edge_attr_dict: dict[EdgeType, Tensor],
        batch_dict: dict[NodeType, Tensor],
        gate: Tensor,
        return_attention: bool = False,
    ) -> FusionOutput:
        raise NotImplementedError


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
