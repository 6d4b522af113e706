"""The plugin host calls every hook through pluggy: pluggy's order, wrappers and argument subsets, failures isolated.

All plugins here are real pluggy plugins registered in a real host; nothing of pluggy is mocked.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from sasview_bnn_plugin.model.catalog import shipped_models
from sasview_bnn_plugin.core.curve import Curve
from sasview_bnn_plugin.gui import hookspecs as gui_hooks
from sasview_bnn_plugin.plugins.hookspecs import hookimpl
from sasview_bnn_plugin.model.catalog import ModelSource
from sasview_bnn_plugin.plugins.host import PREPARE_HOOK, build_plugin_host
from sasview_bnn_plugin.core.result import ClassificationResult


def raw_curve(source: str = "raw.txt") -> Curve:
    q = np.geomspace(0.005, 0.3, 50)
    return Curve(q, 1.0 / (1.0 + (q * 40.0) ** 2), q_unit="1/Å", source=source, dataset="sasentry01")


def a_result(name: str = "f.txt") -> ClassificationResult:
    return ClassificationResult.error(name, "d", "too few points")


class Step:
    """A raw-curve step and result sink that records its calls; the curve it returns is a new one with a note."""

    def __init__(self, calls: list) -> None:
        self.calls = calls
        self.received: list[Curve] = []
        self.returned: list[Curve] = []

    def step(self, curve: Curve) -> Curve:
        self.calls.append(type(self).__name__)
        self.received.append(curve)
        out = dataclasses.replace(curve, notes=[*curve.notes, type(self).__name__])
        self.returned.append(out)
        return out


class Plain1(Step):
    @hookimpl
    def sasview_bnn_prepare_raw_curve(self, curve):
        return self.step(curve)

    @hookimpl
    def sasview_bnn_result(self, result):
        self.calls.append(type(self).__name__)


class Plain2(Plain1):
    pass


class First(Plain1):
    @hookimpl(tryfirst=True)
    def sasview_bnn_prepare_raw_curve(self, curve):
        return self.step(curve)

    @hookimpl(tryfirst=True)
    def sasview_bnn_result(self, result):
        self.calls.append(type(self).__name__)


class Last(Plain1):
    @hookimpl(trylast=True)
    def sasview_bnn_prepare_raw_curve(self, curve):
        return self.step(curve)

    @hookimpl(trylast=True)
    def sasview_bnn_result(self, result):
        self.calls.append(type(self).__name__)


def ordered_host(calls: list):
    # Registered: First, Plain1, Last, Plain2. pluggy calls tryfirst, then the others last-registered first, then trylast.
    plugins = [First(calls), Plain1(calls), Last(calls), Plain2(calls)]
    return build_plugin_host(load_entry_points=False, extra_plugins=plugins), plugins


def test_tryfirst_runs_before_the_others_and_trylast_after_for_sinks_and_raw_curve_steps():
    calls: list[str] = []
    host, _ = ordered_host(calls)
    host.publish_result(a_result())
    assert calls == ["First", "Plain2", "Plain1", "Last"]
    calls.clear()
    host.prepare_raw_curve(raw_curve())
    assert calls == ["First", "Plain2", "Plain1", "Last"]
    assert host.problems == []


def test_raw_curve_steps_chain_in_pluggy_order_each_receiving_the_previous_output():
    calls: list[str] = []
    host, (first, plain1, last, plain2) = ordered_host(calls)
    raw = raw_curve()
    out = host.prepare_raw_curve(raw)
    assert first.received == [raw]
    assert plain2.received[0] is first.returned[0]
    assert plain1.received[0] is plain2.returned[0]
    assert last.received[0] is plain1.returned[0]
    assert out is last.returned[0] and out.notes == ["First", "Plain2", "Plain1", "Last"]
    assert raw.notes == []
    # The chain is a property of the hook itself: a direct pluggy call chains too, and returns the outputs in call order.
    outputs = host.manager.hook.sasview_bnn_prepare_raw_curve(curve=raw_curve())
    assert [c.notes for c in outputs] == [["First"], ["First", "Plain2"], ["First", "Plain2", "Plain1"], ["First", "Plain2", "Plain1", "Last"]]


def test_a_step_returning_none_or_a_non_curve_leaves_the_chain_as_it_was():
    class Nothing:
        @hookimpl
        def sasview_bnn_prepare_raw_curve(self, curve):
            curve.notes.append("seen in place")
            return None

    class NotACurve:
        @hookimpl
        def sasview_bnn_prepare_raw_curve(self, curve):
            return {"q": curve.q}

    raw = raw_curve()
    host = build_plugin_host(load_entry_points=False, extra_plugins=[Nothing(), NotACurve()])
    assert host.prepare_raw_curve(raw) is raw and raw.notes == ["seen in place"]
    assert host.problems == ["plugin 'NotACurve' returned dict, not a Curve; ignored"]


class ResultWrapper:
    """A new-style wrapper around the result sinks: sees their return values and changes the list."""

    def __init__(self) -> None:
        self.seen: list = []

    @hookimpl(wrapper=True)
    def sasview_bnn_result(self, result):
        receipts = yield
        self.seen.append((result.file, list(receipts)))
        return [*receipts, "wrapper receipt"]


class ReceiptSink:
    @hookimpl
    def sasview_bnn_result(self, result):
        return f"stored {result.file}"


def test_a_new_style_wrapper_around_result_sees_the_sinks_results_and_can_change_them():
    wrapper = ResultWrapper()
    host = build_plugin_host(load_entry_points=False, extra_plugins=[ReceiptSink(), wrapper])
    host.publish_result(a_result("a.txt"))
    assert wrapper.seen == [("a.txt", ["stored a.txt"])]
    assert host.manager.hook.sasview_bnn_result(result=a_result("b.txt")) == ["stored b.txt", "wrapper receipt"]
    assert host.problems == []


def test_a_new_style_wrapper_around_models_sees_the_contributions_and_can_change_them(tmp_path):
    class Contributor:
        @hookimpl
        def sasview_bnn_models(self):
            return [ModelSource("keep", tmp_path / "keep.onnx"), ModelSource("drop", tmp_path / "drop.onnx")]

    class Curator:
        def __init__(self) -> None:
            self.seen: list = []

        @hookimpl(wrapper=True)
        def sasview_bnn_models(self):
            lists = yield
            self.seen = [[(s.name, s.provider) for s in sources] for sources in lists]
            kept = [[s for s in sources if s.name != "drop"] for sources in lists]
            # A model the wrapper adds is attributed to the wrapper, even if it claims to be shipped.
            return [*kept, [ModelSource("added", tmp_path / "added.onnx", provider="shipped")]]

    curator = Curator()
    host = build_plugin_host(load_entry_points=False, extra_plugins=[Contributor(), curator])
    models = {m.name: m.provider for m in host.models()}
    # The wrapper saw the lists in call order (the built-in one, trylast, at the end), providers already recorded by the host.
    assert curator.seen[0] == [("keep", "Contributor"), ("drop", "Contributor")]
    assert len(curator.seen) == 2 and curator.seen[-1] and all(provider == "shipped" for _, provider in curator.seen[-1])
    assert "drop" not in models and models["keep"] == "Contributor" and models["added"] == "Curator"
    assert "shipped" in models.values()  # the built-in plugin's models went through the wrapper untouched
    assert host.problems == []


def test_an_old_style_hookwrapper_works_around_models_and_raw_curve_steps(tmp_path):
    class OldStyle:
        def __init__(self) -> None:
            self.curves_seen: list = []

        @hookimpl(hookwrapper=True)
        def sasview_bnn_models(self):
            outcome = yield
            outcome.force_result([*outcome.get_result(), [ModelSource("old-style", tmp_path / "o.onnx")]])

        @hookimpl(hookwrapper=True)
        def sasview_bnn_prepare_raw_curve(self, curve):
            outcome = yield
            self.curves_seen.append((curve, outcome.get_result()))

    calls: list[str] = []
    wrapper = OldStyle()
    step = Plain1(calls)
    host = build_plugin_host(load_entry_points=False, extra_plugins=[step, wrapper])
    assert {m.name: m.provider for m in host.models()}["old-style"] == "OldStyle"
    raw = raw_curve()
    out = host.prepare_raw_curve(raw)
    assert wrapper.curves_seen == [(raw, [out])] and out.notes == ["Plain1"]
    assert host.problems == []


def test_a_wrapper_can_replace_the_chains_result():
    class Replacer:
        @hookimpl(wrapper=True, tryfirst=True)
        def sasview_bnn_prepare_raw_curve(self, curve):
            outputs = yield
            return [*outputs, dataclasses.replace(curve, notes=["replaced"])]

    host = build_plugin_host(load_entry_points=False, extra_plugins=[Plain1([]), Replacer()])
    assert host.prepare_raw_curve(raw_curve()).notes == ["replaced"]


def test_implementations_declaring_fewer_arguments_than_the_spec_work_for_every_hook():
    class Counter:
        def __init__(self) -> None:
            self.count = {"prepare": 0, "result": 0, "wrapped": 0}

        @hookimpl
        def sasview_bnn_prepare_raw_curve(self):
            self.count["prepare"] += 1

        @hookimpl
        def sasview_bnn_result(self):
            self.count["result"] += 1
            return "counted"

        @hookimpl(wrapper=True)
        def sasview_bnn_models(self):
            self.count["wrapped"] += 1
            return (yield)

    class NoArgumentWrappers:
        @hookimpl(wrapper=True)
        def sasview_bnn_result(self):
            receipts = yield
            return [*receipts, "wrapped without arguments"]

        @hookimpl(hookwrapper=True)
        def sasview_bnn_prepare_raw_curve(self):
            yield

    calls: list[str] = []
    counter = Counter()
    host = build_plugin_host(load_entry_points=False, extra_plugins=[Plain1(calls), counter, NoArgumentWrappers(), Plain2(calls)])
    raw = raw_curve()
    out = host.prepare_raw_curve(raw)
    assert out.notes == ["Plain2", "Plain1"]  # the chain runs through the implementation that takes no curve
    assert host.manager.hook.sasview_bnn_result(result=a_result()) == ["counted", "wrapped without arguments"]
    host.models()
    assert counter.count == {"prepare": 1, "result": 1, "wrapped": 1}
    assert host.problems == []
    # The isolation layer keeps the plugin's signature, which is what pluggy reads the argument names from.
    (impl,) = [i for i in host.manager.hook.sasview_bnn_prepare_raw_curve.get_hookimpls() if i.plugin is counter]
    assert impl.argnames == () and str(inspect.signature(impl.function)) == "()"
    assert inspect.signature(impl.function.__wrapped__) == inspect.signature(counter.sasview_bnn_prepare_raw_curve)


class Broken:
    @hookimpl(tryfirst=True)
    def sasview_bnn_models(self):
        raise RuntimeError("model server unreachable")

    @hookimpl(tryfirst=True)
    def sasview_bnn_prepare_raw_curve(self, curve):
        raise ZeroDivisionError("bug in plugin")

    @hookimpl(tryfirst=True)
    def sasview_bnn_result(self, result):
        raise OSError("disk full")

    @hookimpl
    def sasview_bnn_menu_actions(self):
        raise KeyError("menu")

    @hookimpl
    def sasview_bnn_perspectives(self):
        return 42  # not a list


def test_a_raising_plugin_is_isolated_with_its_name_and_the_others_still_run():
    calls: list[str] = []
    host = build_plugin_host(load_entry_points=False, extra_plugins=[Plain1(calls), Broken(), Plain2(calls)])
    assert [m.provider for m in host.models()] == ["shipped"] * len(shipped_models())
    out = host.prepare_raw_curve(raw_curve("beam.dat"))
    assert out.notes == ["Plain2", "Plain1"]
    host.publish_result(a_result())
    assert calls == ["Plain2", "Plain1", "Plain2", "Plain1"]
    assert gui_hooks.menu_actions(host) == [] and gui_hooks.perspectives(host) == []
    assert host.problems == [
        "plugin 'Broken' failed in sasview_bnn_models: RuntimeError: model server unreachable",
        "plugin 'Broken' failed to prepare beam.dat sasentry01: ZeroDivisionError: bug in plugin",
        "plugin 'Broken' failed in sasview_bnn_result: OSError: disk full",
        "plugin 'Broken' failed in sasview_bnn_menu_actions: KeyError: 'menu'",
        "plugin 'Broken' returned int from sasview_bnn_perspectives, not a list; ignored",
    ]


def test_a_wrapper_that_raises_is_reported_and_lets_the_result_through():
    class BrokenWrappers:
        @hookimpl(wrapper=True)
        def sasview_bnn_models(self):
            raise RuntimeError("before the yield")
            yield  # pragma: no cover

        @hookimpl(wrapper=True)
        def sasview_bnn_result(self, result):
            yield
            raise RuntimeError("after the yield")

        @hookimpl(hookwrapper=True)
        def sasview_bnn_prepare_raw_curve(self, curve):
            outcome = yield
            outcome.get_result()[0].notes.append("inspected")
            raise ValueError("old-style teardown")

    class NoYield:
        @hookimpl(wrapper=True)
        def sasview_bnn_grid_columns(self):
            if False:
                yield

    calls: list[str] = []
    host = build_plugin_host(load_entry_points=False, extra_plugins=[ReceiptSink(), Plain1(calls), BrokenWrappers(), NoYield()])
    assert [m.provider for m in host.models()] == ["shipped"] * len(shipped_models())
    assert host.manager.hook.sasview_bnn_result(result=a_result("r.txt")) == ["stored r.txt"]
    assert host.prepare_raw_curve(raw_curve("w.dat")).notes == ["Plain1", "inspected"]
    assert gui_hooks.grid_columns(host) == []
    assert host.problems == [
        "plugin 'BrokenWrappers' failed in sasview_bnn_models: RuntimeError: before the yield",
        "plugin 'BrokenWrappers' failed in sasview_bnn_result: RuntimeError: after the yield",
        "plugin 'BrokenWrappers' failed to prepare w.dat sasentry01: ValueError: old-style teardown",
        "plugin 'NoYield' failed in sasview_bnn_grid_columns: its wrapper did not yield; ignored",
    ]


def test_chains_in_concurrent_threads_and_nested_calls_do_not_mix():
    barrier = threading.Barrier(2, timeout=10)

    class Slow:
        @hookimpl(tryfirst=True)
        def sasview_bnn_prepare_raw_curve(self, curve):
            if curve.source.startswith("thread"):
                barrier.wait()  # both threads are inside their chains at once
            return dataclasses.replace(curve, notes=[*curve.notes, f"slow:{curve.source}"])

    class Nested:
        def __init__(self) -> None:
            self.host = None

        @hookimpl
        def sasview_bnn_prepare_raw_curve(self, curve):
            if curve.source == "outer":
                inner = self.host.prepare_raw_curve(raw_curve("inner"))
                return dataclasses.replace(curve, notes=[*curve.notes, f"nested:{'|'.join(inner.notes)}"])
            return None

    nested = Nested()
    host = build_plugin_host(load_entry_points=False, extra_plugins=[Plain1([]), Slow(), nested])
    nested.host = host
    outputs: dict[str, Curve] = {}

    def run(name: str) -> None:
        outputs[name] = host.prepare_raw_curve(raw_curve(name))

    threads = [threading.Thread(target=run, args=(f"thread{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert outputs["thread0"].notes == ["slow:thread0", "Plain1"] and outputs["thread1"].notes == ["slow:thread1", "Plain1"]
    assert host.prepare_raw_curve(raw_curve("outer")).notes == ["slow:outer", "nested:slow:inner|Plain1", "Plain1"]
    assert host.problems == []


def test_the_external_example_plugin_still_works_next_to_ordered_plugins(tmp_path, monkeypatch):
    sink = tmp_path / "results.jsonl"
    monkeypatch.setenv("SASVIEW_BNN_EXAMPLE_SINK", str(sink))
    calls: list[str] = []
    host = build_plugin_host(extra_plugins=[First(calls), Last(calls)])
    assert "example" in host.plugin_names()
    (model,) = [m for m in host.models() if m.name == "example-linear-heads"]
    assert model.provider == "example" and Path(model.path).is_file()
    host.publish_result(a_result("one.txt"))
    assert calls == ["First", "Last"]
    (line,) = sink.read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["file"] == "one.txt"
    (impl,) = [i for i in getattr(host.manager.hook, PREPARE_HOOK).get_hookimpls() if i.plugin_name == "First"]
    assert impl.tryfirst
    assert not [p for p in host.problems if "example" in p]


def test_the_ui_hooks_are_the_guis_own_and_join_the_same_manager_when_the_gui_is_used():
    import pluggy

    from sasview_bnn_plugin.plugins import hookspecs as runtime_hookspecs

    assert not [name for name in dir(runtime_hookspecs) if name in gui_hooks.LIST_HOOKS]

    class Columns:
        @hookimpl(tryfirst=True)
        def sasview_bnn_grid_columns(self):
            return [("first", str)]

    class MoreColumns:
        @hookimpl
        def sasview_bnn_grid_columns(self):
            return [("second", repr)]

    host = build_plugin_host(load_entry_points=False, extra_plugins=[Columns(), MoreColumns()])
    caller = getattr(host.manager.hook, gui_hooks.GRID_COLUMNS_HOOK)
    assert caller.spec is None  # a host built for the runtime knows no UI hook
    assert gui_hooks.grid_columns(host) == [("first", str), ("second", repr)]  # tryfirst, then pluggy's order
    assert caller.spec is not None and caller.spec.namespace is gui_hooks  # the GUI's specs, in the same manager
    gui_hooks.add_to(host)  # once: adding them again changes nothing
    assert host.problems == []

    class WrongArguments:
        @hookimpl
        def sasview_bnn_menu_actions(self, window):
            return []

    gui_host = build_plugin_host(load_entry_points=False, extra_hookspecs=[gui_hooks])
    assert getattr(gui_host.manager.hook, gui_hooks.MENU_ACTIONS_HOOK).spec is not None
    with pytest.raises(pluggy.PluginValidationError):
        gui_host.manager.register(WrongArguments())
