"""Fixtures shared by the test modules: small ONNX test models and sphere curves.

The models come from :mod:`onnx_test_models` (real ONNX graphs following the
model format, random weights); each distinct model is written once per session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest


def noisy_sphere(radius: float = 40.0, n: int = 150, q_min: float = 2e-3, q_max: float = 0.4, seed: int = 0):
    """A noisy sphere form factor, 100 P(q) + 0.01 with 2 % Gaussian noise and that dI: q in 1/Å, arrays (n,)."""
    rng = np.random.default_rng(seed)
    q = np.geomspace(q_min, q_max, n)
    x = q * radius
    form = (3 * (np.sin(x) - x * np.cos(x)) / x**3) ** 2
    intensity = 100 * form + 0.01
    d_i = 0.02 * intensity
    return q, intensity + rng.normal(0, d_i), d_i


@pytest.fixture(scope="session")
def sphere_curve() -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`noisy_sphere`: ``sphere_curve(radius=40, n=150, q_min=2e-3, q_max=0.4, seed=0)`` -> (q, I, dI)."""
    return noisy_sphere


@pytest.fixture(scope="session")
def make_test_model(tmp_path_factory) -> Callable[..., Path]:
    """``make_test_model("heads.onnx", n_samples=4, seed=1)`` -> the path of that test model, written once per session.

    The options are those of :func:`onnx_test_models.build_linear_heads_model`; the file name is the model's
    name in results. Each distinct model has a folder of its own (nothing else is written there).
    """
    from onnx_test_models import write_model  # needs onnx: imported only by the tests that use a test model

    root = tmp_path_factory.mktemp("test_models")
    made: dict[tuple, Path] = {}

    def make(name: str = "model.onnx", **options) -> Path:
        key = (name, tuple(sorted(options.items())))
        if key not in made:
            made[key] = write_model(root / str(len(made)) / name, **options)
        return made[key]

    return make


@pytest.fixture(scope="module")
def model_path(make_test_model) -> Path:
    """The default test model: 4 posterior samples, seed 1 (modules needing another one override this fixture)."""
    return make_test_model("linear_heads.onnx", n_samples=4, seed=1)
