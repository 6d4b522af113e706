"""The SasView registration pieces that need no main window: hook contributions, PERSPECTIVES, settings file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("sas.qtgui.Perspectives.perspective")

from PySide6 import QtWidgets  # noqa: E402

from sasview_bnn_plugin.gui import builtin_gui_plugin, hookspecs as gui_hooks, sasview_hooks  # noqa: E402
from sasview_bnn_plugin.gui.launch import build_gui_plugin_host  # noqa: E402
from sasview_bnn_plugin.gui.perspective import BNNAnomalyPerspective  # noqa: E402
from sasview_bnn_plugin.gui.settings import GuiSettings  # noqa: E402
from sasview_bnn_plugin.gui.summary import grid_cell  # noqa: E402
from sasview_bnn_plugin.plugins.hookspecs import hookimpl  # noqa: E402
from sasview_bnn_plugin.plugins.host import build_plugin_host  # noqa: E402
from sasview_bnn_plugin.core.result import ClassificationResult  # noqa: E402

pytestmark = pytest.mark.gui


class ClashingPlugin:
    """Contributes one thing that is not a perspective class and one that takes SasView's "Fitting" name."""

    class Fitting(QtWidgets.QWidget):
        name = "Fitting"

    @hookimpl
    def sasview_bnn_perspectives(self):
        return ["not a class", self.Fitting]


@pytest.fixture
def perspectives_dict():
    import sas.qtgui.Perspectives as Perspectives

    saved = dict(Perspectives.PERSPECTIVES)
    yield Perspectives.PERSPECTIVES
    Perspectives.PERSPECTIVES.clear()
    Perspectives.PERSPECTIVES.update(saved)


def test_builtin_gui_plugin_contributes_through_the_hooks():
    host = build_gui_plugin_host()
    assert BNNAnomalyPerspective in gui_hooks.perspectives(host)
    actions = [a for a in gui_hooks.menu_actions(host) if a[1] == "BNN Anomaly"]
    assert actions == [("Analysis", "BNN Anomaly", builtin_gui_plugin.show_bnn_perspective)]
    columns = dict(gui_hooks.grid_columns(host))
    assert columns["BNN anomaly"] is grid_cell
    # Outside a running SasView the menu callback has nothing to switch and says so by doing nothing.
    assert sasview_hooks.switch_to_perspective("BNN Anomaly") is False


def test_register_perspectives_fills_sasview_dict_and_keeps_sasview_own(perspectives_dict):
    fitting = perspectives_dict["Fitting"]
    host = build_plugin_host(load_entry_points=False, extra_plugins=[builtin_gui_plugin, ClashingPlugin()])
    names = sasview_hooks.register_perspectives(host)
    assert names == ["BNN Anomaly"]
    assert perspectives_dict["BNN Anomaly"] is BNNAnomalyPerspective and perspectives_dict["Fitting"] is fitting
    assert any("'not a class'" in p for p in host.problems)
    assert any("'Fitting' is SasView's own" in p for p in host.problems)


def test_grid_cell_text_names_label_confidence_and_novelty():
    samples = np.tile(np.array([0.02, 0.9, 0.02, 0.02, 0.02, 0.01, 0.01]), (4, 1))
    common = dict(file="f", dataset="d", coverage=0.5, q_window=(0.01, 0.3), n_points=100)
    assert grid_cell(ClassificationResult.from_samples(samples, 0.1, 0.5, **common)) == "aggregation 90 %"
    assert grid_cell(ClassificationResult.from_samples(samples, 0.9, 0.5, **common)) == "aggregation 90 % NOVEL"
    assert grid_cell(ClassificationResult.error("f", "d", "too few points")) == "not classified: too few points"


def test_signal_hub_is_found_in_this_sasview_version():
    hub = sasview_hooks.communicator()
    assert hasattr(hub, "sendDataToGridSignal") and hasattr(hub, "perspectiveChangedSignal")


def test_settings_file_round_trip_and_damaged_file(tmp_path: Path):
    path = tmp_path / "bnn.json"
    GuiSettings(model="m.onnx", provider="cpu", novelty_threshold=0.3, path=path).save()
    assert json.loads(path.read_text()) == {"model": "m.onnx", "provider": "cpu", "novelty_threshold": 0.3, "q_unit": "auto"}
    assert GuiSettings.load(path) == GuiSettings(model="m.onnx", provider="cpu", novelty_threshold=0.3)
    path.write_text("{ not json")
    assert GuiSettings.load(path) == GuiSettings()
    path.write_text(json.dumps({"provider": "tpu", "novelty_threshold": "high"}))
    assert GuiSettings.load(path) == GuiSettings()
    with pytest.raises(ValueError, match="provider"):
        GuiSettings(provider="tpu").validate()
