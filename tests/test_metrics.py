"""Entity P/R/F1 (against seqeval), file evaluation, the evaluate command, grounding metrics."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnerqg_graph.data.conll import write_conll
from mnerqg_graph.data.types import Box, Span, Tweet
from mnerqg_graph.errors import DataError
from mnerqg_graph.metrics import (
    EntityScores,
    box_iou,
    entity_prf,
    evaluate_files,
    grounded_f1,
    grounding_accuracy,
    main,
)

seqeval_metrics = pytest.importorskip("seqeval.metrics")

TYPES = ["PER", "LOC", "ORG", "OTHER", "MISC"]
TAGS = ["O"] + [f"{p}-{t}" for t in TYPES for p in ("B", "I")]


def _seqeval_input(seqs: list[list[str]]) -> list[list[str]]:
    """Rename MISC to OTHER for seqeval, which does not know they are one type."""
    return [[t.replace("MISC", "OTHER") for t in s] for s in seqs]


def _tags(raw: bytes) -> list[str]:
    return [TAGS[b % len(TAGS)] for b in raw]


@st.composite
def gold_and_pred(draw: st.DrawFn) -> tuple[list[list[str]], list[list[str]]]:
    """Random gold sequences (stray I-, type switches, MISC) and predictions derived from them.

    Tags are drawn as bytes (one draw per sequence keeps thousands of sequences fast).
    """
    gold, pred = [], []
    for _ in range(draw(st.integers(1, 16))):
        g = _tags(draw(st.binary(max_size=12)))
        mode = draw(st.integers(0, 2))  # 0: copy, 1: mutate, 2: independent
        if mode == 2:
            p = _tags(draw(st.binary(min_size=len(g), max_size=len(g))))
        else:
            p = list(g)
            if mode == 1 and g:
                edits = draw(st.binary(min_size=2, max_size=6))
                for pos, value in zip(edits[::2], edits[1::2], strict=False):
                    p[pos % len(g)] = TAGS[value % len(TAGS)]
        gold.append(g)
        pred.append(p)
    return gold, pred


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # ~2,500 sequence pairs
@given(gold_and_pred())
def test_entity_prf_agrees_with_seqeval(data: tuple[list[list[str]], list[list[str]]]) -> None:
    gold, pred = data
    scores = entity_prf(gold, pred)
    y_true, y_pred = _seqeval_input(gold), _seqeval_input(pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on 0/0 and then returns 0, as we do
        micro = (
            seqeval_metrics.precision_score(y_true, y_pred),
            seqeval_metrics.recall_score(y_true, y_pred),
            seqeval_metrics.f1_score(y_true, y_pred),
        )
        has_entities = scores.micro.gold or scores.micro.predicted
        report = (
            seqeval_metrics.classification_report(y_true, y_pred, output_dict=True)
            if has_entities
            else {}
        )
    ours = (scores.micro.precision, scores.micro.recall, scores.micro.f1)
    assert ours == pytest.approx(micro, abs=1e-9)
    per_type = {k: v for k, v in report.items() if not k.endswith(" avg")}
    assert set(scores.per_type) == set(per_type)
    for name, prf in scores.per_type.items():
        theirs = per_type[name]
        assert prf.precision == pytest.approx(theirs["precision"], abs=1e-9)
        assert prf.recall == pytest.approx(theirs["recall"], abs=1e-9)
        assert prf.f1 == pytest.approx(theirs["f1-score"], abs=1e-9)
        assert prf.support == theirs["support"]
    if has_entities:
        assert scores.micro.support == report["micro avg"]["support"]
    for value in (*ours, *(p.f1 for p in scores.per_type.values())):
        assert 0.0 <= value <= 1.0


def test_stray_inside_tag_counts_as_an_entity_and_misc_is_other() -> None:
    gold = [["O", "O", "I-LOC"], ["B-MISC", "I-MISC"]]
    pred = [["O", "O", "B-LOC"], ["B-OTHER", "I-OTHER"]]
    scores = entity_prf(gold, pred)
    assert scores.micro.correct == 2 and scores.micro.f1 == 1.0
    assert list(scores.per_type) == ["LOC", "OTHER"]


def test_no_predictions_and_no_gold_give_zero() -> None:
    scores = entity_prf([["B-PER", "O"]], [["O", "O"]])
    assert (scores.micro.precision, scores.micro.recall, scores.micro.f1) == (0.0, 0.0, 0.0)
    empty = entity_prf([["O"]], [["O"]])
    assert empty.to_dict() == {
        "micro": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
        "per_type": {},
    }


def test_entity_prf_refuses_misaligned_input() -> None:
    with pytest.raises(ValueError, match="2 gold sequences but 1"):
        entity_prf([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sequence 0: 2 gold tags but 1"):
        entity_prf([["O", "O"]], [["O"]])
    with pytest.raises(ValueError):
        entity_prf([["X"]], [["O"]])


# ----------------------------------------------------------------------------- files


GOLD = [
    Tweet("1", ["George", "Zimmerman", "in", "Paris"], ["B-PER", "I-PER", "O", "B-LOC"]),
    Tweet("2", ["St", ".", "Louis", "Rams"], ["O", "O", "I-LOC", "B-ORG"]),
]


def _files(tmp_path: Path, pred: list[Tweet]) -> tuple[Path, Path]:
    write_conll(tmp_path / "gold.txt", GOLD)
    write_conll(tmp_path / "pred.txt", pred)
    return tmp_path / "gold.txt", tmp_path / "pred.txt"


def _pred(*tags: list[str]) -> list[Tweet]:
    return [Tweet(g.id, list(g.tokens), list(t)) for g, t in zip(GOLD, tags, strict=True)]


def test_evaluate_files(tmp_path: Path) -> None:
    gold, pred = _files(
        tmp_path, _pred(["B-PER", "I-PER", "O", "B-ORG"], ["O", "O", "B-LOC", "B-ORG"])
    )
    scores = evaluate_files(gold, pred)
    assert (scores.micro.correct, scores.micro.predicted, scores.micro.gold) == (3, 4, 4)
    assert scores.per_type["LOC"].recall == 0.5 and scores.per_type["ORG"].precision == 0.5


@pytest.mark.parametrize(
    ("pred", "line", "words"),
    [
        (
            [Tweet("1", GOLD[0].tokens, GOLD[0].tags), Tweet("3", GOLD[1].tokens, GOLD[1].tags)],
            7,
            "IMGID 3 where the gold file has 2",
        ),
        ([Tweet("1", GOLD[0].tokens[:3], GOLD[0].tags[:3])], 1, "has 3 tokens, the gold file 4"),
        (
            [Tweet("1", ["George", "Zimmermann", "in", "Paris"], GOLD[0].tags)],
            3,
            "token 'Zimmermann' where the gold file has 'Zimmerman'",
        ),
        ([GOLD[0]], None, "1 tweets, the gold file"),
    ],
)
def test_evaluate_files_names_the_first_mismatch(
    tmp_path: Path, pred: list[Tweet], line: int | None, words: str
) -> None:
    gold, pred_path = _files(tmp_path, pred)
    with pytest.raises(DataError) as info:
        evaluate_files(gold, pred_path)
    assert info.value.path == str(pred_path) and info.value.line == line
    assert words in str(info.value)


def test_evaluate_command_json_and_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gold, pred = _files(tmp_path, _pred(GOLD[0].tags, ["O", "O", "O", "B-ORG"]))
    assert main(["--gold", str(gold), "--pred", str(pred), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    data = json.loads(out)
    assert data["micro"] == pytest.approx(
        {"precision": 1.0, "recall": 0.75, "f1": 6 / 7, "support": 4}, abs=1e-12
    )
    assert list(data["per_type"]) == ["PER", "LOC", "ORG"]
    assert data["per_type"]["LOC"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}, abs=1e-12
    )
    assert main(["--gold", str(gold), "--pred", str(pred)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["type", "precision", "recall", "f1", "support"]
    assert table[-1].split() == ["micro", "100.00", "75.00", "85.71", "4"]


def test_evaluate_command_on_a_bad_file_raises_a_one_line_error(tmp_path: Path) -> None:
    gold, _ = _files(tmp_path, GOLD)
    bad = tmp_path / "bad.txt"
    bad.write_text("IMGID:1\nGeorge B-PER\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.txt:2: token line without a TAB"):
        main(["--gold", str(gold), "--pred", str(bad)])


def test_entity_scores_order_types_canonically() -> None:
    scores = entity_prf([["B-ZED", "B-OTHER", "B-PER", "B-ALPHA"]], [["O"] * 4])
    assert list(scores.per_type) == ["PER", "OTHER", "ALPHA", "ZED"]
    assert isinstance(scores, EntityScores)


# ----------------------------------------------------------------------------- grounding


def test_box_iou() -> None:
    a = Box(0, 0, 10, 10)
    assert box_iou(a, a) == 1.0
    assert box_iou(a, Box(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou(a, Box(10, 10, 20, 20)) == 0.0  # touching corners
    assert box_iou(a, Box(20, 20, 30, 30)) == 0.0
    assert box_iou(Box(1, 1, 1, 1), Box(1, 1, 1, 1)) == 0.0  # empty union
    assert box_iou(a, Box(2, 2, 4, 4)) == pytest.approx(4 / 100)
    assert box_iou(Box(0, 0, 4, 4), Box(2, 2, 6, 6)) == box_iou(Box(2, 2, 6, 6), Box(0, 0, 4, 4))


def test_grounding_accuracy() -> None:
    g = Box(0, 0, 10, 10)
    gold = [[g], [g, Box(50, 50, 60, 60)], [g], [], [], [g]]
    pred = [
        Box(0, 0, 10, 12),  # IoU 100/120: right
        Box(50, 50, 61, 60),  # matches the second gold box: right
        Box(5, 0, 15, 10),  # IoU 1/3: wrong
        None,  # "not in the image", right
        Box(0, 0, 1, 1),  # a box where there is none: wrong
        None,  # no box where there is one: wrong
    ]
    scores = grounding_accuracy(gold, pred)
    assert (scores.grounded_correct, scores.grounded_total) == (2, 4)
    assert (scores.none_correct, scores.none_total) == (1, 2)
    assert scores.accuracy == 0.5 and scores.none_accuracy == 0.5
    assert scores.overall_accuracy == 0.5
    assert grounding_accuracy(gold, pred, iou_threshold=0.3).grounded_correct == 3
    assert grounding_accuracy([], []).to_dict()["accuracy"] == 0.0
    with pytest.raises(ValueError):
        grounding_accuracy(gold, pred[:-1])


def test_grounded_f1() -> None:
    box = Box(0, 0, 10, 10)
    per, loc, org = Span(0, 2, "PER"), Span(3, 4, "LOC"), Span(5, 6, "ORG")
    gold = [{per: [box], loc: []}, {org: [box]}]
    pred_spans = [[per, loc, Span(7, 8, "PER")], [org]]
    pred_boxes: list[dict[str, Box | None]] = [
        {"PER": Box(0, 0, 10, 11), "LOC": None},  # PER box right, LOC rightly none
        {"ORG": None},  # ORG said not in the image: wrong
    ]
    scores = grounded_f1(gold, pred_spans, pred_boxes)
    assert (scores.micro.correct, scores.micro.predicted, scores.micro.gold) == (2, 4, 3)
    assert scores.per_type["ORG"].correct == 0 and scores.per_type["PER"].predicted == 2
    # A LOC box where the entity has none makes the LOC entity wrong.
    wrong = grounded_f1(gold, pred_spans, [{"PER": box, "LOC": box}, {"ORG": box}])
    assert wrong.per_type["LOC"].correct == 0 and wrong.per_type["ORG"].correct == 1
    # A missing type in the mapping counts as "none".
    assert grounded_f1(gold[:1], [[loc]], [{}]).micro.correct == 1
    assert math.isclose(scores.micro.f1, 2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    with pytest.raises(ValueError):
        grounded_f1(gold, pred_spans, pred_boxes[:1])


def test_error_breakdown_puts_every_entity_in_one_class() -> None:
    """Every entity lands in exactly one error class; totals agree with entity_prf's counts."""
    from mnerqg_graph.metrics import error_breakdown

    gold = [
        ["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "O", "O"],
        ["B-MISC", "O", "O"],
    ]
    pred = [
        # PER right; LOC as ORG (same span); ORG cut at another boundary; spurious at 7
        ["B-PER", "I-PER", "O", "B-ORG", "O", "B-ORG", "I-ORG", "B-LOC"],
        ["O", "O", "O"],  # the MISC (OTHER) entity unseen
    ]
    e = error_breakdown(gold, pred)
    assert (e.correct, e.wrong_type, e.boundary, e.unseen) == (1, 1, 1, 1)
    assert (e.overlapping, e.spurious) == (2, 1)
    assert e.confusions == {("LOC", "ORG"): 1} and e.unseen_by_type == {"OTHER": 1}
    scores = entity_prf(gold, pred).micro
    assert (e.gold, e.predicted, e.correct) == (scores.gold, scores.predicted, scores.correct)
    with pytest.raises(ValueError, match="sequence 1"):
        error_breakdown(gold, [pred[0], ["O"]])


def test_entity_kinds_name_each_entity_of_a_tweet() -> None:
    """Per-entity kinds (what ``mnerqg report`` filters by) agree with the breakdown's counts."""
    from mnerqg_graph.data.tags import spans_from_tags
    from mnerqg_graph.metrics import entity_kinds, error_breakdown

    gold = ["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "O", "O", "B-PER"]
    pred = ["B-PER", "I-PER", "O", "B-ORG", "O", "B-ORG", "I-ORG", "B-LOC", "O"]
    gk, pk = entity_kinds(spans_from_tags(gold), spans_from_tags(pred))
    assert gk == {
        Span(0, 2, "PER"): "correct",
        Span(3, 4, "LOC"): "wrong_type",
        Span(5, 6, "ORG"): "boundary",
        Span(8, 9, "PER"): "unseen",
    }
    assert pk == {
        Span(0, 2, "PER"): "correct",
        Span(3, 4, "ORG"): "wrong_type",
        Span(5, 7, "ORG"): "boundary",
        Span(7, 8, "LOC"): "spurious",
    }
    e = error_breakdown([gold], [pred])
    assert (e.correct, e.wrong_type, e.boundary, e.unseen) == (1, 1, 1, 1)
    assert (e.overlapping, e.spurious) == (2, 1)
    assert entity_kinds([], []) == ({}, {})


def test_grounded_f1_asks_no_box_of_a_tweet_without_an_image() -> None:
    """A box file whose image is missing: no box is asked of the tweet.

    The tweet is text-only for the model and for ``grounding_acc``; ``grounded_f1`` used to
    demand its box, so its entities could never count.
    """
    from pathlib import Path

    from mnerqg_graph.data.types import Box, Sample, Span, Tweet
    from mnerqg_graph.decoding import Predictions
    from mnerqg_graph.evaluation import score_predictions

    span = Span(0, 1, "PER")
    box = Box(0.0, 0.0, 10.0, 10.0)
    seen = Sample(Tweet("a", ["Kelvo"], ["B-PER"]), Path("a.jpg"), (20, 20), {span: [box]})
    blind = Sample(Tweet("b", ["Kelvo"], ["B-PER"]), None, None, {span: [box]})
    preds = Predictions(
        spans=[[(span, 0.9)], [(span, 0.9)]],
        tags=[["B-PER"], ["B-PER"]],
        boxes=[{"PER": ([0.0, 0.0, 10.0, 10.0], 0.8)}, {}],
        grounding_conf=[{"PER": 0.8}, {}],
        samples=[seen, blind],
    )
    scores = score_predictions([seen, blind], preds, ["PER"])
    assert scores["f1"] == 1.0 and scores["grounding_acc"] == 1.0
    assert scores["grounded_f1"] == 1.0  # was 0.5: the blind tweet's entity never counted
