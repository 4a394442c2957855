"""The shared fusion-layer template (:mod:`mnerqg_graph.fusion.layers`), used as a plugin would.

A new module written on the template (GATv2 -> GAT v1, the README's example) must run inside the
full model, return attention on the alignment edges (region->token and token->query), keep the
checkpoint parameter layout, and gate exactly the unimodal messages: with existence probability 0
the output is the output without any ``uni`` edge.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch_geometric.nn import GATConv

from mnerqg_graph.data.types import Sample
from mnerqg_graph.fusion import FUSION_REGISTRY, FusionModule
from mnerqg_graph.fusion.layers import RelationConvLayer, StackedFusion
from mnerqg_graph.graph.schema import (
    EDGE_ATTR_DIM,
    QUERY,
    TOKEN,
    is_alignment_edge,
    is_unimodal,
)
from mnerqg_graph.model import build_model
from tests.helpers import items_and_batch, samples, tiny_config


class _GatLayer(RelationConvLayer):
    def make_conv(self, dim: int, heads: int, dropout: float) -> nn.Module:
        return GATConv(
            (dim, dim), dim // heads, heads=heads, dropout=dropout, add_self_loops=False,
            edge_dim=EDGE_ATTR_DIM,
        )  # fmt: skip


class GatFusion(StackedFusion):
    """GAT (v1) per edge type on the shared template."""

    layer_class = _GatLayer


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``gat_template`` is registered for this module's tests only."""
    monkeypatch.setitem(FUSION_REGISTRY._table, "gat_template", GatFusion)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fusion_inputs(model: Any, batch: Any) -> dict[str, Any]:
    """The arguments the model passes to its fusion module."""
    seen: dict[str, Any] = {}

    def hook(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        names = ["x_dict", "edge_index_dict", "edge_attr_dict", "batch_dict", "gate"]
        seen.update(dict(zip(names, args, strict=False)), **kwargs)

    handle = model.fusion.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(batch)
    finally:
        handle.remove()
    return seen


def test_template_module_in_the_model(tmp_path: Path, encoder_dir: Path) -> None:
    cfg = tiny_config(encoder_dir, {"fusion.name": "gat_template", "fusion.layers": 2})
    _, batch = items_and_batch(samples(tmp_path), encoder_dir, cfg)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.fusion, GatFusion) and isinstance(model.fusion, FusionModule)
    names = {n for n, _ in model.fusion.named_parameters()}
    # the checkpoint layout the built-in modules share
    assert "layers.1.norm_cross.token.weight" in names
    assert "layers.0.convs.token__uni__token.att_src" in names
    with torch.no_grad():
        out = model.eval()(batch, return_attention=True)
    assert out.attention and (TOKEN, "cross", QUERY) in out.attention
    for et, (edge_index, weights) in out.attention.items():
        assert is_alignment_edge(et) and weights.shape == (edge_index.size(1),)
        # one softmax per relation: a token's weights over a scale's cells sum to 1, and so do
        # a query's over its tokens
        if edge_index.size(1):
            dst = edge_index[1]
            sums = torch.zeros(int(dst.max()) + 1).index_add_(0, dst, weights)[dst.unique()]
            torch.testing.assert_close(sums, torch.ones_like(sums))
    model.train().losses(batch, model(batch))["total"].backward()
    grads = [p.grad for p in model.fusion.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_gate_zero_is_no_unimodal_edges(tmp_path: Path, encoder_dir: Path) -> None:
    cfg = tiny_config(encoder_dir, {"fusion.name": "gat_template"})
    _, batch = items_and_batch([Sample(s.tweet) for s in samples(tmp_path)], encoder_dir, cfg)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    args = _fusion_inputs(model, batch)
    uni = [et for et in args["edge_index_dict"] if is_unimodal(et)]
    assert uni and any(args["edge_index_dict"][et].size(1) for et in uni)
    fusion = model.fusion
    zero = torch.zeros_like(args["gate"])
    with torch.no_grad():
        gated = fusion(**{**args, "gate": zero}).x_dict
        no_uni = fusion(
            **{
                **args,
                "gate": zero,
                "edge_index_dict": {
                    et: e for et, e in args["edge_index_dict"].items() if not is_unimodal(et)
                },
            }
        ).x_dict
        full = fusion(**{**args, "gate": torch.ones_like(args["gate"])}).x_dict
    for nt in gated:
        torch.testing.assert_close(gated[nt], no_uni[nt])
    assert not torch.allclose(gated[TOKEN], full[TOKEN])  # the gate does act
