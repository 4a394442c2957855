"""CoNLL reader and writer: real files byte for byte, quirks, bad input, round-trip property."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnerqg_graph.data.conll import (
    ConllFile,
    Problem,
    format_conll,
    read_conll,
    token_line,
    write_conll,
)
from mnerqg_graph.data.types import Tweet
from mnerqg_graph.errors import DataError

REAL_FILES = [
    (f"twitter{year}/{split}.txt", year)
    for year in (2015, 2017)
    for split in ("train", "valid", "test")
]
# data/README.md: tweets and tokens per file.
REAL_COUNTS = {
    "twitter2015/train.txt": (4000, 64439),
    "twitter2015/valid.txt": (1000, 16178),
    "twitter2015/test.txt": (3257, 52822),
    "twitter2017/train.txt": (3373, 53007),
    "twitter2017/valid.txt": (723, 11309),
    "twitter2017/test.txt": (723, 11330),
}
INVISIBLE = set("\ufe0f\u200b\u200d\u0092\u00ad\u00a0")


def write(tmp_path: Path, data: bytes | str, name: str = "x.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# ----------------------------------------------------------------------------- real files


@pytest.mark.parametrize(("name", "year"), REAL_FILES)
def test_real_file_round_trips_byte_for_byte(
    real_data: Path, tmp_path: Path, name: str, year: int
) -> None:
    path = real_data / name
    conll = read_conll(path)
    assert conll.problems == []
    assert (len(conll.tweets), sum(len(t.tokens) for t in conll.tweets)) == REAL_COUNTS[name]
    # 2015 files end with no blank line, 2017 files with one.
    assert conll.trailing_blank is (year == 2017)
    assert conll.newline == "\n" and not conll.bom and conll.final_newline
    out = tmp_path / "out.txt"
    conll.write(out)
    assert out.read_bytes() == path.read_bytes()
    # The plain writer with the right ending gives the same bytes too.
    write_conll(out, conll.tweets, trailing_blank=year == 2017)
    assert out.read_bytes() == path.read_bytes()


def test_reading_is_linear_in_the_file(real_data: Path, tmp_path: Path) -> None:
    """Twice the tweets cost twice the calls, not four times: no quadratic step.

    (The reading speed itself is a benchmark's, not a unit test's.)
    """
    from tests.helpers import count_calls

    tweets = read_conll(real_data / REAL_FILES[0][0]).tweets[:400]
    half, full = tmp_path / "half.txt", tmp_path / "full.txt"
    write_conll(half, tweets[:200])
    write_conll(full, tweets)
    ratio = count_calls(read_conll, full) / count_calls(read_conll, half)
    assert 1.8 < ratio < 2.2, ratio


def test_real_quirks_are_kept(real_data: Path) -> None:
    t15 = [
        t
        for s in ("train", "valid", "test")
        for t in read_conll(real_data / f"twitter2015/{s}.txt").tweets
    ]
    t17 = [
        t
        for s in ("train", "valid", "test")
        for t in read_conll(real_data / f"twitter2017/{s}.txt").tweets
    ]

    def invisible(tweets: list[Tweet]) -> list[tuple[str, str]]:
        return [
            (tok, tag)
            for t in tweets
            for tok, tag in zip(t.tokens, t.tags, strict=True)
            if set(tok) <= INVISIBLE
        ]

    inv17 = invisible(t17)
    assert len(inv17) == 154 and {tag for _, tag in inv17} == {"O"}
    assert invisible(t15) == [("\u00a0", "O")]
    # README: 10,786 URL tokens (http://t.co/..., and truncated ones such as "http…").
    assert sum(tok.startswith("http") for t in t15 for tok in t.tokens) == 10786
    assert any("B-MISC" in t.tags for t in t17)  # kept as read, not rewritten to OTHER
    assert all("MISC" not in s.type for t in t17 for s in t.entities)
    # The README's example of an I- with no B-: kept as read.
    st_louis = [t for t in t15 if "St . Louis" in " ".join(t.tokens)]
    assert any(
        t.tags[t.tokens.index("Louis")] == "I-LOC" and t.tags[t.tokens.index("Louis") - 2] == "O"
        for t in st_louis
    )
    ids = [t.id for t in t17]
    assert len(set(ids)) == len(ids)


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    "text",
    [
        "IMGID:1\na\tO\nb\tB-PER\n\nIMGID:2\nc\tI-LOC\n",
        "IMGID:1\na\tO\nb\tB-PER\n\nIMGID:2\nc\tI-LOC\n\n",
        "IMGID:1\na\tO\n\nIMGID:2\nc\tI-LOC",  # no final newline
        "IMGID:1\na\tO\n\n\n",  # two trailing blank lines
        "\n\nIMGID:1\na\tO\n",  # leading blank lines
        "IMGID:1\r\na\tO\r\n\r\nIMGID:2\r\nc\tO\r\n\r\n",  # CRLF
        "\ufeffIMGID:1\na\tO\n",  # BOM
        "\ufeffIMGID:1\r\na\tO",  # BOM, CRLF, no final newline
        "",
        "\n",
    ],
)
def test_layouts_round_trip(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    conll = read_conll(path)
    assert conll.problems == []
    assert conll.format() == text
    conll.write(tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_bytes() == text.encode("utf-8")


def test_crlf_and_bom_are_not_part_of_tokens(tmp_path: Path) -> None:
    conll = read_conll(write(tmp_path, "\ufeffIMGID:7\r\nHi\tB-PER\r\n"))
    assert conll.newline == "\r\n" and conll.bom
    assert [(t.id, t.tokens, t.tags) for t in conll.tweets] == [("7", ["Hi"], ["B-PER"])]


def test_invisible_and_odd_tokens_are_real_tokens(tmp_path: Path) -> None:
    tokens = ["\ufe0f", "\u200b", "\u00a0", " ", "IMGID:3", "a\u2028b", "x\x85y", "\r"]
    text = "IMGID:1\n" + "".join(f"{t}\tO\n" for t in tokens)
    conll = read_conll(write(tmp_path, text))
    assert conll.tweets[0].tokens == tokens
    assert conll.format() == text


def test_missing_blank_line_between_tweets_is_a_warning(tmp_path: Path) -> None:
    conll = read_conll(write(tmp_path, "IMGID:1\na\tO\nIMGID:2\nb\tO\n"))
    assert [t.id for t in conll.tweets] == ["1", "2"]
    assert [(p.line, p.fatal) for p in conll.problems] == [(3, False)]


@pytest.mark.parametrize("blank", [" ", "\t", " \t ", "\t\t"])
def test_a_whitespace_only_line_with_tabs_is_a_blank_line(tmp_path: Path, blank: str) -> None:
    """A stray TAB on an otherwise blank line ends the tweet (a warning); no tweet is lost."""
    conll = read_conll(write(tmp_path, f"IMGID:1\na\tB-PER\n{blank}\nIMGID:2\nb\tO\n"))
    assert [(t.id, t.tokens, t.tags) for t in conll.tweets] == [
        ("1", ["a"], ["B-PER"]),
        ("2", ["b"], ["O"]),
    ]
    assert [(p.line, p.fatal) for p in conll.problems] == [(3, False)]
    assert "whitespace-only" in conll.problems[0].message


def test_token_line_numbers(tmp_path: Path) -> None:
    conll = read_conll(write(tmp_path, "IMGID:1\na\tO\n\nIMGID:2\nb\tO\nc\tB-ORG\n"))
    tweet = conll.tweets[1]
    assert (tweet.line, token_line(tweet, 1)) == (4, 6)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "line", "words", "kept"),
    [
        ("IMGID:1\na\tO\nbroken\n", 3, "without a TAB", []),
        ("IMGID:1\na O\n", 2, "separated by spaces", []),
        ("IMGID:1\na\tO\tx\n", 2, "3 TAB-separated columns", []),
        ("IMGID:1\na\tO\nb\tE-PER\n", 3, "unknown tag 'E-PER'", []),
        ("IMGID:1\na\tB-\n", 2, "unknown tag", []),
        ("IMGID:1\na\tO \n", 2, "unknown tag 'O '", []),
        ("IMGID:1\n\tO\n", 2, "empty token", []),
        ("a\tO\nIMGID:1\nb\tO\n", 1, "no IMGID line before it", [["b"]]),
        ("IMGID:1\na\tO\n\nb\tO\n", 4, "outside a tweet", [["a"]]),
        ("IMGID:\na\tO\n", 1, "unusable IMGID", []),
        ("IMGID:../x\na\tO\n", 1, "unusable IMGID", []),
    ],
)
def test_fatal_problems_name_file_and_line(
    tmp_path: Path, text: str, line: int, words: str, kept: list[list[str]]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_conll(path)
    err = info.value
    assert (err.path, err.line) == (str(path), line)
    assert words in str(err) and str(err).startswith(f"{path}:{line}: ")
    # Non-strict: the same problem is collected, the bad part is left out (and said so).
    conll = read_conll(path, strict=False)
    assert any(p.line == line and p.fatal and words in p.message for p in conll.problems)
    assert [t.tokens for t in conll.tweets] == kept


def test_non_utf8_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, b"IMGID:1\na\tO\n\nIMGID:2\ncaf\xe9\tO\n\nIMGID:3\nz\tO\n")
    with pytest.raises(DataError, match=r"x\.txt:5: not UTF-8: byte 0xe9 at column 4"):
        read_conll(path)
    conll = read_conll(path, strict=False)
    assert [t.id for t in conll.tweets] == ["1", "3"]
    assert [str(p) for p in conll.fatal][0].startswith(f"{path}:4: tweet IMGID:2 left out")
    assert any(p.line == 5 and "U+FFFD" in p.message for p in conll.fatal)


def test_duplicate_imgid_is_a_warning_naming_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "IMGID:9\na\tO\n\nIMGID:9\nb\tB-LOC\n")
    conll = read_conll(path)  # strict: warnings do not raise
    assert [t.tokens for t in conll.tweets] == [["a"], ["b"]]
    assert [str(p) for p in conll.problems] == [f"{path}:4: duplicate IMGID 9 (first at line 1)"]


def test_empty_tweet_is_kept_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "IMGID:1\n\nIMGID:2\nb\tO\n")
    conll = read_conll(path)
    assert [(t.id, t.tokens) for t in conll.tweets] == [("1", []), ("2", ["b"])]
    assert [(p.line, p.fatal, "no tokens" in p.message) for p in conll.problems] == [
        (1, False, True)
    ]
    assert conll.format() == "IMGID:1\n\nIMGID:2\nb\tO\n"


def test_mixed_line_endings_are_a_warning(tmp_path: Path) -> None:
    conll = read_conll(write(tmp_path, "IMGID:1\r\na\tO\nb\tB-PER\r\n"))
    assert conll.tweets[0].tags == ["O", "B-PER"]
    assert [(p.line, p.fatal) for p in conll.problems] == [(2, False)]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("IMGID:1\na\tO\n\n\ufeffIMGID:2\nb\tB-PER\n", 4, "byte-order mark"),  # cat a b
        ("IMGID:1\na\tO\n\nIMGID:2\t\nb\tB-PER\n", 4, "ends in a TAB"),
        ("IMGID:1\ra\tO\r\rIMGID:2\rb\tB-PER\r", 1, "CR-only"),
    ],
    ids=["bom-inside", "imgid-tab", "cr-only"],
)
def test_header_quirks_are_read_with_a_warning_naming_them(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    """Both tweets are read, with one warning that says what the quirk is.

    Each used to be diagnosed as token lines outside a tweet (or mixed line endings), and the
    second tweet was left out.
    """
    conll = read_conll(write(tmp_path, text), strict=True)
    assert [(t.id, t.tokens, t.tags) for t in conll.tweets] == [
        ("1", ["a"], ["O"]),
        ("2", ["b"], ["B-PER"]),
    ]
    assert [(p.line, p.fatal) for p in conll.problems] == [(line, False)]
    assert fragment in conll.problems[0].message


def test_non_strict_collects_everything_and_drops_no_token_silently(tmp_path: Path) -> None:
    text = (
        "x\tO\n\n"  # 1: before any IMGID
        "IMGID:1\na\tB-PER\nb\tI-PER\n\n"  # good
        "IMGID:2\nc\tQ\nd\tO\n\n"  # 8: unknown tag
        "IMGID:1\ne\tI-ORG\n\n"  # 11: duplicate, good
        "IMGID:4\nf\tO\tO\n"  # 15: three columns
    )
    path = write(tmp_path, text)
    conll = read_conll(path, strict=False)
    assert [t.id for t in conll.tweets] == ["1", "1"]
    fatal_lines = [p.line for p in conll.fatal]
    assert fatal_lines == [1, 7, 8, 14, 15]
    assert [p.line for p in conll.problems if not p.fatal] == [11]
    kept = sum(len(t.tokens) for t in conll.tweets)
    left_out_lines = {1, 8, 9, 15}  # token lines of the left-out parts, all named or covered
    assert kept + len(left_out_lines) == text.count("\t") - 1  # the 3-column line has 2 TABs
    assert all(isinstance(p, Problem) and str(p).startswith(str(path)) for p in conll.problems)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_conll(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="is a folder"):
        read_conll(tmp_path)


# ----------------------------------------------------------------------------- writer


@pytest.mark.parametrize(
    "tweet",
    [
        Tweet("1", ["a\tb"], ["O"]),
        Tweet("1", ["a\nb"], ["O"]),
        Tweet("1", [""], ["O"]),
        Tweet("1", ["a"], ["X"]),
        Tweet("1", ["a", "b"], ["O"]),
        Tweet("", ["a"], ["O"]),
        Tweet("a b", ["a"], ["O"]),
    ],
)
def test_writer_refuses_what_would_not_read_back(tmp_path: Path, tweet: Tweet) -> None:
    with pytest.raises(ValueError):
        write_conll(tmp_path / "o.txt", [tweet])
    assert not (tmp_path / "o.txt").exists()


def test_writer_layout_options() -> None:
    tweets = [Tweet("1", ["a"], ["O"]), Tweet("2", ["b", "c"], ["B-X", "I-X"])]
    assert (
        format_conll(tweets, trailing_blank=False) == "IMGID:1\na\tO\n\nIMGID:2\nb\tB-X\nc\tI-X\n"
    )
    assert (
        format_conll(tweets[:1], trailing_blank=True, newline="\r\n") == "IMGID:1\r\na\tO\r\n\r\n"
    )
    assert format_conll(tweets[:1], 2, bom=True, final_newline=False) == "\ufeffIMGID:1\na\tO\n\n"
    with pytest.raises(ValueError):
        format_conll(tweets, newline="\r")


TOKEN = st.text(
    alphabet=st.one_of(
        st.characters(exclude_characters="\t\n", exclude_categories=("Cs",)),
        st.sampled_from(["\r", " ", "\ufeff", "\u00a0", "\u2028", "\x85", "\ufe0f", ":"]),
    ),
    min_size=1,
    max_size=6,
) | st.just("IMGID:1")
TAG = st.sampled_from(["O", "B-PER", "I-PER", "B-MISC", "I-OTHER", "B-X-Y", "I-LOC"])


@st.composite
def tweets(draw: st.DrawFn) -> list[Tweet]:
    out = []
    for k in range(draw(st.integers(0, 4))):
        n = draw(st.integers(0, 5))
        toks = draw(st.lists(TOKEN, min_size=n, max_size=n))
        tags = draw(st.lists(TAG, min_size=n, max_size=n))
        out.append(
            Tweet(draw(st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True)) + str(k), toks, tags)
        )
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tw=tweets(),
    trailing=st.integers(0, 2),
    newline=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
    final=st.booleans(),
)
def test_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory,
    tw: list[Tweet],
    trailing: int,
    newline: str,
    bom: bool,
    final: bool,
) -> None:
    text = format_conll(tw, trailing, newline, bom=bom, final_newline=final)
    path = tmp_path_factory.mktemp("rt") / "f.txt"
    path.write_bytes(text.encode("utf-8"))
    conll = read_conll(path, strict=False)
    assert [(t.id, t.tokens, t.tags) for t in conll.tweets] == [
        (t.id, t.tokens, t.tags) for t in tw
    ]
    assert not conll.fatal
    assert isinstance(conll, ConllFile) and conll.format() == text
