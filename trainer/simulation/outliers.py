"""Synthetic curves that are not small-angle scattering curves, for outlier exposure.

Outlier exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019) trains the
classifier to answer "none of these" -- a uniform probability over the seven
classes -- on inputs that belong to no class, so that at inference an input
unlike anything in training tends to get a flat, low-confidence answer
instead of a confident label.

The kinds generated here are deliberately *different* from the novel inputs
the evaluation scores (:mod:`sasview_bnn_trainer.evaluation.novel_inputs`:
flat pure noise, intensity rising as a power of q, sinusoids in log q, random
walks in log I), so the evaluation measures generalisation to unseen garbage,
not recall of the training outliers:

- ``staircase``: 2-6 multiplicative steps up or down at random q;
- ``bumps_on_line``: 1-4 Gaussian bumps (in linear q) on a sloped straight line;
- ``linear_sine``: a sinusoid in linear q on a positive offset;
- ``sawtooth``: a sawtooth in log q;
- ``exponential_rise``: I growing as exp(q/q0) (never seen in scattering).

q is log-spaced in 1/Å over 1 to 3 decades inside 3e-4..0.8 1/Å with 60 to
400 points, relative noise 0.1-5 %; label -1 (no class).
"""

from __future__ import annotations

import numpy as np

from .record import SimulatedCurve

OUTLIER_KINDS: tuple[str, ...] = ("staircase", "bumps_on_line", "linear_sine", "sawtooth", "exponential_rise")
#: Label of a curve that belongs to no class.
NO_CLASS = -1


def _window(rng: np.random.Generator) -> np.ndarray:
    decades = rng.uniform(1.0, 3.0)
    q_lo = 10 ** rng.uniform(np.log10(3e-4), np.log10(0.8) - decades)
    return np.geomspace(q_lo, q_lo * 10**decades, int(rng.integers(60, 401)))


def outlier_curve(kind: str, rng: np.random.Generator) -> SimulatedCurve:
    """One synthetic non-scattering curve of ``kind`` (label -1), q in 1/Å, shape (points,)."""
    q = _window(rng)
    n = q.size
    u = (q - q[0]) / (q[-1] - q[0])  # linear position in the window, 0..1
    v = np.log(q / q[0]) / np.log(q[-1] / q[0])  # log position, 0..1
    if kind == "staircase":
        clean = np.ones(n)
        for edge in rng.uniform(0.1, 0.9, int(rng.integers(2, 7))):
            clean *= np.where(v < edge, 1.0, 10 ** rng.uniform(-0.7, 0.7))
    elif kind == "bumps_on_line":
        clean = 1.0 + rng.uniform(-0.8, 3.0) * u
        clean = np.maximum(clean, 0.05)
        for centre in rng.uniform(0.05, 0.95, int(rng.integers(1, 5))):
            clean = clean + rng.uniform(0.5, 20.0) * np.exp(-0.5 * ((u - centre) / rng.uniform(0.01, 0.1)) ** 2)
    elif kind == "linear_sine":
        clean = 1.0 + rng.uniform(0.2, 0.95) * np.sin(2 * np.pi * rng.uniform(1.0, 8.0) * u + rng.uniform(0, 2 * np.pi))
    elif kind == "sawtooth":
        period = rng.uniform(0.15, 0.6)
        clean = 10 ** (rng.uniform(0.3, 2.0) * ((v / period) % 1.0))
    elif kind == "exponential_rise":
        clean = np.exp(u * rng.uniform(2.0, 12.0))
    else:
        raise ValueError(f"unknown kind of outlier {kind!r}; choose one of {', '.join(OUTLIER_KINDS)}")
    clean = clean * 10 ** rng.uniform(-3.0, 4.0)
    sigma = clean * 10 ** rng.uniform(-3.0, np.log10(0.05))
    intensity = clean + sigma * rng.normal(size=n)
    return SimulatedCurve(label=NO_CLASS, q=q, intensity=intensity, d_intensity=sigma, dq=np.full(n, np.nan),
                          q_unit="1/A", params={"shape": kind})


def outlier_curves(n: int, seed: int, kinds: tuple[str, ...] = OUTLIER_KINDS) -> list[SimulatedCurve]:
    """``n`` outlier curves cycling through ``kinds``, deterministic for a seed."""
    rng = np.random.default_rng([seed, 77])
    return [outlier_curve(kinds[k % len(kinds)], rng) for k in range(n)]
