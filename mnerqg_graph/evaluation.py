"""Scores of a split's predictions, and the prediction files (CoNLL and JSON lines).

Entity scores are computed on the original tokens' BIO sequences against the gold tags as read
(truncated tweets keep every gold entity), the conlleval way (:mod:`mnerqg_graph.metrics`).
Grounding and grounded-NER follow DESIGN.md section 2.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnerqg_graph.data.types import Box, Sample, Span
from mnerqg_graph.io import atomic_write_text
from mnerqg_graph.metrics import entity_prf, grounded_f1, grounding_accuracy
from mnerqg_graph.pipeline import Predictions

IOU_THRESHOLD = 0.5


def _f1(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def score_predictions(
    samples: Sequence[Sample],
    preds: Predictions,
    types: list[str],
    ambiguous: set[tuple[str, int, int]] | None = None,
) -> dict[str, float]:
    """All scores of a split as a flat dict of fractions in [0, 1].

    Keys: ``precision``, ``recall``, ``f1``, ``f1_<TYPE>``; where the split has images:
    ``grounding_acc`` (over (tweet, type) pairs of tweets with an image that have a gold box of
    the type: the predicted box has IoU >= 0.5 with one of them), ``none_acc`` (over the pairs of
    tweets with an image without a gold box of the type: the model says "not in the image"),
    ``grounded_f1`` (see :func:`mnerqg_graph.metrics.grounded_f1`; the gold boxes of a tweet
    without an image, e.g. a box file whose image is missing, are not asked for, as in
    ``grounding_acc``); with ``ambiguous`` (tweet id,
    start, end) mentions: ``ambiguous_f1`` over the gold entities at those positions and the
    predicted entities overlapping them.
    """
    scores = entity_prf([s.tweet.tags for s in samples], preds.tags)
    out: dict[str, float] = {
        "precision": scores.micro.precision,
        "recall": scores.micro.recall,
        "f1": scores.micro.f1,
    }
    for t in types:
        out[f"f1_{t}"] = scores.per_type[t].f1 if t in scores.per_type else 0.0
    with_image = [i for i, s in enumerate(samples) if s.image_path is not None]
    if with_image:
        gold_cases = [samples[i].boxes_of_type(t) for i in with_image for t in types]
        pred_cases = [_box(preds.boxes[i].get(t)) for i in with_image for t in types]
        g = grounding_accuracy(gold_cases, pred_cases, IOU_THRESHOLD)
        out["grounding_acc"] = g.accuracy
        out["none_acc"] = g.none_accuracy
        gf = grounded_f1(  # a tweet without an image has no box to find, gold file or not
            [
                {
                    sp: s.boxes.get(sp, []) if s.image_path is not None else []
                    for sp in s.tweet.entities
                }
                for s in samples
            ],
            [[sp for sp, _ in spans] for spans in preds.spans],
            [{t: _box(b) for t, b in boxes.items()} for boxes in preds.boxes],
            IOU_THRESHOLD,
        )
        out["grounded_f1"] = gf.micro.f1
    if ambiguous is not None:
        out["ambiguous_f1"] = ambiguous_f1(samples, preds, ambiguous)
    return out


def _box(pred: tuple[list[float], float] | None) -> Box | None:
    return None if pred is None else Box(*pred[0])


def ambiguous_f1(
    samples: Sequence[Sample], preds: Predictions, ambiguous: set[tuple[str, int, int]]
) -> float:
    """Entity F1 restricted to the ambiguous mentions' positions (see :func:`score_predictions`)."""
    tp = n_pred = n_gold = 0
    for i, s in enumerate(samples):
        positions = [(a, b) for tid, a, b in ambiguous if tid == s.tweet.id] if ambiguous else []
        if not positions:
            continue
        gold = {sp for sp in s.tweet.entities if (sp.start, sp.end) in positions}
        pred = {
            sp for sp, _ in preds.spans[i] if any(sp.start < b and a < sp.end for a, b in positions)
        }
        n_gold += len(gold)
        n_pred += len(pred)
        tp += len(gold & pred)
    return _f1(tp, n_pred, n_gold)[2]


def prediction_record(
    sample: Sample,
    spans: list[tuple[Span, float]],
    boxes: dict[str, tuple[list[float], float] | None],
) -> dict[str, Any]:
    """One JSON-lines record: entities (tokens, type, span, score) and a box (or null) per type."""
    toks = sample.tweet.tokens
    return {
        "id": sample.tweet.id,
        "tokens": toks,
        "entities": [
            {
                "text": sp.text(toks),
                "type": sp.type,
                "start": sp.start,
                "end": sp.end,
                "score": round(float(sc), 6),
            }
            for sp, sc in spans
        ],
        "boxes": {
            t: (
                None
                if b is None
                else {
                    "box": [round(float(v), 2) for v in b[0]],
                    "confidence": round(float(b[1]), 6),
                }
            )
            for t, b in boxes.items()
        },
    }


def write_predictions(out_dir: str | Path, samples: Sequence[Sample], preds: Predictions) -> None:
    """Write ``predictions.conll`` (readable by ``mnerqg evaluate``) and ``predictions.jsonl``."""
    from mnerqg_graph.data.conll import write_conll
    from mnerqg_graph.data.types import Tweet

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tweets = [Tweet(s.tweet.id, s.tweet.tokens, preds.tags[i]) for i, s in enumerate(samples)]
    write_conll(out_dir / "predictions.conll", tweets)
    lines = [
        json.dumps(prediction_record(s, preds.spans[i], preds.boxes[i]), ensure_ascii=False)
        for i, s in enumerate(samples)
    ]
    atomic_write_text(out_dir / "predictions.jsonl", "\n".join(lines) + ("\n" if lines else ""))
