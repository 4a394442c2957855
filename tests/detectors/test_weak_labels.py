"""Tests of weak grounding labels: writing, reading back, bad input, manual-tweet selection."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest
import torch

from detectors.grounder import TweetSplit, VisualGrounder, predict_image_set, save_grounder
from detectors.manual import select_manual
from detectors.weak_labels import load_weak_boxes, pseudo_label
from mnerqg_graph.data.dataset import load_split
from mnerqg_graph.data.types import Sample
from mnerqg_graph.data.voc import attach_boxes, read_voc
from mnerqg_graph.errors import CheckpointError, ConfigError, DataError
from tests.helpers import synth_data

TYPES = ["PER", "LOC", "ORG", "OTHER"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_data(tmp_path_factory, "weak", seed=7, n_test=2)


@pytest.fixture(scope="module")
def train(synth: Path) -> list[Sample]:
    return load_split(synth, "train").samples


@pytest.fixture(scope="module")
def grounder(tmp_path_factory: pytest.TempPathFactory) -> tuple[VisualGrounder, Path]:
    """An untrained tiny grounder: its boxes and confidences are arbitrary but well formed."""
    torch.manual_seed(1)
    model = VisualGrounder(
        TYPES, backbone_kwargs={"width": 8, "out_channels": 16}, hidden_dim=32
    ).eval()
    ckpt = tmp_path_factory.mktemp("weak") / "grounder"
    save_grounder(model, ckpt)
    return model, ckpt


def test_select_manual_matches_the_experiment(train: list[Sample]) -> None:
    with_image = [i for i, s in enumerate(train) if s.image_path is not None]
    for fraction, seed in ((0.2, 0), (0.5, 13), (0.0, 1)):
        # the selection experiments.runner.apply_grounding_supervision makes
        rng = random.Random(seed)
        expected = set(rng.sample(with_image, round(fraction * len(with_image))))
        assert select_manual(train, fraction, seed) == expected
    assert select_manual(train, 1.0, 0) == set(with_image)
    with pytest.raises(ConfigError, match="manual_fraction"):
        select_manual(train, 1.5, 0)


def test_pseudo_labels_round_trip_through_voc(
    synth: Path, train: list[Sample], grounder: tuple[VisualGrounder, Path], tmp_path: Path
) -> None:
    model, ckpt = grounder
    weak = tmp_path / "weak"
    report = pseudo_label(ckpt, TweetSplit(synth), weak, device="cpu", log=None)
    xmls = sorted(weak.glob("*.xml"))
    assert report.tweets == len(xmls) > 0
    assert report.boxes == sum(len(read_voc(x).objects) for x in xmls)
    assert report.below_threshold == report.zero_area == 0

    from detectors.images import load_image_set

    todo = [s for s in train if s.image_path is not None and s.tweet.entities]
    images = load_image_set(todo, model.image_size)
    boxes, conf = predict_image_set(model, images)
    by_id = {s.tweet.id: s for s in train}
    for i, sample in enumerate(images.samples):
        path = weak / f"{sample.tweet.id}.xml"
        ann = read_voc(path)
        assert (ann.width, ann.height) == sample.image_size
        attached, problems = attach_boxes(by_id[sample.tweet.id].tweet, ann, path)
        assert problems == []
        assert set(attached) == set(sample.tweet.entities)  # every entity got its type's box
        w, h = ann.width, ann.height
        for span, got in attached.items():
            t = TYPES.index(span.type)
            assert len(got) == 1
            (b,) = got
            assert b.confidence == pytest.approx(float(conf[i, t]), abs=1e-6)
            want = boxes[i, t] * torch.tensor([w, h, w, h])
            assert [b.xmin, b.ymin, b.xmax, b.ymax] == pytest.approx(want.tolist(), abs=0.01)

    loaded = load_weak_boxes(weak, train, threshold=0.0, log=None)
    assert loaded.report.boxes_kept == loaded.report.boxes_read
    for tid, spans in loaded.items():
        attached, _ = attach_boxes(by_id[tid].tweet, read_voc(weak / f"{tid}.xml"), "x")
        assert spans == attached

    summary = json.loads((weak / "weak_labels.json").read_text())
    assert summary["boxes"] == report.boxes and summary["grounder"] == str(ckpt)


def test_threshold_and_counted_problems(
    synth: Path,
    train: list[Sample],
    grounder: tuple[VisualGrounder, Path],
    tmp_path: Path,
) -> None:
    model, _ = grounder
    weak = tmp_path / "weak"
    pseudo_label(model, TweetSplit(synth), weak, device="cpu", log=None)
    confs = sorted(b.box.confidence or 0.0 for x in weak.glob("*.xml") for b in read_voc(x).objects)
    cut = confs[len(confs) // 2]
    lines: list[str] = []
    loaded = load_weak_boxes(weak, train, threshold=cut, log=lines.append)
    rep = loaded.report
    assert rep.boxes_kept + rep.below_threshold == rep.boxes_read > rep.boxes_kept > 0
    assert all(
        b.confidence is not None and b.confidence >= cut
        for spans in loaded.values()
        for bs in spans.values()
        for b in bs
    )
    assert f"{rep.boxes_kept}/{rep.boxes_read} boxes kept" in lines[0]
    assert "under confidence" in lines[0]

    # bad input: a box outside the image, a zero-area box, a file for a tweet without image,
    # a file for no tweet of the split; all counted, none silent
    no_image = next(s for s in train if s.image_path is None)
    some = sorted(weak.glob("*.xml"))
    outside = some[0].read_text().replace("<xmax>", "<xmax>9999", 1)
    text = some[1].read_text()
    xmin = re.search(r"<xmin>([^<]*)</xmin>", text)
    assert xmin is not None
    zero = re.sub(r"<xmax>[^<]*</xmax>", f"<xmax>{xmin.group(1)}</xmax>", text, count=1)
    some[0].write_text(outside)
    some[1].write_text(zero)
    shutil.copy(some[2], weak / f"{no_image.tweet.id}.xml")
    shutil.copy(some[2], weak / "not_a_tweet.xml")
    lines.clear()
    loaded = load_weak_boxes(weak, train, threshold=0.0, log=lines.append)
    rep = loaded.report
    assert rep.bad_files == 2 and rep.no_image_files == 1 and rep.orphan_files == 1
    assert some[0].stem not in loaded and some[1].stem not in loaded
    assert "2 malformed files" in lines[0] and "1 files for no tweet" in lines[0]
    assert any("outside the image" in p for p in rep.problems)
    assert any(">=" in p for p in rep.problems)  # xmin >= xmax: zero area
    with pytest.raises(DataError, match="outside the image"):
        load_weak_boxes(weak, train, threshold=0.0, strict=True, log=None)


def test_bad_grounder_and_output_folder(
    synth: Path, grounder: tuple[VisualGrounder, Path], tmp_path: Path
) -> None:
    det = tmp_path / "det"
    det.mkdir()
    (det / "config.json").write_text(json.dumps({"kind": "detector", "backend": "x"}))
    with pytest.raises(CheckpointError, match="'detector' checkpoint, not a 'visual_grounder'"):
        pseudo_label(det, TweetSplit(synth), tmp_path / "w", log=None)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="no weak_labels.json in it"):
        pseudo_label(grounder[0], TweetSplit(synth), foreign, log=None)
    with pytest.raises(DataError, match="does not exist"):
        load_weak_boxes(tmp_path / "nowhere", [], log=None)


def test_trainers_refuse_a_foreign_output_folder_before_training(
    synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder of something else as the grounder's or detector's output is refused early.

    They save by replacing the folder as a whole; the refusal used to come after the training.
    """
    import detectors.grounder as grounder_mod
    from detectors.detection.train import train_detector

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    monkeypatch.setattr(
        grounder_mod, "fit_grounder", lambda *a, **k: pytest.fail("trained before the check")
    )
    with pytest.raises(ConfigError, match="no model.safetensors in it"):
        grounder_mod.pretrain(TweetSplit(synth, limit=4), foreign, log=None)
    with pytest.raises(ConfigError, match="no model.safetensors in it"):  # before the data
        train_detector(tmp_path / "nowhere", foreign)
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]


def test_cli_and_runner_use_the_same_labels(
    synth: Path,
    train: list[Sample],
    grounder: tuple[VisualGrounder, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mnerqg_graph.cli import main as mnerqg

    weak = tmp_path / "weak"
    assert (
        mnerqg(
            [
                "pseudo-label",
                "--grounder",
                str(grounder[1]),
                "--data",
                str(synth),
                "--out",
                str(weak),
                "--threshold",
                "0.0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "pseudo-label (train):" in capsys.readouterr().out

    from experiments.runner import apply_grounding_supervision

    out, sup = apply_grounding_supervision(
        train, {"manual_fraction": 0.5, "weak_dir": str(weak), "weak_threshold": 0.0}, 11
    )
    manual = select_manual(train, 0.5, 11)
    assert sup["manual_tweets"] == len(manual)
    weak_boxes = load_weak_boxes(weak, train, 0.0, log=None)
    for i, (before, after) in enumerate(zip(train, out, strict=True)):
        assert after.boxes == (before.boxes if i in manual else weak_boxes.get(before.tweet.id, {}))


def test_counts_under_one_are_refused_where_they_are_given() -> None:
    """Counts under 1 are refused where they are given.

    A negative ``--limit`` used to drop tweets from the end (``samples[:-1]``); a zero or
    negative batch size ran on nothing or stopped in ``range()``.
    """
    from detectors.detection.evaluation import SplitImages
    from detectors.training import Schedule
    from mnerqg_graph.errors import check_counts

    with pytest.raises(ConfigError, match="limit must be an integer >= 1, got -1"):
        TweetSplit("data", limit=-1)
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1, got 0"):
        SplitImages("data", batch_size=0)
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1, got 0"):
        Schedule(epochs=0, batch_size=2, lr=1e-3, weight_decay=0.0)
    with pytest.raises(ConfigError, match="max_steps must be an integer >= 1, got 2.5"):
        Schedule(epochs=1, batch_size=2, lr=1e-3, weight_decay=0.0, max_steps=2.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1, got True"):
        check_counts(batch_size=True)
    check_counts(limit=None, batch_size=1)  # not given, and the smallest count: fine
    assert TweetSplit("data", limit=3).limit == 3
