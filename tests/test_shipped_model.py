"""The shipped default model: loads, complete metadata, matches its card, still classifies fresh simulated curves.

The accuracy and ECE bounds (0.95, 0.03) are looser than the model card's goals so this is not
flaky, but a real regression guard: a model that stopped working, a preprocessing change that
silently shifts the features, or a simulator change that moves the classes all fail it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sasview_bnn_plugin.model.classifier import BNNClassifier
from sasview_bnn_plugin.model.card import card_path, file_sha256, markdown_card_path, verify_model_file
from sasview_bnn_plugin.model.catalog import read_metadata, resolve_model, shipped_model_files, shipped_models
from sasview_bnn_plugin.core.model_format import REQUIRED_METADATA, check_metadata
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES

ROOT = Path(__file__).resolve().parents[1]
#: Seed of the fresh test set: not used by the shipped model's training, validation or test data.
FRESH_SEED = 90_210


@pytest.fixture(scope="module")
def shipped() -> Path:
    files = shipped_model_files()
    assert files, "no model is shipped in onnx_models/"
    # The default model (the one `classify` uses without --model), not the first file by name.
    return resolve_model(None, shipped_models()).path


def test_the_shipped_model_is_complete_and_matches_its_card(shipped):
    meta = read_metadata(shipped)
    assert set(REQUIRED_METADATA) <= set(meta)
    check_metadata(meta)
    card = verify_model_file(shipped, require_card=True)
    assert card["sha256"] == file_sha256(shipped) and card["size_bytes"] == shipped.stat().st_size
    assert shipped.stat().st_size <= 20 * 1024 * 1024
    assert card["training_data"]["n_curves"] >= 1_000_000
    assert card["n_samples"] == int(meta["n_samples"]) and card["inference_method"] == meta["inference_method"]
    for key in ("accuracy", "macro_f1", "ece_15", "anomaly_auroc"):
        assert 0.0 <= card["test_metrics"][key] <= 1.0
    assert card["leave_one_class_out"]["per_class"], "the card must report leave-one-class-out novelty"
    assert card["baseline_comparison"].get("table_markdown"), "the card must compare with fit-and-select"
    assert card["known_weaknesses"]
    assert card["sha256"] in markdown_card_path(shipped).read_text(encoding="utf-8")
    assert card_path(shipped).name == shipped.with_suffix(".json").name
    [source] = [s for s in shipped_models() if s.path == shipped]
    assert "error" not in source.card and resolve_model(None, [source]).path == shipped


def test_the_shipped_model_classifies_fresh_simulated_curves(shipped, tmp_path):
    simulation = pytest.importorskip("sasview_bnn_trainer.simulation.runner")
    from sasview_bnn_trainer.evaluation.metrics import expected_calibration_error
    from sasview_bnn_trainer.simulation.store import CurveReader

    used = json.loads(read_metadata(shipped)["training_data"])["seed"]
    assert FRESH_SEED != used
    data = simulation.simulate_to_file(700, tmp_path / "fresh.h5", seed=FRESH_SEED, workers=1, progress=False)
    with CurveReader(data) as reader:
        curves = reader.read(0, len(reader))
    classifier = BNNClassifier(shipped)
    results = classifier.classify([(c.q, c.intensity, c.d_intensity, None, c.q_unit) for c in curves])
    assert all(r.ok for r in results), [r.message for r in results if not r.ok][:3]
    labels = np.array([c.label for c in curves])
    probs = np.stack([r.probabilities for r in results])
    accuracy = float(np.mean(probs.argmax(axis=1) == labels))
    ece = expected_calibration_error(labels, probs)
    print(f"fresh 700 curves (seed {FRESH_SEED}): accuracy {accuracy:.4f}, ECE {ece:.4f}")
    # Simulator 2.0 (mixtures, visibility-checked labels from just visible to strong, 24 shape
    # families) is harder than 1.1, for which this bound was 0.95: the default model measured
    # 0.906 on 20,000 curves of seed 6006 (model card), the version-1 model 0.839 on these 700.
    # 0.88 is about 2.4 standard errors of a 700-curve accuracy below the card's figure.
    assert accuracy >= 0.88
    assert ece <= 0.03
    # Balanced by the planned class; a mixture's label is its most visible anomaly (taxonomy v2).
    with CurveReader(data) as reader:
        planned = [str(v) for v in reader.column("params", "planned_class")]
    assert [planned.count(n) for n in CLASS_NAMES] == [100] * len(CLASS_NAMES)


@pytest.mark.slow
def test_the_readme_main_job_runs_the_shipped_model_on_example_data(tmp_path):
    """`bash scripts/demo.sh` (the README's main-job command), run in this test environment."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "bash scripts/demo.sh" in readme
    env = dict(os.environ, VENV=sys.prefix, PYTHON=sys.executable)
    out = tmp_path / "demo"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = (out / "example_data.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("file,dataset,label")
    assert len(rows) - 1 >= 280  # 294 curves in 54 files in sasdata's example data
    assert (out / "contact_sheet.png").stat().st_size > 10_000
    assert "curves from" in done.stdout
