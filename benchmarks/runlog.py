"""JSON-lines logs of finished benchmark runs: a stopped job keeps what it finished.

Both long benchmarks (:mod:`benchmarks.real_data`, :mod:`benchmarks.compare_fusion`) append one
line per finished run as soon as it finishes and skip, on a rerun, the runs already in the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mnerqg_graph.environment import describe
from mnerqg_graph.io import loads_json_object


def load_runs(path: Path) -> list[dict[str, Any]]:
    """The finished runs recorded in ``path`` (none when it does not exist).

    Raises:
        SystemExit: a line that is not a JSON object, naming the file and the line.
    """
    if not path.exists():
        return []
    runs: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        runs.append(_parse_run(line, f"{path}:{number}"))
    return runs


def _parse_run(line: str, where: str) -> dict[str, Any]:
    """One line of a run log as its run.

    Args:
        line: the line.
        where: ``PATH:LINE``, for the error.

    Returns:
        The run.

    Raises:
        SystemExit: the line is not JSON, or not an object.
    """
    return loads_json_object(
        line,
        lambda exc: SystemExit(f"{where}: not a JSON line ({exc.msg})"),
        lambda row: SystemExit(f"{where}: expected a JSON object, got {type(row).__name__}"),
    )


def append_run(path: Path, row: dict[str, Any]) -> None:
    """Append one finished run as a single line (one ``write`` call, flushed at close)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def ran_on(rows: list[dict[str, Any]]) -> list[str]:
    """The report lines naming each distinct environment the rows recorded (none: nothing to say).

    Two machines can disagree on the same seed; a table built from records of several says which.
    Rows from before records carried an ``environment`` add nothing.
    """
    envs = dict.fromkeys(describe(r["environment"]) for r in rows if r.get("environment"))
    return ["", "Ran on:", "", *(f"- {e}" for e in envs)] if envs else []
