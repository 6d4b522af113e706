"""Evaluation metrics checked against scikit-learn (and a direct ECE computation) on fixed inputs."""

import math

import numpy as np
import pytest

sk = pytest.importorskip("sklearn.metrics")

from sasview_bnn_trainer.evaluation import metrics as M


@pytest.fixture(scope="module")
def fixed():
    rng = np.random.default_rng(42)
    n, c = 600, 7
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 2.5 * np.eye(c)[labels] * rng.uniform(0, 1, (n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def test_accuracy_confusion_f1_match_sklearn(fixed):
    labels, probs = fixed
    pred = probs.argmax(axis=1)
    cm = M.confusion_matrix(labels, pred, 7)
    np.testing.assert_array_equal(cm, sk.confusion_matrix(labels, pred, labels=range(7)))
    assert M.accuracy(labels, pred) == pytest.approx(sk.accuracy_score(labels, pred))
    prf = M.precision_recall_f1(cm)
    p, r, f, s = sk.precision_recall_fscore_support(labels, pred, labels=range(7), zero_division=0)
    np.testing.assert_allclose(prf["precision"], p)
    np.testing.assert_allclose(prf["recall"], r)
    np.testing.assert_allclose(prf["f1"], f)
    np.testing.assert_array_equal(prf["support"], s)
    assert M.macro_f1(cm) == pytest.approx(sk.f1_score(labels, pred, average="macro"))


def test_roc_auc_and_curve_match_sklearn(fixed):
    labels, probs = fixed
    # ties on purpose: rounded scores
    for c in range(7):
        y, s = labels == c, np.round(probs[:, c], 2)
        assert M.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
        fpr, tpr, _ = M.roc_curve(y, s)
        fpr_sk, tpr_sk, _ = sk.roc_curve(y, s, drop_intermediate=False)
        np.testing.assert_allclose(fpr, fpr_sk)
        np.testing.assert_allclose(tpr, tpr_sk)
    np.testing.assert_allclose(M.one_vs_rest_auc(labels, probs), sk.roc_auc_score(labels, probs, multi_class="ovr", average=None))
    assert np.isnan(M.roc_auc(np.ones(5, bool), np.arange(5.0)))


def test_fpr_at_recall_against_sklearn_curve(fixed):
    labels, probs = fixed
    y, s = labels == 0, probs[:, 0]
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    assert M.fpr_at_recall(y, s, 0.95) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])


def test_nll_and_brier_match_sklearn(fixed):
    labels, probs = fixed
    assert M.negative_log_likelihood(labels, probs) == pytest.approx(sk.log_loss(labels, probs, labels=range(7)))
    # sklearn's multi-class Brier score is the mean summed squared error (scale_by_half=False)
    assert M.brier_score(labels, probs) == pytest.approx(sk.brier_score_loss(labels, probs, labels=range(7), scale_by_half=False))


def test_ece_against_a_direct_loop(fixed):
    labels, probs = fixed
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    ece = 0.0
    edges = np.linspace(0, 1, 16)
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs((pred[sel] == labels[sel]).mean() - conf[sel].mean())
    assert M.expected_calibration_error(labels, probs, 15) == pytest.approx(ece)
    onehot = np.eye(7)[labels]
    assert M.expected_calibration_error(labels, onehot, 15) == pytest.approx(0.0)


def test_entropy_and_mutual_information():
    agree = np.tile(np.array([[0.5, 0.5, 0, 0, 0, 0, 0]]), (1, 4, 1))
    disagree = np.zeros((1, 2, 7))
    disagree[0, 0, 0] = disagree[0, 1, 1] = 1.0
    assert M.predictive_entropy(agree)[0] == pytest.approx(np.log(2))
    assert M.mutual_information(agree)[0] == pytest.approx(0.0, abs=1e-12)
    assert M.mutual_information(disagree)[0] == pytest.approx(np.log(2))


def test_near_miss_block_reports_clean_recall_with_and_without_a_near_miss():
    from sasview_bnn_trainer.evaluation.evaluate import _near_miss_block

    near = np.array(["", "", "few_spikes", "few_spikes", "weak_upturn", ""])
    labels = np.array([0, 0, 0, 0, 0, 3])
    predicted = np.array([0, 6, 6, 0, 1, 3])
    block = _near_miss_block(near, labels, predicted)
    assert block["without"] == {"n": 2, "clean_recall": 0.5}
    assert block["with"] == {"n": 3, "clean_recall": 1 / 3}
    assert block["per_kind"] == {"few_spikes": {"n": 2, "clean_recall": 0.5}, "weak_upturn": {"n": 1, "clean_recall": 0.0}}


def test_primary_accuracy_split_by_number_of_anomalies_present():
    # Anomalies 1..6 as columns 0..5; class k > 0 is column k - 1.
    present = np.zeros((6, 6), int)
    present[1, 0] = 1                      # aggregation alone
    present[2, 0] = 1                      # aggregation alone, called interparticle
    present[3, [1, 5]] = 1                 # interparticle + artefact, primary interparticle
    present[4, [1, 5]] = 1                 # same mixture, called artefact: present, wrong primary
    present[5, [0, 4]] = 1                 # aggregation + oversubtraction, called ordered
    labels = np.array([0, 1, 1, 2, 2, 1])
    predicted = np.array([0, 1, 2, 2, 6, 3])
    out = M.primary_by_anomaly_count(labels, predicted, present)
    assert out["clean"] == {"n": 1, "accuracy": 1.0}
    assert out["single"] == {"n": 2, "accuracy": 0.5}
    assert out["mixture"]["n"] == 3
    assert out["mixture"]["accuracy"] == pytest.approx(1 / 3)
    assert out["mixture"]["predicted_present"] == pytest.approx(2 / 3)


def test_mixture_primary_accuracy_by_visibility_margin():
    nan = float("nan")
    # visibility scores of anomalies 1..6 (aggregation, interparticle, ordered, bimodal, oversubtracted, artefact)
    vis = np.array([
        [40, nan, nan, nan, nan, 10],   # ratio 0.25, primary aggregation, called aggregation
        [40, nan, nan, nan, nan, 10],   # ratio 0.25, called artefact: present, wrong primary
        [nan, 30, nan, nan, nan, 20],   # ratio 0.667, called clean
        [nan, 50, nan, nan, nan, 49],   # ratio 0.98, called interparticle
        [nan, 50, nan, nan, nan, 50],   # ratio 1.0 (a tie) goes in the last, closed bin; called ordered
        [12, nan, nan, nan, nan, nan],  # one anomaly: not a mixture, ignored
    ])
    labels = np.array([1, 1, 2, 2, 2, 1])
    predicted = np.array([1, 6, 0, 2, 3, 1])
    out = M.mixture_primary_by_margin(labels, predicted, np.isfinite(vis).astype(int), vis)
    assert [(b["ratio_from"], b["ratio_to"], b["n"]) for b in out] == [(0.0, 0.5, 2), (0.5, 0.8, 1), (0.8, 0.95, 0), (0.95, 1.0, 2)]
    assert out[0]["accuracy"] == 0.5 and out[0]["predicted_present"] == 1.0
    assert out[1]["accuracy"] == 0.0 and out[1]["predicted_present"] == 0.0
    assert math.isnan(out[2]["accuracy"])
    assert out[3]["accuracy"] == 0.5 and out[3]["predicted_present"] == 0.5


def test_single_anomaly_accuracy_by_how_visible_it_is():
    nan = float("nan")
    # visibility scores of anomalies 1..6 (aggregation, interparticle, ordered, bimodal, oversubtracted, artefact)
    vis = np.array([
        [6, nan, nan, nan, nan, nan],     # aggregation, just visible (5-7 points), called aggregation
        [7, nan, nan, nan, nan, nan],     # aggregation, just visible, called clean
        [200, nan, nan, nan, nan, nan],   # aggregation, strong (> 50 points), called aggregation
        [nan, nan, nan, nan, nan, 2],     # artefact moving 2 points (edge points: < 5), called artefact
        [nan, nan, nan, nan, nan, 51],    # artefact at exactly 51 points: the last bin
        [40, nan, nan, nan, nan, 10],     # a mixture: ignored
        [nan, nan, nan, nan, nan, nan],   # clean: ignored
    ])
    labels = np.array([1, 1, 1, 6, 6, 1, 0])
    predicted = np.array([1, 0, 1, 6, 3, 1, 0])
    out = M.single_primary_by_visibility(labels, predicted, np.isfinite(vis).astype(int), vis)
    assert list(out) == ["aggregation", "interparticle", "ordered", "bimodal", "oversubtracted", "artefact"]
    agg = {b["points_from"]: b for b in out["aggregation"]}
    assert agg[5.0]["n"] == 2 and agg[5.0]["accuracy"] == 0.5
    assert agg[51.0]["n"] == 1 and agg[51.0]["accuracy"] == 1.0 and math.isinf(agg[51.0]["points_to"])
    assert sum(b["n"] for b in out["aggregation"]) == 3  # the mixture is not counted
    art = {b["points_from"]: b for b in out["artefact"]}
    assert art[0.0]["n"] == 1 and art[0.0]["accuracy"] == 1.0
    assert art[51.0]["n"] == 1 and art[51.0]["accuracy"] == 0.0
    assert all(b["n"] == 0 and math.isnan(b["accuracy"]) for b in out["ordered"])
