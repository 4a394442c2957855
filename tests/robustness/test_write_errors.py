"""A write that fails is one line naming the path and the cause, and the old files stay.

Each command that writes (``mnerqg predict --output``, ``mnerqg synth``, ``mnerqg pseudo-label``,
``mnerqg train`` with ``output_dir``) is run through the CLI in-process after a first, successful
write, with the disk made to fail in one of three ways:

- ``read-only``: the folder is ``chmod``-ed read-only (skipped as root, where chmod does not bind);
- ``read-only-fs``: making the temporary file or folder fails with EROFS (simulated; runs as root);
- ``disk-full``: flushing to disk fails with ENOSPC (simulated).

Expected: exit code 2, one stderr line ``... error: cannot write PATH: CAUSE`` (no traceback),
the previous output byte-for-byte as it was, and no temporary file left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnerqg_graph.data.conll import write_conll
from mnerqg_graph.data.types import Tweet
from tests.robustness.conftest import (
    SACRED_LOG,
    assert_one_line_error,
    leftovers,
    run_cli,
    tree_bytes,
)

FAILURES = ["read-only", "read-only-fs", "disk-full"]
CAUSE = {
    "read-only": "Permission denied",
    "read-only-fs": "Read-only file system",
    "disk-full": "No space left on device",
}


@pytest.fixture
def fail_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A function ``fail(kind, folder)`` that makes writes into ``folder`` fail (undone after)."""
    locked: list[tuple[Path, int]] = []

    def fail(kind: str, folder: Path) -> None:
        if kind == "read-only":
            if os.geteuid() == 0:
                pytest.skip("running as root: chmod does not stop root from writing")
            for path in [folder, *folder.rglob("*")]:
                if path.is_dir():
                    locked.append((path, path.stat().st_mode))
                    path.chmod(stat.S_IRUSR | stat.S_IXUSR)
        elif kind == "read-only-fs":

            def refuse(*args: object, **kwargs: object) -> str:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(kwargs.get("dir", "")))

            monkeypatch.setattr(tempfile, "mkstemp", refuse)
            monkeypatch.setattr(tempfile, "mkdtemp", refuse)
        else:

            def full(fd: int) -> None:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(os, "fsync", full)

    yield fail
    monkeypatch.undo()
    for path, mode in reversed(locked):
        path.chmod(mode)


def _failed(result: object, command: str, path: Path, kind: str) -> None:
    line = assert_one_line_error(result, command, f"cannot write {path}")  # type: ignore[arg-type]
    assert line.endswith(CAUSE[kind]), line


@pytest.mark.parametrize("kind", FAILURES)
@pytest.mark.parametrize("suffix", [".jsonl", ".conll"])
def test_predict_output(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    fail_writes: object,
    kind: str,
    suffix: str,
) -> None:
    out = tmp_path / "res" / f"pred{suffix}"
    argv = ["predict", "--checkpoint", str(checkpoint), "--text", "Kelvo visits Marn",
            "--output", str(out), "--device", "cpu"]  # fmt: skip
    assert run_cli(capsys, argv).code == 0
    before = tree_bytes(out.parent)
    fail_writes(kind, out.parent)  # type: ignore[operator]
    _failed(run_cli(capsys, argv), "predict", out, kind)
    assert tree_bytes(out.parent) == before and leftovers(out.parent, {out.name}) == []


@pytest.mark.parametrize("kind", FAILURES)
def test_synth_data_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fail_writes: object, kind: str
) -> None:
    out = tmp_path / "data" / "synth"
    argv = ["synth", "--out", str(out), "--train", "3", "--valid", "1", "--test", "1"]
    assert run_cli(capsys, [*argv, "--seed", "1"]).code == 0
    before = tree_bytes(out)
    fail_writes(kind, out.parent)  # type: ignore[operator]
    result = run_cli(capsys, [*argv, "--seed", "2"])
    _failed(result, "synth", out, kind)  # the folder, or the file of it that failed
    assert tree_bytes(out) == before and leftovers(out.parent, {"synth"}) == []


@pytest.mark.parametrize("kind", FAILURES)
def test_region_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fail_writes: object, kind: str
) -> None:
    data = tmp_path / "synth"
    argv = ["synth", "--out", str(data), "--train", "3", "--valid", "1", "--test", "1"]
    assert run_cli(capsys, [*argv, "--seed", "1"]).code == 0
    out = tmp_path / "cache" / "regions"
    argv = ["extract-regions", "--grid", "--data", str(data), "--out", str(out), "--no-progress"]
    assert run_cli(capsys, argv).code == 0
    before = tree_bytes(out)
    fail_writes(kind, out.parent)  # type: ignore[operator]
    _failed(run_cli(capsys, [*argv, "--seed", "3"]), "extract-regions", out, kind)
    assert tree_bytes(out) == before and leftovers(out.parent, {"regions"}) == []


@pytest.fixture(scope="module")
def grounder_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An untrained tiny visual grounder checkpoint and a small SynthTweets set."""
    import torch

    from detectors.grounder import VisualGrounder, save_grounder
    from mnerqg_graph.data.synth import generate

    root = tmp_path_factory.mktemp("weak")
    generate(root / "synth", seed=7, n_train=6, n_valid=1, n_test=1, image_size=64)
    torch.manual_seed(1)
    model = VisualGrounder(
        ["PER", "LOC", "ORG", "OTHER"], backbone_kwargs={"width": 8, "out_channels": 16}
    )
    return save_grounder(model.eval(), root / "grounder"), root / "synth"


@pytest.mark.parametrize("kind", FAILURES)
def test_pseudo_label_weak_labels(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    grounder_and_data: tuple[Path, Path],
    fail_writes: object,
    kind: str,
) -> None:
    grounder, data = grounder_and_data
    out = tmp_path / "labels" / "weak"
    argv = ["pseudo-label", "--grounder", str(grounder), "--data", str(data), "--out", str(out),
            "--threshold", "0.0", "--device", "cpu"]  # fmt: skip
    assert run_cli(capsys, argv).code == 0
    before = tree_bytes(out)
    fail_writes(kind, out.parent)  # type: ignore[operator]
    _failed(run_cli(capsys, argv), "pseudo-label", out, kind)
    assert tree_bytes(out) == before and leftovers(out.parent, {"weak"}) == []


@pytest.mark.parametrize("kind", ["read-only", "disk-full"])
def test_training_checkpoint(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    saved_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    fail_writes: object,
    kind: str,
) -> None:
    """``mnerqg train`` cannot save its best model; an earlier run's checkpoint stays."""
    root = tmp_path / "ds"
    tweets = [Tweet("1", ["Kelvo", "visits", "Marn"], ["B-PER", "O", "B-LOC"])]
    for split in ("train", "valid", "test"):
        write_conll(root / f"{split}.txt", tweets)
    out = tmp_path / "out"
    shutil.copytree(saved_checkpoint, out / "checkpoint")
    before = tree_bytes(out / "checkpoint")
    if kind == "disk-full":  # the weights file of the epoch's best model fills the disk
        from mnerqg_graph.training import checkpoint as ckpt_mod

        def full(*args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(ckpt_mod, "save_file", full)
        failed = out / "work" / "best" / "model.safetensors"
    else:
        fail_writes(kind, out)  # type: ignore[operator]
        failed = out / "work"
    result = run_cli(
        capsys,
        ["train", "-u", "with", "fast", "data.name=folder", f"data.root={root}",
         f"output_dir={out}", "save_artifacts=False"],
    )  # fmt: skip
    assert result.code == 2, result.err
    errors = [ln for ln in result.err_lines if "error" in ln and not SACRED_LOG.match(ln)]
    assert errors == [f"experiments.train: error: cannot write {failed}: {CAUSE[kind]}"]
    assert tree_bytes(out / "checkpoint") == before
