"""scripts/real_data_table.py: the verdict rules on constructed results, label matching, and a small real run.

The verdict function is checked on hand-made ClassificationResult objects (every rule and its
boundaries); the core function classifies three labelled example-data curves with the shipped
model and must give every curve a row whose verdict follows from the same rules. The hand labels
themselves must parse and cover every curve of the example data.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from sasview_bnn_plugin.core.model_format import LOW_CONFIDENCE_THRESHOLD
from sasview_bnn_plugin.core.result import ClassificationResult
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES, class_index

ROOT = Path(__file__).resolve().parents[1]
_PATH = ROOT / "scripts" / "real_data_table.py"


def _load():
    spec = importlib.util.spec_from_file_location("real_data_table", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_data_table"] = module
    spec.loader.exec_module(module)
    return module


rdt = _load()


def result(label: str, top: float, novel: bool = False) -> ClassificationResult:
    """An ok result whose top class is ``label`` with probability ``top`` (the rest spread evenly)."""
    p = np.full(len(CLASS_NAMES), (1.0 - top) / (len(CLASS_NAMES) - 1))
    p[class_index(label)] = top
    return ClassificationResult(file="f", dataset="d", status="ok", message="", label=label,
                                probabilities=p, is_novel=novel)


def refused() -> ClassificationResult:
    return ClassificationResult.error("f", "d", "only 20 valid point(s); at least 30 are needed")


# -- verdict rules on constructed results ------------------------------------------------------

@pytest.mark.parametrize(
    "primary, res, expected",
    [
        # the primary class matches: right, whatever the confidence or novelty
        ("clean", result("clean", 0.99), "right"),
        ("aggregation", result("aggregation", 0.30), "right"),
        ("ordered", result("ordered", 0.95, novel=True), "right"),
        # wrong but the model warns: flagged
        ("clean", result("artefact", 0.45), "flagged"),
        ("clean", result("artefact", 0.99, novel=True), "flagged"),
        ("interparticle", refused(), "flagged"),
        # wrong and sure: confidently wrong at >= 0.9, else wrong
        ("clean", result("aggregation", 0.90), "confidently wrong"),
        ("clean", result("aggregation", 0.999), "confidently wrong"),
        ("clean", result("aggregation", 0.89), "wrong"),
        ("clean", result("aggregation", LOW_CONFIDENCE_THRESHOLD), "wrong"),
        # ambiguous / novel: right when flagged, unsure or refused
        ("ambiguous", result("aggregation", 0.40), "right"),
        ("ambiguous", result("clean", 0.99, novel=True), "right"),
        ("novel", refused(), "right"),
        ("novel", result("ordered", 0.16), "right"),
        # ... and never right by naming a class with confidence
        ("ambiguous", result("clean", 0.95), "confidently wrong"),
        ("novel", result("interparticle", 0.94), "confidently wrong"),
        ("novel", result("bimodal", 0.76), "wrong"),
    ],
)
def test_verdict_rules(primary, res, expected):
    assert rdt.verdict(primary, res) == expected


def test_low_confidence_boundary_is_the_runtimes():
    just_below = math.nextafter(LOW_CONFIDENCE_THRESHOLD, 0.0)
    assert rdt.verdict("clean", result("artefact", just_below)) == "flagged"
    assert rdt.verdict("clean", result("artefact", LOW_CONFIDENCE_THRESHOLD)) == "wrong"


def test_group_verdict_and_summary():
    label = rdt.Label("VTMA.h5", "*", "aggregation", ("aggregation",), "1/A", "")
    other = rdt.Label("x.txt", "*", "clean", (), "1/A", "")
    rows = [rdt.Row(label, f"frame{i}", result("aggregation", 0.99), "right") for i in range(3)]
    rows.append(rdt.Row(label, "frame3", result("clean", 0.95), "confidently wrong"))
    rows.append(rdt.Row(other, "", result("artefact", 0.4), "flagged"))
    assert rdt.group_verdict(rows[:4]) == "right"
    counts = rdt.summary(rows)
    assert counts["curves"] == {"right": 3, "flagged": 1, "wrong": 0, "confidently wrong": 1}
    assert counts["label_rows"] == {"right": 1, "flagged": 1, "wrong": 0, "confidently wrong": 0}
    # a tie goes to the worse verdict
    tie = [rdt.Row(label, "a", result("aggregation", 0.99), "right"), rdt.Row(label, "b", result("clean", 0.7), "wrong")]
    assert rdt.group_verdict(tie) == "wrong"


def test_a_datasets_own_row_wins_over_the_files_star_row():
    star = rdt.Label("s.h5", "*", "aggregation", ("aggregation",), "1/A", "")
    own = rdt.Label("s.h5", "frame2", "artefact", ("artefact",), "1/A", "")
    stray = rdt.Label("s.h5", "gone", "clean", (), "1/A", "")
    chosen, unused = rdt.labels_for_file([star, own, stray, rdt.Label("t.txt", "*", "clean", (), "1/A", "")],
                                         "s.h5", ["frame1", "frame2", "frame3"])
    assert chosen == {"frame1": star, "frame2": own, "frame3": star}
    assert unused == [stray]


def test_read_labels_rejects_rows_outside_the_taxonomy(tmp_path):
    def write(*rows):
        path = tmp_path / "labels.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(rdt.LABEL_COLUMNS)
            writer.writerows(rows)
        return path

    good = rdt.read_labels(write(("a.txt", "*", "aggregation", "aggregation;artefact", "1/nm", "why")))
    assert good[0].anomalies == ("aggregation", "artefact") and good[0].q_unit == "1/nm"
    for bad in [
        ("a.txt", "*", "dusty", "", "1/A", ""),                 # not a class
        ("a.txt", "*", "clean", "spikes", "1/A", ""),           # not an anomaly
        ("a.txt", "*", "aggregation", "", "1/A", ""),           # primary anomaly not listed
        ("a.txt", "*", "clean", "artefact", "1/A", ""),         # clean with an anomaly
        ("a.txt", "*", "clean", "", "A^-1", ""),                # unit not in the list
    ]:
        with pytest.raises(ValueError):
            rdt.read_labels(write(bad))
    with pytest.raises(ValueError, match="twice"):
        rdt.read_labels(write(("a.txt", "*", "clean", "", "1/A", ""), ("a.txt", "*", "novel", "", "n/a", "")))


# -- the shipped labels and a real run ---------------------------------------------------------

@pytest.fixture(scope="module")
def example_data() -> Path:
    folder = rdt.example_data_folder()
    if not folder.is_dir():
        pytest.skip("sasdata's example data are not installed")
    return folder


def test_the_hand_labels_cover_every_example_curve(example_data):
    labels = rdt.read_labels(rdt.DEFAULT_LABELS)
    assert all(lab.reason for lab in labels), "every label needs its physical reason"
    from sasview_bnn_plugin.io.loading import CurveLoader, find_data_files

    files, _ = find_data_files([str(example_data)], recursive=True)
    loader = CurveLoader()
    for path in files:
        name = path.relative_to(example_data).as_posix()
        if name == "VTMA.h5":  # 240 frames, covered by its "*" row
            assert any(lab.file == name and lab.dataset == rdt.ALL_DATASETS for lab in labels)
            continue
        datasets = [c.dataset for c in loader.load(path)]
        chosen, unused = rdt.labels_for_file(labels, name, datasets)
        assert set(chosen) == set(datasets), f"{name}: unlabelled datasets"
        assert not unused, f"{name}: label rows that match nothing"


def test_core_function_on_three_labelled_curves_with_the_shipped_model(example_data, tmp_path):
    from sasview_bnn_plugin.model.classifier import BNNClassifier
    from sasview_bnn_plugin.model.catalog import shipped_model_files

    models = shipped_model_files()
    if not models:
        pytest.skip("no shipped model")
    every = {(lab.file, lab.dataset): lab for lab in rdt.read_labels(rdt.DEFAULT_LABELS)}
    labels = [every[("sphere_80.txt", "*")], every[("Ludox_silica.xml", "Ludox 1mm M4 TRANS_SANS")], every[("cyl_400_20.txt", "*")]]
    classifier = BNNClassifier(models[0], intra_op_threads=1)
    rows, warnings = rdt.classify_labelled(labels, classifier, example_data)
    assert warnings == []
    assert [row.label for row in rows] == labels
    for row in rows:
        assert row.verdict in rdt.VERDICTS
        assert row.verdict == rdt.verdict(row.label.primary, row.result)
        assert row.result.file == row.label.file
    sphere, ludox, short = rows
    assert sphere.result.ok and ludox.result.ok
    # sphere_80.txt has no q unit in the file: it is read in the labels' unit
    assert sphere.result.q_unit_used == "1/A" and sphere.result.q_unit_source == "user"
    # cyl_400_20.txt has 20 points: refused, which counts as flagged for a class label
    assert not short.result.ok and short.verdict == "flagged"

    text = rdt.markdown_table(rows, "shipped")
    assert text.count("\n| ") >= 3 + 4 and "confidently wrong" in text
    out = tmp_path / "rows.csv"
    rdt.write_csv(rows, out)
    with open(out, newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert [r["file"] for r in written] == [lab.file for lab in labels]
    assert written[2]["model_label"] == "refused" and written[2]["verdict"] == "flagged"
    assert set(written[0]) == set(rdt.CSV_COLUMNS)
