"""Evaluation: entity P/R/F1 as the literature counts it, query grounding, grounded NER.

Entity scores (:func:`entity_prf`) count entities exactly as conlleval and seqeval's default mode
do: spans come from :func:`mnerqg_graph.data.tags.spans_from_tags` (an ``I-`` with no ``B-``
starts an entity), a predicted entity is correct when its start, end and type equal a gold
entity's, and ``MISC`` is ``OTHER``. Scores are micro-averaged over entities; a ratio with a zero
denominator is 0 (seqeval's default, without its warning).

Grounding (DESIGN.md section 2): a predicted box is correct when its IoU with any gold box of the
same (tweet, type) is at least 0.5 (:func:`grounding_accuracy`); grounded NER
(:func:`grounded_f1`) asks for span, type and box together.

Command line: ``mnerqg evaluate --gold FILE --pred FILE [--json]`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mnerqg_graph.boxes import as_tensor, pairwise_box_iou
from mnerqg_graph.boxes import box_iou as tensor_box_iou
from mnerqg_graph.data.conll import read_conll
from mnerqg_graph.data.tags import spans_from_tags
from mnerqg_graph.data.types import Box, Span
from mnerqg_graph.errors import DataError

#: Types listed first, in this order, in reports; other types follow alphabetically.
TYPE_ORDER: tuple[str, ...] = ("PER", "LOC", "ORG", "OTHER")


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def _type_key(name: str) -> tuple[int, str]:
    return (TYPE_ORDER.index(name) if name in TYPE_ORDER else len(TYPE_ORDER), name)


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 of one entity type (or of all, micro-averaged).

    Args:
        correct: predicted entities that match a gold entity.
        predicted: predicted entities.
        gold: gold entities (the support).
    """

    correct: int
    predicted: int
    gold: int

    @property
    def precision(self) -> float:
        """``correct / predicted`` (0 when nothing is predicted)."""
        return _ratio(self.correct, self.predicted)

    @property
    def recall(self) -> float:
        """``correct / gold`` (0 when there is no gold entity)."""
        return _ratio(self.correct, self.gold)

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0 when both are 0)."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def support(self) -> int:
        """The number of gold entities."""
        return self.gold

    def to_dict(self) -> dict[str, float | int]:
        """``{"precision", "recall", "f1", "support"}``, fractions in [0, 1]."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
        }


@dataclass(frozen=True)
class EntityScores:
    """Entity-level scores: micro-averaged and per type.

    Args:
        micro: over all entities.
        per_type: per canonical type present in the gold or the predicted entities, ordered PER,
            LOC, ORG, OTHER, then others alphabetically.
    """

    micro: PRF
    per_type: dict[str, PRF] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """``{"micro": {"precision", "recall", "f1", "support"}, "per_type": {"PER": {...}}}``."""
        return {
            "micro": self.micro.to_dict(),
            "per_type": {name: prf.to_dict() for name, prf in self.per_type.items()},
        }

    @classmethod
    def from_counts(
        cls, correct: Counter[str], predicted: Counter[str], gold: Counter[str]
    ) -> EntityScores:
        """Scores from per-type counts of correct, predicted and gold entities."""
        types = sorted(set(predicted) | set(gold), key=_type_key)
        per_type = {t: PRF(correct[t], predicted[t], gold[t]) for t in types}
        micro = PRF(sum(correct.values()), sum(predicted.values()), sum(gold.values()))
        return cls(micro, per_type)


def _paired_spans(
    gold: list[list[str]], pred: list[list[str]]
) -> Iterator[tuple[set[Span], set[Span]]]:
    """Gold and predicted entity spans of each tweet, after checking the sequences pair up."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sequences but {len(pred)} predicted")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sequence {i}: {len(g)} gold tags but {len(p)} predicted")
        yield set(spans_from_tags(g)), set(spans_from_tags(p))


def entity_prf(gold: list[list[str]], pred: list[list[str]]) -> EntityScores:
    """Entity-level precision, recall and F1 of predicted BIO sequences, the conlleval way.

    Args:
        gold: one gold BIO sequence per tweet.
        pred: one predicted BIO sequence per tweet, each as long as its gold sequence.

    Returns:
        Micro and per-type scores.

    Raises:
        ValueError: the numbers of sequences or the lengths of two paired sequences differ, or a
            tag is not ``O``, ``B-X`` or ``I-X``.
    """
    correct: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    for gold_spans, pred_spans in _paired_spans(gold, pred):
        n_gold.update(s.type for s in gold_spans)
        n_pred.update(s.type for s in pred_spans)
        correct.update(s.type for s in gold_spans & pred_spans)
    return EntityScores.from_counts(correct, n_pred, n_gold)


@dataclass
class ErrorBreakdown:
    """Where entity errors come from, counted like :func:`entity_prf` (exact span and type).

    Every gold entity is exactly one of: correct, ``wrong_type`` (the same span was predicted
    with another type), ``boundary`` (a predicted entity overlaps it, none with its span),
    ``unseen`` (no predicted entity overlaps it). Every predicted entity that is not correct is
    ``overlapping`` (it overlaps a gold entity) or ``spurious``.

    Attributes:
        correct: gold entities predicted with their span and type.
        wrong_type: gold entities whose exact span was predicted with another type.
        boundary: gold entities overlapped only by predictions of another span.
        unseen: gold entities with no overlapping prediction.
        overlapping: wrong predictions that overlap a gold entity.
        spurious: wrong predictions that overlap none.
        confusions: ``(gold type, predicted type)`` -> count, for ``wrong_type``.
        unseen_by_type: gold type -> count, for ``unseen``.
    """

    correct: int = 0
    wrong_type: int = 0
    boundary: int = 0
    unseen: int = 0
    overlapping: int = 0
    spurious: int = 0
    confusions: Counter[tuple[str, str]] = field(default_factory=Counter)
    unseen_by_type: Counter[str] = field(default_factory=Counter)

    @property
    def gold(self) -> int:
        """All gold entities (each counted once above)."""
        return self.correct + self.wrong_type + self.boundary + self.unseen

    @property
    def predicted(self) -> int:
        """All predicted entities."""
        return self.correct + self.overlapping + self.spurious


#: Kinds of a gold entity (:func:`entity_kinds`): ``unseen`` is a missed entity.
GOLD_KINDS: tuple[str, ...] = ("correct", "wrong_type", "boundary", "unseen")
#: Kinds of a predicted entity (:func:`entity_kinds`).
PRED_KINDS: tuple[str, ...] = ("correct", "wrong_type", "boundary", "spurious")


def entity_kinds(
    gold: Iterable[Span], pred: Iterable[Span]
) -> tuple[dict[Span, str], dict[Span, str]]:
    """Classify the gold and predicted entities of one tweet (see :class:`ErrorBreakdown`).

    A gold entity is ``correct`` (predicted with its span and type), ``wrong_type`` (its exact
    span was predicted with another type), ``boundary`` (a prediction overlaps it, none with its
    span) or ``unseen`` (no prediction overlaps it). A predicted entity is ``correct``,
    ``wrong_type`` (a gold entity has its exact span, with another type), ``boundary`` (it
    overlaps a gold entity, none with its span) or ``spurious`` (it overlaps none).

    Args:
        gold: the tweet's gold entity spans.
        pred: the tweet's predicted entity spans.

    Returns:
        ``(gold span -> kind, predicted span -> kind)``, kinds from :data:`GOLD_KINDS` and
        :data:`PRED_KINDS`.
    """
    gs, ps = set(gold), set(pred)
    gold_kind: dict[Span, str] = {}
    for e in gs:
        over = [q for q in ps if q.start < e.end and e.start < q.end]
        if e in ps:
            gold_kind[e] = "correct"
        elif any((q.start, q.end) == (e.start, e.end) for q in over):
            gold_kind[e] = "wrong_type"
        else:
            gold_kind[e] = "boundary" if over else "unseen"
    pred_kind: dict[Span, str] = {}
    for q in ps:
        over = [e for e in gs if q.start < e.end and e.start < q.end]
        if q in gs:
            pred_kind[q] = "correct"
        elif any((e.start, e.end) == (q.start, q.end) for e in over):
            pred_kind[q] = "wrong_type"
        else:
            pred_kind[q] = "boundary" if over else "spurious"
    return gold_kind, pred_kind


def error_breakdown(gold: list[list[str]], pred: list[list[str]]) -> ErrorBreakdown:
    """Classify every gold and predicted entity (see :class:`ErrorBreakdown`).

    Args:
        gold: one gold BIO sequence per tweet.
        pred: one predicted BIO sequence per tweet, each as long as its gold sequence.

    Raises:
        ValueError: as :func:`entity_prf`.
    """
    out = ErrorBreakdown()
    for gs, ps in _paired_spans(gold, pred):
        gold_kind, pred_kind = entity_kinds(gs, ps)
        for e, kind in gold_kind.items():
            if kind == "correct":
                out.correct += 1
            elif kind == "wrong_type":
                out.wrong_type += 1
                same = next(q for q in ps if (q.start, q.end) == (e.start, e.end))
                out.confusions[(e.type, same.type)] += 1
            elif kind == "boundary":
                out.boundary += 1
            else:
                out.unseen += 1
                out.unseen_by_type[e.type] += 1
        for kind in pred_kind.values():
            if kind in ("wrong_type", "boundary"):
                out.overlapping += 1
            elif kind == "spurious":
                out.spurious += 1
    return out


def evaluate_files(gold_path: str | Path, pred_path: str | Path) -> EntityScores:
    """Entity scores of a predicted CoNLL file against a gold one.

    The files must hold the same tweets in the same order with the same tokens; only the tags may
    differ.

    Args:
        gold_path: the gold CoNLL file.
        pred_path: the predicted CoNLL file.

    Returns:
        Micro and per-type scores.

    Raises:
        DataError: a file is malformed, or the first place where the two files do not align
            (tweet count, IMGID, token count or token), naming both files and lines.
    """
    gold = read_conll(gold_path).tweets
    pred = read_conll(pred_path).tweets
    for g, p in zip(gold, pred, strict=False):
        if g.id != p.id:
            raise DataError(
                p.source,
                f"IMGID {p.id} where the gold file has {g.id} ({g.source}:{g.line})",
                line=p.line,
            )
        if len(g.tokens) != len(p.tokens):
            raise DataError(
                p.source,
                f"tweet IMGID:{p.id} has {len(p.tokens)} tokens, the gold file "
                f"{len(g.tokens)} ({g.source}:{g.line})",
                line=p.line,
            )
        for k, (gt, pt) in enumerate(zip(g.tokens, p.tokens, strict=True)):
            if gt != pt:
                raise DataError(
                    p.source,
                    f"token {pt!r} where the gold file has {gt!r} ({g.source}:{g.line + 1 + k})",
                    line=p.line + 1 + k,
                )
    if len(gold) != len(pred):
        raise DataError(
            str(pred_path),
            f"{len(pred)} tweets, the gold file {gold_path} has {len(gold)}",
        )
    return entity_prf([t.tags for t in gold], [t.tags for t in pred])


def format_scores(scores: EntityScores) -> str:
    """A table of per-type and micro scores in percent."""
    rows = [("type", "precision", "recall", "f1", "support")]
    items = [*scores.per_type.items(), ("micro", scores.micro)]
    for name, prf in items:
        rows.append(
            (
                name,
                f"{100 * prf.precision:.2f}",
                f"{100 * prf.recall:.2f}",
                f"{100 * prf.f1:.2f}",
                str(prf.support),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for k, row in enumerate(rows):
        if k == len(rows) - 1:
            lines.append("-" * (sum(widths) + 2 * 4))
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


# --------------------------------------------------------------------------- grounding


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes: :func:`mnerqg_graph.boxes.box_iou` on two :class:`Box`.

    Args:
        a: a box.
        b: another box.

    Returns:
        IoU in [0, 1]; 0 for an empty box or an empty union (see :mod:`mnerqg_graph.boxes`).
    """
    return float(tensor_box_iou(as_tensor([a]), as_tensor([b]))[0])


def _box_hits(pred: Box | None, gold: Sequence[Box], threshold: float) -> bool:
    if pred is None or not gold:
        return False
    iou = pairwise_box_iou(as_tensor([pred]), as_tensor(gold))
    return bool((iou >= threshold).any())


@dataclass(frozen=True)
class GroundingScores:
    """Query-grounding accuracy.

    Args:
        grounded_correct: cases with gold boxes whose predicted box has IoU >= the threshold with
            one of them.
        grounded_total: cases with at least one gold box.
        none_correct: cases without a gold box where the model said "not in the image" (None).
        none_total: cases without a gold box.
    """

    grounded_correct: int
    grounded_total: int
    none_correct: int
    none_total: int

    @property
    def accuracy(self) -> float:
        """Grounding accuracy over the cases with a gold box (DESIGN.md section 2)."""
        return _ratio(self.grounded_correct, self.grounded_total)

    @property
    def none_accuracy(self) -> float:
        """How often "not in the image" is right, over the cases without a gold box."""
        return _ratio(self.none_correct, self.none_total)

    @property
    def overall_accuracy(self) -> float:
        """Accuracy over all cases (a box where there is one, None where there is none)."""
        return _ratio(
            self.grounded_correct + self.none_correct, self.grounded_total + self.none_total
        )

    def to_dict(self) -> dict[str, float | int]:
        """The three accuracies (fractions) and the two case counts."""
        return {
            "accuracy": self.accuracy,
            "none_accuracy": self.none_accuracy,
            "overall_accuracy": self.overall_accuracy,
            "grounded": self.grounded_total,
            "none": self.none_total,
        }


def grounding_accuracy(
    gold: Sequence[Sequence[Box]],
    pred: Sequence[Box | None],
    iou_threshold: float = 0.5,
) -> GroundingScores:
    """Query-grounding accuracy over (tweet, type) cases.

    One case per (tweet, entity type) the caller evaluates (e.g. every type whose entities occur
    in the tweet's gold text, as MNER-QG does, or every query type). For a case with gold boxes,
    the prediction is correct when it is a box with IoU >= ``iou_threshold`` with any of them; a
    None prediction there is wrong. For a case with no gold box, a None prediction ("not in the
    image") is right and any box is wrong.

    Args:
        gold: per case, the gold boxes of that type in that tweet (empty: not in the image, or the
            tweet has no image). See :meth:`mnerqg_graph.data.types.Sample.boxes_of_type`.
        pred: per case, the predicted box, or None for "not in the image".
        iou_threshold: the IoU a box needs to count.

    Returns:
        Grounding accuracy (cases with a box) and "none" accuracy (cases without).

    Raises:
        ValueError: ``gold`` and ``pred`` have different lengths.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold cases but {len(pred)} predicted")
    g_ok = g_n = n_ok = n_n = 0
    for boxes, box in zip(gold, pred, strict=True):
        if boxes:
            g_n += 1
            g_ok += _box_hits(box, boxes, iou_threshold)
        else:
            n_n += 1
            n_ok += box is None
    return GroundingScores(g_ok, g_n, n_ok, n_n)


def grounded_f1(
    gold: Sequence[Mapping[Span, Sequence[Box]]],
    pred_spans: Sequence[Sequence[Span]],
    pred_boxes: Sequence[Mapping[str, Box | None]],
    iou_threshold: float = 0.5,
) -> EntityScores:
    """Grounded NER: entity P/R/F1 where an entity also needs its box right.

    A predicted span counts as correct when a gold entity has the same start, end and type and
    either the gold entity has boxes and the box predicted for its type in that tweet has IoU >=
    ``iou_threshold`` with one of them, or the gold entity has no box and the model predicted none
    (None, or no entry) for that type. The grounding head predicts one box per (tweet, type), so
    every entity of a type shares that type's box.

    Args:
        gold: per tweet, every gold entity span (conlleval spans, canonical types) mapped to its
            gold boxes, an empty list when it is not in the image. Build it from a sample as
            ``{s: sample.boxes.get(s, []) for s in sample.tweet.entities}``.
        pred_spans: per tweet, the predicted entity spans (canonical types).
        pred_boxes: per tweet, the predicted box of each type, or None ("not in the image"); a type
            missing from the mapping counts as None.
        iou_threshold: the IoU a box needs to count.

    Returns:
        Micro and per-type scores; ``predicted`` and ``gold`` counts are those of plain entity
        scores, only ``correct`` is stricter.

    Raises:
        ValueError: the three sequences have different lengths.
    """
    if not len(gold) == len(pred_spans) == len(pred_boxes):
        raise ValueError(
            f"{len(gold)} gold tweets, {len(pred_spans)} with predicted spans, "
            f"{len(pred_boxes)} with predicted boxes"
        )
    correct: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    for gold_map, spans, boxes in zip(gold, pred_spans, pred_boxes, strict=True):
        n_gold.update(s.type for s in gold_map)
        unique = set(spans)
        n_pred.update(s.type for s in unique)
        for span in unique:
            if span not in gold_map:
                continue
            gold_boxes = gold_map[span]
            box = boxes.get(span.type)
            if (_box_hits(box, gold_boxes, iou_threshold)) if gold_boxes else box is None:
                correct[span.type] += 1
    return EntityScores.from_counts(correct, n_pred, n_gold)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``mnerqg evaluate --gold FILE --pred FILE [--json]``: entity P/R/F1 of two CoNLL files.

    Args:
        argv: the command's arguments (``sys.argv[2:]`` of ``mnerqg``).

    Returns:
        0. Malformed or misaligned files raise :class:`~mnerqg_graph.errors.DataError`, which
        the ``mnerqg`` command line prints as one line (exit code 2).
    """
    parser = argparse.ArgumentParser(
        prog="mnerqg evaluate",
        description=(
            "Entity-level precision, recall and F1 (conlleval / seqeval default counting; MISC is "
            "OTHER) of a predicted CoNLL file against a gold one with the same tweets and tokens."
        ),
    )
    parser.add_argument("--gold", required=True, type=Path, help="gold CoNLL file")
    parser.add_argument("--pred", required=True, type=Path, help="predicted CoNLL file")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (fractions) instead of a table"
    )
    args = parser.parse_args(argv)
    scores = evaluate_files(args.gold, args.pred)
    if args.json:
        print(json.dumps(scores.to_dict(), sort_keys=False))
    else:
        print(format_scores(scores))
    return 0
