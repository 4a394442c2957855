"""Every registered fusion module on a tiny batch, and module-specific checks.

Forward/backward with and without images, output sizes, attention on region->token edges, a short
training run that lowers the loss; HGT's recomputed attention is the one it used, and the dense
module's gathered attention is that of each example on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
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
from mnerqg_graph.graph.schema import edge_types, is_token_region
from mnerqg_graph.model import MnerqgModel, build_model
from tests.helpers import items_and_batch, samples, tiny_config

MODULES = FUSION_REGISTRY.names()


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine, tiny ops run 10x+ faster than with 2."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    model = build_model(tiny_config(encoder_dir, fusion=name))
    batch = batches[which]
    out, x_in, fused = _run_capturing_fusion(model, batch)
    dims = model.fusion.output_dims()
    assert set(fused.x_dict) == set(x_in)
    for nt, h in fused.x_dict.items():
        assert h.shape == (x_in[nt].size(0), dims[nt]), nt
        assert torch.isfinite(h).all(), nt

    graph = out.graph
    tr_types = [et for et in graph.edge_types if is_token_region(et)]  # type: ignore[union-attr]
    attention = out.attention or {}
    if name == "none":
        assert attention == {}
    else:
        assert set(attention) == set(tr_types)
        for et in tr_types:
            ei, w = attention[et]
            assert torch.equal(ei, graph[et].edge_index)  # type: ignore[index]
            assert w.shape == (graph[et].edge_index.size(1),)  # type: ignore[index]
            assert torch.isfinite(w).all() and (w >= 0).all() and (w <= 1 + 1e-6).all()
        if which == "no_image":
            assert all(attention[et][1].numel() == 0 for et in tr_types)
        else:
            assert sum(attention[et][1].numel() for et in tr_types) > 0

    losses = model.losses(batch, out)
    losses["total"].backward()
    grads = [p.grad for p in model.fusion.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", MODULES)
def test_short_training_lowers_the_loss(
    name: str, encoder_dir: Path, batches: dict[str, MrcBatch]
) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(encoder_dir, fusion=name, dropout=0.0))
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
    module = FUSION_REGISTRY.build(
        "hgt",
        in_dims={nt: 8 for nt in x},
        hidden_dim=8,
        num_layers=1,
        edge_types=edge_types(3, True),
        existence_gating=True,
        dropout=0.0,
        heads=2,
    )
    conv = module.layers[0].conv_cross  # type: ignore[index]
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
    for ei, w in fused.attention.values():
        total.index_add_(0, ei[1], w)
    has_img = graph["image"].has_image[batch["token"]]
    assert (total[has_img] > 0).all() and (total < 1).all()
    assert (total[~has_img] == 0).all()


def test_cross_attention_weights_match_per_example_attention() -> None:
    torch.manual_seed(0)
    x, graph, batch, gate = _toy_inputs(1)
    module = FUSION_REGISTRY.build(
        "cross_attention",
        in_dims={nt: 8 for nt in x},
        hidden_dim=8,
        num_layers=1,
        edge_types=edge_types(3, True),
        existence_gating=True,
        dropout=0.0,
        heads=2,
    ).eval()
    fused = module(
        x, graph.edge_index_dict, graph.edge_attr_dict, batch, gate, return_attention=True
    )
    assert fused.attention is not None
    layer = module.layers[0]  # type: ignore[index]
    h = {nt: module.proj[nt](v) for nt, v in x.items()}  # type: ignore[index]
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
