"""Region sources as graph nodes: grid (unchanged), detector boxes (nodes, masks, spatial edges)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mnerqg_graph.graph.builder import BoxLayout, GraphSpec, build_graph
from mnerqg_graph.regions import REGION_SOURCE_REGISTRY, RegionNodes, build_region_source
from mnerqg_graph.regions.detector import DetectorRegions
from tests.helpers import count_calls
from tests.regions.helpers import FixedBoxes

GOLDEN = Path(__file__).parent.parent / "model" / "data" / "grid_graph_main.safetensors"


def coordinate_maps(b: int = 3, sizes: tuple[int, ...] = (8, 16, 32)) -> list[torch.Tensor]:
    """Maps whose channels 0 and 1 are the normalised x and y of each cell, then 1.

    Linear between cell centres, so a RoIAlign mean inside them is the box centre.
    """
    maps = []
    for s in sizes:
        c = (torch.arange(s, dtype=torch.float32) + 0.5) / s
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        maps.append(torch.stack([xx, yy, torch.ones(s, s)]).expand(b, 3, s, s).clone())
    return maps


def test_grid_builder_output_is_unchanged() -> None:
    """The grid graph equals, tensor for tensor, the one main's builder made (the fixture)."""
    ref = load_file(str(GOLDEN))
    valid, has = ref.pop("input/token_valid"), ref.pop("input/has_image")
    data = build_graph(valid, has, GraphSpec(grids=((1, 1), (2, 2), (4, 4)), token_window=2))
    got = {}
    for nt in data.node_types:
        for k, v in data[nt].items():
            if torch.is_tensor(v):
                got[f"{nt}/{k}"] = v
    for et in data.edge_types:
        for k, v in data[et].items():
            got["__".join(et) + "/" + k] = v
    assert sorted(got) == sorted(ref)
    for key, value in ref.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


def test_grid_nodes_are_the_flattened_maps() -> None:
    maps = [torch.randn(2, 5, s, s) for s in (2, 4, 8)]
    nodes = build_region_source("grid", scales=3).nodes(maps)
    assert nodes.grids == ((2, 2), (4, 4), (8, 8))
    for k, m in enumerate(maps):
        assert torch.equal(nodes.features[k], m.flatten(2).transpose(1, 2).reshape(-1, 5))
        assert nodes.counts(k).tolist() == [m.shape[2] * m.shape[3]] * 2
    assert torch.equal(nodes.pooled, maps[0].mean((2, 3)))


def test_detector_nodes_of_known_boxes() -> None:
    """Images with 0, 1 and 4 kept boxes: counts per scale, geometry, RoIAligned features."""
    assert "detector" in REGION_SOURCE_REGISTRY.names()
    dets = FixedBoxes().detect(torch.zeros(3, 3, 8, 8))
    source = DetectorRegions(scales=3, max_regions=16, score_threshold=0.3, num_classes=4)
    nodes = source.nodes(coordinate_maps(), dets)
    assert nodes.grids is None and nodes.num_images == 3
    # 1-box image: 0.4 x 0.65 -> coarsest; 4-box image: 1 large, 2 medium, 1 small (1 under 0.3)
    assert [nodes.counts(k).tolist() for k in range(3)] == [[0, 1, 1], [0, 0, 2], [0, 0, 1]]
    assert nodes.image[1].tolist() == [2, 2]
    assert torch.allclose(
        nodes.boxes[1], torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.6, 0.6]])
    )
    geo = nodes.geometry[1][1]  # box, area, score, one-hot class 2
    assert torch.allclose(geo, torch.tensor([0.3, 0.3, 0.6, 0.6, 0.09, 0.8, 0, 0, 1, 0]), atol=1e-6)
    assert source.geometry_dim == geo.numel()
    # RoIAlign of a linear map: channel 0/1 are the box centre, channel 2 is 1
    for k in range(3):
        centre = (nodes.boxes[k][:, :2] + nodes.boxes[k][:, 2:]) / 2
        assert torch.allclose(nodes.features[k][:, :2], centre, atol=1e-5), k
        assert torch.allclose(nodes.features[k][:, 2], torch.ones(len(centre)))
    # K = 3: the 4-box image keeps its 3 best (the small one goes)
    top3 = DetectorRegions(scales=3, max_regions=3).nodes(coordinate_maps(), dets)
    assert [top3.counts(k).tolist() for k in range(3)] == [[0, 1, 1], [0, 0, 2], [0, 0, 0]]


def test_region_nodes_per_image_round_trip() -> None:
    dets = FixedBoxes().detect(torch.zeros(3, 3, 8, 8))
    nodes = DetectorRegions().nodes(coordinate_maps(), dets)
    back = RegionNodes.cat(nodes.per_image())
    for a, b in zip(
        nodes.features + nodes.image + nodes.boxes + nodes.geometry,
        back.features + back.image + back.boxes + back.geometry,
        strict=True,
    ):
        assert torch.equal(a, b)
    assert torch.equal(nodes.pooled, back.pooled)


def _layout() -> BoxLayout:
    """4 examples: ex0 an image with no box, ex1 no image, ex2 one box, ex3 four boxes."""
    dets = FixedBoxes().detect(torch.zeros(3, 3, 8, 8))
    nodes = DetectorRegions().nodes(coordinate_maps(), dets)
    image_to_example = torch.tensor([0, 2, 3])
    return BoxLayout([image_to_example[i] for i in nodes.image], list(nodes.boxes))


def test_box_graph_nodes_and_edges() -> None:
    spec = GraphSpec(grids=(), box_scales=3, knn=1, token_window=1)
    valid = torch.ones(4, 3, dtype=torch.bool)
    has = torch.tensor([True, False, True, True])
    g = build_graph(valid, has, spec, _layout())
    assert [g[f"region_s{k}"].num_nodes for k in (1, 2, 3)] == [2, 2, 1]
    assert g["region_s1"].batch.tolist() == [2, 3] and g["image"].num_nodes == 4
    # token <-> region: every token of the box's example
    assert g["token", "cross", "region_s1"].edge_index.size(1) == 6
    assert g["token", "cross", "region_s2"].edge_index.size(1) == 6
    assert g["region_s3", "cross", "token"].edge_index.size(1) == 3
    assert g["query", "cross", "region_s2"].edge_index.tolist() == [[3, 3], [0, 1]]
    # same scale: the two medium boxes overlap (IoU 0.04 / 0.21), both directions
    uni = g["region_s2", "uni", "region_s2"]
    assert uni.edge_index.tolist() == [[0, 1], [1, 0]]
    assert torch.allclose(uni.edge_attr[:, 0], torch.full((2,), 0.04 / 0.21))
    assert g["region_s1", "uni", "region_s1"].edge_index.size(1) == 0  # one box per example
    # multi-scale: both medium boxes inside the large one; the small box's nearest medium box
    assert g["region_s2", "to_coarse", "region_s1"].edge_index.tolist() == [[0, 1], [1, 1]]
    fine = g["region_s3", "to_coarse", "region_s2"]
    assert fine.edge_index.tolist() == [[0], [1]] and fine.edge_attr[0, 0] == 0.0
    assert g["region_s1", "to_fine", "region_s2"].edge_index.tolist() == [[1, 1], [0, 1]]
    for (src, rel, dst), ei in g.edge_index_dict.items():
        assert (g[src].batch[ei[0]] == g[dst].batch[ei[1]]).all(), (src, rel, dst)
        assert ei.size(1) == g[src, rel, dst].edge_attr.size(0)


def test_box_graph_without_any_box() -> None:
    spec = GraphSpec(grids=(), box_scales=2, knn=3)
    empty = BoxLayout([torch.zeros(0, dtype=torch.long)] * 2, [torch.zeros(0, 4)] * 2)
    g = build_graph(torch.ones(2, 3, dtype=torch.bool), torch.tensor([True, True]), spec, empty)
    assert g["region_s1"].num_nodes == 0 and g["image"].num_nodes == 2
    assert g["region_s2", "to_coarse", "region_s1"].edge_index.shape == (2, 0)
    assert g["token", "cross", "region_s2"].edge_index.shape == (2, 0)


def test_box_graph_needs_a_layout() -> None:
    with pytest.raises(ValueError, match="BoxLayout"):
        build_graph(
            torch.ones(1, 2, dtype=torch.bool),
            torch.tensor([True]),
            GraphSpec(grids=(), box_scales=3),
        )


def test_many_boxes_build_vectorised() -> None:
    """64 examples x 16 boxes per scale: every edge inside its example, built vectorised.

    No Python loop over examples or boxes: 8 examples make the same calls as 64.
    """
    g = torch.Generator().manual_seed(0)

    def case(n: int, k: int = 16) -> tuple[torch.Tensor, torch.Tensor, GraphSpec, BoxLayout]:
        xy = torch.rand(3, n * k, 2, generator=g) * 0.7
        wh = torch.rand(3, n * k, 2, generator=g) * 0.3 + 0.01
        layout = BoxLayout(
            [torch.arange(n).repeat_interleave(k)] * 3,
            list(torch.cat([xy, xy + wh], -1).unbind(0)),
        )
        valid = torch.rand(n, 20, generator=g) > 0.2
        return valid, torch.ones(n, dtype=torch.bool), GraphSpec(grids=(), box_scales=3), layout

    build_graph(*case(2))
    assert count_calls(build_graph, *case(8)) == count_calls(build_graph, *case(64))
    n, k = 64, 16
    data = build_graph(*case(n, k))
    for (src, rel, dst), ei in data.edge_index_dict.items():
        assert (data[src].batch[ei[0]] == data[dst].batch[ei[1]]).all(), (src, rel, dst)
    # knn = 3: each box has at least 3 same-scale neighbours and at least one coarser one
    deg = torch.bincount(data["region_s2", "uni", "region_s2"].edge_index[0], minlength=n * k)
    assert int(deg.min()) >= 3
    up = data["region_s3", "to_coarse", "region_s2"].edge_index[0]
    assert torch.bincount(up, minlength=n * k).min() >= 1
