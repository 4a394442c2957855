"""The data behind ``mnerqg report``: a split's predictions, scores, errors and alignments.

:func:`build_report_data` runs a model over a split once the way ``mnerqg predict`` does
(:meth:`~mnerqg_graph.pipeline.Pipeline.run`, so any decoder and query encoding), scores it
with the functions ``mnerqg evaluate`` and the experiment use (:mod:`mnerqg_graph.metrics`,
:func:`~mnerqg_graph.evaluation.score_predictions`), names the kind of every gold and predicted
entity (:func:`~mnerqg_graph.metrics.entity_kinds`), and runs
:func:`~mnerqg_graph.viz.alignment.explain` for the graph of every (tweet, type): the data of
``mnerqg visualize``'s GraphML (token-region and query-token edges weighted by the last fusion
layer's attention) plus the span heads' start/end probabilities of each token. Entities always come
from the prediction path; ``explain`` gives only the graph and its weights.

The result is a plain, JSON-ready dict (:func:`~mnerqg_graph.report.html.render_html` embeds it):

``meta``
    what was run: ``types``, ``queries``, ``fusion``, ``decoder``, thresholds, ``grids`` (rows,
    cols per region scale, coarsest first), ``image_branch``, ``attention`` and the caller's
    entries (checkpoint, data, split, ...).
``scores``
    ``entity``: ``{"micro": {precision, recall, f1, support}, "per_type": {...}}``, exactly
    ``mnerqg evaluate --json``; ``summary``: the experiment's flat dict (``f1``, ``f1_<TYPE>``,
    ``grounding_acc``, ``none_acc``, ``grounded_f1`` where the split has images,
    ``ambiguous_f1`` with ambiguous mentions); ``grounding_cases``: (tweet, type) pairs of tweets
    with an image that have a gold box / none; ``errors``: entity counts per kind; ``confusion``:
    gold type x predicted type over exact spans, with a ``missed`` column (gold entities no
    prediction has the span of) and a ``spurious`` row (predictions no gold entity has the span
    of), so a row sums to the type's support and a column to its predictions.
``tweets``
    per tweet, in split order: ``id``, ``tokens``, ``gold`` (``start``, ``end``, ``type``,
    ``kind``), ``entities`` and ``boxes`` (exactly the record ``mnerqg predict`` writes),
    ``pred_kinds`` (one per entity), ``kinds`` and ``types`` (for filtering), ``image`` (a
    downscaled JPEG data URI, or None), ``size`` (original width, height), ``gold_boxes`` (per
    type, pixel xyxy), ``pieces`` (word pieces per token, "" for a token without any) and
    ``graphs``: per type, ``nodes`` (token node positions), ``query`` (positions joined to the
    query node), ``query_weight`` (the query node's attention over each of those tokens, aligned
    with ``query``, 4 significant digits; empty when the fusion module returns no attention),
    ``start``/``end`` (span-head probabilities per node), ``attn`` (token-region attention, base64
    of a uint8 ``[nodes, regions]`` matrix, each (node, scale) block scaled by its maximum in
    ``amax``: weight = byte / 255 * amax) and ``note``.

Kinds of entities: gold ``correct``, ``wrong_type``, ``boundary``, ``missed``; predicted
``correct``, ``wrong_type``, ``boundary``, ``spurious`` (:func:`~mnerqg_graph.metrics.entity_kinds`,
whose ``unseen`` is ``missed`` here).
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from mnerqg_graph.data.types import Sample, Span
from mnerqg_graph.errors import DataError
from mnerqg_graph.pipeline import Predictions

#: Version of the data layout above (the page checks it).
REPORT_VERSION = 1
#: Tweet filters by entity kind, in the page's order.
KINDS: tuple[str, ...] = ("correct", "missed", "wrong_type", "boundary", "spurious")
#: Tweets per prediction call, as ``mnerqg predict`` chunks its input (same batches).
PREDICT_CHUNK = 2048


def _kind(kind: str) -> str:
    return "missed" if kind == "unseen" else kind


def _round(x: float, digits: int = 4) -> float:
    return float(round(float(x), digits))


def encode_image(sample: Sample, side: int) -> tuple[str | None, list[int] | None]:
    """A tweet's image as a JPEG data URI at most ``side`` pixels wide and high.

    Args:
        sample: the tweet (``image_path`` None: no image).
        side: the longest side of the embedded picture, in pixels.

    Returns:
        ``(data URI, [original width, original height])``, or ``(None, None)`` without a
        readable image. The size is the sample's known size (the one its boxes refer to), else
        the file's.
    """
    if sample.image_path is None:
        return None, None
    from PIL import Image

    from mnerqg_graph.data.images import read_rgb

    try:  # as the model reads it (a JPEG decoded at a reduced scale)
        rgb, stored = read_rgb(sample.image_path, side)
    except DataError:
        return None, None  # the processor counted it: the tweet ran text-only
    size = list(sample.image_size or stored)
    rgb.thumbnail((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), size


def confusion_table(
    gold: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]], types: Sequence[str]
) -> dict[str, Any]:
    """Gold type x predicted type over exact spans, with ``missed`` and ``spurious``.

    Args:
        gold: per tweet, the gold entity spans.
        pred: per tweet, the predicted entity spans.
        types: the types to list first (others follow alphabetically).

    Returns:
        ``{"rows": [gold types..., "spurious"], "cols": [predicted types..., "missed"],
        "counts": [[int]]}``: ``counts[i][j]`` is the number of (gold, predicted) entity pairs
        with the same span of types ``rows[i]`` and ``cols[j]``; a gold entity that no prediction
        has the span of counts in ``missed``, a prediction that no gold entity has the span of in
        ``spurious`` (boundary errors count in both).
    """
    pairs: Counter[tuple[str, str]] = Counter()
    seen = set(types)
    for gs, ps in zip(gold, pred, strict=True):
        by_span = {(p.start, p.end): p.type for p in ps}
        gold_spans = {(g.start, g.end) for g in gs}
        for g in gs:
            pairs[(g.type, by_span.get((g.start, g.end), "missed"))] += 1
        for p in ps:
            if (p.start, p.end) not in gold_spans:
                pairs[("spurious", p.type)] += 1
        seen |= {g.type for g in gs} | {p.type for p in ps}
    order = list(types) + sorted(seen - set(types))
    rows, cols = [*order, "spurious"], [*order, "missed"]
    return {
        "rows": rows,
        "cols": cols,
        "counts": [[pairs[(r, c)] for c in cols] for r in rows],
    }


def _attention_block(al: Any, n_scales: int) -> tuple[str | None, list[list[float]] | None]:
    """An alignment's token-region attention as (base64 uint8 matrix, per (node, scale) max).

    None for a model whose regions are detector boxes (``n_scales`` 0: the page draws grids only).
    """
    if not al.num_edges or not al.regions or not n_scales:
        return None, None
    node_of = {t.position: k for k, t in enumerate(al.tokens)}
    weights = np.zeros((len(al.tokens), len(al.regions)), dtype=np.float64)
    rows = np.asarray([node_of[int(p)] for p in al.edge_token], dtype=np.int64)
    weights[rows, al.edge_region] = al.edge_weight
    scale_of = np.asarray([r.scale - 1 for r in al.regions])
    amax = np.zeros((len(al.tokens), n_scales))
    for s in range(n_scales):
        cols = scale_of == s
        if cols.any():
            amax[:, s] = weights[:, cols].max(1)
    denom = amax[:, scale_of]
    quant = np.where(denom > 0, np.rint(255 * weights / np.where(denom > 0, denom, 1)), 0)
    data = base64.b64encode(quant.astype(np.uint8).tobytes()).decode("ascii")
    return data, [[float(f"{v:.5g}") for v in row] for row in amax]


def _graphs(expl: Any, n_scales: int) -> tuple[list[str], dict[str, Any]]:
    """The word pieces of a tweet's tokens and its per-type graph data."""
    pieces = [""] * len(expl.sample.tweet.tokens)
    graphs: dict[str, Any] = {}
    for t, al in expl.alignments.items():
        for tok in al.tokens:
            pieces[tok.position] = " ".join(tok.pieces)
        attn, amax = _attention_block(al, n_scales)
        graphs[t] = {
            "nodes": [tok.position for tok in al.tokens],
            "query": [int(p) for p in al.query_token],
            "query_weight": [float(f"{v:.4g}") for v in al.query_weight],
            "start": [_round(v, 3) for v in al.token_start],
            "end": [_round(v, 3) for v in al.token_end],
            "attn": attn,
            "amax": amax,
            "note": al.note(),
        }
    return pieces, graphs


def _predict_chunks(pipeline: Any, samples: Sequence[Sample]) -> Predictions:
    """:meth:`~mnerqg_graph.pipeline.Pipeline.run` over chunks, as ``mnerqg predict`` runs."""
    out = Predictions([], [], [], [])
    for i in range(0, len(samples), PREDICT_CHUNK):
        got, _ = pipeline.run(samples[i : i + PREDICT_CHUNK])
        out.extend(got)
    return out


def build_report_data(
    model: Any,
    processor: Any,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    device: Any = "cpu",
    ambiguous: set[tuple[str, int, int]] | None = None,
    meta: dict[str, Any] | None = None,
    image_side: int = 320,
    explain_batch: int = 16,
) -> dict[str, Any]:
    """Everything the report page shows, as a JSON-ready dict (layout in the module docstring).

    Args:
        model: an :class:`~mnerqg_graph.model.MnerqgModel` (its decoder and thresholds apply).
        processor: its :class:`~mnerqg_graph.processing.MnerqgProcessor` (tokenizer, queries,
            preprocessing), as ``mnerqg predict`` loads it.
        samples: the split's tweets, with gold tags (and images and gold boxes when known).
        batch_size: tweets per forward pass of the prediction.
        device: where the model runs.
        ambiguous: SynthTweets' ambiguous mentions of this split, ``(tweet id, start, end)``:
            adds ``ambiguous_f1`` to the summary.
        meta: extra entries for ``meta`` (checkpoint, data folder, split, ...).
        image_side: longest side of the embedded pictures, in pixels.
        explain_batch: tweets per forward pass of the alignment run.

    Returns:
        ``{"version", "meta", "scores", "tweets"}``.
    """
    from mnerqg_graph.evaluation import prediction_record, score_predictions
    from mnerqg_graph.metrics import entity_kinds, entity_prf, error_breakdown
    from mnerqg_graph.pipeline import Pipeline
    from mnerqg_graph.viz.alignment import explain

    samples = list(samples)
    cfg = model.config
    queries = processor.queries
    types = list(queries)
    pipeline = Pipeline(model, processor, batch_size, device)
    preds = _predict_chunks(pipeline, samples)
    gold_tags = [s.tweet.tags for s in samples]
    gold_spans = [s.tweet.entities for s in samples]
    pred_spans = [[sp for sp, _ in spans] for spans in preds.spans]
    breakdown = error_breakdown(gold_tags, preds.tags)
    with_image = [s for s in samples if s.image_path is not None]
    boxed = sum(bool(s.boxes_of_type(t)) for s in with_image for t in types)
    scores = {
        "entity": entity_prf(gold_tags, preds.tags).to_dict(),
        "summary": {
            k: float(v) for k, v in score_predictions(samples, preds, types, ambiguous).items()
        },
        "grounding_cases": {"boxed": boxed, "none": len(with_image) * len(types) - boxed},
        "errors": {
            "correct": breakdown.correct,
            "wrong_type": breakdown.wrong_type,
            "boundary": breakdown.boundary,
            "missed": breakdown.unseen,
            "overlapping": breakdown.overlapping,
            "spurious": breakdown.spurious,
        },
        "confusion": confusion_table(gold_spans, pred_spans, types),
    }
    grids = [list(g) for g in model.spec.grids] if model.spec.use_image else []
    tweets: list[dict[str, Any]] = []
    for i, s in enumerate(samples):
        record = prediction_record(s, preds.spans[i], preds.boxes[i])
        gk, pk = entity_kinds(gold_spans[i], pred_spans[i])
        gold = [
            {"start": g.start, "end": g.end, "type": g.type, "kind": _kind(gk[g])}
            for g in sorted(gk)
        ]
        pred_kinds = [pk[sp] for sp in pred_spans[i]]
        image, size = encode_image(s, image_side)
        tweets.append(
            {
                "id": s.tweet.id,
                "tokens": list(s.tweet.tokens),
                "gold": gold,
                "entities": record["entities"],
                "boxes": record["boxes"],
                "pred_kinds": pred_kinds,
                "kinds": sorted({g["kind"] for g in gold} | set(pred_kinds), key=KINDS.index),
                "types": sorted({g.type for g in gold_spans[i]} | {p.type for p in pred_spans[i]}),
                "image": image,
                "size": size,
                "gold_boxes": {
                    t: [[_round(v, 2) for v in (b.xmin, b.ymin, b.xmax, b.ymax)] for b in boxes]
                    for t in types
                    if image is not None and (boxes := s.boxes_of_type(t))
                },
            }
        )
    has_attention = False
    for start in range(0, len(samples), explain_batch):
        chunk = samples[start : start + explain_batch]
        for k, expl in enumerate(explain(model, processor, chunk, explain_batch)):
            pieces, graphs = _graphs(expl, len(grids))
            tweets[start + k]["pieces"] = pieces
            tweets[start + k]["graphs"] = graphs
            has_attention |= any(al.attention for al in expl.alignments.values())
    info = {
        "types": types,
        "queries": dict(queries),
        "fusion": cfg.fusion.name,
        "decoder": cfg.decoding.decoder,
        "query_encoding": cfg.encoder.query_encoding,
        "span_threshold": float(cfg.decoding.span_threshold),
        "existence_threshold": float(cfg.decoding.existence_threshold),
        "grounding_threshold": float(cfg.decoding.grounding_threshold),
        "grids": grids,
        "image_branch": bool(grids),
        "attention": has_attention,
        "n_tweets": len(samples),
        "n_images": sum(t["image"] is not None for t in tweets),
    }
    return {
        "version": REPORT_VERSION,
        "meta": {**info, **(meta or {})},
        "scores": scores,
        "tweets": tweets,
    }
