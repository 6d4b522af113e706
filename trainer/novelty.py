"""The feature-space novelty models of an exported ensemble, and the torch module the export calibrates.

- :class:`MahalanobisNovelty`: M, the squared Mahalanobis distance of each
  sample's penultimate activations h (hidden,) to the nearest training-class
  mean, with a covariance shared by the classes, averaged over the S samples:
  mean_s min_c (h_s - mu_sc)^T Sigma_s^-1 (h_s - mu_sc);
- :func:`fit_mahalanobis`: the class means and the covariance (a ridge of 1e-3
  of the mean variance added) fitted on training curves, in float64;
- :class:`KnnNovelty`: K, the cosine distance to the k-th nearest of a bank of
  training curves, K = 1 - the k-th largest sim(x, b) over the bank b. By
  default ("mean") sim is the cosine similarity of the posterior-mean
  penultimate features mean_s h_s; with "samples" it is mean_s u_s(x) . u_s(b),
  u_s = h_s / |h_s| each sample's L2-normalised features -- then 1 - sim is
  half the squared Euclidean distance of the concatenated normalised features
  divided by sqrt(S), and K ranks curves exactly as the ``knn`` score of
  :mod:`~sasview_bnn_trainer.evaluation.novelty_study` does (with its bank);
- :func:`fit_knn_bank`: the bank, a class-stratified seeded choice of
  training curves (:func:`stratified_rows`);
- :class:`ExportedModel`: the network and a novelty head together, the
  torch reference of everything the exported graph returns (probabilities,
  anomaly probabilities, novelty score max(F / q_F, H / q_H), F the feature
  score M or K, H the predictive entropy of the posterior-mean
  probabilities; or K / q_K alone). :data:`NOVELTY_SCORES` names the choices
  (``sasview-bnn-train export --novelty-score``).

They read the network only through its public interface
(:meth:`~sasview_bnn_trainer.network.PackedCNN.hidden_features`,
:meth:`~sasview_bnn_trainer.network.PackedCNN.heads`); the ONNX graph of the
same computation is built by :mod:`sasview_bnn_trainer.onnx_graph`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .network import PackedCNN

if TYPE_CHECKING:
    from .features import FeatureFile

#: The exported novelty scores (``export --novelty-score``) -> the formula written as the model's ``novelty_score``.
NOVELTY_SCORES: dict[str, str] = {
    "mahalanobis_entropy": "max(mahalanobis/q_mahalanobis, entropy/q_entropy)",
    "knn_entropy": "max(knn/q_knn, entropy/q_entropy)",
    "knn": "knn/q_knn",
}
DEFAULT_NOVELTY_SCORE = "mahalanobis_entropy"
NOVELTY_SCORE_NAME = NOVELTY_SCORES[DEFAULT_NOVELTY_SCORE]
#: Defaults of the kNN score: the k-th neighbour, curves in the bank.
DEFAULT_KNN_K = 10
DEFAULT_KNN_BANK = 4000
#: Which features of a curve the kNN score compares (:class:`KnnNovelty`); the default first.
KNN_FEATURES: tuple[str, ...] = ("mean", "samples")
DEFAULT_KNN_FEATURES = KNN_FEATURES[0]


class MahalanobisNovelty(nn.Module):
    """Mean over samples of the squared Mahalanobis distance to the nearest class mean.

    Built from per-sample class means ``means`` (S, C, hidden) and whitening
    matrices ``whiten`` (S, hidden, hidden) with whiten_s^T whiten_s = Sigma_s^-1.
    Input: packed hidden activations (batch, S*hidden, 1); output (batch,).
    """

    def __init__(self, means: np.ndarray, whiten: np.ndarray) -> None:
        super().__init__()
        s, c, h = means.shape
        self.samples, self.n_means, self.hidden = s, c, h
        white_means = np.einsum("sij,scj->sci", whiten, means)  # (S, C, H)
        self.whiten = nn.Conv1d(s * h, s * h, 1, groups=s, bias=False)
        self.project = nn.Conv1d(s * h, s * c, 1, groups=s, bias=False)
        with torch.no_grad():
            self.whiten.weight.copy_(torch.from_numpy(whiten.reshape(s * h, h, 1).astype(np.float32)))
            self.project.weight.copy_(torch.from_numpy(white_means.reshape(s * c, h, 1).astype(np.float32)))
        self.register_buffer("mean_norms", torch.from_numpy((white_means**2).sum(-1).astype(np.float32)))  # (S, C)
        for p in self.parameters():
            p.requires_grad_(False)

    def whitening_matrices(self) -> np.ndarray:
        """whiten_s, shape (S, hidden, hidden), float32: z_s = whiten_s h_s."""
        return self.whiten.weight.detach().cpu().numpy().reshape(self.samples, self.hidden, self.hidden).astype(np.float32)

    def white_means(self) -> np.ndarray:
        """whiten_s mu_sc, shape (S, C, hidden), float32."""
        return self.project.weight.detach().cpu().numpy().reshape(self.samples, self.n_means, self.hidden).astype(np.float32)

    def mean_square_norms(self) -> np.ndarray:
        """|whiten_s mu_sc|^2, shape (S, C), float32."""
        return self.mean_norms.detach().cpu().numpy().reshape(self.samples, self.n_means).astype(np.float32)

    def forward(self, hidden: Tensor) -> Tensor:
        z = self.whiten(hidden)  # (b, S*H, 1)
        dots = self.project(z).reshape(-1, self.samples, self.n_means)
        z_norms = (z.reshape(-1, self.samples, self.hidden) ** 2).sum(dim=2, keepdim=True)
        dist = torch.clamp(z_norms - 2.0 * dots + self.mean_norms, min=0.0)
        return dist.min(dim=2).values.mean(dim=1)


class KnnNovelty(nn.Module):
    """1 - the k-th largest cosine similarity to a bank of training curves (see the module docstring).

    Built from ``bank`` (S, B, hidden), the penultimate features of B curves.
    ``features`` says which vector of a curve is compared:

    - "mean" (default): the posterior-mean features h = mean_s h_s,
      normalised; stored as the matrix the graph multiplies with, ``bank``
      (hidden, B), column b the unit vector of curve b;
    - "samples": every sample's features normalised, sim = mean_s u_s . v_s
      (the study's ``knn``); ``bank`` (S*hidden, B), column b holding
      v_s(b) / S for s = 0..S-1. S times the size and the arithmetic.

    The stored bank is rounded to float16 (the graph keeps it so, half the
    file size; onnxruntime casts it to float32 once, when the session opens);
    this module computes with the same rounded values, so graph and reference
    agree. Input: packed hidden activations (batch, S*hidden, 1); output (batch,).
    """

    def __init__(self, bank: np.ndarray, k: int = DEFAULT_KNN_K, features: str = DEFAULT_KNN_FEATURES) -> None:
        super().__init__()
        s, b, h = bank.shape
        if not 1 <= k <= b:
            raise ValueError(f"the kNN score needs 1 <= k <= the bank size ({b}), got k = {k}")
        if features not in KNN_FEATURES:
            raise ValueError(f"unknown kNN features {features!r}; choose from {', '.join(KNN_FEATURES)}")
        self.samples, self.bank_size, self.hidden, self.k, self.features = s, b, h, int(k), features
        per_curve = torch.from_numpy(np.asarray(bank, np.float64)).permute(1, 0, 2)  # (B, S, H)
        if features == "mean":
            matrix = unit_features(per_curve.mean(dim=1))  # (B, H)
        else:
            matrix = (unit_features(per_curve) / s).reshape(b, s * h)
        self.register_buffer("bank", torch.from_numpy(matrix.T.numpy().astype(np.float16).astype(np.float32)))

    def bank_matrix(self) -> np.ndarray:
        """The stored bank, shape (hidden, B) ("mean") or (S*hidden, B) ("samples"), float32 holding float16 values."""
        return self.bank.detach().cpu().numpy().astype(np.float32)

    def forward(self, hidden: Tensor) -> Tensor:
        h = hidden.reshape(-1, self.samples, self.hidden)
        if self.features == "mean":
            unit = unit_features(h.mean(dim=1))
        else:
            unit = unit_features(h).reshape(-1, self.samples * self.hidden)
        similarity = unit @ self.bank.to(unit.dtype)  # (b, B)
        return 1.0 - torch.topk(similarity, self.k, dim=1).values.min(dim=1).values


def unit_features(hidden: Tensor) -> Tensor:
    """Each sample's feature vector divided by its L2 norm (at least 1e-12), hidden (..., S, H) -> same shape."""
    return hidden / torch.clamp(torch.linalg.vector_norm(hidden, dim=-1, keepdim=True), min=1e-12)


class ExportedModel(nn.Module):
    """features (batch, 4, bins) -> (probabilities (batch, S, 7), novelty_score (batch,)[, anomaly_probabilities (batch, S, 6)]).

    The novelty score is max(F / q_F, H / q_H) with F the novelty head's
    feature score (M or K), or F / q_F alone when ``with_entropy`` is False;
    the scales start at 1 and are set by :meth:`set_novelty_scales`.
    """

    def __init__(self, network: PackedCNN, novelty: MahalanobisNovelty | KnnNovelty, with_entropy: bool = True) -> None:
        super().__init__()
        self.network = network
        self.novelty = novelty
        self.with_entropy = bool(with_entropy)
        if isinstance(novelty, MahalanobisNovelty) and not with_entropy:
            raise ValueError("the Mahalanobis novelty score is exported combined with the entropy only")
        self.register_buffer("scales", torch.ones(2))

    @property
    def score_kind(self) -> str:
        """The key of :data:`NOVELTY_SCORES` this model computes."""
        if isinstance(self.novelty, MahalanobisNovelty):
            return "mahalanobis_entropy"
        return "knn_entropy" if self.with_entropy else "knn"

    def set_novelty_scales(self, feature: float, entropy: float = 1.0) -> None:
        """Divide the feature score F by ``feature`` and H by ``entropy`` (both > 0) in the combined score."""
        self.scales.copy_(torch.tensor([feature, entropy], dtype=self.scales.dtype))

    @property
    def has_presence(self) -> bool:
        return self.network.config.n_anomalies > 0

    def components(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(probabilities (batch, S, 7), F (batch,), H (batch,), presence (batch, S, n_anomalies)) before scaling."""
        net = self.network
        hidden = net.hidden_features(features).reshape(-1, net.members * net.config.hidden, 1)  # packed, as the heads read it
        logits, presence = net.heads(hidden)
        probs = F.softmax(logits, dim=-1)
        mean = probs.mean(dim=1)
        entropy = -(mean * torch.log(torch.clamp(mean, min=1e-12))).sum(dim=-1)
        return probs, self.novelty(hidden), entropy, torch.sigmoid(presence)

    def forward(self, features: Tensor) -> tuple[Tensor, ...]:
        probs, feature, entropy, presence = self.components(features)
        score = feature / self.scales[0]
        if self.with_entropy:
            score = torch.maximum(score, entropy / self.scales[1])
        return (probs, score, presence) if self.has_presence else (probs, score)


def fit_mahalanobis(
    network: PackedCNN, features: FeatureFile, rows: np.ndarray, *, batch_size: int = 1024, ridge: float = 1e-3
) -> MahalanobisNovelty:
    """Class means and shared covariance of the penultimate activations on ``rows`` (one pass, float64)."""
    s, h = network.members, network.config.hidden
    classes = np.unique(features.labels[rows])
    pos = {c: k for k, c in enumerate(classes)}
    sums = np.zeros((s, classes.size, h))
    outer = np.zeros((s, h, h))
    counts = np.zeros(classes.size)
    with torch.no_grad():
        for x, y in features.iter_batches(rows, batch_size):
            hid = network.hidden_features(torch.from_numpy(x)).double().numpy()  # (b, S, H)
            idx = np.array([pos[int(v)] for v in y])
            np.add.at(counts, idx, 1)
            for k in range(classes.size):
                sums[:, k] += hid[idx == k].sum(axis=0)
            outer += np.einsum("bsi,bsj->sij", hid, hid)
    means = sums / counts[None, :, None]
    scatter = outer - np.einsum("c,sci,scj->sij", counts, means, means)
    cov = scatter / max(counts.sum() - classes.size, 1)
    whiten = np.empty_like(cov)
    for k in range(s):
        c = cov[k] + (ridge * np.trace(cov[k]) / h + 1e-12) * np.eye(h)
        precision = np.linalg.inv(c)
        precision = 0.5 * (precision + precision.T)
        whiten[k] = np.linalg.cholesky(precision).T  # whiten^T whiten = precision
    return MahalanobisNovelty(means, whiten)


def stratified_rows(rows: np.ndarray, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded choice of ``size`` of ``rows`` (labels ``labels``, same length), as even over the classes as they allow, sorted.

    Every class gets size // n_classes rows (all it has when it has fewer);
    the rows still missing are drawn from those left, uniformly. All rows when
    there are no more than ``size``.
    """
    rows, labels = np.asarray(rows), np.asarray(labels)
    if rows.size <= size:
        return np.sort(rows)
    rng = np.random.default_rng([seed, 0xB4A])
    classes = np.unique(labels)
    quota = size // classes.size
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:quota] for c in classes])
    left = np.setdiff1d(np.arange(rows.size), chosen)
    chosen = np.concatenate([chosen, rng.choice(left, size - chosen.size, replace=False)])
    return np.sort(rows[chosen])


def fit_knn_bank(network: PackedCNN, features: FeatureFile, rows: np.ndarray, *, k: int = DEFAULT_KNN_K,
                 knn_features: str = DEFAULT_KNN_FEATURES, batch_size: int = 1024) -> KnnNovelty:
    """The kNN novelty head whose bank is the penultimate features of the curves ``rows`` (choose them with :func:`stratified_rows`)."""
    parts = []
    with torch.no_grad():
        for x, _ in features.iter_batches(rows, batch_size):
            parts.append(network.hidden_features(torch.from_numpy(x)).double().numpy())  # (b, S, H)
    if not parts:
        raise ValueError("the kNN bank needs at least one training curve")
    return KnnNovelty(np.concatenate(parts).transpose(1, 0, 2), k, knn_features)
