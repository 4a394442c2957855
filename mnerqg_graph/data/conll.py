r"""Read and write the CoNLL text format of Twitter-2015/2017 (and of SynthTweets).

Format (see ``data/README.md``): an ``IMGID:<id>`` line starts each tweet, then one
``token<TAB>tag`` line per token, and a blank line between tweets.

Reading keeps every token and tag exactly as written (``B-MISC`` stays ``B-MISC``, an ``I-`` with no
``B-`` stays as it is: entity spans are derived later by :mod:`mnerqg_graph.data.tags`). Tokens made
only of invisible characters (U+FE0F, U+200B, U+00A0, ...) are real tokens and are kept; only the
line break ``\n`` (and a ``\r`` before it) separates lines, never other Unicode line separators.

The layout of the file is remembered in :class:`ConllFile` (newline style, UTF-8 BOM, blank lines
before the first and after the last tweet, final newline), so that :meth:`ConllFile.format` /
:meth:`ConllFile.write` reproduce a file byte for byte when its tweets are separated by exactly one
blank line, as in all the real files. Other separators (none, or several blank lines) are read
without complaint and written back as one blank line.

Problems: every malformed line becomes a :class:`Problem` naming the file and the line.

* fatal (the tweet cannot be trusted): a token line without a TAB, with three or more columns, with
  an empty token, an unknown tag (not ``O``, ``B-X`` or ``I-X``), token lines with no ``IMGID`` line
  before them, an empty or unusable IMGID, bytes that are not UTF-8;
* warnings (the data is usable as read): a tweet with no tokens (kept, with zero tokens), a repeated
  IMGID (both tweets kept), a missing blank line between tweets, a whitespace-only line (read as
  blank), mixed CRLF/LF line endings, CR-only line endings (read as line breaks; written back
  as LF), a byte-order mark before an ``IMGID`` line inside the file (files joined with ``cat``)
  and a TAB ending an ``IMGID`` line (both ignored).

With ``strict=True`` the first fatal problem raises :class:`~mnerqg_graph.errors.DataError`. With
``strict=False`` every problem is collected in :attr:`ConllFile.problems` and every tweet without a
fatal problem is returned; a tweet with one is left out (and its problem says so), never silently.

Non-UTF-8 bytes: with ``strict=True`` they raise ``DataError`` naming the file, line and byte
column. With ``strict=False`` that line is decoded with U+FFFD replacement characters so the rest
of the file is still checked, a fatal problem is recorded and the tweet is left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mnerqg_graph.data.types import Tweet
from mnerqg_graph.errors import DataError
from mnerqg_graph.io import atomic_write_text

IMGID_PREFIX = "IMGID:"
_BOM = "\ufeff"
_TAG_RE = re.compile(r"(?:O|[BI]-\S+)\Z")
_BAD_ID_RE = re.compile(r"[\s/\\]")


@dataclass(frozen=True)
class Problem:
    """One problem found in a data file.

    Args:
        path: the file at fault.
        line: 1-based line number, or None when the problem concerns the whole file.
        message: what is wrong (one line).
        fatal: True when the data cannot be used as it is (``strict`` readers raise on it); False
            for a warning.
    """

    path: str
    line: int | None
    message: str
    fatal: bool

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"

    @classmethod
    def from_error(cls, error: DataError, fatal: bool = True) -> Problem:
        """The problem a :class:`DataError` describes (its field, if any, leads the message)."""
        message = f"[{error.field}] {error.message}" if error.field else error.message
        return cls(error.path, error.line, message, fatal)

    def to_error(self) -> DataError:
        """This problem as a :class:`DataError` (to raise it)."""
        return DataError(self.path, self.message, line=self.line)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: ``{"path", "line", "message", "fatal"}``."""
        return {"path": self.path, "line": self.line, "message": self.message, "fatal": self.fatal}


@dataclass
class ConllFile:
    r"""A CoNLL file as read: its tweets, the problems found, and its layout.

    Attributes:
        path: the file read.
        tweets: the tweets without fatal problems, in file order.
        problems: every problem found (with ``strict=True`` only warnings: a fatal one raises).
        trailing_blank_lines: blank lines after the last tweet's last line (0 in Twitter-2015's
            files, 1 in Twitter-2017's).
        newline: ``"\n"`` or ``"\r\n"``.
        bom: whether the file started with a UTF-8 byte order mark.
        final_newline: whether the last line ends with a newline.
        leading_blank_lines: blank lines before the first ``IMGID`` line.
    """

    path: str
    tweets: list[Tweet]
    problems: list[Problem] = field(default_factory=list)
    trailing_blank_lines: int = 0
    newline: str = "\n"
    bom: bool = False
    final_newline: bool = True
    leading_blank_lines: int = 0

    @property
    def trailing_blank(self) -> bool:
        """Whether the file ends with a blank line (Twitter-2017 style) rather than none (2015)."""
        return self.trailing_blank_lines > 0

    @property
    def fatal(self) -> list[Problem]:
        """The fatal problems."""
        return [p for p in self.problems if p.fatal]

    def format(self, tweets: list[Tweet] | None = None) -> str:
        """The file's text with this file's layout, for ``tweets`` (default: its own tweets)."""
        return format_conll(
            self.tweets if tweets is None else tweets,
            trailing_blank=self.trailing_blank_lines,
            newline=self.newline,
            bom=self.bom,
            final_newline=self.final_newline,
            leading_blank_lines=self.leading_blank_lines,
        )

    def write(self, path: str | Path | None = None, tweets: list[Tweet] | None = None) -> None:
        """Write ``tweets`` (default: its own) atomically with this file's layout.

        Args:
            path: where to write (default: the file it was read from).
            tweets: the tweets to write (default: :attr:`tweets`).
        """
        atomic_write_text(self.path if path is None else path, self.format(tweets))


class _Open:
    """A tweet being read."""

    __slots__ = ("id", "line", "tokens", "tags", "bad")

    def __init__(self, tweet_id: str, line: int, bad: bool) -> None:
        self.id = tweet_id
        self.line = line
        self.tokens: list[str] = []
        self.tags: list[str] = []
        self.bad = bad


class _Reader:
    """The line-by-line state machine of :func:`read_conll`."""

    def __init__(self, path: str, strict: bool) -> None:
        self.path = path
        self.strict = strict
        self.problems: list[Problem] = []
        self.tweets: list[Tweet] = []
        self.seen: dict[str, int] = {}
        self.cur: _Open | None = None
        self.orphan_start = 0
        self.orphan_count = 0
        self.valid_tags: set[str] = {"O"}

    def problem(self, line: int | None, message: str, fatal: bool) -> None:
        problem = Problem(self.path, line, message, fatal)
        if fatal and self.strict:
            raise problem.to_error()
        self.problems.append(problem)

    def close(self) -> None:
        cur = self.cur
        self.cur = None
        if cur is None:
            return
        if cur.bad:
            self.problem(
                cur.line, f"tweet IMGID:{cur.id} left out: it has a fatal problem", fatal=True
            )
            return
        if not cur.tokens:
            self.problem(cur.line, f"tweet IMGID:{cur.id} has no tokens (kept, empty)", fatal=False)
        self.tweets.append(Tweet(cur.id, cur.tokens, cur.tags, source=self.path, line=cur.line))

    def flush_orphans(self) -> None:
        if self.orphan_count:
            first, n = self.orphan_start, self.orphan_count
            self.orphan_count = 0
            what = "token line" if n == 1 else f"{n} token lines from here"
            self.problem(
                first,
                f"{what} outside a tweet: no IMGID line before it "
                "(a blank line inside a tweet, or a missing IMGID line?); left out",
                fatal=True,
            )

    def header(self, line: str, lineno: int) -> None:
        self.flush_orphans()
        if self.cur is not None:
            self.problem(lineno, "no blank line between two tweets", fatal=False)
            self.close()
        tweet_id = line[len(IMGID_PREFIX) :]
        bad = False
        if not tweet_id or tweet_id in (".", "..") or _BAD_ID_RE.search(tweet_id):
            self.problem(
                lineno,
                f"unusable IMGID {tweet_id!r} (empty, or has whitespace or a path separator)",
                fatal=True,
            )
            bad = True
        elif tweet_id in self.seen:
            self.problem(
                lineno,
                f"duplicate IMGID {tweet_id} (first at line {self.seen[tweet_id]})",
                fatal=False,
            )
        else:
            self.seen[tweet_id] = lineno
        self.cur = _Open(tweet_id, lineno, bad)

    def token(self, line: str, lineno: int) -> None:
        cur = self.cur
        if cur is None:
            if not self.orphan_count:
                self.orphan_start = lineno
            self.orphan_count += 1
            return
        parts = line.split("\t")
        if len(parts) == 2:
            tok, tag = parts
            if tag in self.valid_tags and tok:
                cur.tokens.append(tok)
                cur.tags.append(tag)
                return
            if not tok:
                self.problem(lineno, "empty token before the TAB", fatal=True)
            elif _TAG_RE.match(tag):
                self.valid_tags.add(tag)
                cur.tokens.append(tok)
                cur.tags.append(tag)
                return
            else:
                self.problem(
                    lineno, f"unknown tag {tag!r} (expected O, B-TYPE or I-TYPE)", fatal=True
                )
        elif len(parts) == 1:
            fields = line.split()
            hint = ""
            if len(fields) == 2 and _TAG_RE.match(fields[1]):
                hint = " (token and tag separated by spaces, not a TAB)"
            self.problem(lineno, f"token line without a TAB: {line!r}{hint}", fatal=True)
        else:
            self.problem(
                lineno,
                f"{len(parts)} TAB-separated columns, expected 2 (token<TAB>tag): {line!r}",
                fatal=True,
            )
        cur.bad = True


def _decode(path: str, data: bytes, strict: bool) -> tuple[str, list[Problem]]:
    """Decode UTF-8; on bad bytes, name the line (and with ``strict=False`` replace them)."""
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as first:
        if strict:
            line = data.count(b"\n", 0, first.start) + 1
            column = first.start - (data.rfind(b"\n", 0, first.start) + 1) + 1
            raise DataError(
                path, f"not UTF-8: byte {data[first.start]:#04x} at column {column}", line=line
            ) from None
    problems = []
    pieces = data.split(b"\n")
    for i, piece in enumerate(pieces):
        try:
            piece.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.append(
                Problem(
                    path,
                    i + 1,
                    f"not UTF-8: byte {piece[err.start]:#04x} at column {err.start + 1} "
                    "(read with U+FFFD replacement characters)",
                    fatal=True,
                )
            )
    return data.decode("utf-8", errors="replace"), problems


def read_conll(path: str | Path, strict: bool = True) -> ConllFile:
    """Read a CoNLL file of tweets.

    Args:
        path: the file.
        strict: raise on the first fatal problem (True), or collect all problems and return the
            tweets without fatal problems (False; what ``mnerqg check-data`` uses).

    Returns:
        The tweets, the problems and the file's layout.

    Raises:
        DataError: the file cannot be read, or (``strict=True``) it has a fatal problem; the
            message names the file and line.
    """
    spath = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(spath, "file not found") from None
    except IsADirectoryError:
        raise DataError(spath, "is a folder, not a CoNLL file") from None
    except OSError as err:
        raise DataError(spath, f"cannot read: {err.strerror or err}") from None
    text, bad_lines = _decode(spath, data, strict)
    bad_line_numbers = {p.line for p in bad_lines}
    bom = text.startswith(_BOM)
    if bom:
        text = text[1:]
    if "\r" in text and "\n" not in text:  # old Mac line endings: one "line" for the reader
        text = text.replace("\r", "\n")
        cr_only = True
    else:
        cr_only = False
    final_newline = text.endswith("\n")
    lines = text.split("\n")
    if final_newline:
        lines.pop()
    reader = _Reader(spath, strict)
    newline = "\n"
    if (len(lines) > 1 or final_newline) and lines[0].endswith("\r"):
        newline = "\r\n"
    mixed_at = 0
    n_lines = len(lines)
    for i in range(n_lines):
        line = lines[i]
        last = i == n_lines - 1 and not final_newline
        if newline == "\r\n":
            if line.endswith("\r"):
                lines[i] = line = line[:-1]
            elif not last and not mixed_at:
                mixed_at = i + 1
        elif line.endswith("\r"):
            if not mixed_at:
                mixed_at = i + 1
            lines[i] = line = line[:-1]
    if cr_only:
        reader.problems.append(
            Problem(spath, 1, "CR-only (old Mac) line endings, read as line breaks", fatal=False)
        )
    if mixed_at:
        reader.problems.append(
            Problem(spath, mixed_at, "mixed CRLF and LF line endings", fatal=False)
        )
    for problem in bad_lines:
        reader.problems.append(problem)

    leading = 0
    while leading < n_lines and lines[leading] == "":
        leading += 1
    trailing = 0
    while trailing < n_lines - leading and lines[n_lines - 1 - trailing] == "":
        trailing += 1

    for i in range(leading, n_lines - trailing):
        line = lines[i]
        lineno = i + 1
        if not line:
            reader.flush_orphans()
            reader.close()
        elif line.startswith(IMGID_PREFIX) and "\t" not in line:
            reader.header(line, lineno)
        elif line.startswith(_BOM + IMGID_PREFIX) and "\t" not in line:  # files joined by cat
            msg = "byte-order mark (U+FEFF) before IMGID (files joined?): ignored"
            reader.problem(lineno, msg, fatal=False)
            reader.header(line[1:], lineno)
        elif line.startswith(IMGID_PREFIX) and not line.partition("\t")[2].strip(" \t"):
            reader.problem(lineno, "IMGID line ends in a TAB: the TAB is ignored", fatal=False)
            reader.header(line.partition("\t")[0], lineno)
        elif not line.strip(" \t"):  # spaces and TABs only (a stray TAB on a blank line)
            reader.problem(lineno, "whitespace-only line read as a blank line", fatal=False)
            reader.flush_orphans()
            reader.close()
        else:
            reader.token(line, lineno)
        if lineno in bad_line_numbers and reader.cur is not None:
            reader.cur.bad = True
    reader.flush_orphans()
    reader.close()
    reader.problems.sort(key=lambda p: p.line or 0)
    return ConllFile(
        path=spath,
        tweets=reader.tweets,
        problems=reader.problems,
        trailing_blank_lines=trailing,
        newline=newline,
        bom=bom,
        final_newline=final_newline,
        leading_blank_lines=leading,
    )


def _check_tweet(tweet: Tweet) -> None:
    """Raise ValueError if ``tweet`` cannot be written as CoNLL lines that read back the same."""
    if not tweet.id or _BAD_ID_RE.search(tweet.id):
        raise ValueError(f"cannot write tweet id {tweet.id!r} (empty, whitespace or path sep)")
    if len(tweet.tokens) != len(tweet.tags):
        raise ValueError(f"tweet {tweet.id}: {len(tweet.tokens)} tokens but {len(tweet.tags)} tags")
    for tok, tag in zip(tweet.tokens, tweet.tags, strict=True):
        if not tok or "\t" in tok or "\n" in tok:
            raise ValueError(f"tweet {tweet.id}: cannot write token {tok!r}")
        if not _TAG_RE.match(tag):
            raise ValueError(f"tweet {tweet.id}: not a BIO tag: {tag!r}")


def format_conll(
    tweets: list[Tweet],
    trailing_blank: int | bool = True,
    newline: str = "\n",
    *,
    bom: bool = False,
    final_newline: bool = True,
    leading_blank_lines: int = 0,
) -> str:
    r"""The CoNLL text of ``tweets``: ``IMGID:<id>`` and ``token<TAB>tag`` lines, blank between.

    Args:
        tweets: the tweets (tokens and tags are written exactly as they are).
        trailing_blank: blank lines after the last tweet: True or 1 for one (Twitter-2017 style),
            False or 0 for none (Twitter-2015 style), or a larger count.
        newline: ``"\n"`` or ``"\r\n"``.
        bom: start with a UTF-8 byte order mark.
        final_newline: end the last line with a newline.
        leading_blank_lines: blank lines before the first tweet.

    Returns:
        The file's text.

    Raises:
        ValueError: a tweet cannot be written so that it reads back the same (a token with a TAB
            or newline, an empty token, a bad tag or id, tokens and tags of different lengths).
    """
    if newline not in ("\n", "\r\n"):
        raise ValueError(f"newline must be '\\n' or '\\r\\n', not {newline!r}")
    lines: list[str] = [""] * int(leading_blank_lines)
    for k, tweet in enumerate(tweets):
        _check_tweet(tweet)
        if k:
            lines.append("")
        lines.append(IMGID_PREFIX + tweet.id)
        lines.extend([f"{tok}\t{tag}" for tok, tag in zip(tweet.tokens, tweet.tags, strict=True)])
    lines.extend([""] * int(trailing_blank))
    text = newline.join(lines)
    if final_newline and lines:
        text += newline
    return (_BOM if bom else "") + text


def write_conll(
    path: str | Path,
    tweets: list[Tweet],
    trailing_blank: int | bool = True,
    newline: str = "\n",
    *,
    bom: bool = False,
    final_newline: bool = True,
) -> None:
    """Write ``tweets`` as a CoNLL file, atomically (see :func:`format_conll` for the arguments).

    To write a file back with the layout it was read with, use :meth:`ConllFile.write`.
    """
    atomic_write_text(
        path,
        format_conll(tweets, trailing_blank, newline, bom=bom, final_newline=final_newline),
    )


def token_line(tweet: Tweet, index: int) -> int:
    """The 1-based line of token ``index`` of a tweet read by :func:`read_conll` (0 if unknown)."""
    return tweet.line + 1 + index if tweet.line else 0
