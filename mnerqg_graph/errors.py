"""Error types raised at the toolkit's edges.

Every error a user can trigger with bad input is a :class:`MnerqgError`; its message names the file
and
line (or field) at fault, so the CLI can print it as one line instead of a traceback.
"""

from __future__ import annotations

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
