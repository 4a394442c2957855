"""``hetero_gat``: GATv2 attention per edge type, the paper's two interactions as two sub-steps.

Each layer does, for every node type ``v``:

1. multi-scale cross-modality interaction: ``h_v <- LN(h_v + sum_r GATv2_r(h_src, h_v))`` over the
   ``cross``, ``to_coarse`` and ``to_fine`` edge types ``r`` into ``v``;
2. existence-aware unimodality interaction: ``h_v <- LN(h_v + p_t * sum_r GATv2_r(h_v, h_v))`` over
   the ``uni`` edge types, where ``p_t`` is the existence probability of the node's (tweet, type)
   example (``p_t = 1`` when gating is off);
3. a position-wise feed-forward block with residual.

Node types that receive no message in a sub-step keep their features (residual).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv

from mnerqg_graph.fusion.base import FusionModule, FusionOutput, gate_messages, register_fusion
from mnerqg_graph.graph.schema import (
    EDGE_ATTR_DIM,
    EdgeType,
    NodeType,
    is_token_region,
    is_unimodal,
)


def _key(edge_type: EdgeType) -> str:
    return "__".join(edge_type)


class _Layer(nn.Module):
    def __init__(
        self,
        node_types: list[NodeType],
        edge_types: list[EdgeType],
        dim: int,
        heads: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.edge_types = edge_types
        self.convs = nn.ModuleDict(
            {
                _key(et): GATv2Conv(
                    (dim, dim),
                    dim // heads,
                    heads=heads,
                    concat=True,
                    dropout=dropout,
                    add_self_loops=False,
                    edge_dim=EDGE_ATTR_DIM,
                )
                for et in edge_types
            }
        )
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

    def _messages(
        self,
        x: dict[NodeType, Tensor],
        ei: dict[EdgeType, Tensor],
        ea: dict[EdgeType, Tensor],
        unimodal: bool,
        want_attn: bool,
        attn: dict[EdgeType, tuple[Tensor, Tensor]],
    ) -> dict[NodeType, Tensor]:
        out: dict[NodeType, Tensor] = {}
        for et in self.edge_types:
            if is_unimodal(et) != unimodal or et not in ei:
                continue
            src, _, dst = et
            conv = self.convs[_key(et)]
            if ei[et].size(1) == 0:  # no edges (e.g. no image in the batch): only the bias,
                # without projecting every source and destination node for nothing
                bias: Tensor = conv.bias  # type: ignore[assignment]  # GATv2Conv: bias=True
                msg = bias.expand(x[dst].size(0), -1)
                if want_attn and is_token_region(et):
                    attn[et] = (ei[et], x[dst].new_zeros(0))
            elif want_attn and is_token_region(et):
                msg, (e_idx, alpha) = conv(
                    (x[src], x[dst]), ei[et], ea[et], return_attention_weights=True
                )
                attn[et] = (e_idx, alpha.mean(-1))
            else:
                msg = conv((x[src], x[dst]), ei[et], ea[et])
            out[dst] = out[dst] + msg if dst in out else msg
        return out

    def forward(
        self,
        x: dict[NodeType, Tensor],
        ei: dict[EdgeType, Tensor],
        ea: dict[EdgeType, Tensor],
        batch: dict[NodeType, Tensor],
        gate: Tensor | None,
        want_attn: bool,
    ) -> tuple[dict[NodeType, Tensor], dict[EdgeType, tuple[Tensor, Tensor]]]:
        attn: dict[EdgeType, tuple[Tensor, Tensor]] = {}
        cross = self._messages(x, ei, ea, False, want_attn, attn)
        x = {
            nt: self.norm_cross[nt](h + self.drop(cross[nt])) if nt in cross else h
            for nt, h in x.items()
        }
        uni = self._messages(x, ei, ea, True, False, attn)
        if gate is not None:
            uni = {nt: gate_messages(m, batch[nt], gate) for nt, m in uni.items()}
        x = {
            nt: self.norm_uni[nt](h + self.drop(uni[nt])) if nt in uni else h for nt, h in x.items()
        }
        x = {nt: self.norm_ffn[nt](h + self.drop(self.ffn[nt](h))) for nt, h in x.items()}
        return x, attn


@register_fusion("hetero_gat")
class HeteroGATFusion(FusionModule):
    """GATv2 per edge type with existence-gated unimodal messages.

    Args:
        in_dims: input feature size per node type.
        hidden_dim: feature size after fusion (every node type).
        num_layers: number of fusion layers.
        edge_types: the edge types the graph carries.
        existence_gating: multiply unimodal messages by the existence probability.
        dropout: dropout on messages and attention.
        heads: attention heads (``hidden_dim`` must be divisible by it).

    Shapes:
        x_dict[t]: ``[N_t, in_dims[t]]`` -> ``[N_t, hidden_dim]``; gate: ``[num_examples]``.
    """

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
            [
                _Layer(list(in_dims), edge_types, hidden_dim, heads, dropout)
                for _ in range(num_layers)
            ]
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
        """Fuse; see the class docstring for shapes."""
        x = {nt: self.proj[nt](h) for nt, h in x_dict.items() if nt in self.proj}
        g = gate if self.existence_gating else None
        attn: dict[EdgeType, tuple[Tensor, Tensor]] = {}
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x, attn = layer(
                x, edge_index_dict, edge_attr_dict, batch_dict, g, return_attention and last
            )
        return FusionOutput(x, attn if return_attention else None)
