"""``mnerqg predict --input``: streaming in chunks keeps input order; the output is atomic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mnerqg_graph.bench.throughput import set_span_bias
from tests.helpers import TWEETS, tiny_config, tiny_encoder

#: Tweets of very different lengths, so that sorting by length inside a chunk reorders them.
LENGTHS = [7, 1, 12, 3, 9, 2, 5, 11, 4, 6, 8]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint whose span heads predict few spans, as a trained model does."""
    from transformers import AutoTokenizer

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.model import build_model
    from mnerqg_graph.training.checkpoint import save_model

    root = tmp_path_factory.mktemp("stream")
    enc = tiny_encoder(root)
    torch.manual_seed(0)
    cfg = tiny_config(enc)
    model = build_model(cfg).eval()
    set_span_bias(model, -3.0)
    return save_model(
        model, cfg, load_queries(), AutoTokenizer.from_pretrained(str(enc)), root / "ckpt"
    )


def _input(path: Path) -> list[str]:
    words = [w for t in TWEETS for w in t.tokens if w.isalpha()]
    ids = []
    with path.open("w", encoding="utf-8") as fh:
        for i, n in enumerate(LENGTHS):
            tokens = [words[(i + j) % len(words)] for j in range(n)]
            ids.append(f"tw{i}")
            fh.write(json.dumps({"id": f"tw{i}", "tokens": tokens}) + "\n")
    return ids


def _run(ckpt: Path, inp: Path, out: Path, chunk: int) -> int:
    from benchmarks.predict_memory import predict_argv
    from mnerqg_graph.predict import main

    return main(predict_argv(ckpt, inp, out, chunk, batch=2, device="cpu"))


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_order_is_kept_across_chunks(checkpoint: Path, tmp_path: Path) -> None:
    ids = _input(tmp_path / "in.jsonl")
    assert _run(checkpoint, tmp_path / "in.jsonl", tmp_path / "small.jsonl", chunk=3) == 0
    assert _run(checkpoint, tmp_path / "in.jsonl", tmp_path / "whole.jsonl", chunk=100) == 0
    small, whole = _records(tmp_path / "small.jsonl"), _records(tmp_path / "whole.jsonl")
    assert [r["id"] for r in small] == ids  # 4 chunks of up to 3 tweets, each sorted inside
    assert [len(r["tokens"]) for r in small] == LENGTHS
    assert [r["id"] for r in whole] == ids
    for a, b in zip(small, whole, strict=True):  # chunking changes batching, not predictions
        assert [(e["start"], e["end"], e["type"]) for e in a["entities"]] == [
            (e["start"], e["end"], e["type"]) for e in b["entities"]
        ]


def test_conll_output_keeps_order(checkpoint: Path, tmp_path: Path) -> None:
    ids = _input(tmp_path / "in.jsonl")
    assert _run(checkpoint, tmp_path / "in.jsonl", tmp_path / "out.conll", chunk=4) == 0
    lines = (tmp_path / "out.conll").read_text(encoding="utf-8").splitlines()
    assert [ln.split(":", 1)[1] for ln in lines if ln.startswith("IMGID:")] == ids


def test_interrupted_run_leaves_no_partial_output(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnerqg_graph import predict as predict_mod

    _input(tmp_path / "in.jsonl")
    out = tmp_path / "res" / "out.jsonl"
    out.parent.mkdir()
    out.write_text("previous complete result\n")
    real = predict_mod.Predictor.predict
    calls = {"n": 0}

    def interrupted(self: Any, samples: list[Any], *args: Any) -> list[dict[str, Any]]:
        calls["n"] += 1
        if calls["n"] == 2:  # the first chunk has been written to the temporary file
            raise KeyboardInterrupt
        return real(self, samples, *args)

    monkeypatch.setattr(predict_mod.Predictor, "predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(checkpoint, tmp_path / "in.jsonl", out, chunk=3)
    assert calls["n"] == 2
    assert out.read_text() == "previous complete result\n"  # old file intact, not truncated
    assert [p.name for p in out.parent.iterdir()] == ["out.jsonl"]  # no temporary file left

    out.unlink()
    calls["n"] = -100  # no interruption this time
    assert _run(checkpoint, tmp_path / "in.jsonl", out, chunk=3) == 0
    assert len(_records(out)) == len(LENGTHS)


def test_predict_text_imports_nothing_it_does_not_use(checkpoint: Path) -> None:
    """``mnerqg predict --text`` is mostly imports (issue 23): only those it uses.

    Not plotting, the experiment, benchmarks or detector training; torch, transformers and PyG
    (graph builder, fusion modules) it needs.
    """
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import sys
        from mnerqg_graph.cli import main
        argv = ["predict", "--checkpoint", {str(checkpoint)!r}, "--text", "Kelvo visits Marn"]
        assert main([*argv, "--device", "cpu"]) == 0
        unused = ["matplotlib", "networkx", "sacred", "experiments", "benchmarks", "seqeval",
                  "mnerqg_graph.viz", "detectors", "detectors.detector", "detectors.detection",
                  "detectors.grounder", "detectors.weak_labels"]
        loaded = [m for m in unused if m in sys.modules]
        assert not loaded, loaded
        assert "torch_geometric" in sys.modules  # (what the model's forward needs)
        """
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["tokens"] == ["Kelvo", "visits", "Marn"]
