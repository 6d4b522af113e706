"""The "BNN Anomaly" SasView perspective.

Datasets sent from the Data Explorer (one or many: batch is allowed) appear as
rows of a table with their verdict: label, confidence, anomaly probability,
a novelty flag coloured to be read at a glance, the anomalies present and the
classes still plausible (conformal prediction set) for a model with those
optional outputs, and the fraction of the model's q-range the data cover. Selecting a row shows the curve on log-log
axes with the model's q-domain shaded, the class probabilities with their
90 % posterior intervals, and one plain-language line ("aggregation, 97 % ±
2 %"); with *Where in q* ticked, the q-range that drove the verdict is shaded
on the curve (occlusion, :mod:`sasview_bnn_plugin.model.explain`, computed for the
selected row only). *Trend…* draws the table's rows as a series (class and
anomalies-present probabilities with their posterior bands, the first anomaly
frame marked; :func:`sasview_bnn_plugin.io.plotting.draw_trend`), also put in
the report. Classification runs on a worker thread (see
:mod:`.classification_service`); the table fills chunk by chunk under a
progress bar. Results export to CSV with the command line's columns
(:data:`sasview_bnn_plugin.core.result.CSV_COLUMNS`), and SasView's report
(File > Report) holds the table and the figures.

Bad input never raises into SasView: 2D data, too few points, a q-range
outside the model's domain or a missing/damaged model become messages in
the table and in the perspective's message line.

Closing never waits for a whole batch: closing the perspective, SasView's
quit (its ``closeSignal``), the Qt application quitting or the widget being
deleted stop the classification after the chunk in progress (bounded wait,
see :meth:`ClassificationService.shutdown`) and no result is delivered
afterwards.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Iterable

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtGui import QStandardItem

import sas.qtgui.Utilities.GuiUtils as GuiUtils
from sas.qtgui.Perspectives.perspective import Perspective
from sas.qtgui.Utilities.Reports.reportdata import ReportData
from sas.qtgui.Utilities.Reports.reports import ReportBase

from ..io.output import render_csv, write_atomically
from ..io.plotting import draw_curve, draw_probabilities, result_figure, trend_figure
from ..core.preprocessing import PreprocessingConfig
from ..core.result import ClassificationResult
from . import HELP_PAGE
from .classification_service import SHUTDOWN_TIMEOUT_MS, ClassificationService
from .preferences import BNNPreferencesWidget
from .results_table import COLUMNS, DatasetEntry, ResultsTableModel
from .sasview_hooks import PERSPECTIVE_NAME, communicator, curve_from_sasview_data
from .summary import plain_language

log = logging.getLogger(__name__)

#: Figures put in a report at most (one per dataset), to keep the report readable.
MAX_REPORT_FIGURES = 20

CANCELLED_MESSAGE = "cancelled before it was classified (press Classify again)"


def _data_name(data: Any, fallback: str = "") -> str:
    for attribute in ("name", "filename", "title"):
        value = getattr(data, attribute, None)
        if value:
            return str(value)
    return fallback or "unnamed dataset"


def _stop_service(service: ClassificationService, _destroyed: object = None) -> None:
    """Stop ``service``'s jobs when their perspective is destroyed (connected to its ``destroyed`` signal)."""
    try:
        service.shutdown()
    except RuntimeError:  # the service's Qt object went first
        pass


class BNNAnomalyPerspective(QtWidgets.QDialog, Perspective):
    """SasView perspective classifying 1D curves with a Bayesian neural network.

    Parameters
    ----------
    parent:
        SasView's ``GuiManager`` (SasView passes it); None outside SasView.
    service:
        The classification service (model, provider, threshold, worker
        threads); one is created from the saved settings when None.
    """

    name = PERSPECTIVE_NAME
    ext = "bnn"

    #: Emitted when the last running classification job has finished.
    idle = QtCore.Signal()

    @property
    def title(self) -> str:
        """Window title."""
        return "BNN Anomaly Perspective"

    def __init__(self, parent: Any = None, service: ClassificationService | None = None) -> None:
        super().__init__()
        self.gui_manager = parent
        self.service = service if service is not None else ClassificationService(parent=self)
        self._allow_close = False
        self.table_model = ResultsTableModel(self)
        self._active_jobs: list[Any] = []
        self._progress: dict[int, tuple[int, int]] = {}
        self._preferences = [BNNPreferencesWidget(self.service)]
        self._build_ui()
        self.setWindowTitle(self.title)
        self.communicate = communicator(parent)
        self.communicate.dataDeletedSignal.connect(self.removeData)
        # SasView quits without closing its perspectives (GuiManager.quitApplication emits closeSignal
        # and stops its event loop); a plain Qt application emits aboutToQuit.
        self.communicate.closeSignal.connect(self.stop_classification)
        app = QtCore.QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.stop_classification)
        # Deleted without being closed (its parent went away): stop the jobs, whose callbacks refer to
        # this widget. The slot must not be a method of the object being destroyed.
        self.destroyed.connect(functools.partial(_stop_service, self.service))
        self.service.settings_changed.connect(self._on_settings_changed)
        self._show_model_line()

    # -- layout -------------------------------------------------------------------------------------

    def _build_ui(self) -> None:
        layout = QtWidgets.QVBoxLayout(self)
        self.lblModel = QtWidgets.QLabel(self)
        self.lblModel.setWordWrap(True)
        layout.addWidget(self.lblModel)
        self.lblMessage = QtWidgets.QLabel(self)
        self.lblMessage.setWordWrap(True)
        self.lblMessage.setStyleSheet("color: #b71c1c;")
        layout.addWidget(self.lblMessage)
        self.progressBar = QtWidgets.QProgressBar(self)
        self.progressBar.setVisible(False)
        layout.addWidget(self.progressBar)

        splitter = QtWidgets.QSplitter(QtCore.Qt.Vertical, self)
        self.tableView = QtWidgets.QTableView(splitter)
        self.tableView.setModel(self.table_model)
        self.tableView.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        self.tableView.setSelectionMode(QtWidgets.QAbstractItemView.ExtendedSelection)
        self.tableView.horizontalHeader().setStretchLastSection(True)
        self.tableView.verticalHeader().setVisible(False)
        self.tableView.selectionModel().currentRowChanged.connect(lambda current, _previous: self._show_entry(current.row()))

        lower = QtWidgets.QWidget(splitter)
        lower_layout = QtWidgets.QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        self.lblSummary = QtWidgets.QLabel(lower)
        self.lblSummary.setWordWrap(True)
        font = self.lblSummary.font()
        font.setPointSizeF(font.pointSizeF() * 1.2)
        font.setBold(True)
        self.lblSummary.setFont(font)
        self.lblSummary.setSizePolicy(QtWidgets.QSizePolicy.Preferred, QtWidgets.QSizePolicy.Maximum)
        lower_layout.addWidget(self.lblSummary)
        self.figure = Figure(figsize=(9.0, 3.4))
        self.curve_axes, self.bars_axes = self.figure.subplots(1, 2)
        # Fixed margins: tight_layout on every redraw would double the drawing time.
        self.figure.subplots_adjust(left=0.08, right=0.98, bottom=0.27, top=0.9, wspace=0.28)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(260)
        lower_layout.addWidget(self.canvas)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        layout.addWidget(splitter, 1)

        buttons = QtWidgets.QHBoxLayout()
        self.cmdExport = QtWidgets.QPushButton("Export CSV…", self)
        self.cmdExport.clicked.connect(self._ask_export_csv)
        self.cmdReclassify = QtWidgets.QPushButton("Classify again", self)
        self.cmdReclassify.clicked.connect(self.reclassify_all)
        self.cmdRemove = QtWidgets.QPushButton("Remove selected", self)
        self.cmdRemove.clicked.connect(self.remove_selected)
        self.cmdCancel = QtWidgets.QPushButton("Cancel", self)
        self.cmdCancel.clicked.connect(self.cancel)
        self.cmdCancel.setEnabled(False)
        self.cmdTrend = QtWidgets.QPushButton("Trend…", self)
        self.cmdTrend.clicked.connect(self.show_trend)
        self.chkExplain = QtWidgets.QCheckBox("Where in q", self)
        self.chkExplain.setToolTip("shade the q-range that drove the selected verdict (occluding q-windows of the model input)")
        self.chkExplain.toggled.connect(lambda _checked: self._show_entry(self.tableView.currentIndex().row()))
        for button in (self.cmdExport, self.cmdReclassify, self.cmdRemove, self.cmdCancel, self.cmdTrend, self.chkExplain):
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.cmdHelp = QtWidgets.QPushButton("Help", self)  # on the right, as in SasView's own perspectives
        self.cmdHelp.clicked.connect(self.show_help)
        buttons.addWidget(self.cmdHelp)
        layout.addLayout(buttons)
        self._draw(None)
        self._update_buttons()

    def show_help(self) -> bool:
        """Open the help page (columns, uncertainty, novelty, model card) in the system's browser.

        SasView's own help viewer only shows pages of SasView's documentation tree, so the page shipped
        with this package is opened by URL. Returns whether Qt could hand it to a browser.
        """
        opened = QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(str(HELP_PAGE)))
        if not opened:
            self.lblMessage.setText(f"could not open a browser; the help page is {HELP_PAGE}")
        return bool(opened)

    def sizeHint(self) -> QtCore.QSize:  # noqa: N802 (Qt name)
        return QtCore.QSize(980, 720)

    # -- Perspective interface: data ---------------------------------------------------------------

    def setData(self, data_item: list[QStandardItem], is_batch: bool = False) -> None:  # noqa: N802
        """Receive Data Explorer items (one or many; ``is_batch`` changes nothing: every item gets a row)."""
        try:
            entries = []
            for item in data_item or []:
                data = GuiUtils.dataFromItem(item)
                name = item.text() if hasattr(item, "text") and item.text() else _data_name(data)
                entries.append(DatasetEntry(name=name, curve=curve_from_sasview_data(data, name), key=item, data=data))
            self._add_and_classify(entries)
        except Exception as err:  # SasView would log a traceback and pop up a dialog: say it here instead
            self._report_unexpected("the data could not be taken in", err)

    def classify_data(self, datasets: Iterable[Any]) -> None:
        """Add data objects directly (e.g. from the batch grid), each a SasView/sasdata Data1D."""
        try:
            entries = []
            for data in datasets:
                name = _data_name(data)
                entries.append(DatasetEntry(name=name, curve=curve_from_sasview_data(data, name), key=data, data=data))
            self._add_and_classify(entries)
        except Exception as err:
            self._report_unexpected("the data could not be taken in", err)

    def _report_unexpected(self, what: str, err: Exception) -> None:
        log.debug("%s", what, exc_info=True)
        self.lblMessage.setText(f"{what}: {type(err).__name__}: {err}")

    def removeData(self, data_list: QStandardItem | list[QStandardItem] | None = None) -> None:  # noqa: N802
        """Drop the rows of deleted Data Explorer items (connected to SasView's dataDeletedSignal)."""
        if data_list is None:
            return
        items = data_list if isinstance(data_list, (list, tuple)) else [data_list]
        rows = [row for row, entry in enumerate(self.table_model.entries) if any(entry.key is item for item in items)]
        self.table_model.remove_rows(rows)
        self._after_rows_changed()

    def allowBatch(self) -> bool:  # noqa: N802
        return True

    def allowSwap(self) -> bool:  # noqa: N802
        return False

    def isSerializable(self) -> bool:  # noqa: N802
        return False

    def updateFromParameters(self, params: dict) -> None:  # noqa: N802
        """Apply ``model``/``provider``/``novelty_threshold``/``q_unit`` entries of ``params`` (other keys are ignored)."""
        keys = ("model", "provider", "novelty_threshold", "q_unit")
        if not isinstance(params, dict) or not set(keys) & set(params):
            return
        from .settings import GuiSettings

        merged = {
            "model": self.service.settings.model,
            "provider": self.service.settings.provider,
            "novelty_threshold": self.service.settings.novelty_threshold,
            "q_unit": self.service.settings.q_unit,
        }
        merged.update({k: params[k] for k in keys if k in params})
        self.service.apply_settings(GuiSettings.from_mapping(merged, self.service.settings.path))

    # -- Perspective interface: window, preferences, report -------------------------------------

    def setClosable(self, value: bool = True) -> None:  # noqa: N802
        """Allow (True) or refuse (False) closing, like SasView's own perspectives."""
        self._allow_close = bool(value)

    def isClosable(self) -> bool:  # noqa: N802
        return self._allow_close

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802
        """Closing is refused (the window is minimised) unless SasView allowed it first; then classification stops."""
        if self._allow_close:
            self.setClosable(False)
            self.stop_classification()
            if self.parentWidget():
                self.parentWidget().close()
            event.accept()
        else:
            event.ignore()
            self.setWindowState(QtCore.Qt.WindowMinimized)

    @property
    def preferences(self) -> list:
        """The "BNN Anomaly" page of SasView's Preferences."""
        return self._preferences

    @property
    def supports_reports(self) -> bool:
        return True

    def getReport(self) -> ReportData | None:  # noqa: N802
        """SasView's HTML report: the model, the table of verdicts and one figure per dataset (at most 20)."""
        entries = self.table_model.entries
        if not entries:
            return None
        report = ReportBase("BNN anomaly classification")
        report.add_table_dict({"Model": self.service.describe_model(), "Datasets": str(len(entries))}, ("Setting", "Value"))
        rows = [[ResultsTableModel.cell_text(e, column) for column in COLUMNS] for e in entries]
        titles = [self.table_model.header_text(column) for column in COLUMNS]
        report.add_table(rows, titles=titles, target_tag="data", column_prefix="data-column")
        domain = self._q_domain()
        for entry in entries[:MAX_REPORT_FIGURES]:
            report.add_plot(result_figure(entry.curve, entry.result, domain, title=entry.name))
        results = self.table_model.classified()
        if len(results) > 1:
            report.add_plot(trend_figure(results))
        return report.report_data

    # -- classification ---------------------------------------------------------------------------

    def _add_and_classify(self, entries: list[DatasetEntry]) -> None:
        if not entries:
            return
        keys = [e.key for e in entries if e.key is not None]
        stale = [row for row, old in enumerate(self.table_model.entries) if any(old.key is k for k in keys)]
        self.table_model.remove_rows(stale)
        self.table_model.add_entries(entries)
        if self.tableView.currentIndex().row() < 0:
            self.tableView.selectRow(self.table_model.entries.index(entries[0]))
        self._classify(entries)

    def _classify(self, entries: list[DatasetEntry]) -> None:
        self.lblMessage.setText("")
        for entry in entries:
            entry.result = None
        job_holder: list[Any] = []

        def on_chunk(start: int, results: list[ClassificationResult]) -> None:
            for offset, result in enumerate(results):
                self.table_model.set_result(entries[start + offset], result)
                if entries[start + offset] is self.current_entry():
                    self._show_entry(self.tableView.currentIndex().row())

        def on_progress(done: int, total: int) -> None:
            self._progress[id(job_holder)] = (done, total)
            self._update_progress()

        def on_failed(message: str) -> None:
            self.lblMessage.setText(message)
            for entry in entries:
                if entry.result is None:
                    self.table_model.set_result(entry, ClassificationResult.error(entry.curve.source, entry.curve.dataset, message))
            self._show_entry(self.tableView.currentIndex().row())

        def on_finished() -> None:
            if job_holder and job_holder[0].cancelled:
                for entry in entries:
                    if entry.result is None:
                        self.table_model.set_result(entry, ClassificationResult.error(entry.curve.source, entry.curve.dataset, CANCELLED_MESSAGE))
            self._progress.pop(id(job_holder), None)
            if job_holder and job_holder[0] in self._active_jobs:
                self._active_jobs.remove(job_holder[0])
            self._update_progress()
            self._update_buttons()
            self._show_model_line()
            if not self._active_jobs:
                self.idle.emit()

        self._progress[id(job_holder)] = (0, len(entries))
        job = self.service.submit([e.curve for e in entries], on_chunk, on_progress, on_failed, on_finished)
        job_holder.append(job)
        self._active_jobs.append(job)
        self._update_progress()
        self._update_buttons()

    def reclassify_all(self) -> None:
        """Classify every row again (after the model or threshold changed)."""
        self.cancel()
        if self.table_model.entries:
            self._classify(list(self.table_model.entries))
            self.table_model.layoutChanged.emit()
            self._show_entry(self.tableView.currentIndex().row())

    def cancel(self) -> None:
        """Stop running classifications after their current chunk."""
        for job in list(self._active_jobs):
            job.cancel()

    def stop_classification(self, timeout_ms: int = SHUTDOWN_TIMEOUT_MS) -> bool:
        """Stop every classification for good (closing, quitting); returns within about ``timeout_ms``.

        Unlike :meth:`cancel`, no further result is delivered: the worker
        stops after its current chunk, rows still waiting say they were
        cancelled, and True is returned if the worker stopped in time.
        """
        had_jobs = bool(self._active_jobs) or self.service.busy
        stopped = self.service.shutdown(timeout_ms)
        if not had_jobs:
            return stopped
        self._active_jobs.clear()
        self._progress.clear()
        pending = [e for e in self.table_model.entries if e.result is None]
        for entry in pending:
            entry.result = ClassificationResult.error(entry.curve.source, entry.curve.dataset, CANCELLED_MESSAGE)
        if pending:
            self.table_model.refresh_rows()
        self._update_progress()
        self._update_buttons()
        self.idle.emit()
        return stopped

    @property
    def busy(self) -> bool:
        """True while a classification job is queued or running."""
        return bool(self._active_jobs)

    def wait_until_idle(self, timeout_ms: int = 30000) -> bool:
        """Run a local event loop until every job has finished (for scripts and tests); True if idle in time."""
        if self._active_jobs:
            loop = QtCore.QEventLoop()
            self.idle.connect(loop.quit)
            QtCore.QTimer.singleShot(timeout_ms, loop.quit)
            loop.exec()
            self.idle.disconnect(loop.quit)
        return not self._active_jobs

    def _update_progress(self) -> None:
        done = sum(d for d, _ in self._progress.values())
        total = sum(t for _, t in self._progress.values())
        if total == 0:
            self.progressBar.setVisible(False)
            return
        self.progressBar.setVisible(True)
        self.progressBar.setMaximum(total)
        self.progressBar.setValue(done)
        self.progressBar.setFormat(f"classifying: {done} of {total} curves")

    def _update_buttons(self) -> None:
        has_rows = bool(self.table_model.entries)
        self.cmdCancel.setEnabled(self.busy)
        self.cmdExport.setEnabled(has_rows and any(e.result is not None for e in self.table_model.entries))
        self.cmdReclassify.setEnabled(has_rows)
        self.cmdRemove.setEnabled(has_rows)

    def _on_settings_changed(self) -> None:
        self._show_model_line()
        self.reclassify_all()

    def _show_model_line(self) -> None:
        self.lblModel.setText(self.service.describe_model())

    # -- rows, plots, export ----------------------------------------------------------------------

    def current_entry(self) -> DatasetEntry | None:
        row = self.tableView.currentIndex().row()
        return self.table_model.entries[row] if 0 <= row < len(self.table_model.entries) else None

    def remove_selected(self) -> None:
        rows = [index.row() for index in self.tableView.selectionModel().selectedRows()]
        self.table_model.remove_rows(rows)
        self._after_rows_changed()

    def _after_rows_changed(self) -> None:
        self._show_entry(self.tableView.currentIndex().row())
        self._update_buttons()

    def _q_domain(self) -> tuple[float, float]:
        classifier = self.service.loaded_classifier()
        config = classifier.config if classifier is not None else PreprocessingConfig()
        return (config.q_min, config.q_max)

    def _show_entry(self, row: int) -> None:
        entry = self.table_model.entries[row] if 0 <= row < len(self.table_model.entries) else None
        self._draw(entry)
        self._update_buttons()

    def show_trend(self) -> None:
        """A window with the trend of the table's classified rows, in table order (the shared renderer)."""
        results = self.table_model.classified()
        if len(results) < 2:
            self.lblMessage.setText("a trend needs at least two classified datasets in the table")
            return
        dialog = QtWidgets.QDialog(self)
        dialog.setWindowTitle("BNN Anomaly: trend over the table's rows")
        QtWidgets.QVBoxLayout(dialog).addWidget(FigureCanvasQTAgg(trend_figure(results)))
        dialog.resize(1000, 520)
        self._trend_dialog = dialog  # keep it alive
        dialog.show()

    def _explain(self, entry: DatasetEntry) -> None:
        """Attach the occlusion map to the entry's result (once; the selected row only)."""
        from ..model.explain import explain_result

        try:
            entry.result.sensitivity = explain_result(self.service.classifier(), entry.curve, entry.result)
        except Exception as err:  # an explanation is extra: say why it is missing
            self._report_unexpected("where in q could not be computed", err)

    def _draw(self, entry: DatasetEntry | None) -> None:
        result = entry.result if entry is not None else None
        if result is not None and result.ok and result.sensitivity is None and self.chkExplain.isChecked():
            self._explain(entry)
        draw_curve(self.curve_axes, entry.curve if entry is not None else None, result, self._q_domain(), entry.name if entry else "")
        draw_probabilities(self.bars_axes, result)
        self.canvas.draw_idle()
        if entry is None:
            self.lblSummary.setText("Send 1D data from the Data Explorer to classify it.")
            self.lblSummary.setStyleSheet("")
        elif result is None:
            self.lblSummary.setText(f"{entry.name}: classifying…")
            self.lblSummary.setStyleSheet("")
        else:
            self.lblSummary.setText(f"{entry.name}: {plain_language(result)}")
            novel = result.ok and bool(result.is_novel)
            self.lblSummary.setStyleSheet("color: #b71c1c;" if (novel or not result.ok) else "color: #1b5e20;")

    def export_csv(self, path: str | Path) -> int:
        """Write the classified rows as CSV (columns :data:`~sasview_bnn_plugin.core.result.CSV_COLUMNS`); returns the row count."""
        results = self.table_model.classified()
        write_atomically(path, render_csv(results))
        return len(results)

    def _ask_export_csv(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export BNN results", "bnn_anomaly.csv", "CSV files (*.csv)")
        if not path:
            return
        try:
            count = self.export_csv(path)
        except OSError as err:
            self.lblMessage.setText(f"the results could not be written to {path}: {err.strerror or err}")
            return
        self.lblMessage.setText("")
        self.communicate.statusBarUpdateSignal.emit(f"{count} BNN results written to {path}")
