"""End to end: the real SasView main window with the sasview-bnn integration, under Xvfb with Mesa.

The window needs a real X display (SasView 6.1's Shape2SAS 3D viewer crashes
with Qt's offscreen platform), and one process can hold only one
QApplication, so the test runs this file as a driver in a subprocess under
``xvfb-run -a`` (or on ``$DISPLAY`` when one is set). The driver goes through
SasView's own code paths: loading example files with the Data Explorer,
sending them to the "BNN Anomaly" perspective from its combo, switching
perspectives with the Analysis menu, a real batch fit of two datasets in the
Fitting perspective, the batch grid's "BNN anomaly" column, saving the grid,
the grid's "Classify with BNN" right-click entry and SasView's report. It
writes what it saw to a JSON file, which the test checks against the runtime
classifying the same files directly.

Run the driver by hand to refresh the documentation screenshot::

    xvfb-run -a -s "-screen 0 1600x1000x24" python tests/test_gui_sasview_e2e.py OUT.json docs/sasview_bnn_perspective.png MODEL.onnx
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLE_FILES = ("apoferritin.txt", "Ludox_silica.xml", "P123_D2O_10_percent.xml", "P123_D2O_30_percent.xml")
#: The two datasets batch-fitted together (same q grid, as SasView's batch fit requires).
BATCH_FIT_TAG = "P123"
SCREEN = "-screen 0 1600x1000x24"
DRIVER_TIMEOUT_S = 180


def _example_dir() -> Path:
    import sasdata

    return Path(sasdata.__file__).parent / "example_data" / "1d_data"


# ---------------------------------------------------------------------------------------------------
# The driver (runs in the subprocess)
# ---------------------------------------------------------------------------------------------------


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
    example = _example_dir()
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


# ---------------------------------------------------------------------------------------------------
# The test (runs in pytest)
# ---------------------------------------------------------------------------------------------------


def _needs() -> None:
    pytest.importorskip("PySide6")
    pytest.importorskip("sas.qtgui.MainWindow.MainWindow")
    pytest.importorskip("onnx")  # the test model is written with onnx
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run") is None:
        pytest.skip("needs an X display: install xvfb (xvfb-run) and Mesa (libgl1-mesa-dri)")


@pytest.mark.gui
@pytest.mark.slow
def test_real_sasview_with_the_plugin(tmp_path: Path) -> None:
    _needs()
    import numpy as np
    from onnx_test_models import write_model
    from sasdata.dataloader.loader import Loader

    from sasview_bnn_plugin.model.classifier import BNNClassifier
    from sasview_bnn_plugin.gui.summary import grid_cell

    model = write_model(tmp_path / "model.onnx", n_samples=4, seed=3)
    report_path = tmp_path / "report.json"
    screenshot = tmp_path / "sasview_bnn_perspective.png"
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), SASVIEW_BNN_SETTINGS=str(home / "bnn.json"))
    env.pop("QT_QPA_PLATFORM", None)
    command = [sys.executable, __file__, str(report_path), str(screenshot), str(model)]
    if not os.environ.get("DISPLAY"):
        command = ["xvfb-run", "-a", "-s", SCREEN] + command
    started = time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S, cwd=Path(__file__).parent)
    elapsed = time.perf_counter() - started
    assert run.returncode == 0 and report_path.is_file(), f"driver failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    seen = json.loads(report_path.read_text())

    # Registered before the window was built: SasView loaded it and lists it in the Data Explorer.
    assert "BNN Anomaly" in seen["registered_perspectives"]
    assert "BNN Anomaly" in seen["loaded_perspectives"] and "BNN Anomaly" in seen["combo"]
    assert seen["after_combo"] == {"current": "BNN Anomaly", "checked": ["BNN Anomaly"]}

    # Every loaded dataset got a row with the same verdict as the runtime gives on the same file.
    direct = BNNClassifier(model)
    loaded = [d for name in EXAMPLE_FILES for d in Loader().load(str(_example_dir() / name))]
    expected = direct.classify(loaded)
    assert seen["bnn_idle"] is True
    assert len(seen["bnn_rows"]) == len(expected) == 4
    for row, result in zip(seen["bnn_rows"], expected):
        assert row["status"] == "ok" and row["label"] == result.label
        assert np.isclose(row["confidence"], result.confidence, atol=1e-6)
        assert row["cells"][1] == result.label
    assert seen["summary_line"].startswith(seen["bnn_rows"][0]["name"] + ": " + expected[0].label + ", ")

    # Analysis menu: checkable like the built-ins, switches and ticks the right entry.
    assert seen["bnn_action_checkable"] is True
    assert seen["after_fitting_action"] == {"current": "Fitting", "checked": ["Fitting"]}
    assert seen["after_bnn_action"] == {"current": "BNN Anomaly", "checked": ["BNN Anomaly"], "combo": "BNN Anomaly"}

    # The batch fit filled SasView's grid; the "BNN anomaly" column holds each fitted dataset's verdict.
    assert seen["batch_page"] is True and seen["fit_done"] is True and seen["grid_filled"] is True
    assert seen["grid_headers"][:2] == ["Chi2", "Data"] and seen["grid_headers"][-1] == "BNN anomaly"
    fitted = [r for r in expected if BATCH_FIT_TAG in r.dataset or BATCH_FIT_TAG in r.file]
    assert [row["BNN anomaly"] for row in seen["grid_rows"]] == [grid_cell(r) for r in fitted]
    csv_lines = seen["grid_csv"].strip().splitlines()
    assert csv_lines[0].rstrip(",").split(",")[-1] == "BNN anomaly"
    assert [line.rstrip(",").split(",")[-1] for line in csv_lines[1:]] == [grid_cell(r) for r in fitted]

    # Right-click "Classify with BNN" sends the selected rows' data to the perspective.
    assert seen["grid_menu"] == ["Plot selected fits.", "Classify with BNN"]
    assert seen["after_grid_classify"] == {"current": "BNN Anomaly", "checked": ["BNN Anomaly"]}
    assert len(seen["bnn_rows_after_grid"]) == 2 and all(BATCH_FIT_TAG in name for name in seen["bnn_rows_after_grid"])

    # SasView's report: a figure per dataset (4 sent + 2 from the grid), the trend over them, and the verdicts.
    assert seen["report_html_images"] == 6 + 1
    assert all(r.label in seen["report_html"] for r in expected)
    assert screenshot.is_file() and screenshot.stat().st_size > 10000
    print(f"SasView end-to-end: {elapsed:.1f} s (window {seen['window_build_s']:.1f} s, batch fit {seen['fit_s']:.2f} s)")


@pytest.mark.gui
@pytest.mark.slow
def test_launcher_starts_sasview_with_the_plugin_attached(tmp_path: Path) -> None:
    """``python -m sasview_bnn_plugin.gui`` runs SasView's own start-up and the integration attaches."""
    _needs()
    import signal

    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_STATE_HOME=str(home / ".state"))
    env.pop("QT_QPA_PLATFORM", None)
    command = [sys.executable, "-m", "sasview_bnn_plugin.gui", "--settings", str(home / "bnn.json")]
    if not os.environ.get("DISPLAY"):
        command = ["xvfb-run", "-a", "-s", SCREEN] + command
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    attached = ""
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None and not attached:
            time.sleep(0.5)
            for log_file in home.rglob("sasview.log"):
                lines = [line for line in log_file.read_text(errors="replace").splitlines() if "sasview-bnn attached" in line]
                attached = lines[0] if lines else ""
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # our own process group: xvfb-run, Xvfb and SasView
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert attached, f"SasView did not log the integration:\n{output[-3000:]}"
    assert "perspectives BNN Anomaly" in attached and "menu actions BNN Anomaly" in attached
    assert "batch-grid columns BNN anomaly" in attached
    assert "Traceback" not in output


if __name__ == "__main__":
    run_driver(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
