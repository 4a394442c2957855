"""``hetero_gat``: GATv2 attention per edge type, the paper's two interactions as two sub-steps.

Each layer does, for every node type ``v``:

1. multi-scale cross-modality interaction: ``h_v <- LN(h_v + sum_r GATv2_r(h_src, h_v))`` over the
   ``cross``, ``to_coarse`` and ``to_fine`` edge types ``r`` into ``v``;
2. existence-aware unimodality interaction: ``h_v <- LN(h_v + p_t * sum_r GATv2_r(h_v, h_v))`` over
   the ``uni`` edge types, where ``p_t`` is the existence probability of the node's (tweet, type)
   example (``p_t = 1`` when gating is off);
3. a position-wise feed-forward block with residual.

Node types that receive no message in a sub-step keep their features (residual).

Attention: with ``return_attention`` the last layer's convs on the alignment edges (region->token
and token->query) return their GATv2 coefficients, averaged over heads. The softmax of each conv is
over one relation: for each scale a token's weights over its region edges sum to 1, and so do the
query node's weights over its tweet's tokens.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv

from mnerqg_graph.fusion.base import register_fusion
from mnerqg_graph.fusion.layers import RelationConvLayer, StackedFusion


class _Layer(RelationConvLayer):
    conv_class = GATv2Conv
    conv_options = {"add_self_loops": False}

    def empty_message(self, conv: nn.Module, x_dst: Tensor) -> Tensor:
        """No edges (e.g. no image in the batch): only the bias (no projection for nothing)."""
        bias: Tensor = conv.bias  # type: ignore[assignment]  # GATv2Conv: bias=True
        return bias.expand(x_dst.size(0), -1)


@register_fusion("hetero_gat")
class HeteroGATFusion(StackedFusion):
    """GATv2 per edge type with existence-gated unimodal messages.

    Takes the arguments of :class:`~mnerqg_graph.fusion.layers.StackedFusion`.

    Shapes:
        x_dict[t]: ``[N_t, in_dims[t]]`` -> ``[N_t, hidden_dim]``; gate: ``[num_examples]``;
        attention[region->token or token->query]: ``(edge_index [2, E], weights [E])``.
    """

    layer_class = _Layer
