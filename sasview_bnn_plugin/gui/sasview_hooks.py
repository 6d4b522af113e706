"""Every contact of sasview-bnn with SasView's internals, in this one module.

SasView (checked against 6.1.3 and 6.2) has no plugin API for perspectives,
menus or the batch grid, so the integration leans on a few internals. Each
is listed here; when SasView changes, this is the only file to revisit.

1. ``sas.qtgui.Perspectives.PERSPECTIVES`` (dict name -> class). SasView
   instantiates every class in it when the main window is built
   (``GuiManager.loadAllPerspectives``) and the Data Explorer fills its
   perspective combo from its keys, so contributed perspectives must be in it
   *before* ``MainSasViewWindow`` exists: :func:`register_perspectives`.
2. ``sas.qtgui.MainWindow.GuiManager.GuiManager``: ``MainSasViewWindow``
   imports this class by name when it builds its manager; :func:`install`
   replaces it with a subclass that registers the perspectives first and,
   once the manager is built, attaches a :class:`SasViewIntegration` as its
   ``sasview_bnn`` attribute (nothing else changes). The main window itself
   cannot be subclassed this way: its ``__init__`` calls
   ``super(MainSasViewWindow, self)`` through the module-level name.
3. ``GuiManager``: ``_workspace.menuAnalysis`` / ``menubar`` (menus),
   ``perspectiveChanged(name)`` and ``filesWidget.onAnalysisUpdate(name)``
   (what the built-in Analysis actions call), ``loadedPerspectives``,
   ``communicate.perspectiveChangedSignal`` (to tick the checkable Analysis
   action of the perspective shown, as SasView does for its own).
4. The batch results window ``GuiManager.grid_window`` (``BatchOutputPanel``):
   ``communicate.sendDataToGridSignal`` delivers the fit results (rows of
   ``[FitResult]``; ``FitResult.data.sas_data`` is the fitted Data1D) and
   ``tables[-1]`` is the page just filled. Extra columns are appended as
   ordinary ``QTableWidgetItem`` cells, so "Save" (``writeBatchToFile``)
   keeps them. The right-click menu is built inside ``showContextMenu``;
   it is replaced by one with the same "Plot selected fits." entry plus the
   plugin's "Classify with BNN".
5. SasView's signal hub (``GuiUtils.Communicate``): in 6.1 it is
   ``GuiUtils.communicate`` and ``GuiManager.communicate`` (with a
   ``communicator()`` method), in 6.2 ``GuiUtils.communicator`` and the
   attribute ``GuiManager.communicator``: :func:`communicator` finds it in both.
6. ``sas.qtgui.Utilities.ObjectLibrary``: the Data Explorer is registered
   there as "DataExplorer" (its ``parent`` is the GuiManager); the
   integration registers itself as "sasview_bnn", so plugin callbacks can find
   the running SasView (:func:`switch_to_perspective`).

What is contributed comes from the GUI's pluggy hooks,
:mod:`sasview_bnn_plugin.gui.hookspecs` (perspectives, menu actions, grid
columns); the project's own pieces are the hook implementations in
:mod:`sasview_bnn_plugin.gui.builtin_gui_plugin`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import shiboken6
from PySide6 import QtCore, QtGui, QtWidgets

from ..core.curve import Curve
from ..core.result import ClassificationResult
from ..plugins.host import PluginHost
from . import hookspecs as gui_hooks
from .classification_service import ClassificationService

log = logging.getLogger(__name__)

INTEGRATION_OBJECT_NAME = "sasview_bnn"
CLASSIFY_ACTION_TEXT = "Classify with BNN"
PLOT_ACTION_TEXT = "Plot selected fits."  # SasView's own grid entry, kept in the replaced menu
PENDING_TEXT = "classifying…"
#: The perspective's name in SasView's perspective list and its Analysis menu.
PERSPECTIVE_NAME = "BNN Anomaly"
TWO_D_MESSAGE = "this is 2D data; the BNN classifies 1D curves I(q): send a 1D dataset (or a circular average)"


def curve_from_sasview_data(data: Any, name: str) -> Curve:
    """A :class:`Curve` from a SasView/sasdata data object; 2D or empty data give a failed curve with a message."""
    from sas.qtgui.Plotting.PlotterData import Data2D

    if data is None:
        return Curve.failed(name, "", "the Data Explorer item holds no data")
    if isinstance(data, Data2D) or getattr(data, "qx_data", None) is not None:
        return Curve.failed(name, "", TWO_D_MESSAGE)
    return Curve.from_data1d(data, source=name, dataset=str(getattr(data, "title", "") or ""))


def communicator(gui_manager: Any = None) -> Any:
    """SasView's ``Communicate`` signal hub, from ``gui_manager`` or SasView's module-level one (6.1 and 6.2)."""
    if gui_manager is not None:
        hub = getattr(gui_manager, "communicator", None)
        if callable(hub):  # 6.1: a method returning the hub
            hub = hub()
        if hub is None:
            hub = getattr(gui_manager, "communicate", None)
        if hub is not None:
            return hub
    import sas.qtgui.Utilities.GuiUtils as GuiUtils

    hub = getattr(GuiUtils, "communicator", None)  # 6.2
    return hub if hub is not None and not callable(hub) else GuiUtils.communicate  # 6.1


# -- 1. perspectives ----------------------------------------------------------------------------------


def register_perspectives(host: PluginHost) -> list[str]:
    """Put the plugins' perspective classes into ``sas.qtgui.Perspectives.PERSPECTIVES``; returns their names.

    A contribution without a ``name`` or that is not a ``QWidget`` class is
    skipped and reported in ``host.problems``; a name clash with an existing
    perspective keeps SasView's.
    """
    import sas.qtgui.Perspectives as Perspectives

    names = []
    for cls in gui_hooks.perspectives(host):
        name = getattr(cls, "name", None)
        if not isinstance(cls, type) or not issubclass(cls, QtWidgets.QWidget) or not isinstance(name, str) or not name:
            host.problems.append(f"a contributed perspective {cls!r} is not a QWidget class with a name; ignored")
            continue
        existing = Perspectives.PERSPECTIVES.get(name)
        if existing is not None and existing is not cls:
            if getattr(existing, "__module__", "").startswith("sas."):
                host.problems.append(f"perspective name {name!r} is SasView's own; the plugin's is ignored")
                continue
        Perspectives.PERSPECTIVES[name] = cls
        names.append(name)
    return names


# -- 2. the main window -------------------------------------------------------------------------------


def install(host: PluginHost) -> type:
    """Register the perspectives now and make SasView's next ``GuiManager`` attach the integration.

    Returns the ``GuiManager`` class the main window will build. Idempotent:
    a second call only swaps the plugin host.
    """
    from sas.qtgui.MainWindow import GuiManager as gui_manager_module

    register_perspectives(host)
    current = gui_manager_module.GuiManager
    if getattr(current, "_sasview_bnn_host", None) is not None:
        current._sasview_bnn_host = host
        return current

    class GuiManagerWithPlugins(current):  # type: ignore[misc, valid-type]
        """SasView's GuiManager plus the sasview-bnn integration (``self.sasview_bnn``)."""

        _sasview_bnn_host: PluginHost | None = host

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            register_perspectives(type(self)._sasview_bnn_host)
            super().__init__(*args, **kwargs)
            self.sasview_bnn = SasViewIntegration(self, type(self)._sasview_bnn_host)

    GuiManagerWithPlugins.__name__ = current.__name__
    GuiManagerWithPlugins.__qualname__ = current.__qualname__
    gui_manager_module.GuiManager = GuiManagerWithPlugins
    return GuiManagerWithPlugins


def running_integration() -> "SasViewIntegration | None":
    """The integration attached to the running SasView, if any."""
    from sas.qtgui.Utilities import ObjectLibrary

    return ObjectLibrary.getObject(INTEGRATION_OBJECT_NAME)


def switch_to_perspective(name: str) -> bool:
    """Show perspective ``name`` in the running SasView, as its Analysis menu does; False if impossible."""
    integration = running_integration()
    if integration is None:
        return False
    return integration.switch_to(name)


# -- 3. menus and 4. the batch grid ------------------------------------------------------------------


class SasViewIntegration:
    """Menu actions and batch-grid columns contributed by plugins, attached to a built ``GuiManager``."""

    def __init__(self, gui_manager: Any, host: PluginHost) -> None:
        from sas.qtgui.Utilities import ObjectLibrary

        self.gui_manager = gui_manager
        self.host = host
        self.actions: dict[str, QtGui.QAction] = {}
        self._add_menu_actions()
        communicator(gui_manager).perspectiveChangedSignal.connect(self._tick_analysis_action)
        self.grid = BatchGridColumns(gui_manager, gui_hooks.grid_columns(host), self)
        ObjectLibrary.addObject(INTEGRATION_OBJECT_NAME, self)
        log.info(
            "sasview-bnn attached: perspectives %s, menu actions %s, batch-grid columns %s",
            ", ".join(n for n, p in gui_manager.loadedPerspectives.items() if not type(p).__module__.startswith("sas.")) or "none",
            ", ".join(self.actions) or "none",
            ", ".join(h for h, _ in self.grid.columns) or "none",
        )
        for problem in host.problems:
            log.warning("sasview-bnn: %s", problem)

    # -- perspectives ---------------------------------------------------------------------------------

    def perspective(self, name: str) -> Any:
        """The loaded perspective instance called ``name`` (or None)."""
        return self.gui_manager.loadedPerspectives.get(name)

    def switch_to(self, name: str) -> bool:
        """Show perspective ``name`` and tick its Analysis action; False if SasView did not load it."""
        if name not in self.gui_manager.loadedPerspectives:
            log.warning("sasview-bnn: the %s perspective is not loaded", name)
            return False
        current = self.gui_manager.perspective()
        if current is None or current.name != name:
            self.gui_manager.perspectiveChanged(name)
            self.gui_manager.filesWidget.onAnalysisUpdate(name)
        self._tick_analysis_action(name)
        return True

    def _tick_analysis_action(self, name: str) -> None:
        for label, action in self.actions.items():
            if action.isCheckable():
                action.setChecked(label == name)

    # -- menus ------------------------------------------------------------------------------------------

    def _menu(self, path: str) -> QtWidgets.QMenu:
        workspace = self.gui_manager._workspace
        parts = [p.strip() for p in path.split("/") if p.strip()] or ["Analysis"]
        if parts[0] == "Analysis":
            menu = workspace.menuAnalysis
        else:
            menu = next((a.menu() for a in workspace.menubar.actions() if a.menu() and a.text().replace("&", "") == parts[0]), None)
            if menu is None:
                menu = workspace.menubar.addMenu(parts[0])
        for part in parts[1:]:
            sub = next((a.menu() for a in menu.actions() if a.menu() and a.text().replace("&", "") == part), None)
            menu = sub if sub is not None else menu.addMenu(part)
        return menu

    def _add_menu_actions(self) -> None:
        for contribution in gui_hooks.menu_actions(self.host):
            try:
                path, label, callback = contribution
            except (TypeError, ValueError):
                self.host.problems.append(f"a menu action {contribution!r} is not (menu_path, label, callback); ignored")
                continue
            menu = self._menu(str(path))
            action = QtGui.QAction(str(label), menu)
            action.setObjectName(f"sasview_bnn_action_{label}")
            # Like SasView's own Analysis entries: checkable when it names a perspective.
            action.setCheckable(str(label) in self.gui_manager.loadedPerspectives)
            action.triggered.connect(lambda _checked=False, cb=callback, text=str(label): self._run_action(text, cb))
            menu.addAction(action)
            self.actions[str(label)] = action

    def selected_data(self) -> list[Any]:
        """The Data1D/Data2D objects checked in the Data Explorer."""
        import sas.qtgui.Utilities.GuiUtils as GuiUtils

        return [GuiUtils.dataFromItem(item) for item in self.gui_manager.filesWidget.selectedItems()]

    def _run_action(self, label: str, callback: Callable[[list[Any]], Any]) -> None:
        try:
            callback(self.selected_data())
        except Exception as err:  # a plugin's bug must not take SasView down
            log.warning("sasview-bnn: the menu action %r failed: %s: %s", label, type(err).__name__, err)
        action = self.actions.get(label)
        current = self.gui_manager.perspective()
        if action is not None and action.isCheckable():
            action.setChecked(current is not None and current.name == label)


class BatchGridColumns(QtCore.QObject):
    """Adds the plugins' columns to every batch-fit page of SasView's grid window and a "Classify with BNN" entry.

    Cells are filled by classifying each fitted dataset with the BNN
    perspective's classification service (off the GUI thread); each column's
    function turns the :class:`ClassificationResult` into the cell's text.
    """

    #: Emitted with the grid table once its BNN cells are all filled (or failed).
    columns_filled = QtCore.Signal(object)

    def __init__(self, gui_manager: Any, columns: list[Any], integration: SasViewIntegration) -> None:
        super().__init__()
        self.gui_manager = gui_manager
        self.integration = integration
        self.columns: list[tuple[str, Callable[[ClassificationResult], str]]] = []
        for column in columns:
            try:
                header, function = column
            except (TypeError, ValueError):
                integration.host.problems.append(f"a grid column {column!r} is not (header, function); ignored")
                continue
            self.columns.append((str(header), function))
        self.grid = gui_manager.grid_window
        #: For each grid table, the fitted data object of each row.
        self.row_data: dict[Any, list[Any]] = {}
        self._own_service = None
        communicator(gui_manager).sendDataToGridSignal.connect(self.on_batch_results)
        self._replace_context_menu()

    # -- the classification service ---------------------------------------------------------------

    def service(self) -> Any:
        """The BNN perspective's service (so Preferences apply), or an own one if it is not loaded."""

        perspective = self.integration.perspective(PERSPECTIVE_NAME)
        service = getattr(perspective, "service", None)
        if isinstance(service, ClassificationService):
            return service
        if self._own_service is None:
            self._own_service = ClassificationService(plugin_host=self.integration.host)
            # SasView's quit does not end Qt's event loop (no aboutToQuit): stop the jobs on its closeSignal.
            communicator(self.gui_manager).closeSignal.connect(self._own_service.shutdown)
        return self._own_service

    # -- columns -----------------------------------------------------------------------------------

    def on_batch_results(self, results: list) -> None:
        """After SasView filled a new page from ``results``, append the columns and classify its rows."""
        if not self.columns:
            return
        try:
            rows = [row for row in results if not isinstance(row, str)]
            table = self.grid.tables[-1]
            data = [getattr(getattr(row[0], "data", None), "sas_data", None) for row in rows]
            if table.rowCount() != len(data):
                log.warning("sasview-bnn: the batch grid has %d rows for %d fits; BNN columns skipped", table.rowCount(), len(data))
                return
            self.add_columns(table, data)
        except Exception as err:  # SasView's grid must keep working whatever happens here
            log.warning("sasview-bnn: the BNN columns could not be added: %s: %s", type(err).__name__, err)

    def add_columns(self, table: QtWidgets.QTableWidget, data: list[Any]) -> None:
        """Append one column per contribution to ``table`` (rows = ``data``) and classify the rows."""
        self.row_data[table] = list(data)
        first = table.columnCount()
        for offset, (header, _) in enumerate(self.columns):
            table.insertColumn(first + offset)
            table.setHorizontalHeaderItem(first + offset, QtWidgets.QTableWidgetItem(header))
            for row in range(table.rowCount()):
                table.setItem(row, first + offset, QtWidgets.QTableWidgetItem(PENDING_TEXT))
        curves = [curve_from_sasview_data(d, getattr(d, "name", "") or f"row {i + 1}") for i, d in enumerate(data)]

        # The grid page may be closed while its rows are classified: then the results have nowhere to go.
        def on_chunk(start: int, results: list[ClassificationResult]) -> None:
            if not shiboken6.isValid(table):
                return
            for i, result in enumerate(results):
                self._fill_row(table, first, start + i, result)

        def on_failed(message: str) -> None:
            if not shiboken6.isValid(table):
                return
            failed = ClassificationResult.error("", "", message)
            for row in range(table.rowCount()):
                item = table.item(row, first)
                if item is not None and item.text() == PENDING_TEXT:
                    self._fill_row(table, first, row, failed)

        def on_finished() -> None:
            if not shiboken6.isValid(table):
                self.row_data.pop(table, None)
                return
            table.resizeColumnsToContents()
            self.columns_filled.emit(table)

        self.service().submit(curves, on_chunk=on_chunk, on_failed=on_failed, on_finished=on_finished)

    def _fill_row(self, table: QtWidgets.QTableWidget, first: int, row: int, result: ClassificationResult) -> None:
        for offset, (header, function) in enumerate(self.columns):
            try:
                text = str(function(result))
            except Exception as err:
                text = f"column failed: {type(err).__name__}"
                log.warning("sasview-bnn: the grid column %r failed: %s", header, err)
            item = QtWidgets.QTableWidgetItem(text)
            item.setToolTip(result.message)
            if result.ok and result.is_novel:
                item.setBackground(QtGui.QBrush(QtGui.QColor("#ef9a9a")))
            table.setItem(row, first + offset, item)

    # -- right-click menu ---------------------------------------------------------------------------

    def _replace_context_menu(self) -> None:
        grid = self.grid
        try:
            grid.tblParams.customContextMenuRequested.disconnect(grid.showContextMenu)
        except (RuntimeError, TypeError):
            pass
        # New pages connect ``grid.showContextMenu`` when created (addTabPage): shadow it on the instance.
        grid.showContextMenu = self.show_context_menu
        grid.tblParams.customContextMenuRequested.connect(self.show_context_menu)

    def context_menu(self) -> QtWidgets.QMenu | None:
        """SasView's grid menu plus "Classify with BNN"; None when no row is selected."""
        table = self.grid.currentTable()
        rows = sorted({index.row() for index in table.selectionModel().selectedRows()})
        if not rows:
            return None
        menu = QtWidgets.QMenu(self.grid)
        plot = menu.addAction(PLOT_ACTION_TEXT)
        plot.triggered.connect(self.grid.onPlot)
        classify = menu.addAction(CLASSIFY_ACTION_TEXT)
        classify.triggered.connect(lambda _checked=False: self.classify_selected())
        classify.setEnabled(table in self.row_data)
        return menu

    def show_context_menu(self, position: QtCore.QPoint) -> None:
        menu = self.context_menu()
        if menu is not None:
            menu.exec(self.grid.currentTable().viewport().mapToGlobal(position))

    def classify_selected(self) -> int:
        """Send the selected rows' data to the BNN perspective and show it; returns the number sent."""
        table = self.grid.currentTable()
        data = self.row_data.get(table, [])
        rows = sorted({index.row() for index in table.selectionModel().selectedRows()})
        chosen = [data[r] for r in rows if 0 <= r < len(data) and data[r] is not None]
        perspective = self.integration.perspective(PERSPECTIVE_NAME)
        if not chosen or perspective is None:
            return 0
        self.integration.switch_to(PERSPECTIVE_NAME)
        perspective.classify_data(chosen)
        return len(chosen)
