"""compare_fusion's run log: finished runs are kept, skipped on a rerun, failures retried.

Training is replaced by a recording stub (the real runs are benchmarks); everything else —
argument parsing, config resolution against the real registry and named configs, the JSON-lines
file, the table — is the real code.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

import benchmarks.compare_fusion as cf
from benchmarks.runlog import load_runs
from mnerqg_graph.environment import describe, environment


def _stub(calls: list[tuple[str, int]], fail: set[tuple[str, int]]) -> Any:
    def run_one(
        spec: str, seed: int, args: argparse.Namespace, *_: Any, **__: Any
    ) -> dict[str, Any]:
        calls.append((spec, seed))
        if (spec, seed) in fail:
            raise RuntimeError("boom")
        value = 0.5 + 0.1 * seed
        row: dict[str, Any] = {"config": spec, "seed": seed, "fusion": spec}
        for key, _, _ in cf.COLUMNS:
            row[key] = value
        return row

    return run_one


def test_runs_are_logged_skipped_and_failures_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(cf, "run_one", _stub(calls, fail={("hgt", 1)}))
    runs = tmp_path / "runs.jsonl"
    base = ["--configs", "none", "hgt", "--train", "10", "--runs", str(runs)]
    assert cf.main([*base, "--seeds", "0", "1"]) == 1  # one run failed
    assert calls == [("none", 0), ("hgt", 0), ("none", 1), ("hgt", 1)]  # seeds outer
    logged = load_runs(runs)
    assert [(r["config"], r["seed"]) for r in logged] == [("none", 0), ("hgt", 0), ("none", 1)]
    assert all(r["settings"]["train"] == 10 for r in logged)

    calls.clear()
    monkeypatch.setattr(cf, "run_one", _stub(calls, fail=set()))
    out = tmp_path / "table.md"
    assert cf.main([*base, "--seeds", "0", "1", "--out", str(out)]) == 0
    assert calls == [("hgt", 1)]  # only the failed run again
    table = out.read_text(encoding="utf-8")
    row = next(line for line in table.splitlines() if line.startswith("| `hgt`"))
    assert "| 0, 1 |" in row and "55.00 ± 7.07" in row  # mean ± sample std of 50 and 60
    assert all(r["environment"]["torch"] for r in load_runs(runs))  # each record says its setup
    assert table.split("Ran on:", 1)[1].strip().splitlines() == [f"- {describe(environment())}"]

    calls.clear()  # other settings share nothing with the logged runs
    assert cf.main([*base[:-4], "--train", "20", "--runs", str(runs), "--seeds", "0"]) == 0
    assert calls == [("none", 0), ("hgt", 0)]

    calls.clear()
    report = tmp_path / "report.md"
    assert cf.main([*base, "--report-only", "--out", str(report)]) == 0
    assert calls == [] and report.read_text(encoding="utf-8") == table


def test_a_bad_line_in_the_run_log_names_file_and_line(tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    runs.write_text('{"config": "none"}\n{not json\n', encoding="utf-8")
    with pytest.raises(SystemExit, match=r"runs\.jsonl:2: not a JSON line"):
        load_runs(runs)


def test_report_only_needs_a_run_log() -> None:
    with pytest.raises(SystemExit):
        cf.parse_args(["--report-only"])
