"""Live classification in Bluesky: a real RunEngine, ophyd.sim signals producing simulated curves, the verdict callback.

No hardware and no mocks of bluesky: the curves are sphere form factors I(q) computed with numpy
(plus an aggregation upturn, over-subtraction, bad data) and read through ``ophyd.sim.SynSignal``;
the shipped model classifies them.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bluesky")
pytest.importorskip("ophyd")
pytest.importorskip("event_model")

import bluesky.plan_stubs as bps  # noqa: E402
import bluesky.plans as bp  # noqa: E402
from bluesky import RunEngine  # noqa: E402
from bluesky.utils import RunEngineInterrupted  # noqa: E402
from event_model import DocumentNames, schema_validators  # noqa: E402
from ophyd.sim import SynSignal  # noqa: E402

from sasview_bnn_plugin.bluesky import (  # noqa: E402
    VERDICT_STREAM,
    BNNCallback,
    PauseOnAnomalies,
    bnn_run_router,
    emit_to_run_engine,
)
from sasview_bnn_plugin.model.classifier import BNNClassifier  # noqa: E402
from sasview_bnn_plugin.plugins.hookspecs import hookimpl  # noqa: E402
from sasview_bnn_plugin.plugins.host import build_plugin_host  # noqa: E402
from sasview_bnn_plugin.core.result import CSV_COLUMNS  # noqa: E402
from sasview_bnn_plugin.core.taxonomy import ANOMALY_NAMES, CLASS_NAMES  # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "onnx_models" / "sasview_bnn_vi16_1m.onnx"
Q = np.logspace(np.log10(3e-3), np.log10(0.5), 200)  # 1/Å

#: The verdict fields promised: the CSV columns less file/dataset, plus the link to the event judged.
VERDICT_KEYS = (set(CSV_COLUMNS) - {"file", "dataset"}) | {"anomalous", "source_stream", "source_seq_num", "source_event"}


def sphere(q: np.ndarray, radius: float = 50.0, background: float = 1e-3) -> np.ndarray:
    x = q * radius
    amplitude = 3.0 * (np.sin(x) - x * np.cos(x)) / x**3
    return amplitude**2 + background


def make_curve(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(I, dI) on :data:`Q` for a kind of sample: clean, aggregation, oversubtracted, or bad data."""
    if kind == "clean":
        intensity = sphere(Q)
    elif kind == "aggregation":
        intensity = sphere(Q) + 1e-5 * Q**-3.0  # clusters: a low-q power-law upturn
    elif kind == "oversubtracted":
        intensity = sphere(Q) - 2e-3
    elif kind == "nan":
        return np.full_like(Q, np.nan), np.full_like(Q, np.nan)
    elif kind == "short":
        return sphere(Q[:10]), 0.02 * sphere(Q[:10])
    else:
        raise ValueError(kind)
    d_intensity = 0.02 * np.abs(intensity) + 1e-4
    return intensity + rng.normal(0.0, d_intensity), d_intensity


class UnitSignal(SynSignal):
    """A SynSignal whose descriptor reports engineering units, as an EPICS signal's EGU does."""

    def __init__(self, func, *, name: str, units: str | None = None, **kwargs) -> None:
        self._units = units
        super().__init__(func, name=name, **kwargs)

    def describe(self):
        described = super().describe()
        if self._units:
            described[self.name]["units"] = self._units
        return described


class Sample:
    """Simulated detector: each trigger of ``I`` measures the next curve of ``kinds``; ``dI`` reads its errors."""

    def __init__(self, kinds: list[str], q: np.ndarray = Q, q_units: str | None = "1/A", seed: int = 7) -> None:
        self.kinds = list(kinds)
        self.rng = np.random.default_rng(seed)
        self.taken = 0
        self._curve = make_curve("clean", self.rng)
        self.I = SynSignal(self._measure, name="I")
        self.dI = SynSignal(lambda: self._curve[1], name="dI")
        self.q = UnitSignal(lambda: q, name="q", units=q_units)
        self.taken = 0  # the SynSignals read their function once when made

    def _measure(self) -> np.ndarray:
        kind = self.kinds[min(self.taken, len(self.kinds) - 1)]
        self.taken += 1
        self._curve = make_curve(kind, self.rng)
        return self._curve[0]

    @property
    def detectors(self) -> list:
        return [self.I, self.dI, self.q]  # I first: it measures, dI then reads the same curve


class Recorder:
    """A sasview-bnn plugin that keeps what the result and anomaly hooks receive."""

    def __init__(self) -> None:
        self.results: list = []
        self.anomalies: list = []

    @hookimpl
    def sasview_bnn_result(self, result):
        self.results.append(result)

    @hookimpl
    def sasview_bnn_anomaly(self, result):
        self.anomalies.append(result)


@pytest.fixture(scope="module")
def classifier() -> BNNClassifier:
    """The one model session of this module (a plugin host is given to each callback)."""
    return BNNClassifier(MODEL, intra_op_threads=1)


@pytest.fixture()
def RE():
    engine = RunEngine({})
    run_docs: list[tuple[str, dict]] = []
    engine.subscribe(lambda name, doc: run_docs.append((name, doc)))
    engine.run_docs = run_docs  # everything the RunEngine dispatched
    yield engine
    if engine.state != "idle":
        engine.abort()


def verdicts_of(docs: list[tuple[str, dict]]) -> tuple[list[dict], list[dict]]:
    """The verdict stream's descriptors and events among ``docs``."""
    descriptors = [d for n, d in docs if n == "descriptor" and d["name"] == VERDICT_STREAM]
    uids = {d["uid"] for d in descriptors}
    events = [d for n, d in docs if n == "event" and d["descriptor"] in uids]
    return descriptors, events


def primary_events(docs: list[tuple[str, dict]]) -> list[dict]:
    primary = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == "primary"}
    return [d for n, d in docs if n == "event" and d["descriptor"] in primary]


def stops(docs: list[tuple[str, dict]]) -> list[dict]:
    return [d for n, d in docs if n == "stop"]


def test_every_event_gets_one_verdict_document_with_the_expected_fields(RE, classifier, tmp_path):
    recorder = Recorder()
    docs: list = []
    output = tmp_path / "verdicts.csv"
    bnn = BNNCallback(
        emit=docs.append, classifier=classifier, plugin_host=build_plugin_host(load_entry_points=False), plugins=[recorder], output=output
    )
    RE.subscribe(bnn)
    sample = Sample(["clean", "clean", "aggregation", "oversubtracted"])
    (uid,) = RE(bp.count(sample.detectors, num=4))
    bnn.close()

    descriptors, events = verdicts_of(docs)
    assert len(docs) == 5 and len(descriptors) == 1 and len(events) == 4  # emit got only the verdict stream
    (descriptor,) = descriptors
    assert descriptor["run_start"] == uid and set(descriptor["data_keys"]) == VERDICT_KEYS
    assert descriptor["configuration"]["sasview-bnn"]["data"]["model"] == classifier.name
    schema_validators[DocumentNames.descriptor].validate(descriptor)
    for event in events:
        schema_validators[DocumentNames.event].validate(event)
        assert set(event["data"]) == set(event["timestamps"]) == VERDICT_KEYS
    judged = primary_events(RE.run_docs)
    assert [e["data"]["source_event"] for e in events] == [e["uid"] for e in judged]
    assert [e["data"]["source_seq_num"] for e in events] == [1, 2, 3, 4] == [e["seq_num"] for e in events]

    data = [e["data"] for e in events]
    assert [d["label"] for d in data] == ["clean", "clean", "aggregation", "oversubtracted"]
    assert [d["anomalous"] for d in data] == [False, False, True, True]
    for d in data:
        assert d["status"] == "ok" and d["q_unit_used"] == "1/A" and d["source_stream"] == "primary"
        assert 0.5 < d["confidence"] <= 1.0 and 0.0 <= d["anomaly_probability"] <= 1.0
        assert math.isclose(sum(d[f"p_{name}"] for name in CLASS_NAMES), 1.0, abs_tol=1e-3)
        assert d["is_novel"] is False and math.isfinite(d["novelty_score"])
        # The shipped model has none of the optional outputs: empty / NaN, the keys still there.
        assert d["anomalies_present"] == "" and d["prediction_set"] == ""
        assert math.isnan(d["novelty_p_value"]) and all(math.isnan(d[f"p_present_{a}"]) for a in ANOMALY_NAMES)

    # The result hook saw every curve, the anomaly hook the two anomalous ones.
    assert [r.label for r in recorder.results] == [d["label"] for d in data]
    assert [r.label for r in recorder.anomalies] == ["aggregation", "oversubtracted"]
    # The usual CSV, one row per curve, keyed by the run's uid and the event.
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["label"] for r in rows] == [d["label"] for d in data]
    assert {r["file"] for r in rows} == {uid} and rows[2]["dataset"] == "primary event 3"
    assert stops(RE.run_docs)[0]["exit_status"] == "success" and not bnn.problems


def test_the_q_unit_comes_from_the_descriptor_else_the_configured_default(RE, classifier):
    docs: list = []
    host = build_plugin_host(load_entry_points=False)
    token = RE.subscribe(BNNCallback(emit=docs.append, classifier=classifier, plugin_host=host))
    RE(bp.count(Sample(["clean"], q=10 * Q, q_units="1/nm").detectors, num=2))
    _, events = verdicts_of(docs)
    assert [(e["data"]["label"], e["data"]["q_unit_used"]) for e in events] == [("clean", "1/nm")] * 2

    RE.unsubscribe(token)
    docs.clear()
    RE.subscribe(BNNCallback(emit=lambda name, doc: docs.append((name, doc)), classifier=classifier, plugin_host=host, q_unit="1/nm"))
    RE(bp.count(Sample(["clean"], q=10 * Q, q_units=None).detectors, num=1))  # no units in the descriptor
    _, events = verdicts_of(docs)
    assert [(e["data"]["label"], e["data"]["q_unit_used"]) for e in events] == [("clean", "1/nm")]


def test_bad_events_get_error_verdicts_and_the_scan_completes(RE, classifier):
    class BrokenSink:
        @hookimpl
        def sasview_bnn_result(self, result):
            raise OSError("dashboard unreachable")

    docs: list = []
    host = build_plugin_host(load_entry_points=False, extra_plugins=[BrokenSink()])
    bnn = BNNCallback(emit=docs.append, classifier=classifier, plugin_host=host)
    token = RE.subscribe(bnn)
    sample = Sample(["nan", "short", "clean", "nan"])
    RE(bp.count(sample.detectors, num=4))
    RE(bp.count([sample.q], num=2))  # a primary stream with no intensity at all
    RE.unsubscribe(token)

    _, events = verdicts_of(docs)
    data = [e["data"] for e in events]
    assert [d["status"] for d in data] == ["error", "error", "ok", "error", "error", "error"]
    assert "NaN" in data[0]["message"] and "10 values but q has 200" in data[1]["message"]
    assert data[2]["label"] == "clean"
    assert "no intensity field 'I'" in data[4]["message"] and data[4]["label"] == ""
    for d in data:
        if d["status"] == "error":
            assert d["anomalous"] is False and math.isnan(d["confidence"])
    assert [s["exit_status"] for s in stops(RE.run_docs)] == ["success", "success"]
    assert any("dashboard unreachable" in p for p in host.problems)  # the failing plugin is reported, nothing stopped

    # An emit that raises: reported in problems, the scan completes all the same.
    def failing_emit(name, doc):
        raise ConnectionError("Tiled is down")

    broken = BNNCallback(emit=failing_emit, classifier=classifier, plugin_host=host)
    RE.subscribe(broken)
    RE(bp.count(Sample(["clean"]).detectors, num=2))
    assert stops(RE.run_docs)[-1]["exit_status"] == "success"
    assert broken.n_verdicts == 2 and any("Tiled is down" in p for p in broken.problems)


class RadialAverage:
    """A reducer plugin: the azimuthal average of a frame about the beam centre, geometry from the start document."""

    def __init__(self) -> None:
        self.metadata: list[dict] = []

    @hookimpl
    def sasview_bnn_reduce_frame(self, frame, metadata):
        self.metadata.append(metadata)
        geometry = metadata["start"]["geometry"]
        rows, cols = np.indices(frame.shape)
        radius = np.hypot(rows - geometry["centre"][0], cols - geometry["centre"][1])
        ring = np.rint(radius).astype(int)
        counts = np.bincount(ring.ravel())
        sums = np.bincount(ring.ravel(), weights=frame.ravel())
        keep = np.flatnonzero(counts >= 4)[1:]  # full rings, not the centre pixel
        intensity = sums[keep] / counts[keep]
        return keep * geometry["q_per_pixel"], intensity, None, "1/A"


def test_the_reducer_hook_turns_a_2d_frame_into_a_curve(RE, classifier):
    size, q_per_pixel = 256, 0.0025
    centre = (size / 2 - 0.5, size / 2 - 0.5)
    rows, cols = np.indices((size, size))
    q_map = np.hypot(rows - centre[0], cols - centre[1]) * q_per_pixel
    frames = [sphere(np.maximum(q_map, q_per_pixel / 2)) * 1e4, np.ones(5)]  # a sphere's pattern, then a broken read
    taken = [0]

    def expose() -> np.ndarray:
        frame = frames[min(taken[0], len(frames) - 1)]
        taken[0] += 1
        return frame

    detector = SynSignal(expose, name="frame")
    taken[0] = 0  # the SynSignal read its function once when made

    reducer = RadialAverage()
    docs: list = []
    host = build_plugin_host(load_entry_points=False, extra_plugins=[reducer])
    token = RE.subscribe(BNNCallback(emit=docs.append, classifier=classifier, plugin_host=host, image_field="frame"))
    RE(bp.count([detector], num=2), geometry={"centre": list(centre), "q_per_pixel": q_per_pixel})

    _, events = verdicts_of(docs)
    first, second = (e["data"] for e in events)
    assert first["status"] == "ok" and first["label"] == "clean" and first["q_unit_used"] == "1/A"
    assert second["status"] == "error" and "not a 2D detector frame" in second["message"]
    (seen,) = reducer.metadata  # the second frame was refused before any plugin was asked
    assert seen["field"] == "frame" and seen["descriptor"]["name"] == "primary" and seen["data_key"]["shape"] == [size, size]

    # Without a reducer plugin the frame gets an error verdict saying what is missing.
    RE.unsubscribe(token)
    docs.clear()
    RE.subscribe(BNNCallback(emit=docs.append, classifier=classifier, plugin_host=build_plugin_host(load_entry_points=False), image_field="frame"))
    RE(bp.count([SynSignal(lambda: np.ones((64, 64)), name="frame")], num=1))
    _, events = verdicts_of(docs)
    assert [e["data"]["status"] for e in events] == ["error"] and "sasview_bnn_reduce_frame" in events[0]["data"]["message"]


def test_verdicts_emitted_to_the_run_engine_reach_its_subscribers_in_the_same_run(RE, classifier):
    bnn = BNNCallback(emit=emit_to_run_engine(RE), classifier=classifier, plugin_host=build_plugin_host(load_entry_points=False))
    RE.subscribe(bnn_run_router(bnn))
    (uid,) = RE(bp.count(Sample(["clean", "aggregation"]).detectors, num=2))
    descriptors, events = verdicts_of(RE.run_docs)  # what every subscriber of the RunEngine received
    assert [d["run_start"] for d in descriptors] == [uid]
    assert [e["data"]["label"] for e in events] == ["clean", "aggregation"]
    assert bnn.n_verdicts == 2 and not bnn.problems  # its own documents came back to it and were ignored
    names = [n for n, _ in RE.run_docs]
    assert names.index("stop") == len(names) - 1  # all verdicts before the run's stop


def test_n_anomalous_curves_in_a_row_pause_the_scan_and_resume_completes_it(RE, classifier):
    pause = PauseOnAnomalies(RE, n=3)
    docs: list = []
    bnn = BNNCallback(emit=docs.append, classifier=classifier, plugin_host=build_plugin_host(load_entry_points=False), plugins=[pause])
    RE.subscribe(bnn)
    kinds = ["clean", "aggregation", "clean", "aggregation", "oversubtracted", "aggregation", "clean", "clean", "clean"]
    sample = Sample(kinds)

    with pytest.raises(RunEngineInterrupted):
        RE(bp.count(sample.detectors, num=len(kinds), delay=0.3))
    assert RE.state == "paused"
    assert pause.tripped and "3 anomalous or novel curves in a row" in pause.justification
    _, events = verdicts_of(docs)
    assert [e["data"]["label"] for e in events] == kinds[:6]  # paused right after the third in a row

    pause.clear()
    RE.resume()
    assert RE.state == "idle" and not pause.tripped
    _, events = verdicts_of(docs)
    assert [e["data"]["label"] for e in events] == kinds  # one verdict per point, none measured twice
    assert len(primary_events(RE.run_docs)) == len(kinds)
    assert stops(RE.run_docs)[0]["exit_status"] == "success"


def test_a_clean_curve_resets_the_count_and_novel_only_counts_novel_curves(RE, classifier):
    pause = PauseOnAnomalies(RE, n=2)
    novel = PauseOnAnomalies(RE, n=1, novel_only=True)
    bnn = BNNCallback(classifier=classifier, plugin_host=build_plugin_host(load_entry_points=False), plugins=[pause, novel])
    RE.subscribe(bnn)
    RE(bp.count(Sample(["aggregation", "clean", "aggregation", "clean"]).detectors, num=4))
    assert RE.state == "idle" and bnn.n_verdicts == 4
    assert not pause.tripped and pause.in_a_row == 0 and not novel.tripped  # never 2 in a row; nothing novel
    with pytest.raises(ValueError):
        PauseOnAnomalies(RE, n=0)


def test_a_trip_after_the_scan_ended_leaves_the_run_engine_idle(RE, classifier):
    pause = PauseOnAnomalies(RE, n=1)
    RE.subscribe(BNNCallback(classifier=classifier, plugin_host=build_plugin_host(load_entry_points=False), plugins=[pause]))
    RE(bp.count(Sample(["aggregation"]).detectors, num=1))  # the last point trips it: no checkpoint left to pause at
    assert RE.state == "idle" and pause.tripped
    pause.clear()
    assert not pause.tripped and pause.in_a_row == 0


def test_a_callback_subscribed_in_the_middle_of_a_run_still_judges_its_events(RE, classifier):
    docs: list = []
    bnn = BNNCallback(emit=docs.append, classifier=classifier, plugin_host=build_plugin_host(load_entry_points=False))
    sample = Sample(["clean"])

    def plan():
        yield from bps.open_run()
        yield from bps.trigger_and_read(sample.detectors)
        RE.subscribe(bnn)  # too late for the start document, not for the next descriptor
        yield from bps.trigger_and_read(sample.detectors, name="later")
        yield from bps.close_run()

    bnn.streams = frozenset({"later"})
    (uid,) = RE(plan())
    descriptors, events = verdicts_of(docs)
    assert [d["run_start"] for d in descriptors] == [uid] and [e["data"]["label"] for e in events] == ["clean"]


def test_a_failing_reducer_is_skipped_and_a_bad_answer_is_an_error_verdict(RE, classifier):
    class Broken:
        @hookimpl
        def sasview_bnn_reduce_frame(self, frame):
            raise RuntimeError("no calibration file")

    class Garbage:
        @hookimpl(trylast=True)
        def sasview_bnn_reduce_frame(self, frame, metadata):
            return "I(q)"

    docs: list = []
    host = build_plugin_host(load_entry_points=False, extra_plugins=[Garbage(), Broken()])
    RE.subscribe(BNNCallback(emit=docs.append, classifier=classifier, plugin_host=host, image_field="frame"))
    RE(bp.count([SynSignal(lambda: np.ones((64, 64)), name="frame")], num=1))
    _, events = verdicts_of(docs)
    assert [e["data"]["status"] for e in events] == ["error"]
    assert "the reducer plugin returned str, not (q, I, dI, q_unit)" in events[0]["data"]["message"]
    assert any("no calibration file" in p for p in host.problems)
    assert stops(RE.run_docs)[0]["exit_status"] == "success"


def test_the_anomaly_hook_gets_anomalous_or_novel_results_only():
    from sasview_bnn_plugin.plugins.host import is_anomalous
    from sasview_bnn_plugin.core.result import ClassificationResult

    samples = np.tile(np.eye(len(CLASS_NAMES))[0], (4, 1))  # certain: clean
    clean = ClassificationResult.from_samples(samples, 0.1, 1.0, file="f", dataset="d", coverage=1.0, q_window=(1e-3, 0.5), n_points=200)
    novel = ClassificationResult.from_samples(samples, 5.0, 1.0, file="f", dataset="d", coverage=1.0, q_window=(1e-3, 0.5), n_points=200)
    refused = ClassificationResult.error("f", "d", "only 12 valid point(s)")
    assert (is_anomalous(clean), is_anomalous(novel), is_anomalous(refused)) == (False, True, False)
    recorder = Recorder()
    host = build_plugin_host(load_entry_points=False, extra_plugins=[recorder])
    for result in (clean, novel, refused):
        host.publish_result(result)
    assert recorder.results == [clean, novel, refused] and recorder.anomalies == [novel]


def test_the_rest_of_the_package_does_not_import_bluesky():
    import subprocess
    import sys

    probe = (
        "import sys, sasview_bnn_plugin.cli, sasview_bnn_plugin.model.classifier, sasview_bnn_plugin.plugins.host, "
        "sasview_bnn_plugin.cli.watch, sasview_bnn_plugin.cli.classify;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('bluesky', 'event_model', 'ophyd')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_frames_stored_as_external_files_are_filled_through_the_run_router(RE, classifier, tmp_path):
    from ophyd.sim import NumpySeqHandler, SynSignalWithRegistry

    size, q_per_pixel = 128, 0.004
    centre = (size / 2 - 0.5, size / 2 - 0.5)
    rows, cols = np.indices((size, size))
    frame = sphere(np.hypot(rows - centre[0], cols - centre[1]) * q_per_pixel + 1e-3) * 1e4
    detector = SynSignalWithRegistry(lambda: frame, name="frame", save_path=str(tmp_path))  # writes .npy files + datum docs
    host = build_plugin_host(load_entry_points=False, extra_plugins=[RadialAverage()])
    geometry = {"centre": list(centre), "q_per_pixel": q_per_pixel}

    plain, routed = [], []
    RE.subscribe(BNNCallback(emit=plain.append, classifier=classifier, plugin_host=host, image_field="frame"))
    routed_callback = BNNCallback(emit=routed.append, classifier=classifier, plugin_host=host, image_field="frame")
    RE.subscribe(bnn_run_router(routed_callback, {"NPY_SEQ": NumpySeqHandler}))
    RE(bp.count([detector], num=2), geometry=geometry)

    _, unfilled = verdicts_of(plain)
    assert [e["data"]["status"] for e in unfilled] == ["error"] * 2
    assert "reference to external data" in unfilled[0]["data"]["message"]
    _, filled = verdicts_of(routed)
    assert [(e["data"]["status"], e["data"]["label"]) for e in filled] == [("ok", "clean")] * 2
    assert stops(RE.run_docs)[0]["exit_status"] == "success"
