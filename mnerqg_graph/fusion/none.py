"""``none``: no fusion at all, the text-only reference (the model turns its image branch off)."""

from __future__ import annotations

from torch import Tensor, nn

from mnerqg_graph.fusion.base import (
    FusionOutput,
    LayerGraph,
    NodeTensors,
    ProjectedFusion,
    register_fusion,
)
from mnerqg_graph.graph.schema import EdgeType, NodeType


@register_fusion("none")
class NoFusion(ProjectedFusion):
    """A per-node-type linear projection and nothing else: no message crosses any edge.

    Args:
        in_dims: input feature size per node type.
        hidden_dim: output feature size.
        num_layers: ignored (kept for the common builder signature).
        edge_types: ignored.
        existence_gating: ignored.
        dropout: dropout after the projection.
        **_: options of graph modules (``heads``, ...) are accepted and ignored, so that
            ``fusion=none`` can be swapped into any config.

    Shapes:
        x_dict[t]: ``[N_t, in_dims[t]]`` -> ``[N_t, hidden_dim]``.
    """

    #: The model builds no image branch for this module.
    uses_image = False

    def __init__(
        self,
        in_dims: dict[NodeType, int],
        hidden_dim: int,
        num_layers: int = 0,
        edge_types: list[EdgeType] | None = None,
        existence_gating: bool = False,
        dropout: float = 0.1,
        **_: object,
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.proj = nn.ModuleDict(
            {
                nt: nn.Sequential(nn.Linear(d, hidden_dim), nn.GELU(), nn.Dropout(dropout))
                for nt, d in in_dims.items()
            }
        )

    def fuse(
        self, x_dict: NodeTensors, graph: LayerGraph, gate: Tensor, return_attention: bool
    ) -> FusionOutput:
        """Project each node type; attention is empty (there is none)."""
        return FusionOutput(self.project(x_dict), {} if return_attention else None)
