"""The frame shared by both command lines (``sasview-bnn`` and ``sasview-bnn-train``).

Each sub-command lives in its own module (``sasview_bnn_plugin.cli.<name>``,
``sasview_bnn_trainer.cli_<name>``: see ``module_template``) exposing
``add_parser(subparsers)``, which registers the sub-command and sets
``run=<function(args) -> int>`` as its default. Usage errors print one line
and exit with code 2; Ctrl-C exits with 130. No command at all lists the
commands, one line each. A sub-command that needs a package of an optional
extra which is not installed says which extra to install (exit code 2).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from ..core.extras import OWN_PACKAGES, extra_install_hint

__all__ = [
    "OWN_PACKAGES", "OneLineArgumentParser", "UsageError", "build_command_parser", "command_list",
    "extra_install_hint", "run_command_line",
]


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
    module_template: str = "{package}.cli_{name}",
) -> OneLineArgumentParser:
    """A parser with the sub-commands ``module_template`` (default ``package.cli_<name>``) for each name in ``commands``.

    ``common_arguments`` adds options that come before the sub-command (e.g. ``--version``).
    """
    parser = OneLineArgumentParser(prog=prog, description=description)
    if common_arguments is not None:
        common_arguments(parser)
    # Not required: run_command_line lists the commands when none is given (argparse would only name "command").
    sub = parser.add_subparsers(dest="command", parser_class=OneLineArgumentParser)
    for name in commands:
        importlib.import_module(module_template.format(package=package, name=name)).add_parser(sub)
    return parser


def run_command_line(
    prog: str,
    parser_factory: Callable[[], argparse.ArgumentParser],
    argv: Sequence[str] | None,
    before_run: Callable[[argparse.Namespace], None] | None = None,
    missing_module_extra: str | None = None,
) -> int:
    """Parse ``argv``, run the chosen sub-command and turn failures into exit codes.

    ``missing_module_extra`` names the optional extra (e.g. "train") that brings
    the third-party modules the sub-commands import: a missing one is then one
    line saying which extra to install, instead of a traceback.
    """
    args: argparse.Namespace | None = None
    try:
        parser = parser_factory()
        args = parser.parse_args(argv)
        if getattr(args, "run", None) is None:
            raise UsageError(command_list(parser))
        if before_run is not None:
            before_run(args)
        return int(args.run(args) or 0)
    except UsageError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        module = (err.name or "").split(".")[0]
        if missing_module_extra is None or not module or module in OWN_PACKAGES:
            raise
        command = " ".join(filter(None, [prog, getattr(args, "command", None)]))
        print(f"{command}: error: the Python package {module!r} is not installed; "
              f"{extra_install_hint(missing_module_extra)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def command_list(parser: argparse.ArgumentParser) -> str:
    """"a command is needed", then each sub-command with its one-line help, then how to get its options."""
    lines = ["a command is needed, one of:"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = [(choice.dest, choice.help or "") for choice in action._choices_actions]
            width = max((len(name) for name, _ in helps), default=0)
            lines += [f"  {name:<{width}}  {text}".rstrip() for name, text in helps]
    lines.append(f"run '{parser.prog} COMMAND --help' for the options of one")
    return "\n".join(lines)
