"""Driver of ``tests/test_gui_sasview_e2e.py``: the real SasView main window with the sasview-bnn integration.

Runs in a subprocess (one process holds one QApplication; SasView needs a real X display, under
``xvfb-run -a``): loads example files with the Data Explorer, sends them to the "BNN Anomaly"
perspective, switches perspectives with the Analysis menu, batch-fits two datasets, uses the batch
grid's "BNN anomaly" column and its "Classify with BNN" entry and SasView's report, and writes what it
saw to a JSON file. Run it by hand to refresh the documentation screenshot::

    xvfb-run -a -s "-screen 0 1600x1000x24" python tests/gui_drivers/sasview_e2e.py OUT.json docs/sasview_bnn_perspective.png MODEL.onnx
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

EXAMPLE_FILES = ("apoferritin.txt", "Ludox_silica.xml", "P123_D2O_10_percent.xml", "P123_D2O_30_percent.xml")
#: The two datasets batch-fitted together (same q grid, as SasView's batch fit requires).
BATCH_FIT_TAG = "P123"
#: The X screen the driver runs on.
SCREEN = "-screen 0 1600x1000x24"


def example_dir() -> Path:
    """SasView's example data (shipped inside the sasdata wheel)."""
    import sasdata

    return Path(sasdata.__file__).parent / "example_data" / "1d_data"


def _wait_for(signal, timeout_ms: int) -> bool:
    """Run a local event loop until ``signal`` fires; False on timeout.

    (A local QEventLoop rather than processEvents in a Python loop: cheaper,
    and PySide6 6.12 on Python 3.11 loses a reference to None on every
    processEvents call, which crashes long loops.)
    """
    from PySide6 import QtCore

    loop = QtCore.QEventLoop()
    fired = []

    def quit_fired(*_args) -> None:
        fired.append(True)
        loop.quit()

    signal.connect(quit_fired)
    QtCore.QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()
    signal.disconnect(quit_fired)
    return bool(fired)


def _checked_analysis_actions(gui_manager) -> list[str]:
    return [a.text() for a in gui_manager._workspace.menuAnalysis.actions() if a.isChecked()]


def run_driver(report_path: Path, screenshot_path: Path, model_path: Path) -> None:
    """Drive SasView and write what happened to ``report_path`` (JSON)."""
    started = time.perf_counter()
    report: dict = {"steps": []}

    from sas.system import lib

    lib.setup_sasmodels()
    lib.setup_qt_env()
    from sas.system import config

    config.override_with_defaults()  # the user's (here: the temporary HOME's) settings play no part
    config.LAST_WHATS_NEW_HIDDEN_VERSION = "999.999.999"

    from PySide6 import QtCore, QtWidgets

    app = QtWidgets.QApplication([])

    import sas.qtgui.Perspectives as Perspectives
    from sas.qtgui.MainWindow.MainWindow import MainSasViewWindow

    from sasview_bnn_plugin.gui import sasview_hooks
    from sasview_bnn_plugin.gui.launch import build_gui_plugin_host
    from sasview_bnn_plugin.gui.settings import GuiSettings

    sasview_hooks.install(build_gui_plugin_host())
    report["registered_perspectives"] = sorted(Perspectives.PERSPECTIVES)

    window = MainSasViewWindow()
    window.resize(1580, 980)
    window.show()
    gui = window.guiManager
    sys.excepthook = sys.__excepthook__  # SasView routes exceptions to its log window; the driver must fail loudly
    report["window_build_s"] = time.perf_counter() - started
    files = gui.filesWidget
    report["combo"] = [files.cbFitting.itemText(i) for i in range(files.cbFitting.count())]
    report["loaded_perspectives"] = list(gui.loadedPerspectives)
    bnn = gui.loadedPerspectives["BNN Anomaly"]
    # The user picks the model in Preferences > BNN Anomaly; here the same settings object is applied.
    bnn.service.apply_settings(GuiSettings(model=str(model_path)), save=False)

    # Load real example files through the Data Explorer's loader (the threaded path calls these two).
    example = example_dir()
    output = files.readData([str(example / name) for name in EXAMPLE_FILES])
    files.loadComplete(output)
    report["data_explorer_items"] = [files.model.item(r).text() for r in range(files.model.rowCount())]

    # Pick the perspective in the Data Explorer combo and press "Send data".
    files.cbFitting.setCurrentIndex(files.cbFitting.findText("BNN Anomaly"))
    report["after_combo"] = {"current": gui.perspective().name, "checked": _checked_analysis_actions(gui)}
    files.sendData()
    report["bnn_idle"] = bnn.wait_until_idle(30000)
    report["bnn_rows"] = [
        {
            "name": e.name,
            "status": e.result.status if e.result else None,
            "label": e.result.label if e.result else None,
            "confidence": e.result.confidence if e.result else None,
            "is_novel": e.result.is_novel if e.result else None,
            "cells": [bnn.table_model.data(bnn.table_model.index(row, c)) for c in range(bnn.table_model.columnCount())],
        }
        for row, e in enumerate(bnn.table_model.entries)
    ]
    bnn.tableView.selectRow(0)
    app.processEvents()
    window.grab().save(str(screenshot_path))
    report["summary_line"] = bnn.lblSummary.text()

    # Switch perspectives with the Analysis menu.
    gui._workspace.actionFitting.trigger()
    report["after_fitting_action"] = {"current": gui.perspective().name, "checked": _checked_analysis_actions(gui)}
    bnn_action = next(a for a in gui._workspace.menuAnalysis.actions() if a.text() == "BNN Anomaly")
    report["bnn_action_checkable"] = bnn_action.isCheckable()
    bnn_action.trigger()
    report["after_bnn_action"] = {
        "current": gui.perspective().name,
        "checked": _checked_analysis_actions(gui),
        "combo": files.cbFitting.currentText(),
    }

    # A real batch fit of two datasets in the Fitting perspective.
    gui._workspace.actionFitting.trigger()
    for row in range(files.model.rowCount()):
        item = files.model.item(row)
        item.setCheckState(QtCore.Qt.Checked if BATCH_FIT_TAG in item.text() else QtCore.Qt.Unchecked)
    files.chkBatch.setChecked(True)
    files.sendData()
    fitting = gui.perspective()
    page = fitting.currentFittingWidget
    report["batch_page"] = page.is_batch_fitting
    page.cbCategory.setCurrentIndex(page.cbCategory.findText("Sphere"))
    page.cbModel.setCurrentIndex(page.cbModel.findText("sphere"))
    for name in ("scale", "radius"):
        page._model_model.findItems(name)[0].setCheckState(QtCore.Qt.Checked)
    fit_started = time.perf_counter()
    page.onFit()
    report["fit_done"] = _wait_for(sasview_hooks.communicator(gui).sendDataToGridSignal, 60000)
    report["fit_s"] = time.perf_counter() - fit_started
    grid = gui.grid_window
    table = grid.tables[-1]

    def grid_filled() -> bool:
        last = table.columnCount() - 1
        return all(table.item(r, last) is not None and table.item(r, last).text() != sasview_hooks.PENDING_TEXT for r in range(table.rowCount()))

    # The cells may be filled already (the classification is quick); otherwise wait for them.
    report["grid_filled"] = grid_filled() or (_wait_for(gui.sasview_bnn.grid.columns_filled, 30000) and grid_filled())
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    report["grid_headers"] = headers
    report["grid_rows"] = [
        {headers[c]: table.item(r, c).text() for c in range(table.columnCount())} for r in range(table.rowCount())
    ]
    gui.grid_subwindow.setVisible(True)
    gui.grid_subwindow.resize(1200, 320)
    table.scrollToItem(table.item(0, table.columnCount() - 1))
    app.processEvents()
    window.grab().save(str(screenshot_path.with_name(screenshot_path.stem + "_grid.png")))

    # "Save" of the grid window (its dialog-free part): the BNN column is written like any other.
    grid_csv = report_path.with_name("grid.csv")
    with open(grid_csv, "w") as handle:
        grid.writeBatchToFile(data=grid.dataFromTable(table), tmpfile=handle, details="")
    report["grid_csv"] = grid_csv.read_text()

    # Right-click "Classify with BNN" on the grid's rows.
    table.selectAll()
    menu = gui.sasview_bnn.grid.context_menu()
    report["grid_menu"] = [a.text() for a in menu.actions()]
    rows_before = len(bnn.table_model.entries)
    next(a for a in menu.actions() if a.text() == "Classify with BNN").trigger()
    report["after_grid_classify"] = {"current": gui.perspective().name, "checked": _checked_analysis_actions(gui)}
    bnn.wait_until_idle(30000)
    report["bnn_rows_after_grid"] = [e.name for e in bnn.table_model.entries[rows_before:]]

    # SasView's report of the perspective (File > Report).
    report_data = bnn.getReport()
    report["report_html_images"] = report_data.html.count("<img")
    report["report_html"] = report_data.html[:200000]
    report["total_s"] = time.perf_counter() - started
    report_path.write_text(json.dumps(report, indent=1, default=str))
    # Leave without SasView's exit dialog; the test only needs the report.
    os._exit(0)


if __name__ == "__main__":
    run_driver(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
