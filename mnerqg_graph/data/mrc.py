"""The machine-reading-comprehension (MRC) formulation of NER used by MNER-QG.

Every tweet is asked one question per entity type ``t``: the model marks the start and end tokens
of each type-``t`` entity, scores (start, end) pairs, says whether ``t`` occurs at all, and grounds
``t`` in the image. This module turns tweets into those examples and turns predicted spans back
into one flat BIO sequence over the original tokens.

Query encodings (:data:`QUERY_ENCODINGS`), with the tokenizer's own special tokens:

* ``per_type`` (the paper's formulation): one encoder sequence per example,
  ``[CLS] query_t [SEP] tweet [SEP]``; the encoder reads each tweet ``T`` times.
* ``packed``: one sequence per tweet holding every query and then the tweet,
  ``[CLS] q_1 [SEP] q_2 [SEP] ... q_T [SEP] tweet [SEP]``, shared by the tweet's ``T`` examples
  (they carry the same ``input_ids`` object); each example keeps its own query's positions
  (``query_span``), so the model still gives every (tweet, type) its query node. ``query_slot``
  says which query each piece belongs to (a query's pieces and the separator after it), which the
  model reads to let a query attend only to itself and the tweet (``packed_attention="isolated"``).
  Position ids (:data:`PACKED_POSITIONS`): ``sequential`` counts through the whole sequence;
  ``per_query`` restarts every query after ``[CLS]`` and places the tweet as if it followed the
  longest query alone, so each query and the tweet sit where ``per_type`` puts them and no
  position exceeds ``max_length``. ``packed_separators=False`` drops the separator between
  queries, ``[CLS] q_1 q_2 ... q_T [SEP] tweet [SEP]``: with one-word queries (the ``words``
  query file) the queries then cost ``T + 1`` pieces a tweet.

Efficiency: the tweets' tokens are word-piece tokenised once, in one batched call; each query once;
the ``len(queries)`` examples of a tweet are assembled by list concatenation.

Alignment: ``first_piece[w]`` is the position, in the full input sequence, of token ``w``'s first
word piece, or -1 when token ``w`` has no word piece (invisible characters such as U+FE0F or U+200B)
or was cut off by truncation. Labels are always over the original tokens, so evaluation never
depends on the word-piece tokenizer.

Truncation: the budget for tweet pieces is ``max_length`` minus the special tokens of one
``[CLS] query [SEP] tweet [SEP]`` pair minus the longest query, the same for every type of a tweet
and in both query encodings (a packed sequence is longer than ``max_length`` by the other queries,
never shorter on the tweet), and a tweet is cut at a token boundary (a token
whose pieces do not all fit is cut whole). Truncated tweets are counted and named in
:class:`MrcReport`; entities that reach into the cut part get no training labels, but they stay in
the tweet's gold tags, so the evaluation counts them as misses.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mnerqg_graph.boxes import NormBox, normalise_boxes
from mnerqg_graph.data.tags import canonical_type, spans_from_tags, tags_from_spans
from mnerqg_graph.data.types import Sample, Span, Tweet
from mnerqg_graph.encoders.features import encoder_words, is_url
from mnerqg_graph.errors import ConfigError, DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: A decoding candidate: ``(start, end_exclusive, type, score)`` over a tweet's original tokens.
Candidate = tuple[int, int, str, float]

#: How the queries are encoded: one sequence per (tweet, type), or one per tweet (module docstring).
QUERY_ENCODINGS: tuple[str, ...] = ("per_type", "packed")
#: Position ids of a packed sequence (module docstring).
PACKED_POSITIONS: tuple[str, ...] = ("sequential", "per_query")


@dataclass(slots=True)
class MrcExample:
    """One (tweet, entity type) question.

    Attributes:
        sample_index: index of the tweet in the list given to :func:`build_mrc_examples`.
        tweet_id: the tweet's IMGID.
        type: the canonical entity type asked about.
        type_index: the type's position in the query file.
        input_ids: word-piece ids of the encoder sequence the example reads (tokenizer's
            specials): ``[CLS] query [SEP] tweet [SEP]``, or the tweet's packed sequence, the same
            list object for all of a tweet's examples.
        token_type_ids: segment ids, same length as ``input_ids``.
        first_piece: per original token, position of its first piece in ``input_ids``, or -1.
        query_span: ``(start, end)`` positions of this example's query pieces in ``input_ids``.
        position_ids: position id of every piece (None: ``0 .. len - 1``).
        query_slot: packed only: per piece, the index of the query it belongs to (its pieces and
            the separator after it), -1 for ``[CLS]`` and the tweet part; None in ``per_type``.
        n_tokens: number of original tokens of the tweet (the length of every label list).
        n_kept: the first ``n_kept`` tokens survived truncation (``n_tokens`` when not truncated).
        start_labels: 1 where a type-``type`` entity starts, else 0; length ``n_tokens``.
        end_labels: 1 where a type-``type`` entity ends (inclusive), else 0; length ``n_tokens``.
        spans: span-match positives ``(start, end_inclusive)`` with ``end - start < max_span_len``.
        exists: whether the tweet has an entity of this type (cut or long ones included).
        boxes: grounding targets: this type's gold boxes, ``xyxy`` normalised to [0, 1].
        truncated: whether the tweet was truncated.
    """

    sample_index: int
    tweet_id: str
    type: str
    type_index: int
    input_ids: list[int]
    token_type_ids: list[int]
    first_piece: list[int]
    n_tokens: int
    n_kept: int
    start_labels: list[int]
    end_labels: list[int]
    spans: list[tuple[int, int]]
    exists: bool
    boxes: list[NormBox]
    truncated: bool
    query_span: tuple[int, int] = (0, 0)
    position_ids: list[int] | None = None
    query_slot: list[int] | None = None

    @property
    def packed(self) -> bool:
        """Whether the example reads its tweet's packed sequence (shared by all its types)."""
        return self.query_slot is not None


@dataclass
class MrcReport:
    """What :func:`build_mrc_examples` had to change or could not represent.

    Attributes:
        n_tweets: tweets read.
        n_examples: examples built (``n_tweets * n_types``).
        n_entities: gold entities (conlleval count) over all tweets.
        truncated_ids: IMGIDs of the tweets cut to fit ``max_length``.
        n_tokens_cut: original tokens cut off by truncation (their ``first_piece`` is -1).
        cut_entities: ``(tweet id, span)`` of entities reaching into a cut part (no labels).
        long_entities: ``(tweet id, span)`` of entities longer than ``max_span_len`` tokens (start
            and end labels set, no span-match positive).
        n_zero_piece_tokens: tokens with no word piece (invisible characters), all kept as O.
        unreachable_entities: ``(tweet id, span)`` of entities whose first or last token has no
            word piece, so a model cannot point at it (labels are still set).
        boxes_without_size: IMGIDs whose boxes were dropped because the image size is unknown.
        n_urls_replaced: URL tokens the encoder read as ``url_word``.
    """

    n_tweets: int = 0
    n_examples: int = 0
    n_entities: int = 0
    truncated_ids: list[str] = field(default_factory=list)
    n_tokens_cut: int = 0
    cut_entities: list[tuple[str, Span]] = field(default_factory=list)
    long_entities: list[tuple[str, Span]] = field(default_factory=list)
    n_zero_piece_tokens: int = 0
    unreachable_entities: list[tuple[str, Span]] = field(default_factory=list)
    boxes_without_size: list[str] = field(default_factory=list)
    n_urls_replaced: int = 0

    @property
    def n_truncated(self) -> int:
        """Number of truncated tweets."""
        return len(self.truncated_ids)

    def summary(self) -> str:
        """A one-line human-readable summary."""
        return (
            f"{self.n_tweets} tweets, {self.n_examples} MRC examples, {self.n_entities} entities; "
            f"truncated {self.n_truncated} tweets ({self.n_tokens_cut} tokens, "
            f"{len(self.cut_entities)} entities cut); {len(self.long_entities)} entities longer "
            f"than max_span_len; {self.n_zero_piece_tokens} zero-piece tokens "
            f"({len(self.unreachable_entities)} entities unreachable); "
            f"{len(self.boxes_without_size)} tweets with boxes but no image size"
            + (f"; {self.n_urls_replaced} URLs read as one word" if self.n_urls_replaced else "")
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (spans as ``[tweet_id, start, end, type]``)."""

        def spans(items: list[tuple[str, Span]]) -> list[list[Any]]:
            return [[tid, s.start, s.end, s.type] for tid, s in items]

        return {
            "n_tweets": self.n_tweets,
            "n_examples": self.n_examples,
            "n_entities": self.n_entities,
            "n_truncated": self.n_truncated,
            "truncated_ids": list(self.truncated_ids),
            "n_tokens_cut": self.n_tokens_cut,
            "cut_entities": spans(self.cut_entities),
            "long_entities": spans(self.long_entities),
            "n_zero_piece_tokens": self.n_zero_piece_tokens,
            "unreachable_entities": spans(self.unreachable_entities),
            "boxes_without_size": list(self.boxes_without_size),
            "n_urls_replaced": self.n_urls_replaced,
        }


@dataclass(frozen=True)
class _PairTemplate:
    """Where a tokenizer puts its special tokens around a pair ``(A, B)``, and the segment ids."""

    pre: list[int]
    pre_types: list[int]
    mid: list[int]
    mid_types: list[int]
    post: list[int]
    post_types: list[int]
    a_type: int
    b_type: int

    @property
    def n_special(self) -> int:
        return len(self.pre) + len(self.mid) + len(self.post)


def _pair_template(tokenizer: PreTrainedTokenizerBase) -> _PairTemplate:
    """Read the tokenizer's own pair template (``[CLS] A [SEP] B [SEP]`` for BERT) by probing it.

    The tokenizer's post-processor is position-independent, so encoding one short pair and reading
    ``sequence_ids`` tells where its special tokens go, whatever they are.

    Raises:
        ConfigError: the tokenizer is not a fast tokenizer, or its pair layout is not
            ``specials A specials B specials``.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer; the MRC builder needs "
            "word_ids() to align word pieces with tokens"
        )
    enc = tokenizer("a", "b", add_special_tokens=True, return_token_type_ids=True)
    ids: list[int] = list(enc["input_ids"])
    types: list[int] = list(enc.get("token_type_ids") or [0] * len(ids))
    seq: list[int | None] = list(enc.sequence_ids(0))
    a_pos = [i for i, s in enumerate(seq) if s == 0]
    b_pos = [i for i, s in enumerate(seq) if s == 1]
    layout_ok = (
        bool(a_pos)
        and bool(b_pos)
        and a_pos == list(range(a_pos[0], a_pos[-1] + 1))
        and b_pos == list(range(b_pos[0], b_pos[-1] + 1))
        and a_pos[-1] < b_pos[0]
        and len({types[i] for i in a_pos}) == 1
        and len({types[i] for i in b_pos}) == 1
    )
    if not layout_ok:
        raise ConfigError(
            f"{type(tokenizer).__name__}: cannot read its pair layout (sequence ids {seq})"
        )
    a0, a1, b0, b1 = a_pos[0], a_pos[-1] + 1, b_pos[0], b_pos[-1] + 1
    return _PairTemplate(
        pre=ids[:a0],
        pre_types=types[:a0],
        mid=ids[a1:b0],
        mid_types=types[a1:b0],
        post=ids[b1:],
        post_types=types[b1:],
        a_type=types[a0],
        b_type=types[b0],
    )


def _norm_boxes(sample: Sample, typ: str) -> list[NormBox]:
    """The boxes of ``typ``'s entities in ``sample`` (:func:`~mnerqg_graph.boxes.normalise_boxes`).

    Normalised by the image size and clipped; a box empty after clipping is left out.
    """
    assert sample.image_size is not None
    return normalise_boxes(
        (
            b
            for span, boxes in sample.boxes.items()
            if canonical_type(span.type) == typ
            for b in boxes
        ),
        sample.image_size,
    )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small acyclic objects.

    Building tens of thousands of examples otherwise triggers repeated full collections that scan
    every live object; reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_mrc_examples(
    samples: Sequence[Sample | Tweet],
    tokenizer: PreTrainedTokenizerBase,
    queries: Mapping[str, str],
    max_length: int = 128,
    max_span_len: int = 8,
    url_word: str = "",
    query_encoding: str = "per_type",
    packed_positions: str = "sequential",
    max_positions: int | None = None,
    packed_separators: bool = True,
) -> tuple[list[MrcExample], MrcReport]:
    """Build the MRC examples of a list of tweets: one per (tweet, type), types in query order.

    The examples of one tweet are consecutive (its image is encoded once and shared by them).

    Args:
        samples: tweets, bare or with their image and boxes.
        tokenizer: any Hugging Face fast tokenizer; its own special tokens and segment ids are
            used (byte-level BPE tokenizers need ``add_prefix_space=True`` for pre-split words).
        queries: canonical type -> query sentence, in the order to ask them.
        max_length: maximum input length in word pieces, special tokens included.
        max_span_len: longest entity, in tokens, that gets a span-match positive.
        url_word: the encoder reads this word in place of every URL token (``""``: the URL as it
            is); tokens, labels and outputs keep the URL.
        query_encoding: ``per_type`` or ``packed`` (module docstring).
        packed_positions: ``sequential`` or ``per_query`` position ids of packed sequences.
        max_positions: the encoder's position limit (``max_position_embeddings``), checked
            against ``max_length`` (``per_type``) or the longest packed position id (None: not
            checked).
        packed_separators: packed only: a separator after every query (True) or only after the
            last one (False).

    Returns:
        The examples and a report of truncations, long entities, zero-piece tokens and boxes
        without an image size.

    Raises:
        ConfigError: no queries, a type given twice, a non-positive ``max_span_len``,
            ``max_length`` too small for the longest query, a tokenizer that is not fast, an
            entity type without a query, an unknown query encoding or packed position scheme,
            a ``max_length`` (``per_type``) or packed position ids past ``max_positions``.
        DataError: a tweet has a malformed tag or a tags/tokens length mismatch.
    """
    if query_encoding not in QUERY_ENCODINGS:
        raise ConfigError(
            f"query_encoding must be one of {', '.join(QUERY_ENCODINGS)}, not {query_encoding!r}"
        )
    if packed_positions not in PACKED_POSITIONS:
        raise ConfigError(
            f"packed_positions must be one of {', '.join(PACKED_POSITIONS)}, "
            f"not {packed_positions!r}"
        )
    with _gc_paused():
        return _build(
            samples,
            tokenizer,
            queries,
            max_length,
            max_span_len,
            url_word,
            _Packing(packed_positions, packed_separators) if query_encoding == "packed" else None,
            max_positions,
        )


@dataclass(frozen=True)
class _Packing:
    """The packed encoding's options (None in its place: ``per_type``)."""

    positions: str
    separators: bool = True


@dataclass(frozen=True)
class _PackedHead:
    """Everything before the tweet in a packed sequence, and where each query sits in it."""

    ids: list[int]
    types: list[int]
    positions: list[int]
    slots: list[int]
    spans: list[tuple[int, int]]
    tweet_position: int  # position id of the tweet's first piece

    @staticmethod
    def build(
        template: _PairTemplate,
        query_ids: list[list[int]],
        positions: str,
        separators: bool = True,
    ) -> _PackedHead:
        """``pre q_1 mid q_2 mid ... q_T mid`` with its segment ids, position ids and slots.

        Without ``separators``: ``pre q_1 ... q_T mid``, the one ``mid`` shared (slot -1).
        """
        ids, types = list(template.pre), list(template.pre_types)
        pos, slots = list(range(len(template.pre))), [-1] * len(template.pre)
        spans: list[tuple[int, int]] = []
        longest = max(len(q) for q in query_ids)
        for slot, q in enumerate(query_ids):
            spans.append((len(ids), len(ids) + len(q)))
            sep = template.mid if separators else []
            part = q + sep
            ids += part
            types += [template.a_type] * len(q) + (template.mid_types if separators else [])
            slots += [slot] * len(part)
            first = len(template.pre) if positions == "per_query" else len(pos)
            pos += range(first, first + len(part))
        if not separators:  # one separator between the queries and the tweet
            first = len(template.pre) + longest if positions == "per_query" else len(pos)
            ids += template.mid
            types += template.mid_types
            slots += [-1] * len(template.mid)
            pos += range(first, first + len(template.mid))
        tweet_position = (
            len(template.pre) + longest + len(template.mid)
            if positions == "per_query"
            else len(pos)
        )
        return _PackedHead(ids, types, pos, slots, spans, tweet_position)


def _build(
    samples: Sequence[Sample | Tweet],
    tokenizer: PreTrainedTokenizerBase,
    queries: Mapping[str, str],
    max_length: int,
    max_span_len: int,
    url_word: str = "",
    packing: _Packing | None = None,
    max_positions: int | None = None,
) -> tuple[list[MrcExample], MrcReport]:
    """The body of :func:`build_mrc_examples` (same arguments, returns and errors)."""
    if not queries:
        raise ConfigError("no entity-type queries given")
    if max_span_len < 1:
        raise ConfigError(f"max_span_len must be >= 1, got {max_span_len}")
    types = [canonical_type(t) for t in queries]
    if len(set(types)) != len(types):
        raise ConfigError(f"entity types {list(queries)} repeat a type (MISC is OTHER)")
    template = _pair_template(tokenizer)
    query_texts = [queries[t] for t in queries]
    query_ids: list[list[int]] = tokenizer(query_texts, add_special_tokens=False)["input_ids"]
    budget = max_length - template.n_special - max(len(q) for q in query_ids)
    if budget < 1:
        raise ConfigError(
            f"max_length={max_length} leaves no room for the tweet after the longest query "
            f"({max(len(q) for q in query_ids)} pieces) and {template.n_special} special tokens"
        )
    all_samples = [s if isinstance(s, Sample) else Sample(tweet=s) for s in samples]
    report = MrcReport(n_tweets=len(all_samples))

    # Gold spans per tweet, checked before any tokenisation.
    gold: list[list[Span]] = []
    for sample in all_samples:
        tweet = sample.tweet
        where = tweet.source or "<memory>"
        if len(tweet.tags) != len(tweet.tokens):
            raise DataError(
                where,
                f"tweet {tweet.id}: {len(tweet.tokens)} tokens but {len(tweet.tags)} tags",
                line=tweet.line or None,
            )
        try:
            spans = spans_from_tags(tweet.tags)
        except ValueError as exc:
            raise DataError(where, f"tweet {tweet.id}: {exc}", line=tweet.line or None) from None
        gold.append(spans)
    seen_types = {s.type for spans in gold for s in spans}
    if not seen_types <= set(types):
        missing = sorted(seen_types - set(types))
        raise ConfigError(
            f"no query for entity type(s) {', '.join(missing)} found in the data "
            f"(the queries define {', '.join(types)})"
        )

    # One batched tokenizer call for all tweets.
    token_lists = [encoder_words(s.tweet.tokens, url_word) for s in all_samples]
    encoded = tokenizer(
        token_lists,
        is_split_into_words=True,
        add_special_tokens=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    encodings = encoded.encodings
    assert encodings is not None

    if packing is None:  # everything before the tweet, per type
        if max_positions is not None and max_length > max_positions:
            raise ConfigError(
                f"max_length {max_length} exceeds the encoder's {max_positions} positions: a "
                f"sequence of {max_length} pieces would read position ids the encoder lacks"
            )
        offsets = [len(template.pre) + len(q) + len(template.mid) for q in query_ids]
        heads = [template.pre + q + template.mid for q in query_ids]
        head_types = [
            template.pre_types + [template.a_type] * len(q) + template.mid_types for q in query_ids
        ]
        query_spans = [(len(template.pre), len(template.pre) + len(q)) for q in query_ids]
        packed = None
    else:  # one head for all types
        packed = _PackedHead.build(template, query_ids, packing.positions, packing.separators)
        offsets = [len(packed.ids)] * len(query_ids)
        query_spans = packed.spans
        last_position = packed.tweet_position + budget + len(template.post) - 1
        if max_positions is not None and last_position >= max_positions:
            raise ConfigError(
                f"a packed sequence of {len(query_ids)} queries ({sum(map(len, query_ids))} "
                f"pieces) and a {budget}-piece tweet reaches position {last_position}, past the "
                f"encoder's {max_positions} positions: use packed_positions=per_query, "
                "shorter queries or a smaller max_length"
            )
    examples: list[MrcExample] = []
    for index, (sample, spans) in enumerate(zip(all_samples, gold, strict=True)):
        tweet = sample.tweet
        n = len(tweet.tokens)
        enc = encodings[index]
        piece_ids: list[int] = enc.ids
        first = [-1] * n
        last = [0] * n
        for pos, w in enumerate(enc.word_ids):
            if w is None:
                continue
            if first[w] < 0:
                first[w] = pos
            last[w] = pos + 1
        n_kept = n
        n_pieces = len(piece_ids)
        if n_pieces > budget:
            for w in range(n):
                if last[w] > budget:
                    n_kept = w
                    n_pieces = first[w]
                    break
            piece_ids = piece_ids[:n_pieces]
            report.truncated_ids.append(tweet.id)
            report.n_tokens_cut += n - n_kept
            for w in range(n_kept, n):
                first[w] = -1
        if url_word:  # the URLs the encoder read (not those truncation cut off)
            report.n_urls_replaced += sum(is_url(t) for t in tweet.tokens[:n_kept])
        zero = {w for w in range(n_kept) if first[w] < 0}
        report.n_zero_piece_tokens += len(zero)
        report.n_entities += len(spans)

        # Labelled spans per type.
        by_type: dict[str, list[Span]] = {}
        for span in spans:
            if span.end > n_kept:
                report.cut_entities.append((tweet.id, span))
                continue
            if span.end - span.start > max_span_len:
                report.long_entities.append((tweet.id, span))
            if span.start in zero or span.end - 1 in zero:
                report.unreachable_entities.append((tweet.id, span))
            by_type.setdefault(span.type, []).append(span)
        present = {s.type for s in spans}
        has_size = sample.image_size is not None
        if sample.boxes and not has_size:
            report.boxes_without_size.append(tweet.id)
        tail_types = [template.b_type] * len(piece_ids) + template.post_types
        tail = piece_ids + template.post
        truncated = n_kept < n
        has_missing = truncated or bool(zero)
        shared: tuple[list[int], list[int], list[int], list[int], list[int]] | None = None
        if packed is not None:  # one sequence, one alignment, for all of the tweet's examples
            off = offsets[0]
            shared = (
                packed.ids + tail,
                packed.types + tail_types,
                [f + off if f >= 0 else -1 for f in first],
                packed.positions
                + list(range(packed.tweet_position, packed.tweet_position + len(tail))),
                packed.slots + [-1] * len(tail),
            )

        for ti, typ in enumerate(types):
            off = offsets[ti]
            start_labels = [0] * n
            end_labels = [0] * n
            pairs: list[tuple[int, int]] = []
            for span in by_type.get(typ, ()):
                start_labels[span.start] = 1
                end_labels[span.end - 1] = 1
                if span.end - span.start <= max_span_len:
                    pairs.append((span.start, span.end - 1))
            position_ids: list[int] | None
            query_slot: list[int] | None
            if shared is not None:
                input_ids, token_type_ids, first_piece, position_ids, query_slot = shared
            else:
                input_ids, token_type_ids = heads[ti] + tail, head_types[ti] + tail_types
                first_piece = (
                    [f + off if f >= 0 else -1 for f in first]
                    if has_missing
                    else list(map(off.__add__, first))
                )
                position_ids = query_slot = None
            examples.append(
                MrcExample(
                    sample_index=index,
                    tweet_id=tweet.id,
                    type=typ,
                    type_index=ti,
                    input_ids=input_ids,
                    token_type_ids=token_type_ids,
                    first_piece=first_piece,
                    n_tokens=n,
                    n_kept=n_kept,
                    start_labels=start_labels,
                    end_labels=end_labels,
                    spans=pairs,
                    exists=typ in present,
                    boxes=_norm_boxes(sample, typ) if has_size and sample.boxes else [],
                    truncated=truncated,
                    query_span=query_spans[ti],
                    position_ids=position_ids,
                    query_slot=query_slot,
                )
            )
    report.n_examples = len(examples)
    return examples, report


def iter_tweet_groups(examples: Sequence[MrcExample]) -> Iterator[list[MrcExample]]:
    """Group consecutive examples of the same tweet (as :func:`build_mrc_examples` orders them).

    Args:
        examples: examples in builder order.

    Returns:
        An iterator of lists, one per tweet, each in query order.
    """
    group: list[MrcExample] = []
    for ex in examples:
        if group and ex.sample_index != group[0].sample_index:
            yield group
            group = []
        group.append(ex)
    if group:
        yield group


def gold_candidates(example: MrcExample) -> list[Candidate]:
    """An example's labels as decoding candidates, each with score 1.0.

    A candidate is a span-match positive whose start and end labels are both set, i.e. exactly what
    a perfect model would output for this (tweet, type).

    Args:
        example: one MRC example.

    Returns:
        ``(start, end_exclusive, type, 1.0)`` per labelled span.
    """
    return [
        (s, e + 1, example.type, 1.0)
        for s, e in example.spans
        if example.start_labels[s] and example.end_labels[e]
    ]


def decode_spans(n_tokens: int, candidates: Sequence[Candidate]) -> list[Span]:
    """Resolve the candidates of all types of one tweet into non-overlapping spans.

    Greedy: candidates are taken by descending score; one that overlaps an accepted span is
    skipped. Ties are broken deterministically: earlier start first, then the longer span, then
    the type name, so the result does not depend on the candidates' order.

    Args:
        n_tokens: number of original tokens of the tweet.
        candidates: ``(start, end_exclusive, type, score)`` from every type's predictions.

    Returns:
        The accepted spans, sorted by start.

    Raises:
        ValueError: a candidate lies outside ``[0, n_tokens)``, is empty, or has a NaN score.
    """
    for start, end, typ, score in candidates:
        if not 0 <= start < end <= n_tokens:
            raise ValueError(
                f"candidate ({start}, {end}, {typ}) outside a tweet of {n_tokens} tokens"
            )
        if math.isnan(score):
            raise ValueError(f"candidate ({start}, {end}, {typ}) has a NaN score")
    order = sorted(candidates, key=lambda c: (-c[3], c[0], c[0] - c[1], c[2]))
    taken = [False] * n_tokens
    accepted: list[Span] = []
    for start, end, typ, _ in order:
        if any(taken[start:end]):
            continue
        for i in range(start, end):
            taken[i] = True
        accepted.append(Span(start, end, typ))
    accepted.sort()
    return accepted


def spans_to_bio(n_tokens: int, spans: Sequence[Span]) -> list[str]:
    """A flat BIO sequence over the original tokens for non-overlapping spans.

    Args:
        n_tokens: number of original tokens.
        spans: non-overlapping spans (e.g. from :func:`decode_spans`).

    Returns:
        ``n_tokens`` tags; tokens outside every span (zero-piece or truncated ones included) are O.

    Raises:
        ValueError: a span is out of range or two spans overlap.
    """
    return tags_from_spans(n_tokens, list(spans))
