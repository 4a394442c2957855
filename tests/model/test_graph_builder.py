"""The batch graph builder: node/edge counts of a known input, offsets, vectorised speed."""

from __future__ import annotations

import torch

from mnerqg_graph.graph.builder import GraphSpec, build_graph
from mnerqg_graph.graph.schema import edge_types, node_types
from tests.helpers import count_calls

SPEC = GraphSpec(grids=((1, 1), (2, 2), (4, 4)), token_window=2)


def test_counts_for_known_input() -> None:
    # example 0: 3 tokens + image; example 1: 2 tokens (one padded position) no image
    valid = torch.tensor([[True, True, True], [True, False, True]])
    has_img = torch.tensor([True, False])
    g = build_graph(valid, has_img, SPEC)
    assert set(g.node_types) == set(node_types(3, True))
    assert set(g.edge_types) == set(edge_types(3, True))
    assert g["token"].num_nodes == 5
    assert g["token"].pos.tolist() == [0, 1, 2, 0, 2]
    assert g["region_s1"].num_nodes == 1 and g["region_s3"].num_nodes == 16
    assert g["image"].num_nodes == 2
    # token-region: only example 0's 3 tokens, complete bipartite per scale
    assert g["token", "cross", "region_s3"].edge_index.size(1) == 3 * 16
    assert g["region_s2", "cross", "token"].edge_index.size(1) == 3 * 4
    # token-token window 2: ex0 pairs (0,1),(1,2),(0,2) both ways = 6; ex1 pair (0,2) adjacent
    # nodes = 2
    assert g["token", "uni", "token"].edge_index.size(1) == 8
    # 4x4 grid 8-connected: 4*3 + 8*5 + 4*8 = 84 directed edges
    assert g["region_s3", "uni", "region_s3"].edge_index.size(1) == 84
    assert g["region_s3", "to_coarse", "region_s2"].edge_index.size(1) == 16
    # each fine cell's parent: cell (r, c) of 4x4 -> (r//2, c//2) of 2x2
    parent = g["region_s3", "to_coarse", "region_s2"].edge_index[1]
    assert parent.tolist()[:4] == [0, 0, 1, 1]
    assert g["query", "cross", "token"].edge_index[0].tolist() == [0, 0, 0, 1, 1]


def test_edges_stay_inside_their_example() -> None:
    g = torch.Generator().manual_seed(0)
    valid = torch.rand(6, 9, generator=g) > 0.3
    has_img = torch.tensor([True, False, True, True, False, True])
    data = build_graph(valid, has_img, SPEC)
    for (src, _, dst), ei in data.edge_index_dict.items():
        assert (data[src].batch[ei[0]] == data[dst].batch[ei[1]]).all(), (src, dst)
        assert ei.size(1) == data[(src, _, dst)].edge_attr.size(0)
    # region nodes exist only for examples with an image
    assert set(data["region_s2"].batch.unique().tolist()) == {0, 2, 3, 5}


def test_text_only_graph() -> None:
    data = build_graph(
        torch.ones(2, 4, dtype=torch.bool),
        torch.tensor([True, True]),
        GraphSpec(grids=(), use_image=False),
    )
    assert set(data.node_types) == {"token", "query"}


def test_build_is_vectorised() -> None:
    """No Python loop over examples or edges: 8 and 256 examples make the same Python calls.

    (A structural check instead of a time limit, which a busy machine breaks; the build's time is
    in the throughput benchmark.)
    """
    spec = GraphSpec(grids=((2, 2), (4, 4), (8, 8)))
    build_graph(torch.ones(2, 40, dtype=torch.bool), torch.ones(2, dtype=torch.bool), spec)
    eight = torch.ones(8, 40, dtype=torch.bool), torch.ones(8, dtype=torch.bool)
    small = count_calls(build_graph, *eight, spec)
    valid, has_img = torch.ones(256, 40, dtype=torch.bool), torch.ones(256, dtype=torch.bool)
    large = count_calls(build_graph, valid, has_img, spec)
    assert large == small, (small, large)
    data = build_graph(valid, has_img, spec)
    assert data["token", "cross", "region_s3"].edge_index.size(1) == 256 * 40 * 64
