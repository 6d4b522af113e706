"""Batched preprocessing and batched results give what one curve at a time gave, bit for bit.

The preprocessing maps a whole batch of curves at once (``prepare_many``; ``prepare_curve`` is it on one
curve) and a batch's results are summarised with numpy over the batch (``summarise_samples``,
``ClassificationResult.from_summary``). Checked on varied curves (lengths from 3 to 1,200 points, NaNs,
negative q and I, spikes, steps, duplicate q, zero dI, 1/nm, extreme scales):

- against the per-curve code this replaced, read from the commit before the change (skipped where git
  or that commit is missing): the features (training inputs included: the trainer maps its curves with
  the same function) and every field of the results;
- batch against one curve at a time, with the current code;
- a classifier's rows for many curves in one batch against each curve classified alone (q unit decided
  by running both readings included);
- the batched check of the model's outputs names the same failure, per curve, as the checks in turn did.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from sasview_bnn_plugin.core import preprocessing, result
from sasview_bnn_plugin.core.preprocessing import CurveError, PreprocessingConfig, prepare_curve, prepare_many
from sasview_bnn_plugin.core.result import ClassificationResult, summarise_samples

#: The last commit with the per-curve preprocessing and results.
PER_CURVE_COMMIT = "4160cf3afea4e2697bc2f091b75a1aec841966a4"
REPO = Path(__file__).resolve().parents[1]


def per_curve_module(path: str, name: str) -> types.ModuleType:
    """The module at ``path`` as it was at :data:`PER_CURVE_COMMIT` (imports resolved in today's package)."""
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{PER_CURVE_COMMIT}:{path}"], capture_output=True, text=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"the per-curve code needs git and commit {PER_CURVE_COMMIT[:10]}")
    module = types.ModuleType(name)
    module.__package__ = name.rsplit(".", 1)[0]
    sys.modules[name] = module
    exec(compile(source, f"{PER_CURVE_COMMIT[:10]}:{path}", "exec"), module.__dict__)
    return module


def varied_curves(n: int, seed: int = 7) -> list[tuple]:
    """(q, I, dI or None, unit) of varied curves, some refused."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        n_points = int(rng.choice([3, 12, 30, 31, 45, 60, 61, 128, 300, 1200]))
        lo = 10 ** rng.uniform(-4.5, -1.5)
        q = np.geomspace(lo, lo * 10 ** rng.uniform(0.2, 4), n_points) * (1 + 0.02 * rng.standard_normal(n_points) * (k % 3 == 0))
        i = 100 / (1 + (q * rng.uniform(5, 500)) ** 2) ** rng.uniform(0.5, 2.5) + rng.uniform(0, 0.1)
        i = i * 10 ** rng.uniform(-8, 8)
        di = (0.03 * np.abs(i) + 1e-12) if k % 5 else None
        i = i * (1 + 0.05 * rng.standard_normal(n_points))
        kind = k % 11
        if kind == 1:
            i = i - 1.3 * np.median(i)  # over-subtracted: negative points
        elif kind == 2:
            i[rng.integers(0, n_points, max(1, n_points // 20))] *= rng.uniform(3, 1e3)  # spikes
        elif kind == 3:
            i[rng.integers(0, n_points, 3)] = np.nan
            q[rng.integers(0, n_points)] = np.nan
        elif kind == 4:
            q[rng.integers(0, n_points)] = -q[0]
        elif kind == 5:
            third = n_points // 3
            q, i, di = np.r_[q, q[:third]], np.r_[i, i[:third]], None if di is None else np.r_[di, di[:third]]  # duplicate q
        elif kind == 6 and di is not None:
            di[::4] = 0
            di[1::7] = np.nan
        elif kind == 7:
            i = -np.abs(i)  # refused
        elif kind == 8:
            i[n_points // 2 :] *= 3.0  # a step
        elif kind == 9:
            i = np.round(i, 3)
            i[::5] = 0.0
            i[1::9] = -0.0
        elif kind == 10:
            i[rng.integers(0, n_points)] = 1e250 if k % 2 else 1e-250
        out.append((q, i, di, [None, "1/A", "1/nm", "A^{-1}", "nm^-1"][k % 5]))
    return out


def same(a, b) -> bool:
    """The same model input bit for bit, or the same refusal."""
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b) and str(a) == str(b)
    return (a.features.dtype == b.features.dtype and a.features.tobytes() == b.features.tobytes() and a.coverage == b.coverage
            and a.q_window == b.q_window and a.n_points == b.n_points and a.notes == b.notes)


CONFIGS = [PreprocessingConfig(), PreprocessingConfig(n_bins=64, min_points=5, median_window=7, noise_window=9)]


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "small"])
def test_batched_preprocessing_gives_the_per_curve_features(config):
    old = per_curve_module("sasview_bnn_plugin/core/preprocessing.py", "sasview_bnn_plugin.core._per_curve_preprocessing")
    old_config = old.PreprocessingConfig.from_json(config.to_json())
    curves = varied_curves(440)
    before = []
    for curve in curves:
        try:
            before.append(old.prepare_curve(*curve, config=old_config))
        except old.CurveError as err:
            before.append(CurveError(str(err)))
    batched = prepare_many(curves, config)
    in_batches_of_37 = [o for start in range(0, len(curves), 37) for o in prepare_many(curves[start : start + 37], config)]
    assert sum(not isinstance(o, Exception) for o in before) > 150 and sum(isinstance(o, Exception) for o in before) > 50
    assert all(same(a, b) for a, b in zip(before, batched))
    assert all(same(a, b) for a, b in zip(before, in_batches_of_37))


def test_one_curve_is_a_batch_of_one():
    curves = varied_curves(120, seed=11)
    batched = prepare_many(curves, CONFIGS[0])
    for curve, outcome in zip(curves, batched):
        try:
            alone = prepare_curve(*curve, config=CONFIGS[0])
        except CurveError as err:
            alone = err
        assert same(outcome, alone)
    features, outcomes = preprocessing.prepare_batch(curves, CONFIGS[0])
    assert features.tobytes() == np.stack([o.features for o in batched if not isinstance(o, Exception)]).tobytes()


def fake_outputs(n: int, n_samples: int = 16, seed: int = 0):
    """Posterior samples (n, S, 7) and presence (n, S, 6) as float32 model outputs, novelty scores (n,)."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, n_samples, 7)) * rng.uniform(0.1, 8, (n, 1, 1))
    samples = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32).astype(np.float64)
    samples[1] = samples[1, :1]  # all samples alike
    samples[2] = 1 / 7  # ties everywhere
    presence = (rng.uniform(0, 1, (n, n_samples, 6)) ** rng.uniform(0.2, 5, (n, 1, 6))).astype(np.float32).astype(np.float64)
    scores = rng.uniform(0, 3, n).astype(np.float32).astype(np.float64)
    scores[3] = np.nan
    return samples, presence, scores


SETTINGS = [
    {},
    {"novelty_calibration": np.sort(np.random.default_rng(1).uniform(0, 3, 300)), "novelty_level": 0.05},
    {"novelty_calibration": np.sort(np.random.default_rng(2).uniform(0, 3, 300)), "set_threshold": 0.93, "set_level": 0.9},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["threshold", "p-value", "sets"])
@pytest.mark.parametrize("with_presence", [False, True], ids=["v1", "presence"])
def test_batch_results_are_the_per_curve_results(settings, with_presence):
    old = per_curve_module("sasview_bnn_plugin/core/result.py", "sasview_bnn_plugin.core._per_curve_result")
    n = 400
    samples, presence, scores = fake_outputs(n)
    extra = {"anomaly_threshold": 0.4} if with_presence else {}
    summary = summarise_samples(samples, scores, 1.2, anomaly_samples=presence if with_presence else None, **settings, **extra)
    rng = np.random.default_rng(5)
    for k in range(n):
        context = dict(file=f"f{k}", dataset="d", coverage=0.5, q_window=(1e-3, 0.3), n_points=60, model="m", notes=["a note"],
                       flatness_p=None if k % 3 == 0 else float(rng.uniform(0, 2e-3)))
        arguments = dict(anomaly_samples=presence[k] if with_presence else None, **settings, **extra)
        records = [
            old.ClassificationResult.from_samples(samples[k], scores[k], 1.2, **arguments, **context),
            ClassificationResult.from_samples(samples[k], scores[k], 1.2, **arguments, **context),
            ClassificationResult.from_summary(summary, k, **context),
        ]
        texts = {json.dumps(r.to_dict(), allow_nan=True) for r in records}
        assert len(texts) == 1, k
        assert len({json.dumps(r.to_row(), allow_nan=True) for r in records}) == 1


def test_a_classifier_batch_gives_the_rows_of_each_curve_alone(make_test_model):
    from sasview_bnn_plugin.model.classifier import BNNClassifier

    model = make_test_model("batch_v2.onnx", n_samples=4, seed=3, v2=True)
    classifier = BNNClassifier(model, provider="cpu", batch_size=16)
    curves = [(q, i, di, None, unit) for q, i, di, unit in varied_curves(150, seed=5)]
    batch = classifier.classify(curves)
    alone = [classifier.classify([curve])[0] for curve in curves]
    assert sum(r.ok for r in batch) > 40
    assert any(r.ok and r.q_unit_source == "assumed" for r in batch)  # both readings run
    for a, b in zip(batch, alone):
        a.dataset = b.dataset = ""  # "curve k": its index in the call
        assert json.dumps(a.to_dict(), allow_nan=True) == json.dumps(b.to_dict(), allow_nan=True)


def test_batched_output_checks_name_the_first_failing_check():
    from sasview_bnn_plugin.model import classifier as clf

    samples, presence, scores = fake_outputs(8, n_samples=4)
    samples[0, 1, 2] = np.nan                       # not finite (and a bad novelty score: the first check names it)
    scores[0] = np.inf
    samples[1, 0, 0] += 0.01                        # does not sum to 1
    samples[2, 0, 0] = -0.5                         # outside 0..1
    scores[3] = np.nan                              # bad novelty
    presence[4, 0, 0] = 1.5                         # bad presence
    presence[5, 0, 0] = np.nan
    presence[6, 1, 1] = 1 + 5e-5                    # within the tolerance: clipped to 1
    checked = clf._checked_outcomes(samples.astype(np.float32), scores.astype(np.float32), presence.astype(np.float32))
    assert checked.failures[:6] == [clf._NON_FINITE, clf._NOT_PROBABILITIES, clf._NOT_PROBABILITIES, clf._BAD_NOVELTY,
                                    clf._BAD_PRESENCE, clf._BAD_PRESENCE]
    assert checked.failures[6:] == [None, None]
    assert checked[6].presence.max() == 1.0 and isinstance(checked[6].novelty, float)
    assert checked[0] is clf._NON_FINITE and np.isnan(checked.samples[:6]).all()
    assert result.SampleSummary is type(summarise_samples(checked.samples, checked.novelty, 1.0))
