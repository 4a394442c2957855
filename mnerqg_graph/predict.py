"""``mnerqg predict``: entities and per-type boxes from a checkpoint, as JSON lines (or CoNLL).

    mnerqg predict --checkpoint DIR --text "..." [--image PATH]
    mnerqg predict --checkpoint DIR --input FILE [--images DIR] [--output FILE]

``--input`` is a CoNLL file (``IMGID:`` lines; tags, if any, are ignored) or JSON lines with
``{"id": ..., "tokens": [...]}`` or ``{"id": ..., "text": "..."}`` and an optional ``"image"`` path.
Large inputs are streamed in chunks (bounded memory); inside a chunk tweets are sorted by length to
cut padding, and results are written in input order. ``--output`` ending in ``.conll``/``.txt``
writes CoNLL (readable by ``mnerqg evaluate``), anything else JSON lines; the file is written
atomically.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from mnerqg_graph.cli_args import add_tweet_input, check_minimums, check_tweet_input
from mnerqg_graph.data.types import Sample, Tweet
from mnerqg_graph.errors import DataError
from mnerqg_graph.io import AtomicTextOutput
from mnerqg_graph.progress import Progress

_TOKEN = re.compile(r"https?://\S+|[@#]?\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Split raw text into tweet-style tokens (URLs, @mentions and #hashtags kept whole)."""
    return _TOKEN.findall(text)


def _sample(
    tweet_id: str,
    tokens: list[str],
    image: str | None,
    images_dir: str | None,
    source: str,
    line: int,
) -> Sample:
    from mnerqg_graph.data.images import find_image, probe_image

    path: Path | None = None
    if image:
        path = Path(image)
    elif images_dir:
        path = find_image(Path(images_dir), tweet_id)
    size = None
    if path is not None:
        try:
            size = probe_image(path)
        except DataError as exc:
            print(f"warning: {exc}; tweet {tweet_id} runs text-only", file=sys.stderr)
            path = None
    return Sample(Tweet(tweet_id, tokens, ["O"] * len(tokens), source, line), path, size)


def record_fields(
    rec: Any, source: str, line: int, default_id: object
) -> tuple[str, list[str], Any]:
    """The id, tokens and image of one input record, checked: the one reader of raw records.

    Used for ``mnerqg predict --input`` JSON lines and for records given to the processor.

    Args:
        rec: a mapping with ``tokens`` (a list of strings) or ``text`` (a string, tokenized by
            :func:`tokenize`), and optionally ``id`` and ``image`` (a path).
        source: the file (or ``<input>``) named in errors.
        line: the record's line (or position, from 1) named in errors.
        default_id: the id of a record without one (or with ``null``).

    Raises:
        DataError: naming the field: no ``tokens``/``text``, a value of the wrong type, a token
            that is empty or holds a TAB, newline or lone surrogate, or an id that is empty or
            holds whitespace or a slash (either would be written back wrong).
    """
    if not isinstance(rec, Mapping) or not ("tokens" in rec or "text" in rec):
        raise DataError(source, "a record needs 'tokens' or 'text'", line=line)
    if "tokens" in rec:
        tokens = rec["tokens"]
        if not isinstance(tokens, (list, tuple)) or not all(isinstance(t, str) for t in tokens):
            raise DataError(source, "'tokens' must be a list of strings", line, "tokens")
        tokens = list(tokens)
    else:
        if not isinstance(rec["text"], str):
            kind = type(rec["text"]).__name__
            raise DataError(source, f"'text' must be a string, not {kind}", line, "text")
        tokens = tokenize(rec["text"])
    raw_id = rec.get("id")
    tweet_id = str(default_id if raw_id is None else raw_id)
    if not tweet_id or re.search(r"[\s/\\\ud800-\udfff]", tweet_id):
        raise DataError(source, f"unusable id {tweet_id!r} (empty, whitespace or /)", line, "id")
    bad = next((t for t in tokens if not t or re.search(r"[\t\n\r\ud800-\udfff]", t)), None)
    if bad is not None:  # (a lone surrogate, from a JSON escape, cannot be written as UTF-8)
        raise DataError(
            source, f"token {bad!r}: empty, TAB, newline or lone surrogate", line, "tokens"
        )
    image = rec.get("image")
    if image is not None and not isinstance(image, (str, PathLike)):
        raise DataError(source, f"'image' must be a path string, not {image!r}", line, "image")
    return tweet_id, tokens, image


def read_inputs(path: str, images_dir: str | None) -> Iterator[Sample]:
    """Stream samples from a CoNLL or JSON-lines input file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(path, "input file does not exist")
    with p.open("rb") as fh:
        head = fh.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()[:1]
    if head == b"{":
        with p.open("rb") as fh:
            for n, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        path, f"not UTF-8: byte {raw[exc.start]:#04x} at column {exc.start + 1}", n
                    ) from None
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(path, f"invalid JSON: {exc.msg}", line=n) from None
                tweet_id, tokens, image = record_fields(rec, path, n, n)
                yield _sample(tweet_id, tokens, image, images_dir, path, n)
    else:
        from mnerqg_graph.data.conll import read_conll

        for tw in read_conll(path).tweets:
            yield _sample(tw.id, tw.tokens, None, images_dir, path, tw.line)


def _chunks(it: Iterator[Sample], size: int) -> Iterator[list[Sample]]:
    chunk: list[Sample] = []
    for s in it:
        chunk.append(s)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Predictor:
    """A loaded checkpoint that predicts on lists of samples (``mnerqg predict``'s loop).

    Args:
        checkpoint: checkpoint directory.
        device: ``cpu``, ``cuda`` or ``auto``.
        batch_size: tweets per forward pass.
    """

    def __init__(self, checkpoint: str, device: str = "auto", batch_size: int = 32) -> None:
        from mnerqg_graph.environment import resolve_device
        from mnerqg_graph.pipeline import Pipeline

        self.device = resolve_device(device)
        self.pipeline = Pipeline.from_pretrained(checkpoint, self.device, batch_size)
        self.model = self.pipeline.model
        self.config = self.model.config
        self.processor = self.pipeline.processor
        self.queries = self.processor.queries
        self.tokenizer = self.processor.tokenizer
        self.batch_size = batch_size
        self.truncated: list[str] = []  # IMGIDs cut to max_length (reported by main)
        self.unreadable: list[str] = []  # images that failed to load (those tweets: text-only)

    def predict(
        self, samples: list[Sample], progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        """JSON records for ``samples`` (in their order), with ``tags``; sorted internally.

        Args:
            samples: the tweets.
            progress: told the tweets of each batch as it is done (None: nothing shown).
        """
        preds, report = self.pipeline.run(samples, progress)
        self.truncated += report.mrc.truncated_ids
        self.unreadable += report.unreadable_images
        return [tweet.to_record() for tweet in preds]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mnerqg predict``."""
    ap = argparse.ArgumentParser(prog="mnerqg predict", description=__doc__.split("\n\n")[0])
    add_tweet_input(
        ap,
        input_help="CoNLL or JSON-lines file of tweets",
        images_help="folder of <IMGID>.jpg images for --input",
    )
    ap.add_argument("--output", help="output file (.conll/.txt: CoNLL; else JSON lines)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--chunk-size", type=int, default=2048, help="tweets held in memory at once")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress on stderr for --input (default: a bar on a terminal, else a line "
        "every 30 s)",
    )
    args = ap.parse_args(argv)
    check_minimums(args, {"batch_size": 1, "chunk_size": 1})
    check_tweet_input(args)
    predictor = Predictor(args.checkpoint, args.device, args.batch_size)
    if args.text is not None:
        samples: Iterator[Sample] = iter(
            [_sample("text", tokenize(args.text), args.image, None, "<text>", 0)]
        )
    else:
        samples = read_inputs(args.input, args.images)
    conll = bool(args.output) and Path(args.output).suffix.lower() in (".conll", ".txt")
    out_fh: Any
    output = None
    if args.output:
        out_fh = output = AtomicTextOutput(args.output)  # write errors: one line naming it
    else:
        out_fh = sys.stdout
    progress = Progress(
        None, "predict", "tweet", enabled=not args.no_progress and bool(args.input), leave=True
    )
    try:
        for chunk in _chunks(samples, args.chunk_size):
            for rec in predictor.predict(chunk, progress):
                if conll:
                    out_fh.write(f"IMGID:{rec['id']}\n")
                    out_fh.writelines(
                        f"{t}\t{g}\n" for t, g in zip(rec["tokens"], rec["tags"], strict=True)
                    )
                    out_fh.write("\n")
                else:
                    rec.pop("tags")
                    out_fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        if output is not None:
            output.commit()
        max_length = predictor.processor.max_length
        for what, items, fallback in (
            ("tweet(s) truncated", predictor.truncated,
             f"to max_length={max_length} word pieces; cut tokens are tagged O"),
            ("image(s) unreadable", predictor.unreadable, "those tweets ran text-only"),
        ):  # fmt: skip
            if items:
                print(
                    f"warning: {len(items)} {what} ({', '.join(items[:5])}"
                    f"{', ...' if len(items) > 5 else ''}) {fallback}",
                    file=sys.stderr,
                )
    finally:
        progress.close()
        if output is not None:
            output.discard()  # nothing after commit(): the old file stays when we stopped early
    return 0
