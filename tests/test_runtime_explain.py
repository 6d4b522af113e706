"""Where in q (``classify --explain``): occlusion of q-windows of the model input.

The neutral values and the strongest-range rule are tested on constructed
inputs; the map itself on simulated curves classified with the shipped model:
a clean sphere curve (sasmodels) with its first three points at the beamstop edge far below the
curve (an artefact by docs/taxonomy.md: "a single point or a few points at the beamstop edge far off
the curve"; a single spike would be a near miss, spikes need 3 and 1 % of the points), and plus a
narrow Gaussian Bragg peak with its second order at ratio 2, five times the
curve (ordered). The map must peak in (or next to) the window of the feature.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

from sasview_bnn_plugin.model.classifier import BNNClassifier
from sasview_bnn_plugin.cli import main
from sasview_bnn_plugin.core.curve import Curve
from sasview_bnn_plugin.model.explain import (
    DEFAULT_WINDOW_BINS,
    explain_result,
    occlude_window,
    occlusion_sensitivity,
    occlusion_windows,
    strongest_windows,
)
from sasview_bnn_plugin.model.catalog import shipped_model_files
from sasview_bnn_plugin.core.result import CSV_COLUMNS

PNG = b"\x89PNG\r\n\x1a\n"
Q = np.geomspace(3e-3, 0.5, 400)
#: The middle of the three beamstop-edge points of :func:`with_edge_points`.
EDGE_INDEX = 1
BRAGG_Q = 0.05


# -- the neutral values -----------------------------------------------------------------------


def constructed_input() -> np.ndarray:
    """A (4, 64) input measured over bins 10-49: a rising intensity, an outlier and a jump in bin 20."""
    features = np.zeros((4, 64), dtype=np.float32)
    features[1, 10:50] = 1.0
    features[0, 10:50] = np.linspace(0.9, 0.1, 40)
    features[0, 20] = 2.0
    features[2, 20], features[3, 21] = 3.0, -2.0
    return features


def test_occluding_a_window_interpolates_the_intensity_and_zeroes_outliers_and_jumps():
    features = constructed_input()
    out = occlude_window(features, 16, 24)
    assert out.dtype == np.float32 and out is not features
    assert np.array_equal(out[1], features[1])  # coverage unchanged
    assert np.allclose(out[0, 16:24], np.interp(np.arange(16, 24), [15, 24], features[0, [15, 24]]))
    assert not out[2:, 16:24].any()
    outside = np.ones(64, dtype=bool)
    outside[16:24] = False
    assert np.array_equal(out[:, outside], features[:, outside])
    # at the edge of the measured range the nearest measured bin continues flat; unmeasured bins stay 0
    edge = occlude_window(features, 8, 16)
    assert np.allclose(edge[0, 10:16], features[0, 16]) and not edge[0, 8:10].any()
    assert np.array_equal(occlude_window(features, 56, 64), features)  # nothing measured: nothing changes


def test_windows_and_the_strongest_range():
    assert occlusion_windows(256)[:2] == [(0, 8), (8, 16)] and len(occlusion_windows(256)) == 256 // DEFAULT_WINDOW_BINS
    assert occlusion_windows(20, 8) == [(0, 8), (8, 16), (16, 20)]
    drops = np.array([np.nan, 0.01, 0.3, 0.5, 0.26, 0.2, 0.4, np.nan])
    assert strongest_windows(drops) == (2, 4)  # the peak, widened while >= half of it (0.4 is not contiguous)
    assert strongest_windows(np.array([np.nan, -0.1, -0.3])) == (1, 1)  # no positive drop: the peak alone
    with pytest.raises(ValueError):
        strongest_windows(np.array([np.nan, np.nan]))


# -- the shipped model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier() -> BNNClassifier:
    return BNNClassifier(shipped_model_files()[0])


@pytest.fixture(scope="module")
def spheres() -> np.ndarray:
    pytest.importorskip("sasmodels")
    from sasmodels.core import load_model
    from sasmodels.direct_model import call_kernel

    kernel = load_model("sphere").make_kernel([Q])
    return call_kernel(kernel, dict(scale=0.01, background=0.001, radius=40, radius_pd=0.1, radius_pd_n=15, sld=4, sld_solvent=1))


def noisy_curve(intensity: np.ndarray, name: str, seed: int = 1, q_unit: str = "1/A", factor: float = 1.0) -> Curve:
    d_intensity = 0.02 * intensity
    observed = intensity + np.random.default_rng(seed).normal(0.0, 1.0, intensity.size) * d_intensity
    return Curve(q=Q * factor, intensity=observed, d_intensity=d_intensity, q_unit=q_unit, source=name)


def with_edge_points(spheres: np.ndarray) -> np.ndarray:
    """The first three points at 0.3 of the curve: a beamstop-edge artefact, all in the first q-window."""
    intensity = spheres.copy()
    intensity[: EDGE_INDEX + 2] *= 0.3
    return intensity


def with_bragg_peaks(spheres: np.ndarray) -> np.ndarray:
    peak = lambda centre: np.exp(-0.5 * ((Q - centre) / 0.002) ** 2)  # noqa: E731
    return spheres * (1.0 + 5.0 * peak(BRAGG_Q) + 5.0 * peak(2.0 * BRAGG_Q))


def window_of(sensitivity, q: float) -> int:
    return int(np.searchsorted(sensitivity.q_edges, q, side="right") - 1)


class CountingSession:
    """The classifier's onnxruntime session, counting its ``run`` calls and recording the batch shapes."""

    def __init__(self, session) -> None:
        self._session, self.batches = session, []

    def run(self, names, feeds):
        (batch,) = feeds.values()
        self.batches.append((batch.shape, batch.dtype, batch.flags["C_CONTIGUOUS"]))
        return self._session.run(names, feeds)

    def __getattr__(self, name):
        return getattr(self._session, name)


def test_beamstop_edge_points_drive_an_artefact_verdict_from_their_window(classifier, spheres):
    curve = noisy_curve(with_edge_points(spheres), "edge")
    (result,) = classifier.classify([curve])
    assert result.label == "artefact"
    sensitivity = explain_result(classifier, curve, result)
    assert sensitivity.class_name == "artefact" and sensitivity.n_samples == classifier.n_samples
    assert sensitivity.baseline == pytest.approx(result.confidence, abs=1e-5)  # the same input as classify's
    peak = int(np.nanargmax(sensitivity.drop_mean))
    assert abs(peak - window_of(sensitivity, Q[EDGE_INDEX])) <= 1
    assert sensitivity.drop_mean[peak] > 0.5 and np.nanmax(np.delete(sensitivity.drop_mean, peak)) < 0.5 * sensitivity.drop_mean[peak]
    lo, hi = sensitivity.explain_q_range
    assert lo <= Q[EDGE_INDEX] < hi or abs(peak - window_of(sensitivity, Q[EDGE_INDEX])) == 1
    # windows outside the measured range are not occluded
    outside = sensitivity.q_centres_inverse_angstrom < Q[0] / 1.4
    assert np.isnan(sensitivity.drop_mean[outside]).all() and np.isfinite(sensitivity.drop_std[~np.isnan(sensitivity.drop_mean)]).all()


def test_bragg_peaks_drive_an_ordered_verdict_from_their_windows(classifier, spheres):
    curve = noisy_curve(with_bragg_peaks(spheres), "bragg")
    (result,) = classifier.classify([curve])
    assert result.label == "ordered"
    sensitivity = explain_result(classifier, curve, result)
    peak = int(np.nanargmax(sensitivity.drop_mean))
    assert min(abs(peak - window_of(sensitivity, BRAGG_Q)), abs(peak - window_of(sensitivity, 2 * BRAGG_Q))) <= 1
    assert sensitivity.drop_mean[peak] > 0


def test_all_occluded_copies_go_through_the_session_in_one_call(classifier, spheres):
    curve = noisy_curve(with_edge_points(spheres), "edge")
    (result,) = classifier.classify([curve])
    counting = CountingSession(classifier._session)
    classifier._session = counting
    try:
        sensitivity = explain_result(classifier, curve, result)
        start = time.perf_counter()
        for _ in range(10):
            explain_result(classifier, curve, result)
        per_curve = (time.perf_counter() - start) / 10
    finally:
        classifier._session = counting._session
    occluded = int(np.isfinite(sensitivity.drop_mean).sum())
    assert counting.batches[0] == ((1 + occluded, 4, 256), np.float32, True)
    assert len(counting.batches) == 11  # one call per explained curve
    print(f"explain: {1 + occluded} inputs in one call, {1000 * per_curve:.1f} ms per curve (preprocessing included)")
    # the batch size of the classifier does not split it
    classifier.batch_size, before = 4, classifier.batch_size
    try:
        classifier._session = counting = CountingSession(classifier._session)
        occlusion_sensitivity(classifier, classifier.prepare_input(curve, "1/A").features)
        assert len(counting.batches) == 1
    finally:
        classifier._session, classifier.batch_size = counting._session, before


def test_a_refused_curve_has_no_explanation(classifier):
    curve = Curve(q=np.geomspace(0.01, 0.1, 10), intensity=np.ones(10), q_unit="1/A")
    (result,) = classifier.classify([curve])
    assert not result.ok and explain_result(classifier, curve, result) is None


# -- the command line ---------------------------------------------------------------------------


def write_ascii(path: Path, curve: Curve, unit: str) -> Path:
    lines = [f"# q ({unit})  I  dI"] + [f"{q:.8g} {i:.8g} {di:.8g}" for q, i, di in zip(curve.q, curve.intensity, curve.d_intensity)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_classify_explain_writes_the_map_to_json_csv_and_the_plot(spheres, tmp_path):
    # q in 1/nm in the file: the strongest range is reported in 1/nm, the grid in both units
    edge = write_ascii(tmp_path / "edge.dat", noisy_curve(with_edge_points(spheres), "edge", q_unit="1/nm", factor=10.0), "1/nm")
    clean = write_ascii(tmp_path / "clean.dat", noisy_curve(spheres, "clean"), "1/A")
    out = tmp_path / "r.json"
    assert main(["classify", str(edge), str(clean), "--explain", "-o", str(out), "--plot", str(tmp_path / "plots")]) == 0
    records = {Path(r["file"]).name: r for r in json.loads(out.read_text())["results"]}
    record = records["edge.dat"]
    assert record["label"] == "artefact" and record["q_unit_used"] == "1/nm"
    sensitivity = record["sensitivity"]
    assert sensitivity["class"] == "artefact" and sensitivity["q_unit"] == "1/nm" and sensitivity["window_bins"] == 8
    assert len(sensitivity["q_centres"]) == len(sensitivity["drop_mean"]) == len(sensitivity["drop_std"]) == 32
    assert np.allclose([c for c in sensitivity["q_centres"]], [10 * c for c in sensitivity["q_centres_inverse_angstrom"]])
    lo, hi = record["strongest_q_range"]
    assert [lo, hi] == sensitivity["explain_q_range"]
    assert lo <= 10 * Q[EDGE_INDEX] * 1.4 and hi >= 10 * Q[EDGE_INDEX] / 1.4  # in 1/nm, around the edge points
    assert sensitivity["explain_q_range_inverse_angstrom"] == pytest.approx([lo / 10, hi / 10])
    assert records["clean.dat"]["sensitivity"]["class"] == "clean"
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:8] == PNG for p in pngs)

    # CSV: strongest_q_range is appended last, only with --explain; resuming such a file works
    csv_out = tmp_path / "r.csv"
    assert main(["classify", str(edge), "--explain", "-o", str(csv_out)]) == 0
    with csv_out.open(newline="") as handle:
        reader = csv.DictReader(handle)
        (row,) = list(reader)
    assert reader.fieldnames == list(CSV_COLUMNS) + ["strongest_q_range"]
    assert [float(v) for v in row["strongest_q_range"].split(";")] == pytest.approx([lo, hi], rel=1e-5)
    assert main(["classify", str(edge), str(clean), "--explain", "-o", str(csv_out), "--resume"]) == 0
    assert len(csv_out.read_text().splitlines()) == 3
    plain = tmp_path / "plain.csv"
    assert main(["classify", str(edge), "-o", str(plain)]) == 0
    assert plain.read_text().splitlines()[0].split(",") == list(CSV_COLUMNS)
    assert main(["classify", str(edge), "-o", str(tmp_path / "p.json")]) == 0
    (unexplained,) = json.loads((tmp_path / "p.json").read_text())["results"]
    assert "sensitivity" not in unexplained and "strongest_q_range" not in unexplained


def test_the_plots_shade_the_strongest_range_with_the_shared_renderer(classifier, spheres):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from sasview_bnn_plugin.io import plotting

    curve = noisy_curve(with_edge_points(spheres), "edge")
    (result,) = classifier.classify([curve])
    result.sensitivity = explain_result(classifier, curve, result)
    ax = Figure().subplots()
    plotting.draw_curve(ax, curve, result, (1e-4, 1.0))
    (label,) = [t.get_text() for t in ax.get_legend().get_texts() if t.get_text().startswith("drove artefact")]
    lo, hi = result.sensitivity.strongest_q_range_inverse_angstrom
    assert f"{lo:.3g}" in label and f"{hi:.3g}" in label and "1/A" in label
