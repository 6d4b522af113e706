"""BNNClassifier on real (small) ONNX models: results, uncertainty, bad curves, bad models."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from onnx_test_models import build_linear_heads_model, write_model, write_truncated_model
from sasview_bnn_plugin.model.classifier import BNNClassifier
from sasview_bnn_plugin.core.curve import Curve
from sasview_bnn_plugin.core.model_format import ModelFormatError
from sasview_bnn_plugin.core.preprocessing import prepare_curve
from sasview_bnn_plugin.core.result import CSV_COLUMNS
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(make_test_model) -> Path:
    return make_test_model("heads.onnx", n_samples=5, seed=3)


@pytest.fixture(scope="module")
def classifier(model_path) -> BNNClassifier:
    return BNNClassifier(model_path, provider="cpu", intra_op_threads=1)


def test_result_matches_a_direct_onnx_run_of_the_preprocessed_curve(classifier, sphere_curve):
    q, i, di = sphere_curve()
    result = classifier.classify_curve(q, i, di, q_unit="1/A", source="s.txt", dataset="d")
    features = prepare_curve(q, i, di, "1/A", classifier.config).features[None]
    probs, novelty = classifier.predict_features(features)
    samples = probs[0].astype(np.float64)
    mean = samples.mean(axis=0)
    assert result.ok and result.label == CLASS_NAMES[int(np.argmax(mean))]
    np.testing.assert_allclose(result.probabilities, mean, rtol=1e-6)
    np.testing.assert_allclose(result.probability_std, samples.std(axis=0), rtol=1e-6, atol=1e-9)
    assert np.all(result.probability_low <= result.probabilities + 1e-12)
    assert np.all(result.probability_high >= result.probabilities - 1e-12)
    entropy = -np.sum(mean * np.log(mean))
    assert result.predictive_entropy == pytest.approx(entropy, rel=1e-6)
    expected = np.mean(-np.sum(samples * np.log(samples), axis=1))
    assert result.expected_entropy == pytest.approx(expected, rel=1e-6)
    assert result.mutual_information == pytest.approx(entropy - expected, abs=1e-9)
    assert result.anomaly_probability == pytest.approx(1 - mean[0])
    assert result.confidence == pytest.approx(mean.max())
    assert result.novelty_score == pytest.approx(float(novelty[0]))
    assert result.n_samples == 5 and 0 < result.coverage < 1
    assert list(result.to_row()) == list(CSV_COLUMNS)
    assert json.loads(json.dumps(result.to_dict()))["probability_interval_90"]["clean"][0] <= mean[0]


def test_novelty_threshold_comes_from_metadata_and_can_be_overridden(model_path, classifier, sphere_curve):
    q, i, di = sphere_curve()
    score = classifier.classify_curve(q, i, di, q_unit="1/A").novelty_score
    assert classifier.novelty_threshold == 0.5
    low = BNNClassifier(model_path, provider="cpu", novelty_threshold=score / 2).classify_curve(q, i, di, q_unit="1/A")
    high = BNNClassifier(model_path, provider="cpu", novelty_threshold=score * 2).classify_curve(q, i, di, q_unit="1/A")
    assert low.is_novel and "NOVEL" in low.message
    assert high.is_novel is False and "NOVEL" not in high.message


BAD_CURVES = {
    "all NaN": (lambda q, i, di: (q, np.full_like(i, np.nan), di), "NaN or infinite"),
    "all inf": (lambda q, i, di: (q, np.full_like(i, np.inf), di), "NaN or infinite"),
    "non-positive": (lambda q, i, di: (q, -np.abs(i), di), "zero or negative"),
    "too few points": (lambda q, i, di: (q[::6], i[::6], di[::6]), "at least 30 are needed"),
    "outside the q domain": (lambda q, i, di: (q * 200, i, di), "overlaps the model's q-domain"),
    "2D array": (lambda q, i, di: (q, np.tile(i, (3, 1)), None), "2D data"),
    "length mismatch": (lambda q, i, di: (q, i[:-5], None), "values but q has"),
}


def test_bad_curves_get_clear_messages_and_leave_the_batch_unaffected(classifier, sphere_curve):
    q, i, di = sphere_curve()
    good = classifier.classify([(q, i, di, None, "1/A")])[0]
    batch = [(q, i, di, None, "1/A")]
    for make, _ in BAD_CURVES.values():
        batch.append((*make(q, i, di), None, "1/A"))
    batch.append((q, i, di, None, "1/A"))
    results = classifier.classify(batch)
    assert len(results) == len(batch)
    for result in (results[0], results[-1]):
        assert result.ok
        np.testing.assert_allclose(result.probabilities, good.probabilities, rtol=1e-6)
    for (name, (_, fragment)), result in zip(BAD_CURVES.items(), results[1:-1]):
        assert result.status == "error", name
        assert fragment in result.message, (name, result.message)
        assert result.label is None and np.isnan(result.probabilities).all()
        assert math.isnan(result.confidence) and math.isnan(result.anomaly_probability)
        row = result.to_row()
        assert row["label"] == "" and row["status"] == "error"


def test_nan_points_inside_a_good_curve_are_dropped_with_a_note(classifier, sphere_curve):
    q, i, di = sphere_curve()
    i = i.copy()
    i[[10, 50, 90]] = [np.nan, np.inf, -np.inf]
    result = classifier.classify_curve(q, i, di, q_unit="1/A")
    assert result.ok and any("3 point(s)" in n for n in result.notes)


def test_unsorted_and_duplicated_q_give_the_same_result_as_sorted(classifier, sphere_curve):
    q, i, di = sphere_curve()
    ref = classifier.classify_curve(q, i, di, q_unit="1/A")
    order = np.random.default_rng(1).permutation(q.size)
    shuffled = classifier.classify_curve(q[order], i[order], di[order], q_unit="1/A")
    np.testing.assert_allclose(shuffled.probabilities, ref.probabilities, rtol=1e-6)
    dup = classifier.classify_curve(np.r_[q, q[:5]], np.r_[i, i[:5]], np.r_[di, di[:5]], q_unit="1/A")
    assert dup.ok and any("duplicate q" in n for n in dup.notes)


def test_q_in_inverse_nanometres_with_unit_matches_inverse_angstrom(classifier, sphere_curve):
    q, i, di = sphere_curve()
    ref = classifier.classify_curve(q, i, di, q_unit="1/A")
    in_nm = classifier.classify_curve(q * 10, i, di, q_unit="1/nm")
    np.testing.assert_allclose(in_nm.probabilities, ref.probabilities, rtol=1e-5)
    assert in_nm.q_window == pytest.approx(ref.q_window)
    # sasdata spells it nm^{-1}
    assert classifier.classify_curve(q * 10, i, di, q_unit="nm^{-1}").label == ref.label


def test_q_in_inverse_nanometres_without_unit_is_flagged(classifier, sphere_curve):
    q, i, di = sphere_curve()
    result = classifier.classify_curve(q * 10, i, di, q_unit=None)
    assert result.ok
    # q reaches 4: not 1/Å, so read as 1/nm (never a silent 10x), and the row says so and why
    assert result.q_unit_used == "1/nm" and result.q_unit_source == "assumed"
    assert any(n.startswith("q unit not given; read as 1/nm (q reaches 4") for n in result.notes)
    assert "read as 1/nm" in result.message  # the CSV message column carries the note
    np.testing.assert_allclose(result.probabilities, classifier.classify_curve(q * 10, i, di, q_unit="1/nm").probabilities, rtol=1e-6)


def test_unknown_unit_and_unconvertible_items_are_refused(classifier, sphere_curve):
    q, i, di = sphere_curve()
    bad_unit, not_a_curve, good = classifier.classify([(q, i, di, None, "furlongs"), object(), Curve(q, i, di, q_unit="1/A")])
    assert bad_unit.status == "error" and "not understood" in bad_unit.message
    assert not_a_curve.status == "error" and "cannot classify" in not_a_curve.message
    assert good.ok


def test_sasdata_data1d_is_accepted(classifier, sphere_curve):
    from sasdata.dataloader.data_info import Data1D

    q, i, di = sphere_curve()
    data = Data1D(x=q, y=i, dy=di)
    data.xaxis("\\rm{Q}", "A^{-1}")
    data.title = "sphere"
    result = classifier.classify([data])[0]
    assert result.ok and result.dataset == "sphere"
    np.testing.assert_allclose(result.probabilities, classifier.classify_curve(q, i, di, q_unit="1/A").probabilities, rtol=1e-6)


def test_batches_split_across_model_calls_give_the_same_results(model_path, sphere_curve):
    curves = [sphere_curve(radius=r, seed=k) for k, r in enumerate(np.linspace(20, 80, 7))]
    big = BNNClassifier(model_path, provider="cpu", batch_size=64).classify(curves)
    small = BNNClassifier(model_path, provider="cpu", batch_size=2).classify(curves)
    for a, b in zip(big, small):
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-6)
    assert len({r.label for r in big} | {round(r.confidence, 3) for r in big}) > 2  # the model reacts to the curve


@pytest.mark.parametrize(
    "make_model, fragment",
    [
        (lambda p: write_truncated_model(p, 0.5), "is damaged or not an ONNX model"),
        (lambda p: p.write_bytes(b"this is not onnx at all" * 10) and p, "is damaged or not an ONNX model"),
        (lambda p: p.write_bytes(b"") or p, "is damaged or not an ONNX model"),
        (lambda p: write_model(p, drop_metadata=("weights_sha256", "classes")), "lacks classes, weights_sha256"),
        (lambda p: write_model(p, metadata_overrides={"classes": json.dumps(list(reversed(CLASS_NAMES)))}), "differ from the taxonomy"),
        (lambda p: write_model(p, metadata_overrides={"sasview_bnn.format_version": "99"}), "format version 99"),
        (lambda p: write_model(p, metadata_overrides={"preprocessing": '{"q_min": 1e-3, "colour": 1}'}), "preprocessing settings"),
        (lambda p: write_model(p, metadata_overrides={"novelty_threshold": "high"}), "non-numeric"),
    ],
    ids=["truncated", "garbage", "empty", "missing-keys", "wrong-classes", "wrong-version", "bad-preprocessing", "bad-threshold"],
)
def test_bad_models_are_refused_before_any_curve(tmp_path, make_model, fragment):
    path = tmp_path / "bad.onnx"
    make_model(path)
    with pytest.raises(ModelFormatError, match=fragment):
        BNNClassifier(path, provider="cpu")


def test_a_model_with_the_wrong_input_shape_is_refused(tmp_path):
    from sasview_bnn_plugin.core.preprocessing import PreprocessingConfig
    import onnx

    model = build_linear_heads_model(config=PreprocessingConfig(n_bins=128))
    # keep the metadata of a 256-bin model so that only the graph disagrees
    good_meta = {p.key: p.value for p in build_linear_heads_model().metadata_props}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, good_meta)
    path = tmp_path / "shape.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFormatError, match="expected \\(batch, 4, 256\\)"):
        BNNClassifier(path, provider="cpu")


def test_the_runtime_never_imports_torch(model_path, tmp_path):
    data = Path(__import__("sasdata").__file__).parent / "example_data" / "1d_data" / "apoferritin.txt"
    script = textwrap.dedent(
        f"""
        import sys
        from sasview_bnn_plugin.model.classifier import BNNClassifier
        from sasview_bnn_plugin.cli import main
        result = BNNClassifier({str(model_path)!r}).classify_curve([0.01 * k for k in range(1, 60)], [1.0 / k for k in range(1, 60)])
        assert result.ok, result.message
        code = main(["classify", {str(data)!r}, "--model", {str(model_path)!r}, "-o", {str(tmp_path / "o.json")!r}, "--plot", {str(tmp_path / "plots")!r}])
        assert code == 0, code
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "sasview_bnn_trainer"))
        print("IMPORTED", bad)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "IMPORTED []" in out.stdout


def test_cuda_request_on_a_cpu_only_machine_still_classifies(model_path, sphere_curve):
    classifier = BNNClassifier(model_path, provider="cuda")
    assert classifier.providers.device == "cpu" and "CUDA" in classifier.providers.reason
    q, i, di = sphere_curve()
    assert classifier.classify_curve(q, i, di, q_unit="1/A").ok


def test_bad_settings_are_refused_as_such(model_path, tmp_path):
    with pytest.raises(ValueError, match="provider must be one of"):
        BNNClassifier(model_path, provider="gpu")
    with pytest.raises(ValueError, match="batch_size"):
        BNNClassifier(model_path, batch_size=0)
    from sasview_bnn_plugin.model.catalog import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        BNNClassifier(tmp_path / "absent.onnx")


def test_extreme_magnitudes_give_the_features_of_the_same_curve_at_ordinary_scale(classifier, sphere_curve):
    """Intensities near the float limits are scaled by a power of two (exact), not overflowed into NaN."""
    q, i, di = sphere_curve()
    reference = prepare_curve(q, i, di, "1/A").features
    for shift in (990, -1000, 700):
        scaled = prepare_curve(q, np.ldexp(i, shift), np.ldexp(di, shift), "1/A").features
        np.testing.assert_array_equal(scaled, reference)
    huge = classifier.classify_curve(q, np.ldexp(i, 1000), None, q_unit="1/A")
    assert huge.ok and np.isfinite(huge.probabilities).all() and "nan" not in huge.message


def test_values_no_curve_can_hold_are_refused_in_words(classifier, sphere_curve):
    q, i, di = sphere_curve()
    spike = i * 1e-10
    spike[40] = 1e300  # more than 308 decades above the rest: I / I_ref overflows
    cases = {
        "spike": ((q, spike, None, None, "1/A"), "orders of magnitude"),
        "complex": ((q + 0j, i, None, None, "1/A"), "complex numbers"),
        "complex in a Curve": (Curve(q=q + 0j, intensity=i, q_unit="1/A"), "complex numbers"),
        "scalar": ((0.1, 1.0, None, None, "1/A"), "single number"),
        "huge int": (([10**400] * 40, i[:40], None, None, "1/A"), "must be numbers"),
    }
    results = classifier.classify([item for item, _ in cases.values()])
    for (name, (_, fragment)), result in zip(cases.items(), results):
        assert result.status == "error" and fragment in result.message, (name, result.message)


def test_a_preprocessing_bug_costs_one_curve_an_error_row_not_the_batch(classifier, caplog, sphere_curve):
    """Arrays that raise an unexpected exception inside the preprocessing stand in for a bug in it."""

    class Exploding:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("boom")

    q, i, di = sphere_curve()
    with caplog.at_level("ERROR", logger="sasview_bnn_plugin.model.classifier"):
        results = classifier.classify([Curve(q=Exploding(), intensity=i, q_unit="1/A", source="odd.txt"), (q, i, di, None, "1/A")])
    assert results[1].ok
    assert results[0].status == "error" and results[0].label is None
    assert "internal error" in results[0].message and "boom" not in results[0].message
    assert "boom" in caplog.text  # the detail is logged for the bug report
