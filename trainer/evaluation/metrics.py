"""Classification, calibration, uncertainty and novelty metrics (plain numpy).

Conventions: ``labels`` (n,) int class indices; ``probs`` (n, classes) predictive
probabilities (the mean over posterior samples); ``sample_probs`` (n, S, classes)
per-sample probabilities; ``scores`` (n,) where higher means "more positive"
(more anomalous / more novel). Logarithms are natural (nats).
"""

from __future__ import annotations

import math

import numpy as np

from sasview_bnn_plugin.core.result import entropy  # the runtime's, the one entropy (nats, last axis)
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES

_EPS = 1e-12


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Fraction of curves whose predicted class equals the label."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    return float(np.mean(labels == predicted)) if labels.size else float("nan")


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes): row = true class, column = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return cm


def precision_recall_f1(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean F1 over the classes that occur (as label or prediction)."""
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(precision_recall_f1(cm)["f1"][present].mean())


def roc_curve(is_positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds) at every distinct score, highest first."""
    y = np.asarray(is_positive, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[distinct].astype(np.float64)
    fps = (distinct + 1 - tps).astype(np.float64)
    n_pos, n_neg = max(y.sum(), 1), max((~y).sum(), 1)
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN if one class is absent."""
    y = np.asarray(is_positive, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def fpr_at_recall(is_positive: np.ndarray, scores: np.ndarray, recall: float = 0.95) -> float:
    """False-positive rate at the first threshold whose true-positive rate reaches ``recall``."""
    y = np.asarray(is_positive, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, scores)
    return float(fpr[np.argmax(tpr >= recall - 1e-12)])


def one_vs_rest_auc(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """ROC AUC of p(class c) for "label == c" against the rest, shape (classes,)."""
    return np.array([roc_auc(labels == c, probs[:, c]) for c in range(probs.shape[1])])


def negative_log_likelihood(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean -log p(true class) in nats (probabilities clipped at 1e-12)."""
    p = probs[np.arange(labels.shape[0]), labels]
    return float(-np.mean(np.log(np.clip(p, _EPS, 1.0))))


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean over curves of sum_c (p_c - onehot_c)^2 (range 0 to 2)."""
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def reliability(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Top-label confidence vs accuracy in ``n_bins`` equal-width confidence bins on [0, 1].

    Returns per bin: ``confidence`` (mean), ``accuracy``, ``count``, and ``edges`` (n_bins + 1,).
    Empty bins have NaN confidence and accuracy.
    """
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)  # bins (lo, hi]
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        mean_acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return {"confidence": mean_conf, "accuracy": mean_acc, "count": count, "edges": edges}


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """ECE: sum over bins of (bin count / n) * |accuracy - confidence| (top label, equal-width bins)."""
    r = reliability(labels, probs, n_bins)
    used = r["count"] > 0
    return float(np.sum(r["count"][used] / labels.shape[0] * np.abs(r["accuracy"][used] - r["confidence"][used])))


def predictive_entropy(sample_probs: np.ndarray) -> np.ndarray:
    """Entropy of the sample-mean probabilities, shape (n,): total uncertainty."""
    return entropy(sample_probs.mean(axis=1))


def mutual_information(sample_probs: np.ndarray) -> np.ndarray:
    """Entropy of the mean minus the mean entropy of the samples, shape (n,): epistemic uncertainty."""
    return np.maximum(predictive_entropy(sample_probs) - entropy(sample_probs).mean(axis=1), 0.0)


def classification_summary(labels: np.ndarray, probs: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, macro-F1, NLL, Brier and ECE (15 bins) of predictive probabilities (n, classes)."""
    predicted = probs.argmax(axis=1)
    cm = confusion_matrix(labels, predicted, n_classes)
    return {
        "accuracy": accuracy(labels, predicted),
        "macro_f1": macro_f1(cm),
        "nll": negative_log_likelihood(labels, probs),
        "brier": brier_score(labels, probs),
        "ece": expected_calibration_error(labels, probs, 15),
    }


def presence_summary(present: np.ndarray, presence_probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Metrics of the anomalies-present output (taxonomy version 2, a curve may show several anomalies).

    ``present`` (n, 6) 0/1 truth, ``presence_probs`` (n, 6) posterior-mean
    probabilities. Returns the per-anomaly AUROC (``presence_auroc_<k>``, NaN
    where an anomaly never or always occurs), their minimum and mean, and the
    subset accuracy (every anomaly's yes/no right at ``threshold``) and mean
    per-anomaly accuracy.
    """
    present = np.asarray(present).astype(bool)
    predicted = np.asarray(presence_probs) >= threshold
    out: dict[str, float] = {}
    aucs = []
    for k in range(present.shape[1]):
        auc = roc_auc(present[:, k], presence_probs[:, k]) if 0 < present[:, k].sum() < present.shape[0] else float("nan")
        out[f"presence_auroc_{k}"] = auc
        aucs.append(auc)
    finite = [a for a in aucs if np.isfinite(a)]
    out["presence_auroc_min"] = float(min(finite)) if finite else float("nan")
    out["presence_auroc_mean"] = float(np.mean(finite)) if finite else float("nan")
    out["presence_subset_accuracy"] = float(np.mean(np.all(predicted == present, axis=1))) if present.size else float("nan")
    out["presence_accuracy"] = float(np.mean(predicted == present)) if present.size else float("nan")
    return out


def _predicted_present(predicted: np.ndarray, present: np.ndarray) -> np.ndarray:
    """(n,) bool: the predicted class (index, 0 = clean) is one of the anomalies ``present`` (n, 6) of its curve."""
    hit = np.zeros(predicted.size, bool)
    anomalous = predicted > 0
    hit[anomalous] = present[np.flatnonzero(anomalous), predicted[anomalous] - 1]
    return hit


def primary_by_anomaly_count(labels: np.ndarray, predicted: np.ndarray, present: np.ndarray) -> dict[str, dict[str, float]]:
    """Primary-class accuracy split by how many anomalies a curve shows (docs/taxonomy.md, version 2).

    ``labels``/``predicted`` (n,) class indices (0 = clean), ``present`` (n, 6)
    0/1 truth of anomalies 1..6. Returns one block per group (``clean``: no
    anomaly, ``single``: one, ``mixture``: two or more) with its size ``n``,
    ``accuracy`` and, for mixtures, ``predicted_present``: the fraction whose
    predicted class is one of the anomalies present (right or wrong about which
    one is primary, the one with the most moved points).
    """
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    present = np.asarray(present).astype(bool)
    count = present.sum(axis=1)
    hit_present = _predicted_present(predicted, present)
    out: dict[str, dict[str, float]] = {}
    for name, mask in (("clean", count == 0), ("single", count == 1), ("mixture", count > 1)):
        block = {"n": int(mask.sum()), "accuracy": float(np.mean(labels[mask] == predicted[mask])) if mask.any() else float("nan")}
        if name == "mixture":
            block["predicted_present"] = float(np.mean(hit_present[mask])) if mask.any() else float("nan")
        out[name] = block
    return out


#: Bin edges of :func:`single_primary_by_visibility`: points the one anomaly moves (5 is the visibility threshold of
#: most anomalies; spikes need 3 points, edge points 1: docs/taxonomy.md).
VISIBILITY_EDGES: tuple[float, ...] = (0.0, 5.0, 8.0, 13.0, 26.0, 51.0, math.inf)


def single_primary_by_visibility(
    labels: np.ndarray, predicted: np.ndarray, present: np.ndarray, visibility: np.ndarray,
    edges: tuple[float, ...] = VISIBILITY_EDGES,
) -> dict[str, list[dict[str, float]]]:
    """Primary-class accuracy of curves with exactly one anomaly, by class and by how visible the anomaly is.

    Is what the network misses the just-visible anomalies, or strong ones too? ``labels``/``predicted`` (n,)
    class indices; ``present`` (n, 6) 0/1 truth of anomalies 1..6; ``visibility`` (n, 6) their visibility scores
    (points moved; NaN where absent). Returns, per anomaly class name, one block per bin ``[edges[i], edges[i+1])``
    of the anomaly's score with ``n`` and ``accuracy`` (NaN for an empty bin).
    """
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    present = np.asarray(present).astype(bool)
    single = present.sum(axis=1) == 1
    score = np.where(present, np.nan_to_num(np.asarray(visibility, dtype=float), nan=0.0), 0.0).max(axis=1)
    out: dict[str, list[dict[str, float]]] = {}
    for k, name in enumerate(CLASS_NAMES[1:], start=1):
        rows = single & (labels == k) & present[:, k - 1]
        blocks = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            mask = rows & (score >= lo) & (score < hi)
            blocks.append({"points_from": float(lo), "points_to": float(hi), "n": int(mask.sum()),
                           "accuracy": float(np.mean(predicted[mask] == k)) if mask.any() else float("nan")})
        out[name] = blocks
    return out


#: Bin edges of :func:`mixture_primary_by_margin`: second-largest over largest visibility score.
MARGIN_EDGES: tuple[float, ...] = (0.0, 0.5, 0.8, 0.95, 1.0)


def mixture_primary_by_margin(
    labels: np.ndarray, predicted: np.ndarray, present: np.ndarray, visibility: np.ndarray,
    edges: tuple[float, ...] = MARGIN_EDGES,
) -> list[dict[str, float]]:
    """Primary-class accuracy of mixtures by how close their two most visible anomalies are.

    The primary class of a mixture is the anomaly with the largest visibility
    score (points moved; docs/taxonomy.md, version 2): when the second anomaly
    moves nearly as many points, which one is primary is nearly a tie.
    ``labels``/``predicted`` (n,) class indices; ``present`` (n, 6) 0/1 truth
    of anomalies 1..6 (as for :func:`primary_by_anomaly_count`); ``visibility``
    (n, 6) their visibility scores (NaN where absent). Curves with
    fewer than two anomalies are ignored. Returns one block per bin
    ``[edges[i], edges[i+1])`` of second / largest score (the last bin closed)
    with ``n``, ``accuracy`` and ``predicted_present`` (the predicted class is
    one of the anomalies present).
    """
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    present = np.asarray(present).astype(bool)
    vis = np.where(present, np.nan_to_num(np.asarray(visibility, dtype=float), nan=0.0), 0.0)
    mixture = present.sum(axis=1) > 1
    top2 = -np.sort(-vis, axis=1)[:, :2]
    ratio = np.divide(top2[:, 1], top2[:, 0], out=np.zeros(len(vis)), where=top2[:, 0] > 0)
    hit_present = _predicted_present(predicted, present)
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        mask = mixture & (ratio >= lo) & ((ratio <= hi) if last else (ratio < hi))
        out.append({"ratio_from": float(lo), "ratio_to": float(hi), "n": int(mask.sum()),
                    "accuracy": float(np.mean(labels[mask] == predicted[mask])) if mask.any() else float("nan"),
                    "predicted_present": float(np.mean(hit_present[mask])) if mask.any() else float("nan")})
    return out
