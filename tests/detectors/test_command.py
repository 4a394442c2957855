"""Options that take a JSON object: one parser, one-line errors in every command that has one."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors import detector, grounder, region_cache
from detectors.command import json_object_option, run_main
from mnerqg_graph.errors import ConfigError


def test_json_object_option() -> None:
    assert json_object_option("--x", '{"a": 1}') == {"a": 1}
    with pytest.raises(ConfigError, match="--x is not JSON"):
        json_object_option("--x", "{a: 1}")
    with pytest.raises(ConfigError, match="--x must be a JSON object"):
        json_object_option("--x", "[1]")


@pytest.mark.parametrize(
    ("main", "argv", "flag"),
    [
        (detector.main, ["train", "--out", "o", "--backend-kwargs", "[1]"], "--backend-kwargs"),
        (
            grounder.main,
            ["pretrain", "--out", "o", "--backbone-kwargs", "[1]"],
            "--backbone-kwargs",
        ),
        (
            region_cache.main,
            ["--grid", "--out", "o", "--backbone-kwargs", "[1]"],
            "--backbone-kwargs",
        ),
    ],
    ids=["detector-train", "grounder-pretrain", "extract-regions"],
)
def test_a_non_object_is_one_line_before_any_work(
    main: object, argv: list[str], flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_main(main, "cmd", [*argv[:1], "--data", str(tmp_path), *argv[1:]])  # type: ignore[arg-type]
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"cmd: error: {flag} must be a JSON object"]
