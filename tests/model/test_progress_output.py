"""Progress of training epochs and of ``mnerqg predict`` on a stderr that is not a terminal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from mnerqg_graph import cli
from mnerqg_graph import progress as progress_mod
from mnerqg_graph.data.queries import load_queries
from mnerqg_graph.model import build_model
from mnerqg_graph.training.checkpoint import save_model
from mnerqg_graph.training.loop import TrainConfig, Trainer
from tests.helpers import TWEETS, processor, samples, tiny_config


@pytest.fixture(autouse=True)
def _lines_at_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain lines (pytest's stderr is no terminal), one at every step instead of every 30 s."""
    monkeypatch.setattr(progress_mod, "_pinned_terminal", None)
    monkeypatch.setattr(progress_mod, "PLAIN_INTERVAL_S", 0.0)


def _trainer(tmp_path: Path, encoder_dir: Path, progress: bool) -> Trainer:
    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir)
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    items = processor(encoder_dir, cfg)(samples(tmp_path)).items
    tcfg = TrainConfig(epochs=2, batch_size=2, seed=0, device="cpu", progress=progress)
    return Trainer(
        build_model(cfg), tok, load_queries(), items, lambda m: {"f1": 0.0}, tcfg, tmp_path / "o"
    )


def test_training_steps_loss_and_eta_as_plain_lines(
    tmp_path: Path, encoder_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = _trainer(tmp_path, encoder_dir, progress=True)
    capsys.readouterr()  # (transformers' own bar, loading the encoder's weights)
    result = trainer.fit()
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    number = r"\d+\.\d{4}"
    assert len(lines) == 4, lines  # 3 tweets, 2 a step: 2 steps in each of 2 epochs
    for epoch in (1, 2):
        first, last = lines[2 * epoch - 2 : 2 * epoch]
        assert re.fullmatch(rf"epoch {epoch}/2 step 1/2 loss {number} eta \d+s", first), first
        assert re.fullmatch(rf"epoch {epoch}/2 step 2/2 loss {number} done in \d+s", last), last
        # at the end of the epoch the running loss is the epoch's mean, as logged
        mean = result.history[epoch - 1]["train/loss_total"]
        assert last.split(" loss ")[1].startswith(f"{mean:.4f} ")


def test_progress_false_prints_nothing(
    tmp_path: Path, encoder_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = _trainer(tmp_path, encoder_dir, progress=False)
    capsys.readouterr()
    trainer.fit()
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("flag", [[], ["--no-progress"]])
def test_predict_input_progress_and_no_progress(
    tmp_path: Path, encoder_dir: Path, capsys: pytest.CaptureFixture[str], flag: list[str]
) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir)
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    ckpt = save_model(build_model(cfg).eval(), cfg, load_queries(), tok, tmp_path / "ckpt")
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": t.id, "tokens": t.tokens}) + "\n" for t in TWEETS))
    argv = ["predict", "--checkpoint", str(ckpt), "--input", str(inp), "--batch-size", "2"]
    capsys.readouterr()
    assert cli.main([*argv, "--device", "cpu", *flag]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3
    if flag:
        assert captured.err == ""
    else:  # a line per batch of 2 tweets, then the last one
        assert [ln.split(" tweet/s")[0].rsplit(" ", 1)[0] for ln in captured.err.splitlines()] == [
            "predict tweet 2",
            "predict tweet 3",
        ]
