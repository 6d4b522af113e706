"""``sasview-bnn-train``: the trainer's command line.

Each sub-command lives in its own module ``sasview_bnn_trainer.cli_<name>``
exposing ``add_parser(subparsers)``, which registers the sub-command and sets
``run=<function(args) -> int>`` as its default. Usage errors print one line and
exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

#: Sub-commands in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("simulate", "fit", "export", "evaluate")


class UsageError(Exception):
    """A bad command-line argument; printed as one line, exit code 2."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and raise :class:`UsageError`."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every sub-command registered."""
    parser = OneLineArgumentParser(
        prog="sasview-bnn-train",
        description="Simulate labelled SAS curves, train the Bayesian network, evaluate it and export it to ONNX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    for name in COMMANDS:
        importlib.import_module(f"sasview_bnn_trainer.cli_{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.run(args) or 0)
    except UsageError as err:
        print(f"sasview-bnn-train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sasview-bnn-train: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
