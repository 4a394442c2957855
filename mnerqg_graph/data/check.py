"""``mnerqg check-data DIR``: validate a data-set folder, count what is in it, list every problem.

Per split it prints tweets, tokens and, per entity type (PER, LOC, ORG, OTHER, then any other type
found; ``MISC`` is ``OTHER``), two entity counts: ``B-`` tags (the counts of ``data/README.md``) and
conlleval / seqeval spans (an ``I-`` with no ``B-`` starts an entity: the counts published scores
use). Then every problem with its file and line: malformed lines, unknown tags, duplicate IMGIDs,
``I-`` tags with no ``B-`` (one warning per file with the count and the first lines), missing and
unreadable images, box files that are malformed, name no entity, or belong to no tweet or to a
tweet whose image is missing.

Exit code: 0 when the data set is usable (warnings only), 1 when there is a fatal problem; the last
line says which, in one line. A folder that does not exist raises
:class:`~mnerqg_graph.errors.DataError` (the ``mnerqg`` command line prints it as one line, exit 2).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mnerqg_graph.data.conll import Problem, token_line
from mnerqg_graph.data.dataset import (
    SPLIT_FILES,
    SPLITS,
    SplitReport,
    index_boxes,
    load_split,
    resolve_folders,
    split_path,
)
from mnerqg_graph.data.tags import spans_from_tags, split_tag
from mnerqg_graph.data.types import Tweet
from mnerqg_graph.metrics import TYPE_ORDER

#: How many line numbers a summarised warning lists.
FIRST_LINES = 5


@dataclass
class SplitCheck:
    """Counts of one split.

    Attributes:
        split: the split name.
        path: its CoNLL file.
        tweets: tweets read (without fatal problems).
        tokens: their tokens.
        strict: entities per canonical type counted as ``B-`` tags.
        lenient: entities per canonical type counted the conlleval way.
        inside_without_begin: ``I-`` tags that start an entity (no ``B-`` or ``I-`` of the same
            type before them).
        load: the loader's report (images, boxes, problems).
    """

    split: str
    path: str
    tweets: int
    tokens: int
    strict: dict[str, int]
    lenient: dict[str, int]
    inside_without_begin: int
    load: SplitReport

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "split": self.split,
            "path": self.path,
            "tweets": self.tweets,
            "tokens": self.tokens,
            "entities_b_tags": self.strict,
            "entities_conlleval": self.lenient,
            "inside_without_begin": self.inside_without_begin,
            "images": {
                "folder": self.load.images_dir,
                "with_image": self.load.with_image,
                "missing": self.load.missing_images,
                "unreadable": self.load.unreadable_images,
            },
            "boxes": {
                "folder": self.load.boxes_dir,
                "tweets_with_boxes": self.load.with_boxes,
                "boxes": self.load.boxes,
                "problems": self.load.box_problems,
            },
        }


@dataclass
class CheckReport:
    """Everything ``check-data`` found.

    Attributes:
        root: the data-set folder.
        images_dir: the image folder used, or None.
        boxes_dir: the box folder used, or None.
        splits: the counts of each split that could be read.
        problems: every problem, fatal ones and warnings.
    """

    root: str
    images_dir: str | None
    boxes_dir: str | None
    splits: list[SplitCheck] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def fatal(self) -> list[Problem]:
        """The fatal problems."""
        return [p for p in self.problems if p.fatal]

    @property
    def ok(self) -> bool:
        """Whether the data set is usable (no fatal problem)."""
        return not self.fatal

    @property
    def types(self) -> list[str]:
        """Every entity type found, PER, LOC, ORG, OTHER first."""
        found = {t for s in self.splits for t in (*s.strict, *s.lenient)}
        extra = sorted(found - set(TYPE_ORDER))
        return [*TYPE_ORDER, *extra]

    @property
    def reason(self) -> str:
        """One line: why the data set is or is not usable."""
        warnings = len(self.problems) - len(self.fatal)
        if self.ok:
            n = sum(s.tweets for s in self.splits)
            return f"OK: usable ({len(self.splits)} splits, {n} tweets, {warnings} warnings)"
        fatal = self.fatal
        return f"FAILED: {len(fatal)} fatal problem(s), {warnings} warnings; first: {fatal[0]}"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (what ``--json`` prints)."""
        return {
            "root": self.root,
            "images_dir": self.images_dir,
            "boxes_dir": self.boxes_dir,
            "ok": self.ok,
            "reason": self.reason,
            "types": self.types,
            "splits": {s.split: s.to_dict() for s in self.splits},
            "problems": [p.to_dict() for p in self.problems],
        }


def _inside_without_begin(tweet: Tweet) -> list[int]:
    """Indices of the ``I-`` tags of a tweet that start an entity (conlleval reading)."""
    out = []
    prev: str | None = None
    for i, tag in enumerate(tweet.tags):
        prefix, typ = split_tag(tag)
        if prefix == "I" and typ != prev:
            out.append(i)
        prev = typ
    return out


def check_dataset(
    root: str | Path, images_dir: str | Path | None = None, boxes_dir: str | Path | None = None
) -> CheckReport:
    """Validate a data-set folder and count its contents.

    Args:
        root: the data-set folder (``train.txt``, ``valid.txt`` or ``dev.txt``, ``test.txt``).
        images_dir: the image folder (default: ``ROOT/images`` when it exists). Every image is
            decoded, so truncated files are found.
        boxes_dir: the VOC box folder (default: ``ROOT/boxes`` when it exists).

    Returns:
        The counts and every problem; a missing split file is a fatal problem.

    Raises:
        DataError: ``root`` or a given folder does not exist.
    """
    root, img_dir, box_dir = resolve_folders(root, images_dir, boxes_dir)
    report = CheckReport(
        str(root), str(img_dir) if img_dir else None, str(box_dir) if box_dir else None
    )
    ids: set[str] = set()
    for split in SPLITS:
        path = split_path(root, split)
        if path is None:
            names = " or ".join(SPLIT_FILES[split])
            report.problems.append(
                Problem(str(root), None, f"no {names} ({split} split)", fatal=True)
            )
            continue
        data = load_split(root, split, img_dir, box_dir, strict=False, verify_images=True)
        strict: Counter[str] = Counter()
        lenient: Counter[str] = Counter()
        stray_lines: list[int] = []
        for sample in data.samples:
            tweet = sample.tweet
            ids.add(tweet.id)
            strict.update(split_tag(t)[1] or "" for t in tweet.tags if t.startswith("B-"))
            lenient.update(s.type for s in spans_from_tags(tweet.tags))
            stray_lines.extend(token_line(tweet, i) for i in _inside_without_begin(tweet))
        report.problems.extend(data.report.problems)
        if stray_lines:
            shown = ", ".join(map(str, stray_lines[:FIRST_LINES]))
            more = ", ..." if len(stray_lines) > FIRST_LINES else ""
            report.problems.append(
                Problem(
                    str(path),
                    stray_lines[0],
                    f"{len(stray_lines)} I- tags with no B- before them, each counted as the "
                    f"start of an entity as conlleval does (lines {shown}{more})",
                    fatal=False,
                )
            )
        report.splits.append(
            SplitCheck(
                split=split,
                path=str(path),
                tweets=data.report.tweets,
                tokens=data.report.tokens,
                strict=_ordered(strict),
                lenient=_ordered(lenient),
                inside_without_begin=len(stray_lines),
                load=data.report,
            )
        )
    if box_dir is not None and ids:
        for image_id, xml in index_boxes(box_dir).items():
            if image_id not in ids:
                report.problems.append(
                    Problem(
                        str(xml), None, f"no tweet has IMGID {image_id} in any split", fatal=False
                    )
                )
    return report


def _ordered(counts: Counter[str]) -> dict[str, int]:
    """Counts per type with PER, LOC, ORG, OTHER first (0 when absent), then other types."""
    out = {t: counts.get(t, 0) for t in TYPE_ORDER}
    out.update({t: counts[t] for t in sorted(counts) if t not in out})
    return out


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]


def format_report(report: CheckReport) -> str:
    """The human-readable report; its last line is :attr:`CheckReport.reason`."""
    types = report.types
    lines = [
        f"data set: {report.root}",
        f"images:   {report.images_dir or 'none (text only)'}",
        f"boxes:    {report.boxes_dir or 'none'}",
        "",
        "entities = B- tags (as counted in data/README.md):",
    ]
    head = ["split", "tweets", "tokens", *types, "total"]
    rows = [head]
    for s in report.splits:
        counts = [s.strict.get(t, 0) for t in types]
        rows.append([s.split, str(s.tweets), str(s.tokens), *map(str, counts), str(sum(counts))])
    lines += _table(rows)
    lines += ["", "entities = conlleval / seqeval spans (an I- with no B- starts one):"]
    rows = [["split", *types, "total", "I- without B-"]]
    for s in report.splits:
        counts = [s.lenient.get(t, 0) for t in types]
        rows.append([s.split, *map(str, counts), str(sum(counts)), str(s.inside_without_begin)])
    lines += _table(rows)
    if report.images_dir or report.boxes_dir:
        lines += ["", "images and boxes:"]
        rows = [
            [
                "split",
                "with image",
                "missing",
                "unreadable",
                "with boxes",
                "boxes",
                "box problems",
            ]
        ]
        for s in report.splits:
            r = s.load
            rows.append(
                [
                    s.split,
                    *map(
                        str,
                        (
                            r.with_image,
                            r.missing_images,
                            r.unreadable_images,
                            r.with_boxes,
                            r.boxes,
                            r.box_problems,
                        ),
                    ),
                ]
            )
        lines += _table(rows)
    n_fatal = len(report.fatal)
    lines += ["", f"problems: {n_fatal} fatal, {len(report.problems) - n_fatal} warnings"]
    for p in report.problems:
        lines.append(f"  {'error' if p.fatal else 'warning'}: {p}")
    lines.append(report.reason)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``mnerqg check-data DIR [--images DIR] [--boxes DIR] [--json]``.

    Args:
        argv: the command's arguments.

    Returns:
        0 when the data set is usable, 1 when it has a fatal problem.
    """
    parser = argparse.ArgumentParser(
        prog="mnerqg check-data",
        description=(
            "Validate a data-set folder (train.txt, valid.txt or dev.txt, test.txt; optional "
            "images/ and boxes/): counts per split and type, every problem with file and line. "
            "Exit code 0 when usable, 1 on a fatal problem."
        ),
    )
    parser.add_argument("root", type=Path, metavar="DIR", help="the data-set folder")
    parser.add_argument(
        "--images", type=Path, default=None, help="image folder (default: DIR/images if present)"
    )
    parser.add_argument(
        "--boxes", type=Path, default=None, help="VOC box folder (default: DIR/boxes if present)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    report = check_dataset(args.root, args.images, args.boxes)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(format_report(report))
    return 0 if report.ok else 1
