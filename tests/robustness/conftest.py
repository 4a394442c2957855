"""Shared pieces of the robustness suite: a tiny checkpoint, messy files, and a CLI runner.

Everything here is small and CPU-only: one tiny random model per session (saved with the real
``save_model``), images made without decoding large pixel buffers, and a helper that runs the
``mnerqg`` command line in-process and checks the one-line error contract (exit code 2, exactly
one line on stderr, no traceback).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from sacred import SETTINGS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
SETTINGS.CAPTURE_MODE = "sys"  # the commands run Sacred in-process: pytest owns the descriptors

#: Lines Sacred itself logs around a run (not error messages of ours).
SACRED_LOG = re.compile(r"^(INFO|WARNING|ERROR) - mnerqg - ")


@dataclass
class CliResult:
    """What one ``mnerqg`` call printed and returned."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> CliResult:
    """Run ``mnerqg ARGV`` in-process; no traceback may reach stderr."""
    from mnerqg_graph.cli import main

    capsys.readouterr()  # drop anything printed before
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return CliResult(code, captured.out, captured.err)


def predict_file(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, inp: Path, out: Path, *options: str
) -> CliResult:
    """``mnerqg predict`` of the file ``inp`` into ``out`` on the CPU, without a progress bar.

    Args:
        capsys: pytest's capture fixture.
        checkpoint: the checkpoint folder.
        inp: the ``--input`` file.
        out: the ``--output`` file.
        *options: more options (before ``--device cpu --no-progress``).

    Returns:
        What the command printed and returned.
    """
    return run_cli(
        capsys,
        ["predict", "--checkpoint", str(checkpoint), "--input", str(inp), "--output", str(out),
         *options, "--device", "cpu", "--no-progress"],
    )  # fmt: skip


def assert_one_line_error(result: CliResult, command: str, *fragments: str) -> str:
    """Exit code 2, exactly one stderr line ``mnerqg COMMAND: error: ...`` holding FRAGMENTS."""
    assert result.code == 2, (result.code, result.err)
    assert len(result.err_lines) == 1, result.err
    line = result.err_lines[0]
    assert line.startswith(f"mnerqg {command}: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def huge_gray_jpeg(width: int = 10_000, height: int = 10_000) -> bytes:
    """A valid baseline JPEG of ``width`` x ``height`` uniform grey pixels, built in milliseconds.

    The headers (quantisation and the standard Huffman tables) come from an 8x8 grey JPEG that
    PIL writes; the frame size is patched, and the scan is written directly: every 8x8 block is
    "DC difference 0" (``00``) then "end of block" (``1010``), 6 bits per block. No pixel buffer is
    ever allocated here (10,000 x 10,000 is about 1.2 MB on disk).
    """
    from PIL import Image

    if width % 8 or height % 8:
        raise ValueError("width and height must be multiples of 8")
    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, "JPEG", quality=50)
    data = buf.getvalue()
    head = bytearray(data[:2])  # SOI
    i = 2
    while True:
        assert data[i] == 0xFF
        marker = data[i + 1]
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        segment = bytearray(data[i : i + 2 + length])
        if marker == 0xC0:  # SOF0: precision (1 byte), height, width
            segment[5:7] = struct.pack(">H", height)
            segment[7:9] = struct.pack(">H", width)
        head += segment
        i += 2 + length
        if marker == 0xDA:  # start of scan: the entropy-coded data follows
            break
    blocks = (width // 8) * (height // 8)
    scan = b"\x28\xa2\x8a" * (blocks // 4)  # "001010" x 4 = 24 bits, no 0xFF byte to stuff
    if blocks % 4:
        bits = "001010" * (blocks % 4)
        bits += "1" * (-len(bits) % 8)
        scan += int(bits, 2).to_bytes(len(bits) // 8, "big")
    return bytes(head) + scan + b"\xff\xd9"


def write_rgb(
    path: Path, size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (200, 20, 20)
) -> Path:
    """A small solid-colour image (format from the extension)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), to compare a directory before/after."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    """Names in ``folder`` other than ``keep`` (temporary files or directories left behind)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread(one_thread: None) -> None:
    """One intra-op thread: on a shared 2-core machine two threads spin and run 10x slower."""


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT directory (shared by the session)."""
    from tests.helpers import tiny_encoder

    return tiny_encoder(tmp_path_factory.mktemp("robust_enc"))


@pytest.fixture(scope="session")
def saved_checkpoint(tmp_path_factory: pytest.TempPathFactory, encoder_dir: Path) -> Path:
    """A complete checkpoint of an untrained tiny model, written by ``save_model``."""
    import torch
    from transformers import AutoTokenizer

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.model import build_model
    from mnerqg_graph.training.checkpoint import save_model
    from tests.helpers import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir)
    model = build_model(cfg).eval()
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    return save_model(model, cfg, load_queries(), tok, tmp_path_factory.mktemp("robust") / "ckpt")


@pytest.fixture
def checkpoint(tmp_path: Path, saved_checkpoint: Path) -> Path:
    """A private copy of the session checkpoint (a test may damage it)."""
    return Path(shutil.copytree(saved_checkpoint, tmp_path / "ckpt"))
