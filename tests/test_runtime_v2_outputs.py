"""The optional model outputs: anomalies present, conformal prediction sets, novelty p-values.

A model without them (the v1 layout, like the shipped model) gives the columns
it always gave, with the new columns appended and empty. A model with them
(``onnx_test_models.build_linear_heads_model(v2=True)``, a real ONNX graph
whose anomaly head is sigmoid of a second set of linear heads) gives values
that are checked against numpy computed here, independently, from the raw
onnxruntime outputs. The conformal functions are checked for what they
promise: nominal coverage of the prediction sets on calibrated probabilities,
uniform novelty p-values on exchangeable scores.
"""

from __future__ import annotations

import csv
import io
import json
import math
import struct
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnx_test_models import TEST_CONFORMAL, write_model
from sasview_bnn_plugin.model.classifier import BNNClassifier
from sasview_bnn_plugin.cli import main
from sasview_bnn_plugin.core.conformal import aps_scores, aps_sets, conformal_quantile, novelty_p_values
from sasview_bnn_plugin.core.model_format import (
    ANOMALY_OUTPUT,
    NOVELTY_OUTPUT,
    OPTIONAL_METADATA,
    PROBABILITIES_OUTPUT,
    ModelFormatError,
    ModelOptionError,
)
from sasview_bnn_plugin.io.output import render_csv_rows
from sasview_bnn_plugin.core.preprocessing import prepare_curve
from sasview_bnn_plugin.core.result import CSV_COLUMNS, CSV_COLUMNS_OPTIONAL, CSV_COLUMNS_UNITS, CSV_COLUMNS_V1
from sasview_bnn_plugin.core.taxonomy import ANOMALY_NAMES, CLASS_NAMES

ONE_D = Path(__import__("sasdata").__file__).parent / "example_data" / "1d_data"
FILES = [ONE_D / n for n in ("apoferritin.txt", "conalbumin.txt", "sphere_80.txt", "PolySpheres.txt", "ISIS_Polymer_Blend_TK49.xml", "latex_smeared.xml")]
SEED, N_SAMPLES, THRESHOLD = 7, 6, 0.5
LEVELS = {"0.8": 0.25, "0.9": 0.5, "0.95": 0.75, "0.99": 0.97}


def synthetic_curves(n: int = 40) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Spheres, power laws and peaks of many sizes and q-windows: (q in 1/Å, I, dI), shape (points,) each."""
    rng = np.random.default_rng(2024)
    curves = []
    for k in range(n):
        q = np.geomspace(10 ** rng.uniform(-3.3, -2.2), 10 ** rng.uniform(-0.8, 0.0), int(rng.integers(80, 400)))
        x = q * rng.uniform(10, 300)
        kind = k % 4
        if kind == 0:
            intensity = (3 * (np.sin(x) - x * np.cos(x)) / x**3) ** 2 + 1e-4
        elif kind == 1:
            intensity = q ** -rng.uniform(1.5, 4) * 1e-4 + 0.01
        elif kind == 2:
            intensity = 1 / (1 + x**2) + 0.3 * np.exp(-((q - 0.1) / 0.004) ** 2) + 1e-3
        else:
            intensity = np.exp(-(x**2) / 3) + 1e-3 * rng.uniform(0.5, 2)
        d_i = 0.02 * np.abs(intensity) + 1e-6
        curves.append((q, intensity + rng.normal(0, d_i), d_i))
    return curves


@pytest.fixture(scope="module")
def curves():
    return synthetic_curves()


@pytest.fixture(scope="module")
def v1_model(tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("v1") / "heads_v1.onnx", n_samples=N_SAMPLES, seed=SEED, novelty_threshold=THRESHOLD)


@pytest.fixture(scope="module")
def calibration_scores(v1_model, curves) -> list[float]:
    """Calibration novelty scores spread over the range of the test curves' own scores (so p-values vary)."""
    clf = BNNClassifier(v1_model, provider="cpu")
    features = np.stack([prepare_curve(q, i, di, "1/A", clf.config).features for q, i, di in curves])
    scores = clf.predict_features(features)[1].astype(np.float64)
    return sorted(float(v) for v in np.quantile(scores, np.linspace(0.02, 0.98, 49)))


@pytest.fixture(scope="module")
def v2_model(tmp_path_factory, calibration_scores) -> Path:
    return write_model(
        tmp_path_factory.mktemp("v2") / "heads_v2.onnx",
        n_samples=N_SAMPLES,
        seed=SEED,
        novelty_threshold=THRESHOLD,
        v2=True,
        anomaly_threshold=0.6,
        conformal={"method": "aps", "levels": LEVELS, "n_calibration": 500, "default_level": "0.9"},
        novelty_calibration={"scores": calibration_scores, "default_level": 0.2},
    )


def raw_outputs(model: Path, features: np.ndarray) -> dict[str, np.ndarray]:
    """The model's outputs straight from onnxruntime, by name."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"features": features.astype(np.float32)})))


def hand_entropy(p: np.ndarray) -> np.ndarray:
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def hand_set(mean: np.ndarray, t: float) -> list[str]:
    """APS by hand: classes by descending probability until their cumulative mass reaches t (crossing class included)."""
    chosen, mass = [], 0.0
    for k in sorted(range(len(mean)), key=lambda k: (-mean[k], k)):
        chosen.append(CLASS_NAMES[k])
        mass += mean[k]
        if mass >= t:
            break
    return chosen


def hand_p_value(score: float, calibration: list[float]) -> float:
    return (1 + sum(c >= score for c in calibration)) / (len(calibration) + 1)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def write_curve_files(folder: Path, curves) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (q, i, di) in enumerate(curves):
        path = folder / f"curve_{k:02d}.txt"
        # The header names the q unit, so the rows carry no note about an assumed unit.
        np.savetxt(path, np.column_stack([q, i, di]), header="q (1/A)  I (1/cm)  dI (1/cm)")
        paths.append(path)
    return paths


# -- the v1 layout: old columns, old values, new columns empty -------------------------------------


def test_a_v1_model_gives_the_old_columns_unchanged_and_empty_new_ones(v1_model, curves, tmp_path):
    files = write_curve_files(tmp_path / "data", curves[:12])
    out = tmp_path / "v1.csv"
    assert main(["classify", *map(str, files), "--model", str(v1_model), "-o", str(out)]) == 0
    header, rows = read_csv(out)
    assert header == list(CSV_COLUMNS_V1) + list(CSV_COLUMNS_OPTIONAL) + list(CSV_COLUMNS_UNITS) == list(CSV_COLUMNS)
    assert header[: len(CSV_COLUMNS_V1)] == ["file", "dataset", "label", "confidence", "anomaly_probability", "entropy",
                                             "mutual_information", "novelty_score", "is_novel", "status", "message"] + [f"p_{c}" for c in CLASS_NAMES]
    assert CSV_COLUMNS_OPTIONAL == ("anomalies_present", "prediction_set", "set_level", "novelty_p_value") + tuple(f"p_present_{a}" for a in ANOMALY_NAMES)

    clf = BNNClassifier(v1_model, provider="cpu")
    assert clf.set_level is None and clf.novelty_level is None and clf.optional_parts.anomalies is None
    features = np.stack([prepare_curve(q, i, di, None, clf.config).features for q, i, di in curves[:12]])
    raw = raw_outputs(v1_model, features)
    assert set(raw) == {PROBABILITIES_OUTPUT, NOVELTY_OUTPUT}
    for k, row in enumerate(rows):
        samples = raw[PROBABILITIES_OUTPUT][k].astype(np.float64)
        mean, std = samples.mean(axis=0), samples.std(axis=0)
        label = CLASS_NAMES[int(np.argmax(mean))]
        score = float(raw[NOVELTY_OUTPUT][k])
        novel = score > THRESHOLD
        assert row["label"] == label and row["status"] == "ok"
        assert float(row["confidence"]) == pytest.approx(mean.max(), rel=1e-5)
        assert float(row["anomaly_probability"]) == pytest.approx(1 - mean[0], rel=1e-5, abs=1e-7)
        assert float(row["entropy"]) == pytest.approx(hand_entropy(mean), rel=1e-5, abs=1e-7)
        mi = max(hand_entropy(mean) - hand_entropy(samples).mean(), 0.0)
        assert float(row["mutual_information"]) == pytest.approx(mi, rel=1e-4, abs=1e-6)
        assert float(row["novelty_score"]) == pytest.approx(score, rel=1e-5)
        assert row["is_novel"] == str(novel)
        expected_message = f"{label} (p = {mean.max():.2f} ± {std[int(np.argmax(mean))]:.2f})"
        if novel:
            expected_message += f"; NOVEL: unlike the training data (novelty score {score:.3g} > threshold {THRESHOLD:.3g}), do not trust the label"
        assert row["message"] == expected_message
        assert all(row[c] == "" for c in CSV_COLUMNS_OPTIONAL)


def test_a_v1_model_in_json_has_null_optional_fields(v1_model, tmp_path):
    out = tmp_path / "v1.json"
    assert main(["classify", str(FILES[0]), "--model", str(v1_model), "-o", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    for key in ("anomalies_present", "prediction_set", "set_level", "novelty_p_value", "novelty_level", "anomaly_threshold"):
        assert result[key] is None, key
    assert result["presence_std"] == {a: None for a in ANOMALY_NAMES}
    assert result["presence_interval_90"] == {a: [None, None] for a in ANOMALY_NAMES}


# -- a model with the three optional parts ---------------------------------------------------------


def test_a_v2_model_matches_numpy_on_the_raw_session_outputs(v2_model, curves, calibration_scores):
    clf = BNNClassifier(v2_model, provider="cpu")
    assert clf.set_level == 0.9 and clf.set_threshold == LEVELS["0.9"] and clf.novelty_level == 0.2
    assert clf.optional_parts.anomalies.threshold == 0.6
    results = clf.classify([(q, i, di, None, "1/A") for q, i, di in curves])
    features = np.stack([prepare_curve(q, i, di, "1/A", clf.config).features for q, i, di in curves])
    raw = raw_outputs(v2_model, features)
    assert raw[ANOMALY_OUTPUT].shape == (len(curves), N_SAMPLES, len(ANOMALY_NAMES))

    set_sizes, n_present, n_novel = set(), set(), 0
    for k, result in enumerate(results):
        assert result.ok
        mean = raw[PROBABILITIES_OUTPUT][k].astype(np.float64).mean(axis=0)
        presence = raw[ANOMALY_OUTPUT][k].astype(np.float64)
        p_present = presence.mean(axis=0)
        np.testing.assert_allclose(result.presence_probabilities, p_present, rtol=1e-6)
        np.testing.assert_allclose(result.presence_std, presence.std(axis=0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(result.presence_low, np.percentile(presence, 5, axis=0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(result.presence_high, np.percentile(presence, 95, axis=0), rtol=1e-6, atol=1e-9)
        present = sorted((a for j, a in enumerate(ANOMALY_NAMES) if p_present[j] >= 0.6), key=lambda a: -p_present[ANOMALY_NAMES.index(a)])
        assert list(result.anomalies_present) == present
        assert list(result.prediction_set) == hand_set(mean, LEVELS["0.9"]) and result.set_level == 0.9
        score = float(raw[NOVELTY_OUTPUT][k])
        p_value = hand_p_value(score, calibration_scores)
        assert result.novelty_p_value == pytest.approx(p_value, abs=1e-12)
        assert result.is_novel == (p_value < 0.2) and result.novelty_level == 0.2
        assert ("NOVEL" in result.message) == result.is_novel
        set_sizes.add(len(result.prediction_set))
        n_present.add(len(present))
        n_novel += result.is_novel
    # The check covers more than one case of each kind.
    assert len(set_sizes) >= 2 and len(n_present) >= 2 and 0 < n_novel < len(curves)


@pytest.mark.parametrize("level", ["0.8", "0.95", "0.99"])
def test_the_set_level_chooses_the_exported_threshold(v2_model, curves, level):
    clf = BNNClassifier(v2_model, provider="cpu", set_level=level)
    features = np.stack([prepare_curve(q, i, di, "1/A", clf.config).features for q, i, di in curves])
    means = raw_outputs(v2_model, features)[PROBABILITIES_OUTPUT].astype(np.float64).mean(axis=1)
    for result, mean in zip(clf.classify([(q, i, di, None, "1/A") for q, i, di in curves]), means):
        assert result.set_level == float(level) and list(result.prediction_set) == hand_set(mean, LEVELS[level])


def test_v2_csv_and_jsonl_carry_the_new_columns(v2_model, calibration_scores, tmp_path):
    csv_out, jsonl_out = tmp_path / "v2.csv", tmp_path / "v2.jsonl"
    args = ["classify", *map(str, FILES), "--model", str(v2_model)]
    assert main(args + ["-o", str(csv_out)]) == 0
    assert main(args + ["-o", str(jsonl_out)]) == 0
    header, rows = read_csv(csv_out)
    assert header == list(CSV_COLUMNS)
    records = [json.loads(line) for line in jsonl_out.read_text().splitlines()]
    assert len(rows) == len(records) == 7
    for row, record in zip(rows, records):
        assert row["anomalies_present"] == ";".join(record["anomalies_present"])
        assert row["prediction_set"] == ";".join(record["prediction_set"]) and record["prediction_set"]
        assert set(record["prediction_set"]) <= set(CLASS_NAMES) and record["prediction_set"][0] == record["label"]
        assert row["set_level"] == "0.9" and record["set_level"] == 0.9
        assert float(row["novelty_p_value"]) == pytest.approx(hand_p_value(record["novelty_score"], calibration_scores), rel=1e-5)
        assert record["novelty_level"] == 0.2 and record["anomaly_threshold"] == 0.6
        for a in ANOMALY_NAMES:
            p = record[f"p_present_{a}"]
            assert float(row[f"p_present_{a}"]) == pytest.approx(p, rel=1e-5)
            low, high = record["presence_interval_90"][a]
            assert low - 1e-9 <= p <= high + 1e-9 and record["presence_std"][a] >= 0
            assert (a in record["anomalies_present"]) == (p >= 0.6)
        assert "plausible at 90 %: " + " or ".join(record["prediction_set"]) in row["message"]


def test_novelty_threshold_still_decides_when_given_and_p_values_stay(v2_model, curves):
    clf = BNNClassifier(v2_model, provider="cpu", novelty_threshold=0.0)
    results = clf.classify([(q, i, di, None, "1/A") for q, i, di in curves[:5]])
    assert clf.novelty_level is None
    assert all(r.is_novel and math.isnan(r.novelty_level) and 0 < r.novelty_p_value <= 1 for r in results)
    assert all("> threshold" in r.message for r in results)


def test_a_model_with_only_some_parts(tmp_path, curves):
    only_sets = write_model(tmp_path / "sets.onnx", conformal=TEST_CONFORMAL)
    result = BNNClassifier(only_sets, provider="cpu").classify([curves[0][:3]])[0]
    assert result.prediction_set and result.anomalies_present is None and math.isnan(result.novelty_p_value)
    only_anomalies = write_model(tmp_path / "anomalies.onnx", anomalies=True)
    result = BNNClassifier(only_anomalies, provider="cpu").classify([curves[0][:3]])[0]
    assert result.anomalies_present is not None and result.prediction_set is None and math.isnan(result.set_level)
    (row,) = csv.DictReader(io.StringIO(",".join(CSV_COLUMNS) + "\n" + render_csv_rows([result])))
    assert row["anomalies_present"] in ("", ";".join(result.anomalies_present)) and row["p_present_artefact"] != ""
    assert row["prediction_set"] == row["set_level"] == row["novelty_p_value"] == ""


def test_non_finite_anomaly_probabilities_give_an_error_row(v2_model, curves):
    clf = BNNClassifier(v2_model, provider="cpu")

    class NanPresence:
        def __init__(self, session):
            self.session = session

        def run(self, outputs, feeds):
            values = self.session.run(outputs, feeds)
            values[2] = values[2].copy()
            values[2][1] = np.nan
            return values

    clf._session = NanPresence(clf._session)
    results = clf.classify([(q, i, di, None, "1/A") for q, i, di in curves[:3]])
    assert results[0].ok and results[2].ok
    assert results[1].status == "error" and results[1].label is None and "anomaly probabilities" in results[1].message


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"anomalies": json.dumps(list(ANOMALY_NAMES[::-1]))}, "differ from the taxonomy"),
        ({"anomaly_threshold": "high"}, "not a number"),
        ({"conformal": json.dumps({**TEST_CONFORMAL, "method": "raps"})}, "method 'raps'"),
        ({"conformal": json.dumps({**TEST_CONFORMAL, "default_level": "0.85"})}, "default prediction-set level"),
        ({"conformal": json.dumps({**TEST_CONFORMAL, "levels": {"1.5": 0.3}})}, "between 0 and 1"),
        ({"novelty_calibration": json.dumps({"scores": ["a"], "default_level": 0.01})}, "list of numbers"),
        ({"novelty_calibration": "{not json"}, "not valid JSON"),
    ],
)
def test_damaged_optional_metadata_is_refused_before_any_curve(tmp_path, overrides, fragment):
    path = write_model(tmp_path / "bad.onnx", v2=True, metadata_overrides=overrides)
    with pytest.raises(ModelFormatError, match=fragment):
        BNNClassifier(path, provider="cpu")


def test_anomaly_metadata_and_output_come_together(tmp_path):
    with pytest.raises(ModelFormatError, match="no 'anomalies' metadata"):
        BNNClassifier(write_model(tmp_path / "a.onnx", v2=True, drop_metadata=("anomalies",)), provider="cpu")
    with pytest.raises(ModelFormatError, match="has no 'anomaly_probabilities' output"):
        BNNClassifier(write_model(tmp_path / "b.onnx", metadata_overrides={"anomalies": json.dumps(list(ANOMALY_NAMES))}), provider="cpu")
    assert set(OPTIONAL_METADATA) == {"anomalies", "anomaly_threshold", "conformal", "novelty_calibration"}


# -- the command line --------------------------------------------------------------------------------


def test_an_unexported_set_level_is_a_usage_error(v2_model, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert main(["classify", str(FILES[0]), "--model", str(v2_model), "--set-level", "0.85", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no prediction sets at level 0.85" in err and "0.8, 0.9, 0.95, 0.99" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["classify", str(FILES[0]), "--model", str(v2_model), "--set-level", "1.5", "-o", str(out)]) == 2
    assert main(["classify", str(FILES[0]), "--model", str(v2_model), "--set-level", ".95", "-o", str(out)]) == 0
    assert read_csv(out)[1][0]["set_level"] == "0.95"


def test_options_a_v1_model_cannot_honour_are_usage_errors(v1_model, v2_model, tmp_path, capsys):
    out = str(tmp_path / "r.csv")
    assert main(["classify", str(FILES[0]), "--model", str(v1_model), "--set-level", "0.9", "-o", out]) == 2
    assert "no conformal prediction sets" in capsys.readouterr().err
    assert main(["classify", str(FILES[0]), "--model", str(v1_model), "--novelty-level", "0.05", "-o", out]) == 2
    assert "no novelty calibration" in capsys.readouterr().err
    assert main(["classify", str(FILES[0]), "--model", str(v2_model), "--novelty-level", "0.05", "--novelty-threshold", "1", "-o", out]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["classify", str(FILES[0]), "--model", str(v1_model), "--novelty-threshold", "0", "-o", out]) == 0
    assert read_csv(Path(out))[1][0]["is_novel"] == "True"
    with pytest.raises(ModelOptionError):
        BNNClassifier(v2_model, provider="cpu", novelty_level=1.5)


def test_novelty_level_option_decides_is_novel(v2_model, tmp_path):
    out = tmp_path / "r.jsonl"
    assert main(["classify", *map(str, FILES), "--model", str(v2_model), "--novelty-level", "0.999", "-o", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["novelty_level"] == 0.999 and r["is_novel"] == (r["novelty_p_value"] < 0.999) for r in records)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plots_get_the_anomaly_panel_only_with_the_anomaly_output(v1_model, v2_model, tmp_path):
    pytest.importorskip("matplotlib")
    for name, model in (("v1", v1_model), ("v2", v2_model)):
        assert main(["classify", str(FILES[0]), "--model", str(model), "-o", str(tmp_path / f"{name}.csv"), "--plot", str(tmp_path / name)]) == 0
    (v1_png,) = (tmp_path / "v1").iterdir()
    (v2_png,) = (tmp_path / "v2").iterdir()
    assert png_size(v1_png) == (900, 360)  # unchanged: 10 x 4 inches at 90 dpi
    assert png_size(v2_png)[0] > 1100  # a third panel


# -- resuming a CSV written by the older version ------------------------------------------------------


def test_a_csv_of_the_older_version_resumes_with_its_own_columns(v2_model, tmp_path, capsys):
    files = [str(f) for f in FILES]
    reference = tmp_path / "reference.csv"
    assert main(["classify", *files, "--model", str(v2_model), "-o", str(reference)]) == 0
    _, full = read_csv(reference)
    # What an older sasview-bnn left after being killed: its header, three whole rows, a torn fourth.
    old = tmp_path / "old.csv"
    text = ",".join(CSV_COLUMNS_V1) + "\n" + "".join(
        ",".join(_quote(row[c]) for c in CSV_COLUMNS_V1) + "\n" for row in full[:3]
    )
    (tmp_path / "old.csv.partial").write_text(text + "x,y,cl")
    capsys.readouterr()
    assert main(["classify", *files, "--model", str(v2_model), "--resume", "-o", str(old)]) == 0
    err = capsys.readouterr().err
    assert "started by an older sasview-bnn" in err and "anomalies_present" in err and "p_present_*" in err
    header, rows = read_csv(old)
    assert header == list(CSV_COLUMNS_V1)
    records = list(csv.reader(io.StringIO(old.read_text())))
    assert all(len(r) == len(CSV_COLUMNS_V1) for r in records)
    assert [{c: r[c] for c in CSV_COLUMNS_V1} for r in rows] == [{c: r[c] for c in CSV_COLUMNS_V1} for r in full]


def _quote(cell: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([cell])
    return buffer.getvalue()


def test_a_csv_of_a_newer_version_is_refused_with_a_clear_message(v1_model, tmp_path, capsys):
    out = tmp_path / "new.csv"
    out.write_text(",".join(CSV_COLUMNS + ("p_future",)) + "\n")
    assert main(["classify", str(FILES[0]), "--model", str(v1_model), "--resume", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "written by a newer sasview-bnn" in err and "p_future" in err


# -- the conformal functions keep their promises ----------------------------------------------------


def calibrated(n: int, concentration: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dirichlet-random probability vectors over 7 classes and labels drawn from them (calibrated by construction)."""
    probs = rng.dirichlet(np.full(len(CLASS_NAMES), concentration), size=n)
    labels = np.minimum((rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1), len(CLASS_NAMES) - 1)
    return probs, labels


@pytest.mark.parametrize("concentration", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("level", [0.8, 0.9, 0.95])
def test_aps_sets_reach_the_nominal_coverage(concentration, level):
    rng = np.random.default_rng(int(100 * concentration + 1000 * level))
    probs, labels = calibrated(20000, concentration, rng)
    half = len(labels) // 2
    threshold = conformal_quantile(aps_scores(probs[:half], labels[:half]), level)
    sets = aps_sets(probs[half:], threshold)
    coverage = sets[np.arange(len(labels) - half), labels[half:]].mean()
    assert abs(coverage - level) <= 0.02, (coverage, level)
    assert sets.any(axis=1).all()


def test_aps_sets_and_scores_agree_with_a_direct_implementation():
    rng = np.random.default_rng(5)
    probs, labels = calibrated(500, 0.7, rng)
    scores = aps_scores(probs, labels)
    for t in (0.0, 0.3, 0.6, 0.9, 0.999, 1.0):
        sets = aps_sets(probs, t)
        # A class is in the set exactly when its score is at most the threshold (what calibration relies on).
        assert np.array_equal(sets[np.arange(len(labels)), labels], scores <= t)
        for row, mask in zip(probs, sets):
            assert [CLASS_NAMES[k] for k in np.flatnonzero(mask)] == sorted(hand_set(row, t), key=CLASS_NAMES.index)
    # The score is the mass of the classes ranked above the true class.
    for p, y, s in zip(probs[:50], labels[:50], scores[:50]):
        assert s == pytest.approx(sum(v for k, v in enumerate(p) if (v, -k) > (p[y], -y)), abs=1e-12)
    assert np.array_equal(aps_sets(probs, 0.0).sum(axis=1), np.ones(len(probs)))
    assert conformal_quantile(np.arange(9.0), 0.95) == math.inf and conformal_quantile(np.arange(9.0), 0.5) == 4.0


def test_novelty_p_values_are_uniform_on_exchangeable_scores():
    rng = np.random.default_rng(11)
    calibration = rng.gamma(2.0, 1.0, 5000)
    scores = rng.gamma(2.0, 1.0, 20000)
    p = novelty_p_values(scores, calibration)
    assert p.shape == scores.shape and p.min() >= 1 / 5001 and p.max() <= 1
    assert abs((p < 0.05).mean() - 0.05) <= 0.015
    assert abs((p < 0.01).mean() - 0.01) <= 0.005
    # Against the definition, with ties and out-of-range scores.
    cal = [1.0, 2.0, 2.0, 3.0]
    s = np.array([[0.5, 2.0], [2.5, 9.0]])
    expected = np.array([[hand_p_value(v, cal) for v in r] for r in s])
    np.testing.assert_allclose(novelty_p_values(s, cal), expected)
    np.testing.assert_allclose(novelty_p_values(s, sorted(cal), assume_sorted=True), expected)
    assert np.isnan(novelty_p_values(np.array([np.nan]), cal)[0])
