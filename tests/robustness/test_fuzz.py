"""Property-based fuzzing of the CoNLL reader and of the MRC encode/decode pair.

* The CoNLL reader, fed random bytes or near-valid files (valid files with random damage), either
  returns tweets or raises :class:`~mnerqg_graph.errors.DataError` whose message starts with
  ``FILE:LINE:`` (a real line of the file); never any other exception, and never a silent loss:
  every token line of an accepted file is in a returned tweet.
* The MRC builder, fed random tags over tokens that include invisible characters, whitespace,
  unknown scripts and very long tokens, with a tiny tokenizer and small ``max_length``: decoding
  the gold labels (a perfect model's output) gives back every gold entity except those reported as
  cut by truncation or longer than ``max_span_len``, and those reported ones complete the gold BIO.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mnerqg_graph.data.conll import format_conll, read_conll
from mnerqg_graph.data.mrc import (
    build_mrc_examples,
    decode_spans,
    gold_candidates,
    iter_tweet_groups,
    spans_to_bio,
)
from mnerqg_graph.data.queries import load_queries
from mnerqg_graph.data.tags import normalise_tags, spans_from_tags
from mnerqg_graph.data.types import Tweet
from mnerqg_graph.errors import DataError

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ------------------------------------------------------------------------------ CoNLL reader


def _lines(data: bytes) -> int:
    if b"\r" in data and b"\n" not in data:  # CR-only line endings are read as line breaks
        return data.count(b"\r") + 1
    return data.count(b"\n") + 1


def _token_lines(data: bytes) -> int:
    """Lines the reader must turn into tokens when it accepts a file (its own line rules)."""
    text = data.decode("utf-8").removeprefix("\ufeff")
    if "\r" in text and "\n" not in text:  # CR-only line endings
        text = text.replace("\r", "\n")
    n = 0
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line or not line.strip(" \t"):
            continue  # blank, or whitespace-only (a warning, read as blank)
        if line.startswith("IMGID:") and not line.partition("\t")[2].strip(" \t"):
            continue  # an IMGID line (a TAB at its end is ignored)
        if line.startswith("\ufeffIMGID:") and "\t" not in line:
            continue  # one after a BOM inside the file (files joined with cat)
        n += 1
    return n


def check_read(path: Path, data: bytes) -> None:
    """The reader's contract on ``data`` (written to ``path``), strict and lenient."""
    path.write_bytes(data)
    n_lines = _lines(data)
    try:
        conll = read_conll(path, strict=True)
    except DataError as err:
        event("refused: " + err.message.split(":")[0][:24])
        m = re.match(rf"{re.escape(str(path))}:(\d+): \S", str(err))
        assert m, str(err)
        assert 1 <= int(m.group(1)) <= n_lines, (str(err), n_lines)
        assert err.line == int(m.group(1))
    else:
        event(f"accepted, {len(conll.problems)} warnings" if conll.problems else "accepted")
        assert not conll.fatal
        # nothing silently dropped: every token line is a token of a returned tweet
        assert sum(len(t.tokens) for t in conll.tweets) == _token_lines(data)
        for t in conll.tweets:
            assert len(t.tokens) == len(t.tags)
            assert 1 <= t.line <= n_lines
        # what was accepted writes back and reads back the same
        again = path.with_suffix(".again")
        again.write_bytes(conll.format().encode("utf-8"))
        reread = read_conll(again, strict=True)
        assert [(t.id, t.tokens, t.tags) for t in reread.tweets] == [
            (t.id, t.tokens, t.tags) for t in conll.tweets
        ]
    # lenient reading never raises on a readable file; every problem names a line
    lenient = read_conll(path, strict=False)
    assert all(p.line is not None and 1 <= p.line <= n_lines for p in lenient.problems)
    if not lenient.fatal:
        assert sum(len(t.tokens) for t in lenient.tweets) == _token_lines(data)


@FUZZ
@given(data=st.binary(max_size=300))
def test_reader_on_random_bytes(tmp_path: Path, data: bytes) -> None:
    check_read(tmp_path / "random.txt", data)


LINE_BYTES = st.sampled_from(
    [b"IMGID:1", b"IMGID:", b"IMGID:a b", b"Kelvo\tB-PER", b"Marn\tI-LOC", b"x\tO", b"\tO",
     b"x\t", b"x", b"x O", b"a\tb\tc", b"x\tB-", b"x\tMISC", b" ", b"", b"\r", b"\t",
     b"\xef\xbb\xbf", b"\xff", b"caf\xc3\xa9\tO", b"caf\xc3", b"\xe2\x80\x8b\tO",
     b"IMGID:1\tO", b"x\r\tO", b"\x0c\tO"]
)  # fmt: skip


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A valid file (random tweets and layout), then a few random edits."""
    tweets = []
    for k in range(draw(st.integers(0, 4))):
        n = draw(st.integers(0, 5))
        tokens = draw(st.lists(st.sampled_from(["Kelvo", "Marn", "Zed", "\ufe0f", "a b"]),
                               min_size=n, max_size=n))  # fmt: skip
        tags = draw(st.lists(st.sampled_from(["O", "B-PER", "I-PER", "B-MISC", "I-LOC"]),
                             min_size=n, max_size=n))  # fmt: skip
        tweets.append(Tweet(f"{k}", tokens, tags))
    text = format_conll(
        tweets,
        draw(st.integers(0, 2)),
        draw(st.sampled_from(["\n", "\r\n"])),
        bom=draw(st.booleans()),
        final_newline=draw(st.booleans()),
        leading_blank_lines=draw(st.integers(0, 1)),
    )
    lines = text.encode("utf-8").split(b"\n")
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["insert", "replace", "delete", "truncate", "flip"]))
        i = draw(st.integers(0, len(lines)))
        if kind == "insert":
            lines.insert(i, draw(LINE_BYTES))
        elif kind == "replace" and i < len(lines):
            lines[i] = draw(LINE_BYTES)
        elif kind == "delete" and i < len(lines):
            del lines[i]
        elif kind == "flip" and i < len(lines) and lines[i]:  # tab <-> space, or a stray byte
            lines[i] = lines[i].replace(b"\t", b" ") if b"\t" in lines[i] else lines[i] + b"\t"
    data = b"\n".join(lines)
    if draw(st.booleans()):  # a file cut at any byte (a download that stopped)
        data = data[: draw(st.integers(0, len(data)))]
    return data


@FUZZ
@given(data=near_valid())
def test_reader_on_near_valid_files(tmp_path: Path, data: bytes) -> None:
    check_read(tmp_path / "near.txt", data)


# ------------------------------------------------------------------------------ MRC round trip

QUERIES = load_queries()
TYPES = list(QUERIES)
WORDS = ["Kelvo", "visits", "Marn", "Zed", "Corp", "rocks", "#MCFC", "@user", "don't", "!"]
INVISIBLE = ["\u200b", "\ufe0f", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e", "\u0301"]
ODD = ["\u00a0", " ", "a b", "\u3000", "東京", "😀", "🇫🇷", "Café", "x\u0301", "\x7f", "\U0010fffd"]


@lru_cache(maxsize=1)
def tiny_tokenizer() -> Any:
    from mnerqg_graph.encoders.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer([WORDS])


TOKEN = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(INVISIBLE),
    st.sampled_from(ODD),
    st.text(alphabet="kelvoarnzdcp", min_size=20, max_size=80),  # many word pieces each
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=4),
)
TAG = st.sampled_from(
    ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-OTHER"]
)


@st.composite
def tweets(draw: st.DrawFn) -> Tweet:
    n = draw(st.integers(0, 25))
    tokens = draw(st.lists(TOKEN, min_size=n, max_size=n))
    tags = draw(st.lists(TAG, min_size=n, max_size=n))
    return Tweet(f"t{draw(st.integers(0, 99))}", tokens, tags)


def _pieces(tok: Any, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


@FUZZ
@given(
    batch=st.lists(tweets(), min_size=1, max_size=3),
    max_span_len=st.integers(1, 6),
    room=st.one_of(st.just(None), st.integers(1, 40)),
)
def test_mrc_decode_of_encode_gives_back_every_unreported_gold_entity(
    batch: list[Tweet], max_span_len: int, room: int | None
) -> None:
    tok = tiny_tokenizer()
    longest_query = max(_pieces(tok, q) for q in QUERIES.values())
    max_length = 128 if room is None else 3 + longest_query + room
    examples, report = build_mrc_examples(batch, tok, QUERIES, max_length, max_span_len)
    groups = list(iter_tweet_groups(examples))
    assert len(groups) == len(batch) == report.n_tweets
    cut_all, long_all, truncated = [], [], []
    for tweet, group in zip(batch, groups, strict=True):
        n = len(tweet.tokens)
        kept = group[0].n_kept
        assert [e.type for e in group] == TYPES
        for e in group:
            assert len(e.input_ids) == len(e.token_type_ids) <= max_length
            assert len(e.first_piece) == len(e.start_labels) == len(e.end_labels) == n
            assert all(f == -1 for f in e.first_piece[kept:])
            assert all(0 < f < len(e.input_ids) - 1 for f in e.first_piece if f >= 0)
        # the kept part is the longest prefix of whole tokens whose pieces fit the budget
        per_token = [0] * n
        if n:
            enc = tok(tweet.tokens, is_split_into_words=True, add_special_tokens=False)
            for w in enc.word_ids():
                if w is not None:
                    per_token[w] += 1
        total, first_over = 0, n
        for w, k in enumerate(per_token):
            total += k
            if total > max_length - 3 - longest_query:
                first_over = w
                break
        assert kept == first_over, (kept, per_token)
        if kept < n:
            truncated.append(tweet.id)
            event("truncated")
        if any(k == 0 for k in per_token[:kept]):
            event("zero-piece tokens")
        gold = spans_from_tags(tweet.tags)
        cut = [s for s in gold if s.end > kept]
        long = [s for s in gold if s.end <= kept and s.end - s.start > max_span_len]
        cut_all += [(tweet.id, s) for s in cut]
        long_all += [(tweet.id, s) for s in long]
        decoded = decode_spans(n, [c for e in group for c in gold_candidates(e)])
        assert decoded == [s for s in gold if s not in cut and s not in long]
        assert spans_to_bio(n, decoded + cut + long) == normalise_tags(tweet.tags)
        assert [e.exists for e in group] == [t in {s.type for s in gold} for t in TYPES]
    assert report.truncated_ids == truncated
    assert report.cut_entities == cut_all
    assert report.long_entities == long_all
    assert report.n_entities == sum(len(spans_from_tags(t.tags)) for t in batch)


@pytest.mark.parametrize("n_tokens", [1000])
def test_mrc_thousand_token_tweet(n_tokens: int) -> None:
    """A tweet of 1,000 tokens: cut at a token boundary, reported, its late entities kept."""
    tok = tiny_tokenizer()
    tokens = ["Kelvo"] + ["visits"] * (n_tokens - 3) + ["Zed", "Corp"]
    tags = ["B-PER"] + ["O"] * (n_tokens - 3) + ["B-ORG", "I-ORG"]
    tweet = Tweet("long", tokens, tags)
    examples, report = build_mrc_examples([tweet], tok, QUERIES, max_length=128)
    assert report.truncated_ids == ["long"] and report.n_tokens_cut > 800
    assert [(tid, s.type) for tid, s in report.cut_entities] == [("long", "ORG")]
    assert all(len(e.input_ids) <= 128 and e.n_tokens == n_tokens for e in examples)
    assert tweet.tags == tags  # the evaluation-side gold is untouched
