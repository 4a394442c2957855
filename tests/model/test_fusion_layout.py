"""Saved checkpoints still load: every built-in fusion module keeps its parameter layout.

``data/fusion_state_dict_layout.json`` holds the state-dict keys and shapes of each built-in module
(two region scales with the image branch, one layer, ``in_dims`` 8, ``hidden_dim`` 16, 4 heads) as
they were before the modules were moved onto :class:`~mnerqg_graph.fusion.layers.StackedFusion`'s
``layer_class``. A state dict in that layout must load strictly into today's module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnerqg_graph.fusion import FUSION_REGISTRY, FusionModule
from mnerqg_graph.graph.schema import edge_types, node_types

LAYOUT: dict[str, dict[str, list[int]]] = json.loads(
    (Path(__file__).parent / "data" / "fusion_state_dict_layout.json").read_text()
)
BUILT_IN = sorted(
    name
    for name, builder in FUSION_REGISTRY.items()
    if getattr(builder, "__module__", "").startswith("mnerqg_graph.fusion.")
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _build(name: str) -> FusionModule:
    return FUSION_REGISTRY.build(
        name,
        in_dims={nt: 8 for nt in node_types(2, True)},
        hidden_dim=16,
        num_layers=1,
        edge_types=edge_types(2, True),
        heads=4,
    )


def test_every_built_in_module_is_recorded() -> None:
    assert BUILT_IN == sorted(LAYOUT)


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_state_dict_layout_unchanged(name: str) -> None:
    state = _build(name).state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == LAYOUT[name]


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_old_state_dict_loads(name: str) -> None:
    torch.manual_seed(0)
    old = {k: torch.randn(shape) for k, shape in LAYOUT[name].items()}
    module = _build(name)
    module.load_state_dict(old, strict=True)
    for k, v in module.state_dict().items():
        torch.testing.assert_close(v, old[k])


def test_layers_are_the_layer_class() -> None:
    for name in BUILT_IN:
        module = _build(name)
        layer_class = getattr(type(module), "layer_class", None)
        if layer_class is not None:
            layers = module.layers
            assert isinstance(layers, torch.nn.ModuleList)
            assert [type(layer) for layer in layers] == [layer_class]
