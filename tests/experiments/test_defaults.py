"""One source of defaults: the Sacred ``model`` and ``optim`` ingredients are the dataclasses'.

Every key is compared both ways (a field the ingredient lacks, or a key the library has no field
for, fails), ``print_config`` prints the library's values with the docstring's comments, and the
values the SynthTweets demo runs with are pinned, so that a changed default cannot silently move
the demo's numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sacred import SETTINGS

from experiments.ingredients.defaults import field_docs
from experiments.train import ex
from mnerqg_graph.config import SECTIONS, EncoderConfig, ModelConfig, TrainConfig

SETTINGS.CAPTURE_MODE = "sys"

#: Ingredient keys that are the experiment's own (no library field): the tiny encoder's sizes.
MODEL_ONLY_SACRED = {"tiny"}
#: Dataclass fields that the experiment sets itself (types: the query file's; seed: the run's).
MODEL_ONLY_LIBRARY = {"types"}
TRAIN_ONLY_LIBRARY = {"seed"}
#: Settings whose experiment default is not the library's: the experiment resolves the encoder
#: name (``tiny`` is built from the training text), the library has no default encoder.
MODEL_RESOLVED = {"encoder.name"}

#: What ``make demo`` (``python -m experiments.train``) runs with (by dotted path); its numbers in
#: README.md and BENCHMARKS.md depend on every one of these.
DEMO: dict[str, dict[str, Any]] = {
    "model": {
        "fusion.name": "hetero_gat",
        "fusion.layers": 1,
        "fusion.kwargs": {"heads": 4},
        "graph.hidden_dim": 64,
        "image.backbone": "small_cnn",
        "image.backbone_kwargs": {"width": 16, "out_channels": 64, "min_stride": 8},
        "image.image_size": 64,
        "image.num_scales": 3,
        "graph.token_window": 2,
        "encoder.casing_dim": 16,
        "heads.max_span_len": 8,
        "encoder.max_length": 128,
        "graph.dropout": 0.1,
        "encoder.query_encoding": "per_type",
        "losses.weights": {
            "start": 1.0,
            "end": 1.0,
            "match": 1.0,
            "existence": 0.5,
            "grounding": 1.0,
            "tags": 1.0,
        },
        "encoder.name": "tiny",
        "tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128},
    },
    "optim": {
        "epochs": 11,
        "batch_size": 16,
        "lr": 2e-3,
        "encoder_lr": 2e-3,
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
        "grad_clip": 1.0,
        "eval_batch_size": 64,
        "length_buckets": 0,
    },
}


def _sacred_config(named_configs: list[str] | None = None) -> dict[str, Any]:
    run = ex._create_run(named_configs=named_configs or [], options={"--unobserved": True})
    return {k: v for k, v in run.config.items()}


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A config section by dotted path (``heads.tag_head``), a model section's sections flat."""
    out: dict[str, Any] = {}
    for key, value in config[name].items():
        if key.startswith("__"):
            continue
        if name == "model" and key in SECTIONS:
            out.update({f"{key}.{k}": v for k, v in value.items() if not k.startswith("__")})
        else:
            out[key] = value
    return out


def test_model_ingredient_defaults_are_model_config_defaults() -> None:
    sacred = _section(_sacred_config(), "model")
    library = _section({"model": dataclasses.asdict(ModelConfig(types=["PER"]))}, "model")
    fields = set(library) - MODEL_ONLY_LIBRARY
    assert fields == set(ModelConfig.field_paths()) - MODEL_ONLY_LIBRARY
    assert set(sacred) - MODEL_ONLY_SACRED == fields  # every key, both ways
    for key in sorted(fields - MODEL_RESOLVED):
        assert sacred[key] == library[key], key


def test_optim_ingredient_defaults_are_train_config_defaults() -> None:
    sacred = _section(_sacred_config(), "optim")
    library = dataclasses.asdict(TrainConfig())
    fields = set(library) - TRAIN_ONLY_LIBRARY
    assert set(sacred) == fields
    for key in sorted(fields):
        assert sacred[key] == library[key], key


@pytest.mark.parametrize("section", ["model", "optim"])
def test_demo_runs_with_the_pinned_values(section: str) -> None:
    sacred = _section(_sacred_config(), section)
    for key, value in DEMO[section].items():
        assert sacred[key] == value, key


def test_named_configs_still_override_the_defaults() -> None:
    config = _sacred_config(["twitter2017"])
    model = config["model"]
    assert model["graph"]["hidden_dim"] == 384 and model["encoder"]["name"] == "minilm"
    assert config["optim"]["lr"] == 1e-3 and config["optim"]["epochs"] == 10
    # the choices made on validation (BENCHMARKS.md): packed queries and the tagger on both sets
    for name in ("twitter2015", "twitter2017"):
        real = _sacred_config([name])["model"]
        assert real["heads"]["tag_head"] is True, name
        assert real["encoder"]["query_encoding"] == "packed", name
    # the weight average on Twitter-2015 only (Twitter-2017: not better on validation)
    assert _sacred_config(["twitter2015"])["optim"]["ema_decay"] == 0.999
    assert _sacred_config(["twitter2017"])["optim"]["ema_decay"] == 0.0
    fast = _sacred_config(["fast"])
    assert fast["model"]["fusion"]["kwargs"] == {"heads": 2} and fast["optim"]["epochs"] == 1
    # the smoke run's 24 tweets do not replace the demo's 2,000 in data/synth
    assert fast["data"]["root"] == "data/synth_fast"
    assert _sacred_config()["data"]["root"] == "data/synth"


def test_print_config_shows_the_library_values_with_their_docs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ex.run("print_config", options={"--unobserved": True})
    out = capsys.readouterr().out
    lines = {line.split("=")[0].strip(): line for line in out.splitlines() if " = " in line}
    assert "hidden_dim = 64 " in lines["hidden_dim"]  # model.graph.hidden_dim
    assert "# node feature size after fusion" in lines["hidden_dim"]
    assert "lr = 0.002 " in lines["lr"] and "# learning rate of everything" in lines["lr"]


@pytest.mark.parametrize("cls", [ModelConfig, TrainConfig, *SECTIONS.values()])
def test_every_field_has_a_one_line_doc(cls: type) -> None:
    docs = field_docs(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    assert set(docs) == names
    assert all(doc and "\n" not in doc and "``" not in doc for doc in docs.values())


def test_a_flat_model_key_of_config_version_1_names_its_new_place() -> None:
    from experiments.runner import model_config
    from mnerqg_graph.errors import ConfigError

    sacred = _sacred_config()["model"]
    cfg = model_config({**sacred, "heads": {"tag_head": True}}, ["PER"], "enc")
    assert cfg.heads.tag_head and cfg.encoder.name == "enc" and cfg.types == ["PER"]
    with pytest.raises(ConfigError, match=r"tag_head \(now heads\.tag_head\)"):
        model_config({**sacred, "tag_head": True}, ["PER"], "enc")
    with pytest.raises(ConfigError, match=r"heads\.max_span_len must be int"):
        model_config({**sacred, "heads": {"max_span_len": "long"}}, ["PER"], "enc")


def test_updated_sets_a_field_a_dict_option_and_refuses_unknown_paths() -> None:
    from mnerqg_graph.errors import ConfigError

    cfg = ModelConfig(types=["PER"], encoder=EncoderConfig(name="enc"))
    cfg = cfg.updated({"heads.tag_head": True, "fusion.kwargs.heads": 2})
    assert cfg.heads.tag_head and cfg.fusion.kwargs == {"heads": 2}
    with pytest.raises(ConfigError, match="nowhere.tag_head"):
        cfg.updated({"nowhere.tag_head": True})
    with pytest.raises(ConfigError, match="unknown model config keys"):
        cfg.updated({"heads.no_such_field": 1})
