"""The project's own SasView pieces, contributed through the same UI hooks as any plugin.

- the "BNN Anomaly" perspective,
- an Analysis-menu action "BNN Anomaly" that shows it (checkable like SasView's own),
- the batch grid's "BNN anomaly" column: label, confidence and novelty of each fitted dataset.

:func:`sasview_bnn_plugin.gui.launch.build_gui_plugin_host` registers this
module next to the runtime's built-in plugin and any installed plugins.
"""

from __future__ import annotations

from typing import Any, Callable

from ..plugins.hookspecs import hookimpl
from ..core.result import ClassificationResult
from .perspective import BNNAnomalyPerspective
from .sasview_hooks import PERSPECTIVE_NAME, switch_to_perspective
from .summary import grid_cell

GRID_COLUMN_HEADER = "BNN anomaly"


def show_bnn_perspective(selected_data: list[Any]) -> None:
    """Analysis > BNN Anomaly: show the perspective (like SasView's own entries, data are sent with "Send data")."""
    switch_to_perspective(PERSPECTIVE_NAME)


@hookimpl
def sasview_bnn_perspectives() -> list[type]:
    return [BNNAnomalyPerspective]


@hookimpl
def sasview_bnn_menu_actions() -> list[tuple[str, str, Callable[[list[Any]], None]]]:
    return [("Analysis", PERSPECTIVE_NAME, show_bnn_perspective)]


@hookimpl
def sasview_bnn_grid_columns() -> list[tuple[str, Callable[[ClassificationResult], str]]]:
    return [(GRID_COLUMN_HEADER, grid_cell)]
