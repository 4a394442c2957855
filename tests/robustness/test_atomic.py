"""Nothing already written is corrupted: every write is atomic.

Each test interrupts a write midway (the flush to disk or the final rename fails, or an exception is
raised while the new content is being produced) and checks that the previous file or directory is
byte-for-byte intact and that no temporary file or directory is left behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mnerqg_graph.config import ModelConfig
from mnerqg_graph.data.conll import read_conll, write_conll
from mnerqg_graph.data.types import Box, Sample, Span, Tweet
from mnerqg_graph.data.voc import VocAnnotation, VocObject, write_voc
from mnerqg_graph.errors import WriteError
from mnerqg_graph.io import atomic_write_text, replace_dir
from tests.robustness.conftest import (
    SACRED_LOG,
    assert_one_line_error,
    leftovers,
    predict_file,
    tree_bytes,
)

TWEETS = [
    Tweet("1", ["Kelvo", "visits", "Marn"], ["B-PER", "O", "B-LOC"]),
    Tweet("2", ["Zed", "Corp", "rocks"], ["B-ORG", "I-ORG", "O"]),
]
NEW = [Tweet("3", ["new", "Kelvo"], ["O", "B-PER"])]


class Boom(OSError):
    """The injected failure (a full disk, a yanked USB stick...)."""


def _fail(*args: Any, **kwargs: Any) -> Any:
    raise Boom(28, "No space left on device")


def _write_predictions(path: Path) -> None:
    from mnerqg_graph.evaluation import write_predictions
    from mnerqg_graph.pipeline import Predictions

    sample = Sample(NEW[0])
    preds = Predictions([[(Span(1, 2, "PER"), 0.9)]], [["O", "B-PER"]], [{"PER": None}], [{}])
    write_predictions(path.parent, [sample], preds)


def _conll_file_write(path: Path) -> None:
    conll = read_conll(path)
    conll.write(tweets=NEW)


WRITERS: dict[str, Callable[[Path], None]] = {
    "atomic_write_text": lambda p: atomic_write_text(p, "new content\n"),
    "write_conll": lambda p: write_conll(p, NEW),
    "ConllFile.write": _conll_file_write,
    "write_voc": lambda p: write_voc(
        p, VocAnnotation("3.jpg", 9, 9, [VocObject("Kelvo", Box(0, 0, 5, 5))])
    ),
    "ModelConfig.save": lambda p: ModelConfig(types=["PER"]).save(p),
    "write_predictions": _write_predictions,
}
FILE_NAMES = {"write_voc": "1.xml", "write_predictions": "predictions.conll"}


@pytest.mark.parametrize("failing", ["fsync", "replace"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_interrupted_file_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str, failing: str
) -> None:
    folder = tmp_path / "out"
    path = folder / FILE_NAMES.get(writer, "file.txt")
    write_conll(path, TWEETS, newline="\r\n", bom=True)  # the previous, complete file
    if writer == "write_predictions":
        write_conll(folder / "predictions.jsonl", TWEETS)
    before = tree_bytes(folder)
    monkeypatch.setattr(os, failing, _fail)
    with pytest.raises(WriteError, match=r": No space left on device$") as err:
        WRITERS[writer](path)
    monkeypatch.undo()
    assert isinstance(err.value.__cause__, Boom) and err.value.errno == 28
    assert Path(err.value.path).parent == folder  # the final file, never a temporary name
    assert tree_bytes(folder) == before  # old bytes intact, and no temporary file left
    WRITERS[writer](path)  # and the same write goes through once the disk is back
    assert tree_bytes(folder) != before and leftovers(folder, set(before)) == []


# ------------------------------------------------------------------------------ checkpoints


def _save(model_dir: Path, encoder_dir: Path, scale: float) -> None:
    import torch
    from transformers import AutoTokenizer

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.model import build_model
    from mnerqg_graph.training.checkpoint import save_model
    from tests.helpers import tiny_config

    torch.manual_seed(1)
    cfg = tiny_config(encoder_dir)
    model = build_model(cfg, weights=False)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    save_model(
        model, cfg, load_queries(), AutoTokenizer.from_pretrained(str(encoder_dir)), model_dir
    )


def _fail_when(
    monkeypatch: pytest.MonkeyPatch, obj: Any, name: str, when: Callable[..., bool]
) -> None:
    real = getattr(obj, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            raise Boom(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapper)


FAILURES = ["weights", "tokenizer", "swap-in", "interrupt"]


@pytest.mark.parametrize("failure", FAILURES)
def test_interrupted_save_model_keeps_the_previous_checkpoint(
    checkpoint: Path, encoder_dir: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    from mnerqg_graph.training import checkpoint as ckpt_mod
    from mnerqg_graph.training.checkpoint import load_model

    before = tree_bytes(checkpoint)
    if failure == "weights":  # the safetensors file is half written
        _fail_when(monkeypatch, ckpt_mod, "save_file", lambda *a, **k: True)
    elif failure == "tokenizer":
        from transformers import PreTrainedTokenizerBase

        _fail_when(monkeypatch, PreTrainedTokenizerBase, "save_pretrained", lambda *a, **k: True)
    elif failure == "swap-in":  # the new directory is complete but cannot be moved into place
        _fail_when(
            monkeypatch,
            os,
            "replace",
            lambda src, dst: Path(src).name.startswith(".ckpt.") and Path(dst) == checkpoint,
        )
    else:  # Ctrl-C while the weights are written

        def interrupt(*args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(ckpt_mod, "save_file", interrupt)
    with pytest.raises((WriteError, KeyboardInterrupt)) as err:
        _save(checkpoint, encoder_dir, scale=0.5)
    monkeypatch.undo()
    if failure != "interrupt":  # one line naming the checkpoint (or its file), not the temp dir
        assert str(err.value).startswith(f"cannot write {checkpoint}")
        assert str(err.value).endswith(": No space left on device")
    assert tree_bytes(checkpoint) == before
    assert leftovers(checkpoint.parent, {"ckpt"}) == []  # no .ckpt.* temp dir, no ckpt.old
    load_model(checkpoint)  # still a loadable checkpoint


def test_replace_dir_recovers_from_a_crash_between_the_two_renames(tmp_path: Path) -> None:
    """A crash left only ``ckpt.old``: the next save still ends with one complete ``ckpt``."""
    final = tmp_path / "ckpt"
    old = tmp_path / "ckpt.old"
    old.mkdir()
    (old / "a").write_text("old")
    new = tmp_path / ".ckpt.tmp"
    new.mkdir()
    (new / "a").write_text("new")
    replace_dir(new, final, "a")
    assert (final / "a").read_text() == "new" and leftovers(tmp_path, {"ckpt"}) == []


def test_replace_dir_never_deletes_what_is_not_a_folder_of_its_kind(tmp_path: Path) -> None:
    """A user's folder (or file) given as the output is refused, and stays as it was.

    ``extract-regions --out precious`` used to replace ``precious`` with the cache, deleting
    ``precious/notes.txt``; a file there was swapped aside as ``notadir.txt.old``.
    """
    from mnerqg_graph.errors import ConfigError
    from mnerqg_graph.io import temp_dir_beside

    def written(final: Path) -> Path:
        tmp = temp_dir_beside(final)
        (tmp / "cache.json").write_text("{}")
        return tmp

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("my notes")
    tmp = written(precious)
    with pytest.raises(ConfigError, match="no cache.json in it"):
        replace_dir(tmp, precious, "cache.json")
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    shutil.rmtree(tmp)
    notadir = tmp_path / "notadir.txt"
    notadir.write_text("hello")
    tmp = written(notadir)
    with pytest.raises(ConfigError, match="is not a folder"):
        replace_dir(tmp, notadir, "cache.json")
    assert notadir.read_text() == "hello" and not notadir.with_name("notadir.txt.old").exists()
    shutil.rmtree(tmp)
    # an empty folder and one of the kind are replaced
    (tmp_path / "empty").mkdir()
    for name in ("empty", "empty"):  # the second time: a folder of the kind
        replace_dir(written(tmp_path / name), tmp_path / name, "cache.json")
        assert [p.name for p in (tmp_path / name).iterdir()] == ["cache.json"]
    assert leftovers(tmp_path, {"precious", "notadir.txt", "empty"}) == []


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="file modes (POSIX)")
def test_atomic_writes_follow_the_umask_and_keep_a_replaced_file_mode(tmp_path: Path) -> None:
    """Written files and folders get the modes ``open``/``mkdir`` would give, not 0600/0700.

    ``mkstemp`` and ``mkdtemp`` create owner-only files, which the rename used to carry to
    every prediction, checkpoint and cache (and to a shared file that was overwritten).
    """
    from mnerqg_graph.io import AtomicTextOutput, temp_dir_beside

    old_mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
        shared = tmp_path / "shared.jsonl"
        shared.write_text("old")
        shared.chmod(0o664)
        out = AtomicTextOutput(shared)
        out.write("new")
        out.commit()
        assert shared.read_text() == "new" and shared.stat().st_mode & 0o777 == 0o664
        final = tmp_path / "ckpt"
        tmp = temp_dir_beside(final)
        (tmp / "config.json").write_text("{}")
        replace_dir(tmp, final, "config.json")
        assert final.stat().st_mode & 0o777 == 0o755
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.txt", "x")
        assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old_mask)


def test_interrupted_training_state_save_keeps_the_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from mnerqg_graph.training import checkpoint as ckpt_mod
    from mnerqg_graph.training.checkpoint import load_training_state, save_training_state

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = tmp_path / "state"
    save_training_state(state, opt, {"epoch": 0})
    before = tree_bytes(state)
    opt.step()
    _fail_when(monkeypatch, ckpt_mod, "atomic_write_text", lambda *a, **k: True)
    with pytest.raises(WriteError, match=f"cannot write {state}: No space left on device"):
        save_training_state(state, opt, {"epoch": 1})
    monkeypatch.undo()
    assert tree_bytes(state) == before and leftovers(tmp_path, {"state"}) == []
    assert load_training_state(state, opt) == {"epoch": 0}


# ------------------------------------------------------------------------------ predict


@pytest.mark.parametrize("suffix", [".jsonl", ".conll"])
def test_predict_stopped_by_a_bad_line_keeps_the_previous_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], checkpoint: Path, suffix: str
) -> None:
    out = tmp_path / "res" / f"pred{suffix}"
    out.parent.mkdir()
    out.write_bytes(b"previous complete result\n")
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        '{"id": "a", "tokens": ["Kelvo", "visits", "Marn"]}\n'
        '{"id": "b", "tokens": ["Zed", "Corp"]}\n'
        '{"id": "c", "tokens": ["Zed", "Corp"]\n',  # line 3: the JSON is cut short
        encoding="utf-8",
    )
    result = predict_file(capsys, checkpoint, inp, out, "--chunk-size", "1")
    assert_one_line_error(result, "predict", f"{inp}:3: invalid JSON")
    assert out.read_bytes() == b"previous complete result\n"
    assert leftovers(out.parent, {out.name}) == []


# ------------------------------------------------------------------------------ training


def _dataset(root: Path) -> Path:
    for split in ("train", "valid", "test"):
        write_conll(root / f"{split}.txt", TWEETS)
    return root


@pytest.fixture
def output_dir(tmp_path: Path, saved_checkpoint: Path) -> Path:
    """An output folder holding the checkpoint of an earlier, successful run."""
    out = tmp_path / "out"
    shutil.copytree(saved_checkpoint, out / "checkpoint")
    return out


def test_failed_training_run_leaves_the_existing_checkpoint_alone(
    tmp_path: Path, output_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from experiments.train import ex

    root = _dataset(tmp_path / "ds")
    (root / "valid.txt").write_bytes(b"IMGID:1\nKelvo\tB-PER\tX\n")
    before = tree_bytes(output_dir / "checkpoint")
    with pytest.raises(SystemExit) as exc:
        ex.run(
            named_configs=["fast"],
            config_updates={"data": {"name": "folder", "root": str(root)},
                            "output_dir": str(output_dir)},
        )  # fmt: skip
    assert exc.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if not SACRED_LOG.match(ln)]
    assert err == [f"experiments.train: error: {root / 'valid.txt'}:2: 3 TAB-separated "
                   "columns, expected 2 (token<TAB>tag): 'Kelvo\\tB-PER\\tX'"]  # fmt: skip
    assert tree_bytes(output_dir / "checkpoint") == before


def test_training_run_interrupted_while_installing_its_checkpoint(
    tmp_path: Path,
    output_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The disk fills up while the new best model is copied to OUTPUT_DIR/checkpoint."""
    from experiments.train import ex

    root = _dataset(tmp_path / "ds")
    before = tree_bytes(output_dir / "checkpoint")
    work = output_dir / "work"

    def installing(src: Any, dst: Any, *args: Any, **kwargs: Any) -> bool:
        dst = Path(dst)
        return dst.name == "model.safetensors" and work not in dst.parents

    _fail_when(monkeypatch, shutil, "copyfile", installing)
    with pytest.raises(SystemExit) as exc:  # copytree raised a shutil.Error
        ex.run(
            named_configs=["fast"],
            config_updates={"data": {"name": "folder", "root": str(root)},
                            "output_dir": str(output_dir), "save_artifacts": False},
        )  # fmt: skip
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if "error" in ln and not SACRED_LOG.match(ln)] == [
        f"experiments.train: error: cannot write {output_dir / 'checkpoint'}: "
        "No space left on device"
    ]
    assert (work / "best" / "model.safetensors").is_file()  # training itself went through
    assert tree_bytes(output_dir / "checkpoint") == before
    assert leftovers(output_dir, {"checkpoint", "work"}) == []
