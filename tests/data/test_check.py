"""check-data on the real files and on a folder with every kind of problem; loader and images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from mnerqg_graph.data.check import check_dataset, format_report, main
from mnerqg_graph.data.conll import write_conll
from mnerqg_graph.data.dataset import gold_boxes, load_split
from mnerqg_graph.data.images import find_image, index_images, load_image, probe_image
from mnerqg_graph.data.types import Box, Span, Tweet
from mnerqg_graph.data.voc import VocAnnotation, VocObject, write_voc
from mnerqg_graph.errors import ConfigError, DataError

# data/README.md: tweets, tokens, then B- counts of PER, LOC, ORG, OTHER/MISC.
README = {
    ("twitter2015", "train"): (4000, 64439, 2217, 2091, 927, 931),
    ("twitter2015", "valid"): (1000, 16178, 552, 522, 247, 220),
    ("twitter2015", "test"): (3257, 52822, 1816, 1697, 839, 720),
    ("twitter2017", "train"): (3373, 53007, 2943, 731, 1674, 701),
    ("twitter2017", "valid"): (723, 11309, 626, 173, 375, 150),
    ("twitter2017", "test"): (723, 11330, 621, 178, 395, 157),
}
# README: I- tags without B- in Twitter-2015, and the conlleval entity totals they give.
STRAY_2015 = {"train": 186, "valid": 53, "test": 135}
LENIENT_2015 = {"train": 6352, "valid": 1594, "test": 5207}


@pytest.mark.parametrize("name", ["twitter2015", "twitter2017"])
def test_real_counts_match_the_readme(
    real_data: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    report = check_dataset(real_data / name)
    assert report.ok and not report.fatal
    for s in report.splits:
        tweets, tokens, *b_counts = README[(name, s.split)]
        assert (s.tweets, s.tokens) == (tweets, tokens)
        assert [s.strict[t] for t in ("PER", "LOC", "ORG", "OTHER")] == b_counts
        assert set(s.strict) == set(s.lenient) == {"PER", "LOC", "ORG", "OTHER"}
        stray = STRAY_2015[s.split] if name == "twitter2015" else 0
        assert s.inside_without_begin == stray
        assert sum(s.lenient.values()) == sum(b_counts) + stray
        if name == "twitter2015":
            assert sum(s.lenient.values()) == LENIENT_2015[s.split]
        else:
            assert s.lenient == s.strict
    assert [s.split for s in report.splits] == ["train", "valid", "test"]
    # The command: table rows as in the README, the warnings, exit code 0 and a last OK line.
    assert main([str(real_data / name)]) == 0
    out = capsys.readouterr().out.splitlines()
    for split in ("train", "valid", "test"):
        tweets, tokens, *b_counts = README[(name, split)]
        row = [split, str(tweets), str(tokens), *map(str, b_counts), str(sum(b_counts))]
        assert row in [line.split() for line in out]
    warnings = [line for line in out if line.strip().startswith("warning:")]
    assert len(warnings) == (3 if name == "twitter2015" else 0)
    if name == "twitter2015":
        assert "train.txt:410: 186 I- tags with no B-" in warnings[0]
    assert out[-1].startswith("OK: usable (3 splits")


# ----------------------------------------------------------------------------- a small folder


def _jpg(
    path: Path, size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 0, 0)
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


TRAIN = [
    Tweet("1", ["George", "Zimmerman", "in", "Paris"], ["B-PER", "I-PER", "O", "B-LOC"]),
    Tweet("2", ["St", ".", "Louis", "\ufe0f"], ["O", "O", "I-LOC", "O"]),
    Tweet("3", ["Apple", "news"], ["B-ORG", "O"]),
    Tweet("4", ["nothing"], ["O"]),
    Tweet("5", ["Nasa", "rocks"], ["B-ORG", "O"]),
]
DEV = [Tweet("6", ["Obama", "visits", "Cuba"], ["B-PER", "O", "B-MISC"])]
TEST = [Tweet("7", ["hi", "Rome"], ["O", "B-LOC"]), Tweet("8", ["x"], ["B-EVENT"])]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A data set with images (good, truncated, fake, too small), boxes (good, bad, orphan)."""
    root = tmp_path / "ds"
    write_conll(root / "train.txt", TRAIN)
    write_conll(root / "dev.txt", DEV)  # dev.txt is accepted for the valid split
    write_conll(root / "test.txt", TEST)
    images = root / "images"
    _jpg(images / "1.jpg")
    _jpg(images / "2.JPG")  # upper-case extension
    _jpg(images / "3.png", size=(128, 96))  # the boxes say 64x48: rescaled
    (images / "4.jpg").write_text("not an image")  # unreadable: text-only
    Image.effect_noise((64, 48), 80).convert("RGB").save(images / "5.jpg")
    data = (images / "5.jpg").read_bytes()
    (images / "5.jpg").write_bytes(data[: len(data) * 3 // 4])  # truncated pixel data
    _jpg(images / "6.webp")
    # 7 and 8 have no image.
    boxes = root / "boxes"
    write_voc(
        boxes / "1.xml",
        VocAnnotation(
            "1.jpg",
            64,
            48,
            [
                VocObject("George Zimmerman", Box(1, 2, 30, 40)),
                VocObject("George Zimmerman", Box(31, 2, 60, 40)),
                VocObject("Zimmerman", Box(0, 0, 5, 5)),  # names no entity: warning
            ],
        ),
    )
    write_voc(
        boxes / "3.xml", VocAnnotation("3.jpg", 64, 48, [VocObject("Apple", Box(2, 4, 6, 8))])
    )
    write_voc(boxes / "7.xml", VocAnnotation("7.jpg", 64, 48, [VocObject("Rome", Box(0, 0, 9, 9))]))
    write_voc(boxes / "99.xml", VocAnnotation("99.jpg", 8, 8, []))  # no such tweet
    return root


def test_load_split_with_images_and_boxes(folder: Path) -> None:
    train = load_split(folder, "train")
    r = train.report
    assert (r.tweets, r.tokens, r.with_image, r.missing_images, r.unreadable_images) == (
        5,
        13,
        4,
        0,
        1,
    )
    by_id = {s.tweet.id: s for s in train.samples}
    assert by_id["1"].image_path == folder / "images" / "1.jpg"
    assert by_id["2"].image_path == folder / "images" / "2.JPG"
    assert by_id["4"].image_path is None  # unreadable: runs text-only
    # Header-only probing does not catch the truncated JPEG; verify_images does.
    assert by_id["5"].image_path is not None
    assert load_split(folder, "train", verify_images=True).report.unreadable_images == 2
    assert by_id["1"].boxes == {
        Span(0, 2, "PER"): [Box(1, 2, 30, 40), Box(31, 2, 60, 40)],
    }
    assert gold_boxes(by_id["1"]) == {
        Span(0, 2, "PER"): [Box(1, 2, 30, 40), Box(31, 2, 60, 40)],
        Span(3, 4, "LOC"): [],
    }
    assert by_id["3"].boxes == {Span(0, 1, "ORG"): [Box(4, 8, 12, 16)]}  # rescaled x2
    assert by_id["3"].image_size == (128, 96)
    assert (r.with_boxes, r.boxes, r.box_problems) == (2, 3, 2)
    assert train.samples[1].tweet.tokens[-1] == "\ufe0f"
    valid = load_split(folder, "dev")
    assert valid.split == "valid" and valid.samples[0].image_path == folder / "images" / "6.webp"
    test = load_split(folder, "test")
    assert test.report.missing_images == 2 and test.samples[0].image_path is None
    assert test.samples[0].boxes == {Span(1, 2, "LOC"): [Box(0, 0, 9, 9)]}
    # Text only when the image folder is given elsewhere and empty.
    empty = folder.parent / "empty"
    empty.mkdir()
    assert load_split(folder, "train", images_dir=empty).report.missing_images == 5


def test_load_split_bad_paths(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data-set folder does not exist"):
        load_split(tmp_path / "nope", "train")
    with pytest.raises(DataError, match="image folder does not exist"):
        load_split(folder, "train", images_dir=tmp_path / "nope")
    with pytest.raises(DataError, match="box folder does not exist"):
        load_split(folder, "train", boxes_dir=tmp_path / "nope")
    (folder / "test.txt").unlink()
    with pytest.raises(DataError, match="no test.txt"):
        load_split(folder, "test")
    with pytest.raises(ConfigError, match="unknown split 'training'"):  # one line, not a traceback
        load_split(folder, "training")


def test_load_split_strict_raises_on_a_malformed_box_file(folder: Path) -> None:
    (folder / "boxes" / "3.xml").write_text("<annotation><filename>3.jpg</filename>")
    with pytest.raises(DataError, match=r"3\.xml:1: malformed XML"):
        load_split(folder, "train")
    lenient = load_split(folder, "train", strict=False)
    assert any(p.fatal and "3.xml" in p.path for p in lenient.report.problems)
    assert len(lenient.samples) == 5


def test_check_reports_every_problem(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = check_dataset(folder)
    assert report.ok, report.reason
    texts = [str(p) for p in report.problems]

    def one(*words: str) -> str:
        hits = [t for t in texts if all(w in t for w in words)]
        assert len(hits) == 1, (words, texts)
        return hits[0]

    one("4.jpg", "unreadable image")
    one("5.jpg", "unreadable image")
    one("train.txt:10: 1 I- tags with no B-", "lines 10)")
    one("1.xml", "'Zimmerman' matches no entity")
    one("3.xml", "<size> 64x48 differs from the image's 128x96")
    one("test.txt:1: no image for tweet IMGID:7")
    one("test.txt:5: no image for tweet IMGID:8")
    one("7.xml", "whose image is missing")
    one("99.xml", "no tweet has IMGID 99")
    assert len(texts) == 9
    assert report.types == ["PER", "LOC", "ORG", "OTHER", "EVENT"]
    test = report.splits[2]
    assert test.strict == {"PER": 0, "LOC": 1, "ORG": 0, "OTHER": 0, "EVENT": 1}
    assert report.splits[1].strict["OTHER"] == 1  # B-MISC
    text = format_report(report)
    assert "EVENT" in text.splitlines()[5] and text.splitlines()[-1].startswith("OK")
    # --json: one object, the same content.
    assert main([str(folder), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and len(data["problems"]) == 9
    assert data["splits"]["train"]["entities_conlleval"]["LOC"] == 2
    assert data["splits"]["train"]["images"]["unreadable"] == 2


def test_check_fatal_problems_give_exit_code_1(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (folder / "test.txt").open("a", encoding="utf-8") as f:
        f.write("\nIMGID:9\nbad line\n\nIMGID:10\nok\tB-PER\n")
    shutil.move(folder / "dev.txt", folder / "elsewhere.txt")
    assert main([str(folder)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any("error:" in line and "test.txt:10: token line without a TAB" in line for line in out)
    assert any("error:" in line and "no valid.txt or dev.txt" in line for line in out)
    assert out[-1].startswith("FAILED: 3 fatal problem(s)")
    report = check_dataset(folder)
    # The good tweet after the bad one is still read and counted.
    assert report.splits[-1].tweets == 3 and report.splits[-1].strict["PER"] == 1


def test_check_missing_folder_is_one_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data-set folder does not exist"):
        main([str(tmp_path / "nope")])


# ----------------------------------------------------------------------------- images


def test_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _jpg(tmp_path / "a.jpg", size=(40, 20), color=(255, 0, 0))
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(tmp_path / "t.PNG")
    (tmp_path / "a.txt").write_text("x")
    assert probe_image(tmp_path / "a.jpg") == (40, 20)
    image = load_image(tmp_path / "a.jpg", 16)
    assert image.shape == (3, 16, 16) and image.dtype.is_floating_point
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert float(image[0].mean()) > 0.95 and float(image[1].mean()) < 0.05
    assert float(load_image(tmp_path / "t.PNG", 8).min()) == 1.0  # transparent on white
    assert find_image(tmp_path, "t") == tmp_path / "t.PNG"
    assert find_image(tmp_path, "a") == tmp_path / "a.jpg"
    assert find_image(tmp_path, "z") is None and find_image(tmp_path, "../a") is None
    assert index_images(tmp_path) == {"a": tmp_path / "a.jpg", "t": tmp_path / "t.PNG"}
    with pytest.raises(DataError, match=r"a\.txt: unreadable image"):
        probe_image(tmp_path / "a.txt")
    # PIL's decompression-bomb guard: up to 2x the limit loads, beyond is a clear DataError.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    assert load_image(tmp_path / "a.jpg", 4).shape == (3, 4, 4)  # 800 px: within 2x
    _jpg(tmp_path / "big.jpg", size=(40, 40))
    with pytest.raises(DataError, match=r"big\.jpg: image too large"):
        load_image(tmp_path / "big.jpg", 4)


def test_boxes_without_an_image_folder_run_text_only_quietly(folder: Path) -> None:
    shutil.rmtree(folder / "images")
    test = load_split(folder, "test")
    assert test.report.images_dir is None and test.report.missing_images == 0
    assert test.samples[0].boxes == {Span(1, 2, "LOC"): [Box(0, 0, 9, 9)]}
    assert test.samples[0].image_path is None and test.samples[0].image_size == (64, 48)
    assert test.report.problems == []


def test_wide_grey_images_load_as_their_8_bit_version(tmp_path: Path) -> None:
    """16-bit PNGs and 32-bit integer or float TIFFs read like the same picture in 8 bits.

    PIL's RGB conversion clips these modes at 255: a 16-bit image used to come out almost white
    (mean 0.997 instead of 0.5) for the model, the region cache, the detector and the grounder.
    """
    import numpy as np

    wide = (np.random.default_rng(0).random((40, 60)) * 65535).astype(np.uint16)
    Image.fromarray((wide >> 8).astype(np.uint8)).save(tmp_path / "g8.png")
    Image.fromarray(wide).save(tmp_path / "g16.png")
    Image.fromarray(wide.astype(np.int32)).save(tmp_path / "i32.tif")
    Image.fromarray((wide / 65535).astype(np.float32)).save(tmp_path / "f.tif")
    assert [Image.open(tmp_path / n).mode for n in ("g16.png", "i32.tif", "f.tif")] == [
        "I;16",
        "I",
        "F",
    ]
    reference = load_image(tmp_path / "g8.png", 32)
    assert 0.45 < float(reference.mean()) < 0.55
    for name in ("g16.png", "i32.tif", "f.tif"):
        image = load_image(tmp_path / name, 32)
        assert float((image - reference).abs().max()) <= 2 / 255, name  # rounding only
    assert probe_image(tmp_path / "g16.png") == (60, 40)
