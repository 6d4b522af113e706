"""``sasview-bnn-train``: the trainer's command line.

Each sub-command lives in its own module ``sasview_bnn_trainer.cli_<name>``
exposing ``add_parser(subparsers)``, which registers the sub-command and sets
``run=<function(args) -> int>`` as its default (the frame is shared with the
runtime's CLI: :mod:`sasview_bnn_plugin.cli.command_line`). Usage errors print one
line and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from sasview_bnn_plugin.cli.command_line import OneLineArgumentParser, UsageError, build_command_parser, run_command_line

__all__ = ["COMMANDS", "OneLineArgumentParser", "UsageError", "build_parser", "main"]

#: Sub-commands in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("simulate", "fit", "export", "evaluate", "card")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every sub-command registered."""
    return build_command_parser(
        "sasview-bnn-train",
        "Simulate labelled SAS curves, train the Bayesian network, evaluate it and export it to ONNX.",
        "sasview_bnn_trainer",
        COMMANDS,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    # simulate, fit, export, evaluate need scipy, sasmodels, torch, onnx, dask...: the [train] extra
    return run_command_line("sasview-bnn-train", build_parser, argv, missing_module_extra="train")


if __name__ == "__main__":
    sys.exit(main())
