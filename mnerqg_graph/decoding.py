"""Decoding: from one forward pass's output to each tweet's entities, tags and boxes.

Decoders are registered strategies (:data:`DECODER_REGISTRY`, contract below). A decoder reads one
batch's :class:`~mnerqg_graph.model.ModelOutput` and decodes it at every
``(span_threshold, existence_threshold)`` pair it is asked for, so a threshold grid is scored from
one forward pass (:func:`mnerqg_graph.pipeline.predict_grid`). Built in:

* ``span``: the MRC span heads. Spans whose start, end and match probabilities pass the span
  threshold (and whose type the existence head says occurs, when the existence threshold is > 0)
  are candidates; the types' candidates are resolved greedily by score into non-overlapping spans
  (:func:`~mnerqg_graph.data.mrc.decode_spans`).
* ``tags``: the auxiliary BIO tagger (``tag_head``), its log-probabilities averaged over the
  tweet's readings (:func:`tag_head_spans`); the span threshold does not apply to it.

Boxes do not depend on the decoder: per (tweet, type) the grounding head's most confident cell,
"not in the image" (None) under the config's ``grounding_threshold``, in pixels of the original
image when its size is known (:func:`ground`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch

from mnerqg_graph.data.collate import TweetItem, bio_tag_names
from mnerqg_graph.data.mrc import decode_spans
from mnerqg_graph.data.tags import spans_from_tags, tags_from_spans
from mnerqg_graph.data.types import Sample, Span, Tweet
from mnerqg_graph.errors import ConfigError
from mnerqg_graph.registry import Registry

#: ``(span_threshold, existence_threshold)``: a point of the decoding grid.
Thresholds = tuple[float, float]
#: A decoded entity and its score.
ScoredSpan = tuple[Span, float]
#: A predicted box ``([xmin, ymin, xmax, ymax], confidence)``, or None ("not in the image").
ScoredBox = tuple[list[float], float] | None


class Decoding(NamedTuple):
    """A decoder and its thresholds: what a model's config says, or a point of the grid."""

    decoder: str
    span_threshold: float
    existence_threshold: float

    @classmethod
    def of(cls, config: Any) -> Decoding:
        """The decoding a :class:`~mnerqg_graph.config.ModelConfig` names."""
        return cls(
            str(config.decoding.decoder),
            float(config.decoding.span_threshold),
            float(config.decoding.existence_threshold),
        )

    @property
    def thresholds(self) -> Thresholds:
        """``(span_threshold, existence_threshold)``."""
        return (float(self.span_threshold), float(self.existence_threshold))


@dataclass
class TweetPrediction:
    """One tweet's predictions.

    Attributes:
        id: the tweet's id.
        tokens: its tokens.
        entities: decoded spans with their scores, sorted by start.
        tags: flat BIO over the tokens (canonical types).
        boxes: per type, ``(box, confidence)`` when the model grounds the type in the image (box
            in pixels of the original image, or normalised when its size is unknown), else None.
        grounding_conf: per type, the best cell's confidence (also when under the threshold).
    """

    id: str
    tokens: list[str]
    entities: list[ScoredSpan]
    tags: list[str]
    boxes: dict[str, ScoredBox]
    grounding_conf: dict[str, float]

    def to_record(self) -> dict[str, Any]:
        """The JSON record ``mnerqg predict`` writes (entities, boxes) plus ``tags``."""
        from mnerqg_graph.evaluation import prediction_record

        sample = Sample(Tweet(self.id, self.tokens, self.tags))
        return {**prediction_record(sample, self.entities, self.boxes), "tags": list(self.tags)}


@dataclass
class Predictions:
    """Per-tweet predictions of a list of tweets (index = position in the samples).

    Iterating (or indexing) gives one :class:`TweetPrediction` per tweet when ``samples`` is
    known.

    Attributes:
        spans: decoded spans with their scores.
        tags: flat BIO over the original tokens (canonical types).
        boxes: per type, ``(box in pixels of the original image (or normalised when the size is
            unknown), confidence)`` when the model grounds the type in the image, else None.
        grounding_conf: per type, the best cell's confidence (also when under the threshold).
        samples: the tweets predicted on (for ids and tokens).
    """

    spans: list[list[ScoredSpan]]
    tags: list[list[str]]
    boxes: list[dict[str, ScoredBox]]
    grounding_conf: list[dict[str, float]]
    samples: list[Sample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tags)

    def __getitem__(self, i: int) -> TweetPrediction:
        tweet = self.samples[i].tweet if self.samples else None
        return TweetPrediction(
            tweet.id if tweet is not None else str(i),
            list(tweet.tokens) if tweet is not None else [],
            self.spans[i],
            self.tags[i],
            self.boxes[i],
            self.grounding_conf[i],
        )

    def __iter__(self) -> Iterator[TweetPrediction]:
        return (self[i] for i in range(len(self)))

    def select(self, order: Sequence[int]) -> Predictions:
        """The predictions of the tweets at ``order`` (a reordering or a subset)."""
        return Predictions(
            [self.spans[j] for j in order],
            [self.tags[j] for j in order],
            [self.boxes[j] for j in order],
            [self.grounding_conf[j] for j in order],
            [self.samples[j] for j in order] if self.samples else [],
        )

    def extend(self, other: Predictions) -> None:
        """Append ``other``'s tweets."""
        self.spans += other.spans
        self.tags += other.tags
        self.boxes += other.boxes
        self.grounding_conf += other.grounding_conf
        self.samples += other.samples


@dataclass
class DecoderInput:
    """One batch's forward output with what maps its rows back to tweets.

    Attributes:
        out: the model's output (rows: the chunk's examples, tweet-major).
        items: the batch's tweets, in batch order.
        samples: the samples ``items`` index into.
    """

    out: Any
    items: list[TweetItem]
    samples: Sequence[Sample]

    def rows(self) -> list[range]:
        """Each tweet's example rows in ``out``."""
        ranges, row = [], 0
        for it in self.items:
            ranges.append(range(row, row + len(it.examples)))
            row += len(it.examples)
        return ranges


class Decoder:
    """A decoding strategy (the contract of :data:`DECODER_REGISTRY`).

    A registered decoder is a class built without arguments. It reads one batch's forward output
    and returns, for every thresholds pair asked, each tweet's entities (``(span, score)``, sorted
    by start, not overlapping); the BIO tags follow from them. Decoding at several thresholds
    must need no second forward pass.
    """

    name: ClassVar[str] = ""

    def check(self, model: Any) -> None:
        """Raise a ConfigError when ``model`` cannot be decoded this way."""

    def span_floor(self, thresholds: Sequence[Thresholds]) -> float:
        """The lowest span probability the match head must score spans from for ``thresholds``.

        The forward pass scores the match of only the spans a threshold ``>= floor`` can accept
        (1.0: none beyond the loss's; see :meth:`~mnerqg_graph.model.MnerqgModel.forward`).
        """
        return 1.0

    def decode(
        self, model: Any, batch: DecoderInput, thresholds: Sequence[Thresholds]
    ) -> dict[Thresholds, list[list[ScoredSpan]]]:
        """Each tweet's entities (in ``batch.items`` order) at each of ``thresholds``."""
        raise NotImplementedError


DECODER_REGISTRY: Registry[Decoder] = Registry("decoder", Decoder, doc=Decoder.__doc__ or "")


def get_decoder(name: str | Decoder) -> Decoder:
    """The decoder named ``name`` (an instance is returned as is)."""
    return DECODER_REGISTRY.build(name)


@DECODER_REGISTRY.register("span")
class SpanDecoder(Decoder):
    """The MRC span heads (see the module docstring)."""

    name = "span"

    def span_floor(self, thresholds: Sequence[Thresholds]) -> float:
        """The lowest span threshold asked."""
        return min(t[0] for t in thresholds)

    def decode(
        self, model: Any, batch: DecoderInput, thresholds: Sequence[Thresholds]
    ) -> dict[Thresholds, list[list[ScoredSpan]]]:
        """Candidates per example at each threshold, resolved per tweet by score."""
        got: dict[Thresholds, list[list[ScoredSpan]]] = {}
        rows = batch.rows()
        for t in thresholds:
            per_example = model.span_candidates(batch.out, t[0], t[1])
            tweets: list[list[ScoredSpan]] = []
            for it, rr in zip(batch.items, rows, strict=True):
                n_tok = len(batch.samples[it.index].tweet.tokens)
                cands = [
                    (a, b, ex.type, sc)
                    for ex, r in zip(it.examples, rr, strict=True)
                    for a, b, sc in per_example[r]
                ]
                score = {(a, b, typ): sc for a, b, typ, sc in cands}
                tweets.append(
                    [(sp, score[(sp.start, sp.end, sp.type)]) for sp in decode_spans(n_tok, cands)]
                )
            got[t] = tweets
        return got


def tag_head_spans(
    log_probs: torch.Tensor,
    token_mask: torch.Tensor,
    existence: torch.Tensor,
    types: Sequence[str],
    existence_threshold: float = 0.0,
    crf: Any = None,
) -> list[ScoredSpan]:
    """One tweet's entities from the auxiliary tagger, read from all of the tweet's sequences.

    The tweet is read once per type (``[CLS] query [SEP] tweet [SEP]``); the tagger tags every
    type in each reading, so its log-probabilities are averaged over the readings. Tokens the
    encoder did not see (truncation, zero-piece tokens) are ``O``, except a zero-piece token
    inside an entity, which stays part of it (:func:`bridge_unseen_tokens`); ``I-`` without
    ``B-`` opens an entity, as conlleval counts it.

    Args:
        log_probs: the tagger's log-probabilities in each of the tweet's readings.
        token_mask: the tokens that are graph nodes.
        existence: the existence head's probability of each type (tag-id order).
        types: entity types in tag-id order (``config.types``).
        existence_threshold: the tags of a type whose existence probability is under it are
            not predicted (0: off).
        crf: the model's :class:`~mnerqg_graph.heads.crf.BioCrf` (``tag_crf``): the best tag
            sequence under its transitions instead of each token's best tag (None: the latter).

    Returns:
        ``(span, score)`` sorted by start; the score is the span's mean tag probability over
        its seen tokens.

    Shapes:
        log_probs: ``[T, n, 1 + 2 T]``; token_mask: ``[n]``; existence: ``[T]``
        (``n``: the tweet's tokens).
    """
    lp = log_probs.float().mean(0)  # [n, C]
    if existence_threshold > 0:
        off = (existence < existence_threshold).repeat_interleave(2)
        lp = lp.masked_fill(torch.cat([off.new_zeros(1), off])[None, :], float("-inf"))
    if crf is not None:  # one tag per kept token, in order; masked tokens stay O
        path = crf.viterbi(lp[None], token_mask[None])[0]
        ids = torch.zeros(lp.shape[0], dtype=torch.long)
        ids[token_mask] = torch.tensor(path, dtype=torch.long)
        best = lp.gather(1, ids[:, None])[:, 0]
    else:
        best, ids = lp.max(-1)
    ids = bridge_unseen_tokens(ids.masked_fill(~token_mask, 0), token_mask)
    names = bio_tag_names(types)
    conf = best.exp().masked_fill(~token_mask, 0.0).tolist()
    seen = [0, *token_mask.long().cumsum(0).tolist()]  # seen tokens before each position
    return [
        (sp, sum(conf[sp.start : sp.end]) / (seen[sp.end] - seen[sp.start]))
        for sp in spans_from_tags([names[i] for i in ids.tolist()])
    ]


def bridge_unseen_tokens(ids: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Give a zero-piece token inside an entity that entity's ``I-`` tag.

    A token the encoder did not see between ``B-t``/``I-t`` and ``I-t`` joins them, so that
    ``B-t <unseen> I-t`` stays one entity (as the CRF's chain links it).

    Args:
        ids: tag ids (:func:`~mnerqg_graph.data.collate.bio_tag_names` order), ``O`` on unseen
            tokens.
        token_mask: the tokens that are graph nodes.

    Returns:
        ``ids`` with each unseen token between a ``B-t``/``I-t`` and an ``I-t`` set to ``I-t``;
        unseen tokens before the first or after the last seen token stay ``O``.

    Shapes:
        ids, token_mask: ``[n]``.
    """
    n = ids.numel()
    pos = torch.arange(n, device=ids.device)
    prev = torch.where(token_mask, pos, -1).cummax(0).values
    nxt = torch.where(token_mask, pos, n).flip(0).cummin(0).values.flip(0)
    inner = ~token_mask & (prev >= 0) & (nxt < n)
    before, after = ids[prev.clamp(min=0)], ids[nxt.clamp(max=max(n - 1, 0))]
    # I-t ids are even and positive, and B-t is I-t - 1
    joins = inner & (after > 0) & (after % 2 == 0) & ((before == after) | (before == after - 1))
    return torch.where(joins, after, ids)


@DECODER_REGISTRY.register("tags")
class TagDecoder(Decoder):
    """The auxiliary BIO tagger, averaged over each tweet's readings (see the module docstring)."""

    name = "tags"

    def check(self, model: Any) -> None:
        """The model needs its tagger (``tag_head=True``)."""
        if getattr(model, "tag_head", None) is None:
            raise ConfigError("decoder 'tags' needs a model trained with tag_head=True")

    def decode(
        self, model: Any, batch: DecoderInput, thresholds: Sequence[Thresholds]
    ) -> dict[Thresholds, list[list[ScoredSpan]]]:
        """The tagger's entities at each existence threshold."""
        out, types = batch.out, model.config.types
        tag_lp = torch.log_softmax(out.tag_logits.float(), -1).cpu()
        existence = torch.sigmoid(out.existence_logits.float()).cpu()
        token_mask = out.token_mask.cpu()
        got: dict[Thresholds, list[list[ScoredSpan]]] = {t: [] for t in thresholds}
        for it, rr in zip(batch.items, batch.rows(), strict=True):
            n_tok = len(batch.samples[it.index].tweet.tokens)
            r0, r1 = rr.start, rr.stop
            by_type = torch.zeros(len(types))  # existence in tag-id (type index) order
            by_type[[ex.type_index for ex in it.examples]] = existence[r0:r1]
            for t in thresholds:
                got[t].append(
                    tag_head_spans(
                        tag_lp[r0:r1, :n_tok],
                        token_mask[r0, :n_tok],
                        by_type,
                        types,
                        t[1],
                        getattr(model, "tag_crf", None),
                    )
                )
        return got


def ground(
    model: Any, batch: DecoderInput
) -> tuple[list[dict[str, ScoredBox]], list[dict[str, float]], list[dict[str, ScoredBox]]]:
    """Per tweet of the batch, its box per type (pixels), confidences and normalised boxes.

    Returns:
        ``(boxes, confidences, normalised)``: ``boxes[i][type]`` is ``(box, confidence)`` where
        the confidence reaches the config's ``grounding_threshold``, in pixels of the original
        image when the sample knows its size, else None; ``confidences[i][type]`` the best cell's
        confidence of every type grounded (also under the threshold); ``normalised[i][type]``
        the best cell's ``(box in [0, 1], confidence)`` whatever it is, None without an image.
    """
    per_example = model.ground(batch.out)
    threshold = float(model.config.decoding.grounding_threshold)
    boxes: list[dict[str, ScoredBox]] = []
    confs: list[dict[str, float]] = []
    norm: list[dict[str, ScoredBox]] = []
    for it, rr in zip(batch.items, batch.rows(), strict=True):
        sample = batch.samples[it.index]
        b: dict[str, ScoredBox] = {}
        c: dict[str, float] = {}
        n: dict[str, ScoredBox] = {}
        for ex, r in zip(it.examples, rr, strict=True):
            pred = per_example[r]
            b[ex.type] = None
            n[ex.type] = pred
            if pred is None:
                continue
            box, conf = pred
            c[ex.type] = conf
            if conf >= threshold:
                if sample.image_size is not None:
                    w, h = sample.image_size
                    box = [box[0] * w, box[1] * h, box[2] * w, box[3] * h]
                b[ex.type] = (box, conf)
        boxes.append(b)
        confs.append(c)
        norm.append(n)
    return boxes, confs, norm


def tags_of(n_tokens: int, entities: Sequence[ScoredSpan]) -> list[str]:
    """The flat BIO tags of a tweet's decoded entities."""
    return tags_from_spans(n_tokens, [sp for sp, _ in entities])


@dataclass
class DecodedBatch:
    """Everything decoded from one batch's forward output (tweets in ``batch.items`` order).

    Attributes:
        entities: per decoding asked, each tweet's entities.
        boxes: each tweet's box per type (pixels; None: not in the image), see :func:`ground`.
        grounding_conf: each tweet's best-cell confidence per type.
        normalised: each tweet's best cell per type, ``(box in [0, 1], confidence)``.
    """

    entities: dict[Decoding, list[list[ScoredSpan]]]
    boxes: list[dict[str, ScoredBox]]
    grounding_conf: list[dict[str, float]]
    normalised: list[dict[str, ScoredBox]]


def decoders_of(decodings: Sequence[Decoding]) -> dict[str, list[Thresholds]]:
    """The thresholds asked of each decoder, decoders in order of first appearance."""
    by: dict[str, list[Thresholds]] = {}
    for d in decodings:
        ts = by.setdefault(d.decoder, [])
        if d.thresholds not in ts:
            ts.append(d.thresholds)
    return by


def check_decodings(model: Any, decodings: Sequence[Decoding]) -> float:
    """Check that ``model`` can decode every decoding; the span floor of the forward pass.

    Raises:
        ConfigError: an unknown decoder, or one the model cannot use.
    """
    if not decodings:
        raise ValueError("no decoding asked")
    floor = 1.0
    for name, ts in decoders_of(decodings).items():
        dec = get_decoder(name)
        dec.check(model)
        floor = min(floor, dec.span_floor(ts))
    return floor


def decode_batch(model: Any, batch: DecoderInput, decodings: Sequence[Decoding]) -> DecodedBatch:
    """Decode one batch's forward output at every decoding: the one decoding step.

    Every caller that turns a forward pass into predictions (``predict``, the choice of decoder
    and thresholds on validation, evaluation, ``mnerqg visualize``, the report, the benchmarks)
    comes through here.
    """
    entities: dict[Decoding, list[list[ScoredSpan]]] = {}
    for name, ts in decoders_of(decodings).items():
        got = get_decoder(name).decode(model, batch, ts)
        for t in ts:
            entities[Decoding(name, *t)] = got[t]
    boxes, confs, norm = ground(model, batch)
    return DecodedBatch(entities, boxes, confs, norm)
