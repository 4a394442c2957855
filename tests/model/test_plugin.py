"""A fusion module written outside the package, registered by name and selected by config.

The module text is the README's example ("Fusion modules and ablations"), kept in step by
:func:`test_readme_shows_this_plugin`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mnerqg_graph.fusion import FUSION_REGISTRY
from mnerqg_graph.model import build_model
from tests.helpers import items_and_batch, samples, tiny_config

REPO = Path(__file__).resolve().parents[2]

PLUGIN = '''\
"""my_module.py: a fusion module from outside the package."""
from torch import nn
from torch_geometric.utils import scatter

from mnerqg_graph.fusion import FusionModule, FusionOutput, register_fusion
from mnerqg_graph.fusion.base import gate_messages


@register_fusion("my_fusion")
class MyFusion(FusionModule):
    """One round of mean messages per edge type; unimodal ones gated by existence."""

    def __init__(self, in_dims, hidden_dim, num_layers=1, edge_types=(), existence_gating=True,
                 dropout=0.1, **kwargs):
        super().__init__()
        self.dim, self.gating = hidden_dim, existence_gating
        self.proj = nn.ModuleDict({t: nn.Linear(d, hidden_dim) for t, d in in_dims.items()})

    def output_dims(self):
        return {t: self.dim for t in self.proj}

    def forward(self, x_dict, edge_index_dict, edge_attr_dict, batch_dict, gate,
                return_attention=False):
        h = {t: self.proj[t](x) for t, x in x_dict.items()}
        out = dict(h)
        for (src, rel, dst), (s, d) in edge_index_dict.items():
            msg = scatter(h[src][s], d, 0, dim_size=h[dst].size(0), reduce="mean")
            if rel == "uni" and self.gating:
                msg = gate_messages(msg, batch_dict[dst], gate)
            out[dst] = out[dst] + msg
        return FusionOutput({t: v.relu() for t, v in out.items()},
                            {} if return_attention else None)
'''


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``my_module.py`` in a folder on ``sys.path``; registry and ``sys.modules`` are restored."""
    (tmp_path / "my_module.py").write_text(PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(FUSION_REGISTRY, "_table", dict(FUSION_REGISTRY._table))
    yield tmp_path
    sys.modules.pop("my_module", None)


def test_plugin_module_is_selected_by_name(
    plugin_dir: Path, tmp_path: Path, encoder_dir: Path
) -> None:
    assert "my_fusion" not in FUSION_REGISTRY
    importlib.import_module("my_module")  # what model.plugins='["my_module"]' does
    assert "my_fusion" in FUSION_REGISTRY.names()

    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir, {"fusion.name": "my_fusion"})
    model = build_model(cfg)
    assert type(model.fusion).__name__ == "MyFusion"
    _, batch = items_and_batch(samples(tmp_path), encoder_dir, cfg)
    out = model(batch, return_attention=True)
    assert out.grounding_logits is not None and out.attention == {}
    losses = model.losses(batch, out)
    losses["total"].backward()
    assert torch.isfinite(losses["total"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.fusion.parameters())


def test_cli_plugin_file_registers_the_module(plugin_dir: Path) -> None:
    from mnerqg_graph.cli import load_plugin

    load_plugin(str(plugin_dir / "my_module.py"))  # what `mnerqg --plugin my_module.py` does
    assert "my_fusion" in FUSION_REGISTRY


def test_readme_shows_this_plugin() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Fusion modules and ablations", 1)[1].split("\n## ", 1)[0]
    assert PLUGIN in section
    assert "model.plugins='[\"my_module\"]'" in section
    assert "mnerqg --plugin my_module.py" in section
