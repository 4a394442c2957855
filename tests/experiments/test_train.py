"""The Sacred experiment: a `fast` run with a real FileStorageObserver, reproducibility, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sacred import SETTINGS
from sacred.observers import FileStorageObserver

from experiments.train import ex

SETTINGS.CAPTURE_MODE = "sys"  # pytest owns the file descriptors


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, Path]:
    tmp = tmp_path_factory.mktemp("exp")
    obs = FileStorageObserver(str(tmp / "runs"))
    ex.observers.append(obs)
    try:
        run = ex.run(
            named_configs=["fast"],
            config_updates={
                "data": {"root": str(tmp / "synth")},
                "model": {"encoder": {"url_word": "url"}},  # SynthTweets have t.co URLs
                "output_dir": str(tmp / "out"),
                "seed": 3,
                "visualize": 1,
                "report": True,
            },
        )
    finally:
        ex.observers.remove(obs)
    return run, tmp, Path(obs.dir)


def test_fast_run_writes_config_metrics_and_artifacts(fast_run: tuple[object, Path, Path]) -> None:
    run, tmp, run_dir = fast_run
    result = run.result  # type: ignore[attr-defined]
    for key in (
        "test/precision",
        "test/recall",
        "test/f1",
        "test/f1_PER",
        "test/f1_OTHER",
        "test/grounding_acc",
        "test/grounded_f1",
        "test/ambiguous_f1",
        "valid/f1",
    ):
        assert key in result and 0.0 <= result[key] <= 1.0, key
    assert all(isinstance(v, float) for v in result.values())
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["model"]["fusion"]["name"] == "hetero_gat" and cfg["seed"] == 3
    history = run.info["history"]  # type: ignore[attr-defined]
    env = run.info["environment"]  # type: ignore[attr-defined]
    assert env["torch"] and env["torch_threads"] >= 1
    assert env["device"].split(":")[0] in ("cpu", "cuda", "mps")
    assert json.loads((run_dir / "info.json").read_text())["environment"] == env  # observed too
    assert len(history) == cfg["optim"]["epochs"] and all("valid/f1" in h for h in history)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"train/loss_total", "train/loss_grounding", "valid/f1", "valid/grounding_acc"} <= set(
        metrics
    )
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "checkpoint-model.safetensors",
        "checkpoint-config.json",
        "checkpoint-queries.json",
        "test-predictions.conll",
        "test-predictions.jsonl",
        "final_metrics.json",
    } <= names
    assert (tmp / "out" / "checkpoint" / "model.safetensors").is_file()
    # the span threshold chosen on valid is in the result and travels with the checkpoint
    saved = json.loads((tmp / "out" / "checkpoint" / "config.json").read_text())
    assert 0.1 <= result["span_threshold"] <= 0.7
    assert saved["decoding"]["span_threshold"] == pytest.approx(result["span_threshold"])
    assert saved["decoding"]["existence_threshold"] == pytest.approx(result["existence_threshold"])
    assert (
        saved["encoder"]["url_word"] == "url"
        and "URLs read as one word" in run.info["prepare_train"]
    )  # type: ignore[attr-defined]
    assert result["existence_threshold"] in (0.0, 0.5)
    # visualize=1: the alignment pictures of one validation tweet are run artifacts too
    assert any(n.startswith("visualize-") and n.endswith("graph_PER.png") for n in names)
    assert any(n.endswith("alignment_PER.graphml") for n in names)
    # report=True: the HTML report of the validation split, predicted by the chosen model
    from mnerqg_graph.report import extract_data

    page = extract_data((run_dir / "report-valid.html").read_text(encoding="utf-8"))
    assert page["meta"]["split"] == "valid" and len(page["tweets"]) == 12
    assert page["scores"]["summary"]["f1"] == pytest.approx(result["valid/f1"])
    status = json.loads((run_dir / "run.json").read_text())["status"]
    assert status == "COMPLETED"


def test_predictions_are_evaluable_and_match_result(fast_run: tuple[object, Path, Path]) -> None:
    from mnerqg_graph.metrics import evaluate_files

    run, tmp, run_dir = fast_run
    scores = evaluate_files(tmp / "synth" / "test.txt", run_dir / "test-predictions.conll")
    assert scores.to_dict()["micro"]["f1"] == pytest.approx(run.result["test/f1"])  # type: ignore[attr-defined]


def test_predict_reads_urls_as_the_model_was_trained(
    fast_run: tuple[object, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mnerqg predict`` on the checkpoint gives the run's own test predictions, URLs included."""
    import mnerqg_graph.processing as processing
    from mnerqg_graph.predict import main as predict_main

    _, tmp, run_dir = fast_run
    seen: list[str] = []
    real = processing.build_mrc_examples

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(str(kwargs.get("url_word")))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(processing, "build_mrc_examples", spy)
    out = tmp_path / "pred.conll"
    argv = [
        "--checkpoint",
        str(tmp / "out" / "checkpoint"),
        "--input",
        str(tmp / "synth" / "test.txt"),
    ]
    argv += ["--images", str(tmp / "synth" / "images"), "--output", str(out), "--no-progress"]
    assert predict_main(argv) == 0
    assert seen and set(seen) == {"url"}
    assert out.read_text() == (run_dir / "test-predictions.conll").read_text()


def test_same_seed_same_numbers(fast_run: tuple[object, Path, Path]) -> None:
    run, tmp, _ = fast_run
    again = ex.run(
        named_configs=["fast"],
        config_updates={
            "data": {"root": str(tmp / "synth")},
            "model": {"encoder": {"url_word": "url"}},
            "seed": 3,
            "save_artifacts": False,
        },
    )
    for k, v in run.result.items():  # type: ignore[attr-defined]
        if "seconds" not in k:
            assert again.result[k] == pytest.approx(v, abs=1e-9), k


def test_missing_data_root_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        ex.run(
            named_configs=["fast"],
            config_updates={"data": {"name": "folder", "root": str(tmp_path / "nope")}},
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("experiments.train: error:") and "nope" in err[-1]


def test_a_synth_set_of_other_sizes_is_regenerated_a_user_folder_kept(tmp_path: Path) -> None:
    from experiments.runner import _synth_stale
    from mnerqg_graph.data.synth import generate

    want = {"seed": 0, "train": 6, "valid": 3, "test": 3}
    root = tmp_path / "synth"
    assert _synth_stale(root, want)  # nothing there
    generate(root, seed=0, n_train=6, n_valid=3, n_test=3, image_size=32)
    assert not _synth_stale(root, want)
    # the fast config's small set must not stand in for the demo's (and the other way round)
    assert _synth_stale(root, {**want, "train": 2000})
    assert _synth_stale(root, {**want, "seed": 1})
    (root / "synth_meta.json").unlink()  # a folder of the user's own: used as it is
    assert not _synth_stale(root, {**want, "train": 2000})


def test_packed_run_saves_the_mode_and_predict_follows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A packed-query run's checkpoint says packed; ``mnerqg predict`` reads it the same way."""
    import mnerqg_graph.processing as processing
    from mnerqg_graph.predict import main as predict_main

    obs = FileStorageObserver(str(tmp_path / "runs"))
    ex.observers.append(obs)
    try:
        ex.run(
            named_configs=["fast"],
            config_updates={
                "data": {"root": str(tmp_path / "synth")},
                "model": {"encoder": {"query_encoding": "packed", "packed_attention": "isolated"}},
                "output_dir": str(tmp_path / "out"),
            },
        )
    finally:
        ex.observers.remove(obs)
    ckpt = tmp_path / "out" / "checkpoint"
    cfg = json.loads((ckpt / "config.json").read_text())
    assert (cfg["encoder"]["query_encoding"], cfg["encoder"]["packed_attention"]) == (
        "packed",
        "isolated",
    )
    seen: list[object] = []
    real = processing.build_mrc_examples

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("query_encoding"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(processing, "build_mrc_examples", spy)
    out = tmp_path / "pred.conll"
    argv = ["--checkpoint", str(ckpt), "--input", str(tmp_path / "synth" / "test.txt")]
    argv += ["--images", str(tmp_path / "synth" / "images"), "--output", str(out)]
    assert predict_main([*argv, "--no-progress"]) == 0
    assert seen and set(seen) == {"packed"}
    assert out.read_text() == (Path(obs.dir) / "test-predictions.conll").read_text()


@pytest.mark.parametrize("rank", ["0", "1"])
def test_only_rank_0_observes_whatever_the_observer_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank: str
) -> None:
    """The run Sacred creates for ``-F DIR`` (as ``run_commandline`` does) is observed on rank 0."""
    monkeypatch.setenv("RANK", rank)
    obs = FileStorageObserver(str(tmp_path / "attached"))
    ex.observers.append(obs)
    try:
        run = ex._create_run(options={"--file_storage": str(tmp_path / "flag")})
    finally:
        ex.observers.remove(obs)
    if rank == "0":
        assert not run.unobserved
        assert {o.basedir for o in run.observers} == {
            str(tmp_path / "attached"),
            str(tmp_path / "flag"),
        }
    else:
        assert run.unobserved  # Run.__call__ then drops every observer before it starts
        assert [o.basedir for o in run.observers] == [str(tmp_path / "attached")]  # -F built none
