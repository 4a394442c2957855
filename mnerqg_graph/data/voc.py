"""Pascal VOC XML box files: one per image, boxes named by the entity's surface string.

Format (DESIGN.md section 3)::

    <annotation>
      <filename>1015799.jpg</filename>
      <size><width>640</width><height>480</height></size>
      <object>
        <name>George Zimmerman</name>
        <bndbox><xmin>10</xmin><ymin>20</ymin><xmax>200</xmax><ymax>300</ymax></bndbox>
        <confidence>0.87</confidence>   <!-- weak labels only -->
      </object>
    </annotation>

``<name>`` is the entity's tokens joined by single spaces; the type comes from the matching BIO
span of the tweet (:func:`attach_boxes`). Coordinates are pixels of the original image, continuous
(a box covers ``[xmin, xmax) x [ymin, ymax)``), with ``0 <= xmin < xmax <= width`` and likewise
for y. Other VOC elements (``folder``, ``depth``, ``pose``, ``difficult`` ...) are ignored when
read and not written.

Parsing uses the standard library's expat (through ``xml.etree.ElementTree``'s tree builder), so
every element knows its line and errors name the file, the line and the field. Entity declarations
are refused (no entity-expansion attacks from a downloaded file).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

from mnerqg_graph.data.conll import Problem
from mnerqg_graph.data.types import Box, Span, Tweet
from mnerqg_graph.errors import DataError
from mnerqg_graph.io import atomic_write_text


@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: a box named by an entity's surface string.

    Args:
        name: the entity's tokens joined by single spaces.
        box: the box in pixels of the original image; ``box.confidence`` is set for weak labels.
        line: 1-based line of the ``<object>`` element in the file it was read from (0 when built
            in memory); not part of equality.
    """

    name: str
    box: Box
    line: int = field(default=0, compare=False)


@dataclass
class VocAnnotation:
    """The boxes of one image.

    Args:
        filename: the image's file name (``<IMGID>.jpg``).
        width: the original image's width in pixels.
        height: the original image's height in pixels.
        objects: the named boxes, in file order.
    """

    filename: str
    width: int
    height: int
    objects: list[VocObject] = field(default_factory=list)


class _Tree:
    """An ElementTree built by expat, with the line of every element."""

    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self.lines: dict[int, int] = {}
        builder = ET.TreeBuilder()
        parser = expat.ParserCreate()
        parser.buffer_text = True

        def start(tag: str, attrs: dict[str, str]) -> None:
            elem = builder.start(tag, attrs)
            self.lines[id(elem)] = parser.CurrentLineNumber

        def refuse_entity(name: str, *_: object) -> None:
            raise DataError(
                path,
                f"entity declarations are not allowed ({name!r})",
                line=parser.CurrentLineNumber,
            )

        parser.StartElementHandler = start
        parser.EndElementHandler = builder.end
        parser.CharacterDataHandler = builder.data
        parser.EntityDeclHandler = refuse_entity
        try:
            parser.Parse(data, True)
        except expat.ExpatError as err:
            raise DataError(
                path, f"malformed XML: {expat.ErrorString(err.code)}", line=err.lineno
            ) from None
        self.root = builder.close()

    def line(self, elem: ET.Element) -> int:
        return self.lines.get(id(elem), 0)

    def child(self, parent: ET.Element, tag: str, where: str) -> ET.Element:
        elem = parent.find(tag)
        if elem is None:
            raise DataError(
                self.path,
                f"missing <{tag}>",
                line=self.line(parent) or None,
                field=f"{where}/{tag}",
            )
        return elem

    def text(self, parent: ET.Element, tag: str, where: str) -> tuple[str, int]:
        elem = self.child(parent, tag, where)
        text = (elem.text or "").strip(" \t\r\n")
        if not text:
            raise DataError(
                self.path, f"empty <{tag}>", line=self.line(elem) or None, field=f"{where}/{tag}"
            )
        return text, self.line(elem)

    def number(self, parent: ET.Element, tag: str, where: str) -> tuple[float, int]:
        text, line = self.text(parent, tag, where)
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DataError(
                self.path, f"not a number: {text!r}", line=line or None, field=f"{where}/{tag}"
            )
        return value, line


def read_voc(path: str | Path) -> VocAnnotation:
    """Read a Pascal VOC XML box file.

    Args:
        path: the ``.xml`` file.

    Returns:
        The annotation, with every object's line.

    Raises:
        DataError: the file is unreadable, malformed XML, lacks a field, has a non-numeric or
            non-finite coordinate, a box with ``xmin >= xmax`` or ``ymin >= ymax``, a box outside
            the image, or a confidence outside [0, 1]; the message names the file, the line and the
            field (``object[2]/bndbox/xmin``).
    """
    spath = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(spath, "file not found") from None
    except OSError as err:
        raise DataError(spath, f"cannot read: {err.strerror or err}") from None
    tree = _Tree(spath, data)
    root = tree.root
    if root.tag != "annotation":
        raise DataError(spath, f"root element is <{root.tag}>, expected <annotation>", line=1)
    filename, _ = tree.text(root, "filename", "annotation")
    size = tree.child(root, "size", "annotation")
    dims: list[int] = []
    for tag in ("width", "height"):
        value, line = tree.number(size, tag, "annotation/size")
        if value <= 0 or not value.is_integer():
            raise DataError(
                spath,
                f"{tag} must be a positive whole number of pixels, not {value:g}",
                line=line or None,
                field=f"annotation/size/{tag}",
            )
        dims.append(int(value))
    width, height = dims
    objects = []
    for k, obj in enumerate(root.findall("object"), start=1):
        where = f"object[{k}]"
        obj_line = tree.line(obj)
        name, _ = tree.text(obj, "name", where)
        bndbox = tree.child(obj, "bndbox", where)
        coords: dict[str, float] = {}
        lines: dict[str, int] = {}
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            coords[tag], lines[tag] = tree.number(bndbox, tag, f"{where}/bndbox")
        for lo, hi, limit, dim in (
            ("xmin", "xmax", width, "width"),
            ("ymin", "ymax", height, "height"),
        ):
            if coords[lo] >= coords[hi]:
                raise DataError(
                    spath,
                    f"box of {name!r}: {lo} {coords[lo]:g} >= {hi} {coords[hi]:g}",
                    line=lines[lo] or None,
                    field=f"{where}/bndbox/{lo}",
                )
            for tag in (lo, hi):
                if not 0 <= coords[tag] <= limit:
                    raise DataError(
                        spath,
                        f"box of {name!r}: {tag} {coords[tag]:g} outside the image "
                        f"(0..{limit}, the image {dim})",
                        line=lines[tag] or None,
                        field=f"{where}/bndbox/{tag}",
                    )
        confidence: float | None = None
        if obj.find("confidence") is not None:
            confidence, line = tree.number(obj, "confidence", where)
            if not 0.0 <= confidence <= 1.0:
                raise DataError(
                    spath,
                    f"confidence {confidence:g} of {name!r} outside [0, 1]",
                    line=line or None,
                    field=f"{where}/confidence",
                )
        box = Box(coords["xmin"], coords["ymin"], coords["xmax"], coords["ymax"], confidence)
        objects.append(VocObject(name, box, line=obj_line))
    return VocAnnotation(filename, width, height, objects)


def _fmt(value: float) -> str:
    """A coordinate as VOC tools expect it: ``12`` for whole numbers, else the shortest float."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def format_voc(ann: VocAnnotation) -> str:
    """The XML text of an annotation (see the module docstring for the format).

    Raises:
        ValueError: the annotation would not read back (empty name or filename, a degenerate box,
            a box outside the image, a non-finite number, a confidence outside [0, 1]).
    """
    if not ann.filename.strip():
        raise ValueError("empty filename")
    if ann.width <= 0 or ann.height <= 0:
        raise ValueError(f"image size must be positive, not {ann.width}x{ann.height}")
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = ann.filename
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(int(ann.width))
    ET.SubElement(size, "height").text = str(int(ann.height))
    for obj in ann.objects:
        b = obj.box
        if not obj.name.strip() or obj.name != obj.name.strip(" \t\r\n"):
            raise ValueError(f"object name {obj.name!r} is empty or has surrounding whitespace")
        if not all(math.isfinite(v) for v in (b.xmin, b.ymin, b.xmax, b.ymax)):
            raise ValueError(f"box of {obj.name!r} has a non-finite coordinate: {b}")
        if not (0 <= b.xmin < b.xmax <= ann.width and 0 <= b.ymin < b.ymax <= ann.height):
            raise ValueError(
                f"box of {obj.name!r} is degenerate or outside the {ann.width}x{ann.height} "
                f"image: {b}"
            )
        elem = ET.SubElement(root, "object")
        ET.SubElement(elem, "name").text = obj.name
        bndbox = ET.SubElement(elem, "bndbox")
        for tag, value in (("xmin", b.xmin), ("ymin", b.ymin), ("xmax", b.xmax), ("ymax", b.ymax)):
            ET.SubElement(bndbox, tag).text = _fmt(value)
        if b.confidence is not None:
            if not 0.0 <= b.confidence <= 1.0:
                raise ValueError(f"confidence {b.confidence} of {obj.name!r} outside [0, 1]")
            ET.SubElement(elem, "confidence").text = repr(float(b.confidence))
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def write_voc(path: str | Path, ann: VocAnnotation) -> None:
    """Write an annotation as Pascal VOC XML, atomically (see :func:`format_voc`)."""
    atomic_write_text(path, format_voc(ann))


def attach_boxes(
    tweet: Tweet, ann: VocAnnotation, path: str | Path
) -> tuple[dict[Span, list[Box]], list[Problem]]:
    """Give each entity of ``tweet`` the boxes whose ``<name>`` is its surface string.

    An entity may get several boxes; when the same string is several entities of the tweet (the same
    or different types), each of them gets the box. A name that matches no entity is a warning
    :class:`~mnerqg_graph.data.conll.Problem` (never silently ignored), as is a ``<filename>`` whose
    stem is not the tweet's IMGID.

    Args:
        tweet: the tweet (its entities are counted the conlleval way).
        ann: its image's annotation.
        path: the XML file ``ann`` was read from (for the problems' messages).

    Returns:
        The boxes per entity span (only spans with at least one box are keys), and the problems.
    """
    spath = str(path)
    problems: list[Problem] = []
    by_text: dict[str, list[Span]] = {}
    for span in tweet.entities:
        by_text.setdefault(span.text(tweet.tokens), []).append(span)
    if Path(ann.filename).stem != tweet.id:
        problems.append(
            Problem(
                spath,
                None,
                f"<filename> {ann.filename!r} does not name the image of tweet IMGID:{tweet.id}",
                fatal=False,
            )
        )
    boxes: dict[Span, list[Box]] = {}
    for obj in ann.objects:
        spans = by_text.get(obj.name)
        if not spans:
            known = (
                ", ".join(
                    f"{t!r} {'/'.join(sorted({x.type for x in s}))}" for t, s in by_text.items()
                )
                or "none"
            )
            problems.append(
                Problem(
                    spath,
                    obj.line or None,
                    f"box name {obj.name!r} matches no entity of tweet IMGID:{tweet.id} "
                    f"(entities: {known})",
                    fatal=False,
                )
            )
            continue
        for span in spans:
            boxes.setdefault(span, []).append(obj.box)
    return boxes, problems
