"""How the detectors package's commands run as scripts: a user error is one line and exit code 2.

Used by ``python -m detectors.detector``, ``python -m detectors.grounder`` and the
``mnerqg pseudo-label`` module (:mod:`detectors.weak_labels`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import Any

from mnerqg_graph.errors import ConfigError, MnerqgError
from mnerqg_graph.io import loads_json_object


def run_main(
    main_fn: Callable[[list[str] | None], int], prog: str, argv: list[str] | None = None
) -> int:
    """Run a command's ``main`` as a script: a user error prints one line and exits with 2.

    Args:
        main_fn: the command's ``main(argv) -> int``.
        prog: the program name for the error line.
        argv: the arguments; ``sys.argv[1:]`` when None.

    Returns:
        The exit code.
    """
    try:
        return main_fn(argv)
    except MnerqgError as exc:
        print(f"{prog}: error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted", file=sys.stderr)
        return 130


def json_object_option(flag: str, text: str) -> dict[str, Any]:
    """The value of a command-line option that takes options as a JSON object.

    Args:
        flag: the option, for the error (``--backbone-kwargs``).
        text: what was given.

    Raises:
        ConfigError: ``text`` is not JSON, or not an object.
    """
    return loads_json_object(
        text,
        lambda exc: ConfigError(f"{flag} is not JSON: {exc}"),
        lambda _value: ConfigError(f"{flag} must be a JSON object"),
    )


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A command's parser (abbreviated options are not accepted).

    Args:
        prog: the program name.
        description: what the command does.

    Returns:
        The parser.
    """
    return argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)


def subcommand_parser(
    prog: str, description: str
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    """A command's parser and its required subcommands (``dest="command"``).

    Args:
        prog: the program name.
        description: what the command does.

    Returns:
        The parser, and the action to add each subcommand's parser to (``add_parser``).
    """
    parser = command_parser(prog, description)
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def option_values(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """Parsed options as keyword arguments, for a function whose parameters they are named after.

    Args:
        args: the parsed arguments.
        *names: the options' ``dest`` names (``batch_size`` for ``--batch-size``).

    Returns:
        ``{name: args.name}`` for each name.
    """
    return {name: getattr(args, name) for name in names}


def subcommand_main(
    prog: str,
    build_parser: Callable[[], argparse.ArgumentParser],
    handlers: Mapping[str, Callable[[argparse.Namespace], int]],
) -> Callable[[list[str] | None], int]:
    """The ``main(argv) -> int`` of a command with subcommands (``dest="command"``).

    Args:
        prog: the command (``python -m detectors.detector``), for the docstring.
        build_parser: builds the command's parser.
        handlers: the function that runs each subcommand on the parsed arguments.

    Returns:
        ``main(argv=None)``: parses ``argv`` (``sys.argv[1:]`` when None) and returns the exit code
        of the chosen subcommand's handler; user errors are raised as ``MnerqgError``.
    """

    def main(argv: list[str] | None = None) -> int:
        args = build_parser().parse_args(argv)
        return handlers[args.command](args)

    main.__doc__ = (
        f"Run ``{prog}``; user errors are raised as ``MnerqgError``.\n\n"
        "Args:\n    argv: the arguments; ``sys.argv[1:]`` when None.\n\n"
        "Returns:\n    The exit code of the subcommand.\n"
    )
    return main


__all__ = [
    "command_parser",
    "json_object_option",
    "option_values",
    "run_main",
    "subcommand_main",
    "subcommand_parser",
]
