"""``sasview-bnn``: the runtime's command line.

Each sub-command lives in its own module ``sasview_bnn_plugin.cli.<name>``
exposing ``add_parser(subparsers)``, which registers the sub-command and sets
``run=<function(args) -> int>`` as its default (the frame is in
:mod:`sasview_bnn_plugin.cli.command_line`). Usage errors print one line and exit
with code 2.
"""

from __future__ import annotations

import argparse
import logging
from typing import Sequence

from .. import __version__
from .command_line import OneLineArgumentParser, UsageError, build_command_parser, run_command_line

__all__ = ["COMMANDS", "OneLineArgumentParser", "UsageError", "build_parser", "main"]

#: Sub-commands in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("classify", "watch", "calibrate", "models", "gui")


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"sasview-bnn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log provider choices and plugin activity")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every sub-command registered."""
    return build_command_parser(
        "sasview-bnn",
        "Classify small-angle scattering curves I(q) (clean or which anomaly) with a Bayesian neural "
        "network, with uncertainty and a novelty flag.",
        "sasview_bnn_plugin.cli",
        COMMANDS,
        _common_arguments,
        module_template="{package}.{name}",
    )


def _configure_logging(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="sasview-bnn: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    return run_command_line("sasview-bnn", build_parser, argv, _configure_logging)
