"""The interface every approximate posterior over the CNN's weights implements.

A posterior is a torch module holding trainable variational or ensemble
parameters with a Gaussian prior w ~ N(0, prior_sigma^2) on every weight:

- :meth:`Posterior.training_loss` -- the per-batch objective that training
  minimises (its gradient is what ``fit`` follows);
- :meth:`Posterior.sample_weights` -- S member state dicts (fixed posterior weight
  samples, see :mod:`sasview_bnn_trainer.network`), which is what export packs into ONNX;
- :meth:`Posterior.predict` -- class probabilities (batch, S, n_classes) of S samples.

The data term is either the negative log-likelihood (``"nll"``, cross-entropy)
or the mean-squared probability error (``"mspe"``): the squared distance between
the predicted probability vector and the one-hot label, summed over classes and
averaged over the batch (the seed paper's loss, with the sign that makes it a
quantity to minimise; it equals the multi-class Brier score). Rows labelled -1
are outliers with a uniform target (outlier exposure, off unless ``fit`` is
given an outlier fraction).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..network import VISIBILITY_SCALE, NetworkConfig, pack_members

LOSSES: tuple[str, ...] = ("nll", "mspe")


def objective(outputs: Tensor | tuple[Tensor, ...], labels: Tensor, loss: str, outlier_weight: float = 1.0,
              visibility_weight: float = 0.0) -> Tensor:
    """Data term per member, shape (members,), of a network's outputs for a batch.

    ``outputs`` are class logits (batch, members, n_classes), or (class logits,
    presence logits (batch, members, n_anomalies)[, visibility outputs (batch,
    members, n_anomalies)]). ``labels`` is (batch,) of primary classes, or
    (batch, 1 + n_anomalies) with the primary class in column 0 and the
    anomalies present (0/1) after it: the presence term is then the Bernoulli
    negative log-likelihood of each anomaly's yes/no, averaged over the
    anomalies and added to the class term, over rows that are not outliers.
    Averaged rather than summed: six summed terms (about 4.2 nats at
    initialisation against 1.95 for the class) steer the shared weights early
    on; measured on 1,400 simulator-2.0 curves, 2 epochs of VI: validation
    accuracy 0.17 summed, 0.32 averaged, 0.35 without the head.

    With visibility outputs and labels of (batch, 1 + 2 n_anomalies) -- the
    anomalies' visibility scores (points moved, 0 when absent) in the last
    columns -- ``visibility_weight`` times the squared error of
    log1p(score) / :data:`~sasview_bnn_trainer.network.VISIBILITY_SCALE`,
    averaged over the anomalies, is added too (an auxiliary target: the
    score decides the primary class of a mixture).
    """
    if labels.dim() == 1:
        return data_loss(outputs[0] if isinstance(outputs, tuple) else outputs, labels, loss, outlier_weight)
    logits, presence = outputs[0], outputs[1]
    primary = labels[:, 0]
    per_member = data_loss(logits, primary, loss, outlier_weight)
    known = primary >= 0
    n_anomalies = presence.shape[-1]
    if not bool(known.any()) or n_anomalies == 0:
        return per_member
    target = labels[known, 1 : 1 + n_anomalies].to(presence.dtype)[:, None, :].expand(-1, presence.shape[1], -1)
    bce = F.binary_cross_entropy_with_logits(presence[known], target, reduction="none").sum(dim=-1)  # (known, members)
    per_member = per_member + bce.sum(dim=0) / (labels.shape[0] * n_anomalies)
    if len(outputs) > 2 and visibility_weight > 0 and labels.shape[1] >= 1 + 2 * n_anomalies:
        scores = labels[known, 1 + n_anomalies : 1 + 2 * n_anomalies].clamp(min=0).to(presence.dtype)
        goal = (torch.log1p(scores) / VISIBILITY_SCALE)[:, None, :]
        sq = ((outputs[2][known] - goal) ** 2).sum(dim=-1)  # (known, members)
        per_member = per_member + visibility_weight * sq.sum(dim=0) / (labels.shape[0] * n_anomalies)
    return per_member


def data_loss(logits: Tensor, labels: Tensor, loss: str, outlier_weight: float = 1.0) -> Tensor:
    """Data term per member, shape (members,), averaged over the batch.

    ``logits`` (batch, members, n_classes); ``labels`` (batch,) int64. A label
    of -1 marks an outlier (a curve of no class, see
    :mod:`sasview_bnn_trainer.simulation.outliers`): its target is the uniform
    distribution over the classes (outlier exposure), and its term is
    multiplied by ``outlier_weight``.
    """
    n_classes = logits.shape[-1]
    outlier = labels < 0
    safe = torch.where(outlier, torch.zeros_like(labels), labels)
    if loss == "nll":
        log_p = F.log_softmax(logits, dim=-1)
        picked = -log_p.gather(2, safe[:, None, None].expand(-1, logits.shape[1], 1))[..., 0]
        uniform = -log_p.mean(dim=-1)
    elif loss == "mspe":
        p = F.softmax(logits, dim=-1)
        onehot = F.one_hot(safe, n_classes).to(p.dtype)[:, None, :]
        picked = ((p - onehot) ** 2).sum(dim=-1)
        uniform = ((p - 1.0 / n_classes) ** 2).sum(dim=-1)
    else:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if not bool(outlier.any()):
        return picked.mean(dim=0)
    per_row = torch.where(outlier[:, None], outlier_weight * uniform, picked)
    return per_row.mean(dim=0)


class Posterior(nn.Module, ABC):
    """An approximate posterior over the weights of :class:`~sasview_bnn_trainer.network.PackedCNN`.

    ``n_train`` is the number of training curves N (it scales the prior term:
    KL/N for VI, weight decay 1/(sigma^2 N) for MAP members).
    """

    method: ClassVar[str]
    #: The method's own keyword arguments (besides config, prior_sigma, n_train, loss), as in :meth:`spec`.
    OPTIONS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: NetworkConfig, prior_sigma: float, n_train: int, loss: str = "nll") -> None:
        super().__init__()
        if not prior_sigma > 0:
            raise ValueError(f"the prior standard deviation must be positive, got {prior_sigma}")
        if n_train < 1:
            raise ValueError("there are no training curves")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        self.config = config
        self.prior_sigma = float(prior_sigma)
        self.n_train = int(n_train)
        self.loss_name = loss
        #: Factor on the uniform-target term of outlier rows (label -1); set by ``fit``.
        self.outlier_weight = 1.0
        #: Factor on the auxiliary visibility-score term (networks with visibility outputs only); set by ``fit``.
        self.visibility_weight = 0.0

    @abstractmethod
    def training_loss(self, x: Tensor, labels: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Objective for one batch (x (batch, 4, bins), labels (batch,)) and its parts for logging."""

    @abstractmethod
    def sample_weights(self, n_samples: int, seed: int = 0) -> list[dict[str, Tensor]]:
        """``n_samples`` fixed weight samples as member state dicts (deterministic for a seed)."""

    @property
    @abstractmethod
    def max_samples(self) -> int | None:
        """Largest number of distinct samples (ensemble size), or None if unlimited."""

    def spec(self) -> dict[str, Any]:
        """Everything needed besides ``state_dict`` to rebuild this posterior."""
        return {
            "method": self.method,
            "network": self.config.to_json(),
            "prior_sigma": self.prior_sigma,
            "n_train": self.n_train,
            "loss": self.loss_name,
            **self.method_spec(),
        }

    @abstractmethod
    def method_spec(self) -> dict[str, Any]:
        """The settings particular to this inference method (added to :meth:`spec`)."""

    @torch.no_grad()
    def predict(self, x: Tensor, n_samples: int, seed: int = 0) -> Tensor:
        """Softmax probabilities of ``n_samples`` weight samples, shape (batch, S, n_classes)."""
        net = pack_members(self.config, self.sample_weights(n_samples, seed)).to(x.device)
        return F.softmax(net(x), dim=-1)
