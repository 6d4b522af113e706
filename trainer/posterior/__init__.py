"""Approximate posteriors over the CNN's weights: mean-field VI and deep ensembles."""

from __future__ import annotations

from typing import Any

from ..network import NetworkConfig
from .base import LOSSES, Posterior, data_loss, objective
from .ensemble import DeepEnsemble
from .variational import MeanFieldVI, gaussian_kl

#: The inference methods by name: the one registry. A new method is a :class:`Posterior` subclass with its
#: ``method`` name and ``OPTIONS``, added here; :func:`build_posterior` builds every method.
METHODS: dict[str, type[Posterior]] = {"vi": MeanFieldVI, "ensemble": DeepEnsemble}


def build_posterior(method: str, config: NetworkConfig, prior_sigma: float, n_train: int, loss: str = "nll", **options: Any) -> Posterior:
    """A fresh posterior of ``method`` (a key of :data:`METHODS`), the one place a method is built.

    ``options`` may hold the options of any method; each method takes the ones it names in its
    ``OPTIONS`` (e.g. ``mc_samples`` for VI, ``members`` for an ensemble), the others are ignored.
    """
    try:
        cls = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown inference method {method!r}; choose one of {', '.join(METHODS)}") from None
    return cls(config, prior_sigma, n_train, loss, **{key: value for key, value in options.items() if key in cls.OPTIONS})


def posterior_from_spec(spec: dict[str, Any]) -> Posterior:
    """Rebuild an (untrained) posterior from :meth:`Posterior.spec`; load its state_dict afterwards."""
    options = {key: value for key, value in spec.items() if key not in ("method", "network", "prior_sigma", "n_train", "loss")}
    return build_posterior(spec["method"], NetworkConfig.from_json(spec["network"]), spec["prior_sigma"], spec["n_train"],
                           spec["loss"], **options)


__all__ = [
    "LOSSES", "METHODS", "DeepEnsemble", "MeanFieldVI", "Posterior", "build_posterior", "data_loss", "gaussian_kl", "objective",
    "posterior_from_spec",
]
