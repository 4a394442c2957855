"""Choosing the decoder and thresholds on validation (``experiments.runner.choose_decoding``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sacred import SETTINGS

import mnerqg_graph.pipeline as pipeline
from experiments.runner import EXISTENCE_THRESHOLDS, SPAN_THRESHOLDS, choose_decoding
from experiments.train import ex
from mnerqg_graph.config import DecodingConfig, HeadsConfig, ModelConfig
from mnerqg_graph.data.types import Sample
from mnerqg_graph.pipeline import ModelInputs, Predictions
from tests.helpers import TWEETS

SETTINGS.CAPTURE_MODE = "sys"


class _Model:
    """What ``choose_decoding`` reads of a model: its config and whether it has the tagger."""

    def __init__(self, tag_head: bool) -> None:
        self.config = ModelConfig(
            types=["PER", "LOC", "ORG", "OTHER"],
            heads=HeadsConfig(tag_head=tag_head),
            decoding=DecodingConfig(span_threshold=0.4),
        )
        self.tag_head = object() if tag_head else None


def _fake_predictions(
    monkeypatch: pytest.MonkeyPatch, samples: list[Sample], good: dict[str, Any]
) -> list[str]:
    """``predict_grid`` returning gold tags where ``good[decoder](thresholds)``, else all ``O``.

    Returns the decoders asked of each call (one call: one forward pass).
    """
    calls: list[list[str]] = []

    def fake(model: Any, inputs: Any, decodings: Any, **kw: Any) -> Any:
        calls.append(list(dict.fromkeys(d.decoder for d in decodings)))
        out = {}
        for d in decodings:
            tags = [
                list(s.tweet.tags) if good[d.decoder](d.thresholds) else ["O"] * len(s.tweet.tokens)
                for s in inputs.samples
            ]
            out[d] = Predictions([[] for _ in samples], tags, [{} for _ in samples], [{}] * 3)
        return out

    monkeypatch.setattr(pipeline, "predict_grid", fake)
    return calls  # type: ignore[return-value]


def _choose(
    model: _Model, samples: list[Sample]
) -> tuple[tuple[str, float, float], float, dict[str, float]]:
    types = list(model.config.types)
    inputs = ModelInputs(samples, [], None)  # type: ignore[arg-type]
    args = (model, inputs, types, None, "f1", 8, "cpu")
    chosen, scores, by_decoder = choose_decoding(*args)  # type: ignore[arg-type]
    return chosen, scores["f1"], by_decoder


def test_the_tagger_is_chosen_only_where_it_scores_better(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = [Sample(t) for t in TWEETS]
    # the tagger is right, the span heads are wrong at every threshold: the tagger is chosen,
    # with the existence threshold nearest the config (off) and the config's span threshold
    calls = _fake_predictions(
        monkeypatch, samples, {"tags": lambda t: True, "span": lambda t: False}
    )
    chosen, f1, by_decoder = _choose(_Model(tag_head=True), samples)
    assert chosen == ("tags", 0.4, 0.0) and f1 == 1.0
    assert by_decoder == {"span": 0.0, "tags": 1.0}  # each decoder's best, for the record
    assert calls == [["span", "tags"]]  # one forward pass for every decoder and threshold
    # a tie goes to the span heads, at the thresholds nearest the config's (0.4, off)
    _fake_predictions(monkeypatch, samples, {"tags": lambda t: True, "span": lambda t: True})
    assert _choose(_Model(tag_head=True), samples)[0] == ("span", 0.4, 0.0)
    # the span heads right only at span threshold 0.25 with the existence gate: that is chosen
    _fake_predictions(
        monkeypatch, samples, {"tags": lambda t: False, "span": lambda t: t == (0.25, 0.5)}
    )
    assert _choose(_Model(tag_head=True), samples)[0] == ("span", 0.25, 0.5)
    assert 0.25 in SPAN_THRESHOLDS and 0.5 in EXISTENCE_THRESHOLDS
    # without the tagger only the span heads are tried
    calls = _fake_predictions(
        monkeypatch, samples, {"tags": lambda t: True, "span": lambda t: False}
    )
    chosen, _, by_decoder = _choose(_Model(tag_head=False), samples)
    assert chosen[0] == "span" and set(by_decoder) == {"span"}
    assert calls == [["span"]]


def test_a_run_with_the_tagger_saves_its_chosen_decoder(tmp_path: Path) -> None:
    """End to end: the checkpoint carries the decoder chosen on valid, and predict follows it."""
    from mnerqg_graph.predict import main as predict_main

    run = ex.run(
        named_configs=["fast"],
        config_updates={
            "data": {"root": str(tmp_path / "synth")},
            "model": {"heads": {"tag_head": True}},
            "output_dir": str(tmp_path / "out"),
            "seed": 1,
            "save_artifacts": False,
        },
    )
    assert run.result is not None and run.result["tag_decoder"] in (0.0, 1.0)
    saved = json.loads((tmp_path / "out" / "checkpoint" / "config.json").read_text())
    assert saved["heads"]["tag_head"] is True
    assert saved["decoding"]["decoder"] == ("tags" if run.result["tag_decoder"] else "span")
    assert run.info["decoder"] == saved["decoding"]["decoder"]
    out = tmp_path / "pred.conll"
    argv = ["--checkpoint", str(tmp_path / "out" / "checkpoint"), "--input"]
    argv += [str(tmp_path / "synth" / "test.txt"), "--images", str(tmp_path / "synth" / "images")]
    argv += ["--output", str(out), "--no-progress"]
    assert predict_main(argv) == 0
    written = (tmp_path / "out" / "work" / "predictions" / "predictions.conll").read_text()
    assert out.read_text() == written
