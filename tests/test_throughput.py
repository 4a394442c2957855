"""``mnerqg bench``: one run gives every figure, as a table or one JSON object."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import throughput

SMALL = [
    "--tweets",
    "5",
    "--batch-size",
    "3",
    "--train-batch-size",
    "2",
    "--train-steps",
    "1",
    "--repeat",
    "2",
    "--threads",
    "1",
]


def test_json_has_the_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MNERQG_BENCH_CACHE", str(tmp_path / "cache"))
    assert throughput.main([*SMALL, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)  # stdout holds the JSON object only
    for key in (
        "inference_tweets_per_s",
        "train_examples_per_s",
        "full_vs_text_only_step_ratio",
        "graph_build_share",
    ):
        assert isinstance(r[key], float) and r[key] > 0, key
    assert r["encoder"] == "tiny" and r["images"] is False and r["device"] == "cpu"
    assert r["environment"]["device"] == "cpu" and r["environment"]["torch_threads"] >= 1
    assert r["tweets"] == 5 and r["types_per_tweet"] == 4
    assert r["train_examples_per_s"] == pytest.approx(4 * r["train_tweets_per_s"])
    lo, hi = r["inference_tweets_per_s_range"]
    assert lo <= r["inference_tweets_per_s"] <= hi
    for shares in (r["stage_shares"], r["train_stage_shares"]):
        assert sum(shares.values()) == pytest.approx(1.0, abs=0.05)
        assert shares["text_encoder"] > 0 and shares["fusion"] > 0 and shares["graph_build"] > 0
    assert r["stage_shares"]["tokenise"] > 0 and r["stage_shares"]["collate"] > 0
    assert r["train_stage_shares"]["backward"] > 0 and r["train_stage_shares"]["optimizer"] > 0
    assert r["targets"]["applies"] is False  # the targets are stated for MiniLM
    table = throughput.format_table(r)
    assert "inference tweets/s" in table and "graph_build" in table
    # the cached inputs are reused by the next run
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()) == ["synth", "tiny"]


def test_bench_command_and_bad_arguments() -> None:
    from mnerqg_graph.cli import resolve

    assert resolve("bench") is throughput.main
    with pytest.raises(SystemExit, match="must be >= 1"):
        throughput.main(["--repeat", "0"])
