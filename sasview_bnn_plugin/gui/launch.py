"""Start the real SasView with the sasview-bnn plugins loaded.

``python -m sasview_bnn_plugin.gui [--settings FILE]`` runs SasView's own
start-up (``sas.cli.main``: logging, sasmodels and Qt environment set-up) and,
through its ``-c`` option, :func:`start_sasview_with_plugins`, which installs
the integration (:func:`.sasview_hooks.install`) and then calls SasView's
``run_sasview``. The plugin host holds the runtime's built-in plugin, the
project's GUI plugin (:mod:`.builtin_gui_plugin`) and every installed
``sasview_bnn`` entry-point plugin.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ..plugins.host import PluginHost, build_plugin_host
from .settings import SETTINGS_VARIABLE

_START_COMMAND = "from sasview_bnn_plugin.gui.launch import start_sasview_with_plugins; start_sasview_with_plugins()"


PYSIDE_BUG_MESSAGE = (
    "this PySide6 build loses a reference to None on every call that returns nothing (seen with PySide6 6.12.0 "
    "on Python 3.11), which crashes SasView after a few thousand events; install PySide6<6.12 "
    "(pip install 'PySide6<6.12') or use Python 3.12 or newer"
)


def pyside_loses_none_references(calls: int = 200) -> bool:
    """True when this Qt binding's void calls drop references to None (so long sessions crash).

    Measured, not guessed from version numbers: ``calls`` calls of
    ``QCoreApplication.processEvents`` (no application needed) must leave
    ``sys.getrefcount(None)`` where it was. Python 3.12+ never loses: None is immortal there.
    """
    from PySide6 import QtCore

    before = sys.getrefcount(None)
    for _ in range(calls):
        QtCore.QCoreApplication.processEvents()
    return before - sys.getrefcount(None) >= calls // 2


def build_gui_plugin_host() -> PluginHost:
    """Built-in, installed and GUI plugins (the GUI plugin contributes the perspective, menu action and grid column),
    with the GUI's hook specifications (:mod:`.hookspecs`) next to the runtime's."""
    from . import builtin_gui_plugin, hookspecs

    return build_plugin_host(extra_plugins=[builtin_gui_plugin], extra_hookspecs=[hookspecs])


def start_sasview_with_plugins() -> None:
    """Install the integration and run SasView's GUI (returns when SasView quits)."""
    from sas.qtgui.MainWindow.MainWindow import run_sasview

    from .sasview_hooks import install

    install(build_gui_plugin_host())
    run_sasview()


DESCRIPTION = (
    "Start SasView with the BNN Anomaly perspective, its Analysis-menu action and the batch grid's 'BNN anomaly' column."
)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings",
        metavar="FILE",
        help=f"settings file to use (default: ${SETTINGS_VARIABLE} or sasview_bnn.json in SasView's config folder)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sasview_bnn_plugin.gui", description=DESCRIPTION)
    _add_arguments(parser)
    return parser


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``sasview-bnn gui`` (the runtime CLI's sub-command convention: sets ``run``)."""
    parser = subparsers.add_parser("gui", help="start SasView with the BNN Anomaly perspective", description=DESCRIPTION)
    _add_arguments(parser)
    parser.set_defaults(run=lambda args: main(["--settings", args.settings] if args.settings else []))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m sasview_bnn_plugin.gui`` and ``sasview-bnn gui``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        import sas.cli
    except ImportError:
        from ..core.extras import extra_install_hint

        print(f"sasview-bnn gui: error: SasView is not installed; {extra_install_hint('gui')}", file=sys.stderr)
        return 2
    if pyside_loses_none_references():
        print(f"sasview-bnn gui: error: {PYSIDE_BUG_MESSAGE}", file=sys.stderr)
        return 2
    if args.settings:
        os.environ[SETTINGS_VARIABLE] = os.path.abspath(args.settings)
    sys.argv = [sys.argv[0] if sys.argv else "sasview", "-c", _START_COMMAND]
    return int(sas.cli.main() or 0)
