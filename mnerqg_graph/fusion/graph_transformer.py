"""``graph_transformer``: a :class:`~torch_geometric.nn.TransformerConv` per edge type.

Each layer does, for every node type ``v``:

1. multi-scale cross-modality interaction: ``h_v <- LN(h_v + sum_r TConv_r(h_src, h_v, e))`` over
   the ``cross``, ``to_coarse`` and ``to_fine`` edge types ``r`` into ``v``;
2. existence-aware unimodality interaction: ``h_v <- LN(h_v + p_t * sum_r TConv_r(h_v, h_v, e))``
   over the ``uni`` edge types, where ``p_t`` is the existence probability of the node's
   (tweet, type) example (``p_t = 1`` when gating is off);
3. a position-wise feed-forward block with residual.

``TConv_r`` is scaled dot-product attention over the incoming edges of relation ``r``, with the edge
attributes ``e`` (relative token offset, cell offsets dx/dy, scale gap; see
:mod:`mnerqg_graph.graph.schema`) projected and added to the keys and values, so relative position
and scale shape both the attention and the message. The convs have no root weight: the residual of
each sub-step carries the node's own features. Node types that receive no message in a sub-step
keep their features (residual).

Attention: with ``return_attention`` the last layer's convs on the alignment edges (region->token
and token->query) return their softmax coefficients (``return_attention_weights=True``), averaged
over heads. The softmax of each conv is over one relation, so for each scale a token's weights over
its region edges sum to 1, and so do the query node's weights over its tweet's tokens.
"""

from __future__ import annotations

from torch_geometric.nn import TransformerConv

from mnerqg_graph.fusion.base import register_fusion
from mnerqg_graph.fusion.layers import RelationConvLayer, StackedFusion


class _Layer(RelationConvLayer):
    conv_class = TransformerConv
    conv_options = {"root_weight": False}


@register_fusion("graph_transformer")
class GraphTransformerFusion(StackedFusion):
    """TransformerConv per edge type, edge attributes in keys and values, gated unimodal messages.

    Takes the arguments of :class:`~mnerqg_graph.fusion.layers.StackedFusion`.

    Shapes:
        x_dict[t]: ``[N_t, in_dims[t]]`` -> ``[N_t, hidden_dim]``; edge_attr_dict[r]:
        ``[E_r, EDGE_ATTR_DIM]``; gate: ``[num_examples]``; attention[region->token or
        token->query]: ``(edge_index [2, E], weights [E])``.
    """

    layer_class = _Layer
