"""Options and checks that several ``mnerqg`` commands share (predict, visualize, report).

Each helper adds the same options with the same help to a command's parser, or checks parsed
options with the same messages, so that the commands stay consistent.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from mnerqg_graph.errors import ConfigError, DataError


def doc_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of ``doc`` and its epilog the rest.

    Args:
        prog: the program name (``mnerqg report``).
        doc: the command module's docstring (reST double backquotes are dropped).

    Returns:
        The parser (raw description formatting: the paragraphs are kept as written).
    """
    paragraphs = (doc or "").split("\n\n")
    return argparse.ArgumentParser(
        prog=prog,
        description=paragraphs[0].replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(paragraphs[1:]).replace("``", ""),
    )


def add_tweet_input(ap: argparse.ArgumentParser, input_help: str, images_help: str) -> None:
    """``--checkpoint``, one of ``--text`` / ``--input``, ``--image`` and ``--images``.

    Args:
        ap: the parser.
        input_help: the help of ``--input`` (what the command reads).
        images_help: the help of ``--images``.
    """
    ap.add_argument("--checkpoint", required=True, help="checkpoint directory")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="one tweet as raw text")
    src.add_argument("--input", help=input_help)
    ap.add_argument("--image", help="image of the --text tweet")
    ap.add_argument("--images", help=images_help)


def check_tweet_input(args: argparse.Namespace) -> None:
    """The options of :func:`add_tweet_input` that only work together.

    ``--image`` goes with ``--text`` and ``--images`` with ``--input`` (either was ignored
    silently with the other source), and ``--images`` must be a folder (a misspelled folder
    used to run every tweet text-only without a word).

    Raises:
        ConfigError: an option given with the wrong source. DataError: ``--images`` is not a
            folder.
    """
    if args.image and args.text is None:
        raise ConfigError("--image goes with --text (use --images for --input)")
    if args.images is not None:
        if args.input is None:
            raise ConfigError("--images goes with --input (use --image for --text)")
        if not Path(args.images).is_dir():
            raise DataError(args.images, "--images: no such folder")


def add_batch_and_device(ap: argparse.ArgumentParser, batch_size: int) -> None:
    """``--batch-size`` (default ``batch_size``) and ``--device`` (default ``auto``).

    Args:
        ap: the parser.
        batch_size: the default batch size.
    """
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")


def check_minimums(args: argparse.Namespace, minimums: Mapping[str, int]) -> None:
    """Check that each option given is at least its minimum (an option left at None passes).

    Args:
        args: the parsed options.
        minimums: the smallest value per option ``dest`` (``batch_size`` for ``--batch-size``),
            checked in this order.

    Raises:
        ConfigError: ``--OPTION must be >= MIN, got VALUE`` for the first option under its minimum.
    """
    for dest, minimum in minimums.items():
        value = getattr(args, dest)
        if value is not None and value < minimum:
            flag = "--" + dest.replace("_", "-")
            raise ConfigError(f"{flag} must be >= {minimum}, got {value}")
