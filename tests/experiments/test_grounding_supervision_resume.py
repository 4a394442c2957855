"""grounding_supervision's stage log: a stopped benchmark resumes where it stopped.

The grounder stage and the main-model training are replaced by recording stubs (the real runs are
benchmarks, smoke-tested by hand); argument parsing, the settings key, the JSON-lines file, the
ratio and the report are the real code.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

import benchmarks.grounding_supervision as gs
from benchmarks.runlog import load_runs
from mnerqg_graph.errors import MnerqgError


def _stubs(calls: list[str], fail: set[str]) -> tuple[Any, Any]:
    def grounder_stage(
        args: argparse.Namespace,
        target: Path,
        source: Path,
        weak_dir: Path,
        timings: dict[str, float],
    ) -> tuple[dict[str, Any], str]:
        calls.append("grounder")
        target.mkdir(parents=True, exist_ok=True)
        (args.out / "grounder" / "finetuned").mkdir(parents=True, exist_ok=True)
        weak_dir.mkdir(parents=True, exist_ok=True)
        timings["grounder_pretrain"] = 1.0
        return {"grounding_acc": 0.9, "none_acc": 0.8, "text_types_grounding_acc": 0.85}, "weak"

    def run_variant(
        variant: str, args: argparse.Namespace, target: Path, weak_dir: Path
    ) -> dict[str, Any]:
        calls.append(variant)
        if variant in fail:
            raise MnerqgError(f"{variant} failed")
        acc = {"oracle": 0.8, "weak": 0.6, "manual": 0.5, "none": 0.1}[variant]
        return {
            "test/f1": 0.7,
            "test/ambiguous_f1": 0.65,
            "test/grounding_acc": acc,
            "test/none_acc": 0.5,
            "test/grounded_f1": 0.4,
            "supervision": {},
            "seconds": 2.0,
        }

    return grounder_stage, run_variant


def test_a_stopped_run_resumes_from_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    stage, variant = _stubs(calls, fail={"manual"})
    monkeypatch.setattr(gs, "_grounder_stage", stage)
    monkeypatch.setattr(gs, "run_variant", variant)
    out = tmp_path / "out"
    args = ["--out", str(out), "--epochs", "3"]
    assert gs.main(args) == 2  # stopped by the third variant
    assert calls == ["grounder", "oracle", "weak", "manual"]
    logged = load_runs(out / "runs.jsonl")
    assert [r["stage"] for r in logged] == ["grounder", "oracle", "weak"]
    assert all(r["settings"]["epochs"] == 3 for r in logged)

    calls.clear()
    stage, variant = _stubs(calls, fail=set())
    monkeypatch.setattr(gs, "_grounder_stage", stage)
    monkeypatch.setattr(gs, "run_variant", variant)
    assert gs.main(args) == 0
    assert calls == ["manual", "none"]  # the grounder and the finished variants are reused
    report = json.loads((out / "grounding_supervision.json").read_text(encoding="utf-8"))
    assert sorted(report["results"]) == ["manual", "none", "oracle", "weak"]
    assert report["meta"]["weak_over_oracle_grounding_acc"] == pytest.approx(0.75)
    assert report["grounder"]["grounding_acc"] == 0.9
    table = (out / "grounding_supervision.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("| ") and "|---" not in line]
    assert [r.split(" | ")[5] for r in rows[1:]] == ["80.00", "60.00", "50.00", "10.00"]
    assert "Weak / oracle grounding accuracy: 0.750." in table

    calls.clear()  # the grounder's files are gone: it is made again, the variants are kept
    (out / "weak").rmdir()
    assert gs.main(args) == 0
    assert calls == ["grounder"]

    calls.clear()  # other settings reuse nothing; --fresh ignores the log
    assert gs.main([*args[:-1], "4"]) == 0
    assert calls == ["grounder", "oracle", "weak", "manual", "none"]
    calls.clear()
    assert gs.main([*args, "--fresh"]) == 0
    assert calls == ["grounder", "oracle", "weak", "manual", "none"]
