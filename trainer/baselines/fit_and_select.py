"""Traditional baseline: classify curves by fitting one sasmodels model per class and selecting by BIC.

No machine learning: this is what a careful scientist (or AutoSAS-style
automation) would do. For every curve, each of the seven classes of
``docs/taxonomy.md`` gets a physical model built from sasmodels' compiled
kernels, smeared with the curve's own resolution and fitted to I(q) weighted
by dI with ``scipy.optimize.least_squares``. The class whose best model has
the lowest BIC = chi² + k ln n wins; the script also reports what AIC =
chi² + 2k and plain best chi² would have picked.

Models (q in 1/Å inside; ``P`` is a form factor; scale, background and peak
amplitudes are linear and solved exactly by non-negative least squares at
every step -- variable projection -- so the optimiser only sees the
nonlinear sizes, exponents and positions; k counts every free parameter)
---------------------------------------------------------------------------
Form factors (sasmodels kernels, contrast 1): ``sphere`` with Gaussian size
polydispersity (R, σ_R/R ≤ 0.35), ``mono_gauss_coil`` (Rg), monodisperse
``cylinder`` (R, L: rods and discs) and ``vesicle`` (outer R, shell
fraction, polydispersity). A *library* of starting points -- every shape on a
log grid of Rg from 0.3/q_max to 3/q_min plus the Guinier Rg of the low-q
points -- is evaluated once per curve; each class model picks its start by
linear solves over the library (plus the refined clean fits), then refines.

* clean: ``s·P + b``, b ≥ 0; the two shapes with the best library starts are
  refined, the better kept. k = θ + 2.
* aggregation: ``s·P + A (q/q_min)^-p + b`` (sasmodels ``power_law``),
  1 ≤ p ≤ 4.5; the two shapes with the best scan starts refined. k = θ + 4.
* interparticle: sphere or vesicle × sasmodels ``hardsphere`` S(q)
  (decoupling approximation), R_eff/R_outer in [0.7, 3], φ in [0.01, 0.6],
  started from the best compact library entries × a few (R_eff/R, φ). k = θ + 4.
* ordered: the clean shape + Gaussian Bragg peaks (the ``gaussian_peak``
  formula) at the position ratios of a lamellar, hexagonal, simple-cubic,
  bcc, fcc, Pn3m or Ia3d lattice, one common relative width σ/q in
  [0.002, 0.025], a non-negative amplitude per peak inside the window.
  First-peak candidates are the significant (> 3σ) local maxima of the clean
  fit's residual (peak finding); lattice and order by a linear scan; then
  q1, width and sizes refined. Needs ≥ 2 peaks ≥ 3σ high, else the fit
  fails. k = θ + 4 + number of peaks.
* bimodal: two library shapes with Rg ratio 3-30 (best pair of a linear scan),
  both refined. k = θ1 + θ2 + 3.
* oversubtracted: a shape with a background forced ≤ 0; the fault is charged
  one extra parameter (k = θ + 3) so that a subtracted clean curve whose
  best background is ≈ 0 stays clean.
* artefact: the best (by the criterion) of four variants on the clean shape:
  - bad points: spikes (residual ≥ 5σ away from the median residual of
    the 7 points around it, both neighbours less than half as far) and a leading block at the lowest q (2-10 % of
    points, chosen by BIC, only if the first point is a factor ≥ 2 off the
    model fitted without the block) get one parameter each (are excluded), the rest
    refitted, flagged again; k = θ + 2 + bad points (≤ 15 % of n);
  - step: ``(s·P + b)·(1 + (f-1)·H(i - i_b))`` with i_b scanned over 15-85 %
    of the points, f ≥ 1.25 or ≤ 1/1.25 (a smaller "step" would only patch a
    misfit shape); k = θ + 4;
  - parasitic scattering: + A (q/q_min)^-p with 6 ≤ p ≤ 40; k = θ + 4;
  - beamstop shadow: × t0 + (1-t0)(i/m)^γ over the first m points (m, γ
    scanned, t0 linear); k = θ + 5.

Selection: BIC = chi² + k ln n (picked), AIC = chi² + 2k and plain chi² are
reported too; a class whose fit fails has infinite score and is recorded.

Speed trade-offs (budget: 2,000 curves in about 25 min with one worker, i.e.
≈ 0.7 s per curve; measured here at about 0.3-0.4 CPU s per curve, while the
shared machine's load can stretch wall time 2-5x): four shapes only (no
ellipsoid, core-shell sphere/cylinder, bicelle, fuzzy sphere, micelle or
flexible chain -- their curves must be matched by the four, and mismatch
is what most errors come from); sphere/vesicle polydispersity with 11
points; one structure factor (no Hayter-MSA: a hard sphere with a larger
effective radius stands in); Gaussian peaks only (no Lorentzian or
paracrystal models); only two clean shapes and one start per anomaly model
are refined; least squares stops after 15 iterations (≤ 15·(θ+2) residual
evaluations) per fit; smooth components are evaluated on an
80-points-per-decade log grid and interpolated log-log onto the resolution's
q_calc (peaks directly on q_calc). Pinhole smearing uses
:class:`sasview_bnn_trainer.simulation.instrument.BandedPinhole` (sasmodels'
``Pinhole1D`` weights stored sparse: a dense ``Pinhole1D`` costs ~40 ms per
1000-point build and a dense product per evaluation); slit smearing uses
sasmodels' ``Slit1D``.

    python benchmarks/fit_and_select.py TEST.h5 --out DIR/ [--limit N] [--workers W]

(the script runs :func:`main` of this module, ``sasview_bnn_trainer.baselines.fit_and_select``).

Writes DIR/per_curve.csv and DIR/summary.json and prints a table: accuracy,
macro-F1 and per-class recall for the BIC, AIC and chi² winners, and seconds
per curve (wall and CPU).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from scipy.optimize import least_squares, nnls
from sasmodels import core as sas_core
from sasmodels import direct_model as sas_direct
from sasmodels import resolution as sas_resolution

from sasview_bnn_plugin.core.preprocessing import CurveError
from sasview_bnn_plugin.core.q_units import INVERSE_ANGSTROM, INVERSE_NANOMETRE, canonical_q_unit
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES

from ..simulation.classes import LATTICES  # Bragg peak position ratios q_hkl/q_1, as simulated
from ..simulation.instrument import BandedPinhole

#: Points per decade of the log grid on which smooth model components are evaluated.
GRID_POINTS_PER_DECADE = 80
#: Points of sasmodels' Gaussian size distribution of the sphere.
SPHERE_PD_POINTS = 11
#: Clean shapes refined by least squares (those with the best linear-scan starting points).
CLEAN_REFINE_TOP = 2
#: Residual evaluations allowed per least-squares fit (the Jacobian's are not counted by scipy's trf).
MAX_NFEV = 15
#: Smallest multiplicative step (or its inverse) of the artefact model's step variant.
STEP_MIN_FACTOR = 1.25
#: Smallest exponent of the artefact model's parasitic-scattering term (aggregates stop at 4.5).
PARASITIC_MIN_POWER = 6.0
#: Threshold (in sigma) for bad points of the artefact model.
OUTLIER_SIGMA = 5.0
#: Half-width (points) of the neighbourhood whose median residual a spike must exceed by OUTLIER_SIGMA.
SPIKE_HALF_WINDOW = 3
#: Largest leading block of bad points (beamstop / parasitic), as a fraction of the points.
LEADING_BLOCK_MAX_FRACTION = 0.10
#: Largest number of bad points of the artefact model, as a fraction of the points.
BAD_POINTS_MAX_FRACTION = 0.15
#: Bounds of the Bragg peaks' relative Gaussian width sigma/q (FWHM/q = 2.355 sigma/q ≲ 0.06).
MIN_PEAK_SIGMA, MAX_PEAK_SIGMA = 0.002, 0.025
#: An ordered fit needs at least two peaks at least this many sigma high.
MIN_PEAK_SIGNIFICANCE = 3.0
CRITERIA = ("bic", "aic", "chi2")
#: Residual assigned to a non-finite model value, in sigma.
_BAD_RESIDUAL = 1e6


class FitFailed(Exception):
    """A class model could not be evaluated or fitted on this curve."""


# ----------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Shape:
    """A form-factor family: sasmodels model, nonlinear parameters θ (log sizes) and their meaning.

    ``params(θ)`` gives sasmodels parameters (scale 1, background 0, contrast 1e-6/Å²);
    ``theta_for_rg(rg)`` a list of starting θ whose Rg (Å) is ``rg``; ``rg(θ)`` the Rg in Å.
    """

    name: str
    model: str
    params: Callable[[np.ndarray], dict]
    theta_for_rg: Callable[[float], list[np.ndarray]]
    rg: Callable[[np.ndarray], float]
    lower: tuple[float, ...]
    upper: tuple[float, ...]

    @property
    def n_theta(self) -> int:
        return len(self.lower)


_SPHERE_RG = math.sqrt(0.6)
_CONTRAST = {"sld": 1.0, "sld_solvent": 0.0}
# log sizes: 1 Å to 1e5 Å.
_LOG_LO, _LOG_HI = 0.0, math.log(1e5)

SPHERE = Shape(
    "sphere", "sphere",
    params=lambda t: {"radius": math.exp(t[0]), "radius_pd": float(t[1]), "radius_pd_n": SPHERE_PD_POINTS,
                      "radius_pd_type": "gaussian", **_CONTRAST},
    theta_for_rg=lambda rg: [np.array([math.log(rg / _SPHERE_RG), 0.1])],
    rg=lambda t: _SPHERE_RG * math.exp(t[0]) * math.sqrt(1 + 8 * t[1] ** 2),
    lower=(_LOG_LO, 0.01), upper=(_LOG_HI, 0.35),
)
COIL = Shape(
    "gauss_coil", "mono_gauss_coil",
    params=lambda t: {"rg": math.exp(t[0]), "i_zero": 1.0},
    theta_for_rg=lambda rg: [np.array([math.log(rg)])],
    rg=lambda t: math.exp(t[0]),
    lower=(_LOG_LO,), upper=(_LOG_HI,),
)


def _cylinder_thetas(rg: float) -> list[np.ndarray]:
    out = []
    for aspect in (0.15, 10.0):  # L/R: disc, rod
        radius = rg / math.sqrt(0.5 + aspect**2 / 12.0)
        out.append(np.array([math.log(radius), math.log(radius * aspect)]))
    return out


CYLINDER = Shape(
    "cylinder", "cylinder",
    params=lambda t: {"radius": math.exp(t[0]), "length": math.exp(t[1]), **_CONTRAST},
    theta_for_rg=_cylinder_thetas,
    rg=lambda t: math.sqrt(math.exp(2 * t[0]) / 2 + math.exp(2 * t[1]) / 12),
    lower=(_LOG_LO, _LOG_LO), upper=(_LOG_HI, _LOG_HI),
)

def _vesicle_rg(t: np.ndarray) -> float:
    outer, ratio = math.exp(t[0]), 1.0 - t[1]
    return outer * math.sqrt(0.6 * (1 - ratio**5) / (1 - ratio**3)) * math.sqrt(1 + 8 * t[2] ** 2)


def _vesicle_thetas(rg: float) -> list[np.ndarray]:
    out = []
    for shell in (0.1, 0.35):  # thickness / outer radius
        ratio = 1.0 - shell
        outer = rg / math.sqrt(0.6 * (1 - ratio**5) / (1 - ratio**3))
        out.append(np.array([math.log(outer), shell, 0.1]))
    return out


VESICLE = Shape(
    "vesicle", "vesicle",
    params=lambda t: {"radius": math.exp(t[0]) * (1 - t[1]), "thickness": math.exp(t[0]) * t[1], "volfraction": 1.0,
                      "radius_pd": float(t[2]), "radius_pd_n": SPHERE_PD_POINTS, "radius_pd_type": "gaussian", **_CONTRAST},
    theta_for_rg=_vesicle_thetas,
    rg=_vesicle_rg,
    lower=(_LOG_LO, 0.02, 0.01), upper=(_LOG_HI, 0.7, 0.35),
)

#: Shapes combined with a hard-sphere structure factor (θ[0] is the log outer radius).
COMPACT_SHAPES: tuple[Shape, ...] = (SPHERE, VESICLE)
#: Compact library entries (best alone) tried as starting points of the interparticle model.
INTERPARTICLE_STARTS = 2
#: Clean-shape candidates, in the order they are tried.
CLEAN_SHAPES: tuple[Shape, ...] = (SPHERE, COIL, CYLINDER, VESICLE)
MODELS_USED: tuple[str, ...] = ("sphere", "mono_gauss_coil", "cylinder", "vesicle", "hardsphere")

_MODEL_CACHE: dict[str, object] = {}


def load_model(name: str):
    """The sasmodels model ``name``, compiled once per process."""
    if name not in _MODEL_CACHE:
        _MODEL_CACHE[name] = sas_core.load_model(name)
    return _MODEL_CACHE[name]


def preload_models() -> None:
    """Compile / load every sasmodels model this baseline uses (once per worker process)."""
    for name in MODELS_USED:
        load_model(name)


# ----------------------------------------------------------------------------- one curve


@dataclass
class ClassFit:
    """Best fit of one class model: chi², number of free parameters k, n points, variant and state."""

    name: str
    chi2: float = math.inf
    k: int = 0
    n: int = 0
    variant: str = ""
    error: str = ""
    state: dict = field(default_factory=dict, repr=False)

    @property
    def bic(self) -> float:
        return self.chi2 + self.k * math.log(self.n) if math.isfinite(self.chi2) else math.inf

    @property
    def aic(self) -> float:
        return self.chi2 + 2 * self.k if math.isfinite(self.chi2) else math.inf

    def score(self, criterion: str) -> float:
        return {"bic": self.bic, "aic": self.aic, "chi2": self.chi2}[criterion]


class _Budget(Exception):
    pass


class CurveFitter:
    """Fits the seven class models to one curve.

    ``q`` (points,) in 1/Å, increasing; ``intensity`` and ``d_intensity`` (points,);
    ``dq`` (points,) one-sigma pinhole width in 1/Å or NaN; ``slit_length`` in 1/Å or NaN.
    Unsmeared if neither is given.
    """

    def __init__(self, q: np.ndarray, intensity: np.ndarray, d_intensity: np.ndarray,
                 dq: np.ndarray | None = None, slit_length: float = float("nan"), max_nfev: int = MAX_NFEV) -> None:
        q = np.asarray(q, dtype=np.float64)
        order = np.argsort(q)
        self.q = q[order]
        self.intensity = np.asarray(intensity, dtype=np.float64)[order]
        self.sigma = np.asarray(d_intensity, dtype=np.float64)[order]
        if self.q.size < 8:
            raise FitFailed(f"only {self.q.size} points: too few to fit")
        if not (np.all(np.isfinite(self.q)) and np.all(self.q > 0)):
            raise FitFailed("q must be finite and positive")
        if not (np.all(np.isfinite(self.sigma)) and np.all(self.sigma > 0)):
            raise FitFailed("dI must be finite and positive at every point to weight the fit")
        self.n = self.q.size
        self.max_nfev = max_nfev
        dq_sorted = None if dq is None else np.asarray(dq, dtype=np.float64)[order]
        if math.isfinite(slit_length) and slit_length > 0:
            self.resolution: sas_resolution.Resolution = sas_resolution.Slit1D(self.q, q_length=slit_length)
        elif dq_sorted is not None and np.all(np.isfinite(dq_sorted)) and np.all(dq_sorted > 0):
            self.resolution = BandedPinhole(self.q, dq_sorted)
        else:
            self.resolution = sas_resolution.Perfect1D(self.q)
        self.q_calc = np.asarray(self.resolution.q_calc, dtype=np.float64)
        self.q_calc = np.where(self.q_calc > 0, self.q_calc, self.q[0] * 1e-3)
        lo, hi = float(self.q_calc.min()), float(self.q_calc.max())
        n_grid = max(int(math.ceil(math.log10(hi / lo) * GRID_POINTS_PER_DECADE)) + 1, 16)
        self.grid = np.exp(np.linspace(math.log(lo), math.log(hi), n_grid))
        self._log_grid = np.log(self.grid)
        self._log_calc = np.log(self.q_calc)
        self._kernels: dict[str, object] = {}
        self._cache: dict[tuple, np.ndarray] = {}
        self._grid_cache: dict[tuple, np.ndarray] = {}
        self._peak_kernel = None
        self._weighted_data = self.intensity / self.sigma
        self.rg_bounds = (0.3 / self.q[-1], 3.0 / self.q[0])
        self.rg_guinier = self.guinier_rg()

    # -- evaluation ----------------------------------------------------------------

    def close(self) -> None:
        """Release the sasmodels kernels."""
        for kernel in self._kernels.values():
            kernel.release()
        self._kernels.clear()
        if self._peak_kernel is not None:
            self._peak_kernel[1].release()
            self._peak_kernel = None

    def _on_grid(self, model: str, params: dict) -> np.ndarray:
        """sasmodels ``model`` (scale 1, background 0) on the log grid; the last few calls are cached."""
        key = (model, tuple(sorted(params.items())))
        values = self._grid_cache.get(key)
        if values is not None:
            return values
        kernel = self._kernels.get(model)
        if kernel is None:
            kernel = self._kernels[model] = load_model(model).make_kernel([self.grid])
        values = np.asarray(sas_direct.call_kernel(kernel, {"scale": 1.0, "background": 0.0, **params}), dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise FitFailed(f"{model} returned non-finite values")
        if len(self._grid_cache) >= 16:
            self._grid_cache.pop(next(iter(self._grid_cache)))
        self._grid_cache[key] = values
        return values

    def _smear_grid(self, values: np.ndarray) -> np.ndarray:
        """Interpolate positive grid values log-log onto q_calc and smear onto q; shape (points,)."""
        floor = max(float(np.max(values)), 1e-300) * 1e-30
        theory = np.exp(np.interp(self._log_calc, self._log_grid, np.log(np.maximum(values, floor))))
        return np.asarray(self.resolution.apply(theory), dtype=np.float64)

    def form_factor(self, shape: Shape, theta: np.ndarray) -> np.ndarray:
        """Smeared form factor on q, normalised to 1 at q_min; shape (points,).

        The last few evaluations are cached: finite differences over the other
        parameters of a composite model reuse the same form factor.
        """
        key = (shape.name, tuple(np.asarray(theta, dtype=np.float64).tolist()))
        cached = self._cache.get(key)
        if cached is None:
            values = self._on_grid(shape.model, shape.params(theta))
            cached = self._normalise(self._smear_grid(values))
            if len(self._cache) >= 16:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = cached
        return cached

    def _normalise(self, column: np.ndarray) -> np.ndarray:
        top = abs(float(column[0])) if column[0] != 0 else float(np.max(np.abs(column)))
        if not (top > 0 and np.isfinite(top)):
            raise FitFailed("model vanishes on the measured window")
        return column / top

    def power_law(self, power: float) -> np.ndarray:
        """Smeared (q/q_min)^-power on q (sasmodels' power_law, evaluated in numpy); shape (points,)."""
        return self._normalise(np.asarray(self.resolution.apply((self.q_calc / self.q[0]) ** (-power)), dtype=np.float64))

    def bragg_peaks(self, positions: np.ndarray, relative_sigma: float) -> np.ndarray:
        """Smeared unit Gaussian peaks of width sigma = relative_sigma·q_peak at ``positions`` (1/Å); (points, peaks)."""
        # sasmodels' gaussian_peak, exp(-(q - q_peak)^2 / (2 sigma^2)), written out in numpy: creating a
        # sasmodels kernel for every new set of positions cost more than the whole peak model.
        x = self.q_calc[None, :] / positions[:, None] - 1.0
        values = np.exp(-0.5 * (x / relative_sigma) ** 2)
        smeared = np.stack([np.asarray(self.resolution.apply(v), dtype=np.float64) for v in values], axis=1)
        return smeared

    # -- linear part --------------------------------------------------------------

    def solve(self, columns: Sequence[np.ndarray], signs: Sequence[float], mask: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Non-negative amplitudes c of ``signs[j]·columns[j]`` fitted to I weighted by 1/dI.

        Returns (c, weighted residuals (points,)); masked-out points get residual 0.
        """
        a = np.stack([s * c for s, c in zip(signs, columns)], axis=1) / self.sigma[:, None]
        b = self._weighted_data
        if mask is not None:
            a_fit, b_fit = a[mask], b[mask]
        else:
            a_fit, b_fit = a, b
        if not np.all(np.isfinite(a_fit)):
            return np.zeros(len(columns)), np.full(self.n, _BAD_RESIDUAL)
        norms = np.sqrt(np.einsum("ij,ij->j", a_fit, a_fit))
        norms = np.where(norms > 0, norms, 1.0)
        a_fit = a_fit / norms
        try:
            coef, _ = nnls(a_fit, b_fit, maxiter=50 * len(columns))
        except RuntimeError:
            coef = np.clip(np.linalg.lstsq(a_fit, b_fit, rcond=None)[0], 0, None)
        coef = coef / norms
        residual = a @ coef - b
        if mask is not None:
            residual = np.where(mask, residual, 0.0)
        return coef, residual

    # -- nonlinear refinement -------------------------------------------------------

    def refine(self, residuals: Callable[[np.ndarray], np.ndarray], theta0: np.ndarray, lower: Sequence[float],
               upper: Sequence[float], max_nfev: int | None = None) -> tuple[float, np.ndarray]:
        """Least squares over θ of ``residuals(θ)`` (weighted, (points,)); returns (best chi², best θ)."""
        lower = np.asarray(lower, dtype=np.float64)
        upper = np.asarray(upper, dtype=np.float64)
        theta0 = np.clip(np.asarray(theta0, dtype=np.float64), lower + 1e-9 * (upper - lower), upper - 1e-9 * (upper - lower))
        best = [math.inf, theta0.copy()]
        limit = (max_nfev or self.max_nfev) * (theta0.size + 2)

        calls = [0]

        def fun(theta: np.ndarray) -> np.ndarray:
            calls[0] += 1
            if calls[0] > limit:
                raise _Budget
            try:
                r = residuals(theta)
            except FitFailed:
                return np.full(self.n, _BAD_RESIDUAL)
            r = np.where(np.isfinite(r), r, _BAD_RESIDUAL)
            chi2 = float(r @ r)
            if chi2 < best[0]:
                best[0], best[1] = chi2, theta.copy()
            return r

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                least_squares(fun, theta0, bounds=(lower, upper), method="trf", max_nfev=max_nfev or self.max_nfev,
                              diff_step=1e-3, x_scale=1.0)
        except _Budget:
            pass
        return best[0], best[1]

    # -- data-derived starting values ----------------------------------------------------

    def guinier_rg(self) -> float:
        """Rg (Å) from a straight line of ln I vs q² through the low-q points (q·Rg ≤ 1.3), NaN if none."""
        good = self.intensity > 0
        q, i = self.q[good], self.intensity[good]
        if q.size < 4:
            return float("nan")
        count = max(4, q.size // 10)
        rg = float("nan")
        for _ in range(4):
            slope = np.polyfit(q[:count] ** 2, np.log(i[:count]), 1)[0]
            if slope >= 0:
                return rg
            rg = math.sqrt(-3 * slope)
            new = int(np.searchsorted(q, 1.3 / rg))
            if new < 4 or new == count:
                break
            count = min(new, q.size)
        return rg

    def rg_grid(self, n: int = 8) -> np.ndarray:
        """Starting Rg values (Å): a log grid over the window's accessible sizes plus the Guinier Rg."""
        lo, hi = self.rg_bounds
        grid = list(np.exp(np.linspace(math.log(lo), math.log(hi), n)))
        if math.isfinite(self.rg_guinier) and lo < self.rg_guinier < 10 * hi:
            grid.append(self.rg_guinier)
        return np.asarray(grid)

    # -- class models -------------------------------------------------------------

    def _clean_residual(self, shape: Shape, bg_sign: float = 1.0, mask: np.ndarray | None = None):
        def residual(theta: np.ndarray) -> np.ndarray:
            return self.solve([self.form_factor(shape, theta), np.ones(self.n)], [1.0, bg_sign], mask)[1]
        return residual

    def _scan_and_refine(self, shape: Shape, residual, starts: list[np.ndarray], extra_lo=(), extra_hi=(),
                         max_nfev: int | None = None) -> tuple[float, np.ndarray]:
        scored = []
        for theta in starts:
            try:
                r = residual(theta)
            except FitFailed:
                continue
            scored.append((float(r @ r), theta))
        if not scored:
            raise FitFailed("no starting value could be evaluated")
        scored.sort(key=lambda x: x[0])
        lower = np.r_[shape.lower, extra_lo]
        upper = np.r_[shape.upper, extra_hi]
        return self.refine(residual, scored[0][1], lower, upper, max_nfev)

    def build_library(self) -> list[tuple[Shape, np.ndarray, float, np.ndarray]]:
        """Starting points of every shape: (shape, θ, Rg in Å, smeared form factor (points,)) on the Rg grid.

        Every class model picks its starting sizes by linear solves over this
        library (no optimiser), then refines the best one.
        """
        library = []
        for shape in CLEAN_SHAPES:
            for rg in self.rg_grid():
                for theta in shape.theta_for_rg(rg):
                    theta = np.clip(theta, shape.lower, shape.upper)
                    try:
                        library.append((shape, theta, shape.rg(theta), self.form_factor(shape, theta)))
                    except FitFailed:
                        continue
        if not library:
            raise FitFailed("no shape could be evaluated on this q range")
        return library

    def _best_in_library(self, make_columns, signs, shapes: Sequence[Shape] | None = None):
        """The library entry (and extra index) whose linear fit with ``make_columns(column)`` is best."""
        best = (math.inf, None, None)
        for entry in self.library:
            if shapes is not None and entry[0] not in shapes:
                continue
            for extra, cols in enumerate(make_columns(entry[3])):
                res = self.solve(cols, signs)[1]
                chi2 = float(res @ res)
                if chi2 < best[0]:
                    best = (chi2, entry, extra)
        if best[1] is None:
            raise FitFailed("no starting value could be evaluated")
        return best[1], best[2], best[0]

    def fit_clean(self) -> ClassFit:
        """Best of the clean shapes: s·P + b, b ≥ 0."""
        self.library = self.build_library()
        best = ClassFit("clean", n=self.n)
        one = np.ones(self.n)
        scanned = []
        for shape in CLEAN_SHAPES:
            try:
                scanned.append(self._best_in_library(lambda col: [[col, one]], [1.0, 1.0], [shape]))
            except FitFailed:
                continue
        # Refine only the shapes whose best starting point is among the CLEAN_REFINE_TOP best.
        scanned.sort(key=lambda found: found[2])
        for entry, _, _ in scanned[:CLEAN_REFINE_TOP]:
            shape = entry[0]
            chi2, theta = self.refine(self._clean_residual(shape), entry[1], shape.lower, shape.upper)
            fit = ClassFit("clean", chi2, shape.n_theta + 2, self.n, shape.name, state={"shape": shape, "theta": theta})
            # The refined sizes join the library, so every anomaly model can start from the clean fit.
            self.library.append((shape, theta, shape.rg(theta), self.form_factor(shape, theta)))
            best.state.setdefault("all", []).append(fit)
            if fit.bic < best.bic:
                best.chi2, best.k, best.variant, best.state["shape"], best.state["theta"] = fit.chi2, fit.k, fit.variant, shape, theta
        if not math.isfinite(best.chi2):
            best.error = "no clean shape could be fitted"
        return best

    def fit_aggregation(self, clean: ClassFit) -> ClassFit:
        """Any clean shape + a low-q power law; start from the best (shape, size, exponent) of a linear scan."""
        one = np.ones(self.n)
        powers = (1.5, 2.5, 3.5, 4.3)
        laws = [self.power_law(p) for p in powers]
        scanned = []
        for shape in CLEAN_SHAPES:
            try:
                scanned.append(self._best_in_library(lambda col: [[col, law, one] for law in laws], [1.0] * 3, [shape]))
            except FitFailed:
                continue
        if not scanned:
            raise FitFailed("no aggregation model could be evaluated")
        scanned.sort(key=lambda found: found[2])
        best = ClassFit("aggregation", n=self.n)
        for entry, which, _ in scanned[:CLEAN_REFINE_TOP]:
            shape = entry[0]

            def residual(theta: np.ndarray, shape=shape) -> np.ndarray:
                cols = [self.form_factor(shape, theta[:-1]), self.power_law(theta[-1]), one]
                return self.solve(cols, [1.0, 1.0, 1.0])[1]

            chi2, theta = self.refine(residual, np.r_[entry[1], powers[which]], np.r_[shape.lower, 1.0],
                                      np.r_[shape.upper, 4.5])
            fit = ClassFit("aggregation", chi2, shape.n_theta + 4, self.n, f"{shape.name}+power_law", state={"theta": theta})
            if fit.bic < best.bic:
                best = fit
        return best

    def fit_interparticle(self, clean: ClassFit) -> ClassFit:
        """A compact shape (sphere or vesicle, θ[0] = ln outer radius) × sasmodels hardsphere S(q).

        Starting points: the compact library entries that fit best alone, each
        combined with a few (R_eff/R, φ); all parameters then refined.
        """
        one = np.ones(self.n)
        compact = [e for e in self.library if e[0] in COMPACT_SHAPES]
        if not compact:
            raise FitFailed("no compact shape in the window")
        alone = sorted(((float(r @ r), e) for e in compact for r in [self.solve([e[3], one], [1.0, 1.0])[1]]),
                       key=lambda x: x[0])
        candidates = [e for _, e in alone[:INTERPARTICLE_STARTS]]
        refined = [f for f in clean.state.get("all", []) if f.state["shape"] in COMPACT_SHAPES]
        for fit in refined:
            candidates.append((fit.state["shape"], fit.state["theta"]))

        def residual_for(shape: Shape):
            def residual(theta: np.ndarray) -> np.ndarray:
                p = self._on_grid(shape.model, shape.params(theta[:-2]))
                sq = self._on_grid("hardsphere", {"radius_effective": math.exp(theta[0]) * theta[-2], "volfraction": theta[-1]})
                return self.solve([self._normalise(self._smear_grid(p * sq)), one], [1.0, 1.0])[1]
            return residual

        best = (math.inf, None, None)
        for entry in candidates:
            shape, theta_s = entry[0], entry[1]
            residual = residual_for(shape)
            for ratio in (1.0, 1.4):
                for phi in (0.15, 0.3, 0.45):
                    theta = np.r_[theta_s, ratio, phi]
                    try:
                        r = residual(theta)
                    except FitFailed:
                        continue
                    if float(r @ r) < best[0]:
                        best = (float(r @ r), shape, theta)
        if best[1] is None:
            raise FitFailed("no structure-factor model could be evaluated")
        shape = best[1]
        chi2, theta = self.refine(residual_for(shape), best[2], np.r_[shape.lower, 0.7, 0.01], np.r_[shape.upper, 3.0, 0.6])
        return ClassFit("interparticle", chi2, shape.n_theta + 4, self.n, f"{shape.name}*hardsphere", state={"theta": theta})

    def _peak_candidates(self, clean: ClassFit, limit: int = 3) -> list[float]:
        """q (1/Å) of the strongest significant local maxima (> 3σ) of the clean fit's residual."""
        residual = -clean.state["residual"]  # data - model, in sigma
        idx = [i for i in range(1, self.n - 1)
               if residual[i] > 3.0 and residual[i] >= residual[i - 1] and residual[i] >= residual[i + 1]]
        idx.sort(key=lambda i: -residual[i])
        chosen: list[float] = []
        for i in idx:
            if all(abs(math.log(self.q[i] / c)) > 0.03 for c in chosen):
                chosen.append(float(self.q[i]))
            if len(chosen) == limit:
                break
        return chosen

    def fit_ordered(self, clean: ClassFit) -> ClassFit:
        shape, theta0 = clean.state["shape"], clean.state["theta"]
        candidates = self._peak_candidates(clean)
        if not candidates:
            raise FitFailed("no significant peak in the clean fit's residual")
        base = self.form_factor(shape, theta0)
        q_hi = self.q[-1] * 1.02

        def columns(theta_shape: np.ndarray, q1: float, rel: float, ratios: np.ndarray, p: np.ndarray | None = None):
            positions = q1 * ratios
            positions = positions[(positions >= self.q[0] * 0.98) & (positions <= q_hi)]
            if positions.size == 0:
                raise FitFailed("no peak inside the window")
            peaks = self.bragg_peaks(positions, rel)
            cols = [self.form_factor(shape, theta_shape) if p is None else p, np.ones(self.n)] + list(peaks.T)
            return cols, positions.size

        best = (math.inf, None, None, 0)
        for q_peak in candidates:
            for lattice, ratios in LATTICES.items():
                r = np.asarray(ratios)
                for order in (0, 1):
                    q1 = q_peak / r[order]
                    try:
                        cols, n_peaks = columns(theta0, q1, 0.01, r, base)
                    except FitFailed:
                        continue
                    res = self.solve(cols, [1.0] * len(cols))[1]
                    chi2 = float(res @ res) + (2 + n_peaks) * math.log(self.n)
                    if chi2 < best[0]:
                        best = (chi2, lattice, q1, n_peaks)
        if best[1] is None:
            raise FitFailed("no lattice fits the residual peaks")
        _, lattice, q1, _ = best
        ratios = np.asarray(LATTICES[lattice])
        n_peaks_box = [0]

        def residual(theta: np.ndarray) -> np.ndarray:
            cols, n_peaks_box[0] = columns(theta[:-2], math.exp(theta[-2]), math.exp(theta[-1]), ratios)
            return self.solve(cols, [1.0] * len(cols))[1]

        lo_q, hi_q = math.log(q1) - 0.05, math.log(q1) + 0.05
        starts = [np.r_[theta0, math.log(q1), math.log(w)] for w in (0.005, 0.015)]
        chi2, theta = self._scan_and_refine(shape, residual, starts, (lo_q, math.log(MIN_PEAK_SIGMA)),
                                            (hi_q, math.log(MAX_PEAK_SIGMA)))
        cols, n_peaks = columns(theta[:-2], math.exp(theta[-2]), math.exp(theta[-1]), ratios)
        coef = self.solve(cols, [1.0] * len(cols))[0]
        heights = [float(np.max(c * col / self.sigma)) for c, col in zip(coef[2:], cols[2:])]
        if sum(h >= MIN_PEAK_SIGNIFICANCE for h in heights) < 2:
            raise FitFailed("fewer than two significant Bragg peaks")
        n_peaks_box[0] = n_peaks
        return ClassFit("ordered", chi2, shape.n_theta + 4 + n_peaks_box[0], self.n, f"{shape.name}+{lattice}",
                        state={"theta": theta})

    def fit_bimodal(self, clean: ClassFit) -> ClassFit:
        """Two populations of any clean shapes with Rg ratio 3-30: the best pair of a linear scan, refined."""
        one = np.ones(self.n)
        best = (math.inf, None, None)
        for i, big in enumerate(self.library):
            for small in self.library:
                ratio = big[2] / small[2]
                if not 3.0 <= ratio <= 30.0:
                    continue
                res = self.solve([big[3], small[3], one], [1.0] * 3)[1]
                chi2 = float(res @ res)
                if chi2 < best[0]:
                    best = (chi2, big, small)
        if best[1] is None:
            raise FitFailed("no two sizes 3x apart fit in the window")
        _, big, small = best
        s1, s2 = big[0], small[0]

        def residual(theta: np.ndarray) -> np.ndarray:
            cols = [self.form_factor(s1, theta[: s1.n_theta]), self.form_factor(s2, theta[s1.n_theta:]), one]
            return self.solve(cols, [1.0, 1.0, 1.0])[1]

        chi2, theta = self.refine(residual, np.r_[big[1], small[1]], np.r_[s1.lower, s2.lower], np.r_[s1.upper, s2.upper])
        return ClassFit("bimodal", chi2, s1.n_theta + s2.n_theta + 3, self.n, f"{s1.name}+{s2.name}", state={"theta": theta})

    def fit_oversubtracted(self, clean: ClassFit) -> ClassFit:
        """A clean shape with a background forced ≤ 0; the fault is charged one extra parameter."""
        one = np.ones(self.n)
        best = ClassFit("oversubtracted", n=self.n)
        entry, _, _ = self._best_in_library(lambda col: [[col, one]], [1.0, -1.0])
        starts = [(entry[0], entry[1])] + [(f.state["shape"], f.state["theta"]) for f in clean.state.get("all", [])
                                           if f.state["shape"] is entry[0]]
        shape = entry[0]
        residual = self._clean_residual(shape, bg_sign=-1.0)
        scored = sorted(((float(r @ r), t) for _, t in starts for r in [residual(t)]), key=lambda x: x[0])
        chi2, theta = self.refine(residual, scored[0][1], shape.lower, shape.upper)
        best = ClassFit("oversubtracted", chi2, shape.n_theta + 3, self.n, f"{shape.name}-background", state={"theta": theta})
        return best

    def _bad_points(self, residual: np.ndarray) -> np.ndarray:
        """Mask of bad points: spikes (≥ 5σ off the local median residual) and a leading ≥ 5σ block at the lowest q."""
        a = np.abs(residual)
        bad = np.zeros(self.n, dtype=bool)
        block = 0
        while block < self.n and a[block] >= OUTLIER_SIGMA:
            block += 1
        if 0 < block <= max(2, int(LEADING_BLOCK_MAX_FRACTION * self.n)):
            bad[:block] = True
        # A spike stands out of its neighbourhood: a smooth misfit (wrong shape) moves the local
        # median along with it, a single bad point does not.
        padded = np.pad(residual, SPIKE_HALF_WINDOW, mode="edge")
        local = np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * SPIKE_HALF_WINDOW + 1), axis=1)
        deviation = np.abs(residual - local)
        neighbours = np.maximum(np.r_[0.0, deviation[:-1]], np.r_[deviation[1:], 0.0])
        # ... and is a single point: a narrow Bragg peak spans its neighbours too.
        bad |= (deviation >= OUTLIER_SIGMA) & (neighbours < 0.5 * deviation)
        limit = int(BAD_POINTS_MAX_FRACTION * self.n)
        if bad.sum() > limit:
            keep = np.argsort(-a * bad)[:limit]
            bad = np.zeros(self.n, dtype=bool)
            bad[keep] = True
        return bad

    def fit_artefact(self, clean: ClassFit) -> ClassFit:
        shape, theta0 = clean.state["shape"], clean.state["theta"]
        best = ClassFit("artefact", n=self.n)
        # Variant 1: bad points (spikes, leading beamstop/parasitic block) get one parameter each.
        # A beamstop shadow or parasitic scattering pulls the clean fit: scan leading blocks of
        # m excluded points (linear solves at the clean sizes) and keep the best by BIC.
        one = np.ones(self.n)
        p0 = self.form_factor(shape, theta0)
        block, block_score = 0, float(clean.state["residual"] @ clean.state["residual"])
        for m in sorted({int(round(f * self.n)) for f in (0.02, 0.04, 0.06, 0.08, 0.10)} - {0}):
            mask = np.arange(self.n) >= m
            coef, res = self.solve([p0, one], [1.0, 1.0], mask)
            # Only a clearly distorted lowest-q point (a factor >= 2 off the model) makes a block a fault.
            model_0 = coef[0] * p0[0] + coef[1]
            if not (model_0 > 0 and not 0.5 < self.intensity[0] / model_0 < 2.0):
                continue
            score = float(res @ res) + m * math.log(self.n)
            if score < block_score:
                block, block_score = m, score
        mask = np.arange(self.n) >= block
        bad = self._bad_points(self.solve([p0, one], [1.0, 1.0], mask)[1]) & mask
        bad[:block] = True
        theta = theta0
        for _ in range(2):
            if not bad.any():
                break
            chi2, theta = self.refine(self._clean_residual(shape, mask=~bad), theta, shape.lower, shape.upper,
                                      max_nfev=max(self.max_nfev // 2, 5))
            r = self._clean_residual(shape)(theta)
            new_bad = self._bad_points(r)
            if np.array_equal(new_bad, bad):
                break
            bad = new_bad | bad if (new_bad | bad).sum() <= int(BAD_POINTS_MAX_FRACTION * self.n) else new_bad
        if bad.any():
            r = self._clean_residual(shape, mask=~bad)(theta)
            best = ClassFit("artefact", float(r @ r), shape.n_theta + 2 + int(bad.sum()), self.n, f"{int(bad.sum())} bad points",
                            state={"theta": theta})
        # Variant 2: a multiplicative step between two detector segments.
        p = self.form_factor(shape, theta0)
        one = np.ones(self.n)
        lo_b, hi_b = max(int(0.15 * self.n), 3), min(int(0.85 * self.n), self.n - 3)
        boundaries = np.unique(np.linspace(lo_b, hi_b, min(40, hi_b - lo_b + 1)).astype(int))
        scan = []
        for b in boundaries:
            h = np.arange(self.n) >= b
            res = self.solve([p * ~h, p * h, one * ~h, one * h], [1.0] * 4)[1]
            scan.append((float(res @ res), int(b)))
        scan.sort()
        boundary = scan[0][1]
        step_region = np.arange(self.n) >= boundary
        # Refine the boundary between the scanned neighbours.
        spacing = max(1, (hi_b - lo_b) // 40)
        for b in range(max(lo_b, boundary - spacing), min(hi_b, boundary + spacing) + 1):
            h = np.arange(self.n) >= b
            res = self.solve([p * ~h, p * h, one * ~h, one * h], [1.0] * 4)[1]
            if float(res @ res) < scan[0][0]:
                scan[0] = (float(res @ res), b)
                step_region = h

        def residual(theta: np.ndarray) -> np.ndarray:
            factor = np.where(step_region, math.exp(theta[-1]), 1.0)
            return self.solve([self.form_factor(shape, theta[:-1]) * factor, factor], [1.0, 1.0])[1]

        coef = self.solve([p * ~step_region, p * step_region], [1.0, 1.0])[0]
        f0 = coef[1] / coef[0] if coef[0] > 0 and coef[1] > 0 else 1.0
        # A detector-segment step is a fault of at least STEP_MIN_FACTOR: the factor is bounded
        # away from 1 on the side the scan found (a small step would only patch a misfit shape).
        if f0 >= 1.0:
            f_lo, f_hi = STEP_MIN_FACTOR, 5.0
        else:
            f_lo, f_hi = 0.2, 1.0 / STEP_MIN_FACTOR
        f0 = float(np.clip(f0, f_lo * 1.01, f_hi / 1.01))
        chi2, theta = self.refine(residual, np.r_[theta0, math.log(f0)], np.r_[shape.lower, math.log(f_lo)],
                                  np.r_[shape.upper, math.log(f_hi)])
        step = ClassFit("artefact", chi2, shape.n_theta + 4, self.n, f"step at q={self.q[boundary]:.4g}", state={"theta": theta})
        if step.bic < best.bic:
            best = step
        for variant in (self._parasitic_variant, self._beamstop_variant):
            try:
                fit = variant(shape, theta0)
            except FitFailed:
                continue
            if fit.bic < best.bic:
                best = fit
        return best

    def _parasitic_variant(self, shape: Shape, theta0: np.ndarray) -> ClassFit:
        """Clean + parasitic scattering: an additive (q/q_min)^-p far steeper than any aggregate (p ≥ 6)."""
        one = np.ones(self.n)
        p0 = self.form_factor(shape, theta0)
        scan = sorted((float(r @ r), power) for power in (8.0, 15.0, 30.0)
                      for r in [self.solve([p0, self.power_law(power), one], [1.0] * 3)[1]])

        def residual(theta: np.ndarray) -> np.ndarray:
            return self.solve([self.form_factor(shape, theta[:-1]), self.power_law(theta[-1]), one], [1.0] * 3)[1]

        chi2, theta = self.refine(residual, np.r_[theta0, scan[0][1]], np.r_[shape.lower, PARASITIC_MIN_POWER],
                                  np.r_[shape.upper, 40.0])
        return ClassFit("artefact", chi2, shape.n_theta + 4, self.n, f"parasitic q^-{theta[-1]:.3g}", state={"theta": theta})

    def _beamstop_variant(self, shape: Shape, theta0: np.ndarray) -> ClassFit:
        """Clean × a beamstop shadow: transmission t0 + (1 - t0)(i/m)^γ over the first m points (t0 ≥ 0 linear)."""
        one = np.ones(self.n)
        p0 = self.form_factor(shape, theta0)
        index = np.arange(self.n, dtype=np.float64)
        best = (math.inf, None)
        for m in sorted({max(2, int(round(f * self.n))) for f in (0.02, 0.04, 0.06, 0.08, 0.10)}):
            for gamma in (1.0, 2.0, 3.0):
                ramp = np.minimum(index / m, 1.0) ** gamma
                r = self.solve([p0 * ramp, p0 * (1 - ramp), one], [1.0] * 3)[1]
                if float(r @ r) < best[0]:
                    best = (float(r @ r), ramp)
        ramp = best[1]

        def residual(theta: np.ndarray) -> np.ndarray:
            p = self.form_factor(shape, theta)
            return self.solve([p * ramp, p * (1 - ramp), one], [1.0] * 3)[1]

        chi2, theta = self.refine(residual, theta0, shape.lower, shape.upper)
        return ClassFit("artefact", chi2, shape.n_theta + 5, self.n, "beamstop shadow", state={"theta": theta})

    def fit_all(self) -> dict[str, ClassFit]:
        """Fit every class model; a class whose fit fails has chi² = inf and its error message set."""
        fits: dict[str, ClassFit] = {}
        clean = self.fit_clean()
        fits["clean"] = clean
        if not math.isfinite(clean.chi2):
            for name in CLASS_NAMES[1:]:
                fits[name] = ClassFit(name, n=self.n, error="no clean shape to build on")
            return fits
        clean.state["residual"] = self._clean_residual(clean.state["shape"])(clean.state["theta"])
        steps = {"aggregation": self.fit_aggregation, "interparticle": self.fit_interparticle,
                 "ordered": self.fit_ordered, "bimodal": self.fit_bimodal,
                 "oversubtracted": self.fit_oversubtracted, "artefact": self.fit_artefact}
        for name, step in steps.items():
            try:
                fits[name] = step(clean)
            except FitFailed as exc:
                fits[name] = ClassFit(name, n=self.n, error=str(exc))
            except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
                fits[name] = ClassFit(name, n=self.n, error=f"{type(exc).__name__}: {exc}")
        return fits


# ----------------------------------------------------------------------------- selection


@dataclass
class CurveOutcome:
    """Result for one curve: winners per criterion, per-class BIC/AIC/chi², failures and timing."""

    index: int
    label: int
    n_points: int
    winners: dict[str, int]
    scores: dict[str, dict[str, float]]
    variants: dict[str, str]
    failures: dict[str, str]
    seconds_wall: float
    seconds_cpu: float


def select(fits: dict[str, ClassFit], criterion: str) -> int:
    """Index of the class with the lowest score (ties: the earlier class); -1 if every fit failed."""
    scores = [fits[name].score(criterion) for name in CLASS_NAMES]
    if not any(math.isfinite(s) for s in scores):
        return -1
    return int(np.argmin(scores))


def to_inverse_angstrom(q_unit: str) -> float:
    """Factor turning q given in ``q_unit`` into 1/Å, read by the runtime's q-unit parser (any spelling it knows)."""
    try:
        return {INVERSE_ANGSTROM: 1.0, INVERSE_NANOMETRE: 0.1}[canonical_q_unit(q_unit)]
    except (CurveError, KeyError):  # not a unit, or none
        raise ValueError(f"q is in {q_unit!r}; this baseline understands 1/A and 1/nm") from None


def classify_arrays(q: np.ndarray, intensity: np.ndarray, d_intensity: np.ndarray, dq: np.ndarray | None,
                    slit_length: float, q_unit: str, max_nfev: int = MAX_NFEV) -> dict[str, ClassFit]:
    """Fit all seven class models to one curve (q, dq, slit length in ``q_unit``); arrays (points,)."""
    factor = to_inverse_angstrom(q_unit)
    fitter = CurveFitter(np.asarray(q) * factor, intensity, d_intensity,
                         None if dq is None else np.asarray(dq) * factor, slit_length * factor, max_nfev)
    try:
        return fitter.fit_all()
    finally:
        fitter.close()


def classify_curve(task: tuple) -> CurveOutcome:
    """Worker entry point: (index, label, q, I, dI, dq, slit_length, q_unit, max_nfev) -> CurveOutcome."""
    index, label, q, intensity, d_intensity, dq, slit_length, q_unit, max_nfev = task
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        fits = classify_arrays(q, intensity, d_intensity, dq, slit_length, q_unit, max_nfev)
    except (FitFailed, ValueError) as exc:
        fits = {name: ClassFit(name, n=len(q), error=str(exc)) for name in CLASS_NAMES}
    except Exception as exc:  # a worker must survive any one curve; the failure is recorded
        fits = {name: ClassFit(name, n=len(q), error=f"{type(exc).__name__}: {exc}") for name in CLASS_NAMES}
    winners = {c: select(fits, c) for c in CRITERIA}
    return CurveOutcome(
        index=index, label=int(label), n_points=len(q), winners=winners,
        scores={c: {name: fits[name].score(c) for name in CLASS_NAMES} for c in CRITERIA},
        variants={name: fits[name].variant for name in CLASS_NAMES},
        failures={name: fits[name].error for name in CLASS_NAMES if fits[name].error},
        seconds_wall=time.perf_counter() - wall, seconds_cpu=time.process_time() - cpu,
    )


def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.simplefilter("ignore")
    preload_models()


def iter_outcomes(tasks: list[tuple], workers: int, progress: bool = True) -> Iterator[CurveOutcome]:
    """Classify every task, one curve per task, in ``workers`` processes (1: in this process), in order."""
    from tqdm import tqdm

    if workers <= 1:
        _worker_init()
        for task in tqdm(tasks, disable=not progress, desc="curves"):
            yield classify_curve(task)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
        yield from tqdm(pool.map(classify_curve, tasks, chunksize=1), total=len(tasks), disable=not progress, desc="curves")


# ----------------------------------------------------------------------------- report


def summarise(outcomes: list[CurveOutcome], wall_total: float, workers: int) -> dict:
    """Accuracy, macro-F1, per-class recall and confusion matrix per criterion, and timing."""
    from sklearn.metrics import confusion_matrix, f1_score

    labels = np.array([o.label for o in outcomes])
    summary: dict = {"n_curves": len(outcomes), "classes": list(CLASS_NAMES), "workers": workers}
    for c in CRITERIA:
        pred = np.array([o.winners[c] for o in outcomes])
        recall = {}
        for k, name in enumerate(CLASS_NAMES):
            sel = labels == k
            recall[name] = float(np.mean(pred[sel] == k)) if sel.any() else float("nan")
        summary[c] = {
            "accuracy": float(np.mean(pred == labels)),
            "macro_f1": float(f1_score(labels, pred, labels=list(range(len(CLASS_NAMES))), average="macro", zero_division=0)),
            "recall": recall,
            "confusion": confusion_matrix(labels, pred, labels=list(range(len(CLASS_NAMES)))).tolist(),
            "unclassified": int(np.sum(pred < 0)),
        }
    wall = np.array([o.seconds_wall for o in outcomes])
    cpu = np.array([o.seconds_cpu for o in outcomes])
    failures: dict[str, int] = {}
    for o in outcomes:
        for name in o.failures:
            failures[name] = failures.get(name, 0) + 1
    summary["timing"] = {
        "wall_seconds_total": wall_total,
        "wall_seconds_per_curve_elapsed": wall_total / max(len(outcomes), 1),
        "wall_seconds_per_curve_mean": float(wall.mean()) if wall.size else float("nan"),
        "wall_seconds_per_curve_p95": float(np.percentile(wall, 95)) if wall.size else float("nan"),
        "cpu_seconds_per_curve_mean": float(cpu.mean()) if cpu.size else float("nan"),
    }
    summary["failed_class_fits"] = failures
    return summary


CSV_FIELDS = (["index", "label", "label_name", "n_points"] + [f"{c}_winner" for c in CRITERIA]
              + [f"bic_{n}" for n in CLASS_NAMES] + [f"chi2_{n}" for n in CLASS_NAMES]
              + ["clean_shape", "variants", "failures", "seconds_wall", "seconds_cpu"])


def csv_row(o: CurveOutcome) -> list:
    """One CSV row (fields :data:`CSV_FIELDS`) for a curve's outcome."""
    name = lambda k: CLASS_NAMES[k] if k >= 0 else "none"  # noqa: E731
    return ([o.index, o.label, CLASS_NAMES[o.label], o.n_points] + [name(o.winners[c]) for c in CRITERIA]
            + [f"{o.scores['bic'][n]:.6g}" for n in CLASS_NAMES] + [f"{o.scores['chi2'][n]:.6g}" for n in CLASS_NAMES]
            + [o.variants.get("clean", ""), "; ".join(f"{k}={v}" for k, v in o.variants.items() if v),
               "; ".join(f"{k}: {v}" for k, v in o.failures.items()), f"{o.seconds_wall:.4f}", f"{o.seconds_cpu:.4f}"])


def format_table(summary: dict) -> str:
    """A plain-text table of the summary."""
    lines = [f"{summary['n_curves']} curves, {summary['workers']} worker(s)",
             f"{'':16s}" + "".join(f"{c.upper():>9s}" for c in CRITERIA)]
    lines.append(f"{'accuracy':16s}" + "".join(f"{summary[c]['accuracy']:9.3f}" for c in CRITERIA))
    lines.append(f"{'macro-F1':16s}" + "".join(f"{summary[c]['macro_f1']:9.3f}" for c in CRITERIA))
    for name in CLASS_NAMES:
        lines.append(f"recall {name:9s}" + "".join(f"{summary[c]['recall'][name]:9.3f}" for c in CRITERIA))
    t = summary["timing"]
    lines.append(f"seconds per curve: wall {t['wall_seconds_per_curve_mean']:.3f} (p95 {t['wall_seconds_per_curve_p95']:.3f}), "
                 f"CPU {t['cpu_seconds_per_curve_mean']:.3f}; elapsed {t['wall_seconds_total']:.1f} s "
                 f"({t['wall_seconds_per_curve_elapsed']:.3f} s/curve)")
    if summary["failed_class_fits"]:
        lines.append("failed class fits: " + ", ".join(f"{k} {v}" for k, v in summary["failed_class_fits"].items()))
    lines.append("BIC confusion (rows: true, columns: predicted, order " + ", ".join(CLASS_NAMES) + "):")
    lines += ["  " + " ".join(f"{v:5d}" for v in row) for row in summary["bic"]["confusion"]]
    return "\n".join(lines)


def load_tasks(path: Path, limit: int | None, max_nfev: int) -> list[tuple]:
    """Curves of a sasview-bnn HDF5 curve file as worker tasks (the first ``limit`` if given)."""
    from ..simulation.store import CurveReader

    with CurveReader(path) as reader:
        if tuple(reader.classes) != CLASS_NAMES:
            raise ValueError(f"{path} uses classes {reader.classes}, not this project's {list(CLASS_NAMES)}")
        stop = len(reader) if limit is None else min(limit, len(reader))
        curves = reader.read(0, stop)
    return [(i, c.label, c.q, c.intensity, c.d_intensity, c.dq, c.slit_length, c.q_unit, max_nfev) for i, c in enumerate(curves)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("test_file", type=Path, help="HDF5 curve file written by the simulator (CurveWriter)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for per_curve.csv and summary.json")
    parser.add_argument("--limit", type=int, default=None, help="classify only the first N curves")
    parser.add_argument("--workers", type=int, default=1, help="processes, one curve per task (default 1)")
    parser.add_argument("--max-nfev", type=int, default=MAX_NFEV, help=f"least-squares evaluations per fit (default {MAX_NFEV})")
    args = parser.parse_args(argv)
    if not args.test_file.is_file():
        print(f"error: {args.test_file} does not exist", file=sys.stderr)
        return 2
    try:
        tasks = load_tasks(args.test_file, args.limit, args.max_nfev)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.test_file}: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    # Rows are written as curves finish (per_curve.csv.partial), so a long run can be inspected
    # while it goes; the file is renamed to per_curve.csv at the end.
    partial = args.out / "per_curve.csv.partial"
    outcomes: list[CurveOutcome] = []
    start = time.perf_counter()
    with partial.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_FIELDS)
        for outcome in iter_outcomes(tasks, args.workers):
            outcomes.append(outcome)
            writer.writerow(csv_row(outcome))
            fh.flush()
    elapsed = time.perf_counter() - start
    partial.replace(args.out / "per_curve.csv")
    summary = summarise(outcomes, elapsed, args.workers)
    summary["test_file"] = str(args.test_file)
    summary["max_nfev"] = args.max_nfev
    tmp = args.out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(args.out / "summary.json")
    print(format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
