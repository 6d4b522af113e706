"""Trends over a series (``classify --trend``, ``watch --trend``, the perspective's Trend window).

The onset rule is tested on constructed probability sequences; the whole path
on a simulated series in which aggregation sets in halfway (a sphere curve
from sasmodels plus a low-q power-law upturn whose amplitude grows from 0 at
frame 10 of 20), classified with the shipped model.
"""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from sasview_bnn_plugin.model.classifier import BNNClassifier
from sasview_bnn_plugin.cli import main
from sasview_bnn_plugin.core.curve import Curve, data1d_metadata
from sasview_bnn_plugin.io.loading import CurveLoader
from sasview_bnn_plugin.model.catalog import shipped_model_files
from sasview_bnn_plugin.core.result import ClassificationResult
from sasview_bnn_plugin.core.taxonomy import ANOMALY_NAMES, CLASS_NAMES
from sasview_bnn_plugin.core.trend import ONSET_RULE, anomaly_onset, first_sustained, series_onset, trend_axis

PNG = b"\x89PNG\r\n\x1a\n"
ONE_D = Path(__import__("sasdata").__file__).parent / "example_data" / "1d_data"
#: The frame from which the simulated upturn is present, and the series length.
ONSET_TRUTH, N_FRAMES = 10, 20


# -- the onset rule on constructed sequences ---------------------------------------------------


def test_first_sustained_needs_k_frames_in_a_row():
    assert first_sustained([0, 1, 1, 0, 1, 1, 1, 1], k=3) == 4
    assert first_sustained([1, 1, 1], k=3) == 0
    assert first_sustained([1, 1], k=3) is None  # too short to confirm
    assert first_sustained([0, 1, 0, 1, 0], k=1) == 1
    with pytest.raises(ValueError):
        first_sustained([1], k=0)


def test_onset_is_the_first_frame_of_a_sustained_anomaly():
    clean = np.full(20, 0.05)
    assert anomaly_onset(clean).frame is None
    step = clean.copy()
    step[10:] = 0.9
    assert anomaly_onset(step) == anomaly_onset(step, None)
    assert anomaly_onset(step).frame == 10 and anomaly_onset(step).criterion == "1 − p(clean)"
    # one-off and two-frame excursions are not an onset; exactly 0.5 counts
    noisy = step.copy()
    noisy[[2, 5, 6]] = 0.95
    noisy[10] = 0.5
    assert anomaly_onset(noisy).frame == 10
    dip = step.copy()
    dip[11] = 0.3  # the run is broken: the onset moves to the next run of three
    assert anomaly_onset(dip).frame == 12
    # a run at the end of the series, shorter than k, is not (yet) marked
    late = clean.copy()
    late[-2:] = 0.99
    assert anomaly_onset(late).frame is None
    assert anomaly_onset(late, k=2).frame == 18
    # NaN (a frame without an answer) never counts
    holes = step.copy()
    holes[12] = np.nan
    assert anomaly_onset(holes).frame == 13


def test_presence_of_one_anomaly_can_mark_the_onset_earlier():
    p_anomaly = np.full(12, 0.1)
    p_anomaly[8:] = 0.8
    presence = np.full((12, len(ANOMALY_NAMES)), 0.05)
    presence[5:, ANOMALY_NAMES.index("artefact")] = 0.7  # an artefact present while aggregation dominates later
    onset = anomaly_onset(p_anomaly, presence)
    assert onset.frame == 5 and onset.criterion == "p(artefact present)"
    # it must be one and the same anomaly for k frames: alternating anomalies do not count
    alternating = np.full((12, len(ANOMALY_NAMES)), 0.05)
    for frame in range(2, 8):
        alternating[frame, frame % 2] = 0.9
    assert anomaly_onset(np.full(12, 0.1), alternating).frame is None
    assert anomaly_onset(p_anomaly, np.full((12, len(ANOMALY_NAMES)), np.nan)).frame == 8


def _result(p_clean: float, metadata: dict | None = None, presence: np.ndarray | None = None) -> ClassificationResult:
    """A classified result with posterior samples around p(clean) (the rest aggregation)."""
    samples = np.zeros((4, len(CLASS_NAMES)))
    samples[:, 0] = np.clip(p_clean + np.array([-0.02, -0.01, 0.01, 0.02]), 0, 1)
    samples[:, 1] = 1 - samples[:, 0]
    extra = {} if presence is None else {"anomaly_samples": np.repeat(presence[None, :], 4, axis=0)}
    result = ClassificationResult.from_samples(samples, 0.1, 1.25, file="f", dataset="", coverage=0.5, q_window=(0.01, 0.3), n_points=100, **extra)
    result.metadata = dict(metadata or {})
    return result


def test_series_onset_counts_positions_in_the_list_and_skips_refused_curves():
    results = [_result(0.95) for _ in range(4)] + [ClassificationResult.error("bad", "", "refused")] + [_result(0.1) for _ in range(4)]
    results[6] = ClassificationResult.error("bad", "", "refused")  # a refused frame inside the run does not break it
    onset = series_onset(results)
    assert onset.frame == 5
    axis = trend_axis(results)
    assert list(axis.frames) == [0, 1, 2, 3, 5, 7, 8] and axis.label == "frame" and axis.note is None


def test_trend_axis_reads_time_temperature_and_any_numeric_key_from_the_metadata():
    start = dt.datetime(2024, 5, 1, 12, 0, 0)
    times = [start, (start + dt.timedelta(seconds=30)).isoformat(), "11-May-2016 12:15:34", 1714564890.0]
    results = [_result(0.9, {"time": t}) for t in times[:2]]
    axis = trend_axis(results, "time")
    assert axis.note is None and axis.kind == "time" and list(axis.values) == [0.0, 30.0] and axis.label.endswith("(s)")
    long = [_result(0.9, {"time": start + dt.timedelta(minutes=10 * k)}) for k in range(3)]
    assert list(trend_axis(long, "time").values) == [0.0, 10.0, 20.0] and "(min)" in trend_axis(long, "time").label
    assert trend_axis([_result(0.9, {"time": times[2]})], "time").note is None  # sasdata's CanSAS date format
    heated = [_result(0.9, {"temperature": 20.0 + 5 * k, "temperature_unit": "C"}) for k in range(3)]
    axis = trend_axis(heated, "temperature")
    assert list(axis.values) == [20.0, 25.0, 30.0] and axis.label == "temperature (C)"
    keyed = [_result(0.9, {"Concentration": str(0.5 * k)}) for k in range(3)]
    assert list(trend_axis(keyed, "concentration").values) == [0.0, 0.5, 1.0]  # matched case-insensitively
    # one frame without the value: the frame number, and a note saying why
    heated[1].metadata.pop("temperature")
    axis = trend_axis(heated, "temperature")
    assert axis.kind == "index" and list(axis.values) == [0.0, 1.0, 2.0]
    assert axis.note == "'temperature' is not in the metadata of 1 of 3 curve(s) as a number; the trend is drawn against the frame number"
    assert "as a time" in trend_axis([_result(0.9, {"time": "yesterday"})], "time").note


def test_metadata_come_from_sasdata_and_from_the_nxcansas_reader(tmp_path):
    (curve,) = CurveLoader().load(ONE_D / "ISIS_Polymer_Blend_TK49.xml")
    assert curve.metadata["time"] == "10-Oct-2013 16:00:29" and curve.metadata["run"] == "80514"
    path = write_series_nxcansas(tmp_path / "series.h5", [np.geomspace(1e-3, 0.3, 50)] * 2, [np.ones(50)] * 2, temperatures=[25.0, 30.0])
    curves = CurveLoader().load(path)
    assert [c.metadata["temperature"] for c in curves] == [25.0, 30.0]
    assert curves[0].metadata["temperature_unit"] == "C" and curves[1].metadata["time"] == "2024-05-01T12:01:00"
    assert data1d_metadata(object()) == {}  # never raises


# -- the simulated series with the shipped model -------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> Path:
    return shipped_model_files()[0]


def aggregation_series(seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """q, I and dI of 20 frames: polydisperse spheres (sasmodels), from frame 10 on plus a q^-3 upturn
    growing from 0 (0.3 x I(q_min) at q_min per frame), 2 % noise."""
    pytest.importorskip("sasmodels")
    from sasmodels.core import load_model
    from sasmodels.direct_model import call_kernel

    q = np.geomspace(3e-3, 0.5, 300)
    kernel = load_model("sphere").make_kernel([q])
    spheres = call_kernel(kernel, dict(scale=0.01, background=0.001, radius=40, radius_pd=0.1, radius_pd_n=15, sld=4, sld_solvent=1))
    rng = np.random.default_rng(seed)
    intensities, errors = [], []
    for frame in range(N_FRAMES):
        amplitude = 0.3 * max(0, frame - ONSET_TRUTH + 1)
        intensity = spheres + amplitude * spheres[0] * (q / q[0]) ** -3.0
        d_intensity = 0.02 * intensity
        intensities.append(intensity + rng.normal(0.0, 1.0, q.size) * d_intensity)
        errors.append(d_intensity)
    return q, intensities, errors


def write_series_nxcansas(path: Path, qs, intensities, errors=None, temperatures=None) -> Path:
    """One NXcanSAS SASentry per frame, with SASsample temperature (°C) and a start time a minute apart."""
    with h5py.File(path, "w") as h5:
        for k, (q, intensity) in enumerate(zip(qs, intensities)):
            entry = h5.create_group(f"sasentry{k + 1:02d}")
            entry.attrs.update({"NX_class": "NXentry", "canSAS_class": "SASentry", "version": "1.0"})
            entry["definition"] = "NXcanSAS"
            entry["title"] = f"frame {k:02d}"
            entry["run"] = str(1000 + k)
            entry["start_time"] = (dt.datetime(2024, 5, 1, 12, 0) + dt.timedelta(minutes=k)).isoformat()
            data = entry.create_group("sasdata01")
            data.attrs.update({"NX_class": "NXdata", "canSAS_class": "SASdata", "signal": "I", "I_axes": "Q", "Q_indices": "0"})
            data["Q"] = q
            data["Q"].attrs["units"] = "1/angstrom"
            data["I"] = intensity
            data["I"].attrs["units"] = "1/cm"
            if errors is not None:
                data["I"].attrs["uncertainties"] = "Idev"
                data["Idev"] = errors[k]
                data["Idev"].attrs["units"] = "1/cm"
            if temperatures is not None:
                sample = entry.create_group("sassample")
                sample.attrs.update({"NX_class": "NXsample", "canSAS_class": "SASsample"})
                sample["temperature"] = temperatures[k]
                sample["temperature"].attrs["units"] = "C"
    return path


def test_the_marked_frame_is_within_two_frames_of_where_aggregation_sets_in(shipped):
    classifier = BNNClassifier(shipped)
    for seed in (0, 1, 2):
        q, intensities, errors = aggregation_series(seed)
        results = classifier.classify([(q, i, di, None, "1/A") for i, di in zip(intensities, errors)])
        assert all(r.ok for r in results)
        onset = series_onset(results)
        print(f"seed {seed}: onset {onset}; p(anomaly) " + " ".join(f"{r.anomaly_probability:.2f}" for r in results))
        assert onset.frame is not None and abs(onset.frame - ONSET_TRUTH) <= 2
        assert all(r.label == "clean" for r in results[: ONSET_TRUTH - 1]) and results[-1].label == "aggregation"


def test_classify_trend_writes_the_png_against_temperature_and_notes_a_missing_key(shipped, tmp_path, capsys):
    q, intensities, errors = aggregation_series(3)
    temperatures = [20.0 + 2.5 * k for k in range(N_FRAMES)]
    data = write_series_nxcansas(tmp_path / "series.h5", [q] * N_FRAMES, intensities, errors, temperatures)
    trend, out = tmp_path / "trend.png", tmp_path / "r.csv"
    assert main(["classify", str(data), "-o", str(out), "--trend", str(trend), "--trend-x", "temperature"]) == 0
    assert trend.read_bytes()[:8] == PNG and trend.stat().st_size > 20_000
    assert "--trend:" not in capsys.readouterr().err
    assert main(["classify", str(data), "-o", str(out), "--trend", str(tmp_path / "t2.png"), "--trend-x", "pressure"]) == 0
    err = capsys.readouterr().err
    assert "--trend: 'pressure' is not in the metadata of 20 of 20 curve(s) as a number; the trend is drawn against the frame number" in err
    assert (tmp_path / "t2.png").read_bytes()[:8] == PNG
    assert main(["classify", str(data), "-o", str(out), "--trend-x", "time"]) == 2
    assert "--trend-x needs --trend FILE.png" in capsys.readouterr().err


def test_the_perspective_draws_the_trend_with_the_same_renderer(shipped):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    import ast

    from sasview_bnn_plugin.io import plotting

    # One renderer: the perspective draws with io/plotting.py's functions (there is no GUI copy).
    package = Path(plotting.__file__).resolve().parents[1]
    assert not (package / "gui" / "figures.py").exists()
    tree = ast.parse((package / "gui" / "perspective.py").read_text())
    drawn = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and n.module.endswith("io.plotting") for a in n.names}
    assert {"draw_curve", "draw_probabilities", "result_figure", "trend_figure"} <= drawn
    q, intensities, errors = aggregation_series(4)
    results = BNNClassifier(shipped).classify([(q, i, di, None, "1/A") for i, di in zip(intensities, errors)])
    figure = plotting.trend_figure(results)
    axes = figure.get_axes()
    assert len(axes) == 1  # the shipped model has no anomalies-present output: one panel
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert labels[: len(CLASS_NAMES)] == list(CLASS_NAMES)
    marked = [label for label in labels if label.startswith("first anomaly: frame ")]
    assert len(marked) == 1 and ONSET_RULE.split(",")[0][:20] in marked[0].replace("\n", " ")
    assert len(axes[0].collections) >= len(CLASS_NAMES)  # one posterior band per class
    # with anomalies-present outputs: a second panel with a band per anomaly
    presence = np.full(len(ANOMALY_NAMES), 0.2)
    figure = Figure()
    plotting.draw_trend(figure, [_result(0.9, presence=presence) for _ in range(3)])
    assert len(figure.get_axes()) == 2


@pytest.mark.slow
def test_watch_redraws_the_trend_after_each_batch(shipped, tmp_path):
    import subprocess

    q, intensities, errors = aggregation_series(5)
    folder = tmp_path / "incoming"
    folder.mkdir()
    trend, out, log = tmp_path / "trend.png", tmp_path / "r.csv", tmp_path / "watch.log"
    exe = str(Path(sys.executable).with_name("sasview-bnn"))
    with log.open("w") as err:
        proc = subprocess.Popen([exe, "watch", str(folder), "-o", str(out), "--interval", "0.2", "--settle", "0.5", "--trend", str(trend)],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        staged = tmp_path / "staged"
        write_series_nxcansas(staged, [q] * 3, intensities[:3], errors[:3])
        shutil.move(staged, folder / "first.h5")
        deadline = time.monotonic() + 60
        while not trend.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        first = trend.stat().st_mtime_ns, trend.read_bytes()
        write_series_nxcansas(staged, [q] * 3, intensities[10:13], errors[10:13])
        shutil.move(staged, folder / "second.h5")
        while trend.stat().st_mtime_ns == first[0]:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert trend.read_bytes()[:8] == PNG and trend.read_bytes() != first[1]
    assert len(out.read_text().splitlines()) == 1 + 6
