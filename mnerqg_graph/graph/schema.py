"""Node and edge types of the MNER-QG heterogeneous graph (one graph per (tweet, query)).

Node types:
    ``token``: tweet tokens (original tokens, not word pieces);
    ``query``: one pooled query node per (tweet, type) (the [CLS] of ``[CLS] query [SEP] tweet``);
    ``region_s1``, ``region_s2``, ``region_s3``: image grid cells, coarsest (s1) to finest (s3);
    ``image``: one global image node per graph; the learned "no image" node when the image is
    absent.

Edge types (``(src, relation, dst)``), grouped by the paper's two interactions:
    cross-modal (relation ``cross``), both directions: token-region_s, query-region_s, query-token,
    token-image, query-image;
    multi-scale (relations ``to_coarse`` / ``to_fine``): a region cell and its parent cell at the
    next
    coarser scale;
    unimodal (relation ``uni``): token-token within a window, region-region grid neighbours
    (8-conn.).

Every edge type carries ``edge_attr`` of size :data:`EDGE_ATTR_DIM`:
``[relative token offset / window, dx, dy, scale gap]`` (zeros where not meaningful).
"""

from __future__ import annotations

NodeType = str
EdgeType = tuple[str, str, str]

TOKEN: NodeType = "token"
QUERY: NodeType = "query"
IMAGE: NodeType = "image"
ALL_REGION_TYPES: tuple[NodeType, ...] = ("region_s1", "region_s2", "region_s3")
EDGE_ATTR_DIM = 4

CROSS = "cross"
TO_COARSE = "to_coarse"
TO_FINE = "to_fine"
UNI = "uni"


def region_types(num_scales: int) -> tuple[NodeType, ...]:
    """The region node types in use with ``num_scales`` scales (1 = only the coarsest)."""
    if not 1 <= num_scales <= len(ALL_REGION_TYPES):
        raise ValueError(f"num_scales must be 1..{len(ALL_REGION_TYPES)}, got {num_scales}")
    return ALL_REGION_TYPES[:num_scales]


def edge_types(num_scales: int, use_image: bool) -> list[EdgeType]:
    """All edge types of the graph for a configuration (text-only: token/query edges only)."""
    types: list[EdgeType] = [(QUERY, CROSS, TOKEN), (TOKEN, CROSS, QUERY), (TOKEN, UNI, TOKEN)]
    if not use_image:
        return types
    regions = region_types(num_scales)
    for r in regions:
        types += [(TOKEN, CROSS, r), (r, CROSS, TOKEN), (QUERY, CROSS, r), (r, CROSS, QUERY)]
        types.append((r, UNI, r))
    for fine, coarse in zip(regions[1:], regions[:-1], strict=True):
        types += [(fine, TO_COARSE, coarse), (coarse, TO_FINE, fine)]
    types += [
        (TOKEN, CROSS, IMAGE),
        (IMAGE, CROSS, TOKEN),
        (QUERY, CROSS, IMAGE),
        (IMAGE, CROSS, QUERY),
    ]
    return types


def node_types(num_scales: int, use_image: bool) -> list[NodeType]:
    """All node types of the graph for a configuration."""
    if not use_image:
        return [TOKEN, QUERY]
    return [TOKEN, QUERY, *region_types(num_scales), IMAGE]


def is_unimodal(edge_type: EdgeType) -> bool:
    """Whether messages along ``edge_type`` are unimodal (gated by existence)."""
    return edge_type[1] == UNI


def is_token_region(edge_type: EdgeType) -> bool:
    """Whether ``edge_type`` goes from a region node to a token node (the alignment edges drawn)."""
    return edge_type[0].startswith("region_") and edge_type[2] == TOKEN


def is_query_token(edge_type: EdgeType) -> bool:
    """Whether ``edge_type`` goes from a token node to the query node (``(token, cross, query)``).

    Its attention is the query node's over its tweet's tokens; the other direction carries none
    worth returning (a token has exactly one query neighbour, so its softmax weight is always 1).
    """
    return edge_type == (TOKEN, CROSS, QUERY)


def is_alignment_edge(edge_type: EdgeType) -> bool:
    """Whether fusion modules return attention on ``edge_type``: region->token or token->query."""
    return is_token_region(edge_type) or is_query_token(edge_type)
