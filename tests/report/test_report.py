"""``mnerqg report``: the page's data is what predict and evaluate say; text-only; errors."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from mnerqg_graph.data.tags import spans_from_tags
from mnerqg_graph.metrics import error_breakdown
from mnerqg_graph.report import extract_data
from tests.report.conftest import Built


def _predict(built: Built, tmp_path: Path, suffix: str) -> Path:
    from mnerqg_graph.predict import main

    out = tmp_path / f"pred{suffix}"
    argv = ["--checkpoint", str(built.checkpoint), "--input", str(built.root / "valid.txt")]
    argv += ["--images", str(built.root / "images"), "--output", str(out), "--no-progress"]
    argv += ["--device", "cpu"]
    assert main(argv) == 0
    return out


def test_page_data_is_what_predict_and_evaluate_say(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnerqg_graph.metrics import main as evaluate

    tweets = built.data["tweets"]
    records = [
        json.loads(line) for line in _predict(built, tmp_path, ".jsonl").read_text().splitlines()
    ]
    assert [t["id"] for t in tweets] == [r["id"] for r in records] and len(tweets) == 14
    for t, r in zip(tweets, records, strict=True):
        assert t["tokens"] == r["tokens"]
        assert t["entities"] == r["entities"], t["id"]  # span, type, text and score
        assert t["boxes"] == r["boxes"], t["id"]  # per type: box in pixels and confidence
    n_pred = sum(len(t["entities"]) for t in tweets)
    assert n_pred > 0, "the tiny model should predict some entities"

    conll = _predict(built, tmp_path, ".conll")
    capsys.readouterr()
    assert evaluate(["--gold", str(built.root / "valid.txt"), "--pred", str(conll), "--json"]) == 0
    assert built.data["scores"]["entity"] == json.loads(capsys.readouterr().out)
    summary = built.data["scores"]["summary"]
    micro = built.data["scores"]["entity"]["micro"]
    assert summary["f1"] == micro["f1"]
    assert {"grounding_acc", "none_acc", "grounded_f1", "ambiguous_f1"} <= set(summary)

    # error kinds of each tweet, against the breakdown of its own gold and predicted tags
    pred_tags = [
        [tag for _, tag in (line.split("\t") for line in block.splitlines()[1:])]
        for block in conll.read_text().strip().split("\n\n")
    ]
    gold_tags = [
        [tag for _, tag in (line.split("\t") for line in block.splitlines()[1:])]
        for block in (built.root / "valid.txt").read_text().strip().split("\n\n")
    ]
    seen: set[str] = set()
    for t, g, p in zip(tweets, gold_tags, pred_tags, strict=True):
        e = error_breakdown([g], [p])
        expected = {
            "correct": e.correct,
            "missed": e.unseen,
            "wrong_type": e.wrong_type,
            "boundary": e.boundary,
            "spurious": e.spurious,
        }
        assert set(t["kinds"]) == {k for k, n in expected.items() if n}, t["id"]
        assert [(x["start"], x["end"], x["type"]) for x in t["gold"]] == [
            (s.start, s.end, s.type) for s in sorted(spans_from_tags(g))
        ]
        assert len(t["pred_kinds"]) == len(t["entities"])
        seen |= set(t["kinds"])
    assert {"missed", "spurious", "boundary"} <= seen  # the filters have something to show

    # the confusion table: rows sum to the gold support, columns to the predictions
    conf = built.data["scores"]["confusion"]
    counts = conf["counts"]
    per_type = built.data["scores"]["entity"]["per_type"]
    for i, r in enumerate(conf["rows"][:-1]):
        assert sum(counts[i]) == (per_type[r]["support"] if r in per_type else 0), r
        assert counts[i][conf["cols"].index(r)] == round(
            per_type.get(r, {}).get("recall", 0) * per_type.get(r, {}).get("support", 0)
        )
    for j, c in enumerate(conf["cols"][:-1]):
        assert sum(row[j] for row in counts) == sum(
            1 for t in tweets for x in t["entities"] if x["type"] == c
        )
    assert sum(counts[i][i] for i in range(len(conf["rows"]) - 1)) == round(
        micro["recall"] * micro["support"]
    )


def test_page_embeds_images_boxes_and_alignments(built: Built) -> None:
    meta = built.data["meta"]
    assert meta["image_branch"] and meta["attention"] and meta["grids"] == [[1, 1], [2, 2], [4, 4]]
    n_regions = sum(r * c for r, c in meta["grids"])
    with_image = [t for t in built.data["tweets"] if t["image"]]
    assert with_image and meta["n_images"] == len(with_image)
    t = with_image[0]
    head, _, b64 = t["image"].partition(",")
    assert head == "data:image/jpeg;base64"
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        assert im.format == "JPEG" and max(im.size) <= 320
    assert t["size"] == [48, 48]
    assert any(t["gold_boxes"] for t in with_image)
    for ty, g in t["graphs"].items():
        assert g["query"] == g["nodes"] and g["nodes"], ty
        assert len(g["start"]) == len(g["end"]) == len(g["nodes"])
        # the query's attention over its tokens (hetero_gat: one softmax per relation)
        assert len(g["query_weight"]) == len(g["query"])
        assert sum(g["query_weight"]) == pytest.approx(1.0, abs=1e-3)
        raw = base64.b64decode(g["attn"])
        assert len(raw) == len(g["nodes"]) * n_regions
        assert len(g["amax"]) == len(g["nodes"]) and len(g["amax"][0]) == 3
        assert max(raw) == 255  # every (node, scale) block is scaled to its maximum
    no_image = [t for t in built.data["tweets"] if not t["image"]]
    for t in no_image:
        for g in t["graphs"].values():
            assert g["attn"] is None and g["query"]
            assert len(g["query_weight"]) == len(g["query"]) and min(g["query_weight"]) > 0


def test_page_graphs_are_explains_alignments(built: Built) -> None:
    """Every graph of the page is ``explain``'s alignment of its (tweet, type), weights included."""
    import numpy as np

    from mnerqg_graph.data.dataset import load_split
    from mnerqg_graph.predict import Predictor
    from mnerqg_graph.viz.alignment import explain

    predictor = Predictor(str(built.checkpoint), "cpu")
    valid = load_split(built.root, "valid", strict=False).samples
    expl = explain(predictor.model, predictor.processor, valid)
    tweets = built.data["tweets"]
    n_regions = sum(r * c for r, c in built.data["meta"]["grids"])
    assert [e.tweet_id for e in expl] == [t["id"] for t in tweets]
    for e, t in zip(expl, tweets, strict=True):
        assert list(t["graphs"]) == e.types
        for ty, al in e.alignments.items():
            g = t["graphs"][ty]
            assert g["nodes"] == [tok.position for tok in al.tokens], (t["id"], ty)
            assert g["query"] == al.query_token.tolist()
            np.testing.assert_allclose(g["query_weight"], al.query_weight, rtol=1e-3, atol=1e-6)
            np.testing.assert_allclose(g["start"], al.token_start, rtol=0, atol=1e-3)
            np.testing.assert_allclose(g["end"], al.token_end, rtol=0, atol=1e-3)
            assert g["note"] == al.note()
            if not al.num_edges:
                assert g["attn"] is None
                continue
            # the token-region weights, back from their bytes: within half a step of the byte
            raw = np.frombuffer(base64.b64decode(g["attn"]), np.uint8).astype(np.float64)
            raw = raw.reshape(len(al.tokens), n_regions)
            scale = np.asarray([r.scale - 1 for r in al.regions])
            amax = np.asarray(g["amax"])[:, scale]
            row = {tok.position: k for k, tok in enumerate(al.tokens)}
            rows = np.asarray([row[int(p)] for p in al.edge_token])
            got = raw[rows, al.edge_region] / 255 * amax[rows, al.edge_region]
            step = amax[rows, al.edge_region] / 255
            assert np.all(np.abs(got - al.edge_weight) <= step / 2 + 1e-6 + 1e-4 * al.edge_weight)


@pytest.mark.parametrize("model", ["hetero_gat", "none"])
def test_text_only_data_still_draws_query_token_graphs(
    built: Built, tmp_path: Path, model: str
) -> None:
    """Real data has no images: every graph still has its query-token edges."""
    from benchmarks.report_page import tiny_checkpoint
    from mnerqg_graph.data.dataset import load_split
    from mnerqg_graph.report.cli import main

    text_only = tmp_path / "text"
    text_only.mkdir()
    shutil.copy(built.root / "valid.txt", text_only / "valid.txt")
    ckpt = built.checkpoint
    if model == "none":
        train = load_split(built.root, "train").samples
        ckpt = tiny_checkpoint([s.tweet.tokens for s in train], tmp_path / "ck", use_image=False)
    page = tmp_path / "r.html"
    argv = ["--checkpoint", str(ckpt), "--data", str(text_only), "--out", str(page)]
    assert main([*argv, "--limit", "5", "--device", "cpu"]) == 0
    data = extract_data(page.read_text(encoding="utf-8"))
    assert len(data["tweets"]) == 5 and data["meta"]["n_images"] == 0
    assert "grounding_acc" not in data["scores"]["summary"]
    assert data["meta"]["image_branch"] is (model != "none")
    for t in data["tweets"]:
        assert t["image"] is None and t["gold_boxes"] == {}
        for g in t["graphs"].values():
            assert g["query"] and g["query"] == g["nodes"] and g["attn"] is None
            assert all(0.0 <= p <= 1.0 for p in g["start"] + g["end"])
            assert "text side only" in g["note"]
            if model == "none":  # no attention at all: the edges carry no weight
                assert g["query_weight"] == []
            else:  # the query's attention over the tweet's tokens weighs its edges
                assert len(g["query_weight"]) == len(g["query"])
                assert sum(g["query_weight"]) == pytest.approx(1.0, abs=1e-3)


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    from mnerqg_graph.cli import main

    assert main(["report", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mnerqg report: error:"), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


def test_errors_are_one_line_naming_the_path(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out", str(tmp_path / "r.html")]
    ok = ["--checkpoint", str(built.checkpoint), "--data", str(built.root)]
    missing = tmp_path / "no-checkpoint"
    _one_line_error(["--checkpoint", str(missing), "--data", str(built.root), *out], capsys,
                    str(missing))  # fmt: skip
    _one_line_error(
        ["--checkpoint", str(built.checkpoint), "--data", str(tmp_path / "nodata"), *out],
        capsys,
        str(tmp_path / "nodata"),
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.txt").write_text("")
    _one_line_error(
        ["--checkpoint", str(built.checkpoint), "--data", str(empty), "--split", "test", *out],
        capsys,
        str(empty),
        "test.txt",
    )
    _one_line_error([*ok, *out, "--limit", "0"], capsys, "--limit", "0")
    _one_line_error([*ok, *out, "--split", "nope"], capsys, "nope")
    _one_line_error([*ok, "--out", str(tmp_path)], capsys, str(tmp_path))
    assert not (tmp_path / "r.html").exists()


def test_report_help_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from mnerqg_graph.cli import main\n"
        "try:\n    main(['report', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--checkpoint" in result.stdout and "--limit" in result.stdout


def test_tweet_text_cannot_break_out_of_the_page(tmp_path: Path) -> None:
    from mnerqg_graph.report.html import embed_json, render_html

    nasty = "</script><script>alert(1)</script><!-- & \u2028"
    data = {"version": 1, "meta": {"split": nasty}, "scores": {}, "tweets": [{"id": nasty}]}
    page = render_html(data)
    assert page.count("</script>") == 2  # the data block and the script, nothing else
    assert "<!--" not in page.split('id="report-data">', 1)[1]
    assert extract_data(page) == data
    assert json.loads(embed_json(data)) == data
    assert "&lt;/script&gt;" in page.split("<title>", 1)[1].split("</title>", 1)[0]


@pytest.mark.parametrize(
    "options",
    [
        {"heads": {"tag_head": True}, "decoding": {"decoder": "tags"}},
        {"encoder": {"query_encoding": "packed"}},
    ],
    ids=["tags-decoder", "packed-queries"],
)
def test_any_decoder_and_query_encoding_gives_the_entities_of_predict(
    built: Built, tmp_path: Path, options: dict[str, dict[str, object]]
) -> None:
    from benchmarks.report_page import tiny_checkpoint
    from mnerqg_graph.data.dataset import load_split
    from mnerqg_graph.predict import Predictor
    from mnerqg_graph.report import build_report_data

    train = load_split(built.root, "train").samples
    valid = load_split(built.root, "valid").samples[:8]
    ckpt = tiny_checkpoint([s.tweet.tokens for s in train], tmp_path / "ck", **options)
    predictor = Predictor(str(ckpt), "cpu")
    for section, values in options.items():
        for key, value in values.items():
            assert getattr(getattr(predictor.model.config, section), key) == value
    data = build_report_data(predictor.model, predictor.processor, valid)
    records = predictor.predict(valid)
    assert [t["entities"] for t in data["tweets"]] == [r["entities"] for r in records]
    assert [t["boxes"] for t in data["tweets"]] == [r["boxes"] for r in records]
    assert sum(len(r["entities"]) for r in records) > 0  # the equality is not of empty lists
    assert data["meta"]["decoder"] == predictor.model.config.decoding.decoder
    for t in data["tweets"]:
        assert all(g["query"] == g["nodes"] and g["nodes"] for g in t["graphs"].values())
