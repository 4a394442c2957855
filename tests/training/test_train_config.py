"""Optimisation settings are checked where they are made, and the training state keeps every RNG."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnerqg_graph.config import TrainConfig
from mnerqg_graph.errors import ConfigError


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("epochs", 0),  # before: "best epoch 0/0", then a missing best/ folder
        ("batch_size", 0),  # before: a ZeroDivisionError traceback
        ("eval_batch_size", 0),
        ("length_buckets", -1),
        ("lr", 0.0),
        ("encoder_lr", -1e-5),
        ("weight_decay", -0.1),
        ("warmup_ratio", 1.5),
        ("grad_clip", -1.0),
        ("layer_decay", 0.0),
        ("ema_decay", 1.0),
    ],
)
def test_a_bad_optimisation_setting_is_one_line_naming_it(setting: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"^optim\.{setting} must be .*, not {value!r}$"):
        TrainConfig(**{setting: value})  # type: ignore[arg-type]


def test_the_defaults_and_the_edges_of_each_range_are_accepted() -> None:
    TrainConfig()
    TrainConfig(epochs=1, batch_size=1, warmup_ratio=0.0, grad_clip=0.0, encoder_lr=0.0)
    TrainConfig(warmup_ratio=1.0, layer_decay=1.0, ema_decay=0.0)


def test_resume_without_an_output_folder_is_refused_before_any_data_is_read(
    tmp_path: Path,
) -> None:
    from experiments.runner import run_experiment

    missing = tmp_path / "nowhere"  # would be a one-line data error if it were read first
    with pytest.raises(ConfigError, match="resume=True needs output_dir"):
        run_experiment(
            {"root": str(missing)}, {}, {}, {}, 0, None, True, 0, lambda *a: None, None, {}
        )
    with pytest.raises(ConfigError, match="optim.epochs must be"):  # also before the data
        run_experiment(
            {"root": str(missing)}, {}, {"epochs": 0}, {}, 0, None, False, 0,
            lambda *a: None, None, {},
        )  # fmt: skip


def test_a_foreign_checkpoint_folder_in_output_dir_is_refused_before_training(
    tmp_path: Path,
) -> None:
    """A folder of something else at ``OUTPUT_DIR/checkpoint`` is refused at the start, and kept.

    The folder is replaced as a whole at the end: the check used to come after the training.
    """
    from experiments.runner import run_experiment

    (tmp_path / "out" / "checkpoint").mkdir(parents=True)
    (tmp_path / "out" / "checkpoint" / "notes.txt").write_text("mine")
    missing = tmp_path / "nowhere"  # would be a one-line data error if it were read first
    with pytest.raises(ConfigError, match="no model.safetensors in it"):
        run_experiment(
            {"root": str(missing)}, {}, {}, {}, 0, str(tmp_path / "out"), False, 0,
            lambda *a: None, None, {},
        )  # fmt: skip
    assert (tmp_path / "out" / "checkpoint" / "notes.txt").read_text() == "mine"


def test_the_training_state_keeps_and_restores_each_gpus_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropout after a resume on a GPU continues the saved stream.

    Checked with a stand-in for ``torch.cuda``, since no GPU is here.
    """
    from mnerqg_graph.training.checkpoint import load_training_state, save_training_state

    gpus = [torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor([4, 5], dtype=torch.uint8)]
    restored: dict[int, torch.Tensor] = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [g.clone() for g in gpus])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda st, i: restored.__setitem__(i, st))
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(net.parameters())
    cpu = torch.get_rng_state()
    save_training_state(tmp_path / "state", opt, {"epoch": 0})
    torch.rand(5)  # the CPU stream moves on
    load_training_state(tmp_path / "state", opt)
    assert torch.equal(torch.get_rng_state(), cpu)
    assert sorted(restored) == [0, 1]  # before: only the CPU generator was saved
    assert all(torch.equal(restored[i], gpus[i]) for i in range(2))
