"""From samples to model inputs and from model outputs to predictions.

:func:`prepare_items` builds the MRC examples of every tweet (one tokenizer pass per split), decodes
each image once (resized, kept as uint8) and groups them into :class:`TweetItem` s. An unreadable
image is counted and its tweet runs text-only. :func:`predict` runs a model over items and returns,
per tweet, the decoded flat BIO tags, the spans with scores, and a box (or none) per type.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mnerqg_graph.config import DECODERS
from mnerqg_graph.data.collate import TweetItem, bio_tag_names
from mnerqg_graph.data.images import load_image
from mnerqg_graph.data.mrc import MrcReport, build_mrc_examples, decode_spans, iter_tweet_groups
from mnerqg_graph.data.tags import spans_from_tags, tags_from_spans
from mnerqg_graph.data.types import Sample, Span
from mnerqg_graph.encoders.features import token_shapes
from mnerqg_graph.errors import DataError
from mnerqg_graph.progress import Progress


@dataclass
class PrepareReport:
    """What :func:`prepare_items` met on the way."""

    mrc: MrcReport
    n_images: int = 0
    unreadable_images: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"{self.mrc.n_tweets} tweets, {self.n_images} images "
            f"({len(self.unreadable_images)} unreadable -> text-only), "
            f"{len(self.mrc.truncated_ids)} truncated, "
            f"{len(self.mrc.long_entities)} entities longer than max_span_len"
            + (f", {n} URLs read as one word" if (n := self.mrc.n_urls_replaced) else "")
        )


def item_options(model: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`prepare_items` that a model's config and parts decide.

    ``prepare_items(samples, tokenizer, queries, **item_options(model))`` prepares inputs exactly
    as the model reads them (lengths, URL handling, query encoding, image size or none).
    """
    cfg = model.config
    return {
        "max_length": cfg.max_length,
        "max_span_len": cfg.max_span_len,
        "image_size": cfg.image_size if model.backbone is not None else None,
        "url_word": cfg.url_word,
        "query_encoding": cfg.query_encoding,
        "packed_positions": cfg.packed_positions,
        "packed_separators": cfg.packed_separators,
        "max_positions": getattr(model.text_encoder, "max_positions", None),
    }


def prepare_items(
    samples: Sequence[Sample],
    tokenizer: Any,
    queries: dict[str, str],
    max_length: int,
    max_span_len: int,
    image_size: int | None,
    url_word: str = "",
    query_encoding: str = "per_type",
    packed_positions: str = "sequential",
    max_positions: int | None = None,
    packed_separators: bool = True,
) -> tuple[list[TweetItem], PrepareReport]:
    """Turn samples into tweet items; ``image_size=None`` skips images (text-only model).

    ``url_word``, ``query_encoding``, ``packed_positions``, ``max_positions`` and
    ``packed_separators`` are passed to
    :func:`build_mrc_examples`; :func:`item_options` gives all the model-decided arguments.
    """
    examples, mrc_report = build_mrc_examples(
        list(samples),
        tokenizer,
        queries,
        max_length=max_length,
        max_span_len=max_span_len,
        url_word=url_word,
        query_encoding=query_encoding,
        packed_positions=packed_positions,
        max_positions=max_positions,
        packed_separators=packed_separators,
    )
    report = PrepareReport(mrc_report)
    items: list[TweetItem] = []
    for group in iter_tweet_groups(examples):
        idx = group[0].sample_index
        sample = samples[idx]
        image = None
        if image_size is not None and sample.image_path is not None:
            try:
                image = (load_image(sample.image_path, image_size) * 255).round().to(torch.uint8)
                report.n_images += 1
            except DataError:
                report.unreadable_images.append(str(sample.image_path))
        items.append(
            TweetItem(
                idx, group, token_shapes(sample.tweet.tokens), image, sample.grounding_labelled
            )
        )
    return items, report


@dataclass
class Predictions:
    """Per-tweet predictions of a split (index = position in the split's samples).

    Attributes:
        spans: decoded spans with their scores.
        tags: flat BIO over the original tokens (canonical types).
        boxes: per type, ``(box in pixels of the original image (or normalised when the size is
            unknown), confidence)`` when the model grounds the type in the image, else None.
        grounding_conf: per type, the best cell's confidence (also when under the threshold).
    """

    spans: list[list[tuple[Span, float]]]
    tags: list[list[str]]
    boxes: list[dict[str, tuple[list[float], float] | None]]
    grounding_conf: list[dict[str, float]]


def _batches(items: list[TweetItem], size: int) -> Iterator[list[TweetItem]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def predict(
    model: Any,
    items: list[TweetItem],
    samples: Sequence[Sample],
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    pad_id: int = 0,
    progress: Progress | None = None,
) -> Predictions:
    """Run ``model`` over ``items`` and decode with its config's decoder and thresholds.

    ``progress`` counts the tweets done (see :func:`predict_thresholds`).
    """
    key = (float(model.config.span_threshold), float(model.config.existence_threshold))
    return predict_thresholds(
        model, items, samples, [key], batch_size, device, pad_id, progress=progress
    )[key]


def predict_samples(
    model: Any,
    tokenizer: Any,
    queries: dict[str, str],
    samples: Sequence[Sample],
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> tuple[Predictions, PrepareReport]:
    """Predict on samples the way ``mnerqg predict`` does, results in the samples' order.

    The samples are sorted by their number of tokens (less padding), prepared with
    :func:`prepare_items` as the model reads them (:func:`item_options`) and run through
    :func:`predict`; ``mnerqg predict`` (one call per chunk of its input) and ``mnerqg report``
    share this, so they see the same batches and give the same numbers.

    Args:
        model: an :class:`~mnerqg_graph.model.MnerqgModel`.
        tokenizer: its tokenizer.
        queries: entity type -> query sentence, as the model was trained.
        samples: the tweets.
        batch_size: tweets per forward pass.
        device: where the model runs.
        progress: told the tweets of each batch as it is done (None: nothing shown).

    Returns:
        The predictions (index = position in ``samples``) and the preparation report (its
        truncated ids and unreadable images in the sorted order).
    """
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].tweet.tokens))
    ordered = [samples[i] for i in order]
    items, report = prepare_items(ordered, tokenizer, queries, **item_options(model))
    pad_id = tokenizer.pad_token_id or 0
    got = predict(model, items, ordered, batch_size, device, pad_id, progress)
    back = [0] * len(samples)
    for j, i in enumerate(order):
        back[i] = j
    preds = Predictions(
        [got.spans[j] for j in back],
        [got.tags[j] for j in back],
        [got.boxes[j] for j in back],
        [got.grounding_conf[j] for j in back],
    )
    return preds, report


def tag_head_spans(
    log_probs: torch.Tensor,
    token_mask: torch.Tensor,
    existence: torch.Tensor,
    types: Sequence[str],
    existence_threshold: float = 0.0,
) -> list[tuple[Span, float]]:
    """One tweet's entities from the auxiliary tagger, read from all of the tweet's sequences.

    The tweet is read once per type (``[CLS] query [SEP] tweet [SEP]``); the tagger tags every
    type in each reading, so its log-probabilities are averaged over the readings. Tokens the
    encoder did not see (truncation) are ``O``; ``I-`` without ``B-`` opens an entity, as
    conlleval counts it.

    Args:
        log_probs: the tagger's log-probabilities in each of the tweet's readings.
        token_mask: the tokens that are graph nodes.
        existence: the existence head's probability of each type (tag-id order).
        types: entity types in tag-id order (``config.types``).
        existence_threshold: the tags of a type whose existence probability is under it are
            not predicted (0: off).

    Returns:
        ``(span, score)`` sorted by start; the score is the span's mean tag probability.

    Shapes:
        log_probs: ``[T, n, 1 + 2 T]``; token_mask: ``[n]``; existence: ``[T]``
        (``n``: the tweet's tokens).
    """
    lp = log_probs.float().mean(0)  # [n, C]
    if existence_threshold > 0:
        off = (existence < existence_threshold).repeat_interleave(2)
        lp = lp.masked_fill(torch.cat([off.new_zeros(1), off])[None, :], float("-inf"))
    best, ids = lp.max(-1)
    ids = ids.masked_fill(~token_mask, 0)
    names = bio_tag_names(types)
    conf = best.exp().tolist()
    return [
        (sp, sum(conf[sp.start : sp.end]) / (sp.end - sp.start))
        for sp in spans_from_tags([names[i] for i in ids.tolist()])
    ]


@torch.no_grad()
def predict_thresholds(
    model: Any,
    items: list[TweetItem],
    samples: Sequence[Sample],
    thresholds: Sequence[tuple[float, float]],
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    pad_id: int = 0,
    decoder: str | None = None,
    progress: Progress | None = None,
) -> dict[tuple[float, float], Predictions]:
    """One forward pass over ``items``, decoded at several thresholds (for validation tuning).

    Args:
        model: an :class:`~mnerqg_graph.model.MnerqgModel`.
        items: the tweets, from :func:`prepare_items`.
        samples: the samples the items index into.
        thresholds: ``(span_threshold, existence_threshold)`` pairs to decode at (see
            :meth:`~mnerqg_graph.model.MnerqgModel.decode`).
        batch_size: tweets per forward pass.
        device: where the model runs.
        pad_id: the tokenizer's padding id.
        decoder: ``span`` (the MRC span heads) or ``tags`` (the auxiliary tagger, which needs
            ``tag_head``; the span threshold does not apply to it); None: the model config's.
        progress: told the tweets of each batch when the batch is decoded (the caller makes it
            and closes it); None: nothing shown.

    Returns:
        ``{(span_threshold, existence_threshold): Predictions}``; boxes are the same for all.
    """
    from mnerqg_graph.data.collate import collate

    model.eval()
    cfg = model.config
    decoder = cfg.decoder if decoder is None else decoder
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, not {decoder!r}")
    if decoder == "tags" and model.tag_head is None:
        raise ValueError("decoder 'tags' needs a model trained with tag_head=True")
    n = len(samples)
    ts = [(float(a), float(b)) for a, b in thresholds]
    spans: dict[tuple[float, float], list[list[tuple[Span, float]]]] = {
        t: [[] for _ in range(n)] for t in ts
    }
    tags = {t: [["O"] * len(s.tweet.tokens) for s in samples] for t in ts}
    boxes: list[dict[str, tuple[list[float], float] | None]] = [{} for _ in range(n)]
    confs: list[dict[str, float]] = [{} for _ in range(n)]
    dev = torch.device(device)
    floor = min(t[0] for t in ts) if decoder == "span" else 1.0  # the tagger needs no match
    by_length = sorted(items, key=lambda it: max(len(ex.input_ids) for ex in it.examples))
    for chunk in _batches(by_length, batch_size):  # similar lengths together: less padding
        batch = collate(chunk, cfg.max_span_len, cfg.image_size, pad_id).to(dev)
        with (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if dev.type == "cuda"
            else torch.autocast("cpu", enabled=False)
        ):
            # the match head scores only the spans that a threshold of the grid can accept
            out = model(batch, span_floor=floor)
        decoded, ex_boxes = {}, []
        span_ts = ts if decoder == "span" else ts[:1]  # the tagger takes only the boxes
        for k, t in enumerate(span_ts):  # boxes do not depend on the thresholds: from the first
            decoded[t], boxes_t = model.decode(out, t[0], t[1])
            if k == 0:
                ex_boxes = boxes_t
        if decoder == "tags":
            tag_lp = torch.log_softmax(out.tag_logits.float(), -1).cpu()
            existence = torch.sigmoid(out.existence_logits.float()).cpu()
            token_mask = out.token_mask.cpu()
        row = 0
        for it in chunk:
            sample = samples[it.index]
            for ex in it.examples:
                pred = ex_boxes[row]
                boxes[it.index][ex.type] = None
                if pred is not None:
                    box, conf = pred
                    confs[it.index][ex.type] = conf
                    if conf >= cfg.grounding_threshold:
                        if sample.image_size is not None:
                            w, h = sample.image_size
                            box = [box[0] * w, box[1] * h, box[2] * w, box[3] * h]
                        boxes[it.index][ex.type] = (box, conf)
                row += 1
            n_tok = len(sample.tweet.tokens)
            if decoder == "tags":
                r0, r1 = row - len(it.examples), row
                by_type = torch.zeros(len(cfg.types))  # existence in tag-id (type index) order
                by_type[[ex.type_index for ex in it.examples]] = existence[r0:r1]
                for t in ts:
                    got = tag_head_spans(
                        tag_lp[r0:r1, :n_tok], token_mask[r0, :n_tok], by_type, cfg.types, t[1]
                    )
                    spans[t][it.index] = got
                    tags[t][it.index] = tags_from_spans(n_tok, [sp for sp, _ in got])
                continue
            for t in ts:
                rows = range(row - len(it.examples), row)
                cands = [
                    (a, b, ex.type, sc)
                    for ex, r in zip(it.examples, rows, strict=True)
                    for a, b, sc in decoded[t][r]
                ]
                accepted = decode_spans(n_tok, cands)
                score = {(a, b, typ): sc for a, b, typ, sc in cands}
                spans[t][it.index] = [(sp, score[(sp.start, sp.end, sp.type)]) for sp in accepted]
                tags[t][it.index] = tags_from_spans(n_tok, accepted)
        if progress is not None:
            progress.update(len(chunk))
    return {t: Predictions(spans[t], tags[t], boxes, confs) for t in ts}
