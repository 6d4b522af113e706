"""Deep ensemble: K independently initialised MAP networks under the Gaussian prior.

Member k minimises data_loss_k + |w_k|^2 / (2 sigma^2 N), i.e. the negative log
posterior per training curve, which is weight decay 1/(sigma^2 N). All members
are trained together as one packed network (grouped convolutions): they share
the batch stream but not a single weight, and the objective is the sum of the
members' objectives, so each member's gradient is exactly its own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..network import NetworkConfig, PackedCNN, reparameterised
from .base import Posterior, objective


class DeepEnsemble(Posterior):
    """K MAP members; ``sample_weights(S)`` returns the first S members."""

    method = "ensemble"
    OPTIONS = ("members",)

    def __init__(self, config: NetworkConfig, prior_sigma: float, n_train: int, loss: str = "nll", *, members: int = 8) -> None:
        super().__init__(config, prior_sigma, n_train, loss)
        if reparameterised(config):
            raise ValueError("the spectral-norm cap and skip connections are implemented for --method vi only")
        if members < 1:
            raise ValueError("an ensemble needs at least one member")
        self.n_members = int(members)
        self.net = PackedCNN(config, self.n_members)

    @property
    def max_samples(self) -> int | None:
        return self.n_members

    def prior_penalty(self) -> Tensor:
        """sum_k |w_k|^2 / (2 sigma^2 N), summed over members."""
        sq = sum((p**2).sum() for p in self.net.parameters())
        return sq / (2.0 * self.prior_sigma**2 * self.n_train)

    def training_loss(self, x: Tensor, labels: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        per_member = objective(self.net(x, with_presence=labels.dim() == 2), labels, self.loss_name, self.outlier_weight,
                               self.visibility_weight)
        penalty = self.prior_penalty()
        loss = per_member.sum() + penalty
        k = self.n_members
        return loss, {"loss": loss.item() / k, "data": per_member.mean().item(), "prior_per_curve": penalty.item() / k}

    @torch.no_grad()
    def sample_weights(self, n_samples: int, seed: int = 0) -> list[dict[str, Tensor]]:
        if not 1 <= n_samples <= self.n_members:
            raise ValueError(f"the ensemble has {self.n_members} members; {n_samples} samples cannot be drawn from it")
        return [self.net.member_state(k) for k in range(n_samples)]

    def method_spec(self) -> dict[str, Any]:
        return {
            "members": self.n_members,
        }
