"""The pluggy plugin host: hooks called in order, failures isolated, entry points loaded."""

from __future__ import annotations

import json

from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

from onnx_test_models import write_model
from sasview_bnn_plugin.model.catalog import shipped_models
from sasview_bnn_plugin.model.classifier import BNNClassifier
from sasview_bnn_plugin.core.curve import Curve
from sasview_bnn_plugin.gui import hookspecs as gui_hooks
from sasview_bnn_plugin.plugins.hookspecs import hookimpl
from sasview_bnn_plugin.model.catalog import ModelSource
from sasview_bnn_plugin.plugins.host import build_plugin_host


@pytest.fixture(scope="module")
def model_path(make_test_model) -> Path:
    return make_test_model("m.onnx", n_samples=3)


def curve_in_nm(source: str = "beamline.nm") -> Curve:
    q = np.geomspace(0.02, 4.0, 120)  # 1/nm
    intensity = 1.0 / (1.0 + (q * 8.0) ** 2) + 1e-3
    return Curve(q, intensity, 0.02 * intensity, q_unit="A^{-1}", source=source)


class NanometreFix:
    """A beamline plugin: its '.nm' files say 1/Å but hold 1/nm."""

    @hookimpl
    def sasview_bnn_prepare_raw_curve(self, curve):
        if curve.source.endswith(".nm"):
            curve.q_unit = "1/nm"
            curve.notes.append("beamline plugin: q relabelled 1/nm")
            return curve
        return None


class Sink:
    def __init__(self):
        self.received = []

    @hookimpl
    def sasview_bnn_result(self, result):
        self.received.append(result)


class Broken:
    @hookimpl
    def sasview_bnn_models(self):
        raise RuntimeError("model server unreachable")

    @hookimpl
    def sasview_bnn_prepare_raw_curve(self, curve):
        raise ZeroDivisionError("bug in plugin")

    @hookimpl
    def sasview_bnn_result(self, result):
        raise OSError("disk full")

    @hookimpl
    def sasview_bnn_grid_columns(self):
        raise RuntimeError("no grid")


def test_raw_curve_steps_run_before_preprocessing_and_sinks_get_every_result(model_path):
    sink = Sink()
    host = build_plugin_host(load_entry_points=False, extra_plugins=[NanometreFix(), sink])
    classifier = BNNClassifier(model_path, provider="cpu", plugin_host=host)
    fixed, other, refused = classifier.classify([curve_in_nm(), curve_in_nm("other.txt"), Curve.failed("x.txt", "", "the file is empty")])
    assert fixed.q_window == pytest.approx((0.002, 0.4)) and "beamline plugin" in fixed.message
    assert other.ok and other.q_window[0] == pytest.approx(0.02) and "beamline plugin" not in other.message
    assert refused.status == "error"
    assert sink.received == [fixed, other, refused]


def test_a_raising_plugin_never_stops_classification(model_path):
    sink = Sink()
    host = build_plugin_host(load_entry_points=False, extra_plugins=[Broken(), sink])
    # The built-in plugin contributes the shipped model; the broken one contributes nothing.
    assert [s.provider for s in host.models()] == ["shipped"] * len(shipped_models())
    classifier = BNNClassifier(model_path, provider="cpu", plugin_host=host)
    results = classifier.classify([curve_in_nm("a.txt"), curve_in_nm("b.txt")])
    assert [r.status for r in results] == ["ok", "ok"]
    assert len(sink.received) == 2
    assert gui_hooks.grid_columns(host) == []
    text = "\n".join(host.problems)
    for fragment in ("model server unreachable", "bug in plugin", "disk full", "no grid"):
        assert fragment in text


def test_model_names_are_unique_and_no_plugin_poses_as_shipped(model_path):
    class A:
        @hookimpl
        def sasview_bnn_models(self):
            return [ModelSource("m", model_path, {"k": "a"}, provider="shipped"), "not a source"]

    class B:
        @hookimpl
        def sasview_bnn_models(self):
            return [ModelSource("m", model_path, {"k": "b"})]

    host = build_plugin_host(load_entry_points=False, extra_plugins=[A(), B()])
    models = [m for m in host.models() if m.name == "m"]
    assert len(models) == 1 and models[0].card == {"k": "a"}
    assert models[0].provider != "shipped"
    assert any("not a ModelSource" in p for p in host.problems)


def test_ui_hooks_collect_contributions():
    class Ui:
        @hookimpl
        def sasview_bnn_menu_actions(self):
            return [("Analysis/Anomalies", "Classify", print)]

        @hookimpl
        def sasview_bnn_perspectives(self):
            return [object]

    host = build_plugin_host(load_entry_points=False, extra_plugins=[Ui()])
    assert gui_hooks.menu_actions(host) == [("Analysis/Anomalies", "Classify", print)]
    assert gui_hooks.perspectives(host) == [object]


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(tmp_path, monkeypatch):
    dist = tmp_path / "broken_sasview_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-sasview-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sasview_bnn]\nbroken = module_that_does_not_exist_42.plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    host = build_plugin_host()
    assert "broken" not in host.plugin_names()
    assert any("'broken'" in p and "module_that_does_not_exist_42" in p for p in host.problems)
    host.models()  # the others still work


def test_the_installed_example_plugin_is_found_through_its_entry_point():
    names = {ep.name for ep in entry_points(group="sasview_bnn")}
    assert "example" in names, "install it: pip install ./tests/plugins/sasview-bnn-example-plugin"
    host = build_plugin_host()
    assert "example" in host.plugin_names()
    (model,) = [m for m in host.models() if m.name == "example-linear-heads"]
    assert model.provider == "example" and model.path.is_file() and model.card["n_samples"] == "3"


def test_the_example_plugin_ships_the_model_its_readme_says_how_to_rebuild():
    from onnx_test_models import build_linear_heads_model

    shipped = Path(__file__).parent / "plugins" / "sasview-bnn-example-plugin" / "sasview_bnn_example_plugin" / "example_model.onnx"
    import onnx

    on_disk = onnx.load(str(shipped))
    rebuilt = build_linear_heads_model(n_samples=3, seed=7)
    assert on_disk.graph.SerializeToString() == rebuilt.graph.SerializeToString()
    meta = lambda m: {p.key: p.value for p in m.metadata_props if p.key != "package_version"}  # noqa: E731
    assert meta(on_disk) == meta(rebuilt)


def test_shipped_models_are_found_as_package_resources_with_their_cards(tmp_path, monkeypatch):
    from sasview_bnn_plugin.model.card import card_path, file_sha256
    from sasview_bnn_plugin.model.catalog import resolve_model, shipped_models

    package = tmp_path / "fake_shipped_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    good_file = write_model(package / "bnn-v1.onnx", n_samples=2)
    (package / "bnn-v1.md").write_text("# Test model card\n\nmore text\n")
    broken_file = package / "zz-broken.onnx"
    broken_file.write_bytes(b"\x08\x07broken")
    for path in (good_file, broken_file):  # shipped models need a JSON card with their sha256
        card = {"name": path.stem, "file": path.name, "sha256": file_sha256(path), "size_bytes": path.stat().st_size}
        card_path(path).write_text(json.dumps(card))
    monkeypatch.syspath_prepend(str(tmp_path))
    good, broken = shipped_models("fake_shipped_models")
    assert good.name == "bnn-v1" and good.card["description"] == "Test model card" and good.card["n_samples"] == "2"
    assert "damaged or not an ONNX model" in broken.card["error"]
    assert resolve_model(None, [good, broken]) == good
    assert resolve_model("bnn-v1", [good]) == good
