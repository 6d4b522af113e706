"""The plugin hooks of sasview-bnn (pluggy project name ``"sasview_bnn"``).

A plugin is any module or object with functions decorated by :data:`hookimpl`
and named like the specifications below; an installed distribution exposes it
through an entry point in the group ``"sasview_bnn"``::

    [project.entry-points.sasview_bnn]
    my_plugin = "my_package.plugin"

These are the runtime's hooks: models, raw curves, results, anomalies and 2D
frames. The SasView integration has its own hooks, for the pieces it places in
SasView's window (perspectives, menu actions, batch-grid columns), specified in
:mod:`sasview_bnn_plugin.gui.hookspecs` (same project name and ``hookimpl``)
and registered with the same plugin manager when the GUI is used.

How the hooks are called: through pluggy, ``manager.hook.<name>(...)``, so
everything pluggy documents holds. Implementations run in pluggy's order:
later-registered plugins first (the host registers the built-in plugin, then
the entry points, then any extra plugins), ``tryfirst=True`` ones before and
``trylast=True`` ones after the others. An implementation may declare any
subset of the spec's arguments. ``wrapper=True`` (and old-style
``hookwrapper=True``) implementations run around all the others, see the list
of their results (in call order) and may change it. Every hook returns that
list; an implementation returning None is left out of it.

A plugin cannot break a call: an implementation that raises is logged with
the plugin's name and listed in the host's ``problems``, and the call goes on
without it; a wrapper whose own code raises is reported the same way and lets
the result through unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from ..core.curve import Curve
    from ..model.catalog import ModelSource
    from ..core.result import ClassificationResult

PROJECT_NAME = "sasview_bnn"
ENTRY_POINT_GROUP = "sasview_bnn"

#: Marks the specifications (here and in :mod:`sasview_bnn_plugin.gui.hookspecs`).
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Decorate plugin functions with this marker.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: The hooks of this module whose implementations each return a list (checked by the host, see its docs).
LIST_HOOKS = frozenset({"sasview_bnn_models"})


@hookspec
def sasview_bnn_models() -> list["ModelSource"]:
    """Contribute classification models.

    Return a list of :class:`~sasview_bnn_plugin.model.catalog.ModelSource`
    (unique name, path to an ONNX file following ``model_format``, card: a
    dict of strings shown by ``sasview-bnn models``); items that are not
    ``ModelSource`` are reported and dropped. The host sets each model's
    ``provider`` to the contributing plugin's name (``"shipped"`` for the
    built-in plugin), whatever the plugin put there; a model a wrapper adds is
    attributed to the wrapper's plugin.

    Names must not clash with other models. The host takes the lists from the
    last-called implementation back to the first (registration order unless
    tryfirst/trylast are used) and on a clash keeps the model taken first,
    logging a warning; the built-in implementation is ``trylast``, so the
    shipped models are taken first and keep their names.
    """


@hookspec
def sasview_bnn_prepare_raw_curve(curve: "Curve") -> "Curve | None":
    """Adjust a raw curve before the shared preprocessing.

    Called once for every readable curve, through one pluggy call, in pluggy's
    order: later-registered plugins first, tryfirst/trylast respected; each
    receives the previous one's output (the first the raw curve): the host's
    plugin manager passes the chain's current curve as ``curve``, also when
    the hook is called directly through ``manager.hook``. Return a new or
    modified :class:`~sasview_bnn_plugin.core.curve.Curve` (e.g. with
    instrument-specific unit fixes, a notes entry saying what was done), or
    None to leave it unchanged; anything else is reported and ignored. Arrays
    are in the curve's own ``q_unit``; shape (points,).

    The hook's result is the list of the returned curves in call order; the
    host uses its last curve (the chain's end), or the raw curve if there is
    none. A wrapper receives the raw curve and may change that list (e.g.
    append a curve to replace the chain's result).
    """


@hookspec
def sasview_bnn_result(result: "ClassificationResult") -> None:
    """Receive every result (classified or refused) as soon as it exists.

    For sinks: databases, beamline dashboards, log files. Called in pluggy's
    order (later-registered plugins first). The return value is ignored; an
    exception is logged and does not stop classification or the other sinks.
    """


@hookspec
def sasview_bnn_anomaly(result: "ClassificationResult") -> None:
    """Receive every result that is anomalous or novel, right after :func:`sasview_bnn_result`.

    For closed-loop control: pause a scan, alert someone, re-measure. Called
    by :meth:`~sasview_bnn_plugin.plugins.host.PluginHost.publish_result` for
    each classified curve that
    :func:`~sasview_bnn_plugin.plugins.host.is_anomalous`: its label is not
    ``clean``, or it is novel, or (models with the optional output) it shows
    any anomaly present; never for a refused curve. Called in pluggy's order;
    the return value is ignored; an exception is logged and stops nothing.
    :class:`sasview_bnn_plugin.bluesky.PauseOnAnomalies` is an example: it
    pauses a Bluesky scan after N anomalous curves in a row.
    """


@hookspec(firstresult=True)
def sasview_bnn_reduce_frame(frame: Any, metadata: dict[str, Any]) -> "tuple[Any, Any, Any, str | None] | None":
    """Reduce a 2D detector frame to a 1D curve I(q) before classification (e.g. with pyFAI).

    ``frame`` is the image as the detector gave it, an array of shape (rows,
    columns). ``metadata`` is a dict; the Bluesky callback
    (:mod:`sasview_bnn_plugin.bluesky`) passes ``field`` (the image's field
    name), ``data_key`` (its entry in the descriptor's ``data_keys``),
    ``start``, ``descriptor`` and ``event`` (the documents: geometry such as
    beam centre, distance, wavelength lives in the start document or the
    descriptor's ``configuration``).

    Return ``(q, I, dI, q_unit)``: arrays of shape (points,), ``dI`` may be
    None, ``q_unit`` "1/A", "1/nm" (any spelling the runtime reads) or None
    (unknown: the runtime decides it from the q range); or None to leave the
    frame to another plugin. ``firstresult``: the first answer that is not
    None (pluggy's order: later-registered plugins first) is used, and the
    remaining implementations are not called; an implementation that raises
    is reported and skipped. No answer at all makes the curve an error result.
    """
