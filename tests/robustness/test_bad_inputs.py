"""Messy user data through the real entry points: readers, check-data, evaluate, predict, train.

Contract (project brief): bad input gets a clear error naming the file and line (or field), never a
traceback from deep inside, never silent data loss. Through ``mnerqg``: exit code 2 and exactly one
line on stderr. What is usable but odd (CRLF, BOM, empty tweets, duplicate IMGIDs, unreadable or
extreme images, over-long tweets) runs, with a counted and reported fallback.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from mnerqg_graph.data.conll import read_conll, write_conll
from mnerqg_graph.data.tags import spans_from_tags
from mnerqg_graph.data.types import Box, Tweet
from mnerqg_graph.data.voc import VocAnnotation, VocObject, write_voc
from mnerqg_graph.errors import DataError
from tests.robustness.conftest import (
    SACRED_LOG,
    assert_one_line_error,
    huge_gray_jpeg,
    predict_file,
    run_cli,
    write_rgb,
)

GOOD = b"IMGID:1\nKelvo\tB-PER\nvisits\tO\nMarn\tB-LOC\n\nIMGID:2\nZed\tB-ORG\nCorp\tI-ORG\n"

# (case id, file bytes, line named, fragment of the message)
MALFORMED_CONLL = [
    ("truncated-mid-line", b"IMGID:1\nKelvo\tB-PER\nvisits\tO\nMar", 4, "without a TAB: 'Mar'"),
    ("truncated-after-tab", b"IMGID:1\nKelvo\tB-PER\nvisits\t", 3, "unknown tag ''"),
    ("truncated-mid-utf8", b"IMGID:1\nKelvo\tB-PER\nCaf\xc3", 3, "not UTF-8: byte 0xc3"),
    ("tab-missing", b"IMGID:1\nKelvo B-PER\n", 2, "separated by spaces, not a TAB"),
    ("three-columns", b"IMGID:1\nKelvo\tB-PER\tNNP\n", 2, "3 TAB-separated columns"),
    ("unknown-tag", b"IMGID:1\nKelvo\tPERSON\n", 2, "unknown tag 'PERSON'"),
    ("latin-1", b"IMGID:1\nK\xe9lvo\tB-PER\n", 2, "not UTF-8: byte 0xe9 at column 2"),
    ("no-imgid", b"Kelvo\tB-PER\n", 1, "no IMGID line"),
    ("blank-inside-tweet", b"IMGID:1\nKelvo\tB-PER\n\nvisits\tO\n", 4, "outside a tweet"),
    ("empty-imgid", b"IMGID:\nKelvo\tO\n", 1, "unusable IMGID"),
    ("empty-token", b"IMGID:1\n\tO\n", 2, "empty token"),
    ("crlf-three-columns", b"IMGID:1\r\nKelvo\tO\r\nMarn\tB-LOC\tX\r\n", 3, "3 TAB-separated"),
    ("bom-no-tab", b"\xef\xbb\xbfIMGID:1\nKelvo\tO\nMarn\n", 3, "without a TAB"),
]


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def n_entities(tweets: list[Tweet]) -> int:
    return sum(len(spans_from_tags(t.tags)) for t in tweets)


# ------------------------------------------------------------------------------ evaluate


@pytest.mark.parametrize("role", ["gold", "pred"])
@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [c[1:] for c in MALFORMED_CONLL],
    ids=[c[0] for c in MALFORMED_CONLL],
)
def test_evaluate_malformed_conll_names_file_and_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    role: str,
    content: bytes,
    line: int,
    fragment: str,
) -> None:
    bad = write(tmp_path / "bad.txt", content)
    good = write(tmp_path / "good.txt", GOOD)
    gold, pred = (bad, good) if role == "gold" else (good, bad)
    result = run_cli(capsys, ["evaluate", "--gold", str(gold), "--pred", str(pred)])
    assert_one_line_error(result, "evaluate", f"{bad}:{line}: ", fragment)
    assert result.out == ""


def test_evaluate_accepts_crlf_bom_empty_and_duplicate_tweets_and_counts_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gold_text = (
        "\ufeffIMGID:1\r\nKelvo\tB-PER\r\nvisits\tO\r\nMarn\tB-LOC\r\n\r\n"
        "IMGID:1\r\nZed\tB-MISC\r\nCorp\tI-MISC\r\n\r\n"  # a repeated IMGID, MISC spelling
        "IMGID:2\r\n\r\n"  # an empty tweet
        "IMGID:3\r\nSt\tO\r\nLouis\tI-LOC\r\n"  # an I- with no B- starts an entity
    )
    pred_text = (
        "IMGID:1\nKelvo\tB-PER\nvisits\tO\nMarn\tO\n\n"
        "IMGID:1\nZed\tB-OTHER\nCorp\tI-OTHER\n\n"
        "IMGID:2\n\n"
        "IMGID:3\nSt\tO\nLouis\tB-LOC\n"
    )
    gold = write(tmp_path / "gold.txt", gold_text)
    pred = write(tmp_path / "pred.txt", pred_text)
    result = run_cli(capsys, ["evaluate", "--gold", str(gold), "--pred", str(pred), "--json"])
    assert result.code == 0 and result.err == ""
    scores = json.loads(result.out)
    assert scores["micro"]["support"] == 4  # PER, LOC, OTHER (MISC), LOC (stray I-)
    assert scores["micro"]["precision"] == 1.0 and scores["micro"]["recall"] == 0.75
    assert {t: s["support"] for t, s in scores["per_type"].items()} == {
        "PER": 1,
        "LOC": 2,
        "OTHER": 1,
    }


def test_evaluate_misaligned_files_name_both_places(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gold = write(tmp_path / "gold.txt", GOOD)
    pred = write(tmp_path / "pred.txt", GOOD.replace(b"Marn\tB-LOC\n", b""))
    result = run_cli(capsys, ["evaluate", "--gold", str(gold), "--pred", str(pred)])
    assert_one_line_error(
        result, "evaluate", f"{pred}:1: ", "has 2 tokens, the gold file 3", f"{gold}:1"
    )
    result = run_cli(capsys, ["evaluate", "--gold", str(gold), "--pred", str(tmp_path / "no")])
    assert_one_line_error(result, "evaluate", str(tmp_path / "no"), "not found")


# ------------------------------------------------------------------------------ predict


#: A tweet of 1,000 tokens whose last entities lie far past any max_length.
LONG = Tweet(
    "long",
    ["Kelvo"] + ["visits"] * 995 + ["Zed", "Corp", "in", "Marn"],
    ["B-PER"] + ["O"] * 995 + ["B-ORG", "I-ORG", "O", "B-LOC"],
)


def test_thousand_token_tweet_is_truncated_reported_and_its_entities_still_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], checkpoint: Path
) -> None:
    tweets = [Tweet("1", ["Kelvo", "visits", "Marn"], ["B-PER", "O", "B-LOC"]), LONG]
    gold = tmp_path / "gold.txt"
    write_conll(gold, tweets)
    pred = tmp_path / "pred.conll"
    result = predict_file(capsys, checkpoint, gold, pred)
    assert result.code == 0, result.err
    report = [ln for ln in result.err_lines if "truncated" in ln]
    assert len(report) == 1 and "1 tweet" in report[0] and "long" in report[0], result.err
    predicted = read_conll(pred).tweets
    assert [len(t.tokens) for t in predicted] == [3, 1000]
    assert predicted[1].tokens == LONG.tokens  # every token written back, tagged
    assert predicted[1].tags[-10:] == ["O"] * 10  # nothing predicted past the cut

    result = run_cli(capsys, ["evaluate", "--gold", str(gold), "--pred", str(pred), "--json"])
    assert result.code == 0, result.err
    scores = json.loads(result.out)
    assert scores["micro"]["support"] == n_entities(tweets) == 5  # the cut ones still count
    assert scores["per_type"]["ORG"]["support"] == 1  # only in the cut part of the long tweet


# (case id, JSON-lines bytes, line named, fragment)
BAD_JSONL = [
    ("invalid-json", b'{"id": "a", "tokens": ["x"]}\n{"id": "b", "tokens": ["y"]\n', 2,
     "invalid JSON"),
    ("latin-1", b'{"id": "a", "tokens": ["x"]}\n{"id": "b", "text": "caf\xe9"}\n', 2,
     "not UTF-8"),
    ("no-tokens", b'{"id": "a"}\n', 1, "'tokens' or 'text'"),
    ("tokens-string", b'{"id": "a", "tokens": "Kelvo Marn"}\n', 1, "[tokens]"),
    ("token-with-tab", b'{"id": "a", "tokens": ["Kelvo\\tB-PER"]}\n', 1, "[tokens]"),
    ("empty-token", b'{"id": "a", "tokens": ["Kelvo", ""]}\n', 1, "[tokens]"),
    ("lone-surrogate", b'{"id": "a", "tokens": ["Kelvo", "\\ud800"]}\n', 1, "[tokens]"),
    ("id-with-space", b'{"id": "a b", "tokens": ["x"]}\n', 1, "[id]"),
    ("image-not-a-path", b'{"id": "a", "tokens": ["x"], "image": 7}\n', 1, "[image]"),
    ("text-not-a-string", b'{"id": "a", "text": ["Kelvo", "Marn"]}\n', 1, "[text]"),
    ("tokens-of-numbers", b'{"id": "a", "tokens": ["x", 5]}\n', 1, "[tokens]"),
]  # fmt: skip

# Records given to the processor (the library path) go through the same checks as the CLI's
# JSON lines: (case id, record, fragment); the error names the tweet's position from 1.
BAD_RECORDS = [
    ("tokens-string", {"tokens": "Kelvo Marn"}, "[tokens]"),  # was one token per character
    ("tokens-none", {"tokens": None}, "[tokens]"),  # was a raw TypeError
    ("tokens-number", {"tokens": 5}, "[tokens]"),
    ("token-with-tab", {"tokens": ["a\tb"]}, "[tokens]"),
    ("empty-token", {"tokens": ["a", ""]}, "[tokens]"),
    ("text-none", {"text": None}, "[text]"),  # was the one token 'None'
    ("text-list", {"text": ["a", "b"]}, "[text]"),
    ("id-with-slash", {"id": "a/b", "tokens": ["x"]}, "[id]"),
    ("no-text", {"id": "a"}, "'tokens' or 'text'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("record", "fragment"), [c[1:] for c in BAD_RECORDS], ids=[c[0] for c in BAD_RECORDS]
)
def test_processor_records_are_checked_like_the_cli_input(record: dict, fragment: str) -> None:
    from mnerqg_graph.processing import to_sample

    good = to_sample({"tokens": ["Kelvo", "Marn"]}, 0)
    assert good.tweet.tokens == ["Kelvo", "Marn"] and good.tweet.id == "0"
    assert to_sample({"id": None, "text": "Kelvo, Marn"}, 4).tweet.id == "4"  # null: no id
    with pytest.raises(DataError) as err:
        to_sample(record, 2)
    assert str(err.value).startswith("<input>:3") and fragment in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("content", "line", "fragment"), [c[1:] for c in BAD_JSONL], ids=[c[0] for c in BAD_JSONL]
)
def test_predict_bad_jsonl_names_file_line_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    content: bytes,
    line: int,
    fragment: str,
) -> None:
    inp = write(tmp_path / "in.jsonl", content)
    out = tmp_path / "out.conll"
    result = predict_file(capsys, checkpoint, inp, out)
    assert_one_line_error(result, "predict", f"{inp}:{line}", fragment)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "in.jsonl"]


# (case id, options after --checkpoint, fragment): options that were ignored or ran on nothing
BAD_PREDICT_OPTIONS = [
    ("batch-size-0", ["--text", "Kelvo", "--batch-size", "0"], "--batch-size must be >= 1"),
    ("batch-size-negative", ["--text", "Kelvo", "--batch-size", "-1"], "--batch-size must be"),
    ("chunk-size-0", ["--input", "IN", "--chunk-size", "0"], "--chunk-size must be >= 1"),
    ("image-with-input", ["--input", "IN", "--image", "IN"], "--image goes with --text"),
    ("images-with-text", ["--text", "Kelvo", "--images", "."], "--images goes with --input"),
    ("images-misspelled", ["--input", "IN", "--images", "imagez"], "imagez: --images: no such"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("options", "fragment"),
    [c[1:] for c in BAD_PREDICT_OPTIONS],
    ids=[c[0] for c in BAD_PREDICT_OPTIONS],
)
def test_predict_and_visualize_refuse_options_they_would_ignore(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    options: list[str],
    fragment: str,
) -> None:
    inp = write(tmp_path / "in.jsonl", b'{"id": "a", "tokens": ["Kelvo"]}\n')
    given = {"IN": str(inp), "imagez": str(tmp_path / "imagez")}
    options = [given.get(o, o) for o in options]
    out = tmp_path / "out.jsonl"
    base = ["--checkpoint", str(checkpoint), "--device", "cpu"]
    result = run_cli(capsys, ["predict", *base, *options, "--output", str(out), "--no-progress"])
    assert_one_line_error(result, "predict", fragment)
    assert not out.exists()
    if "size" not in options[2]:  # visualize shares the input options and their checks
        viz = ["visualize", *base, *options, "--out", str(tmp_path / "viz")]
        assert_one_line_error(run_cli(capsys, viz), "visualize", fragment)
        assert not (tmp_path / "viz").exists()


def test_predict_malformed_conll_input_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], checkpoint: Path
) -> None:
    inp = write(tmp_path / "in.txt", b"IMGID:1\nKelvo\tO\n\nIMGID:2\nMarn\tB-LOC\tX\n")
    result = run_cli(
        capsys, ["predict", "--checkpoint", str(checkpoint), "--input", str(inp), "--no-progress"]
    )
    assert_one_line_error(result, "predict", f"{inp}:5: ", "3 TAB-separated columns")


def test_predict_jsonl_with_bom_crlf_empty_and_invisible_tweets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], checkpoint: Path
) -> None:
    records = [
        {"id": "a", "tokens": ["Kelvo", "visits", "Marn"]},
        {"id": "empty", "tokens": []},
        {"id": "invisible", "tokens": ["\u200b", "\ufe0f"]},
        {"id": "raw", "text": "Zed Corp, in Marn!"},
    ]
    body = "\r\n".join(json.dumps(r) for r in records) + "\r\n\r\n"
    inp = write(tmp_path / "in.jsonl", "\ufeff" + body)
    result = run_cli(
        capsys,
        ["predict", "--checkpoint", str(checkpoint), "--input", str(inp), "--device", "cpu",
         "--no-progress"],
    )  # fmt: skip
    assert result.code == 0, result.err
    out = [json.loads(line) for line in result.out.splitlines()]
    assert [r["id"] for r in out] == ["a", "empty", "invisible", "raw"]
    assert [len(r["tokens"]) for r in out] == [3, 0, 2, 6]
    assert out[1]["entities"] == [] and set(out[1]["boxes"]) == {"PER", "LOC", "ORG", "OTHER"}


def test_predict_images_unreadable_tiny_huge_and_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], checkpoint: Path
) -> None:
    images = tmp_path / "images"
    write_rgb(images / "ok.jpg")
    write(images / "text.jpg", "this is a text file, not a JPEG\n")
    write_rgb(images / "dot.png", size=(1, 1))
    write(images / "huge.jpg", huge_gray_jpeg(10_000, 10_000))
    ids = ["ok", "text", "dot", "huge", "missing"]
    inp = tmp_path / "in.jsonl"
    write(
        inp, "".join(json.dumps({"id": i, "tokens": ["Kelvo", "in", "Marn"]}) + "\n" for i in ids)
    )
    result = run_cli(
        capsys,
        ["predict", "--checkpoint", str(checkpoint), "--input", str(inp), "--images", str(images),
         "--device", "cpu", "--no-progress"],
    )  # fmt: skip
    assert result.code == 0, result.err
    assert [json.loads(line)["id"] for line in result.out.splitlines()] == ids
    warnings = [ln for ln in result.err_lines if ln.startswith("warning:")]
    assert len(warnings) == 1, result.err  # the text file; "missing" simply has no image
    assert str(images / "text.jpg") in warnings[0] and "text-only" in warnings[0]

    # --text with an --image that is not an image: the tweet runs text-only, with a warning.
    result = run_cli(
        capsys,
        ["predict", "--checkpoint", str(checkpoint), "--text", "Kelvo in Marn", "--image",
         str(images / "text.jpg"), "--device", "cpu"],
    )  # fmt: skip
    assert result.code == 0
    assert len(result.err_lines) == 1 and "text.jpg" in result.err and "text-only" in result.err
    assert json.loads(result.out)["tokens"] == ["Kelvo", "in", "Marn"]


# ------------------------------------------------------------------------------ checkpoints


def _edit_json(path: Path, changes: dict[str, Any]) -> None:
    """Set JSON values by dotted path (``{"graph.hidden_dim": 48}``: a section's field)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        *parents, name = key.split(".")
        target = data
        for part in parents:
            target = target[part]
        target[name] = value
    path.write_text(json.dumps(data), encoding="utf-8")


def _drop(path: Path) -> None:
    path.unlink()


CHECKPOINT_DAMAGE = [
    ("no-weights", lambda c: _drop(c / "model.safetensors"), "missing model.safetensors"),
    ("no-config", lambda c: _drop(c / "config.json"), "missing config.json"),
    ("no-queries", lambda c: _drop(c / "queries.json"), "missing queries.json"),
    ("no-encoder-config", lambda c: _drop(c / "text_encoder" / "config.json"),
     "missing text_encoder/config.json"),
    ("no-tokenizer", lambda c: _drop(c / "text_encoder" / "tokenizer.json"),
     "missing text_encoder/tokenizer.json"),
    ("hf-config", lambda c: shutil.copy(c / "text_encoder" / "config.json", c / "config.json"),
     "config_version None"),
    ("other-version", lambda c: _edit_json(c / "config.json", {"config_version": 3}),
     "config_version 3"),
    ("unknown-key", lambda c: _edit_json(c / "config.json", {"decoder_layers": 3}),
     "unknown model config keys ['decoder_layers']"),
    ("other-shapes", lambda c: _edit_json(c / "config.json", {"graph.hidden_dim": 48}),
     "weights do not match config.json"),
    ("other-encoder-shapes", lambda c: _edit_json(c / "text_encoder" / "config.json",
                                                  {"hidden_size": 48}),
     "weights do not match config.json"),
    ("wrong-type", lambda c: _edit_json(c / "config.json", {"graph.hidden_dim": "128"}),
     "graph.hidden_dim"),
    ("bad-heads", lambda c: _edit_json(c / "config.json", {"fusion.kwargs": {"heads": 3}}),
     "config.json"),
    ("unknown-fusion-option", lambda c: _edit_json(c / "config.json", {"fusion.kwargs": {"x": 1}}),
     "config.json"),
    ("unknown-fusion", lambda c: _edit_json(c / "config.json", {"fusion.name": "gcn9"}),
     "unknown fusion module 'gcn9'"),
    ("bad-scales", lambda c: _edit_json(c / "config.json", {"image.num_scales": 5}),
     "image.num_scales"),
    ("unknown-encoder-type", lambda c: _edit_json(c / "text_encoder" / "config.json",
                                                  {"model_type": "nope"}),
     "text_encoder"),
    ("other-types", lambda c: _edit_json(c / "config.json", {"types": ["PER", "LOC"]}),
     "differ from config types"),
    ("max-length-beyond-encoder",
     lambda c: _edit_json(c / "config.json", {"encoder.max_length": 1000}),
     "max_length 1000 exceeds the encoder's 256 positions"),
    ("truncated-weights",
     lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:999]),
     "model.safetensors: unreadable"),
    ("config-not-json", lambda c: (c / "config.json").write_text("{\"types\": [", "utf-8"),
     "config.json: cannot read model config"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [c[1:] for c in CHECKPOINT_DAMAGE],
    ids=[c[0] for c in CHECKPOINT_DAMAGE],
)
def test_damaged_or_foreign_checkpoint_is_one_line_naming_it(
    checkpoint: Path, capsys: pytest.CaptureFixture[str], damage: Any, fragment: str
) -> None:
    damage(checkpoint)
    result = run_cli(
        capsys,
        ["predict", "--checkpoint", str(checkpoint), "--text", "Kelvo in Marn", "--device", "cpu"],
    )
    assert_one_line_error(result, "predict", str(checkpoint), fragment)
    assert result.out == ""


def test_tokenizer_bigger_than_the_weights_is_refused(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tokenizer.json from another model would index past the embedding table."""
    tok_path = checkpoint / "text_encoder" / "tokenizer.json"
    tok = json.loads(tok_path.read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    for k in range(500):
        vocab[f"extra{k}"] = len(vocab)
    tok_path.write_text(json.dumps(tok), encoding="utf-8")
    result = run_cli(
        capsys,
        ["predict", "--checkpoint", str(checkpoint), "--text", "extra499 Kelvo", "--device", "cpu"],
    )
    assert_one_line_error(result, "predict", str(checkpoint), "tokenizer")


# ------------------------------------------------------------------------------ data sets


TRAIN = [
    Tweet("1", ["Kelvo", "visits", "Marn"], ["B-PER", "O", "B-LOC"]),
    Tweet("2", ["Zed", "Corp", "rocks"], ["B-ORG", "I-ORG", "O"]),
    Tweet("3", ["hi", "Kelvo", "\ufe0f"], ["O", "B-PER", "O"]),
    Tweet("4", ["in", "Marn", "now"], ["O", "B-LOC", "O"]),
    Tweet("4", ["again", "Marn"], ["O", "B-LOC"]),  # duplicate IMGID
    Tweet("5", [], []),  # empty tweet
    Tweet("6", ["Zed", "Corp", "and", "Kelvo"], ["B-MISC", "I-MISC", "O", "B-PER"]),
]
TEST = [TRAIN[0], Tweet("9", LONG.tokens, LONG.tags), TRAIN[3]]


def make_messy_dataset(root: Path) -> Path:
    """A usable data set with every oddity the readers accept (see :data:`TRAIN`)."""
    write_conll(root / "train.txt", TRAIN, newline="\r\n")  # CRLF
    write_conll(root / "valid.txt", TRAIN[:4], bom=True, trailing_blank=False)  # BOM
    write_conll(root / "test.txt", TEST)
    images = root / "images"
    write_rgb(images / "1.jpg")
    write(images / "2.jpg", "not an image\n")  # unreadable: text-only, counted
    write_rgb(images / "3.png", size=(1, 1))  # 1x1
    write(images / "4.jpg", huge_gray_jpeg(10_000, 10_000))  # 10,000 x 10,000
    write_rgb(images / "6.JPG", size=(64, 48))  # upper-case extension
    # 5 and 9 have no image
    write_voc(
        root / "boxes" / "1.xml",
        VocAnnotation(
            "1.jpg",
            40,
            30,
            [VocObject("Kelvo", Box(1, 1, 20, 25)), VocObject("Marn", Box(20, 5, 39, 29))],
        ),
    )
    write_voc(root / "boxes" / "3.xml", VocAnnotation("3.png", 1, 1, [
        VocObject("Kelvo", Box(0, 0, 1, 1))]))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_messy_dataset(tmp_path_factory.mktemp("messy") / "ds")


def test_check_data_on_a_messy_but_usable_folder(
    messy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_cli(capsys, ["check-data", str(messy), "--json"])
    assert result.code == 0, result.out
    report = json.loads(result.out)
    assert report["ok"]
    train = report["splits"]["train"]
    assert (train["tweets"], train["tokens"]) == (7, 18)
    assert train["images"] == {
        "folder": str(messy / "images"), "with_image": 5, "missing": 1, "unreadable": 1,
    }  # fmt: skip
    assert report["splits"]["test"]["tokens"] == 3 + 1000 + 3
    problems = [(p["path"], p["line"], p["message"]) for p in report["problems"]]
    train_txt = str(messy / "train.txt")
    assert any(
        p[:2] == (train_txt, 21) and "duplicate IMGID 4 (first at line 16)" in p[2]
        for p in problems
    ), problems
    assert any(p[:2] == (train_txt, 25) and "no tokens" in p[2] for p in problems), problems
    unreadable = [p for p in problems if p[0] == str(messy / "images" / "2.jpg")]
    assert report["splits"]["valid"]["images"]["unreadable"] == 1  # tweet 2 is in valid too
    assert len(unreadable) == 2 and all("text-only" in p[2] for p in unreadable)
    # the huge and the 1x1 images are fine; CRLF and BOM are no problem at all
    assert not [p for p in problems if "4.jpg" in p[0] or "3.png" in p[0]]
    assert not [p for p in problems if "CRLF" in p[2] or "BOM" in p[2]]
    assert all(not p["fatal"] for p in report["problems"])


def test_check_data_box_with_xmin_after_xmax_is_fatal_and_named(
    messy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(shutil.copytree(messy, tmp_path / "ds"))
    xml = root / "boxes" / "1.xml"
    text = xml.read_text(encoding="utf-8")
    xml.write_text(text.replace("<xmin>1</xmin>", "<xmin>30</xmin>", 1), encoding="utf-8")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "<xmin>1</xmin>" in ln)
    result = run_cli(capsys, ["check-data", str(root)])
    assert result.code == 1
    last = result.out.splitlines()[-1]
    assert last.startswith("FAILED: 3 fatal problem(s)")  # tweet 1 is in the three splits
    assert f"{xml}:{line}: [object[1]/bndbox/xmin] box of 'Kelvo': xmin 30 >= xmax 20" in last


# ------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def messy_run(messy: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """One `fast` training run on the messy data set (about ten seconds on a CPU)."""
    from experiments.train import ex

    out = tmp_path_factory.mktemp("messy_run") / "out"
    run = ex.run(
        named_configs=["fast"],
        config_updates={
            "data": {"name": "folder", "root": str(messy)},
            "output_dir": str(out),
            "save_artifacts": False,
            "seed": 1,
        },
        options={"--capture": "sys"},  # keep the log in run.captured_out
    )
    return run, out


def test_training_on_messy_data_reports_fallbacks_and_keeps_every_gold_entity(
    messy: Path, messy_run: tuple[Any, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run, out = messy_run
    assert run.status == "COMPLETED"
    log = run.captured_out
    # the unreadable image and the missing ones are counted, per split
    assert re.search(r"\[train\].*1 unreadable", log), log
    assert re.search(r"\[train\].*1 missing", log), log
    # the 1,000-token test tweet is truncated, and said so
    assert re.search(r"\[test\].*1 truncated", log), log
    pred = out / "work" / "predictions" / "predictions.conll"
    result = run_cli(
        capsys, ["evaluate", "--gold", str(messy / "test.txt"), "--pred", str(pred), "--json"]
    )
    assert result.code == 0, result.err
    assert json.loads(result.out)["micro"]["support"] == n_entities(TEST)
    assert [len(t.tokens) for t in read_conll(pred).tweets] == [3, 1000, 3]
    assert (out / "checkpoint" / "model.safetensors").is_file()


def _broken(messy: Path, tmp_path: Path, name: str, content: bytes | str) -> Path:
    root = Path(shutil.copytree(messy, tmp_path / "ds"))
    write(root / name, content)
    return root


def _train_error(capsys: pytest.CaptureFixture[str], root: Path) -> str:
    """Run the `fast` experiment on ``root``: it must stop with exit 2 and one error line."""
    from experiments.train import ex

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        ex.run(
            named_configs=["fast"], config_updates={"data": {"name": "folder", "root": str(root)}}
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    ours = [ln for ln in err.splitlines() if ln.strip() and not SACRED_LOG.match(ln)]
    assert len(ours) == 1, err
    assert ours[0].startswith("experiments.train: error: "), ours[0]
    return ours[0]


@pytest.mark.parametrize(
    ("name", "content", "where", "fragment"),
    [
        ("train.txt", b"IMGID:1\nKelvo\tB-PER\tNNP\n", "2: ", "3 TAB-separated"),
        ("valid.txt", b"IMGID:1\nK\xe9lvo\tB-PER\n", "2: ", "not UTF-8"),
        ("test.txt", b"IMGID:1\nKelvo\tB-PER\nvisits\tB-EVENT\n", "3: ", "EVENT"),
        ("boxes/1.xml", b"<annotation><filename>1.jpg</filename><size><width>40</width>"
         b"<height>30</height></size><object><name>Kelvo</name><bndbox><xmin>30</xmin>"
         b"<ymin>1</ymin><xmax>10</xmax><ymax>9</ymax></bndbox></object></annotation>",
         "1: [object[1]/bndbox/xmin]", "xmin 30 >= xmax 10"),
    ],
    ids=["three-columns", "non-utf8", "unknown-entity-type", "xmin-after-xmax"],
)  # fmt: skip
def test_training_on_bad_data_is_one_line_naming_file_and_line(
    messy: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes,
    where: str,
    fragment: str,
) -> None:
    root = _broken(messy, tmp_path, name, content)
    line = _train_error(capsys, root)
    assert f"{root / name}:{where}" in line and fragment in line, line


def test_mnerqg_train_command_on_bad_data_is_one_line(
    messy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _broken(messy, tmp_path, "train.txt", b"IMGID:1\nKelvo B-PER\n")
    capsys.readouterr()
    from mnerqg_graph.cli import main

    code = main(["train", "-u", "with", "fast", "data.name=folder", f"data.root={root}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    ours = [ln for ln in err.splitlines() if ln.strip() and not SACRED_LOG.match(ln)]
    assert ours == [
        f"experiments.train: error: {root}/train.txt:2: token line without a TAB: "
        "'Kelvo B-PER' (token and tag separated by spaces, not a TAB)"
    ], err


def test_readers_raise_data_error_not_os_errors(tmp_path: Path) -> None:
    """Folders and missing files given where a file is expected are DataErrors too."""
    (tmp_path / "dir.txt").mkdir()
    for path in (tmp_path / "dir.txt", tmp_path / "absent.txt"):
        with pytest.raises(DataError, match=re.escape(str(path))):
            read_conll(path)
