"""The real-data benchmark's variant parsing and its table (no training: runs are given)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import benchmarks.real_data as real_data
from benchmarks.real_data import load_runs, main, markdown, variant_updates
from experiments.train import EPOCHS

#: The ``twitter2017`` named config's schedule, as the runs below resolve it.
T17_EPOCHS = EPOCHS["twitter2017"]


def _run(variant: str, seed: int, f1: float, epochs: int = T17_EPOCHS) -> dict[str, object]:
    result = {f"test/{k}": f1 for k in ("precision", "recall", "f1")}
    result.update({f"test/f1_{t}": f1 for t in ("PER", "LOC", "ORG", "OTHER")})
    result.update({"valid/f1": f1 + 0.01, "train_seconds": 600.0})
    return {
        "dataset": "twitter2017",
        "variant": variant,
        "seed": seed,
        "epochs": epochs,
        "result": result,
    }


def test_variants_are_model_updates_or_named_configs() -> None:
    named = ["no_existence_loss", "text_only"]
    assert variant_updates("default", named) == ([], {})
    assert variant_updates("encoder.casing_dim=0", named) == (
        [],
        {"model": {"encoder": {"casing_dim": 0}}},
    )
    assert variant_updates("fusion.name=none+image.use_image=False+no_existence_loss", named) == (
        ["no_existence_loss"],
        {"model": {"fusion": {"name": "none"}, "image": {"use_image": False}}},
    )
    # a key naming an experiment section updates that section; other keys are model keys
    assert variant_updates("optim.epochs=7+fusion.kwargs.heads=2", named) == (
        [],
        {"optim": {"epochs": 7}, "model": {"fusion": {"kwargs": {"heads": 2}}}},
    )
    with pytest.raises(SystemExit, match="nonsense"):
        variant_updates("nonsense", named)


def test_table_reports_mean_and_std_over_seeds(tmp_path: Path) -> None:
    runs = [
        _run("default", 1, 0.82, 7),
        _run("default", 2, 0.84, 7),
        _run("casing_dim=0", 1, 0.8, 7),
    ]
    table = markdown("twitter2017", runs)
    row = next(line for line in table.splitlines() if line.startswith("| `default (7 ep)`"))
    assert "| 1, 2 |" in row and "83.00 ± 1.41" in row and "84.00 ± 1.41" in row
    one_seed = next(line for line in table.splitlines() if "casing_dim=0" in line)
    assert "| 80.00 |" in one_seed and "±" not in one_seed  # one seed: no spread to show
    assert "83.44" in table  # the published BERT-base CRF reference row
    assert "by epoch" not in table  # no curves recorded
    runs[0]["valid_f1_by_epoch"] = [0.7, 0.8]
    runs[0]["result"]["best_epoch"] = 2.0  # type: ignore[index]
    table = markdown("twitter2017", runs)
    assert "- `default (7 ep)` seed 1: 70.00, 80.00 (chosen: epoch 2; test F1 82.00)" in table
    runs[0]["result"].update(span_threshold=0.35, existence_threshold=0.0)  # type: ignore[attr-defined]
    table = markdown("twitter2017", runs)
    assert (
        "- `default (7 ep)` seed 1: 70.00, 80.00 (chosen: epoch 2, span threshold 0.35, "
        "existence threshold off; test F1 82.00)"
    ) in table.splitlines()
    runs[0]["result"]["existence_threshold"] = 0.5  # type: ignore[index]
    assert "existence threshold 0.50; test F1 82.00)" in markdown("twitter2017", runs)
    runs[0]["result"]["tag_decoder"] = 1.0  # type: ignore[index]
    tagged = markdown("twitter2017", runs)  # the tagger decodes: no span threshold to show
    assert "(chosen: epoch 2, decoder: the tagger, existence threshold 0.50;" in tagged
    runs[0]["result"]["tag_decoder"] = 0.0  # type: ignore[index]
    # a record from before the epochs were stored: its curve's length stands in
    del runs[0]["epochs"]
    table = markdown("twitter2017", runs)
    assert "- `default (2 ep)` seed 1: 70.00, 80.00 (chosen: epoch 2, " in table
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in runs), encoding="utf-8")
    assert load_runs(path) == runs
    out = tmp_path / "table.md"
    assert main(["--dataset", "twitter2017", "--runs", str(path), "--out", str(out),
                 "--report-only"]) == 0  # fmt: skip
    assert out.read_text(encoding="utf-8") == table


def test_runs_with_other_set_updates_are_other_rows_and_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--set optim.epochs=5`` next to runs of the named config (its epochs): new runs, own row."""
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(_run("default", 1, 0.80)) + "\n", encoding="utf-8")
    trained: list[tuple[str, int, list[str]]] = []

    def fake_run(args: object, variant: str, seed: int) -> dict[str, object]:
        trained.append((variant, seed, list(args.updates)))  # type: ignore[attr-defined]
        epochs = real_data.planned_epochs(args, variant)  # type: ignore[arg-type]
        return _run(variant, seed, 0.9, epochs) | {"updates": list(args.updates)}  # type: ignore[attr-defined]

    monkeypatch.setattr(real_data, "run_one", fake_run)
    argv = ["--dataset", "twitter2017", "--seeds", "1", "2", "--runs", str(path)]
    assert main(argv) == 0
    assert trained == [("default", 2, [])]  # seed 1 of the plain default was already there
    assert main([*argv, "--set", "optim.epochs=5"]) == 0
    assert trained[1:] == [("default", 1, ["optim.epochs=5"]), ("default", 2, ["optim.epochs=5"])]
    assert main([*argv, "--set", "optim.epochs=5"]) == 0  # all there now: nothing runs
    assert len(trained) == 3
    table = markdown("twitter2017", load_runs(path))
    rows = [line for line in table.splitlines() if line.startswith("| `default")]
    assert len(rows) == 2
    assert (
        rows[0].startswith(f"| `default ({T17_EPOCHS} ep)` | 1, 2 |") and "85.00 ± 7.07" in rows[0]
    )
    assert rows[1].startswith("| `default [optim.epochs=5] (5 ep)` | 1, 2 |")
    assert "90.00 ± 0.00" in rows[1]  # two seeds of equal score: a spread of 0, shown


def test_a_changed_named_schedule_is_not_taken_for_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5-epoch ``default`` record is not a run of today's longer default; rows stay apart."""
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(_run("default", 1, 0.80, epochs=5)) + "\n", encoding="utf-8")
    trained: list[int] = []

    def fake_run(args: object, variant: str, seed: int) -> dict[str, object]:
        epochs = real_data.planned_epochs(args, variant)  # type: ignore[arg-type]
        trained.append(epochs)
        return _run(variant, seed, 0.9, epochs)

    monkeypatch.setattr(real_data, "run_one", fake_run)
    assert main(["--dataset", "twitter2017", "--seeds", "1", "--runs", str(path)]) == 0
    assert trained == [T17_EPOCHS] and T17_EPOCHS != 5
    rows = [r for r in markdown("twitter2017", load_runs(path)).splitlines() if "`default" in r]
    assert [r.split("|")[1].strip() for r in rows] == [
        "`default (5 ep)`",
        f"`default ({T17_EPOCHS} ep)`",
    ]


def test_the_report_says_which_machines_and_libraries_the_runs_used() -> None:
    """Records carry their environment; the report lists each distinct one once."""
    env_a = {"python": "3.11.7", "torch": "2.14.1", "transformers": "5.24.0", "numpy": "2.4.6"}
    env_a |= {"cpu": "AMD EPYC", "cpu_capability": "AVX512", "cpu_count": 2, "torch_threads": 2}
    env_b = env_a | {"torch": "2.13.0", "cpu_capability": "AVX2"}
    runs = [
        _run("default", 1, 0.80) | {"environment": env_a},
        _run("default", 2, 0.81) | {"environment": env_a},
        _run("default", 3, 0.82) | {"environment": env_b},
        _run("default", 4, 0.83),  # an old record without one: nothing invented for it
    ]
    table = markdown("twitter2017", runs)
    ran_on = table.split("Ran on:", 1)[1].strip().splitlines()
    assert ran_on == [
        "- python 3.11.7, torch 2.14.1 (AVX512, 2 threads), transformers 5.24.0, numpy 2.4.6; "
        "AMD EPYC x2",
        "- python 3.11.7, torch 2.13.0 (AVX2, 2 threads), transformers 5.24.0, numpy 2.4.6; "
        "AMD EPYC x2",
    ]
    assert "Ran on:" not in markdown("twitter2017", [_run("default", 1, 0.8)])


def test_checkpoints_option_gives_each_run_its_own_output_dir(tmp_path: Path) -> None:
    """``--checkpoints DIR``: the Sacred run gets ``output_dir``, one folder per run."""
    base = ["--dataset", "twitter2017", "--checkpoints", str(tmp_path)]
    args = real_data.parse_args([*base, "--set", "optim.epochs=5"])
    named, updates = real_data._run_updates(args, "casing_dim=0+no_existence_loss", 2)
    assert named == ["twitter2017", "no_existence_loss"]
    out = Path(updates["output_dir"])
    assert out == tmp_path / "twitter2017" / "casing_dim=0+no_existence_loss+optim.epochs=5-seed2"
    assert updates["resume"] is True  # a rerun continues an interrupted run in that folder
    others = {
        real_data.run_dir(args, "casing_dim=0+no_existence_loss", 3),
        real_data.run_dir(args, "default", 2),
        real_data.run_dir(real_data.parse_args(base), "casing_dim=0+no_existence_loss", 2),
    }
    assert out not in others and len(others) == 3
    # a variant with characters a folder name should not carry stays one folder below DIR
    odd = real_data.run_dir(args, "fusion_kwargs.heads=2+data.queries=/x y", 1)
    assert odd.parent == tmp_path / "twitter2017" and " " not in odd.name and "/" not in odd.name
    plain = real_data.parse_args(["--dataset", "twitter2017"])
    assert not {"output_dir", "resume"} & set(real_data._run_updates(plain, "default", 1)[1])


def test_prune_run_dir_keeps_the_chosen_model_and_predictions_only(tmp_path: Path) -> None:
    """A finished ``--checkpoints`` run keeps ``checkpoint/`` and the predictions, not ``work/``."""
    out = tmp_path / "default-seed1"
    for rel in (
        "checkpoint/config.json",
        "checkpoint/model.safetensors",
        "work/state/optimizer.safetensors",
        "work/last/model.safetensors",
        "work/best/model.safetensors",
        "work/predictions/predictions.conll",
    ):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(rel)
    kept = real_data.prune_run_dir(out)
    assert kept == {"checkpoint": out / "checkpoint", "predictions": out / "predictions"}
    assert not (out / "work").exists()
    assert (out / "checkpoint" / "model.safetensors").read_text() == "checkpoint/model.safetensors"
    assert (out / "predictions" / "predictions.conll").read_text() == (
        "work/predictions/predictions.conll"
    )


def test_prune_run_dir_removes_nothing_without_a_checkpoint(tmp_path: Path) -> None:
    """No chosen model: the resume state is what is left, so it stays, and the error names it."""
    state = tmp_path / "run" / "work" / "state" / "trainer.json"
    state.parent.mkdir(parents=True)
    state.write_text("{}")
    with pytest.raises(FileNotFoundError, match="left no checkpoint"):
        real_data.prune_run_dir(tmp_path / "run")
    assert state.read_text() == "{}"


def test_run_one_keeps_its_record_whether_or_not_a_checkpoint_was_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A finished run's scores are recorded; its checkpoint is named only when it exists."""
    from types import SimpleNamespace

    from experiments.train import ex

    def fake_run(named_configs: list[str], config_updates: dict[str, object]) -> object:
        out = Path(str(config_updates["output_dir"]))
        if config_updates["seed"] == 1:  # seed 1 writes its model, seed 2 nothing
            for rel in ("checkpoint/config.json", "work/predictions/p.conll", "work/state/s"):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_text("x")
        return SimpleNamespace(config={"optim": {"epochs": 3}}, info={}, result={"test/f1": 0.8})

    monkeypatch.setattr(ex, "run", fake_run)
    args = real_data.parse_args(["--dataset", "twitter2017", "--checkpoints", str(tmp_path)])
    rec = real_data.run_one(args, "default", 1)
    out = real_data.run_dir(args, "default", 1)
    assert rec["checkpoint"] == str(out / "checkpoint")
    assert rec["predictions"] == str(out / "predictions")  # where pruning puts them
    assert (out / "work").is_dir()  # pruned by the caller, once the run is recorded
    rec = real_data.run_one(args, "default", 2)
    assert "checkpoint" not in rec and rec["result"] == {"test/f1": 0.8}
    assert "left no checkpoint" in capsys.readouterr().err


def test_a_run_is_recorded_before_its_folder_is_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop between recording a run and pruning it loses nothing: the next call prunes it.

    Before: the run was pruned first, so a stop before the record lost the finished run (the
    next call trained it again from scratch, or failed on a half-deleted state).
    """
    runs = tmp_path / "runs.jsonl"
    ckpts = tmp_path / "ckpt"
    trained: list[int] = []

    def fake_run(args: object, variant: str, seed: int) -> dict[str, object]:
        trained.append(seed)
        out = real_data.run_dir(args, variant, seed)  # type: ignore[arg-type]
        for rel in ("checkpoint/config.json", "work/predictions/p.conll", "work/state/s"):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text("x")
        epochs = real_data.planned_epochs(args, variant)  # type: ignore[arg-type]
        return _run(variant, seed, 0.9, epochs)

    def stopped(out: Path) -> dict[str, Path]:
        raise KeyboardInterrupt

    monkeypatch.setattr(real_data, "run_one", fake_run)
    monkeypatch.setattr(real_data, "prune_run_dir", stopped)
    argv = ["--dataset", "twitter2017", "--seeds", "1", "--runs", str(runs)]
    argv += ["--checkpoints", str(ckpts)]
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert [r["seed"] for r in load_runs(runs)] == [1]  # recorded before the stop
    monkeypatch.undo()
    monkeypatch.setattr(real_data, "run_one", fake_run)
    assert main(argv) == 0
    assert trained == [1]  # not trained again
    out = ckpts / "twitter2017" / "default-seed1"
    assert not (out / "work").exists() and (out / "predictions" / "p.conll").is_file()
