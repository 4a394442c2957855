"""``mnerqg bench``: one run gives every figure, as a table or one JSON object."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from mnerqg_graph.bench import throughput
from mnerqg_graph.data.queries import load_queries

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


def test_tagger_row_and_query_encodings_in_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MNERQG_BENCH_CACHE", str(tmp_path / "cache"))
    assert throughput.main([*SMALL, "--query-encoding", "packed,per_type", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["query_encoding"] == "packed"
    assert r["model_overrides"] == {"packed": {}, "per_type": {}}
    assert set(r["by_query_encoding"]) == {"packed", "per_type"}
    for key in ("tagger_tweets_per_s", "tagger_train_tweets_per_s", "inference_vs_tagger"):
        assert isinstance(r[key], float) and r[key] > 0, key
    packed = r["by_query_encoding"]["packed"]
    assert r["inference_tweets_per_s"] == packed["inference_tweets_per_s"]
    assert r["train_tweets_per_s"] == packed["train_tweets_per_s"]
    assert r["inference_vs_tagger"] == packed["inference_vs_tagger"]
    assert r["targets"]["inference_vs_tagger"]["target"] == ">= 0.5"
    table = throughput.format_table(r)
    assert "plain BIO tagger" in table and "full, per_type" in table and "full, packed" in table
    with pytest.raises(SystemExit, match="--query-encoding takes"):
        throughput.main(["--query-encoding", "packed,packed"])
    # one-word queries without separators: the packed sequence is T + 1 pieces over the tweet's
    assert r["queries"] == {"packed": "default", "per_type": "default"}
    # packed with one-word queries and no separators against per type with the default queries,
    # in one run: each mode reads its own query file and model settings
    compact_args = [
        "--queries",
        "packed:words",
        "--model",
        "packed:encoder.packed_separators=False",
        "--model",
        "heads.head_dim=16",
    ]
    argv = [*SMALL, "--query-encoding", "packed,per_type", "--json", *compact_args]
    assert throughput.main(argv) == 0
    compact = json.loads(capsys.readouterr().out)
    assert compact["queries"] == {"packed": "words", "per_type": "default"}
    assert compact["model_overrides"] == {
        "packed": {"encoder.packed_separators": False, "heads.head_dim": 16},
        "per_type": {"heads.head_dim": 16},
    }
    by = compact["by_query_encoding"]
    assert (
        by["per_type"]["pieces_per_tweet"] == r["by_query_encoding"]["per_type"]["pieces_per_tweet"]
    )
    tok = AutoTokenizer.from_pretrained(r["encoder_path"])
    query_pieces = [
        len(tok(q, add_special_tokens=False)["input_ids"]) for q in load_queries().values()
    ]
    tweet = r["by_query_encoding"]["packed"]["pieces_per_tweet"] - (1 + sum(query_pieces) + 4)
    # packed: [CLS] q_1 q_2 q_3 q_4 [SEP] tweet [SEP]
    assert by["packed"]["pieces_per_tweet"] == pytest.approx(tweet + 6)
    assert "packed: queries words" in throughput.format_table(compact)
    with pytest.raises(SystemExit, match="--model expects"):
        throughput.parse_overrides(["types=3"], ["packed"])
    with pytest.raises(SystemExit, match="--model expects"):  # a flat key of config_version 1
        throughput.parse_overrides(["head_dim=8"], ["packed"])
    with pytest.raises(SystemExit, match="does not run"):
        throughput.parse_overrides(["per_type:heads.head_dim=8"], ["packed"])


def test_reference_tagger_tags_every_token(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from mnerqg_graph.bench.tagger_reference import PlainTagger
    from tests.helpers import TWEETS, tiny_encoder

    enc = str(tiny_encoder(tmp_path))
    tok = AutoTokenizer.from_pretrained(enc)
    tagger = PlainTagger(enc, ["PER", "LOC", "ORG", "OTHER"])
    batch = tagger.encode(tok, TWEETS)
    # the invisible token of t1 has no piece: no label, tagged O
    assert batch.first_piece[0, 4] == -1 and batch.labels[0, 4] == -100
    assert batch.labels[1, 3] == tagger.tags.index("B-ORG")
    tags = tagger.predict(tok, TWEETS, batch_size=2)
    assert [len(t) for t in tags] == [len(t.tokens) for t in TWEETS] and tags[0][4] == "O"
    opt = torch.optim.AdamW(tagger.parameters(), lr=1e-2)
    first = tagger.loss(batch).item()
    for _ in range(5):
        loss = tagger.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_bench_model_is_the_experiment_model() -> None:
    """The bench builds ModelConfig's defaults, which are the experiment's (test_defaults.py)."""
    from experiments.train import _real_data

    real = _real_data("twitter2017")["model"]
    for key, value in throughput.REAL_DATA_MODEL.items():
        section, name = key.split(".")
        assert real[section][name] == value, key
