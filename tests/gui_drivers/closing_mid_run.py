"""Driver of ``tests/test_gui_robustness.py``: 500 curves sent to the "BNN Anomaly" perspective, then the application goes away.

Quitting needs its own QApplication, so the tests run this script in a subprocess: offscreen for a plain Qt
application and a script, under ``xvfb-run`` for the real SasView main window (SasView 6.1's Shape2SAS viewer
needs a real X display)::

    python tests/gui_drivers/closing_mid_run.py sasview-quit REPORT.json MODEL.onnx DATA_DIR   # under xvfb-run
    python tests/gui_drivers/closing_mid_run.py app-quit|script-exit REPORT.json MODEL.onnx    # offscreen

The helpers above the drivers (the replicated example data, the curve-counting plugin, the service) are
shared with the in-process tests of ``tests/test_gui_robustness.py``.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import threading
import time
from pathlib import Path

# Qt's modules first: matplotlib's Qt backend, which SasView imports, picks the binding already loaded.
from PySide6 import QtCore, QtGui, QtWidgets

from sasview_bnn_plugin import hookimpl

N_CURVES = 500
#: Curves per chunk: the worker checks for cancellation between chunks.
CHUNK = 4
EXAMPLE_FILES = ("apoferritin.txt", "Ludox_silica.xml", "P123_D2O_10_percent.xml", "P123_D2O_30_percent.xml")
#: Copied 125 times each into SasView's Data Explorer (ASCII files: its loader reads 500 of them in seconds).
SASVIEW_FILES = ("apoferritin.txt", "conalbumin.txt", "PolySpheres.txt", "100nmPinholeSphere.txt")


def example_dir() -> Path:
    import sasdata

    return Path(sasdata.__file__).parent / "example_data" / "1d_data"


#: Seconds the counting plugin spends on each curve: the batched classifier prepares and classifies
#: 500 curves in well under a second, so without a pace the job can end before the quit it is meant to
#: outlive; 2 ms a curve keeps the run going for about a second, as on a slow machine or a big batch.
PACE_S = 0.002


class CurveCounter:
    """A real plugin whose raw-curve step counts the curves the worker prepares (thread-safe), at PACE_S each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    @hookimpl
    def sasview_bnn_prepare_raw_curve(self, curve):
        time.sleep(PACE_S)
        with self._lock:
            self.count += 1
        return None


def replicated_gui_data(n: int = N_CURVES) -> list:
    """``n`` SasView GUI Data1D objects: the example files' datasets, deep-copied in turn, each with its own name and id."""
    from sasdata.dataloader.loader import Loader

    from sas.qtgui.MainWindow.DataManager import DataManager

    manager = DataManager()
    loaded = [(d, name) for name in EXAMPLE_FILES for d in Loader().load(str(example_dir() / name))]
    data = []
    for i in range(n):
        original, name = loaded[i % len(loaded)]
        gui_data = manager.create_gui_data(copy.deepcopy(original), str(example_dir() / name))
        gui_data.name = f"{name} #{i + 1}"
        data.append(gui_data)
    return data


def explorer_items(datasets: list) -> list[QtGui.QStandardItem]:
    """Items shaped like the Data Explorer's: checkbox item with the data object as child 0."""
    import sas.qtgui.Utilities.GuiUtils as GuiUtils

    items = []
    for data in datasets:
        item = GuiUtils.HashableStandardItem()
        item.setText(data.name)
        child = GuiUtils.HashableStandardItem()
        child.setData(data)
        item.setChild(0, child)
        items.append(item)
    return items


def make_service(settings_path: Path, model: Path, *plugins, parent=None):
    from sasview_bnn_plugin.gui.classification_service import ClassificationService
    from sasview_bnn_plugin.gui.settings import GuiSettings
    from sasview_bnn_plugin.plugins.host import build_plugin_host

    return ClassificationService(
        GuiSettings(model=str(model), path=settings_path),
        build_plugin_host(load_entry_points=False, extra_plugins=list(plugins)),
        parent=parent,
        chunk_size=CHUNK,
    )


def ok_rows(perspective) -> int:
    return sum(1 for e in perspective.table_model.entries if e.result is not None and e.result.ok)


def on_first_result(perspective, action) -> None:
    """Run ``action`` from the event loop (like a click) once the first result has reached the table."""
    fired = []

    def check(*_args) -> None:
        if not fired and ok_rows(perspective) > 0:
            fired.append(True)
            QtCore.QTimer.singleShot(0, action)

    perspective.table_model.dataChanged.connect(check)


# ---------------------------------------------------------------------------------------------------
# Drivers
# ---------------------------------------------------------------------------------------------------


def _job_state(perspective, counter: CurveCounter | None = None) -> dict:
    jobs = perspective.service.jobs
    return {
        "busy": perspective.busy,
        "service_jobs": len(jobs),
        "active_threads": perspective.service.pool.activeThreadCount(),
        "ok_rows": ok_rows(perspective),
        "prepared": counter.count if counter is not None else None,
    }


def run_plain_qt_driver(mode: str, report_path: Path, model_path: Path) -> None:
    """A plain Qt application with the perspective: 500 curves, then at the first result either
    ``app-quit``: ``QApplication.quit()`` ends ``app.exec()`` (Qt emits aboutToQuit), or
    ``script-exit``: the script's own event loop ends and the script returns with the worker busy
    (nothing is closed or quit: only the interpreter's exit is left to stop it).
    The state at the quit, after the loop and at the very end of the interpreter's exit goes to ``report_path``."""
    import atexit

    report: dict = {"mode": mode}
    state: dict = {}

    def write_exit_state() -> None:  # registered first, so it runs after the service's own exit hook
        job = state.get("job")
        report["at_exit"] = {"job_done": job.done, "job_cancelled": job.cancelled, "prepared": state["counter"].count}
        report_path.write_text(json.dumps(report))

    atexit.register(write_exit_state)
    app = QtWidgets.QApplication([])
    from sasview_bnn_plugin.gui.perspective import BNNAnomalyPerspective

    counter = state["counter"] = CurveCounter()
    widget = BNNAnomalyPerspective(None, make_service(report_path.with_name("bnn.json"), model_path, counter))
    # In an MDI area, as SasView shows it: a top-level perspective refuses to close unless allowed
    # (like SasView's own), and Qt 6 cancels quit() when a top-level window refuses.
    area = QtWidgets.QMdiArea()
    area.addSubWindow(widget)
    area.show()
    loop = QtCore.QEventLoop()

    def act() -> None:
        report["at_quit"] = _job_state(widget, counter)
        state["job"] = widget.service.jobs[0]
        report["quit_at"] = time.time()
        (app if mode == "app-quit" else loop).quit()

    on_first_result(widget, act)
    widget.classify_data(replicated_gui_data())
    (app if mode == "app-quit" else loop).exec()
    report["after_loop"] = _job_state(widget, counter)
    report_path.write_text(json.dumps(report))


def run_sasview_quit_driver(report_path: Path, model_path: Path, data_dir: Path) -> None:
    """The real SasView main window: load 500 files, send them to "BNN Anomaly", close the window at the
    first result, answer SasView's exit dialog, and leave the way SasView does (reactor stops, Python exits)."""
    started = time.perf_counter()
    from sas.system import config, lib

    lib.setup_sasmodels()
    lib.setup_qt_env()
    config.override_with_defaults()  # the (temporary) user's settings play no part
    config.LAST_WHATS_NEW_HIDDEN_VERSION = "999.999.999"

    app = QtWidgets.QApplication([])
    # As SasView's run_sasview: Twisted's Qt reactor runs the event loop and GuiManager.quitApplication stops it.
    # (run_sasview drops a default reactor that an earlier import installed, then installs the Qt one)
    sys.modules.pop("twisted.internet.reactor", None)
    from sas.qtgui.Utilities import ReactorCore

    ReactorCore.install()
    from twisted.internet import reactor

    from sas.qtgui.MainWindow.MainWindow import MainSasViewWindow
    from sasview_bnn_plugin.gui import sasview_hooks
    from sasview_bnn_plugin.gui.launch import build_gui_plugin_host
    from sasview_bnn_plugin.gui.settings import GuiSettings

    sasview_hooks.install(build_gui_plugin_host())
    window = MainSasViewWindow()
    window.show()
    sys.excepthook = sys.__excepthook__  # SasView routes exceptions to its log window; here they must reach stderr
    gui = window.guiManager
    bnn = gui.loadedPerspectives["BNN Anomaly"]
    bnn.service.apply_settings(GuiSettings(model=str(model_path)), save=False)
    bnn.service.chunk_size = CHUNK
    bnn.service.plugin_host.manager.register(CurveCounter(), name="pace")  # the run outlives the close (PACE_S)
    report: dict = {"window_build_s": time.perf_counter() - started, "exit_dialogs": []}

    paths = []
    for i in range(N_CURVES):
        source = example_dir() / SASVIEW_FILES[i % len(SASVIEW_FILES)]
        path = data_dir / f"{source.stem}_{i + 1:03d}{source.suffix}"
        shutil.copyfile(source, path)
        paths.append(str(path))

    def answer_exit_dialog() -> None:
        dialog = QtWidgets.QApplication.activeModalWidget()
        if isinstance(dialog, QtWidgets.QDialog):
            report["exit_dialogs"].append(type(dialog).__name__)
            dialog.accept()

    def quit_mid_run() -> None:
        report["at_quit"] = _job_state(bnn)
        job = bnn.service.jobs[0] if bnn.service.jobs else None
        report["job_curves_at_quit"] = job.curves_done if job else None
        answering = QtCore.QTimer(app)
        answering.timeout.connect(answer_exit_dialog)
        answering.start(50)
        report["quit_at"] = time.time()
        started_close = time.perf_counter()
        window.close()  # MainSasViewWindow.closeEvent -> GuiManager.quitApplication -> exit dialog
        report["close_s"] = time.perf_counter() - started_close
        answering.stop()
        report["window_visible"] = window.isVisible()
        report["after_close"] = _job_state(bnn)
        report["job"] = {"cancelled": job.cancelled, "done": job.done, "curves_done": job.curves_done} if job else None
        report_path.write_text(json.dumps(report))

    def drive() -> None:
        files = gui.filesWidget
        loading = time.perf_counter()
        files.loadComplete(files.readData(paths))
        report["load_s"] = time.perf_counter() - loading
        report["data_explorer_rows"] = files.model.rowCount()
        files.cbFitting.setCurrentIndex(files.cbFitting.findText("BNN Anomaly"))
        on_first_result(bnn, quit_mid_run)
        files.sendData()
        report["rows_sent"] = len(bnn.table_model.entries)

    QtCore.QTimer.singleShot(0, drive)
    reactor.run()  # returns once quitApplication stopped the reactor
    report["reactor_returned_s"] = time.perf_counter() - started
    report["after_reactor"] = _job_state(bnn)
    report_path.write_text(json.dumps(report))
    # Return normally: the interpreter tears down with the window, the perspective and its service alive.


if __name__ == "__main__":
    _mode = sys.argv[1]
    if _mode == "sasview-quit":
        run_sasview_quit_driver(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        run_plain_qt_driver(_mode, Path(sys.argv[2]), Path(sys.argv[3]))
