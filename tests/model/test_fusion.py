"""Every registered fusion module on a tiny batch, and module-specific checks.

Forward/backward with and without images, output sizes, attention on the alignment edges
(region->token and token->query), how each module's query attention over its tokens is normalised,
a short training run that lowers the loss; HGT's recomputed attention is the one it used, and the
dense module's gathered attention is that of each example on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from mnerqg_graph.data.collate import MrcBatch
from mnerqg_graph.data.types import Sample
from mnerqg_graph.fusion import FUSION_REGISTRY, FusionOutput
from mnerqg_graph.fusion.hgt import hgt_attention
from mnerqg_graph.graph.builder import GraphSpec, build_graph
from mnerqg_graph.graph.schema import (
    CROSS,
    QUERY,
    TOKEN,
    is_alignment_edge,
    is_token_region,
)
from mnerqg_graph.model import MnerqgModel, build_model
from tests.helpers import items_and_batch, samples, tiny_config, toy_fusion

MODULES = FUSION_REGISTRY.names()
QUERY_TOKEN = (TOKEN, CROSS, QUERY)
#: Where each module's attention softmax over a query's tokens ends: ``relation`` (one softmax per
#: edge type: the weights over the tokens sum to 1) or ``all`` (one softmax over every cross-modal
#: key of the query: 1 in a text-only graph, less where image nodes take a share).
SOFTMAX = {
    "hetero_gat": "relation",
    "graph_transformer": "relation",
    "hgt": "all",
    "cross_attention": "all",
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory, encoder_dir: Path) -> dict[str, MrcBatch]:
    """``mixed``: two tweets with an image and one without; ``no_image``: none has an image."""
    smp = samples(tmp_path_factory.mktemp("fusion"))
    cfg = tiny_config(encoder_dir)
    _, mixed = items_and_batch(smp, encoder_dir, cfg)
    _, no_image = items_and_batch([Sample(s.tweet) for s in smp], encoder_dir, cfg)
    return {"mixed": mixed, "no_image": no_image}


def _run_capturing_fusion(
    model: MnerqgModel, batch: MrcBatch
) -> tuple[Any, dict[str, Tensor], FusionOutput]:
    """Forward with attention and graph; also return the fusion module's input x and output."""
    seen: dict[str, Any] = {}

    def hook(_m: Any, args: tuple[Any, ...], _kw: dict[str, Any], out: FusionOutput) -> None:
        seen["x"], seen["out"] = args[0], out

    handle = model.fusion.register_forward_hook(hook, with_kwargs=True)
    try:
        out = model(batch, return_attention=True, return_graph=True)
    finally:
        handle.remove()
    return out, seen["x"], seen["out"]


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("which", ["mixed", "no_image"])
def test_forward_backward_sizes_and_attention(
    name: str, which: str, encoder_dir: Path, batches: dict[str, MrcBatch]
) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(encoder_dir, {"fusion.name": name}))
    batch = batches[which]
    out, x_in, fused = _run_capturing_fusion(model, batch)
    dims = model.fusion.output_dims()
    assert set(fused.x_dict) == set(x_in)
    for nt, h in fused.x_dict.items():
        assert h.shape == (x_in[nt].size(0), dims[nt]), nt
        assert torch.isfinite(h).all(), nt

    graph = out.graph
    al_types = [et for et in graph.edge_types if is_alignment_edge(et)]  # type: ignore[union-attr]
    tr_types = [et for et in al_types if is_token_region(et)]
    assert QUERY_TOKEN in al_types and len(al_types) == len(tr_types) + 1
    attention = out.attention or {}
    if name == "none":
        assert attention == {}
    else:
        assert set(attention) == set(al_types)
        for et in al_types:
            ei, w = attention[et]
            assert torch.equal(ei, graph[et].edge_index)  # type: ignore[index]
            assert w.shape == (graph[et].edge_index.size(1),)  # type: ignore[index]
            assert torch.isfinite(w).all() and (w >= 0).all()
        if which == "no_image":
            assert all(attention[et][1].numel() == 0 for et in tr_types)
        else:
            assert sum(attention[et][1].numel() for et in tr_types) > 0
        # every token node hangs on its example's query node, with or without image
        q_ei, q_w = attention[QUERY_TOKEN]
        assert q_w.numel() == graph[TOKEN].num_nodes > 0  # type: ignore[index]
        assert torch.equal(q_ei[1], graph[TOKEN].batch[q_ei[0]])  # type: ignore[index]

    losses = model.losses(batch, out)
    losses["total"].backward()
    grads = [p.grad for p in model.fusion.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", sorted(SOFTMAX))
@pytest.mark.parametrize("which", ["mixed", "no_image", "text_only"])
def test_query_attention_over_its_tokens(
    name: str, which: str, encoder_dir: Path, batches: dict[str, MrcBatch]
) -> None:
    """A query's attention over its tokens, in eval mode (no attention dropout).

    Weights in [0, 1]; each query's sum over its tokens is 1 where the softmax is per relation or
    the graph text-only, else in (0, 1).
    """
    assert set(SOFTMAX) == set(MODULES) - {"none"}, "say how a new module's softmax is normalised"
    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir, {"fusion.name": name, "image.use_image": which != "text_only"})
    model = build_model(cfg).eval()
    batch = batches["no_image" if which == "no_image" else "mixed"]
    with torch.no_grad():
        out = model(batch, return_attention=True, return_graph=True)
    graph = out.graph
    attention = out.attention or {}
    if which == "text_only":
        assert set(attention) == {QUERY_TOKEN}
    else:
        assert set(attention) == {et for et in graph.edge_types if is_alignment_edge(et)}  # type: ignore[union-attr]
    for et, (_, w) in attention.items():
        assert torch.isfinite(w).all() and (w >= 0).all() and (w <= 1 + 1e-6).all(), et
    ei, w = attention[QUERY_TOKEN]
    n_query = graph[QUERY].num_nodes  # type: ignore[index]
    sums = torch.zeros(n_query).index_add_(0, ei[1], w)
    assert torch.equal(ei[1].unique(), torch.arange(n_query))  # every query has its tokens
    if SOFTMAX[name] == "relation" or which == "text_only":
        torch.testing.assert_close(sums, torch.ones_like(sums))
    else:  # the image node (or the "no image" node) and the regions take a share
        assert (sums > 0).all() and (sums < 1).all()


@pytest.mark.parametrize("name", MODULES)
def test_short_training_lowers_the_loss(
    name: str, encoder_dir: Path, batches: dict[str, MrcBatch]
) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(encoder_dir, {"fusion.name": name, "graph.dropout": 0.0}))
    batch = batches["mixed"]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    history = []
    for _ in range(30):
        loss = model.losses(batch, model(batch))["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.7 * history[0], (name, history[0], history[-1])


def _toy_inputs(seed: int = 0) -> tuple[dict[str, Tensor], Any, dict[str, Tensor], Tensor]:
    """Random node features on a tiny 3-example graph (example 1 has no image)."""
    g = torch.Generator().manual_seed(seed)
    spec = GraphSpec(grids=((1, 1), (2, 2), (4, 4)), token_window=2)
    valid = torch.tensor(
        [[True, True, True, False], [True, True, False, False], [True, True, True, True]]
    )
    graph = build_graph(valid, torch.tensor([True, False, True]), spec)
    x = {nt: torch.randn(graph[nt].num_nodes, 8, generator=g) for nt in graph.node_types}
    batch = {nt: graph[nt].batch for nt in graph.node_types}
    return x, graph, batch, torch.rand(3, generator=g)


def test_hgt_attention_is_the_one_hgtconv_used() -> None:
    torch.manual_seed(0)
    x, graph, batch, gate = _toy_inputs()
    module = toy_fusion("hgt", x)
    layers: Any = module.layers
    conv = layers[0].conv_cross
    checks: list[bool] = []

    def check(_m: Any, inputs: tuple[dict[str, Tensor]], out: Tensor) -> None:
        kw = inputs[0]
        expected = (kw["v_j"] * hgt_attention(kw).unsqueeze(-1)).reshape(out.shape)
        checks.append(torch.allclose(out, expected, atol=1e-6))

    handle = conv.register_message_forward_hook(check)
    try:
        fused = module(
            x, graph.edge_index_dict, graph.edge_attr_dict, batch, gate, return_attention=True
        )
    finally:
        handle.remove()
    assert checks == [True]
    # one softmax over all incoming cross-modal edges: a token's region weights sum to < 1
    total = torch.zeros(x["token"].size(0))
    assert fused.attention is not None
    assert set(fused.attention) == {et for et in graph.edge_types if is_alignment_edge(et)}
    for et, (ei, w) in fused.attention.items():
        if is_token_region(et):
            total.index_add_(0, ei[1], w)
    has_img = graph["image"].has_image[batch["token"]]
    assert (total[has_img] > 0).all() and (total < 1).all()
    assert (total[~has_img] == 0).all()
    # and so do the query's weights over its tokens (its image node, "no image" included, and
    # regions take the rest)
    ei, w = fused.attention[(TOKEN, CROSS, QUERY)]
    assert torch.equal(ei, graph[TOKEN, CROSS, QUERY].edge_index)
    q_total = torch.zeros(3).index_add_(0, ei[1], w)
    assert (q_total > 0).all() and (q_total < 1).all()


def test_cross_attention_weights_match_per_example_attention() -> None:
    torch.manual_seed(0)
    x, graph, batch, gate = _toy_inputs(1)
    module = toy_fusion("cross_attention", x).eval()
    fused = module(
        x, graph.edge_index_dict, graph.edge_attr_dict, batch, gate, return_attention=True
    )
    assert fused.attention is not None
    layer: Any = module.layers[0]  # type: ignore[index]
    proj: Any = module.proj
    h = {nt: proj[nt](v) for nt, v in x.items()}
    regions = ("region_s1", "region_s2", "region_s3")
    for e in (0, 2):  # the examples with an image, one at a time, without padding
        sel = {nt: (batch[nt] == e).nonzero(as_tuple=True)[0] for nt in h}
        keys = torch.cat(
            [h["query"][sel["query"]], h["image"][sel["image"]], *(h[r][sel[r]] for r in regions)]
        )
        rows = h["token"][sel["token"]]
        _, ref = layer.text_cross(rows[None], keys[None], keys[None], need_weights=True)
        col = 2
        for r in regions:
            ei, w = fused.attention[(r, "cross", "token")]
            n_r = sel[r].numel()
            mine = ei[1][None, :] == sel["token"][:, None]  # [n_tok, E]
            got = torch.zeros(sel["token"].numel(), n_r)
            row_i, edge_i = mine.nonzero(as_tuple=True)
            got[row_i, ei[0][edge_i] - sel[r][0]] = w[edge_i]
            assert torch.allclose(got, ref[0, :, col : col + n_r], atol=1e-6), (e, r)
            col += n_r
    # the query's row over its tokens, for every example (example 1: its "no image" node only)
    ei, w = fused.attention[(TOKEN, CROSS, QUERY)]
    assert torch.equal(ei, graph[TOKEN, CROSS, QUERY].edge_index)
    for e in (0, 1, 2):
        sel = {nt: (batch[nt] == e).nonzero(as_tuple=True)[0] for nt in h}
        toks = h["token"][sel["token"]]
        vision = [h["image"][sel["image"]], *(h[r][sel[r]] for r in regions)]
        keys = torch.cat([toks, *vision])
        row = h["query"][sel["query"]]
        _, ref = layer.text_cross(row[None], keys[None], keys[None], need_weights=True)
        mine = ei[1] == e
        got = torch.zeros(sel["token"].numel())
        got[ei[0][mine] - sel["token"][0]] = w[mine]
        assert torch.allclose(got, ref[0, 0, : sel["token"].numel()], atol=1e-6), e
        assert ref[0, 0, sel["token"].numel() :].sum() > 0  # the vision side takes a share
