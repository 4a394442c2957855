"""Atomic file writes: a reader never sees a half-written file, and a crash leaves the old one.

Every writer of the toolkit (checkpoints, training states, predictions, weak labels, data sets,
caches) goes through these helpers. A write that fails (disk full, permission denied, a read-only
folder, ...) raises :class:`~mnerqg_graph.errors.WriteError`, one line naming the final path and
the cause, which the CLI and the Sacred experiment print without a traceback; the previous file or
folder is left as it was, and no temporary file is left behind.

Folders are written the same way: :func:`temp_dir_beside` makes a temporary folder next to the
final one, the writer fills it, :func:`replace_dir` swaps it in, and on any error
:func:`abandon_dir` removes it and raises a write error as a :class:`WriteError`::

    tmp = temp_dir_beside(out)
    try:
        ...  # write into tmp
        replace_dir(tmp, out, "config.json")  # a file that marks a folder of this kind
    except BaseException as exc:
        abandon_dir(tmp, out, exc)
        raise
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from mnerqg_graph.errors import ConfigError, MnerqgError, WriteError

_Closing = TypeVar("_Closing", bound="ClosingContext")


def loads_json_object(
    text: str,
    not_json: Callable[[json.JSONDecodeError], BaseException],
    not_object: Callable[[Any], BaseException],
) -> dict[str, Any]:
    """Parse JSON text that must hold an object (a file, a log line, a command-line option).

    Args:
        text: the JSON text.
        not_json: the error to raise when ``text`` is not JSON, given the parser's error.
        not_object: the error to raise when ``text`` holds another JSON value, given that value.

    Returns:
        The object.

    Raises:
        BaseException: what ``not_json`` or ``not_object`` makes (without the parser's traceback).
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise not_json(exc) from None
    if not isinstance(value, dict):
        raise not_object(value)
    return value


def read_json_object(
    path: Path, error: type[MnerqgError], unreadable: str, not_object: str
) -> dict[str, Any]:
    """A JSON file that must hold an object.

    Args:
        path: the file.
        error: the error to raise.
        unreadable: what the error says when the file cannot be read or parsed
            (``PATH: UNREADABLE: CAUSE``).
        not_object: what it says when the file holds another JSON value (``PATH: NOT_OBJECT``).

    Returns:
        The object.

    Raises:
        MnerqgError: ``error``, as described.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: {unreadable}: {exc}") from None
    return loads_json_object(
        text,
        lambda exc: error(f"{path}: {unreadable}: {exc}"),
        lambda _value: error(f"{path}: {not_object}"),
    )


class ClosingContext:
    """A context manager whose exit calls :meth:`close` (``with Thing(...) as thing:``)."""

    def close(self) -> None:
        """Release what the object holds; subclasses implement it."""
        raise NotImplementedError

    def __enter__(self: _Closing) -> _Closing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def is_write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a file-system error (an ``OSError`` or a safetensors I/O error)."""
    return isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError"


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a file-system error met in the block into a :class:`WriteError` naming ``path``."""
    try:
        yield
    except WriteError:
        raise
    except Exception as exc:
        if not is_write_failure(exc):
            raise
        raise WriteError(path, exc) from exc


def current_umask() -> int:
    """The process's file-mode creation mask.

    Read from ``/proc/self/status`` where there is one (changing it, even for a moment, could
    give another thread's new file the wrong mode); else by setting it and putting it back.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_new_file(fd: int, path: Path) -> None:
    """Give a temporary file (mode 0600 from ``mkstemp``) the mode its final file should have.

    That is the mode of the file it replaces, else what ``open()`` would have given under the
    umask (``0666 & ~umask``): predictions, checkpoints and caches stay readable by the group and
    others where the user's umask says so, and overwriting a shared file keeps its mode.
    """
    if not hasattr(os, "fchmod"):  # (Windows before Python 3.13: no modes to keep)
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode) & 0o777  # (no setuid/setgid bits carried)
    except OSError:
        mode = 0o666 & ~current_umask()
    try:
        os.fchmod(fd, mode)
    except OSError:  # a file system without modes (some FUSE or network mounts): as created
        pass


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    Raises:
        WriteError: the file cannot be written; ``path`` is as it was.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                _chmod_new_file(handle.fileno(), path)
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


class AtomicTextOutput:
    """A text file written in pieces that appears at ``path`` only when complete.

    The text goes to a temporary file beside ``path``; :meth:`commit` flushes it to disk and
    renames it to ``path``; :meth:`discard` (or an error) removes it and leaves ``path`` as it was.

    Args:
        path: the final file.
        encoding: its encoding (newlines are written as LF).

    Raises:
        WriteError: from any method, when the file cannot be written.
    """

    def __init__(self, path: str | Path, encoding: str = "utf-8") -> None:
        self.path = Path(path)
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            _chmod_new_file(fd, self.path)
        self._tmp: str | None = tmp
        self._fh: IO[str] = os.fdopen(fd, "w", encoding=encoding, newline="\n")

    def write(self, text: str) -> int:
        """Write ``text``; returns the number of characters written."""
        with writing(self.path):
            return self._fh.write(text)

    def writelines(self, lines: Any) -> None:
        """Write every string of ``lines``."""
        with writing(self.path):
            self._fh.writelines(lines)

    def commit(self) -> None:
        """Flush to disk and move the file into place (a second call does nothing)."""
        if self._tmp is None:
            return
        try:
            with writing(self.path):
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
                os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Remove the temporary file; ``path`` stays as it was (nothing after :meth:`commit`)."""
        if self._tmp is None:
            return
        try:
            self._fh.close()
        except OSError:
            pass  # a full disk also fails the close's flush: the file is dropped anyway
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)
        self._tmp = None


def temp_dir_beside(final_dir: str | Path) -> Path:
    """A new empty temporary folder next to ``final_dir``, to be moved there by :func:`replace_dir`.

    Raises:
        WriteError: the parent folder cannot be created or written to.
    """
    final_dir = Path(final_dir)
    with writing(final_dir):
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", dir=final_dir.parent))
        with contextlib.suppress(OSError):  # mkdtemp's 0700 would stay on the final folder
            os.chmod(tmp, 0o777 & ~current_umask())
        return tmp


def check_replaceable(final_dir: str | Path, marker: str, *also: str) -> None:
    """Refuse to replace a file, or a non-empty folder without the file that marks its kind.

    :func:`replace_dir` replaces ``final_dir`` as a whole, so an existing file there, or a
    user's own folder given as ``--out`` by mistake, would be deleted. The check is by name
    only: a non-empty folder must hold ``marker`` (or one of ``also``), the file every folder of
    the kind holds (``model.safetensors`` for model folders, so that e.g. a Sacred run folder,
    which has a ``config.json``, is refused). Writers call this before their work, and
    :func:`replace_dir` again before it moves anything.

    Args:
        final_dir: the folder about to be written.
        marker: the file name that marks a folder of the kind (``config.json``, ``cache.json``).
        also: other names that mark it too (a processor's ``processor.json`` for a model folder).

    Raises:
        ConfigError: ``final_dir`` is a file, or a non-empty folder without ``marker``.
    """
    final_dir = Path(final_dir)
    recover_replaced_dir(final_dir)  # a backup alone is the folder: look at it
    if not final_dir.exists():
        return
    if not final_dir.is_dir():
        raise ConfigError(f"{final_dir}: exists and is not a folder; choose a new folder")
    if not any((final_dir / m).is_file() for m in (marker, *also)) and any(final_dir.iterdir()):
        raise ConfigError(
            f"{final_dir}: a folder that this would replace as a whole, but not one of its kind "
            f"(no {marker} in it); choose an empty or new folder"
        )


def abandon_dir(tmp_dir: str | Path, final_dir: str | Path, exc: BaseException) -> None:
    """Remove a temporary folder after ``exc``; raise a file-system error as a WriteError.

    A file-system error becomes a :class:`WriteError` naming the final path (``final_dir``, or the
    file under it that was being written, not the temporary name), raised from ``exc``; for any
    other error this returns, and the caller re-raises ``exc`` (``raise``).

    Args:
        tmp_dir: the temporary folder (from :func:`temp_dir_beside`).
        final_dir: where it was to be moved.
        exc: the error that stopped the writer.
    """
    shutil.rmtree(tmp_dir, ignore_errors=True)
    if not is_write_failure(exc):
        return
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    where = Path(exc.path) if isinstance(exc, WriteError) else None
    if where is None and isinstance(exc, OSError) and exc.filename is not None:
        where = Path(os.fsdecode(exc.filename))
    target = final_dir
    if where is not None and (where == tmp_dir or tmp_dir in where.parents):
        target = final_dir / where.relative_to(tmp_dir)
    elif isinstance(exc, WriteError):
        return  # already names a final path (the swap of final_dir itself, say)
    cause = exc.__cause__ if isinstance(exc, WriteError) and exc.__cause__ else exc
    raise WriteError(target, exc) from cause


def recover_replaced_dir(final_dir: str | Path) -> bool:
    """Put ``final_dir.old`` back as ``final_dir`` when it is the only copy left.

    A stop between :func:`replace_dir`'s two renames leaves the backup alone.

    Returns:
        Whether the backup was put back.
    """
    final_dir = Path(final_dir)
    backup = final_dir.with_name(final_dir.name + ".old")
    if final_dir.exists() or not backup.is_dir():
        return False
    try:
        os.replace(backup, final_dir)
    except FileNotFoundError:  # another process put it back first
        return False
    return True


def replace_dir(tmp_dir: str | Path, final_dir: str | Path, marker: str, *also: str) -> None:
    """Move a fully written ``tmp_dir`` into place at ``final_dir``, replacing an old one.

    The old directory is renamed away first and deleted only after the new one is in place, so at
    every moment either the old or the new complete directory exists under ``final_dir`` (or its
    backup name ``final_dir.old``). Only an old folder of the same kind is replaced (see
    :func:`check_replaceable`).

    Args:
        tmp_dir: the written folder (from :func:`temp_dir_beside`).
        final_dir: where it goes.
        marker: the file that marks a folder of its kind; ``tmp_dir`` must hold it.
        also: other files that mark an old folder of the kind (see :func:`check_replaceable`).

    Raises:
        ConfigError: ``final_dir`` is a file or a folder of another kind (nothing moved).
        WriteError: a rename failed; the old directory is back under ``final_dir``.
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    backup = final_dir.with_name(final_dir.name + ".old")
    if not (tmp_dir / marker).is_file():
        raise ValueError(f"replace_dir: {tmp_dir} has no {marker} (a writer's mistake)")
    with writing(final_dir):
        check_replaceable(final_dir, marker, *also)  # (puts a lone backup back first)
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
