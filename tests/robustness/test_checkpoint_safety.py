"""Loading an untrusted checkpoint never runs code: safetensors + JSON, nothing is unpickled.

A downloaded checkpoint folder may carry pickles (``pytorch_model.bin``, ``model.pt``,
``optimizer.pt``, ...) whose unpickling would run code, or Python files that a ``trust_remote_code``
loader would import. Each planted payload here would create a marker file; loading the checkpoint,
predicting with it and resuming a training state must leave the marker absent.
"""

from __future__ import annotations

import json
import pathlib
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from mnerqg_graph.errors import CheckpointError
from mnerqg_graph.training.checkpoint import load_model, load_training_state, save_training_state
from tests.robustness.conftest import assert_one_line_error, run_cli

PICKLE_NAMES = (
    "pytorch_model.bin",
    "model.pt",
    "model.pth",
    "optimizer.pt",
    "training_args.bin",
    "rng_state.pth",
)


class _Payload:
    """Unpickling this object touches ``marker`` (a stand-in for ``os.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return (pathlib.Path.touch, (self.marker,))


def malicious_pickle(marker: Path) -> bytes:
    data = pickle.dumps({"state_dict": _Payload(marker)})
    assert not marker.exists()
    return data


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Sanity check of the test itself: unpickling the payload does create the marker."""
    marker = tmp_path / "marker"
    pickle.loads(malicious_pickle(marker))
    assert marker.exists()


def plant(folder: Path, payload: bytes) -> list[Path]:
    paths = []
    for name in PICKLE_NAMES:
        for where in (folder, folder / "text_encoder"):
            (where / name).write_bytes(payload)
            paths.append(where / name)
    return paths


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any unpickling entry point fails the test loudly."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a checkpoint loader tried to unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)


def test_pickles_in_the_checkpoint_are_never_loaded(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_unpickling: None
) -> None:
    marker = tmp_path / "pwned"
    payload = malicious_pickle(marker)
    plant(checkpoint, payload)
    model, cfg, queries, tok = load_model(checkpoint)
    assert list(queries) == cfg.types and model is not None
    result = run_cli(
        capsys,
        ["predict", "--checkpoint", str(checkpoint), "--text", "Kelvo visits Marn", "--device",
         "cpu"],
    )  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out)["tokens"] == ["Kelvo", "visits", "Marn"]
    assert not marker.exists()


def test_weights_file_that_is_a_pickle_is_a_clear_error(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    payload = malicious_pickle(marker)
    (checkpoint / "model.safetensors").write_bytes(payload)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable"):
        load_model(checkpoint)
    result = run_cli(
        capsys, ["predict", "--checkpoint", str(checkpoint), "--text", "Kelvo", "--device", "cpu"]
    )
    assert_one_line_error(result, "predict", str(checkpoint / "model.safetensors"), "unreadable")
    # a torch.save'd state dict (a zip of pickles) under the safetensors name: refused the same way
    torch.save({"w": torch.zeros(2)}, checkpoint / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable"):
        load_model(checkpoint)
    assert not marker.exists()


def test_remote_code_in_the_text_encoder_folder_is_not_run(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``auto_map`` entries pointing at Python files next to the tokenizer are never imported."""
    marker = tmp_path / "pwned"
    enc = checkpoint / "text_encoder"
    code = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    (enc / "evil_tokenizer.py").write_text(code, encoding="utf-8")
    (enc / "evil_model.py").write_text(code, encoding="utf-8")
    tok_cfg = json.loads((enc / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok_cfg["auto_map"] = {"AutoTokenizer": ["evil_tokenizer.Tok", "evil_tokenizer.Tok"]}
    (enc / "tokenizer_config.json").write_text(json.dumps(tok_cfg), encoding="utf-8")
    enc_cfg = json.loads((enc / "config.json").read_text(encoding="utf-8"))
    enc_cfg["auto_map"] = {"AutoConfig": "evil_model.Cfg", "AutoModel": "evil_model.Model"}
    (enc / "config.json").write_text(json.dumps(enc_cfg), encoding="utf-8")
    result = run_cli(
        capsys, ["predict", "--checkpoint", str(checkpoint), "--text", "Kelvo", "--device", "cpu"]
    )
    assert result.code in (0, 2), result.err  # loads as a plain BERT, or refuses in one line
    if result.code == 2:
        assert len(result.err_lines) == 1
    assert not marker.exists()


def _optimizer() -> torch.optim.Optimizer:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    return opt


def test_training_state_ignores_pickles_and_refuses_a_pickled_safetensors(
    tmp_path: Path, no_unpickling: None
) -> None:
    marker = tmp_path / "pwned"
    payload = malicious_pickle(marker)
    state = tmp_path / "state"
    save_training_state(state, _optimizer(), {"epoch": 0, "step": 1})
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.bin"):
        (state / name).write_bytes(payload)
    assert load_training_state(state, _optimizer()) == {"epoch": 0, "step": 1}
    (state / "optimizer.safetensors").write_bytes(payload)
    with pytest.raises(CheckpointError, match="unreadable training state"):
        load_training_state(state, _optimizer())
    (state / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing optimizer.safetensors"):
        load_training_state(state, _optimizer())
    assert not marker.exists()


def test_no_loader_in_the_package_unpickles() -> None:
    """A static guard: no unrestricted unpickling in the library, the experiment or detectors.

    ``torch.load(..., weights_only=True)`` (torch's restricted unpickler, for torchvision backbone
    weights) is the one accepted form.
    """
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for folder in ("mnerqg_graph", "experiments", "detectors", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                bad = [s for s in ("pickle.load", "Unpickler", "joblib.load", "dill.") if s in line]
                if "torch.load(" in line and "weights_only=True" not in line:
                    bad.append("torch.load")
                offenders += [f"{path.relative_to(root)}:{n}: {b}" for b in bad]
    assert offenders == []
