"""Pascal VOC box files: round trip, bad input named by file/line/field, boxes attached to spans."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnerqg_graph.data.types import Box, Span, Tweet
from mnerqg_graph.data.voc import (
    VocAnnotation,
    VocObject,
    attach_boxes,
    format_voc,
    read_voc,
    write_voc,
)
from mnerqg_graph.errors import DataError

GOOD = """<?xml version="1.0" encoding="utf-8"?>
<annotation>
  <folder>twitter2015_images</folder>
  <filename>42.jpg</filename>
  <size>
    <width>640</width>
    <height>480</height>
    <depth>3</depth>
  </size>
  <object>
    <name>George Zimmerman</name>
    <pose>Unspecified</pose>
    <bndbox>
      <xmin>10</xmin>
      <ymin>20.5</ymin>
      <xmax>200</xmax>
      <ymax>480</ymax>
    </bndbox>
  </object>
  <object>
    <name> Paris </name>
    <bndbox><xmin>0</xmin><ymin>0</ymin><xmax>640</xmax><ymax>100</ymax></bndbox>
    <confidence>0.25</confidence>
  </object>
</annotation>
"""


def write(tmp_path: Path, text: str, name: str = "42.xml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_good_file(tmp_path: Path) -> None:
    ann = read_voc(write(tmp_path, GOOD))
    assert (ann.filename, ann.width, ann.height) == ("42.jpg", 640, 480)
    assert ann.objects == [
        VocObject("George Zimmerman", Box(10, 20.5, 200, 480)),
        VocObject("Paris", Box(0, 0, 640, 100, confidence=0.25)),
    ]
    assert [o.line for o in ann.objects] == [10, 20]


def test_write_read_round_trip(tmp_path: Path) -> None:
    ann = VocAnnotation(
        "17_06_1.jpg",
        300,
        200,
        [
            VocObject("Donald Trump", Box(1, 2, 30.25, 40)),
            VocObject("A & B <Co>", Box(0.1, 0.2, 300, 200, confidence=0.875)),
        ],
    )
    path = tmp_path / "sub" / "17_06_1.xml"
    write_voc(path, ann)
    assert read_voc(path) == ann
    text = path.read_text(encoding="utf-8")
    assert "<xmin>1</xmin>" in text and "<xmax>30.25</xmax>" in text  # whole numbers as VOC ints
    assert "<confidence>0.875</confidence>" in text
    assert "<confidence>" not in text.split("</object>")[0]  # only weak labels carry one


def replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        (replace("</size>", "</siz>"), 9, None, "malformed XML: mismatched tag"),
        ("", 1, None, "malformed XML"),
        (replace("<width>640</width>", ""), 5, "annotation/size/width", "missing <width>"),
        (replace("<filename>42.jpg</filename>", ""), 2, "annotation/filename", "missing"),
        (replace("<height>480</height>", "<height>-4</height>"), 7, "annotation/size/height", ""),
        (replace("<xmin>10</xmin>", "<xmin>ten</xmin>"), 14, "object[1]/bndbox/xmin", "'ten'"),
        (replace("<xmin>10</xmin>", "<xmin>nan</xmin>"), 14, "object[1]/bndbox/xmin", "number"),
        (replace("<xmin>10</xmin>", "<xmin>300</xmin>"), 14, "object[1]/bndbox/xmin", ">= xmax"),
        (replace("<ymin>20.5</ymin>", "<ymin>480</ymin>"), 15, "object[1]/bndbox/ymin", ">="),
        (replace("<xmax>200</xmax>", "<xmax>641</xmax>"), 16, "object[1]/bndbox/xmax", "outside"),
        (replace("<xmin>10</xmin>", "<xmin>-1</xmin>"), 14, "object[1]/bndbox/xmin", "outside"),
        (replace("<ymax>480</ymax>", "<ymax>481</ymax>"), 17, "object[1]/bndbox/ymax", "outside"),
        (replace("<name>George Zimmerman</name>", ""), 10, "object[1]/name", "missing"),
        (replace("<name>George Zimmerman</name>", "<name> </name>"), 11, "object[1]/name", ""),
        (replace("<confidence>0.25", "<confidence>1.5"), 23, "object[2]/confidence", "[0, 1]"),
        (replace("<annotation>", "<annot>").replace("</annotation>", "</annot>"), 1, None, "root"),
    ],
)
def test_bad_files_name_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str | None, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_voc(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert str(err).startswith(f"{path}:{line}")
    assert words in str(err)


def test_entity_expansion_is_refused(tmp_path: Path) -> None:
    bomb = (
        '<?xml version="1.0"?>\n<!DOCTYPE a [\n<!ENTITY x "xxxxxxxxxx">\n'
        '<!ENTITY y "&x;&x;&x;&x;&x;&x;&x;&x;">\n]>\n<annotation>&y;</annotation>\n'
    )
    with pytest.raises(DataError, match=r"42\.xml:3: entity declarations are not allowed"):
        read_voc(write(tmp_path, bomb))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_voc(tmp_path / "no.xml")


@pytest.mark.parametrize(
    "obj",
    [
        VocObject("", Box(0, 0, 1, 1)),
        VocObject(" a", Box(0, 0, 1, 1)),
        VocObject("a", Box(5, 0, 5, 1)),
        VocObject("a", Box(0, 0, 11, 1)),
        VocObject("a", Box(0, 0, 1, 1, confidence=2.0)),
        VocObject("a", Box(0, 0, float("inf"), 1)),
    ],
)
def test_writer_refuses_what_would_not_read_back(tmp_path: Path, obj: VocObject) -> None:
    with pytest.raises(ValueError):
        format_voc(VocAnnotation("1.jpg", 10, 10, [obj]))
    with pytest.raises(ValueError):
        write_voc(tmp_path / "1.xml", VocAnnotation("1.jpg", 10, 10, [obj]))
    assert not (tmp_path / "1.xml").exists()


def test_attach_boxes_matches_surface_strings() -> None:
    tweet = Tweet(
        "42",
        ["Paris", "loves", "Paris", "and", "George", "Zimmerman", ".", "Louis", "Vuitton"],
        ["B-PER", "O", "B-LOC", "O", "B-PER", "I-PER", "O", "I-ORG", "I-ORG"],
    )
    b1, b2, b3, b4 = Box(0, 0, 5, 5), Box(1, 1, 6, 6), Box(2, 2, 7, 7), Box(3, 3, 8, 8)
    ann = VocAnnotation(
        "42.jpg",
        100,
        100,
        [
            VocObject("George Zimmerman", b1, line=4),
            VocObject("Paris", b2, line=9),
            VocObject("George Zimmerman", b3, line=14),
            VocObject("Louis Vuitton", b4, line=19),  # an entity opened by I- (conlleval)
            VocObject("George", b4, line=24),  # part of an entity: not an entity
        ],
    )
    boxes, problems = attach_boxes(tweet, ann, "b/42.xml")
    assert boxes == {
        Span(4, 6, "PER"): [b1, b3],
        Span(0, 1, "PER"): [b2],
        Span(2, 3, "LOC"): [b2],
        Span(7, 9, "ORG"): [b4],
    }
    assert [(p.path, p.line, p.fatal) for p in problems] == [("b/42.xml", 24, False)]
    assert "'George' matches no entity of tweet IMGID:42" in str(problems[0])
    assert "'Paris' LOC/PER" in problems[0].message


def test_attach_boxes_warns_about_a_filename_of_another_image() -> None:
    tweet = Tweet("7", ["Rome"], ["B-LOC"])
    boxes, problems = attach_boxes(
        tweet, VocAnnotation("8.jpg", 10, 10, [VocObject("Rome", Box(0, 0, 1, 1))]), "7.xml"
    )
    assert boxes == {Span(0, 1, "LOC"): [Box(0, 0, 1, 1)]}
    assert len(problems) == 1 and "'8.jpg'" in problems[0].message and not problems[0].fatal
