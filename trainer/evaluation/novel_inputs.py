"""Synthetic inputs that no class describes: what a model must flag as novel.

- ``pure_noise``: an empty-cell / blank measurement, a flat positive level with
  Gaussian counting noise of 1 to 30 % (nothing scatters);
- ``non_scattering``: curves that are not scattering curves at all: intensity
  rising with q (q^+1 to q^+3), a sinusoid in log q, or a random walk in log I.

q is log-spaced in 1/Å over a random window of 1 to 3 decades inside 3e-4..0.8 1/Å,
100 to 400 points; d_intensity is the noise sigma actually used.
"""

from __future__ import annotations

import numpy as np

from ..simulation.record import SimulatedCurve

KINDS: tuple[str, ...] = ("pure_noise", "non_scattering")


def _window(rng: np.random.Generator) -> np.ndarray:
    decades = rng.uniform(1.0, 3.0)
    q_lo = 10 ** rng.uniform(-3.5, np.log10(0.8) - decades)
    return np.geomspace(q_lo, q_lo * 10**decades, int(rng.integers(100, 401)))


def novel_curve(kind: str, rng: np.random.Generator) -> SimulatedCurve:
    """One synthetic novel curve of ``kind`` (label -1: no class)."""
    q = _window(rng)
    n = q.size
    if kind == "pure_noise":
        level = 10 ** rng.uniform(-3, 1)
        sigma = level * 10 ** rng.uniform(-2, np.log10(0.3)) * np.ones(n)
        intensity = level + sigma * rng.normal(size=n)
        params: dict[str, float | str] = {"shape": "flat"}
    elif kind == "non_scattering":
        shape = ("rising", "sinusoid", "random_walk")[int(rng.integers(3))]
        x = np.log10(q / q[0])
        if shape == "rising":
            clean = (q / q[0]) ** rng.uniform(1.0, 3.0)
        elif shape == "sinusoid":
            clean = 1.0 + 0.8 * np.sin(2 * np.pi * x / rng.uniform(0.2, 1.0) + rng.uniform(0, 2 * np.pi))
        else:
            clean = np.exp(np.cumsum(rng.normal(0.0, 0.15, n)))
        sigma = clean * 10 ** rng.uniform(-3, np.log10(0.05))
        intensity = clean + sigma * rng.normal(size=n)
        params = {"shape": shape}
    else:
        raise ValueError(f"unknown kind of novel input {kind!r}; choose one of {', '.join(KINDS)}")
    return SimulatedCurve(label=-1, q=q, intensity=intensity, d_intensity=sigma, dq=np.full(n, np.nan), q_unit="1/A", params=params)


def novel_curves(kind: str, n: int, seed: int) -> list[SimulatedCurve]:
    """``n`` curves of ``kind``, deterministic for a seed."""
    rng = np.random.default_rng([seed, KINDS.index(kind) if kind in KINDS else 99])
    return [novel_curve(kind, rng) for _ in range(n)]
