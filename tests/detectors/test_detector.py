"""Tests of the detector backends (tiny SynthTweets at 64 px, CPU, no downloaded weights)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from detectors.detector import (
    DETECTOR_REGISTRY,
    Detections,
    TorchvisionFasterRCNN,
    build_detector,
    detection_regions,
    detection_targets,
    load_detector,
    load_image_set,
    main,
    read_detections,
)
from mnerqg_graph.data.dataset import load_split
from mnerqg_graph.encoders.image import build_backbone
from mnerqg_graph.errors import CheckpointError, ConfigError
from tests.helpers import synth_data

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
HAS_DETECTRON2 = importlib.util.find_spec("detectron2") is not None
needs_torchvision = pytest.mark.skipif(
    not HAS_TORCHVISION, reason="torchvision not installed (the 'vision' extra)"
)
TYPES = ["PER", "LOC", "ORG", "OTHER"]
# Small proposal and RoI counts keep a CPU step around a second.
TINY_FRCNN = {
    "min_size": 64,
    "max_size": 64,
    "rpn_pre_nms_top_n": 100,
    "rpn_post_nms_top_n": 50,
    "box_batch_size_per_image": 32,
    "detections_per_img": 20,
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_data(tmp_path_factory, "det", seed=3, n_test=4)


@pytest.fixture(scope="module")
def batch(synth: Path) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    samples = load_split(synth, "train").samples
    images = load_image_set(samples, 64)
    with_boxes = [i for i, s in enumerate(images.samples) if s.boxes][:4]
    targets = detection_targets([images.samples[i] for i in with_boxes], TYPES)
    return images.batch(with_boxes, "cpu"), targets


@needs_torchvision
def test_torchvision_training_lowers_loss_and_detects(
    batch: tuple[torch.Tensor, list[dict[str, torch.Tensor]]], tmp_path: Path
) -> None:
    images, targets = batch
    det = build_detector("torchvision_frcnn", types=TYPES, **TINY_FRCNN)
    assert isinstance(det, TorchvisionFasterRCNN)
    opt = torch.optim.AdamW(det.parameters(), lr=1e-3)
    totals = []
    for _ in range(4):
        losses = det.fit_step(images, targets)
        assert {"loss_classifier", "loss_box_reg", "loss_objectness"} <= set(losses)
        loss = torch.stack(list(losses.values())).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(float(loss.detach()))
    assert totals[-1] < totals[0]

    dets = det.detect(images)
    assert len(dets) == images.shape[0]
    for d in dets:
        assert isinstance(d, Detections)
        k = len(d)
        assert d.boxes.shape == (k, 4) and d.scores.shape == (k,) and d.labels.shape == (k,)
        assert d.labels.dtype == torch.int64
        if k:
            assert 0 <= float(d.boxes.min()) and float(d.boxes.max()) <= 1
            assert (d.boxes[:, 2:] >= d.boxes[:, :2]).all()
            assert 0 <= int(d.labels.min()) and int(d.labels.max()) < len(TYPES)
            assert (d.scores[:-1] >= d.scores[1:]).all()  # best first

    # save / load round trip: same weights, same detections
    det.save(tmp_path / "ckpt")
    again = load_detector(tmp_path / "ckpt")
    assert type(again) is TorchvisionFasterRCNN and again.config() == det.config()
    for a, b in zip(det.detect(images), again.detect(images), strict=True):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)

    # a checkpoint made by another backend: one line naming the file and both backends
    cfg_path = tmp_path / "ckpt" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["backend"] = "detectron2"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as err:
        det.load(tmp_path / "ckpt")
    msg = str(err.value)
    assert "\n" not in msg and str(cfg_path) in msg
    assert "'detectron2'" in msg and "'torchvision_frcnn'" in msg


def test_not_a_detector_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "config.json").write_text(json.dumps({"kind": "visual_grounder"}))
    with pytest.raises(CheckpointError, match="visual_grounder"):
        load_detector(tmp_path / "g")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"types": TYPES}))
    with pytest.raises(CheckpointError, match="no 'kind' field"):
        load_detector(tmp_path / "m")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_detector(tmp_path / "missing")


def test_registry_and_bad_options() -> None:
    assert {"torchvision_frcnn", "detectron2"} <= set(DETECTOR_REGISTRY.names())
    with pytest.raises(ConfigError, match="unknown detector backend"):
        build_detector("yolo", types=TYPES)
    if HAS_TORCHVISION:
        with pytest.raises(ConfigError, match="arch"):
            build_detector("torchvision_frcnn", types=TYPES, arch="vgg")


@pytest.mark.skipif(HAS_DETECTRON2, reason="detectron2 is installed")
def test_detectron2_missing_says_how_to_install() -> None:
    with pytest.raises(ConfigError) as err:
        build_detector("detectron2", types=TYPES)
    msg = str(err.value)
    assert "not on PyPI" in msg and "pip install --no-build-isolation" in msg
    assert "facebookresearch/detectron2" in msg and "\n" not in msg


@pytest.mark.skipif(
    not HAS_DETECTRON2,
    reason="detectron2 not installed (not on PyPI; build it from source, see the README)",
)
def test_detectron2_backend(
    batch: tuple[torch.Tensor, list[dict[str, torch.Tensor]]], tmp_path: Path
) -> None:
    images, targets = batch
    det = build_detector(
        "detectron2", types=TYPES, min_size=64, max_size=64, opts=["MODEL.RESNETS.DEPTH", 50]
    )
    losses = det.fit_step(images[:2], targets[:2])
    assert all(torch.isfinite(v) for v in losses.values())
    dets = det.detect(images[:2])
    assert len(dets) == 2 and all(d.boxes.shape[1:] == (4,) for d in dets)
    det.save(tmp_path / "d2")
    assert load_detector(tmp_path / "d2").config() == det.config()


def test_detection_regions() -> None:
    backbone = build_backbone("small_cnn", width=8, out_channels=16)
    feats = backbone(torch.rand(2, 3, 64, 64))
    dets = [
        Detections(
            torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 0.9, 0.9]]),
            torch.tensor([0.2, 0.9]),
            torch.tensor([0, 1]),
        ),
        Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)),
    ]
    sets = detection_regions(feats, dets, 64, max_regions=4)
    assert len(sets) == 3
    for rs in sets:
        assert rs.features.shape == (2, 4, 16)
        assert rs.mask is not None and not rs.mask[1].any()
    assert sum(int(rs.valid_mask()[0].sum()) for rs in sets) == 2


@needs_torchvision
def test_train_and_detect_commands(
    synth: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ckpt, out = tmp_path / "det", tmp_path / "dets.jsonl"
    assert (
        main(
            [
                "train",
                "--data",
                str(synth),
                "--out",
                str(ckpt),
                "--epochs",
                "1",
                "--max-steps",
                "1",
                "--batch-size",
                "2",
                "--limit",
                "4",
                "--image-size",
                "64",
                "--min-size",
                "64",
                "--max-size",
                "64",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (ckpt / "model.safetensors").is_file()
    printed = capsys.readouterr().out
    assert "epoch 1/1: loss" in printed and "trained 1 steps" in printed
    assert (
        main(
            [
                "detect",
                "--detector",
                str(ckpt),
                "--data",
                str(synth),
                "--split",
                "test",
                "--out",
                str(out),
                "--image-size",
                "64",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    samples = load_split(synth, "test").samples
    assert [r["id"] for r in records] == [s.tweet.id for s in samples if s.image_path]
    for r in records:
        for d in r["detections"]:
            x0, y0, x1, y1 = d["box"]
            assert 0 <= x0 <= x1 <= r["width"] and 0 <= y0 <= y1 <= r["height"]
            assert d["type"] in TYPES
    back = read_detections(out, TYPES)
    assert set(back) == {r["id"] for r in records}
    assert "detections in" in capsys.readouterr().out
    argv = ["evaluate", "--detector", str(ckpt), "--data", str(synth), "--image-size", "64"]
    assert main([*argv, "--device", "cpu", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["images"] == len(records) and 0.0 <= scores["mAP50"] <= 1.0
    assert set(scores) >= {"AP50_PER", "mAP50", "mAP50_95"}
    # a type without gold boxes has no AP (NaN): null in the JSON (NaN is not JSON), n/a in text
    nan_ap = {"images": 3.0, "AP50_LOC": float("nan"), "mAP50": 0.5}
    monkeypatch.setattr("detectors.detector.evaluate_split", lambda *_: dict(nan_ap))
    assert main([*argv, "--device", "cpu", "--json"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    strict = json.loads(line, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert strict == {"images": 3.0, "AP50_LOC": None, "mAP50": 0.5}
    assert main([*argv, "--device", "cpu"]) == 0
    text = capsys.readouterr().out.strip().splitlines()[-1]
    assert text == "images=3  AP50_LOC=n/a  mAP50=0.5000"


def test_box_average_precision_of_known_detections() -> None:
    from detectors.detector import box_average_precision

    gold = [
        {"boxes": torch.tensor([[0.1, 0.1, 0.5, 0.5]]), "labels": torch.tensor([0])},
        {"boxes": torch.tensor([[0.5, 0.5, 0.9, 0.9]]), "labels": torch.tensor([0])},
    ]
    perfect = [Detections(t["boxes"].clone(), torch.tensor([0.9]), torch.tensor([0])) for t in gold]
    ap = box_average_precision(perfect, gold, ["PER", "LOC"])
    assert ap["AP50_PER"] == pytest.approx(1.0) and ap["mAP50"] == pytest.approx(1.0)
    assert ap["mAP50_95"] == pytest.approx(1.0) and ap["AP50_LOC"] != ap["AP50_LOC"]  # nan
    # a confident false positive first, then the two hits: precision 0, 1/2, 2/3 at recall 0,
    # 1/2, 1; the interpolated envelope is 2/3 at both recall steps
    fp = Detections(torch.tensor([[0.0, 0.6, 0.2, 0.8]]), torch.tensor([0.95]), torch.tensor([0]))
    mixed = [
        Detections(
            torch.cat([perfect[0].boxes, fp.boxes]),
            torch.cat([perfect[0].scores, fp.scores]),
            torch.cat([perfect[0].labels, fp.labels]),
        ),
        perfect[1],
    ]
    assert box_average_precision(mixed, gold, ["PER"])["AP50_PER"] == pytest.approx(2 / 3)


def test_detection_targets_leave_out_boxes_empty_inside_the_image() -> None:
    from mnerqg_graph.data.types import Box, Sample, Span, Tweet

    tweet = Tweet("t", ["Kelvo", "in", "Marn"], ["B-PER", "O", "B-LOC"])
    per, loc = Span(0, 1, "PER"), Span(2, 3, "LOC")
    boxes = {
        per: [Box(10, 20, 110, 220), Box(210, 10, 260, 50)],  # the second is right of the image
        loc: [Box(50, 50, 50, 90)],  # zero width
    }
    sample = Sample(tweet, Path("t.jpg"), (200, 400), boxes)
    (target,) = detection_targets([sample], TYPES)
    assert torch.allclose(target["boxes"], torch.tensor([[0.05, 0.05, 0.55, 0.55]]))
    assert target["labels"].tolist() == [0]
    assert not target["boxes"].isnan().any()
