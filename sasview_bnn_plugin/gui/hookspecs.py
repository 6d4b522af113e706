"""The SasView integration's own hooks (pluggy project ``"sasview_bnn"``, the runtime's): pieces for SasView's window.

A plugin implements them with the same :data:`~sasview_bnn_plugin.hookimpl` as
the runtime hooks (:mod:`sasview_bnn_plugin.plugins.hookspecs`), in the same
module or object. They are registered with the runtime's plugin manager when
the GUI is used: :func:`sasview_bnn_plugin.gui.launch.build_gui_plugin_host`
builds the host with them, and :func:`perspectives`, :func:`menu_actions` and
:func:`grid_columns` add them (once) to any host they are given. They are
called the pluggy way, with the host's failure isolation, like the runtime's
(a plugin that raises, or returns something that is not a list, is reported in
``host.problems`` and left out). The contributions are placed into SasView by
:mod:`sasview_bnn_plugin.gui.sasview_hooks`; the project's own perspective, menu
action and grid column come from :mod:`sasview_bnn_plugin.gui.builtin_gui_plugin`
through these same hooks.

Importing this module imports nothing from Qt or SasView.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ..plugins.hookspecs import hookspec

if TYPE_CHECKING:
    from ..plugins.host import PluginHost

PERSPECTIVES_HOOK = "sasview_bnn_perspectives"
MENU_ACTIONS_HOOK = "sasview_bnn_menu_actions"
GRID_COLUMNS_HOOK = "sasview_bnn_grid_columns"
#: The hooks of this module whose implementations each return a list (all three).
LIST_HOOKS = frozenset({PERSPECTIVES_HOOK, MENU_ACTIONS_HOOK, GRID_COLUMNS_HOOK})


@hookspec
def sasview_bnn_perspectives() -> list[Any]:
    """Contribute SasView perspectives.

    Return a list of classes implementing SasView's perspective interface
    (a ``QWidget`` subclass with a ``name`` attribute), each shown as an
    extra perspective tab. The lists are concatenated in pluggy's call order (:func:`perspectives`).
    """


@hookspec
def sasview_bnn_menu_actions() -> list[Any]:
    """Contribute menu actions.

    Return a list of ``(menu_path, label, callback)`` tuples: ``menu_path`` a
    string like ``"Analysis/Anomaly classification"``, ``label`` the menu text,
    ``callback`` a callable taking the list of selected sasdata ``Data1D``.
    The lists are concatenated in pluggy's call order (:func:`menu_actions`).
    """


@hookspec
def sasview_bnn_grid_columns() -> list[Any]:
    """Contribute columns for the batch-results grid.

    Return a list of ``(header, function)`` pairs: ``header`` the column title,
    ``function`` mapping a
    :class:`~sasview_bnn_plugin.core.result.ClassificationResult` to the cell's text.
    The lists are concatenated in pluggy's call order (:func:`grid_columns`).
    """


def add_to(host: "PluginHost") -> "PluginHost":
    """Register these hook specifications with ``host``'s plugin manager (once); returns ``host``."""
    host.manager.add_hookspecs(sys.modules[__name__])
    return host


def perspectives(host: "PluginHost") -> list[Any]:
    """The perspective classes contributed to ``host``'s plugins, in pluggy's call order."""
    return add_to(host).collect(PERSPECTIVES_HOOK)


def menu_actions(host: "PluginHost") -> list[Any]:
    """The ``(menu_path, label, callback)`` menu actions contributed to ``host``'s plugins, in pluggy's call order."""
    return add_to(host).collect(MENU_ACTIONS_HOOK)


def grid_columns(host: "PluginHost") -> list[Any]:
    """The ``(header, function)`` batch-grid columns contributed to ``host``'s plugins, in pluggy's call order."""
    return add_to(host).collect(GRID_COLUMNS_HOOK)
