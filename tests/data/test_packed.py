"""Packed queries: one encoder sequence per tweet holding every type's query, then the tweet."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest.importorskip("transformers")

from mnerqg_graph.data.collate import TweetItem, collate  # noqa: E402
from mnerqg_graph.data.mrc import build_mrc_examples, iter_tweet_groups  # noqa: E402
from mnerqg_graph.data.types import Span, Tweet  # noqa: E402
from mnerqg_graph.errors import ConfigError  # noqa: E402
from tests.data.test_mrc import QUERIES, pieces, tiny_tokenizer  # noqa: E402

TWEET = Tweet("k", ["Barack", "Obama", "in", "New", "York", "don't"],
              ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"])  # fmt: skip


def test_packed_sequence_of_a_known_tweet() -> None:
    tok = tiny_tokenizer()
    cls, sep = tok.cls_token_id, tok.sep_token_id
    q = [pieces(tok, QUERIES[t]) for t in QUERIES]
    tweet_pieces = [pieces(tok, w) for w in TWEET.tokens]
    examples, report = build_mrc_examples([TWEET], tok, QUERIES, query_encoding="packed")
    assert [e.type for e in examples] == list(QUERIES) and report.n_examples == 4
    head = [cls]
    for qi in q:
        head += qi + [sep]
    expected = head + [p for w in tweet_pieces for p in w] + [sep]
    first = examples[0]
    assert first.input_ids == expected
    # one sequence for the tweet: every example reads the same list object
    assert all(e.input_ids is first.input_ids and e.packed for e in examples)
    assert first.token_type_ids == [0] * len(head) + [1] * (len(expected) - len(head))
    # each type's query span covers exactly that query's pieces
    start = 1
    for t, (e, qi) in enumerate(zip(examples, q, strict=True)):
        a, b = e.query_span
        assert (a, b) == (start, start + len(qi)) and e.input_ids[a:b] == qi
        assert e.query_slot is not None
        assert e.query_slot[a : b + 1] == [t] * (len(qi) + 1)  # its pieces and its [SEP]
        start = b + 1
    assert first.query_slot is not None
    assert first.query_slot[0] == -1 and set(first.query_slot[len(head) :]) == {-1}
    # token alignment: each token's first piece, in the shared sequence
    pos = len(head)
    for w, pw in enumerate(tweet_pieces):
        assert first.first_piece[w] == pos and expected[pos] == pw[0]
        pos += len(pw)
    # labels stay per type
    by = {e.type: e for e in examples}
    assert by["PER"].spans == [(0, 1)] and by["LOC"].spans == [(3, 4)]
    assert not by["ORG"].exists and by["ORG"].start_labels == [0] * 6
    assert first.position_ids == list(range(len(expected)))  # sequential by default


def test_per_query_positions_restart_after_cls_and_place_the_tweet_after_the_longest() -> None:
    tok = tiny_tokenizer()
    q = [pieces(tok, QUERIES[t]) for t in QUERIES]
    examples, _ = build_mrc_examples(
        [TWEET], tok, QUERIES, query_encoding="packed", packed_positions="per_query"
    )
    e = examples[0]
    assert e.position_ids is not None
    for ex in examples:
        assert e.position_ids[ex.query_span[0]] == 1  # every query starts right after [CLS]
    assert e.position_ids[e.query_span[0] : e.query_span[1] + 1] == list(range(1, len(q[0]) + 2))
    tweet_start = e.first_piece[0]
    assert e.position_ids[tweet_start] == 2 + max(map(len, q))  # [CLS] longest [SEP]
    assert e.position_ids[tweet_start:] == list(
        range(2 + max(map(len, q)), 2 + max(map(len, q)) + len(e.input_ids) - tweet_start)
    )


def test_packed_without_separators_has_one_sep_before_the_tweet() -> None:
    tok = tiny_tokenizer()
    cls, sep = tok.cls_token_id, tok.sep_token_id
    q = [pieces(tok, QUERIES[t]) for t in QUERIES]
    tweet_pieces = [p for w in TWEET.tokens for p in pieces(tok, w)]
    examples, _ = build_mrc_examples(
        [TWEET], tok, QUERIES, query_encoding="packed", packed_separators=False
    )
    head = [cls] + [p for qi in q for p in qi] + [sep]
    first = examples[0]
    assert first.input_ids == head + tweet_pieces + [sep]
    assert first.token_type_ids == [0] * len(head) + [1] * (len(tweet_pieces) + 1)
    assert first.position_ids == list(range(len(first.input_ids)))
    assert first.query_slot is not None
    start = 1
    for t, (e, qi) in enumerate(zip(examples, q, strict=True)):
        a, b = e.query_span
        assert (a, b) == (start, start + len(qi)) and e.input_ids[a:b] == qi
        assert first.query_slot[a:b] == [t] * len(qi)  # its pieces only: no separator of its own
        start = b
    assert first.query_slot[len(head) - 1] == -1  # the one [SEP] is shared, like [CLS]
    assert first.first_piece[0] == len(head)
    # same tweet budget, same labels as with separators
    sep_examples, _ = build_mrc_examples([TWEET], tok, QUERIES, query_encoding="packed")
    assert [e.spans for e in examples] == [e.spans for e in sep_examples]
    # per_query positions: the tweet sits where per_type puts it after the longest query
    pq, _ = build_mrc_examples(
        [TWEET],
        tok,
        QUERIES,
        query_encoding="packed",
        packed_positions="per_query",
        packed_separators=False,
    )
    e = pq[0]
    assert e.position_ids is not None
    longest = max(map(len, q))
    assert e.position_ids[len(head) - 1] == 1 + longest  # the [SEP] right after the longest
    assert e.position_ids[e.first_piece[0]] == 2 + longest


def test_six_types_any_query_file() -> None:
    tok = tiny_tokenizer()
    queries = {**QUERIES, "EVENT": "lol the", "PRODUCT": "Cubs"}
    tweet = Tweet("s", ["the", "Cubs", "lol"], ["O", "B-PRODUCT", "O"])
    examples, report = build_mrc_examples([tweet], tok, queries, query_encoding="packed")
    assert [e.type for e in examples] == list(queries) and report.n_examples == 6
    assert len({id(e.input_ids) for e in examples}) == 1
    spans = [e.query_span for e in examples]
    assert all(b0 > a1 for (_, a1), (b0, _) in zip(spans, spans[1:], strict=False))
    assert examples[5].input_ids[slice(*spans[5])] == pieces(tok, "Cubs")
    assert {e.type: e.spans for e in examples}["PRODUCT"] == [(1, 1)]


def test_truncation_matches_per_type_for_the_same_budget() -> None:
    tok = tiny_tokenizer()
    query_len = max(len(pieces(tok, q)) for q in QUERIES.values())
    tokens = ["Obama", "in", "New", "York", "don't", "lol", "Barack", "Obama"]
    tags = ["B-PER", "O", "B-LOC", "I-LOC", "O", "O", "B-PER", "I-PER"]
    max_length = 3 + query_len + 6  # 6 tweet pieces: "don't" (pieces 5-7) does not fit
    tweets = [Tweet("long", tokens, tags), Tweet("s", ["lol"], ["O"])]
    per, rep_per = build_mrc_examples(tweets, tok, QUERIES, max_length=max_length)
    pk, rep_pk = build_mrc_examples(
        tweets, tok, QUERIES, max_length=max_length, query_encoding="packed"
    )
    assert rep_pk.to_dict() == rep_per.to_dict()  # same counts, same cut entities
    assert rep_pk.truncated_ids == ["long"] and rep_pk.cut_entities == [("long", Span(6, 8, "PER"))]
    for a, b in zip(per, pk, strict=True):
        assert (a.n_kept, a.truncated, a.spans, a.start_labels) == (
            b.n_kept,
            b.truncated,
            b.spans,
            b.start_labels,
        )
        # the tweet part is the same pieces, only the offset differs
        tail_a = [a.input_ids[p] if p >= 0 else None for p in a.first_piece]
        tail_b = [b.input_ids[p] if p >= 0 else None for p in b.first_piece]
        assert tail_a == tail_b
    assert len(pk[0].input_ids) > max_length  # longer by the other queries, never on the tweet


def test_packed_positions_past_the_encoder_are_a_config_error() -> None:
    tok = tiny_tokenizer()
    with pytest.raises(ConfigError, match="past the encoder's 40 positions"):
        build_mrc_examples([TWEET], tok, QUERIES, query_encoding="packed", max_positions=40)
    # per_query positions never pass max_length, so the same limit holds when max_length does
    longest = max(len(pieces(tok, q)) for q in QUERIES.values())
    build_mrc_examples(
        [TWEET],
        tok,
        QUERIES,
        max_length=longest + 13,
        query_encoding="packed",
        packed_positions="per_query",
        max_positions=longest + 13,
    )
    with pytest.raises(ConfigError, match="query_encoding must be one of"):
        build_mrc_examples([TWEET], tok, QUERIES, query_encoding="stacked")
    with pytest.raises(ConfigError, match="packed_positions must be one of"):
        build_mrc_examples([TWEET], tok, QUERIES, query_encoding="packed", packed_positions="x")


def test_collate_reads_one_sequence_per_tweet() -> None:
    tok = tiny_tokenizer()
    tweets = [TWEET, Tweet("s", ["lol"], ["O"])]
    examples, _ = build_mrc_examples(tweets, tok, QUERIES, query_encoding="packed")
    items = [
        TweetItem(g[0].sample_index, g, [1] * g[0].n_tokens, None)
        for g in iter_tweet_groups(examples)
    ]
    batch = collate(items, 8, 16, tok.pad_token_id)
    assert batch.input_ids.shape[0] == 2 and batch.num_examples == 8
    assert batch.example_sequence.tolist() == [0] * 4 + [1] * 4
    assert batch.query_span.tolist() == [list(e.query_span) for e in examples]
    short = len(examples[4].input_ids)
    assert batch.attention_mask[1].tolist() == [1] * short + [0] * (batch.input_ids.size(1) - short)
    assert batch.query_slot[1, short:].eq(-1).all()
    # padded positions keep counting, the real ones are the example's
    assert batch.position_ids[1, :short].tolist() == examples[4].position_ids
    per, _ = build_mrc_examples(tweets, tok, QUERIES)
    mixed = [items[0], TweetItem(1, per[4:], [1], None)]
    with pytest.raises(ValueError, match="mixes packed and per-type"):
        collate(mixed, 8, 16, tok.pad_token_id)
