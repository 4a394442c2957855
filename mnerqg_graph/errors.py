"""Error types raised at the toolkit's edges.

Every error a user can trigger with bad input is a :class:`MnerqgError`; its message names the file
and
line (or field) at fault, so the CLI can print it as one line instead of a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path


class MnerqgError(Exception):
    """Base class of all user-facing errors of the toolkit."""


class DataError(MnerqgError):
    """A data file is malformed.

    Args:
        path: the file at fault.
        message: what is wrong.
        line: 1-based line number, when the problem sits on one line.
        field: the field (XML element, JSON key, ...) at fault, when there is one.
    """

    def __init__(
        self, path: str | Path, message: str, line: int | None = None, field: str | None = None
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f" [{field}]"
        super().__init__(f"{where}: {message}")


class ConfigError(MnerqgError):
    """A configuration (model config, query file, CLI option) is invalid or not this code's."""


class CheckpointError(MnerqgError):
    """A checkpoint directory is missing files, or was written by a different model."""


class TrainingError(MnerqgError):
    """Training cannot go on (for example the loss became NaN)."""


class PluginError(ConfigError):
    """A plugin module (``--plugin``, ``plugins=[...]``, an entry point) cannot be imported."""


class WriteError(MnerqgError, OSError):
    """A file or folder cannot be written (disk full, permission denied, read-only folder, ...).

    Raised by the toolkit's writers (:mod:`mnerqg_graph.io`) in place of the ``OSError`` they met,
    which stays the ``__cause__``; it is still an ``OSError`` (same ``errno``), and its message is
    one line naming the path and the cause, which the CLI prints as is. The writers are atomic:
    when this is raised the previous file or folder is as it was.

    Args:
        path: what was being written (the final path, not a temporary one).
        cause: the error met, or its description.
    """

    def __init__(self, path: str | Path, cause: BaseException | str) -> None:
        reason, code = _reason(cause)
        OSError.__init__(self, code, reason, str(path))
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # picklable for multiprocessing
        return (type(self), (self.path, self.reason))


def _reason(cause: BaseException | str) -> tuple[str, int | None]:
    """The readable cause and the errno of an error met while writing."""
    if isinstance(cause, str):
        return cause, None
    if isinstance(cause, WriteError):
        return cause.reason, cause.errno
    if isinstance(cause, OSError):
        errors = cause.args[0] if cause.args else None
        if isinstance(errors, list) and errors and isinstance(errors[0], tuple):  # shutil.Error
            cause = OSError(str(errors[0][-1]))  # "[Errno 28] No space left on device: 'dst'"
        elif cause.strerror:
            return cause.strerror, cause.errno
    text = one_line_reason(cause)
    # "[Errno 28] No space left on device: 'p'" (a formatted OSError), "I/O error: No space left
    # on device (os error 28) at path ..." (safetensors, from Rust): the cause and its errno only
    match = re.search(r"\[Errno (\d+)\] (.+?)(: '.*')?$", text) or re.search(
        r"(?:error: )?([^:]+?) \(os error (\d+)\)", text
    )
    if match and match.group(1).isdigit():
        return match.group(2), int(match.group(1))
    if match:
        return match.group(1), int(match.group(2))
    return text, None


def one_line_reason(exc: BaseException) -> str:
    """An exception's message on one line (white space folded), or its class name when empty.

    Args:
        exc: the exception.

    Returns:
        The reason, for "... (REASON)" in a one-line error.
    """
    return " ".join(str(exc).split()) or type(exc).__name__


def check_counts(**counts: object) -> None:
    """Refuse a count (batch size, limit, epochs, ...) that is not an integer >= 1.

    A value of None (not given) passes. A zero used to stop some loops with a raw ``range()``
    error and a negative one to run them silently on nothing (or, as a ``limit``, to drop tweets
    from the end).

    Args:
        counts: name -> value, checked in order; the name is what the error message calls it.

    Raises:
        ConfigError: ``NAME must be an integer >= 1, got VALUE`` for the first bad one.
    """
    for name, value in counts.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
