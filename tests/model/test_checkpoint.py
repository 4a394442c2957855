"""Checkpoint save/load/predict round trip, config mismatches, and exact resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from mnerqg_graph.data.queries import load_queries
from mnerqg_graph.errors import CheckpointError, ConfigError
from mnerqg_graph.model import build_model
from mnerqg_graph.pipeline import predict
from mnerqg_graph.training.checkpoint import load_model, save_model
from mnerqg_graph.training.loop import TrainConfig, Trainer, TrainResult
from tests.helpers import processor, samples, tiny_config


def _save(tmp_path: Path, encoder_dir: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir)
    model = build_model(cfg).eval()
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    return save_model(model, cfg, load_queries(), tok, tmp_path / "ckpt"), model


def test_round_trip_predicts_identically(tmp_path: Path, encoder_dir: Path) -> None:
    ckpt, model = _save(tmp_path, encoder_dir)
    assert {p.name for p in ckpt.iterdir()} == {
        "model.safetensors",
        "config.json",
        "queries.json",
        "processor.json",
        "text_encoder",
    }
    loaded, cfg, queries, tok = load_model(ckpt)
    smp = samples(tmp_path)
    inputs = processor(encoder_dir, cfg)(smp)
    a = predict(model, inputs)
    b = predict(loaded, inputs)
    assert a.tags == b.tags and a.grounding_conf == b.grounding_conf
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_loading_skips_the_random_initialisation(
    tmp_path: Path, encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every weight comes from model.safetensors, so none is drawn first (a start-up cost)."""
    ckpt, model = _save(tmp_path, encoder_dir)
    drawn: list[str] = []
    for name in ("kaiming_uniform_", "normal_", "uniform_", "xavier_uniform_", "zeros_"):
        real = getattr(torch.nn.init, name)
        monkeypatch.setattr(
            torch.nn.init, name, lambda *a, _n=name, _f=real, **k: drawn.append(_n) or _f(*a, **k)
        )
    build_model(tiny_config(encoder_dir), weights=False)
    assert drawn, "the probe must see a plain build's initialisation"
    drawn.clear()
    loaded, *_ = load_model(ckpt)
    assert drawn == []
    for k, v in model.state_dict().items():  # and every weight and buffer is the saved one
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_missing_file_and_foreign_config_are_clear_errors(
    tmp_path: Path, encoder_dir: Path
) -> None:
    ckpt, _ = _save(tmp_path, encoder_dir)
    cfg_path = ckpt / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["graph"]["hidden_dim"] = 48  # weights no longer fit
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match config.json"):
        load_model(ckpt)
    cfg["config_version"] = 99
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="config_version"):
        load_model(ckpt)
    cfg_path.write_text(json.dumps({"config_version": 1, "foo": 1}))
    with pytest.raises(ConfigError, match="unknown model config keys"):
        load_model(ckpt)
    (ckpt / "queries.json").unlink()
    with pytest.raises(CheckpointError, match="missing queries.json"):
        load_model(ckpt)


def test_a_checkpoint_with_a_flat_version_1_config_still_loads(
    tmp_path: Path, encoder_dir: Path
) -> None:
    """Checkpoints saved before the config was nested (every field at the top) load unchanged."""
    from mnerqg_graph.config import FLAT_FIELDS

    ckpt, model = _save(tmp_path, encoder_dir)
    nested = json.loads((ckpt / "config.json").read_text())
    flat: dict[str, object] = {"config_version": 1, "types": nested["types"]}
    for old, (section, name) in FLAT_FIELDS.items():
        flat[old] = nested[section][name]
    assert len(flat) == 2 + sum(len(v) for v in nested.values() if isinstance(v, dict))
    (ckpt / "config.json").write_text(json.dumps(flat))
    loaded, config, _, _ = load_model(ckpt)
    nested["encoder"]["name"] = str(ckpt / "text_encoder")  # the copy load_model reads
    assert config.to_dict() == nested
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def _trainer(
    tmp_path: Path,
    encoder_dir: Path,
    epochs: int,
    out: Path,
    ema_decay: float = 0.0,
    evaluated: list[dict[str, torch.Tensor]] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Trainer:
    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir, overrides)
    model = build_model(cfg)
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    smp = samples(tmp_path)
    items = processor(encoder_dir, cfg)(smp).items

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        if evaluated is not None:  # the weights each validation saw
            evaluated.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        # a deterministic function of the weights: identical models select identical epochs
        return {"f1": float(m.span_head.start[-1].weight.detach().sum())}  # type: ignore[index]

    return Trainer(
        model,
        tok,
        load_queries(),
        items,
        evaluate,
        TrainConfig(
            epochs=epochs,
            batch_size=2,
            lr=1e-3,
            encoder_lr=1e-3,
            seed=0,
            device="cpu",
            ema_decay=ema_decay,
        ),
        out,
    )


def _stopped_after_one_epoch(
    tmp_path: Path, encoder_dir: Path, out: Path, ema_decay: float = 0.0
) -> TrainResult:
    """A 2-epoch run "interrupted" after its first epoch: only epoch 0's state exists."""
    part = _trainer(tmp_path, encoder_dir, 2, out, ema_decay)
    part.cfg.epochs = 1  # after the schedule was built for 2 epochs, as a real stop leaves it
    return part.fit()


@pytest.mark.parametrize("ema_decay", [0.0, 0.9], ids=["raw", "weight_average"])
def test_resume_gives_the_same_result(tmp_path: Path, encoder_dir: Path, ema_decay: float) -> None:
    full = _trainer(tmp_path, encoder_dir, 2, tmp_path / "full", ema_decay).fit()
    first = _stopped_after_one_epoch(tmp_path, encoder_dir, tmp_path / "part", ema_decay)
    resumed = _trainer(tmp_path, encoder_dir, 2, tmp_path / "part", ema_decay)
    res = resumed.fit(resume=True)
    assert len(res.history) == 2 and res.best_epoch == full.best_epoch
    assert res.best_metrics == pytest.approx(full.best_metrics)
    for name in ("best", "last"):
        from safetensors.torch import load_file

        a = load_file(str(tmp_path / "full" / name / "model.safetensors"))
        b = load_file(str(tmp_path / "part" / name / "model.safetensors"))
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name
    assert [h["train/loss_total"] for h in res.history] == pytest.approx(
        [h["train/loss_total"] for h in full.history], rel=1e-5
    )
    # the training time counts the epochs done before the stop (kept in the state)
    assert 0 < res.seconds_before <= first.seconds < res.seconds


def test_the_training_time_of_a_resumed_run_adds_the_time_before_the_stop(
    tmp_path: Path, encoder_dir: Path
) -> None:
    _stopped_after_one_epoch(tmp_path, encoder_dir, tmp_path / "run")
    meta_path = tmp_path / "run" / "state" / "trainer.json"
    meta = json.loads(meta_path.read_text())
    meta["trainer"]["seconds"] = 1000.0  # as if the first epoch had taken 1000 s
    meta_path.write_text(json.dumps(meta))
    res = _trainer(tmp_path, encoder_dir, 2, tmp_path / "run").fit(resume=True)
    assert res.seconds_before == 1000.0 and 1000.0 < res.seconds < 1000.0 + 600  # before: ~1 s


def test_a_stop_between_the_state_folders_renames_resumes_from_the_backup(
    tmp_path: Path, encoder_dir: Path
) -> None:
    """A stop between ``replace_dir``'s renames leaves only ``state.old``: resume reads it."""
    full = _trainer(tmp_path, encoder_dir, 2, tmp_path / "full").fit()
    _stopped_after_one_epoch(tmp_path, encoder_dir, tmp_path / "part")
    for name in ("state", "last"):
        (tmp_path / "part" / name).rename(tmp_path / "part" / f"{name}.old")
    validated: list[dict[str, torch.Tensor]] = []
    res = _trainer(tmp_path, encoder_dir, 2, tmp_path / "part", evaluated=validated).fit(
        resume=True
    )
    # before the fix: no state/ found, so it trained both epochs afresh (and deleted state.old)
    assert len(validated) == 1  # only the second epoch was trained
    assert res.history[0] == pytest.approx(full.history[0])
    assert not (tmp_path / "part" / "state.old").exists()
    a = load_file(str(tmp_path / "full" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "last" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resuming_a_model_of_other_settings_is_one_clear_error(
    tmp_path: Path, encoder_dir: Path
) -> None:
    _trainer(tmp_path, encoder_dir, 1, tmp_path / "run").fit()
    optimizer_before = (tmp_path / "run" / "state" / "optimizer.safetensors").read_bytes()
    other = _trainer(tmp_path, encoder_dir, 1, tmp_path / "run", overrides={"graph.hidden_dim": 16})
    with pytest.raises(CheckpointError, match=r"state/raw_model.safetensors: .*other settings"):
        other.fit(resume=True)
    assert other.optimizer.state == {}  # refused before the optimizer's state was touched
    assert (tmp_path / "run" / "state" / "optimizer.safetensors").read_bytes() == optimizer_before


def test_resuming_with_a_schedule_of_another_length_is_refused(
    tmp_path: Path, encoder_dir: Path
) -> None:
    """A named config's epochs changed since the run stopped: its state is refused.

    Continuing it would follow a learning-rate schedule that is neither run's.
    """
    _trainer(tmp_path, encoder_dir, 2, tmp_path / "run").fit()
    longer = _trainer(tmp_path, encoder_dir, 3, tmp_path / "run")
    with pytest.raises(ConfigError, match="schedule of 4 steps, this run plans 6"):
        longer.fit(resume=True)
    assert longer.optimizer.state == {}  # refused before anything was loaded


def test_resuming_with_other_parameter_groups_is_one_clear_error(
    tmp_path: Path, encoder_dir: Path
) -> None:
    """``optim.layer_decay`` below 1 makes one group per encoder depth: another optimizer."""
    _trainer(tmp_path, encoder_dir, 1, tmp_path / "run").fit()
    other = _trainer(tmp_path, encoder_dir, 1, tmp_path / "run")
    other.cfg.epochs = 1
    groups = len(other.optimizer.param_groups)
    from mnerqg_graph.training.loop import make_adamw, param_groups

    other.cfg.layer_decay = 0.8
    other.optimizer = make_adamw(param_groups(other.model, other.cfg), weight_decay=0.01)
    assert len(other.optimizer.param_groups) != groups
    with pytest.raises(CheckpointError, match="does not fit this run's parameter groups"):
        other._resume(tmp_path / "run" / "state")  # before: a raw ValueError traceback


def test_a_selection_metric_that_validation_lacks_is_refused(
    tmp_path: Path, encoder_dir: Path
) -> None:
    trainer = _trainer(tmp_path, encoder_dir, 2, tmp_path / "run")
    trainer.cfg.select_metric = "F1"  # validation reports "f1"
    # before the fix: every epoch scored -inf, epoch 1 was kept, and the decoding choice failed
    # with a KeyError after the whole training
    with pytest.raises(ConfigError, match="'F1' is not a validation metric.*: f1$"):
        trainer.fit()


def test_a_run_stopped_between_last_and_state_resumes_from_one_epoch(
    tmp_path: Path, encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed between writing ``last/`` and ``state/`` resumes from one consistent epoch.

    Killed after epoch 2's ``last/`` and before its ``state/``: the resumed run restarts epoch 2
    from epoch 1's weights (kept in ``state/``), not from epoch 2's.
    """
    import mnerqg_graph.training.loop as loop_mod

    _trainer(tmp_path, encoder_dir, 3, tmp_path / "full").fit()
    real = loop_mod.save_training_state
    calls = []

    def stopped(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "save_training_state", stopped)
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path, encoder_dir, 3, tmp_path / "part").fit()
    monkeypatch.setattr(loop_mod, "save_training_state", real)
    _trainer(tmp_path, encoder_dir, 3, tmp_path / "part").fit(resume=True)
    full = load_file(str(tmp_path / "full" / "last" / "model.safetensors"))
    part = load_file(str(tmp_path / "part" / "last" / "model.safetensors"))
    assert full.keys() == part.keys()
    assert all(torch.equal(full[k], part[k]) for k in full)


def test_resuming_with_another_weight_average_setting_is_refused(
    tmp_path: Path, encoder_dir: Path
) -> None:
    _trainer(tmp_path, encoder_dir, 1, tmp_path / "ema", ema_decay=0.9).fit()
    with pytest.raises(ConfigError, match="written with a weight average"):
        _trainer(tmp_path, encoder_dir, 1, tmp_path / "ema").fit(resume=True)
    _trainer(tmp_path, encoder_dir, 1, tmp_path / "plain").fit()
    with pytest.raises(ConfigError, match="written without a weight average"):
        _trainer(tmp_path, encoder_dir, 1, tmp_path / "plain", ema_decay=0.9).fit(resume=True)


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(
    tmp_path: Path, encoder_dir: Path
) -> None:
    from mnerqg_graph.errors import TrainingError

    _stopped_after_one_epoch(tmp_path, encoder_dir, tmp_path / "nan")
    before = (tmp_path / "nan" / "last" / "model.safetensors").read_bytes()
    trainer = _trainer(tmp_path, encoder_dir, 2, tmp_path / "nan")
    with torch.no_grad():
        next(trainer.model.span_head.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingError, match="at step"):
        trainer.fit(resume=False)
    assert (tmp_path / "nan" / "last" / "model.safetensors").read_bytes() == before


def test_training_uses_the_fused_adamw_kernel_and_its_update(
    tmp_path: Path, encoder_dir: Path
) -> None:
    from mnerqg_graph.training.loop import make_adamw

    trainer = _trainer(tmp_path, encoder_dir, 1, tmp_path / "fused")
    assert trainer.optimizer.defaults["fused"] is True  # CPU has the fused kernel
    # the fused kernel makes the same update as the multi-tensor one
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(3)]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fused = make_adamw([{"params": params, "lr": 0.1}], weight_decay=0.01)
    multi = torch.optim.AdamW([{"params": twins, "lr": 0.1}], weight_decay=0.01, foreach=True)
    for _ in range(3):
        for p, q in zip(params, twins, strict=True):
            p.grad = torch.full_like(p, 0.5) * p.detach()
            q.grad = p.grad.clone()
        fused.step()
        multi.step()
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(params, twins, strict=True))


def test_the_weight_average_is_what_is_validated_and_saved(
    tmp_path: Path, encoder_dir: Path
) -> None:
    from safetensors.torch import load_file

    evaluated: list[dict[str, torch.Tensor]] = []
    trainer = _trainer(tmp_path, encoder_dir, 2, tmp_path / "ema", 0.9, evaluated)
    res = trainer.fit()
    assert len(evaluated) == 2 and trainer.average is not None
    best = load_file(str(tmp_path / "ema" / "best" / "model.safetensors"))
    last = load_file(str(tmp_path / "ema" / "last" / "model.safetensors"))
    for saved, seen in ((best, evaluated[res.best_epoch]), (last, evaluated[-1])):
        assert all(torch.equal(saved[k], seen[k]) for k in saved)
    # the average is not the raw weights the optimiser left, which the model holds again
    raw = trainer.model.state_dict()
    moved = [k for k in trainer.average.shadow if not torch.equal(raw[k], last[k])]
    assert moved and all(torch.equal(last[k], trainer.average.shadow[k]) for k in moved)
