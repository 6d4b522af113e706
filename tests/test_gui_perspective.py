"""Widget tests of the "BNN Anomaly" perspective on its own (pytest-qt, Qt's offscreen platform).

Real SasView example data (sasdata's ``example_data/1d_data``) go through
SasView's own data manager into Data Explorer-style items and are classified
by a real ONNX test model (``tests/onnx_test_models.py``) on the worker thread.
Skipped when PySide6 or SasView is not installed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before pytest-qt creates the QApplication
pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")
pytest.importorskip("sas.qtgui.Perspectives.perspective")
pytest.importorskip("onnx")

from onnx_test_models import write_model, write_truncated_model  # noqa: E402
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402
from sasdata.dataloader.loader import Loader  # noqa: E402

import sas.qtgui.Utilities.GuiUtils as GuiUtils  # noqa: E402
from sas.qtgui.MainWindow.DataManager import DataManager  # noqa: E402
from sas.qtgui.Plotting.PlotterData import Data1D, Data2D  # noqa: E402
from sasview_bnn_plugin.model.classifier import BNNClassifier  # noqa: E402
from sasview_bnn_plugin.cli import main as cli_main  # noqa: E402
from sasview_bnn_plugin.gui.classification_service import ClassificationService  # noqa: E402
from sasview_bnn_plugin.gui.perspective import CANCELLED_MESSAGE, BNNAnomalyPerspective  # noqa: E402
from sasview_bnn_plugin.gui.sasview_hooks import TWO_D_MESSAGE  # noqa: E402
from gui_drivers.closing_mid_run import explorer_items as items_holding  # noqa: E402
from sasview_bnn_plugin.gui.preferences import BNNPreferencesWidget  # noqa: E402
from sasview_bnn_plugin.gui.results_table import COLOUR_NOVEL, COLUMNS  # noqa: E402
from sasview_bnn_plugin.gui.settings import GuiSettings  # noqa: E402
from sasview_bnn_plugin.gui.summary import NOVEL_SENTENCE, percent  # noqa: E402
from sasview_bnn_plugin.plugins.hookspecs import hookimpl  # noqa: E402
from sasview_bnn_plugin.plugins.host import build_plugin_host  # noqa: E402
from sasview_bnn_plugin.core.result import CSV_COLUMNS  # noqa: E402
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES  # noqa: E402

pytestmark = pytest.mark.gui

EXAMPLE = Path(__import__("sasdata").__file__).parent / "example_data" / "1d_data"
FILES = ("apoferritin.txt", "Ludox_silica.xml", "latex_smeared.xml")  # latex_smeared.xml holds two datasets


def make_service(tmp_path: Path, model: str, extra_plugins=(), **settings) -> ClassificationService:
    return ClassificationService(
        GuiSettings(model=model, path=tmp_path / "bnn.json", **settings),
        build_plugin_host(load_entry_points=False, extra_plugins=extra_plugins),
    )


@pytest.fixture
def perspective(qtbot, tmp_path, model_path):
    widget = BNNAnomalyPerspective(None, make_service(tmp_path, str(model_path)))
    qtbot.addWidget(widget)
    widget.resize(1000, 720)
    yield widget
    widget.setClosable(True)
    widget.close()


def explorer_items(names=FILES) -> list[QtGui.QStandardItem]:
    """Data Explorer-style items (checkbox item with the GUI data object as child 0) of the example files' datasets."""
    manager = DataManager()
    return items_holding([manager.create_gui_data(loaded, str(EXAMPLE / name)) for name in names for loaded in Loader().load(str(EXAMPLE / name))])


def item_holding(data) -> QtGui.QStandardItem:
    item = GuiUtils.HashableStandardItem()
    item.setText(getattr(data, "name", None) or "synthetic")
    child = GuiUtils.HashableStandardItem()
    child.setData(data)
    item.setChild(0, child)
    return item


def classify(qtbot, perspective, items, timeout=20000) -> None:
    with qtbot.waitSignal(perspective.idle, timeout=timeout):
        perspective.setData(items, is_batch=len(items) > 1)


def test_example_data_rows_plots_and_plain_language(qtbot, perspective, model_path):
    items = explorer_items()
    classify(qtbot, perspective, items)
    entries = perspective.table_model.entries
    assert [e.name for e in entries] == [i.text() for i in items] and len(entries) == 4

    # The table shows exactly what the runtime computes for the same data.
    direct = BNNClassifier(model_path).classify([GuiUtils.dataFromItem(i) for i in items])
    model = perspective.table_model
    for row, (entry, expected) in enumerate(zip(entries, direct)):
        assert entry.result.ok and entry.result.label == expected.label in CLASS_NAMES
        np.testing.assert_allclose(entry.result.probabilities, expected.probabilities, atol=1e-6)
        cells = {c: model.data(model.index(row, k)) for k, c in enumerate(COLUMNS)}
        assert cells["Label"] == expected.label
        assert cells["Confidence"] == percent(expected.confidence)
        assert cells["Anomaly p"] == percent(expected.anomaly_probability)
        assert cells["Novel"] == ("NOVEL" if expected.is_novel else "no")
        assert cells["q-coverage"] == percent(expected.coverage)

    # The selected (first) dataset: log-log curve with the model's q-domain shaded, bars with 90 % intervals.
    first = entries[0].result
    assert perspective.tableView.currentIndex().row() == 0
    assert perspective.curve_axes.get_xscale() == "log" and perspective.curve_axes.get_yscale() == "log"
    spans = [p for p in perspective.curve_axes.patches if p.get_label() == "model q-domain"]
    assert len(spans) == 1
    x_span = spans[0].get_x(), spans[0].get_x() + spans[0].get_width()
    np.testing.assert_allclose(x_span, perspective._q_domain())
    heights = [bar.get_height() for bar in perspective.bars_axes.patches]
    np.testing.assert_allclose(heights, first.probabilities)
    index = int(np.argmax(first.probabilities))
    summary = perspective.lblSummary.text()
    assert summary.startswith(f"{entries[0].name}: {first.label}, {percent(first.confidence)} ± {percent(first.probability_std[index])}")

    # Selecting another row redraws for it.
    perspective.tableView.selectRow(2)
    assert perspective.lblSummary.text().startswith(entries[2].name + ": " + entries[2].result.label)
    np.testing.assert_allclose([b.get_height() for b in perspective.bars_axes.patches], entries[2].result.probabilities)


def test_novel_curves_are_flagged_in_red_and_in_words(qtbot, perspective):
    classify(qtbot, perspective, explorer_items(("apoferritin.txt",)))
    assert perspective.table_model.entries[0].result.is_novel is False
    # A threshold below every score makes every curve novel; changing the settings reclassifies.
    settings = GuiSettings(model=perspective.service.settings.model, novelty_threshold=-1.0)
    with qtbot.waitSignal(perspective.idle, timeout=20000):
        perspective.service.apply_settings(settings)
    result = perspective.table_model.entries[0].result
    assert result.is_novel is True and result.novelty_threshold == -1.0
    model = perspective.table_model
    novel_index = model.index(0, COLUMNS.index("Novel"))
    assert model.data(novel_index) == "NOVEL"
    assert model.data(novel_index, QtCore.Qt.BackgroundRole).color() == COLOUR_NOVEL
    assert NOVEL_SENTENCE in perspective.lblSummary.text()
    saved = json.loads(Path(perspective.service.settings.path).read_text())
    assert saved["novelty_threshold"] == -1.0


def test_bad_input_becomes_messages_not_tracebacks(qtbot, perspective, caplog):
    q = np.geomspace(0.01, 0.3, 10)
    too_few = Data1D(x=q, y=np.exp(-q * 30), dy=0.01 * np.ones_like(q))
    too_few.name = "ten points"
    q_far = np.geomspace(20.0, 200.0, 100)
    outside = Data1D(x=q_far, y=q_far ** -4, dy=0.05 * q_far ** -4)
    outside.name = "q beyond the model"
    two_d = Data2D(image=np.ones((4, 4)).ravel(), qx_data=np.linspace(-0.1, 0.1, 16), qy_data=np.linspace(-0.1, 0.1, 16),
                   q_data=np.linspace(0.01, 0.1, 16), mask=np.ones(16, bool), err_image=np.ones(16))
    two_d.name = "detector image"
    good = explorer_items(("apoferritin.txt",))
    items = [item_holding(too_few), item_holding(outside), item_holding(two_d)] + good
    with caplog.at_level(logging.DEBUG):
        classify(qtbot, perspective, items)
    results = [e.result for e in perspective.table_model.entries]
    assert [r.status for r in results] == ["error", "error", "error", "ok"]
    assert "point" in results[0].message  # too few points, said in words
    assert "q" in results[1].message
    assert results[2].message == TWO_D_MESSAGE
    model = perspective.table_model
    assert model.data(model.index(2, COLUMNS.index("Label"))) == "not classified"
    perspective.tableView.selectRow(2)
    assert perspective.lblSummary.text() == f"detector image: not classified: {TWO_D_MESSAGE}"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("problem", ["missing", "corrupt", "changed after its card"])
def test_unusable_model_is_explained_in_the_perspective(qtbot, tmp_path, problem):
    if problem == "missing":
        model, expected = str(tmp_path / "absent.onnx"), "does not exist"
    elif problem == "corrupt":
        model, expected = str(write_truncated_model(tmp_path / "broken.onnx")), "damaged"
    else:
        changed = write_model(tmp_path / "changed.onnx", seed=1)
        card = {"name": "changed", "file": changed.name, "sha256": "0" * 64, "size_bytes": changed.stat().st_size}
        changed.with_suffix(".json").write_text(json.dumps(card))
        model, expected = str(changed), "does not match its card"
    widget = BNNAnomalyPerspective(None, make_service(tmp_path, model))
    qtbot.addWidget(widget)
    if problem == "missing":  # a damaged or changed file is found out when it is opened
        assert expected in widget.lblModel.text()
    classify(qtbot, widget, explorer_items(("apoferritin.txt",)))
    result = widget.table_model.entries[0].result
    assert result.status == "error" and expected in result.message
    assert expected in widget.lblMessage.text()
    widget.setClosable(True)
    widget.close()


class ThreadRecorder:
    """A real plugin whose raw-curve step records the thread it runs in."""

    def __init__(self) -> None:
        self.threads: set[int] = set()

    @hookimpl
    def sasview_bnn_prepare_raw_curve(self, curve):
        self.threads.add(threading.get_ident())
        return None


def test_hundreds_of_curves_run_off_the_gui_thread_with_progress(qtbot, tmp_path, model_path):
    recorder = ThreadRecorder()
    widget = BNNAnomalyPerspective(None, make_service(tmp_path, str(model_path), extra_plugins=[recorder]))
    qtbot.addWidget(widget)
    names = FILES + ("P123_D2O_10_percent.xml", "P123_D2O_30_percent.xml", "hSDS_D2O_0p5_percent.xml", "hSDS_D2O_2p0_percent.xml")
    real = [d for name in names for d in Loader().load(str(EXAMPLE / name))]  # 8 real curves ...
    datasets = (real * 38)[:300]  # ... sent 300 times in one batch, as from a big Data Explorer selection
    progress: list[int] = []
    widget.progressBar.valueChanged.connect(progress.append)
    ticks: list[int] = []
    timer = QtCore.QTimer()
    timer.timeout.connect(lambda: ticks.append(len(progress)) if widget.busy else None)
    timer.start(5)
    with qtbot.waitSignal(widget.idle, timeout=60000):
        widget.classify_data(datasets)
        assert not widget.progressBar.isHidden() and widget.cmdCancel.isEnabled()
    timer.stop()
    assert len(widget.table_model.entries) == 300
    assert all(e.result is not None for e in widget.table_model.entries)
    assert threading.get_ident() not in recorder.threads and len(recorder.threads) == 1
    # The bar moved in steps of a chunk (32 curves) up to the total, and the GUI thread's
    # event loop kept running (timer ticks) while the job was busy.
    assert progress[-1] == 300 and progress == sorted(progress) and len(set(progress)) >= 300 // 32
    assert len(ticks) >= 1
    assert widget.progressBar.isHidden() and not widget.cmdCancel.isEnabled()


def test_cancel_stops_after_the_running_chunk(qtbot, perspective):
    real = [d for name in FILES for d in Loader().load(str(EXAMPLE / name))]
    with qtbot.waitSignal(perspective.idle, timeout=60000):
        perspective.classify_data(real * 100)  # 400 curves, 13 chunks
        perspective.cancel()
    statuses = [e.result.status for e in perspective.table_model.entries]
    cancelled = [e for e in perspective.table_model.entries if e.result.message == CANCELLED_MESSAGE]
    assert len(statuses) == 400 and cancelled and statuses.count("ok") < 400
    assert statuses.count("ok") + len(cancelled) == 400
    assert perspective.progressBar.isHidden() and not perspective.busy
    # "Classify again" finishes the job.
    with qtbot.waitSignal(perspective.idle, timeout=60000):
        perspective.cmdReclassify.click()
    assert all(e.result.ok for e in perspective.table_model.entries)


def test_export_csv_has_the_command_line_columns_and_values(qtbot, perspective, model_path, tmp_path):
    classify(qtbot, perspective, explorer_items(("apoferritin.txt", "Ludox_silica.xml")))
    out = tmp_path / "gui.csv"
    assert perspective.export_csv(out) == 2
    gui_rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(gui_rows[0]) == list(CSV_COLUMNS)
    cli_out = tmp_path / "cli.csv"
    assert cli_main(["classify", str(EXAMPLE / "apoferritin.txt"), str(EXAMPLE / "Ludox_silica.xml"), "--model", str(model_path), "-o", str(cli_out)]) == 0
    cli_rows = list(csv.DictReader(io.StringIO(cli_out.read_text())))
    same = [c for c in CSV_COLUMNS if c not in ("file", "dataset", "message")]
    assert [{c: r[c] for c in same} for r in gui_rows] == [{c: r[c] for c in same} for r in cli_rows]


def test_report_holds_the_table_and_one_figure_per_dataset(qtbot, perspective):
    assert perspective.getReport() is None
    classify(qtbot, perspective, explorer_items())
    report = perspective.getReport()
    html = report.html
    # One figure per dataset, plus the trend over the classified datasets (more than one).
    assert html.count("<img") == 4 + 1
    for entry in perspective.table_model.entries:
        assert entry.name in html and entry.result.label in html
    assert "BNN anomaly classification" in report.text


def test_sasview_perspective_interface(qtbot, perspective):
    assert perspective.name == "BNN Anomaly" and perspective.title == "BNN Anomaly Perspective" and perspective.ext == "bnn"
    assert perspective.allowBatch() is True and perspective.allowSwap() is False and perspective.isSerializable() is False
    assert perspective.supports_reports is True
    assert [type(w) for w in perspective.preferences] == [BNNPreferencesWidget]
    perspective.show()
    # Like SasView's perspectives: closing is refused (minimised) until SasView allows it.
    perspective.setClosable(False)
    assert perspective.isClosable() is False
    perspective.close()
    assert perspective.isVisible() and perspective.windowState() & QtCore.Qt.WindowMinimized
    perspective.setClosable(True)
    assert perspective.close() and not perspective.isVisible()
    assert perspective.isClosable() is False  # reset after closing, as SasView expects


def test_help_button_opens_the_shipped_help_page(qtbot, perspective, monkeypatch):
    from sasview_bnn_plugin.gui import HELP_PAGE

    opened = []
    monkeypatch.setattr(QtGui.QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url) or True))
    perspective.cmdHelp.click()
    assert [url.toLocalFile() for url in opened] == [str(HELP_PAGE)] and HELP_PAGE.is_file()


def test_deleted_data_explorer_items_leave_the_table(qtbot, perspective):
    items = explorer_items(("apoferritin.txt", "Ludox_silica.xml"))
    classify(qtbot, perspective, items)
    perspective.communicate.dataDeletedSignal.emit([items[0]])
    assert [e.key for e in perspective.table_model.entries] == [items[1]]
    # Sending an item again replaces its row rather than adding one.
    classify(qtbot, perspective, [items[1]])
    assert len(perspective.table_model.entries) == 1


def test_preferences_page_in_sasview_panel_switches_the_model(qtbot, perspective, tmp_path):
    from sas.qtgui.Utilities.Preferences.PreferencesPanel import PreferencesPanel

    panel = PreferencesPanel(None)
    qtbot.addWidget(panel)
    panel.registerPerspectivePreferences(perspective)
    names = [panel.listWidget.item(i).text() for i in range(panel.listWidget.count())]
    assert "BNN Anomaly" in names
    classify(qtbot, perspective, explorer_items(("apoferritin.txt",)))
    other = write_model(tmp_path / "other_model.onnx", n_samples=6, seed=7)
    page = perspective.preferences[0]
    apply = panel.buttonBox.button(QtWidgets.QDialogButtonBox.Apply)
    assert not apply.isEnabled()
    page.txtModelFile.setText(str(other))
    page.cbProvider.setCurrentIndex(page.cbProvider.findText("cpu"))
    page.txtThreshold.setText("0.25")
    assert apply.isEnabled()
    with qtbot.waitSignal(perspective.idle, timeout=20000):
        apply.click()
    assert perspective.service.settings == GuiSettings(model=str(other), provider="cpu", novelty_threshold=0.25)
    result = perspective.table_model.entries[0].result
    assert result.model == "other_model" and result.n_samples == 6 and result.novelty_threshold == 0.25
    assert "other_model" in perspective.lblModel.text()
    assert json.loads(Path(perspective.service.settings.path).read_text()) == {"model": str(other), "provider": "cpu", "novelty_threshold": 0.25, "q_unit": "auto"}


def test_qt_binding_keeps_references_to_none():
    """PySide6 6.12.0 on Python 3.11 drops a reference to None per void call and SasView crashes; CI must pin PySide6<6.12 there."""
    from sasview_bnn_plugin.gui.launch import PYSIDE_BUG_MESSAGE, pyside_loses_none_references

    assert not pyside_loses_none_references(), PYSIDE_BUG_MESSAGE
