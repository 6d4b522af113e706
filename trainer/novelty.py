"""The feature-space novelty model of an exported ensemble, and the torch module the export calibrates.

- :class:`MahalanobisNovelty`: M, the squared Mahalanobis distance of each
  sample's penultimate activations h (hidden,) to the nearest training-class
  mean, with a covariance shared by the classes, averaged over the S samples:
  mean_s min_c (h_s - mu_sc)^T Sigma_s^-1 (h_s - mu_sc);
- :func:`fit_mahalanobis`: the class means and the covariance (a ridge of 1e-3
  of the mean variance added) fitted on training curves, in float64;
- :class:`ExportedModel`: the network and the novelty head together, the
  torch reference of everything the exported graph returns (probabilities,
  anomaly probabilities, novelty score max(M / q_M, H / q_H) with H the
  predictive entropy of the posterior-mean probabilities).

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

NOVELTY_SCORE_NAME = "max(mahalanobis/q_mahalanobis, entropy/q_entropy)"


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


class ExportedModel(nn.Module):
    """features (batch, 4, bins) -> (probabilities (batch, S, 7), novelty_score (batch,)[, anomaly_probabilities (batch, S, 6)]).

    The novelty score is max(M / q_M, H / q_H); the scales start at 1 and are
    set by :meth:`set_novelty_scales`.
    """

    def __init__(self, network: PackedCNN, novelty: MahalanobisNovelty) -> None:
        super().__init__()
        self.network = network
        self.novelty = novelty
        self.register_buffer("scales", torch.ones(2))

    def set_novelty_scales(self, mahalanobis: float, entropy: float) -> None:
        """Divide M by ``mahalanobis`` and H by ``entropy`` (both > 0) in the combined score."""
        self.scales.copy_(torch.tensor([mahalanobis, entropy], dtype=self.scales.dtype))

    @property
    def has_presence(self) -> bool:
        return self.network.config.n_anomalies > 0

    def components(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(probabilities (batch, S, 7), M (batch,), H (batch,), presence (batch, S, n_anomalies)) before scaling."""
        net = self.network
        hidden = net.hidden_features(features).reshape(-1, net.members * net.config.hidden, 1)  # packed, as the heads read it
        logits, presence = net.heads(hidden)
        probs = F.softmax(logits, dim=-1)
        mean = probs.mean(dim=1)
        entropy = -(mean * torch.log(torch.clamp(mean, min=1e-12))).sum(dim=-1)
        return probs, self.novelty(hidden), entropy, torch.sigmoid(presence)

    def forward(self, features: Tensor) -> tuple[Tensor, ...]:
        probs, mahalanobis, entropy, presence = self.components(features)
        score = torch.maximum(mahalanobis / self.scales[0], entropy / self.scales[1])
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
