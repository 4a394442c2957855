"""Tests of the visual-grounding model (tiny SynthTweets at 64 px, tiny small_cnn, CPU)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from detectors.grounder import (
    FINETUNING,
    PRETRAINING,
    TweetSplit,
    VisualGrounder,
    evaluate_grounder,
    finetune,
    fit_grounder,
    grounding_data,
    load_grounder,
    main,
    predict_image_set,
    pretrain,
    save_grounder,
)
from detectors.manual import select_manual
from mnerqg_graph.data.dataset import load_split
from mnerqg_graph.errors import CheckpointError, ConfigError, DataError
from tests.helpers import synth_data

TYPES = ["PER", "LOC", "ORG", "OTHER"]
TINY = {"backbone_kwargs": {"width": 8, "out_channels": 16}, "hidden_dim": 32}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_data(tmp_path_factory, "grounder", seed=5, n_test=8)


def test_shapes_and_config_errors() -> None:
    model = VisualGrounder(TYPES, **TINY)  # type: ignore[arg-type]
    images = torch.rand(2, 3, 64, 64)
    logits, boxes = model(images, torch.tensor([0, 0, 1]), torch.tensor([0, 3, 1]))
    cells = 2 * 2 + 4 * 4 + 8 * 8
    assert logits.shape == (3, cells) and boxes.shape == (3, cells, 4)
    box, conf = model.predict(images, torch.tensor([1]), torch.tensor([2]))
    assert box.shape == (1, 4) and conf.shape == (1,)
    with pytest.raises(ConfigError, match="multiple"):
        VisualGrounder(TYPES, image_size=60)
    with pytest.raises(ConfigError, match="distinct"):
        VisualGrounder(["PER", "PER"])


def test_training_lowers_loss_and_round_trip(synth: Path, tmp_path: Path) -> None:
    samples = load_split(synth, "train").samples
    model = VisualGrounder(TYPES, **TINY)  # type: ignore[arg-type]
    data = grounding_data(samples, TYPES, 64)
    assert len(data) == sum(s.image_path is not None for s in samples)
    result = fit_grounder(model, data, epochs=8, batch_size=8, lr=3e-3, device="cpu", log=None)
    assert result.history[-1] < result.history[0]

    save_grounder(model, tmp_path / "g", [{"stage": "test"}])
    assert json.loads((tmp_path / "g" / "config.json").read_text())["kind"] == "visual_grounder"
    again, stages = load_grounder(tmp_path / "g")
    assert stages == [{"stage": "test"}] and again.config() == model.config()
    b1, c1 = predict_image_set(model, data.images)
    b2, c2 = predict_image_set(again, data.images)
    assert torch.equal(b1, b2) and torch.equal(c1, c2)
    assert b1.shape == (len(data), len(TYPES), 4)


def test_evaluate_and_commands(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    model, result = pretrain(
        TweetSplit(synth),
        pre,
        image_size=64,
        training=replace(PRETRAINING, epochs=1, max_steps=2, batch_size=4, device="cpu"),
        log=None,
        **TINY,
    )  # type: ignore[arg-type]
    assert result.steps == 2 and (pre / "model.safetensors").is_file()
    scores = evaluate_grounder(model, load_split(synth, "test").samples)
    for key, value in scores.to_dict().items():
        if key.endswith("_acc"):
            assert 0.0 <= value <= 1.0, key
    assert scores.images == sum(s.image_path is not None for s in load_split(synth, "test").samples)

    assert (
        main(
            [
                "finetune",
                "--init",
                str(pre),
                "--data",
                str(synth),
                "--out",
                str(fine),
                "--manual-fraction",
                "0.5",
                "--seed",
                "3",
                "--epochs",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    _, stages = load_grounder(fine)
    assert [s["stage"] for s in stages] == ["pretrain", "finetune"]
    manual = select_manual(load_split(synth, "train").samples, 0.5, 3)
    assert stages[1]["manual_tweets"] == len(manual)

    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--grounder",
                str(fine),
                "--data",
                str(synth),
                "--split",
                "test",
                "--json",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert 0.0 <= out["grounding_acc"] <= 1.0 and 0.0 <= out["none_acc"] <= 1.0

    training = replace(FINETUNING, epochs=1, device="cpu")
    with pytest.raises(DataError, match="no manual tweet"):
        finetune(pre, TweetSplit(synth), None, manual_fraction=0.0, training=training, log=None)


def test_wrong_checkpoint_kind(tmp_path: Path) -> None:
    (tmp_path / "det").mkdir()
    (tmp_path / "det" / "config.json").write_text(json.dumps({"kind": "detector"}))
    with pytest.raises(CheckpointError, match="'detector' checkpoint, not a 'visual_grounder'"):
        load_grounder(tmp_path / "det")
    with pytest.raises(CheckpointError, match="missing config.json"):
        (tmp_path / "empty").mkdir()
        load_grounder(tmp_path / "empty")
