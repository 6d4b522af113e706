"""The plugin hooks of sasview-bnn (pluggy project name ``"sasview_bnn"``).

A plugin is any module or object with functions decorated by :data:`hookimpl`
and named like the specifications below; an installed distribution exposes it
through an entry point in the group ``"sasview_bnn"``::

    [project.entry-points.sasview_bnn]
    my_plugin = "my_package.plugin"

The runtime consumes the model, raw-curve and result hooks. The three UI hooks
describe pieces that the SasView integration places in its window; they are
collected by :class:`~sasview_bnn_plugin.plugin_host.PluginHost` and placed
into SasView by :mod:`sasview_bnn_plugin.gui.sasview_hooks` (the project's own
perspective, menu action and grid column come from
:mod:`sasview_bnn_plugin.gui.builtin_gui_plugin` through the same hooks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .curve import Curve
    from .model_catalog import ModelSource
    from .result import ClassificationResult

PROJECT_NAME = "sasview_bnn"
ENTRY_POINT_GROUP = "sasview_bnn"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Decorate plugin functions with this marker.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def sasview_bnn_models() -> list["ModelSource"]:
    """Contribute classification models.

    Return a list of :class:`~sasview_bnn_plugin.model_catalog.ModelSource`
    (unique name, path to an ONNX file following ``model_format``, card: a
    dict of strings shown by ``sasview-bnn models``). Names must not clash with
    other models; a clash keeps the first one and logs a warning.
    """


@hookspec
def sasview_bnn_prepare_raw_curve(curve: "Curve") -> "Curve | None":
    """Adjust a raw curve before the shared preprocessing.

    Called for every readable curve, in plugin registration order, each plugin
    receiving the previous one's output. Return a new or modified
    :class:`~sasview_bnn_plugin.curve.Curve` (e.g. with instrument-specific
    unit fixes, a notes entry saying what was done), or None to leave it
    unchanged. Arrays are in the curve's own ``q_unit``; shape (points,).
    """


@hookspec
def sasview_bnn_result(result: "ClassificationResult") -> None:
    """Receive every result (classified or refused) as soon as it exists.

    For sinks: databases, beamline dashboards, log files. The return value
    is ignored; an exception is logged and does not stop classification.
    """


@hookspec
def sasview_bnn_perspectives() -> list[Any]:
    """Contribute SasView perspectives (consumed by the SasView integration).

    Return a list of classes implementing SasView's perspective interface
    (a ``QWidget`` subclass with a ``name`` attribute), each shown as an
    extra perspective tab.
    """


@hookspec
def sasview_bnn_menu_actions() -> list[Any]:
    """Contribute menu actions (consumed by the SasView integration).

    Return a list of ``(menu_path, label, callback)`` tuples: ``menu_path`` a
    string like ``"Analysis/Anomaly classification"``, ``label`` the menu text,
    ``callback`` a callable taking the list of selected sasdata ``Data1D``.
    """


@hookspec
def sasview_bnn_grid_columns() -> list[Any]:
    """Contribute columns for the batch-results grid (consumed by the SasView integration).

    Return a list of ``(header, function)`` pairs: ``header`` the column title,
    ``function`` mapping a
    :class:`~sasview_bnn_plugin.result.ClassificationResult` to the cell's text.
    """
