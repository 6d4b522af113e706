"""Which novelty score sees an anomaly class the network never saw? A leave-one-class-out study.

For a model trained without one class (``fit --exclude-class NAME``: every
curve showing it, as primary class or as a secondary anomaly, is left out),
:func:`study_run` computes several novelty scores on in-distribution test
curves (no left-out class present) and on test curves showing the left-out
class, and reports AUROC and FPR at 95 % recall for each:

- ``msp``: 1 - the largest posterior-mean class probability;
- ``entropy``: predictive entropy of the posterior-mean probabilities (nats);
- ``mutual_information``: posterior disagreement (entropy minus expected entropy);
- ``energy``: -logsumexp of the class logits, averaged over the samples
  (Liu et al. 2020);
- ``mahalanobis``: squared Mahalanobis distance of the penultimate features
  to the nearest class mean, covariance shared by the classes, averaged over
  the samples -- the exported model's feature score;
- ``gaussian_density``: the negative log-density of the penultimate features
  under a class-conditional Gaussian with one covariance per class (DDU,
  Mukhoti et al. 2021), the largest class density, averaged over samples;
- ``knn``: distance to the k-th nearest training curve of the L2-normalised
  penultimate features of all samples concatenated (Sun et al. 2022);
- ``knn_exported``: the kNN score ``export --novelty-score knn_entropy`` puts
  in the graph, alone (:class:`~sasview_bnn_trainer.novelty.KnnNovelty`
  with its defaults: 1 - the k-th largest cosine similarity of the
  posterior-mean penultimate features to a bank of
  :data:`~sasview_bnn_trainer.novelty.DEFAULT_KNN_BANK` training curves
  stratified over the classes, k = :data:`~sasview_bnn_trainer.novelty.DEFAULT_KNN_K`;
  the bank here is not rounded to float16);
- ``mahalanobis_layers``: Mahalanobis distances of the globally averaged
  activations of the three conv layers and of the penultimate layer, each
  divided by its median on training curves, summed (Lee et al. 2018's
  multi-layer score without input perturbation);
- ``exported``: the exported combination max(M/q_M, H/q_H).

All statistics (means, covariances, the kNN bank, scales) come from training
curves of the run only; nothing is fitted on test curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES, class_index

from ..features import FeatureFile, build_features, default_features_path, run_split
from ..fit import load_run
from ..network import PackedCNN, pack_members
from ..novelty import DEFAULT_KNN_BANK, DEFAULT_KNN_K, stratified_rows
from . import metrics as M

SCORES: tuple[str, ...] = ("msp", "entropy", "mutual_information", "energy", "mahalanobis", "gaussian_density",
                           "knn", "knn_exported", "mahalanobis_layers", "exported")
KNN_K = 10


@torch.no_grad()
def activations(net: PackedCNN, x: np.ndarray, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Per-sample activations of features x (n, 4, bins): logits (n, S, 7), hidden (n, S, H), conv{1,2,3} (n, S, c) averaged over q."""
    m, cfg = net.members, net.config
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("logits", "hidden", "conv1", "conv2", "conv3")}
    for s in range(0, x.shape[0], batch_size):
        h = torch.from_numpy(x[s : s + batch_size])
        h = h.repeat(1, m, 1) if m > 1 else h
        for k, layer in enumerate((net.conv1, net.conv2, net.conv3), start=1):
            h = F.relu(F.max_pool1d(layer(h), 2))
            out[f"conv{k}"].append(h.mean(dim=2).reshape(h.shape[0], m, -1).double().numpy())
        flat = h.mean(dim=2, keepdim=True) if cfg.pooling == "average" else h.reshape(-1, m * cfg.fc_inputs, 1)
        hidden = F.relu(net.fc(flat))
        logits, _ = net.heads(hidden)
        out["hidden"].append(hidden.reshape(-1, m, cfg.hidden).double().numpy())
        out["logits"].append(logits.double().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def _whitening(features: np.ndarray, labels: np.ndarray, ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample class means (S, C, D) and whitening (S, D, D) of a shared covariance, for features (n, S, D)."""
    classes = np.unique(labels)
    n, s, d = features.shape
    means = np.stack([features[labels == c].mean(axis=0) for c in classes], axis=1)  # (S, C, D)
    centred = features - means[:, np.searchsorted(classes, labels)].transpose(1, 0, 2)
    whiten = np.empty((s, d, d))
    for k in range(s):
        cov = centred[:, k].T @ centred[:, k] / max(n - classes.size, 1)
        cov += (ridge * np.trace(cov) / d + 1e-12) * np.eye(d)
        whiten[k] = np.linalg.cholesky(np.linalg.inv(cov)).T
    return means, whiten


def _mahalanobis(features: np.ndarray, means: np.ndarray, whiten: np.ndarray) -> np.ndarray:
    """mean over samples of min over classes of the squared Mahalanobis distance, (n,)."""
    z = np.matmul(features.transpose(1, 0, 2), whiten.transpose(0, 2, 1))  # (S, n, D)
    zm = np.matmul(means, whiten.transpose(0, 2, 1))  # (S, C, D)
    d = (z**2).sum(-1)[:, :, None] - 2 * np.matmul(z, zm.transpose(0, 2, 1)) + (zm**2).sum(-1)[:, None, :]  # (S, n, C)
    return np.maximum(d, 0).min(axis=2).mean(axis=0)


class ClassGaussians:
    """One Gaussian per class and sample on the penultimate features (DDU); score = -max_c log N, averaged over samples."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, ridge: float = 1e-3) -> None:
        self.classes = np.unique(labels)
        s, d = features.shape[1:]
        self.means = np.stack([features[labels == c].mean(axis=0) for c in self.classes], axis=1)  # (S, C, D)
        self.whiten = np.empty((s, self.classes.size, d, d))
        self.log_norm = np.empty((s, self.classes.size))
        for j, c in enumerate(self.classes):
            f = features[labels == c]
            for k in range(s):
                centred = f[:, k] - self.means[k, j]
                cov = centred.T @ centred / max(f.shape[0] - 1, 1)
                cov += (ridge * np.trace(cov) / d + 1e-12) * np.eye(d)
                chol = np.linalg.cholesky(cov)
                self.whiten[k, j] = np.linalg.inv(chol)
                self.log_norm[k, j] = -np.sum(np.log(np.diag(chol))) - 0.5 * d * math.log(2 * math.pi)

    def score(self, features: np.ndarray) -> np.ndarray:
        f = features.transpose(1, 0, 2)[:, None]  # (S, 1, n, D)
        z = np.matmul(f - self.means[:, :, None, :], self.whiten.transpose(0, 1, 3, 2))  # (S, C, n, D)
        log_density = self.log_norm[:, :, None] - 0.5 * (z**2).sum(-1)  # (S, C, n)
        return -log_density.max(axis=1).mean(axis=0)


def _normalised(hidden: np.ndarray) -> np.ndarray:
    flat = hidden / np.maximum(np.linalg.norm(hidden, axis=2, keepdims=True), 1e-12)
    return (flat.reshape(flat.shape[0], -1) / math.sqrt(hidden.shape[1])).astype(np.float32)


def knn_distance(bank: np.ndarray, queries: np.ndarray, k: int = KNN_K, chunk: int = 2048) -> np.ndarray:
    """Euclidean distance of every query (n, D) to its k-th nearest neighbour in bank (m, D), (n,)."""
    b = torch.from_numpy(bank)
    out = []
    for s in range(0, queries.shape[0], chunk):
        d = torch.cdist(torch.from_numpy(queries[s : s + chunk]), b)
        out.append(torch.topk(d, k, dim=1, largest=False).values[:, -1].numpy())
    return np.concatenate(out)


def mean_feature_bank(hidden: np.ndarray) -> np.ndarray:
    """The export's kNN bank from penultimate activations (n, S, H): the unit posterior-mean features, (n, H)."""
    return _normalised(hidden.mean(axis=1, keepdims=True))


def knn_exported_score(mean_bank: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """The kNN score the export puts in the graph: 1 - the k-th largest cosine similarity of the posterior-mean
    features of ``hidden`` (n, S, H) to ``mean_bank`` (:func:`mean_feature_bank`), (n,)."""
    # unit vectors a, b: 1 - a.b = |a - b|^2 / 2
    return knn_distance(mean_bank, mean_feature_bank(hidden), DEFAULT_KNN_K) ** 2 / 2


@dataclass
class ScoreModel:
    """Everything fitted on training curves that the scores need."""

    means: np.ndarray
    whiten: np.ndarray
    gaussians: ClassGaussians
    bank: np.ndarray
    mean_bank: np.ndarray  # unit posterior-mean features of the export's bank (knn_exported)
    layers: dict[str, tuple[np.ndarray, np.ndarray, float]]
    scales: tuple[float, float]


def fit_scores(act: dict[str, np.ndarray], labels: np.ndarray, val_act: dict[str, np.ndarray], false_alarm_rate: float = 0.05,
               seed: int = 0) -> ScoreModel:
    """Fit the feature statistics on training activations; q_M, q_H (the exported scales) on validation activations."""
    means, whiten = _whitening(act["hidden"], labels)
    layers = {}
    for name in ("conv1", "conv2", "conv3", "hidden"):
        mu, w = _whitening(act[name], labels)
        layers[name] = (mu, w, float(np.median(_mahalanobis(act[name], mu, w))))
    probs = _softmax(val_act["logits"]).mean(axis=1)
    q_m = float(np.quantile(_mahalanobis(val_act["hidden"], means, whiten), 1 - false_alarm_rate))
    q_h = float(np.quantile(M.entropy(probs), 1 - false_alarm_rate))
    bank_rows = stratified_rows(np.arange(labels.size), labels, DEFAULT_KNN_BANK, seed)
    mean_bank = mean_feature_bank(act["hidden"][bank_rows])
    return ScoreModel(means, whiten, ClassGaussians(act["hidden"], labels), _normalised(act["hidden"]), mean_bank, layers, (q_m, q_h))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def all_scores(model: ScoreModel, act: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every score of :data:`SCORES` for the curves of ``act`` (higher = more novel), each (n,)."""
    sample_probs = _softmax(act["logits"])
    probs = sample_probs.mean(axis=1)
    logits = act["logits"]
    top = logits.max(axis=-1, keepdims=True)
    energy = -(top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))).mean(axis=1)
    maha = _mahalanobis(act["hidden"], model.means, model.whiten)
    entropy = M.entropy(probs)
    return {
        "msp": 1.0 - probs.max(axis=1),
        "entropy": entropy,
        "mutual_information": M.mutual_information(sample_probs),
        "energy": energy,
        "mahalanobis": maha,
        "gaussian_density": model.gaussians.score(act["hidden"]),
        "knn": knn_distance(model.bank, _normalised(act["hidden"])),
        "knn_exported": knn_exported_score(model.mean_bank, act["hidden"]),
        "mahalanobis_layers": sum(_mahalanobis(act[n], mu, w) / med for n, (mu, w, med) in model.layers.items()),
        "exported": np.maximum(maha / model.scales[0], entropy / model.scales[1]),
    }


def study_run(run_dir: str | Path, test_path: str | Path, *, n_samples: int = 8, n_fit: int = 20_000, seed: int = 0) -> dict[str, Any]:
    """Leave-one-class-out table row(s) of one run: AUROC and FPR@95 of every score for its left-out class(es)."""
    posterior, record = load_run(run_dir)
    data = record["data"]
    excluded = [class_index(n) for n in data["excluded_classes"]]
    if not excluded:
        raise ValueError(f"{run_dir} was trained on every class; a leave-one-class-out study needs a run with --exclude-class")
    net = pack_members(posterior.config, posterior.sample_weights(n_samples, seed)).eval()
    rng = np.random.default_rng([seed, 0x57D])
    with FeatureFile(data["features_path"]) as ff:
        train_rows, val_rows = run_split(data, ff)
        fit_rows = np.sort(rng.choice(train_rows, min(n_fit, train_rows.size), replace=False))
        val_rows = np.sort(rng.choice(val_rows, min(n_fit, val_rows.size), replace=False))
        fit_act = activations(net, ff.read_rows(fit_rows))
        fit_labels = ff.labels[fit_rows]
        val_act = activations(net, ff.read_rows(val_rows))
    score_model = fit_scores(fit_act, fit_labels, val_act, seed=seed)
    test_path = Path(test_path)
    from sasview_bnn_plugin.core.preprocessing import PreprocessingConfig

    cfg = PreprocessingConfig.from_json(data["preprocessing"])
    with FeatureFile(build_features(test_path, default_features_path(test_path, cfg, "eval-features"), cfg, progress=False)) as tf:
        labels, present = tf.labels, tf.anomalies
        act = activations(net, tf.read_rows(np.arange(len(tf))))
    scores = all_scores(score_model, act)
    shows = np.isin(labels, excluded) | np.any(present[:, [c - 1 for c in excluded]] > 0, axis=1)
    probs = _softmax(act["logits"]).mean(axis=1)
    row: dict[str, Any] = {"excluded": data["excluded_classes"], "n_novel": int(shows.sum()), "n_in_distribution": int((~shows).sum()),
                           "id_accuracy": M.accuracy(labels[~shows], probs[~shows].argmax(axis=1)),
                           "n_train": data["n_train"], "epochs": record["epoch"]}
    y = np.r_[np.zeros((~shows).sum(), bool), np.ones(shows.sum(), bool)]
    for name in SCORES:
        s = np.r_[scores[name][~shows], scores[name][shows]]
        row[name] = {"auroc": M.roc_auc(y, s), "fpr_at_95_recall": M.fpr_at_recall(y, s, 0.95)}
    return row


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The leave-one-class-out table: one line per left-out class, AUROC (FPR@95) per score, and the mean.

    The scores are those of :data:`SCORES` every row has (rows of an earlier study may lack newer scores).
    """
    names = [s for s in SCORES if all(s in r for r in rows)]
    head = "| left-out class | n | ID accuracy | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (3 + len(names))]
    for r in rows:
        cells = [f"{r[s]['auroc']:.3f} ({r[s]['fpr_at_95_recall']:.2f})" for s in names]
        lines.append(f"| {', '.join(r['excluded'])} | {r['n_novel']} | {r['id_accuracy']:.3f} | " + " | ".join(cells) + " |")
    if rows:
        means = [f"**{np.mean([r[s]['auroc'] for r in rows]):.3f}**" for s in names]
        lines.append("| **mean AUROC** | | | " + " | ".join(means) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from .study_cli import study_main

    return study_main(argv, description="Leave-one-class-out novelty study: every score on runs trained with --exclude-class.",
                      runs_help="run directories of `sasview-bnn-train fit --exclude-class ...`", study_run=study_run, markdown_table=markdown_table)


if __name__ == "__main__":
    raise SystemExit(main())
