"""Layer-wise learning rates of the text encoder (``optim.layer_decay``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnerqg_graph.config import TrainConfig
from mnerqg_graph.errors import ConfigError
from mnerqg_graph.model import build_model
from mnerqg_graph.training.loop import param_groups
from tests.helpers import TWEETS, tiny_config


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.encoders.tiny import build_tiny_encoder

    corpus = [t.tokens for t in TWEETS] + [q.split() for q in load_queries().values()]
    enc = build_tiny_encoder(
        tmp_path_factory.mktemp("enc3") / "enc", corpus, hidden_size=16, num_layers=3,
        num_heads=2, intermediate_size=32,
    )  # fmt: skip
    torch.manual_seed(0)
    return build_model(tiny_config(Path(enc)), weights=False)


def _lr_of(groups: list[dict], name_to_param: dict[str, torch.nn.Parameter]) -> dict[str, float]:
    where = {id(p): g["lr"] for g in groups for p in g["params"]}
    return {name: where[id(p)] for name, p in name_to_param.items()}


def test_each_layer_learns_at_its_decayed_rate(model: torch.nn.Module) -> None:
    cfg = TrainConfig(lr=1e-3, encoder_lr=1e-4, layer_decay=0.5)
    groups = param_groups(model, cfg)
    params = dict(model.named_parameters())
    assert sum(len(g["params"]) for g in groups) == len(params)  # each parameter once
    lr = _lr_of(groups, params)
    enc = "text_encoder.model."
    # 3 layers: embeddings at depth 0, layer i at i + 1, the pooler at the top (4)
    assert lr[f"{enc}embeddings.word_embeddings.weight"] == pytest.approx(1e-4 * 0.5**4)
    for i in range(3):
        name = f"{enc}encoder.layer.{i}.attention.self.query.weight"
        assert lr[name] == pytest.approx(1e-4 * 0.5 ** (3 - i)), name
    assert lr[f"{enc}pooler.dense.weight"] == pytest.approx(1e-4)
    assert all(v == 1e-3 for k, v in lr.items() if not k.startswith("text_encoder."))


def test_no_decay_is_the_two_groups_of_before(model: torch.nn.Module) -> None:
    groups = param_groups(model, TrainConfig(lr=1e-3, encoder_lr=1e-4))
    enc = [p for n, p in model.named_parameters() if n.startswith("text_encoder.")]
    assert [g["lr"] for g in groups] == [1e-4, 1e-3]
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in enc]  # same order: resume


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5])
def test_a_decay_outside_the_range_is_refused(model: torch.nn.Module, decay: float) -> None:
    with pytest.raises(ConfigError, match="layer_decay must be in"):
        param_groups(model, TrainConfig(layer_decay=decay))
