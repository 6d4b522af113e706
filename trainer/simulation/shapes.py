"""Catalogue of sasmodels form factors and their parameter samplers.

Every shape is a well-kept sasmodels model. A sampler receives a *target radius
of gyration* (in Å) chosen by the caller so that the particle's Guinier knee,
q ≈ 1/Rg, lands inside the simulated q-window, and returns sasmodels parameters
that give (approximately) that Rg. The exact knee position is then measured on
the evaluated curve (:func:`criteria.knee_position`), so the Rg formulas only
need to be good enough to place the knee.

Polydispersity
--------------
* Shapes without orientation averaging (spheres and shells, multi-shell
  onions, vesicles, Gaussian coil, flexible cylinders) use sasmodels' own polydispersity
  (Gaussian, Schulz, lognormal, rectangle or Boltzmann, 21 points) on one
  size parameter: monodisperse (deep minima) for 15 % of the draws, else 2
  to 30 %. Chains without a size distribution in sasmodels (polymer micelle,
  excluded-volume chain, star polymer, Guinier-Porod, Ornstein-Zernike) are monodisperse.
* Orientation-averaged shapes (ellipsoid, rod and disc cylinders, core-shell
  cylinder, core-shell bicelle, hollow cylinder, parallelepiped, stacked discs,
  pearls; triaxial ellipsoid and parallelepiped cost 6-13 ms and are drawn a third
  as often, elliptical and capped cylinders 10-15 ms and a tenth as often) cost about 1 ms per monodisperse call on 200 q
  points and ×n_pd with one polydisperse parameter (10-20 ms, see
  measured here), far beyond the simulation budget of about
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
from sasmodels import details as sas_details
from sasmodels import direct_model as sas_direct

#: Number of size samples for sasmodels polydispersity (Gaussian, ±3 sigma).
PD_POINTS = 21
#: sasmodels size distributions drawn for shapes with sasmodels polydispersity.
PD_DISTRIBUTIONS = ("gaussian", "schulz", "lognormal", "rectangle", "boltzmann")
#: Probability that a shape with sasmodels polydispersity is drawn monodisperse (deep form-factor minima).
MONODISPERSE_FRACTION = 0.15
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


@functools.lru_cache(maxsize=None)
def _call_details(name: str, lengths: tuple[int, ...]) -> sas_details.CallDetails:
    """sasmodels' CallDetails of model ``name`` for polydispersity lengths ``lengths`` (read-only, shared by calls)."""
    length = np.array(lengths, dtype=int)
    offset = np.cumsum(np.hstack((0, length)))
    return sas_details.make_details(load_model(name).info, length, offset[:-1], int(offset[-1]))


def _kernel_args(name: str, kernel, mesh) -> tuple[sas_details.CallDetails, np.ndarray, bool]:
    """:func:`sasmodels.details.make_kernel_args` with the CallDetails cached per (model, dispersity lengths).

    Builds the same value vector (scalars, dispersity, weights, zero padding to
    32) in the kernel's dtype; about 45 µs less per call than sasmodels' version,
    whose hstack and make_details dominate a call on 200 q points.
    """
    parameters = kernel.info.parameters
    npars, nvalues = parameters.npars, parameters.nvalues
    active = mesh[sas_details.NUM_COMMON_PARS:npars + sas_details.NUM_COMMON_PARS]
    lengths = tuple(len(weight) for _, _, weight in active)
    details = _call_details(name, lengths)
    data_len = nvalues + 2 * sum(lengths)
    extra = (32 - data_len % 32) % 32
    if all(n == 1 for n in lengths):
        flat = [value for value, _, _ in mesh]
        flat += [float(dispersity[0]) for _, dispersity, _ in active]
        flat += [float(weight[0]) for _, _, weight in active]
        flat += [0.0] * extra
        data = np.array(flat, dtype=kernel.dtype)
    else:
        data = np.hstack(([value for value, _, _ in mesh],) + tuple(d for _, d, _ in active)
                         + tuple(w for _, _, w in active) + sas_details.ZEROS[:extra]).astype(kernel.dtype)
    magnetic = sas_details.convert_magnetism(parameters, data)
    return details, data, magnetic


def call_model(name: str, q: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """Evaluate sasmodels model ``name`` on q (1/Å, shape (points,)) with scale 1, background 0.

    Calls the compiled kernel directly (no DirectModel per curve), with the
    same mesh and value vector as :func:`sasmodels.direct_model.call_kernel`
    (same result, bit for bit) but sasmodels' call details cached
    (:func:`_kernel_args`). Returns shape (points,).
    """
    kernel = load_model(name).make_kernel([np.ascontiguousarray(q, dtype=np.float64)])
    try:
        pars = {"scale": 1.0, "background": 0.0, **params}
        mesh = sas_direct.get_mesh(kernel.info, pars, dim=kernel.dim)
        details, values, magnetic = _kernel_args(name, kernel, mesh)
        return np.asarray(kernel(details, values, 0.0, magnetic), dtype=np.float64)
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
    #: Relative probability of being drawn (kernels of several ms are drawn less often).
    weight: float = 1.0
    #: Shape family, for leave-family-out tests: "sphere", "ellipsoid", "cylinder", "chain", "generic".
    family: str = "sphere"


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


def _hollow_shell(rg: float, rng: np.random.Generator) -> dict[str, float]:
    """A protein or silica shell around a solvent-like core (apoferritin, hollow nanoparticles)."""
    ratio = float(rng.uniform(0.45, 0.85))  # inner / outer radius
    factor = math.sqrt(0.6 * (1 - ratio**5) / (1 - ratio**3))
    outer = rg / factor
    solvent = float(rng.uniform(-0.5, 6.4))
    shell = solvent + float(rng.uniform(0.5, 6.0)) * (1 if rng.random() < 0.5 else -1)
    return {"radius": outer * ratio, "thickness": outer * (1 - ratio), "sld_core": solvent + float(rng.uniform(-0.1, 0.25)) * (shell - solvent),
            "sld_shell": shell, "sld_solvent": solvent}


def _multilayer_vesicle(rg: float, rng: np.random.Generator) -> dict[str, float]:
    """An onion-like multilamellar vesicle of 2-6 shells."""
    n_shells = int(rng.integers(2, 7))
    outer = rg / 0.85
    core = outer * float(rng.uniform(0.2, 0.6))
    period = (outer - core) / n_shells
    shell = period * float(rng.uniform(0.3, 0.7))
    sld, solvent = _contrast(rng)
    return {"radius": core, "thick_shell": shell, "thick_solvent": period - shell, "n_shells": float(n_shells),
            "sld": sld, "sld_solvent": solvent, "volfraction": 1.0}


def _core_shell_ellipsoid(rg: float, rng: np.random.Generator) -> dict[str, float]:
    x_core = _log_uniform(rng, 0.25, 4.0)
    shell_fraction = float(rng.uniform(0.05, 0.4))
    x_shell = float(rng.uniform(0.5, 2.0))
    # Outer semi-axes a = Re (1 + f), c = Re (x_core + f x_shell); Rg^2 = (2 a^2 + c^2) / 5.
    a, c = 1 + shell_fraction, x_core + shell_fraction * x_shell
    equat = rg / math.sqrt((2 * a * a + c * c) / 5.0)
    solvent = float(rng.uniform(-0.5, 6.4))
    core = solvent + float(rng.uniform(1.0, 6.0)) * (1 if rng.random() < 0.5 else -1)
    return {"radius_equat_core": equat, "x_core": x_core, "thick_shell": equat * shell_fraction, "x_polar_shell": x_shell,
            "sld_core": core, "sld_shell": solvent + float(rng.uniform(-0.5, 1.0)) * (core - solvent), "sld_solvent": solvent}


def _triaxial_ellipsoid(rg: float, rng: np.random.Generator) -> dict[str, float]:
    b_over_a = _log_uniform(rng, 1.2, 4.0)
    c_over_a = b_over_a * _log_uniform(rng, 1.2, 4.0)
    a = rg / math.sqrt((1 + b_over_a**2 + c_over_a**2) / 5.0)
    sld, solvent = _contrast(rng)
    return {"radius_equat_minor": a, "radius_equat_major": a * b_over_a, "radius_polar": a * c_over_a, "sld": sld, "sld_solvent": solvent}


def _parallelepiped(rg: float, rng: np.random.Generator) -> dict[str, float]:
    b_over_a = _log_uniform(rng, 1.0, 5.0)
    c_over_a = b_over_a * _log_uniform(rng, 1.0, 10.0)
    a = rg / math.sqrt((1 + b_over_a**2 + c_over_a**2) / 12.0)
    sld, solvent = _contrast(rng)
    return {"length_a": a, "length_b": a * b_over_a, "length_c": a * c_over_a, "sld": sld, "sld_solvent": solvent}


def _hollow_cylinder(rg: float, rng: np.random.Generator) -> dict[str, float]:
    """Nanotubes, hollow fibres: sasmodels' ``radius`` is the core (hole) radius."""
    inner = float(rng.uniform(0.3, 0.9))
    length_over_radius = _log_uniform(rng, 1.0, 30.0)
    outer = rg / math.sqrt((1 + inner**2) / 2.0 + length_over_radius**2 / 12.0)
    sld, solvent = _contrast(rng)
    return {"radius": outer * inner, "thickness": outer * (1 - inner), "length": outer * length_over_radius,
            "sld": sld, "sld_solvent": solvent}


def _pearls(rg: float, rng: np.random.Generator) -> tuple[float, float, int]:
    """(pearl radius, edge separation, number of pearls) of a chain of pearls with radius of gyration rg."""
    n = int(rng.integers(2, 11))
    sep_over_r = _log_uniform(rng, 0.3, 4.0)
    rel = math.sqrt(0.6 + (2 + sep_over_r) ** 2 * (n * n - 1) / 12.0)
    radius = rg / rel
    return radius, radius * sep_over_r, n


def _pearl_necklace(rg: float, rng: np.random.Generator) -> dict[str, float]:
    radius, sep, n = _pearls(rg, rng)
    sld, solvent = _contrast(rng)
    return {"radius": radius, "edge_sep": sep, "num_pearls": float(n), "thick_string": radius * float(rng.uniform(0.05, 0.3)),
            "sld": sld, "sld_string": solvent + float(rng.uniform(0.2, 1.0)) * (sld - solvent), "sld_solvent": solvent}


def _linear_pearls(rg: float, rng: np.random.Generator) -> dict[str, float]:
    radius, sep, n = _pearls(rg, rng)
    sld, solvent = _contrast(rng)
    return {"radius": radius, "edge_sep": sep, "num_pearls": float(n), "sld": sld, "sld_solvent": solvent}


def _star_polymer(rg: float, rng: np.random.Generator) -> dict[str, float]:
    return {"rg_squared": rg * rg, "arms": float(rng.integers(3, 25))}


def _excluded_volume_chain(rg: float, rng: np.random.Generator) -> dict[str, float]:
    """A polymer in good (Porod exponent 5/3) to theta (2) solvent, or a partly collapsed one."""
    return {"rg": rg, "porod_exp": float(rng.uniform(1.6, 3.0))}


def _flexible_elliptical(rg: float, rng: np.random.Generator) -> dict[str, float]:
    """Worm-like micelles with an elliptical cross-section."""
    params = _flexible_cylinder(rg, rng)
    params["axis_ratio"] = float(rng.uniform(1.0, 3.0))
    return params


def _guinier_porod(rg: float, rng: np.random.Generator) -> dict[str, float]:
    """The generic Guinier-Porod shape (Hammouda): a knee, then a power law, any dimensionality."""
    s = float(rng.uniform(0.0, 0.45))  # above ~0.5 the low-q slope hides the knee
    return {"rg": rg, "s": s, "porod_exp": float(rng.uniform(max(3.0, s + 1.0), 4.3))}


def _core_multi_shell(rg: float, rng: np.random.Generator) -> dict[str, float]:
    """Onion-like particles of 2-4 concentric shells of independent contrast (multishell nanoparticles, liposomes with coats)."""
    n = int(rng.integers(2, 5))
    outer = rg / SPHERE_RG
    core_fraction = float(rng.uniform(0.3, 0.8))
    solvent = float(rng.uniform(-0.5, 6.4))
    params: dict[str, float] = {"radius": outer * core_fraction, "n": float(n), "sld_solvent": solvent,
                                "sld_core": solvent + float(rng.uniform(0.5, 6.0)) * (1 if rng.random() < 0.5 else -1)}
    cuts = np.sort(rng.uniform(0.0, 1.0, n - 1))
    widths = np.diff(np.concatenate([[0.0], cuts, [1.0]])) * outer * (1 - core_fraction)
    for i, width in enumerate(widths, start=1):
        params[f"thickness{i}"] = float(max(width, 1.0))
        params[f"sld{i}"] = solvent + float(rng.uniform(-6.0, 6.0))
    return params


def _multi_shell_outer(p: dict[str, float]) -> float:
    return p["radius"] + sum(p[f"thickness{i}"] for i in range(1, int(p["n"]) + 1))


def _elliptical_cylinder(rg: float, rng: np.random.Generator) -> dict[str, float]:
    """Ribbons and flattened rods: elliptical cross-section, axis ratio 1.5-5."""
    ratio = _log_uniform(rng, 1.5, 5.0)
    length_over_minor = _log_uniform(rng, 3.0, 40.0)
    minor = rg / math.sqrt((1 + ratio**2) / 4.0 + length_over_minor**2 / 12.0)
    sld, solvent = _contrast(rng)
    return {"radius_minor": minor, "axis_ratio": ratio, "length": minor * length_over_minor, "sld": sld, "sld_solvent": solvent}


def _capped_cylinder(rg: float, rng: np.random.Generator) -> dict[str, float]:
    """Spherocylinders (rods with spherical caps, e.g. bacteria-like or rod micelles)."""
    radius, length = _cylinder_from(rg, _log_uniform(rng, 1.0, 20.0))
    sld, solvent = _contrast(rng)
    return {"radius": radius, "radius_cap": radius * float(rng.uniform(1.0, 1.5)), "length": length,
            "sld": sld, "sld_solvent": solvent}


def _stacked_disks(rg: float, rng: np.random.Generator) -> dict[str, float]:
    """Short stacks of 2-8 coated discs (clay tactoids, stacked bilayers)."""
    n = int(rng.integers(2, 9))
    radius = rg / math.sqrt(0.5 + (n * 0.15) ** 2 / 12.0) * float(rng.uniform(0.8, 1.0))
    core = radius * float(rng.uniform(0.03, 0.12))
    solvent = float(rng.uniform(-0.5, 6.4))
    sld_core = solvent + float(rng.uniform(1.0, 6.0)) * (1 if rng.random() < 0.5 else -1)
    return {"thick_core": core, "thick_layer": core * float(rng.uniform(0.2, 1.0)), "radius": radius, "n_stacking": float(n),
            "sigma_d": core * float(rng.uniform(0.0, 0.3)), "sld_core": sld_core,
            "sld_layer": solvent + float(rng.uniform(-0.5, 1.0)) * (sld_core - solvent), "sld_solvent": solvent}


def _lorentz(rg: float, rng: np.random.Generator) -> dict[str, float]:
    """Ornstein-Zernike: polymer solutions and gels seen through one correlation length (Rg^2 = 3 xi^2 at low q)."""
    return {"cor_length": rg / math.sqrt(3.0)}


def _volume_radius(*axes: float) -> float:
    return float(np.prod(axes)) ** (1.0 / len(axes))


SHAPES: tuple[ShapeSpec, ...] = (
    # spheres and shells
    ShapeSpec("sphere", "sphere", _sphere, "radius", compact=True, outer_radius=lambda p: p["radius"]),
    ShapeSpec("core_shell_sphere", "core_shell_sphere", _core_shell_sphere, "radius", compact=True,
              outer_radius=lambda p: p["radius"] + p["thickness"]),
    ShapeSpec("hollow_shell", "core_shell_sphere", _hollow_shell, "radius", compact=True,
              outer_radius=lambda p: p["radius"] + p["thickness"]),
    ShapeSpec("fuzzy_sphere", "fuzzy_sphere", _fuzzy_sphere, "radius", compact=True,
              outer_radius=lambda p: p["radius"] + 2 * p["fuzziness"]),
    ShapeSpec("vesicle", "vesicle", _vesicle, "radius", compact=True,
              outer_radius=lambda p: p["radius"] + p["thickness"]),
    ShapeSpec("multilayer_vesicle", "multilayer_vesicle", _multilayer_vesicle, "radius", compact=True,
              outer_radius=lambda p: p["radius"] + p["n_shells"] * (p["thick_shell"] + p["thick_solvent"]) - p["thick_solvent"]),
    ShapeSpec("polymer_micelle", "polymer_micelle", _polymer_micelle, None, compact=True,
              outer_radius=lambda p: p["radius_core"] + 2 * p["rg"]),
    ShapeSpec("core_multi_shell", "core_multi_shell", _core_multi_shell, "radius", compact=True, outer_radius=_multi_shell_outer),
    # ellipsoids
    ShapeSpec("ellipsoid", "ellipsoid", _ellipsoid, None, orientation_averaged=True, compact=True,
              outer_radius=lambda p: _volume_radius(p["radius_polar"], p["radius_equatorial"], p["radius_equatorial"]),
              family="ellipsoid"),
    ShapeSpec("core_shell_ellipsoid", "core_shell_ellipsoid", _core_shell_ellipsoid, None, orientation_averaged=True,
              compact=True, family="ellipsoid",
              outer_radius=lambda p: _volume_radius(p["radius_equat_core"] + p["thick_shell"], p["radius_equat_core"] + p["thick_shell"],
                                                    p["radius_equat_core"] * p["x_core"] + p["thick_shell"] * p["x_polar_shell"])),
    ShapeSpec("triaxial_ellipsoid", "triaxial_ellipsoid", _triaxial_ellipsoid, None, orientation_averaged=True,
              weight=0.35, family="ellipsoid"),
    # cylinders, discs, boxes
    ShapeSpec("rod", "cylinder", _rod, None, orientation_averaged=True, family="cylinder"),
    ShapeSpec("disc", "cylinder", _disc, None, orientation_averaged=True, family="cylinder"),
    ShapeSpec("core_shell_cylinder", "core_shell_cylinder", _core_shell_cylinder, None, orientation_averaged=True, family="cylinder"),
    ShapeSpec("hollow_cylinder", "hollow_cylinder", _hollow_cylinder, None, orientation_averaged=True, family="cylinder"),
    ShapeSpec("core_shell_bicelle", "core_shell_bicelle", _bicelle, None, orientation_averaged=True, family="cylinder"),
    ShapeSpec("parallelepiped", "parallelepiped", _parallelepiped, None, orientation_averaged=True, weight=0.35, family="cylinder"),
    ShapeSpec("elliptical_cylinder", "elliptical_cylinder", _elliptical_cylinder, None, orientation_averaged=True, weight=0.1,
              family="cylinder"),
    ShapeSpec("capped_cylinder", "capped_cylinder", _capped_cylinder, None, orientation_averaged=True, weight=0.1, family="cylinder"),
    ShapeSpec("stacked_disks", "stacked_disks", _stacked_disks, None, orientation_averaged=True, weight=0.5, family="cylinder"),
    # chains, worms, pearls
    ShapeSpec("mono_gauss_coil", "mono_gauss_coil", _gauss_coil, "rg", family="chain"),
    ShapeSpec("polymer_excl_volume", "polymer_excl_volume", _excluded_volume_chain, None, family="chain"),
    ShapeSpec("star_polymer", "star_polymer", _star_polymer, None, family="chain"),
    ShapeSpec("flexible_cylinder", "flexible_cylinder", _flexible_cylinder, "length", family="chain"),
    ShapeSpec("flexible_cylinder_elliptical", "flexible_cylinder_elliptical", _flexible_elliptical, "length", weight=0.5,
              family="chain"),
    ShapeSpec("pearl_necklace", "pearl_necklace", _pearl_necklace, None, orientation_averaged=True, family="chain"),
    ShapeSpec("linear_pearls", "linear_pearls", _linear_pearls, None, orientation_averaged=True, family="chain"),
    # generic
    ShapeSpec("guinier_porod", "guinier_porod", _guinier_porod, None, family="generic"),
    ShapeSpec("lorentz", "lorentz", _lorentz, None, weight=0.6, family="generic"),
)

SHAPES_BY_NAME: dict[str, ShapeSpec] = {s.name: s for s in SHAPES}

#: Shapes usable with a hard-sphere or Hayter-MSA structure factor (roughly spherical).
COMPACT_SHAPES: tuple[ShapeSpec, ...] = tuple(s for s in SHAPES if s.compact)
#: Shape families (leave-family-out tests train without one and test on it).
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(s.family for s in SHAPES))


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


_PROBABILITIES: dict[int, tuple[tuple[ShapeSpec, ...], np.ndarray]] = {}


def _draw_probabilities(specs: tuple[ShapeSpec, ...]) -> np.ndarray:
    """Drawing probabilities of ``specs`` (weights / their sum), computed once per tuple of specs."""
    cached = _PROBABILITIES.get(id(specs))
    if cached is None or cached[0] is not specs:
        weights = np.array([s.weight for s in specs])
        cached = _PROBABILITIES[id(specs)] = (specs, weights / weights.sum())
    return cached[1]


def draw_shape(rg: float, rng: np.random.Generator, specs: tuple[ShapeSpec, ...] = SHAPES,
               max_polydispersity: float = 0.3) -> ShapeDraw:
    """Pick a shape from ``specs`` (by ``weight``) and sample its parameters for a target Rg (Å).

    Size polydispersity: 0 for shapes without a size (coils, stars, the polymer
    micelle); otherwise monodisperse with probability :data:`MONODISPERSE_FRACTION`
    for shapes with sasmodels polydispersity (deep minima), else uniform from 2 %
    (5 % for self-similar polydispersity) to ``max_polydispersity``.
    """
    spec = specs[int(rng.choice(len(specs), p=_draw_probabilities(specs)))]
    params = spec.sample(rg, rng)
    low = SELF_SIMILAR_MIN_PD if spec.orientation_averaged else 0.02
    if spec.pd_parameter is None and not spec.orientation_averaged:
        pd = 0.0
    elif not spec.orientation_averaged and rng.random() < MONODISPERSE_FRACTION:
        pd = 0.0
    else:
        pd = float(rng.uniform(low, max_polydispersity))
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
    # All size samples in one interpolation, shape (samples, points); then the
    # weighted sum over samples, row by row in order (the same sum as a loop).
    log_s = np.array([math.log(s_i) for s_i in s])
    shifted = np.exp(np.interp((log_q[None, :] + log_s[:, None]).ravel(), log_grid, log_mono)).reshape(s.size, q.size)
    coefficients = np.array([w_i * s_i**6 for s_i, w_i in zip(s, weights)])
    # np.add.reduce over axis 0 adds the rows one after the other, as the loop did.
    total = np.add.reduce(coefficients[:, None] * shifted, axis=0)
    return total / float(np.sum(weights * s**3))
