"""The frame shared by both command lines (``sasview-bnn`` and ``sasview-bnn-train``).

Each sub-command lives in its own module ``<package>.cli_<name>`` exposing
``add_parser(subparsers)``, which registers the sub-command and sets
``run=<function(args) -> int>`` as its default. Usage errors print one line
and exit with code 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence


class UsageError(Exception):
    """A bad command-line argument; printed as one line, exit code 2."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and raise :class:`UsageError`."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_command_parser(
    prog: str,
    description: str,
    package: str,
    commands: Sequence[str],
    common_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> OneLineArgumentParser:
    """A parser with the sub-commands ``package.cli_<name>`` for each name in ``commands``.

    ``common_arguments`` adds options that come before the sub-command (e.g. ``--version``).
    """
    parser = OneLineArgumentParser(prog=prog, description=description)
    if common_arguments is not None:
        common_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    for name in commands:
        importlib.import_module(f"{package}.cli_{name}").add_parser(sub)
    return parser


def run_command_line(
    prog: str,
    parser_factory: Callable[[], argparse.ArgumentParser],
    argv: Sequence[str] | None,
    before_run: Callable[[argparse.Namespace], None] | None = None,
) -> int:
    """Parse ``argv``, run the chosen sub-command and turn failures into exit codes."""
    try:
        args = parser_factory().parse_args(argv)
        if before_run is not None:
            before_run(args)
        return int(args.run(args) or 0)
    except UsageError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
