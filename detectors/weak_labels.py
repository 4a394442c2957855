"""Weak grounding labels: the visual-grounding model's boxes, written and read as VOC XML.

``mnerqg pseudo-label --grounder CKPT --data DIR --out WEAK [--split train] [--threshold T]``
asks the grounder (:mod:`detectors.grounder`), for every tweet with an image, where each entity
type of the tweet's gold text is. The query is the type; the box is named after every entity of
that type in the tweet (VOC ``<name>`` = the entity's tokens joined by single spaces), so entities
of one type share the type's box. One ``WEAK/<IMGID>.xml`` per labelled tweet, in pixels of the
original image, each ``<object>`` with a ``<confidence>`` (the grounder's, in [0, 1]), written with
:func:`mnerqg_graph.data.voc.write_voc`; ``WEAK/weak_labels.json`` records the counts. Boxes under
``--threshold`` (default 0: keep all, let the reader choose) are not written, and counted.

:func:`load_weak_boxes` reads such a folder back for the training tweets: ``{tweet id: {Span:
[Box]}}`` with only the boxes whose confidence is ``>= threshold`` (a box without a confidence is a
manual box and is kept). Every box or file it leaves out is counted in its report and summarised on
one line, never dropped silently: boxes under the threshold, malformed files (a box outside the
image, a zero-area box ...), files for a tweet that is not in the split or whose image is missing,
names that match no entity.

:func:`detectors.manual.select_manual` picks the "manually annotated" tweets (the ones the
experiment keeps gold boxes on, and the grounder is fine-tuned on).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from detectors.command import command_parser, option_values, run_main
from detectors.grounder import TweetSplit, VisualGrounder, load_grounder, predict_image_set
from detectors.images import load_image_set
from mnerqg_graph.data.types import Box, Sample, Span
from mnerqg_graph.data.voc import VocAnnotation, VocObject, attach_boxes, read_voc, write_voc
from mnerqg_graph.environment import resolve_device
from mnerqg_graph.errors import ConfigError, DataError
from mnerqg_graph.io import (
    abandon_dir,
    atomic_write_text,
    check_replaceable,
    replace_dir,
    temp_dir_beside,
)

__all__ = [
    "PseudoLabelReport",
    "WeakBoxes",
    "WeakLabelReport",
    "load_weak_boxes",
    "pseudo_label",
]

#: The summary file written beside the XML files (also marks a folder as a weak-label folder).
SUMMARY_NAME = "weak_labels.json"
#: How many individual problems a summary prints before "... (+N more)".
SHOWN_PROBLEMS = 5


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _counted(*counts: tuple[int, str]) -> list[str]:
    """The non-zero counts of a summary line, as ``"N what"``.

    Args:
        counts: ``(n, what)`` pairs, in the order to report them.

    Returns:
        ``"N what"`` for each pair whose ``n`` is not zero.
    """
    return [f"{n} {what}" for n, what in counts if n]


@dataclass
class PseudoLabelReport:
    """What ``pseudo-label`` wrote and left out.

    Attributes:
        out_dir: the weak-label folder.
        split: the split labelled.
        threshold: boxes under this confidence were not written.
        tweets_with_image: tweets of the split with a readable image.
        tweets: tweets labelled (an XML file written).
        boxes: ``<object>`` elements written.
        queries: (tweet, type) pairs asked.
        mean_confidence: mean confidence of the written objects (0 when none).
        below_threshold: (tweet, type) answers under ``threshold``, not written.
        zero_area: (tweet, type) answers whose box is empty in pixels, not written.
        without_entities: tweets with an image but no entity of a known type, not labelled.
        unknown_types: entity types in the text that the grounder does not know (type -> count).
        shared_names: names written for a type that are also an entity of another type in the
            same tweet (the reader gives such a box to both entities).
        unreadable_images: images that could not be decoded (tweet not labelled).
        problems: one line per left-out item.
    """

    out_dir: str
    split: str
    threshold: float
    tweets_with_image: int = 0
    tweets: int = 0
    boxes: int = 0
    queries: int = 0
    mean_confidence: float = 0.0
    below_threshold: int = 0
    zero_area: int = 0
    without_entities: int = 0
    unknown_types: dict[str, int] = field(default_factory=dict)
    shared_names: int = 0
    unreadable_images: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: tweets, boxes, mean confidence, and what was left out."""
        left = _counted(
            (self.below_threshold, f"answers under the threshold {self.threshold:g}"),
            (self.zero_area, "zero-area boxes"),
            (self.unreadable_images, "unreadable images"),
            (sum(self.unknown_types.values()), "mentions of types the grounder lacks"),
            (self.shared_names, "names shared by two types"),
        )
        return (
            f"pseudo-label ({self.split}): {self.tweets} tweets, {self.boxes} boxes, mean "
            f"confidence {self.mean_confidence:.3f} -> {self.out_dir}"
            + (f" (not written: {', '.join(left)})" if left else "")
        )


def _pixel_box(box: Sequence[float], size: tuple[int, int], conf: float) -> Box:
    """Round a normalised box to 1/100 pixel inside a ``(width, height)`` image."""
    w, h = size
    x0, y0, x1, y1 = (round(v, 2) for v in (box[0] * w, box[1] * h, box[2] * w, box[3] * h))
    return Box(
        min(max(x0, 0.0), w),
        min(max(y0, 0.0), h),
        min(max(x1, 0.0), w),
        min(max(y1, 0.0), h),
        round(conf, 6),
    )


def pseudo_label(
    grounder: VisualGrounder | str | Path,
    tweets: TweetSplit,
    out: str | Path,
    threshold: float = 0.0,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    log: Callable[[str], None] | None = print,
) -> PseudoLabelReport:
    """Write weak VOC labels for every tweet with an image (see the module docstring).

    The folder is written beside ``out`` and moved into place, replacing an earlier weak-label
    folder there (one with ``weak_labels.json``) so no stale file survives.

    Args:
        grounder: a grounder, or its checkpoint folder.
        tweets: the tweets to label (their gold boxes, read by the split loader, are unused).
        out: the weak-label folder.
        threshold: answers under this confidence are not written (counted).
        batch_size: images per forward pass.
        device: ``auto``, ``cpu``, ``cuda``.
        log: the summary line and problems go here (None: quiet).

    Returns:
        The report.

    Raises:
        CheckpointError: ``grounder`` is not a visual-grounding checkpoint (e.g. a detector's).
        ConfigError: ``threshold`` outside [0, 1], or ``out`` is a non-empty foreign folder.
        DataError: the data-set folder or split is missing or malformed.
    """
    say = log or (lambda _msg: None)
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
    out = Path(out)
    check_replaceable(out, SUMMARY_NAME)  # before any work, and again by replace_dir
    dev = resolve_device(device)
    if isinstance(grounder, VisualGrounder):
        model, source = grounder.to(dev).eval(), "(in memory)"
    else:
        model, source = load_grounder(grounder, dev)[0], str(grounder)
    samples = tweets.samples()
    report = PseudoLabelReport(str(out), tweets.split, threshold)
    known = set(model.types)
    todo: list[Sample] = []
    for s in samples:
        if s.image_path is None:
            continue
        report.tweets_with_image += 1
        types = {sp.type for sp in s.tweet.entities}
        for typ in sorted(types - known):
            report.unknown_types[typ] = report.unknown_types.get(typ, 0) + 1
            report.problems.append(f"IMGID:{s.tweet.id}: type {typ} is not a grounder query")
        if types & known:
            todo.append(s)
        else:
            report.without_entities += 1
    image_set = load_image_set(todo, model.image_size)
    report.unreadable_images = len(image_set.skipped)
    report.problems.extend(f"{m} (not labelled)" for m in image_set.skipped)
    boxes, conf = predict_image_set(model, image_set, batch_size)

    tmp = temp_dir_beside(out)
    conf_sum = 0.0
    try:
        for i, sample in enumerate(image_set.samples):
            assert sample.image_size is not None and sample.image_path is not None
            tokens = sample.tweet.tokens
            names_of: dict[str, list[str]] = {}
            for span in sample.tweet.entities:
                names = names_of.setdefault(span.type, [])
                if span.text(tokens) not in names:
                    names.append(span.text(tokens))
            objects: list[VocObject] = []
            for t, typ in enumerate(model.types):
                if typ not in names_of:
                    continue
                report.queries += 1
                c = float(conf[i, t])
                if c < threshold:
                    report.below_threshold += 1
                    continue
                box = _pixel_box(boxes[i, t].tolist(), sample.image_size, c)
                if box.xmax <= box.xmin or box.ymax <= box.ymin:
                    report.zero_area += 1
                    report.problems.append(
                        f"IMGID:{sample.tweet.id} {typ}: zero-area box {box} (not written)"
                    )
                    continue
                for name in names_of[typ]:
                    others = [o for o, ns in names_of.items() if o != typ and name in ns]
                    if others:
                        report.shared_names += 1
                        report.problems.append(
                            f"IMGID:{sample.tweet.id}: {name!r} is {typ} and {'/'.join(others)}; "
                            "its weak box goes to both entities"
                        )
                    objects.append(VocObject(name, box))
                    conf_sum += c
            if objects:
                w, h = sample.image_size
                write_voc(
                    tmp / f"{sample.tweet.id}.xml",
                    VocAnnotation(sample.image_path.name, w, h, objects),
                )
                report.tweets += 1
                report.boxes += len(objects)
        report.mean_confidence = conf_sum / report.boxes if report.boxes else 0.0
        meta = {"grounder": source, "data": str(tweets.data), **asdict(report)}
        atomic_write_text(tmp / SUMMARY_NAME, json.dumps(meta, indent=1, sort_keys=True) + "\n")
        replace_dir(tmp, out, SUMMARY_NAME)
    except BaseException as exc:  # a write error names the file of out that failed
        abandon_dir(tmp, out, exc)
        raise
    say(report.summary())
    _say_problems(report.problems, say)
    return report


def _say_problems(problems: Sequence[str], say: Callable[[str], None]) -> None:
    for p in problems[:SHOWN_PROBLEMS]:
        say(f"  warning: {p}")
    if len(problems) > SHOWN_PROBLEMS:
        say(f"  ... (+{len(problems) - SHOWN_PROBLEMS} more warnings)")


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


@dataclass
class WeakLabelReport:
    """What :func:`load_weak_boxes` read, kept and left out.

    Attributes:
        weak_dir: the folder read.
        threshold: boxes with a confidence under it were dropped.
        files: XML files in the folder.
        used_files: files attached to a tweet with an image.
        boxes_read: boxes attached to entities in the used files.
        boxes_kept: boxes kept (confidence >= threshold, or no confidence).
        below_threshold: boxes dropped for their confidence.
        no_confidence: kept boxes without a confidence (manual boxes in the weak folder).
        bad_files: malformed files (boxes outside the image, zero-area boxes, bad XML ...), skipped.
        orphan_files: files whose IMGID is no tweet of the given samples, skipped.
        no_image_files: files for a tweet whose image is missing or unreadable, skipped.
        unmatched_names: box names matching no entity of their tweet (boxes skipped).
        rescaled_files: files whose ``<size>`` differs from the image (boxes rescaled).
        tweets_without_file: tweets with an image and entities but no weak-label file.
        tweets: tweets with at least one kept box.
        problems: one line per problem (file and line when known).
    """

    weak_dir: str
    threshold: float
    files: int = 0
    used_files: int = 0
    boxes_read: int = 0
    boxes_kept: int = 0
    below_threshold: int = 0
    no_confidence: int = 0
    bad_files: int = 0
    orphan_files: int = 0
    no_image_files: int = 0
    unmatched_names: int = 0
    rescaled_files: int = 0
    tweets_without_file: int = 0
    tweets: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line with the counts of kept and left-out boxes and files."""
        left = _counted(
            (self.below_threshold, f"boxes under confidence {self.threshold:g}"),
            (self.bad_files, "malformed files"),
            (self.orphan_files, "files for no tweet of the split"),
            (self.no_image_files, "files for tweets without an image"),
            (self.unmatched_names, "names matching no entity"),
        )
        extra = _counted(
            (self.no_confidence, "boxes without confidence kept"),
            (self.rescaled_files, "files rescaled to the image size"),
            (self.tweets_without_file, "tweets with an image and entities but no file"),
        )
        return (
            f"weak labels {self.weak_dir}: {self.boxes_kept}/{self.boxes_read} boxes kept "
            f"(confidence >= {self.threshold:g}) for {self.tweets} tweets from "
            f"{self.used_files}/{self.files} files"
            + (f"; dropped: {', '.join(left)}" if left else "")
            + (f"; {', '.join(extra)}" if extra else "")
        )


class WeakBoxes(dict[str, dict[Span, list[Box]]]):
    """``{tweet id: {entity span: [weak boxes]}}`` with the :class:`WeakLabelReport` that made it.

    Attributes:
        report: counts of what was kept and left out.
    """

    def __init__(self, report: WeakLabelReport) -> None:
        super().__init__()
        self.report = report


def load_weak_boxes(
    weak_dir: str | Path,
    samples: Sequence[Sample],
    threshold: float = 0.5,
    strict: bool = False,
    log: Callable[[str], None] | None = print,
) -> WeakBoxes:
    """Read a weak-label folder for some tweets, keeping boxes with confidence >= ``threshold``.

    Each ``<IMGID>.xml`` is read with :func:`~mnerqg_graph.data.voc.read_voc` and attached to the
    tweet's entities by name with :func:`~mnerqg_graph.data.voc.attach_boxes`. A box without a
    ``<confidence>`` counts as certain (kept). Boxes are rescaled when the file's ``<size>`` is not
    the image's. Nothing is left out silently: the returned mapping's ``report`` counts every
    dropped box and skipped file, and ``log`` gets a one-line summary plus the first problems.

    Args:
        weak_dir: the folder written by ``mnerqg pseudo-label``.
        samples: the tweets to label (e.g. the training split, after any ``data.limit``).
        threshold: the confidence a box needs, in [0, 1].
        strict: raise on the first malformed file instead of counting and skipping it.
        log: where the summary goes (None: quiet).

    Returns:
        ``{tweet id: {Span: [Box, ...]}}`` for the tweets with at least one kept box; only spans
        with a kept box are keys. ``.report`` has the counts.

    Raises:
        DataError: ``weak_dir`` does not exist, or (``strict``) a file is malformed.
        ConfigError: ``threshold`` outside [0, 1].
    """
    from mnerqg_graph.data.dataset import index_boxes

    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"weak-label threshold must be in [0, 1], got {threshold}")
    folder = Path(weak_dir)
    if not folder.is_dir():
        raise DataError(str(folder), "weak-label folder does not exist")
    report = WeakLabelReport(str(folder), threshold)
    out = WeakBoxes(report)
    files = index_boxes(folder)
    report.files = len(files)
    by_id: dict[str, Sample] = {}
    for s in samples:
        by_id.setdefault(s.tweet.id, s)
    for tweet_id, path in files.items():
        sample = by_id.get(tweet_id)
        if sample is None:
            report.orphan_files += 1
            report.problems.append(f"{path}: no tweet IMGID:{tweet_id} in the split (skipped)")
            continue
        if sample.image_path is None or sample.image_size is None:
            report.no_image_files += 1
            report.problems.append(
                f"{path}: the image of tweet IMGID:{tweet_id} is missing or unreadable (skipped)"
            )
            continue
        try:
            ann = read_voc(path)
        except DataError as err:
            if strict:
                raise
            report.bad_files += 1
            report.problems.append(f"{err} (file skipped)")
            continue
        report.used_files += 1
        boxes, problems = attach_boxes(sample.tweet, ann, path)
        for p in problems:
            if "matches no entity" in p.message:
                report.unmatched_names += 1
            report.problems.append(str(p))
        w, h = sample.image_size
        sx, sy = w / ann.width, h / ann.height
        if (ann.width, ann.height) != (w, h):
            report.rescaled_files += 1
            report.problems.append(
                f"{path}: <size> {ann.width}x{ann.height} differs from the image's {w}x{h}; "
                "boxes rescaled"
            )
        kept: dict[Span, list[Box]] = {}
        for span, span_boxes in boxes.items():
            for b in span_boxes:
                report.boxes_read += 1
                if b.confidence is not None and b.confidence < threshold:
                    report.below_threshold += 1
                    continue
                if b.confidence is None:
                    report.no_confidence += 1
                report.boxes_kept += 1
                kept.setdefault(span, []).append(
                    Box(b.xmin * sx, b.ymin * sy, b.xmax * sx, b.ymax * sy, b.confidence)
                )
        if kept:
            out[tweet_id] = kept
    report.tweets = len(out)
    report.tweets_without_file = sum(
        1
        for tid, s in by_id.items()
        if s.image_path is not None and s.tweet.entities and tid not in files
    )
    if log is not None:
        log(report.summary())
        _say_problems(report.problems, log)
    return out


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

PROG = "mnerqg pseudo-label"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``mnerqg pseudo-label``."""
    parser = command_parser(
        PROG,
        "Write weak grounding labels (Pascal VOC XML with a confidence per box) for every tweet "
        "with an image: the visual-grounding model's box for each entity type of the tweet's "
        "text, named after the entities of that type.",
    )
    parser.add_argument(
        "--grounder",
        required=True,
        type=Path,
        metavar="CKPT",
        help="visual-grounding checkpoint (python -m detectors.grounder ...)",
    )
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="data-set folder")
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="weak-label folder (created; an earlier one is replaced)",
    )
    parser.add_argument("--split", default="train", help="split to label (default %(default)s)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        metavar="T",
        help="do not write boxes under this confidence (default %(default)s: "
        "write all; the experiment filters with grounding.weak_threshold)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="first N tweets of the split only"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default %(default)s)")
    parser.add_argument("--images-dir", type=Path, default=None, help="image folder override")
    parser.add_argument("--boxes-dir", type=Path, default=None, help="gold box folder override")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``mnerqg pseudo-label``; user errors are raised as ``MnerqgError`` for the CLI.

    Args:
        argv: the command's arguments; ``sys.argv[1:]`` when None.

    Returns:
        The exit code (0).
    """
    args = build_parser().parse_args(argv)
    tweets = TweetSplit(**option_values(args, "data", "split", "limit", "images_dir", "boxes_dir"))
    pseudo_label(
        args.grounder, tweets, args.out, **option_values(args, "threshold", "batch_size", "device")
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_main(main, PROG))
