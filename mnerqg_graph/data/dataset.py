"""A data-set folder: CoNLL splits, plus optional images and VOC boxes, read into samples.

Layout::

    ROOT/train.txt, ROOT/valid.txt (or dev.txt), ROOT/test.txt   CoNLL text (required)
    ROOT/images/<IMGID>.<ext>                                    images (optional)
    ROOT/boxes/<IMGID>.xml                                       Pascal VOC boxes (optional)

The image and box folders can be given elsewhere (the real Twitter images are distributed
separately). A tweet whose image is missing or unreadable runs text-only (``image_path=None``);
this is counted and reported, never fatal. Boxes are attached to the tweet's entity spans by
surface string (:func:`mnerqg_graph.data.voc.attach_boxes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mnerqg_graph.data.conll import ConllFile, Problem, read_conll
from mnerqg_graph.data.images import index_images, probe_image
from mnerqg_graph.data.types import Box, Sample, Span
from mnerqg_graph.data.voc import attach_boxes, read_voc
from mnerqg_graph.errors import ConfigError, DataError

#: The canonical split names.
SPLITS: tuple[str, ...] = ("train", "valid", "test")
#: File names tried for each split, in order.
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.txt",),
    "valid": ("valid.txt", "dev.txt"),
    "test": ("test.txt",),
}
#: Other names accepted for a split.
SPLIT_ALIASES: dict[str, str] = {"dev": "valid", "val": "valid", "validation": "valid"}


@dataclass
class SplitReport:
    """What loading a split found.

    Attributes:
        split: the canonical split name.
        path: the CoNLL file.
        images_dir: the image folder used, or None (text only).
        boxes_dir: the box folder used, or None.
        tweets: tweets read.
        tokens: tokens read.
        with_image: tweets with a readable image.
        missing_images: tweets with no image file (counted only when there is an image folder).
        unreadable_images: tweets whose image file cannot be read (they run text-only).
        with_boxes: tweets with a box file.
        boxes: boxes attached to entities.
        box_problems: problems with box files (malformed files, names matching no entity, ...).
        problems: every problem, in file order.
    """

    split: str
    path: str
    images_dir: str | None = None
    boxes_dir: str | None = None
    tweets: int = 0
    tokens: int = 0
    with_image: int = 0
    missing_images: int = 0
    unreadable_images: int = 0
    with_boxes: int = 0
    boxes: int = 0
    box_problems: int = 0
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of the counts and problems."""
        out: dict[str, object] = {k: v for k, v in self.__dict__.items() if k != "problems"}
        out["problems"] = [p.to_dict() for p in self.problems]
        return out


@dataclass
class SplitData:
    """One split read into samples.

    Attributes:
        split: the canonical split name.
        samples: one sample per tweet, in file order.
        report: counts and problems.
        conll: the CoNLL file as read (its layout lets predictions be written the same way).
    """

    split: str
    samples: list[Sample]
    report: SplitReport
    conll: ConllFile


def canonical_split(split: str) -> str:
    """``"dev"`` / ``"val"`` / ``"validation"`` -> ``"valid"``.

    Raises:
        ConfigError: an unknown split (a one-line error at every command that reads one).
    """
    name = SPLIT_ALIASES.get(split, split)
    if name not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return name


def split_path(root: str | Path, split: str) -> Path | None:
    """The CoNLL file of ``split`` in a data-set folder, or None when there is none."""
    for name in SPLIT_FILES[canonical_split(split)]:
        candidate = Path(root) / name
        if candidate.is_file():
            return candidate
    return None


def _folder(given: str | Path | None, default: Path, what: str) -> Path | None:
    """The folder to use: ``given`` (which must exist), else ``default`` if it exists, else None."""
    if given is not None:
        folder = Path(given)
        if not folder.is_dir():
            raise DataError(str(folder), f"{what} folder does not exist")
        return folder
    return default if default.is_dir() else None


def resolve_folders(
    root: str | Path, images_dir: str | Path | None, boxes_dir: str | Path | None
) -> tuple[Path, Path | None, Path | None]:
    """Check a data-set folder and pick its image and box folders.

    Args:
        root: the data-set folder.
        images_dir: the image folder, or None for ``ROOT/images`` when it exists.
        boxes_dir: the box folder, or None for ``ROOT/boxes`` when it exists.

    Returns:
        ``(root, images_dir or None, boxes_dir or None)``.

    Raises:
        DataError: ``root`` or a folder that was given does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(str(root), "data-set folder does not exist")
    return (
        root,
        _folder(images_dir, root / "images", "image"),
        _folder(boxes_dir, root / "boxes", "box"),
    )


def index_boxes(boxes_dir: str | Path) -> dict[str, Path]:
    """Map each IMGID to its ``<IMGID>.xml`` file (extension matched case-insensitively)."""
    folder = Path(boxes_dir)
    return {
        p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() == ".xml" and p.is_file()
    }


def _rescale(box: Box, sx: float, sy: float) -> Box:
    return Box(box.xmin * sx, box.ymin * sy, box.xmax * sx, box.ymax * sy, box.confidence)


def load_split(
    root: str | Path,
    split: str,
    images_dir: str | Path | None = None,
    boxes_dir: str | Path | None = None,
    strict: bool = True,
    verify_images: bool = False,
) -> SplitData:
    """Read one split of a data-set folder into samples.

    Args:
        root: the data-set folder.
        split: ``train``, ``valid`` (or ``dev``) or ``test``.
        images_dir: the image folder (default: ``ROOT/images`` when it exists, else text only).
        boxes_dir: the VOC box folder (default: ``ROOT/boxes`` when it exists, else no boxes).
        strict: raise on the first fatal problem (a malformed CoNLL line, a malformed box file, a
            split without tweets); False collects them in the report and keeps what can be read.
        verify_images: decode every image (catches truncated files; slower) instead of reading
            only its header. Either way an unreadable image makes its tweet text-only.

    Returns:
        The samples and the report. When a box file's ``<size>`` differs from the image's real
        size, its boxes are rescaled to the image (and a warning is recorded).

    Raises:
        DataError: ``root``, the split file or a given folder does not exist, or (``strict``) a
            fatal problem; one line naming the file.
    """
    name = canonical_split(split)
    root, img_dir, box_dir = resolve_folders(root, images_dir, boxes_dir)
    path = split_path(root, name)
    if path is None:
        raise DataError(str(root), f"no {' or '.join(SPLIT_FILES[name])} in the data-set folder")
    conll = read_conll(path, strict=strict)
    spath = str(path)
    report = SplitReport(
        split=name,
        path=spath,
        images_dir=str(img_dir) if img_dir else None,
        boxes_dir=str(box_dir) if box_dir else None,
        problems=list(conll.problems),
    )

    def problem(p: Problem) -> None:
        if p.fatal and strict:
            raise p.to_error()
        report.problems.append(p)

    if not conll.tweets:
        problem(Problem(spath, None, "no tweets", fatal=True))
    images = index_images(img_dir) if img_dir else {}
    box_files = index_boxes(box_dir) if box_dir else {}
    samples = []
    for tweet in conll.tweets:
        report.tweets += 1
        report.tokens += len(tweet.tokens)
        sample = Sample(tweet)
        image = images.get(tweet.id)
        if img_dir is not None and image is None:
            report.missing_images += 1
            problem(
                Problem(
                    spath,
                    tweet.line,
                    f"no image for tweet IMGID:{tweet.id} in {img_dir} (runs text-only)",
                    fatal=False,
                )
            )
        elif image is not None:
            try:
                sample.image_size = probe_image(image, verify=verify_images)
                sample.image_path = image
                report.with_image += 1
            except DataError as err:
                report.unreadable_images += 1
                problem(
                    Problem(err.path, None, f"{err.message} (tweet runs text-only)", fatal=False)
                )
        xml = box_files.get(tweet.id)
        if xml is not None:
            report.with_boxes += 1
            try:
                ann = read_voc(xml)
            except DataError as err:
                report.box_problems += 1
                problem(Problem.from_error(err, fatal=True))
                samples.append(sample)
                continue
            boxes, box_problems = attach_boxes(tweet, ann, xml)
            for p in box_problems:
                report.box_problems += 1
                problem(p)
            if sample.image_path is None:
                if img_dir is not None:  # with no image folder at all, every tweet is text-only
                    report.box_problems += 1
                    problem(
                        Problem(
                            str(xml),
                            None,
                            f"boxes for tweet IMGID:{tweet.id}, whose image is missing or "
                            "unreadable",
                            fatal=False,
                        )
                    )
                sample.image_size = (ann.width, ann.height)
            elif sample.image_size != (ann.width, ann.height):
                assert sample.image_size is not None
                width, height = sample.image_size
                report.box_problems += 1
                problem(
                    Problem(
                        str(xml),
                        None,
                        f"<size> {ann.width}x{ann.height} differs from the image's "
                        f"{width}x{height}; boxes rescaled to the image",
                        fatal=False,
                    )
                )
                sx, sy = width / ann.width, height / ann.height
                boxes = {s: [_rescale(b, sx, sy) for b in bs] for s, bs in boxes.items()}
            sample.boxes = boxes
            report.boxes += sum(len(bs) for bs in boxes.values())
        samples.append(sample)
    return SplitData(name, samples, report, conll)


def gold_boxes(sample: Sample) -> dict[Span, list[Box]]:
    """Every gold entity of a sample mapped to its boxes (empty list when not in the image)."""
    return {span: list(sample.boxes.get(span, [])) for span in sample.tweet.entities}
