"""``sasview-bnn``: the runtime's command line.

Each sub-command lives in its own module ``sasview_bnn_plugin.cli_<name>``
exposing ``add_parser(subparsers)``, which registers the sub-command and sets
``run=<function(args) -> int>`` as its default; a new sub-command (``gui``)
is one more module and one more name in :data:`COMMANDS`. Usage errors print
one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from . import __version__

#: Sub-commands in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("classify", "models", "gui")


class UsageError(Exception):
    """A bad command-line argument or model; printed as one line, exit code 2."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and raise :class:`UsageError`."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every sub-command registered."""
    parser = OneLineArgumentParser(
        prog="sasview-bnn",
        description="Classify small-angle scattering curves I(q) (clean or which anomaly) with a Bayesian neural "
        "network, with uncertainty and a novelty flag.",
    )
    parser.add_argument("--version", action="version", version=f"sasview-bnn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log provider choices and plugin activity")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    for name in COMMANDS:
        importlib.import_module(f"sasview_bnn_plugin.cli_{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="sasview-bnn: %(message)s")
        return int(args.run(args) or 0)
    except UsageError as err:
        print(f"sasview-bnn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sasview-bnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
