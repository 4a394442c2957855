"""``benchmarks.rechoose_decoding``: a kept run's decoding chosen again, its record updated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import experiments.runner as runner
from benchmarks import rechoose_decoding as rc
from mnerqg_graph.bench.throughput import set_span_bias
from tests.helpers import TWEETS, tiny_config, tiny_encoder


def _setup(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    from transformers import AutoTokenizer

    from mnerqg_graph.data.conll import write_conll
    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.model import build_model
    from mnerqg_graph.training.checkpoint import save_model

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid", "test"):
        write_conll(data / f"{split}.txt", TWEETS)
    enc = tiny_encoder(tmp_path)
    torch.manual_seed(0)
    cfg = tiny_config(
        enc, {"image.use_image": False, "heads.tag_head": True, "decoding.span_threshold": 0.45}
    )
    model = build_model(cfg).eval()
    set_span_bias(model, 0.0)  # probabilities near .5: the thresholds change the predictions
    ckpt = save_model(
        model, cfg, load_queries(), AutoTokenizer.from_pretrained(str(enc)), tmp_path / "ckpt"
    )
    record = {
        "dataset": "twitter2017",
        "variant": "tag_head=True",
        "seed": 1,
        "updates": [],
        "checkpoint": str(ckpt),
        "result": {"test/f1": 0.5, "valid/f1": 0.5, "span_threshold": 0.45},
    }
    other = {**record, "seed": 2}
    runs = tmp_path / "runs.jsonl"
    runs.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in (record, other)))
    return data, runs, record


def _argv(runs: Path, data: Path) -> list[str]:
    return ["--runs", str(runs), "--dataset", "twitter2017", "--variant", "tag_head=True"] + [
        "--seed", "1", "--data-root", str(data),
    ]  # fmt: skip


def test_a_new_choice_rewrites_config_and_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnerqg_graph.data.types import Sample
    from mnerqg_graph.metrics import entity_prf
    from mnerqg_graph.predict import Predictor

    data, runs, record = _setup(tmp_path)
    monkeypatch.setattr(
        runner,
        "choose_decoding",
        lambda *a, **k: (("span", 0.3, 0.5), {"f1": 0.75}, {"span": 0.75}),
    )
    assert rc.main(_argv(runs, data)) == 0
    rows = [json.loads(line) for line in runs.read_text().splitlines()]
    assert rows[1]["seed"] == 2 and "decoding_rechosen" not in rows[1]  # the other run untouched
    new = rows[0]["result"]
    assert rows[0]["decoding_rechosen"] and new["valid/f1"] == 0.75
    assert (new["span_threshold"], new["existence_threshold"], new["tag_decoder"]) == (
        0.3,
        0.5,
        0.0,
    )
    saved = json.loads((Path(record["checkpoint"]) / "config.json").read_text())
    decoding = saved["decoding"]
    assert (decoding["decoder"], decoding["span_threshold"], decoding["existence_threshold"]) == (
        "span",
        0.3,
        0.5,
    )
    # the record's test F1 is the rewritten checkpoint's, as `mnerqg predict` decodes it
    out = Predictor(record["checkpoint"], "cpu").predict([Sample(t) for t in TWEETS])
    gold = [list(t.tags) for t in TWEETS]
    assert new["test/f1"] == pytest.approx(entity_prf(gold, [r["tags"] for r in out]).micro.f1)


def test_the_same_choice_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, runs, _ = _setup(tmp_path)
    before = runs.read_text()
    monkeypatch.setattr(
        runner, "choose_decoding", lambda *a, **k: (("span", 0.45, 0.0), {"f1": 0.5}, {"span": 0.5})
    )
    assert rc.main(_argv(runs, data)) == 0
    assert runs.read_text() == before


def test_a_run_without_its_record_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, runs, _ = _setup(tmp_path)
    with pytest.raises(SystemExit):
        rc.main(_argv(runs, data)[:-4] + ["--seed", "7", "--data-root", str(data)])
    assert "0 records of tag_head=True seed 7" in capsys.readouterr().err
