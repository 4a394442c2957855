"""Atomic file writes: a reader never sees a half-written file, and a crash leaves the old one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically, without newline translation."""
    atomic_write_bytes(path, text.encode(encoding))


def replace_dir(tmp_dir: str | Path, final_dir: str | Path) -> None:
    """Move a fully written ``tmp_dir`` into place at ``final_dir``, replacing an old one.

    The old directory is renamed away first and deleted only after the new one is in place, so at
    every moment either the old or the new complete directory exists under ``final_dir`` (or its
    backup name ``final_dir.old``).
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    backup = final_dir.with_name(final_dir.name + ".old")
    if backup.exists():
        shutil.rmtree(backup)
    if final_dir.exists():
        os.replace(final_dir, backup)
    try:
        os.replace(tmp_dir, final_dir)
    except BaseException:  # put the old directory back: never leave no directory at all
        if backup.exists() and not final_dir.exists():
            os.replace(backup, final_dir)
        raise
    if backup.exists():
        shutil.rmtree(backup)
