"""Catalogue of sasmodels form factors and their parameter samplers.

Every shape is a well-kept sasmodels model. A sampler receives a *target radius
of gyration* (in Å) chosen by the caller so that the particle's Guinier knee,
q ≈ 1/Rg, lands inside the simulated q-window, and returns sasmodels parameters
that give (approximately) that Rg. The exact knee position is then measured on
the evaluated curve (:func:`criteria.knee_position`), so the Rg formulas only
need to be good enough to place the knee.

Polydispersity
--------------
* Shapes without orientation averaging (sphere, core-shell sphere, fuzzy
  sphere, vesicle, Gaussian coil, flexible cylinder) use sasmodels' own
  polydispersity (Gaussian, Schulz or lognormal, 21 points) on one size
  parameter, 2 to 30 %. The polymer micelle is monodisperse (its size
  parameters are not polydisperse in sasmodels).
* Orientation-averaged shapes (ellipsoid, rod and disc cylinders, core-shell
  cylinder, core-shell bicelle) cost about 1 ms per monodisperse call on 200 q
  points and ×n_pd with one polydisperse parameter (10-20 ms, see
  ``shared/measurements.md``), far beyond the simulation budget of about
  3 ms per curve. They are therefore evaluated *once, monodisperse*, and made
  polydisperse by *self-similar* size polydispersity (every length scaled by
  the same factor s, Gaussian number distribution of s):
  ``I(q) = Σ n_i s_i^6 I_mono(s_i q) / Σ n_i s_i^3``, which is exact for a
  family of particles of fixed shape and sasmodels' volume normalisation.

All q are in 1/Å, lengths in Å, SLDs in 1e-6/Å².
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sasmodels import core as sas_core
from sasmodels import direct_model as sas_direct

#: Number of size samples for sasmodels polydispersity (Gaussian, ±3 sigma).
PD_POINTS = 21
#: sasmodels size distributions drawn for shapes with sasmodels polydispersity.
PD_DISTRIBUTIONS = ("gaussian", "schulz", "lognormal")
#: Number of size samples for the self-similar polydispersity of orientation-averaged shapes.
SELF_SIMILAR_PD_POINTS = 25
#: Density of the monodisperse log grid of orientation-averaged shapes (points per decade).
SELF_SIMILAR_POINTS_PER_DECADE = 60
#: Smallest size polydispersity of orientation-averaged shapes (keeps the 60/decade grid faithful).
SELF_SIMILAR_MIN_PD = 0.05


@functools.lru_cache(maxsize=None)
def load_model(name: str):
    """The sasmodels model ``name``, compiled once per process."""
    return sas_core.load_model(name)


def call_model(name: str, q: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """Evaluate sasmodels model ``name`` on q (1/Å, shape (points,)) with scale 1, background 0.

    Calls the compiled kernel directly (no DirectModel per curve). Returns shape (points,).
    """
    kernel = load_model(name).make_kernel([np.ascontiguousarray(q, dtype=np.float64)])
    try:
        pars = {"scale": 1.0, "background": 0.0, **params}
        return np.asarray(sas_direct.call_kernel(kernel, pars), dtype=np.float64)
    finally:
        kernel.release()


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _contrast(rng: np.random.Generator) -> tuple[float, float]:
    """(sld, sld_solvent) with a contrast of 0.5 to 6e-6/Å², either sign."""
    solvent = float(rng.uniform(-0.5, 6.4))
    delta = float(rng.uniform(0.5, 6.0)) * (1 if rng.random() < 0.5 else -1)
    return solvent + delta, solvent


@dataclass(frozen=True)
class ShapeSpec:
    """One entry of the catalogue.

    ``sample(rg, rng)`` returns sasmodels parameters (without scale/background)
    for a target Rg in Å; ``pd_parameter`` is the parameter made polydisperse
    by sasmodels (None: self-similar polydispersity for orientation-averaged
    shapes); ``outer_radius(params)`` is the hard-sphere-like radius used for
    structure factors (only for ``compact`` shapes).
    """

    name: str
    model: str
    sample: Callable[[float, np.random.Generator], dict[str, float]]
    pd_parameter: str | None
    orientation_averaged: bool = False
    compact: bool = False
    outer_radius: Callable[[dict[str, float]], float] | None = None


SPHERE_RG = math.sqrt(3.0 / 5.0)


def _sphere(rg: float, rng: np.random.Generator) -> dict[str, float]:
    sld, solvent = _contrast(rng)
    return {"radius": rg / SPHERE_RG, "sld": sld, "sld_solvent": solvent}


def _core_shell_sphere(rg: float, rng: np.random.Generator) -> dict[str, float]:
    outer = rg / SPHERE_RG
    shell_fraction = float(rng.uniform(0.1, 0.5))
    solvent = float(rng.uniform(-0.5, 6.4))
    core = solvent + float(rng.uniform(1.0, 6.0)) * (1 if rng.random() < 0.5 else -1)
    shell = solvent + float(rng.uniform(-0.5, 1.0)) * (core - solvent)
    return {
        "radius": outer * (1 - shell_fraction),
        "thickness": outer * shell_fraction,
        "sld_core": core,
        "sld_shell": shell,
        "sld_solvent": solvent,
    }


def _fuzzy_sphere(rg: float, rng: np.random.Generator) -> dict[str, float]:
    sld, solvent = _contrast(rng)
    radius = rg / SPHERE_RG
    return {"radius": radius * 0.9, "fuzziness": radius * float(rng.uniform(0.03, 0.15)), "sld": sld, "sld_solvent": solvent}


def _vesicle(rg: float, rng: np.random.Generator) -> dict[str, float]:
    # Hollow shell: Rg^2 = 3/5 (Ro^5 - Ri^5)/(Ro^3 - Ri^3); solve for Ro at a given Ri/Ro.
    ratio = float(rng.uniform(0.6, 0.95))
    factor = math.sqrt(0.6 * (1 - ratio**5) / (1 - ratio**3))
    outer = rg / factor
    sld, solvent = _contrast(rng)
    return {"radius": outer * ratio, "thickness": outer * (1 - ratio), "sld": sld, "sld_solvent": solvent, "volfraction": 1.0}


def _gauss_coil(rg: float, rng: np.random.Generator) -> dict[str, float]:
    return {"rg": rg, "i_zero": 1.0}


def _polymer_micelle(rg: float, rng: np.random.Generator) -> dict[str, float]:
    chain_rg = rg * float(rng.uniform(0.1, 0.25))
    core = max(rg / SPHERE_RG - 2 * chain_rg, 0.3 * rg)
    return {
        "radius_core": core,
        "rg": chain_rg,
        "d_penetration": float(rng.uniform(0.8, 1.2)),
        "n_aggreg": float(rng.uniform(10, 200)),
        "ndensity": 1.0,
        "v_core": float(rng.uniform(2e3, 8e4)),
        "v_corona": float(rng.uniform(2e3, 8e4)),
        "sld_solvent": 6.4,
        "sld_core": float(rng.uniform(0.0, 1.0)),
        "sld_corona": float(rng.uniform(0.3, 1.5)),
    }


def _wormlike_rg(length: float, kuhn: float) -> float:
    """Rg of a Kratky-Porod chain of contour length L and Kuhn length b (both Å)."""
    x = length / kuhn
    rg2 = length * kuhn / 6.0 * (1 - 1.5 / x + 1.5 / x**2 - 0.75 / x**3 * (1 - math.exp(-2 * x)))
    return math.sqrt(max(rg2, 1e-12))


def _flexible_cylinder(rg: float, rng: np.random.Generator) -> dict[str, float]:
    n_kuhn = _log_uniform(rng, 5.0, 60.0)
    # Rg^2 ~ L b / 6 with L = n b -> b = rg * sqrt(6 / n); refine with the exact formula.
    kuhn = rg * math.sqrt(6.0 / n_kuhn)
    kuhn *= rg / _wormlike_rg(n_kuhn * kuhn, kuhn)
    radius = min(kuhn * float(rng.uniform(0.05, 0.2)), rg * 0.2)
    sld, solvent = _contrast(rng)
    return {"length": n_kuhn * kuhn, "kuhn_length": kuhn, "radius": radius, "sld": sld, "sld_solvent": solvent}


def _ellipsoid(rg: float, rng: np.random.Generator) -> dict[str, float]:
    aspect = _log_uniform(rng, 0.2, 5.0)  # polar / equatorial
    equatorial = rg * math.sqrt(5.0 / (2.0 + aspect**2))
    sld, solvent = _contrast(rng)
    return {"radius_polar": equatorial * aspect, "radius_equatorial": equatorial, "sld": sld, "sld_solvent": solvent}


def _cylinder_from(rg: float, length_over_radius: float) -> tuple[float, float]:
    radius = rg / math.sqrt(0.5 + length_over_radius**2 / 12.0)
    return radius, radius * length_over_radius


def _rod(rg: float, rng: np.random.Generator) -> dict[str, float]:
    radius, length = _cylinder_from(rg, _log_uniform(rng, 4.0, 40.0))
    sld, solvent = _contrast(rng)
    return {"radius": radius, "length": length, "sld": sld, "sld_solvent": solvent}


def _disc(rg: float, rng: np.random.Generator) -> dict[str, float]:
    radius, length = _cylinder_from(rg, _log_uniform(rng, 0.05, 0.3))
    sld, solvent = _contrast(rng)
    return {"radius": radius, "length": length, "sld": sld, "sld_solvent": solvent}


def _core_shell_cylinder(rg: float, rng: np.random.Generator) -> dict[str, float]:
    outer, length = _cylinder_from(rg, _log_uniform(rng, 3.0, 30.0))
    shell = outer * float(rng.uniform(0.1, 0.4))
    solvent = float(rng.uniform(-0.5, 6.4))
    core = solvent + float(rng.uniform(1.0, 6.0)) * (1 if rng.random() < 0.5 else -1)
    return {
        "radius": outer - shell,
        "thickness": shell,
        "length": length,
        "sld_core": core,
        "sld_shell": solvent + float(rng.uniform(-0.5, 1.0)) * (core - solvent),
        "sld_solvent": solvent,
    }


def _bicelle(rg: float, rng: np.random.Generator) -> dict[str, float]:
    outer, total_length = _cylinder_from(rg, _log_uniform(rng, 0.08, 0.4))
    rim = outer * float(rng.uniform(0.05, 0.2))
    face = total_length * float(rng.uniform(0.1, 0.3))
    solvent = float(rng.uniform(-0.5, 6.4))
    core = solvent + float(rng.uniform(1.0, 5.0)) * (1 if rng.random() < 0.5 else -1)
    return {
        "radius": outer - rim,
        "thick_rim": rim,
        "thick_face": face,
        "length": max(total_length - 2 * face, 1.0),
        "sld_core": core,
        "sld_face": solvent + float(rng.uniform(-1.0, 1.0)) * (core - solvent),
        "sld_rim": solvent + float(rng.uniform(-1.0, 1.0)) * (core - solvent),
        "sld_solvent": solvent,
    }


SHAPES: tuple[ShapeSpec, ...] = (
    ShapeSpec("sphere", "sphere", _sphere, "radius", compact=True, outer_radius=lambda p: p["radius"]),
    ShapeSpec("core_shell_sphere", "core_shell_sphere", _core_shell_sphere, "radius", compact=True,
              outer_radius=lambda p: p["radius"] + p["thickness"]),
    ShapeSpec("fuzzy_sphere", "fuzzy_sphere", _fuzzy_sphere, "radius", compact=True,
              outer_radius=lambda p: p["radius"] + 2 * p["fuzziness"]),
    ShapeSpec("vesicle", "vesicle", _vesicle, "radius", compact=True,
              outer_radius=lambda p: p["radius"] + p["thickness"]),
    ShapeSpec("mono_gauss_coil", "mono_gauss_coil", _gauss_coil, "rg"),
    ShapeSpec("polymer_micelle", "polymer_micelle", _polymer_micelle, None, compact=True,
              outer_radius=lambda p: p["radius_core"] + 2 * p["rg"]),
    ShapeSpec("flexible_cylinder", "flexible_cylinder", _flexible_cylinder, "length"),
    ShapeSpec("ellipsoid", "ellipsoid", _ellipsoid, None, orientation_averaged=True),
    ShapeSpec("rod", "cylinder", _rod, None, orientation_averaged=True),
    ShapeSpec("disc", "cylinder", _disc, None, orientation_averaged=True),
    ShapeSpec("core_shell_cylinder", "core_shell_cylinder", _core_shell_cylinder, None, orientation_averaged=True),
    ShapeSpec("core_shell_bicelle", "core_shell_bicelle", _bicelle, None, orientation_averaged=True),
)

SHAPES_BY_NAME: dict[str, ShapeSpec] = {s.name: s for s in SHAPES}

#: Shapes usable with a hard-sphere or Hayter-MSA structure factor (roughly spherical).
COMPACT_SHAPES: tuple[ShapeSpec, ...] = tuple(s for s in SHAPES if s.compact)


@dataclass
class ShapeDraw:
    """A shape with its sampled parameters, size polydispersity (relative sigma) and target Rg (Å)."""

    spec: ShapeSpec
    params: dict[str, float]
    polydispersity: float
    rg_target: float
    distribution: str = "gaussian"

    def record(self, prefix: str = "") -> dict[str, float | str]:
        """Parameters for SimulatedCurve.params, keys prefixed (e.g. "small_")."""
        out: dict[str, float | str] = {f"{prefix}shape": self.spec.name, f"{prefix}model": self.spec.model,
                                       f"{prefix}polydispersity": self.polydispersity,
                                       f"{prefix}pd_distribution": self.distribution,
                                       f"{prefix}rg_target": self.rg_target}
        out.update({f"{prefix}{k}": float(v) for k, v in self.params.items()})
        return out


def draw_shape(rg: float, rng: np.random.Generator, specs: tuple[ShapeSpec, ...] = SHAPES,
               max_polydispersity: float = 0.3) -> ShapeDraw:
    """Pick a shape uniformly from ``specs`` and sample its parameters for a target Rg (Å)."""
    spec = specs[int(rng.integers(len(specs)))]
    params = spec.sample(rg, rng)
    low = SELF_SIMILAR_MIN_PD if spec.orientation_averaged else 0.02
    pd = float(rng.uniform(low, max_polydispersity)) if spec.name != "polymer_micelle" else 0.0
    # sasmodels' size distributions; self-similar polydispersity is Gaussian.
    distribution = "gaussian" if spec.orientation_averaged else PD_DISTRIBUTIONS[int(rng.integers(len(PD_DISTRIBUTIONS)))]
    return ShapeDraw(spec, params, pd, rg, distribution)


def evaluate_shape(draw: ShapeDraw, q: np.ndarray) -> np.ndarray:
    """Orientation-averaged, polydisperse I(q) of a shape at volume fraction 1 (1/cm), q in 1/Å.

    ``q`` has shape (points,) and must be increasing and log-spaced enough for
    interpolation (the model grid). Returns shape (points,), strictly positive.
    """
    spec = draw.spec
    if not spec.orientation_averaged:
        params = dict(draw.params)
        if spec.pd_parameter is not None and draw.polydispersity > 0:
            params[f"{spec.pd_parameter}_pd"] = draw.polydispersity
            params[f"{spec.pd_parameter}_pd_n"] = PD_POINTS
            params[f"{spec.pd_parameter}_pd_type"] = draw.distribution
        values = call_model(spec.model, q, params)
    else:
        values = self_similar_polydisperse(spec.model, draw.params, q, draw.polydispersity)
    floor = 1e-30 * max(float(np.max(values)), 1e-300)
    return np.maximum(values, floor)


def self_similar_polydisperse(model: str, params: dict[str, float], q: np.ndarray, pd: float) -> np.ndarray:
    """Self-similar size polydispersity from one monodisperse sasmodels evaluation.

    Every length is scaled by s ~ Gaussian(1, pd) (number distribution, ±3 sigma,
    s > 0.1). I(q) = Σ n_i s_i^6 I_mono(s_i q) / Σ n_i s_i^3 with I_mono
    evaluated on a log grid spanning q·s and interpolated in log-log.
    """
    if pd <= 0:
        return call_model(model, q, params)
    s = np.linspace(max(1 - 3 * pd, 0.1), 1 + 3 * pd, SELF_SIMILAR_PD_POINTS)
    weights = np.exp(-0.5 * ((s - 1) / pd) ** 2)
    lo, hi = q[0] * s[0], q[-1] * s[-1]
    n_grid = max(int(math.ceil(math.log10(hi / lo) * SELF_SIMILAR_POINTS_PER_DECADE)), 16)
    grid = np.exp(np.linspace(math.log(lo), math.log(hi), n_grid))
    mono = np.maximum(call_model(model, grid, params), 1e-300)
    log_grid, log_mono = np.log(grid), np.log(mono)
    log_q = np.log(q)
    total = np.zeros_like(q)
    for s_i, w_i in zip(s, weights):
        total += w_i * s_i**6 * np.exp(np.interp(log_q + math.log(s_i), log_grid, log_mono))
    return total / float(np.sum(weights * s**3))
