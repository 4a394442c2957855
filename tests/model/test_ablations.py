"""Each ablation switch of :class:`~mnerqg_graph.config.ModelConfig` removes its part of the model.

Switches: ``existence_gating``, ``num_scales``, ``loss_weights["grounding"]``,
``loss_weights["existence"]``, ``fusion_layers``, ``use_image``; checked for every graph fusion
module where they apply.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from mnerqg_graph.data.collate import MrcBatch
from mnerqg_graph.fusion import FusionModule
from mnerqg_graph.graph.builder import GraphSpec, build_graph
from mnerqg_graph.graph.schema import TO_COARSE, TO_FINE
from mnerqg_graph.model import MnerqgModel, build_model
from tests.helpers import items_and_batch, samples, tiny_config, toy_fusion

GRAPH_MODULES = ["hetero_gat", "hgt", "graph_transformer", "cross_attention"]
SPAN_PARTS = ("start", "end", "match")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, encoder_dir: Path) -> MrcBatch:
    """Two tweets with an image (one with a PER box), one without."""
    _, b = items_and_batch(
        samples(tmp_path_factory.mktemp("abl")), encoder_dir, tiny_config(encoder_dir)
    )
    return b


def _grads(module: nn.Module) -> list[Tensor]:
    """Every parameter's gradient (zeros where autograd left it None)."""
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def _norm(module: nn.Module) -> float:
    return float(sum(g.abs().sum() for g in _grads(module)))


# --- existence gating ------------------------------------------------------------------------


def _fusion(
    name: str, gating: bool
) -> tuple[FusionModule, dict[str, Tensor], object, dict[str, Tensor]]:
    torch.manual_seed(0)
    spec = GraphSpec(grids=((1, 1), (2, 2), (4, 4)), token_window=2)
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    graph = build_graph(valid, torch.tensor([True, False]), spec)
    x = {nt: torch.randn(graph[nt].num_nodes, 8) for nt in graph.node_types}
    module = toy_fusion(name, x, gating).eval()
    return module, x, graph, {nt: graph[nt].batch for nt in graph.node_types}


@pytest.mark.parametrize("name", GRAPH_MODULES)
def test_gating_off_output_ignores_the_gate_and_on_depends_on_it(name: str) -> None:
    off, x, graph, batch_dict = _fusion(name, gating=False)
    on, _, _, _ = _fusion(name, gating=True)
    on.load_state_dict(off.state_dict())  # gating adds no parameter: the same weights

    def run(module: FusionModule, gate: Tensor) -> dict[str, Tensor]:
        return module(
            x,
            graph.edge_index_dict,
            graph.edge_attr_dict,  # type: ignore[attr-defined]
            batch_dict,
            gate,
        ).x_dict

    zeros, ones = torch.zeros(2), torch.ones(2)
    a, b = run(off, zeros), run(off, ones)
    assert all(torch.equal(a[nt], b[nt]) for nt in a)
    c, d = run(on, zeros), run(on, ones)
    assert not torch.allclose(c["token"], d["token"])
    # p = 1 lets every unimodal message through: the ungated computation
    assert all(torch.allclose(d[nt], b[nt], atol=1e-6) for nt in b)
    # the gate of one example does not reach the other example's tokens
    e = run(on, torch.tensor([0.0, 1.0]))
    ex0 = batch_dict["token"] == 0
    assert torch.allclose(e["token"][ex0], c["token"][ex0], atol=1e-6)
    assert torch.allclose(e["token"][~ex0], d["token"][~ex0], atol=1e-6)


@pytest.mark.parametrize("name", GRAPH_MODULES)
def test_gating_decides_whether_spans_train_the_gate(
    name: str, encoder_dir: Path, batch: MrcBatch
) -> None:
    """The span losses reach the gate head only through the gating of unimodal messages."""
    for gating in (False, True):
        torch.manual_seed(0)
        model = build_model(
            tiny_config(encoder_dir, {"fusion.name": name, "fusion.existence_gating": gating})
        )
        losses = model.losses(batch, model(batch))
        torch.stack([losses[k] for k in SPAN_PARTS]).sum().backward()
        assert (_norm(model.gate_head) > 0) == gating, gating


# --- number of scales ------------------------------------------------------------------------


@pytest.mark.parametrize("name", GRAPH_MODULES)
def test_single_scale_graph_has_only_coarse_regions(
    name: str, encoder_dir: Path, batch: MrcBatch
) -> None:
    model = build_model(tiny_config(encoder_dir, {"fusion.name": name, "image.num_scales": 1}))
    out = model(batch, return_graph=True)
    graph = out.graph
    regions = {nt for nt in graph.node_types if nt.startswith("region")}  # type: ignore[union-attr]
    assert regions == {"region_s1"}
    assert not [
        et
        for et in graph.edge_types  # type: ignore[union-attr]
        if et[1] in (TO_COARSE, TO_FINE)
    ]
    assert len(model.spec.grids) == 1
    assert not {"region_s2", "region_s3"} & set(model.fusion.output_dims())
    cells = model.spec.grids[0][0] * model.spec.grids[0][1]
    assert out.grounding_logits is not None
    assert out.grounding_logits.shape == (out.image_examples.numel(), cells)


# --- loss weights ----------------------------------------------------------------------------


def _backward(
    encoder_dir: Path, batch: MrcBatch, name: str, zero: str | None = None, eval_mode: bool = False
) -> MnerqgModel:
    """A model (seed 0) after the backward pass of its total loss on ``batch``.

    Args:
        encoder_dir: the tiny encoder.
        batch: the batch.
        name: the fusion module.
        zero: the loss part whose weight is 0 (the others 1, existence 0.5); None: the defaults.
        eval_mode: put the model in eval mode (no dropout) before the forward pass.
    """
    over: dict[str, object] = {"fusion.name": name}
    if zero is not None:
        weights = {"start": 1.0, "end": 1.0, "match": 1.0, "existence": 0.5, "grounding": 1.0}
        over["losses.weights"] = {**weights, zero: 0.0}
    torch.manual_seed(0)
    model = build_model(tiny_config(encoder_dir, over))
    if eval_mode:
        model.eval()
    model.losses(batch, model(batch))["total"].backward()
    return model


@pytest.mark.parametrize("name", GRAPH_MODULES)
def test_grounding_weight_zero_removes_the_grounding_gradient(
    name: str, encoder_dir: Path, batch: MrcBatch
) -> None:
    # eval: no dropout, so two passes are the same
    model = _backward(encoder_dir, batch, name, zero="grounding", eval_mode=True)
    assert model.grounding_head is not None
    assert _norm(model.grounding_head) == 0
    assert _norm(model.span_head) > 0
    # the shared layers get exactly the gradient of the other parts: none comes from grounding
    total_grads = [g.clone() for g in _grads(model.fusion)]
    model.zero_grad()
    losses = model.losses(batch, model(batch))
    torch.stack([losses[k] for k in (*SPAN_PARTS, "existence")]).sum().backward()
    assert all(torch.allclose(a, b) for a, b in zip(total_grads, _grads(model.fusion), strict=True))

    model = _backward(encoder_dir, batch, name)  # contrast: with its default weight, it learns
    assert model.grounding_head is not None and _norm(model.grounding_head) > 0


@pytest.mark.parametrize("name", GRAPH_MODULES)
def test_existence_weight_zero_removes_the_existence_gradient(
    name: str, encoder_dir: Path, batch: MrcBatch
) -> None:
    model = _backward(encoder_dir, batch, name, zero="existence")
    assert _norm(model.existence_head) == 0
    assert _norm(model.span_head) > 0
    assert _norm(_backward(encoder_dir, batch, name).existence_head) > 0


# --- depth and modality ----------------------------------------------------------------------


@pytest.mark.parametrize("name", GRAPH_MODULES)
def test_fusion_layers_sets_the_depth(name: str, encoder_dir: Path, batch: MrcBatch) -> None:
    counts = {}
    for layers in (1, 3):
        torch.manual_seed(0)
        model = build_model(
            tiny_config(encoder_dir, {"fusion.name": name, "fusion.layers": layers})
        )
        assert len(model.fusion.layers) == layers  # type: ignore[arg-type]
        counts[layers] = sum(p.numel() for p in model.fusion.parameters())
        if layers == 3:
            per_layer = sum(p.numel() for p in model.fusion.layers[0].parameters())  # type: ignore[index]
            assert counts[3] - counts[1] == 2 * per_layer
            model(batch)


@pytest.mark.parametrize("name", GRAPH_MODULES)
def test_use_image_false_builds_no_image_branch(
    name: str, encoder_dir: Path, batch: MrcBatch
) -> None:
    model = build_model(tiny_config(encoder_dir, {"fusion.name": name, "image.use_image": False}))
    assert model.backbone is None and model.grounding_head is None
    assert set(model.fusion.output_dims()) == {"token", "query"}
    assert not any(
        n.startswith(("backbone.", "region_pos", "no_image")) for n, _ in model.named_parameters()
    )
    out = model(batch, return_graph=True, return_attention=True)
    assert set(out.graph.node_types) == {"token", "query"}  # type: ignore[union-attr]
    assert out.grounding_logits is None
    # text-only: the query's attention over its tokens is the only attention left
    assert out.attention is not None and set(out.attention) == {("token", "cross", "query")}
    assert "grounding" not in model.losses(batch, out)
