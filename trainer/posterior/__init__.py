"""Approximate posteriors over the CNN's weights: mean-field VI and deep ensembles."""

from __future__ import annotations

from typing import Any

from ..network import NetworkConfig
from .base import LOSSES, Posterior, data_loss, objective
from .ensemble import DeepEnsemble
from .variational import MeanFieldVI, gaussian_kl

METHODS: dict[str, type[Posterior]] = {"vi": MeanFieldVI, "ensemble": DeepEnsemble}


def posterior_from_spec(spec: dict[str, Any]) -> Posterior:
    """Rebuild an (untrained) posterior from :meth:`Posterior.spec`; load its state_dict afterwards."""
    config = NetworkConfig.from_json(spec["network"])
    common = (config, spec["prior_sigma"], spec["n_train"], spec["loss"])
    if spec["method"] == "vi":
        return MeanFieldVI(*common, mc_samples=spec["mc_samples"], init_sigma=spec["init_sigma"],
                           kl_weight=spec.get("kl_weight", 1.0))
    if spec["method"] == "ensemble":
        return DeepEnsemble(*common, members=spec["members"])
    raise ValueError(f"unknown inference method {spec['method']!r}; choose one of {', '.join(METHODS)}")


__all__ = ["LOSSES", "METHODS", "DeepEnsemble", "MeanFieldVI", "Posterior", "data_loss", "gaussian_kl", "objective", "posterior_from_spec"]
