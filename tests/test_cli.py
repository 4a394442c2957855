"""The ``mnerqg`` command line: help, dispatch, plugins and one-line errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from mnerqg_graph import cli
from mnerqg_graph.errors import DataError, MnerqgError
from mnerqg_graph.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def fake_command(
    monkeypatch: pytest.MonkeyPatch, name: str, func: Callable[[list[str]], int | None]
) -> None:
    """Make command ``name`` run ``func``: its module is replaced in ``sys.modules``."""
    module_name, _, func_name = cli.COMMANDS[name].target.partition(":")
    module = types.ModuleType(module_name)
    setattr(module, func_name, func)
    monkeypatch.setitem(sys.modules, module_name, module)


def raiser(exc: BaseException) -> Callable[[list[str]], int]:
    def command(argv: list[str]) -> int:
        raise exc

    return command


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    expected = [
        "synth", "check-data", "evaluate", "predict", "visualize", "report", "pseudo-label",
        "extract-regions", "bench", "train",
    ]  # fmt: skip
    assert list(cli.COMMANDS) == expected
    for name, command in cli.COMMANDS.items():
        assert re.search(rf"^\s+{re.escape(name)}\s+\S", out, re.MULTILINE), name
        assert command.help.split()[0] in out
    assert "--plugin" in out


def test_help_is_fast_and_imports_no_command(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        from mnerqg_graph.cli import COMMANDS, main
        assert main(["--help"]) == 0
        heavy = {"torch", "torch_geometric", "transformers", "sacred", "numpy", "matplotlib"}
        commands = {c.target.partition(":")[0] for c in COMMANDS.values()}
        loaded = sorted(m for m in (heavy | commands) if m in sys.modules)
        assert not loaded, loaded
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_python_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mnerqg_graph", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mnerqg ")


@pytest.mark.parametrize(
    "argv",
    [
        # imports the model, PyTorch Geometric included, then stops at the missing checkpoint
        ["mnerqg_graph", "predict", "--checkpoint", "{tmp}/missing", "--text", "Kelvo visits"],
        ["experiments.train", "print_config"],  # imports sacred
    ],
    ids=["predict", "train-print_config"],
)
def test_ordinary_commands_print_no_library_warnings(tmp_path: Path, argv: list[str]) -> None:
    """Neither PyG's ``torch.jit.script`` FutureWarning nor sacred's ``pkg_resources`` one."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", *(a.format(tmp=tmp_path) for a in argv)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    for text in ("torch.jit.script", "pkg_resources", "Warning:"):
        assert text not in result.stderr, result.stderr
    if argv[1] == "predict":  # nothing but the one-line error
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"mnerqg predict: error: checkpoint directory does not exist: {tmp_path}/missing"
        ]
    else:
        assert result.returncode == 0, result.stderr


#: What a command that runs no model must not import: the libraries behind the model (torch alone
#: costs about 2 s of CPU; transformers' model classes and PyG bring ``torch._dynamo``, sympy and
#: more) and the experiment's (sacred, which also warns about ``pkg_resources``).
MODEL_LIBRARIES = ("torch", "torch._dynamo", "torch_geometric", "transformers", "sacred")


def test_commands_without_a_model_import_no_model_library(tmp_path: Path) -> None:
    """check-data, evaluate and the help of model commands: no torch, and nothing on stderr.

    Structural, not timed: a regression shows as a module in ``sys.modules`` (issue 23).
    """
    from mnerqg_graph.data.synth import main as synth

    data = tmp_path / "synth"
    args = ["--out", str(data), "--train", "4", "--valid", "3", "--test", "3", "--image-size", "32"]
    assert synth(args) == 0
    test = str(data / "test.txt")
    runs = [
        ["check-data", str(data)],
        ["evaluate", "--gold", test, "--pred", test],
        *([name, "--help"] for name in ("predict", "visualize", "report")),
    ]
    code = textwrap.dedent(
        f"""
        import sys
        from mnerqg_graph.cli import main
        for argv in {runs!r}:
            assert main(argv) == 0, argv
            loaded = [m for m in {MODEL_LIBRARIES!r} if m in sys.modules]
            assert not loaded, (argv, loaded)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no library warning either
    assert "micro" in result.stdout  # (evaluate's table)


def test_arguments_after_the_command_are_passed_through(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def synth(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    fake_command(monkeypatch, "synth", synth)
    assert cli.main(["synth", "--out", "d", "--seed", "3", "--help"]) == 7
    assert seen == [["--out", "d", "--seed", "3", "--help"]]


def test_command_returning_none_or_exiting(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_command(monkeypatch, "evaluate", lambda argv: None)
    assert cli.main(["evaluate"]) == 0
    fake_command(monkeypatch, "evaluate", raiser(SystemExit(3)))
    assert cli.main(["evaluate"]) == 3


def test_a_reader_that_stops_early_ends_the_command_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mnerqg predict ... | head``: exit 141 (SIGPIPE's), no "error: Broken pipe" line."""
    fake_command(monkeypatch, "predict", raiser(BrokenPipeError(32, "Broken pipe")))
    monkeypatch.setattr(cli, "_stdout_broken", lambda: True)
    assert cli.main(["predict"]) == 141
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(cli, "_stdout_broken", lambda: False)  # another pipe broke: an error
    assert cli.main(["predict"]) == 2
    assert "Broken pipe" in capsys.readouterr().err
    fake_command(monkeypatch, "predict", raiser(PermissionError(13, "Permission denied", "o")))
    assert cli.main(["predict"]) == 2  # other OS errors are still one line
    assert "Permission denied: o" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (DataError("train.txt", "tag 'B-FOO' is not a known type", line=12), 2, "train.txt:12"),
        (MnerqgError("first line\nsecond line"), 2, "first line | second line"),
        (FileNotFoundError(2, "No such file or directory", "gold.txt"), 2, "gold.txt"),
        (ModuleNotFoundError("No module named 'torchvision'", name="torchvision"), 2, "[vision]"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_user_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    code: int,
    text: str,
) -> None:
    fake_command(monkeypatch, "check-data", raiser(exc))
    assert cli.main(["check-data", "some/dir"]) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("mnerqg check-data: error: ")
    assert text in lines[0]
    assert "Traceback" not in captured.err


def test_debug_reraises(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_command(monkeypatch, "predict", raiser(DataError("x.txt", "bad")))
    with pytest.raises(DataError):
        cli.main(["--debug", "predict"])


def test_other_exceptions_are_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_command(monkeypatch, "predict", raiser(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError):
        cli.main(["predict"])


@pytest.mark.parametrize(
    ("target", "text"),
    [
        ("mnerqg_graph.no_such_module:main", "not found"),
        ("no_such_package.module:main", "not found"),
        ("mnerqg_graph.errors:main", "has no function main"),
    ],
)
def test_missing_command_module_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], target: str, text: str
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "bench", cli.Command(target, "help"))
    assert cli.main(["bench"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mnerqg bench: error: ") and text in err


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "COMMAND is required" in capsys.readouterr().err
    assert cli.main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err


PLUGIN = """
from tests_cli_fake_registry import FUSION

@FUSION.register("my_fusion")
class MyFusion:
    pass
"""


@pytest.mark.parametrize("by_path", [False, True])
def test_plugin_registers_before_the_command_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, by_path: bool
) -> None:
    registry: Registry[object] = Registry("fusion module", object)
    monkeypatch.setitem(
        sys.modules, "tests_cli_fake_registry", types.SimpleNamespace(FUSION=registry)
    )
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "my_cli_plugin.py").write_text(PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.delitem(sys.modules, "my_cli_plugin", raising=False)
    seen: list[list[str]] = []
    fake_command(monkeypatch, "synth", lambda argv: seen.append(registry.names()) or 0)

    plugin = str(plugin_dir / "my_cli_plugin.py") if by_path else "my_cli_plugin"
    try:
        assert cli.main(["--plugin", plugin, "synth"]) == 0
    finally:
        sys.modules.pop("my_cli_plugin", None)
    assert seen == [["my_fusion"]]


def test_missing_plugin_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["--plugin", "no_such_plugin_module", "synth"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot import plugin 'no_such_plugin_module'" in err
    assert cli.main(["--plugin", str(tmp_path / "absent.py"), "synth"]) == 2
    assert "plugin file not found" in capsys.readouterr().err


def test_split_argv() -> None:
    assert cli.split_argv(["--plugin", "a", "--debug", "synth", "--plugin", "x"]) == (
        ["--plugin", "a", "--debug", "synth"],
        ["--plugin", "x"],
    )
    assert cli.split_argv(["--help"]) == (["--help"], [])
