"""Per-class generators of labelled curves, with rejection sampling; the public entry point.

:func:`simulate_curve` (label, rng) -> :class:`SimulatedCurve` draws a random
instrument (:mod:`.instrument`), one or two shapes (:mod:`.shapes`) and the
class's anomaly, evaluates every component with sasmodels, smears, adds
counting noise, and keeps the draw only if the class's visibility criterion
(:mod:`.criteria`, thresholds from ``docs/taxonomy.md``) holds inside the
q-window; otherwise the whole draw is repeated. ``clean`` curves must keep
the Guinier knee inside the window and fail every anomaly criterion.

How each class is built (simulator 2.0)
--------------------------------------
* clean: one population, one of 24 sasmodels form factors (spheres, shells,
  ellipsoids, cylinders, boxes, chains, pearls, worms, Guinier-Porod; see
  :mod:`.shapes`), size polydispersity 0 (deep minima) to 30 %, five
  sasmodels distributions.
* aggregation: clean + sasmodels ``power_law``, ``mass_fractal`` or
  ``surface_fractal`` scaled to 2-200x the clean intensity at q_min, or for
  30 % of the curves (simulator 2.4) a strong upturn of 200x-10^5x that
  dominates the low-q decades (metals, cements, porous solids in USAXS); the
  particle must still hold >= 75 % of I at its knee (otherwise the curve is
  a bare power law, which the taxonomy calls ambiguous).
* interparticle: a compact shape times a sasmodels structure factor
  (``hardsphere``, ``hayter_msa``, ``stickyhardsphere``, ``squarewell``;
  decoupling approximation, evaluated separately so that S(q) is available
  to the criterion), volume fraction 0.1-0.5.
* ordered: either sasmodels ``lamellar_stack_paracrystal`` (lamellar phase,
  15 %; underlying curve: the same bilayers without interference, i.e.
  sasmodels ``lamellar`` divided by the thickness, which equals the stack
  model with one layer), or a clean curve plus Bragg peaks from sasmodels
  ``gaussian_peak``/``peak_lorentz`` placed at the ratios of a lamellar,
  hexagonal, simple-cubic, bcc, fcc, Pn3m, Ia3d or Im3m lattice, half of
  them with paracrystalline broadening of the higher orders. The 3D
  paracrystal models (``bcc_paracrystal`` ...) are not used: measured here
  they take 0.4-1.1 s per call (orientation averaging), about 300x the whole
  per-curve budget; peak models also give direct control of width, position
  ratios and height.
* bimodal: two shapes with Rg ratio 3-20, relative amplitude drawn inside
  the interval where each population holds >= 60 % of I at its own knee,
  and a visible shoulder: between the knees the smoothed log-log slope
  flattens again (rises by >= 0.6 to >= -0.9) on the small population's
  plateau. Without it a clean long rod, disc or coil (length knee, then
  cross-section knee) looks the same.
* oversubtracted: clean with a flat background over-subtracted by δ, chosen
  so the noise-free curve crosses zero in the last 12-60 % of the window.
* artefact (:func:`_apply_artefact`; no sasmodels model exists for reduction
  faults): isolated spikes, a multiplicative step between merged detector
  segments, a beamstop shadow, parasitic scattering, one to four bad points
  at the beamstop edge, an empty-cell/capillary subtraction residue.

Visibility and mixtures (taxonomy version 2)
--------------------------------------------
Every anomaly present must move at least 5 points (3 for spikes, 1 for
beamstop-edge points, which the taxonomy names as "a single point or a few
points") by more than 4σ and by more than 20 % of its clean counterpart
(:func:`.criteria.visibility_score`); for ``bimodal`` no single population,
best scaled, may explain the curve by that test. A draw that fails is
redrawn. With probability :data:`MIXTURE_PROBABILITY` an anomalous curve
gets one or two secondary anomalies (:data:`SECONDARY_ANOMALIES`:
aggregation, over-subtraction, artefacts laid on the finished curve, the
counting noise following the added intensity); each must be visible on its
own, and the label is the most visible anomaly. The primary anomaly's score
is re-measured after additive secondaries; a mixture that hides it is
dropped for the single-anomaly curve.

Reported uncertainties (simulator 2.4)
--------------------------------------
Last of all, the dI the file reports is drawn (:func:`reported_uncertainties`,
:data:`.specs.REPORTED_UNCERTAINTIES`): the true counting noise for 60 % of
curves, off by one factor (0.03x to 30x) for 30 %, missing for 10 % -- real
reductions disagree with their own scatter by far more. The noise in the
curve and every visibility test use the true noise (``components["noise_sigma"]``
of :func:`simulate`).

Every range drawn from is in the class's parameter table, :mod:`.specs`.
All internal q are in 1/Å; the stored curve is converted to its random unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES, class_index

from . import criteria as crit, specs
from .instrument import Instrument, counting_noise, draw_instrument, interpolate_loglog
from .record import SimulatedCurve
from .shapes import COMPACT_SHAPES, SHAPES, ShapeDraw, ShapeSpec, call_model, draw_shape, evaluate_shape, load_model
from .specs import LATTICES, log_uniform as _log_uniform

#: Bump whenever the physics of the simulation changes.
SIMULATOR_VERSION = "2.5.0"
#: Draws tried per curve before giving up (a bug, not bad luck, if reached).
MAX_ATTEMPTS = 500


class Rejected(Exception):
    """A draw whose anomaly (or cleanliness) is not visible in its window; it is redrawn."""


@dataclass
class Draft:
    """A draw in progress: noise-free components on the data q (1/Å) and bookkeeping."""

    instrument: Instrument
    params: dict[str, float | str] = field(default_factory=dict)
    criteria: dict[str, float] = field(default_factory=dict)
    components: dict[str, np.ndarray] = field(default_factory=dict)


#: What a class generator returns: the draft, the noise-free and noisy curves and dI, shape (points,).
Outcome = tuple[Draft, np.ndarray, np.ndarray, np.ndarray]


@dataclass
class Simulation:
    """A simulated curve with its noise-free components on the measured q (1/Å).

    ``components["expected"]`` is the noise-free measured curve; other keys
    depend on the class (``particle``, ``clean``, ``aggregate``,
    ``structure_factor``, ``without_peaks``, ``large``, ``small``...).
    """

    curve: SimulatedCurve
    components: dict[str, np.ndarray]


# ----------------------------------------------------------------------------- helpers


def _place_rg(instrument: Instrument, rng: np.random.Generator, position: specs.Parameter = specs.KNEE_POSITION) -> float:
    """An Rg (Å) whose knee q ≈ 0.87/Rg sits at a random log-position of the window, drawn from ``position``."""
    q = instrument.q
    u = position.draw(rng)
    return 0.87 / (q[0] * (q[-1] / q[0]) ** u)


def _smear(instrument: Instrument, grid: np.ndarray, values: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    """Interpolate a smooth component from the model grid onto q_calc, add ``extra`` (on q_calc), smear."""
    theory = interpolate_loglog(grid, values, instrument.q_calc)
    if extra is not None:
        theory = theory + extra
    return instrument.resolution.apply(theory)


def _particle(instrument: Instrument, rng: np.random.Generator, specs: tuple[ShapeSpec, ...] = SHAPES, require_knee: bool = True,
              rg: float | None = None) -> tuple[ShapeDraw, np.ndarray, np.ndarray, dict[str, float]]:
    """Draw and evaluate one population. Returns (draw, grid, I on grid, knee criteria)."""
    shape = draw_shape(rg if rg is not None else _place_rg(instrument, rng), rng, specs)
    grid = instrument.model_grid()
    values = evaluate_shape(shape, grid)
    if not np.all(np.isfinite(values)):
        raise Rejected("non-finite model")
    on_q = interpolate_loglog(grid, values, instrument.q)
    position, q_knee = crit.knee_position(instrument.q, on_q)
    if require_knee and not crit.knee_inside(position):
        raise Rejected("knee outside the window")
    return shape, grid, values, {"knee_position": position, "knee_q": q_knee}


def _finish(draft: Draft, signal: np.ndarray, rng: np.random.Generator, *, offset: float = 0.0,
            force_background: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Add background, scale and counting noise to a smeared noise-free signal on the data q.

    ``offset`` (same scale as ``signal``) is subtracted on top of the true
    background (over-subtraction); ``force_background`` overrides the
    instrument's background mode ("flat" or "subtracted") and is recorded.
    Returns (expected, noisy, dI, scale): the noise-free and noisy curves and
    their one-sigma uncertainty, shape (points,), after multiplying by the
    random overall ``scale``.
    """
    inst = draft.instrument
    if force_background is not None:
        inst.background_mode = force_background
    mode = inst.background_mode
    peak = float(np.max(signal))
    if not peak > 0 or not np.all(np.isfinite(signal)):
        raise Rejected("signal not positive")
    scale = specs.INTENSITY["intensity_scale"].draw(rng) / peak
    signal = signal * scale
    offset = offset * scale
    background = inst.background_ratio * peak * scale
    gross = signal + background
    reference = float(np.max(gross))
    d_i = counting_noise(inst, gross, reference)
    expected = signal + (background if mode == "flat" else 0.0) - offset
    noisy = expected + rng.normal(0.0, 1.0, size=expected.shape) * d_i
    draft.components["gross"] = gross
    draft.params["intensity_scale"] = scale
    draft.params["background"] = background if mode == "flat" else 0.0
    draft.params["true_background"] = background
    draft.criteria.setdefault("relative_error_at_max", float(d_i[np.argmax(gross)] / gross[np.argmax(gross)]))
    return expected, noisy, d_i, scale


def _clean_checks(draft: Draft, expected: np.ndarray, noisy: np.ndarray, d_i: np.ndarray) -> None:
    """Reject a draw that shows, by chance, an anomaly it is not meant to have.

    Used for clean curves and for every class whose own anomaly is not a
    negative run or spikes: no trailing negative run in the noisy data, no
    >= 5 sigma point, no negative noise-free intensity. One curve, one class.
    """
    run = crit.trailing_negative_run_fraction(noisy, d_i)
    spikes = crit.spike_count(noisy, expected, d_i)
    draft.criteria["negative_run_fraction"] = run
    draft.criteria["spike_count"] = float(spikes)
    if run >= crit.NEGATIVE_MIN_RUN_FRACTION or spikes > 0 or np.any(expected < 0):
        raise Rejected("clean draw looks anomalous")


# ----------------------------------------------------------------------------- classes


def _one_population(rng: np.random.Generator, spec: specs.ClassSpec) -> tuple[Draft, ShapeDraw, np.ndarray, np.ndarray, np.ndarray]:
    """The start of a class built on one clean population: an instrument, a particle whose knee sits where
    ``spec["knee_position"]`` says, its smeared signal. Returns (draft, shape, model grid, I on the grid, smeared I)."""
    inst = draw_instrument(rng)
    draft = Draft(inst)
    shape, grid, values, knee = _particle(inst, rng, rg=_place_rg(inst, rng, spec["knee_position"]))
    draft.params.update(shape.record())
    draft.criteria.update(knee)
    return draft, shape, grid, values, _smear(inst, grid, values)


def _clean(rng: np.random.Generator) -> Outcome:
    draft, shape, grid, values, smeared = _one_population(rng, specs.CLEAN)
    inst = draft.instrument
    expected, noisy, d_i, scale = _finish(draft, smeared, rng)
    _clean_checks(draft, expected, noisy, d_i)
    draft.components["particle"] = interpolate_loglog(grid, values, inst.q) * scale
    if rng.random() < NEAR_MISS_PROBABILITY:
        m = _measured(draft, expected, noisy, d_i)
        if _near_miss(m, draft, shape, rng):
            return draft, m.expected, m.noisy, m.d_i
    return draft, expected, noisy, d_i


# ----------------------------------------------------------------------------- near misses

#: Share of clean curves that carry an anomaly just below the visibility line of docs/taxonomy.md.
#: An anomaly counts only if a person could see it: a weak low-q rise over two or three points,
#: one spike, a 10 % step, a slightly low point at the beamstop edge is still ``clean``. Without
#: such curves the network learns "any hint of an upturn is aggregation" (real data: conalbumin).
NEAR_MISS_PROBABILITY = specs.CLEAN["near_miss"].probability
#: Kinds of near miss and how often each is drawn (their tables: :data:`.specs.NEAR_MISSES`).
NEAR_MISS_KINDS: dict[str, float] = specs.weights(specs.NEAR_MISSES)
#: Tries per near miss before the clean curve goes without one.
NEAR_MISS_ATTEMPTS = 4


def _lay_near_miss(kind: str, m: Measured, draft: Draft, shape: ShapeDraw, rng: np.random.Generator) -> None:
    """Put a sub-threshold anomaly of ``kind`` on a clean measured curve (in place); raise Rejected if it would be visible."""
    inst, q = m.instrument, m.instrument.q
    n = q.size
    background = float(draft.params["background"])
    signal = m.expected - background
    before = m.expected.copy()
    kind_points = crit.VISIBLE_MIN_POINTS
    table = specs.NEAR_MISSES[kind] if kind in specs.NEAR_MISSES else None
    if kind == "weak_upturn":
        grid = inst.model_grid()
        values, _ = _aggregate_component(rng, grid, float(q[0]), shape.rg_target)
        agg = _smear(inst, grid, values)
        if not (signal[0] > 0 and agg[0] > 1e-250):
            raise Rejected("no upturn possible")
        agg = agg * table["excess_at_q_min"].draw(rng) * signal[0] / agg[0]
        ratio, slope = crit.upturn(q, signal, agg)
        if crit.aggregation_visible(ratio, slope):
            raise Rejected("upturn would be visible")
        m.add(agg)
        draft.criteria["near_miss_upturn_ratio"] = ratio
    elif kind == "short_upturn":
        # A strong rise at the first points only (coarse low-q sampling, a large aggregate's knee at q_min):
        # the ratio at q_min may pass 2x, but it moves fewer points than an upturn needs (checked below).
        grid = inst.model_grid()
        rg = table["q_min_rg"].draw(rng) / float(q[0])
        agg = _smear(inst, grid, np.maximum(np.exp(-((grid * rg) ** 2) / 3.0), 1e-300))
        if not (signal[0] > 0 and agg[0] > 1e-250):
            raise Rejected("no upturn possible")
        agg = agg * table["excess_at_q_min"].draw(rng) * signal[0] / agg[0]
        # Halve it until it moves fewer points than an upturn needs; what is left must still double q_min.
        while crit.visibility_score(m.expected + agg, before, m.d_i) >= kind_points and agg[0] >= signal[0]:
            agg = agg * 0.5
        if agg[0] < signal[0]:
            raise Rejected("no short upturn reaches 2x at q_min")
        m.add(agg)
        draft.criteria["near_miss_upturn_ratio"] = float(crit.upturn(q, signal, agg)[0])
    elif kind == "weak_structure":
        # Sphere-equivalent radius from Rg (R = sqrt(5/3) Rg) for shapes without a hard-sphere radius.
        radius = shape.spec.outer_radius(shape.params) if shape.spec.outer_radius else math.sqrt(5 / 3) * shape.rg_target
        pars = table.draw(rng, radius=radius)
        s_q = call_model("hardsphere", q, pars)
        if not np.all(np.isfinite(s_q)) or np.any(s_q <= 0):
            raise Rejected("structure factor failed")
        s_min, s_peak = crit.structure_factor_extremes(s_q)
        if crit.interparticle_visible(s_min, s_peak):
            raise Rejected("S(q) would be visible")
        m.add(signal * (s_q - 1.0))
        draft.criteria["near_miss_s_q_min"] = s_min
    elif kind == "minor_population":
        other = draw_shape(shape.rg_target * table["rg_ratio"].draw(rng) ** (1 if table["smaller"].draw(rng) else -1), rng)
        grid = inst.model_grid()
        term = _smear(inst, grid, evaluate_shape(other, grid))
        if not np.all(np.isfinite(term)) or not np.max(term) > 0:
            raise Rejected("second population failed")
        # Scaled to reach 0.5-6 sigma at its strongest point: near, not across, the visibility line.
        term = term / np.max(term / m.d_i) * table["peak_sigma"].draw(rng)
        m.add(term)
        draft.params.update(other.record("near_miss_"))
    elif kind == "few_spikes":
        k = table["count"].draw(rng)
        idx = rng.choice(np.arange(2, n - 2), size=k, replace=False)
        extra = m.extra.copy()
        extra[idx] += np.where(table["upward"].draw(rng, k), 1.0, -1.0) * np.maximum(
            table["size_sigma"].draw(rng, k) * m.d_i[idx], table["size_relative"].draw(rng, k) * np.abs(m.expected[idx]))
        m.extra = extra
        kind_points = crit.VISIBLE_MIN_SPIKE_POINTS
        if crit.spikes_visible(crit.spike_count(m.noisy, m.expected, m.d_i), n) and k >= kind_points:
            raise Rejected("spikes would be visible")
    elif kind == "small_step":
        first, last = table["boundary"].bounds(n)
        boundary = int(rng.integers(first, max(last, first + 1)))
        m.multiply(table["factor"].draw(rng) ** (1 if table["up"].draw(rng) else -1), boundary)
        if crit.step_factor(m.noisy, before, m.d_i, boundary) >= crit.STEP_MIN_FACTOR:
            raise Rejected("step would be visible")
    elif kind == "edge_point":
        k = table["count"].draw(rng)
        values = m.expected.copy()
        values[:k] = values[:k] * table["factor"].draw(rng, k) ** np.where(table["low"].draw(rng, k), 1.0, -1.0)
        m.expected = values
        kind_points = crit.VISIBLE_MIN_EDGE_POINTS
    elif kind == "low_q_dip":
        affected = max(2, int(round(n * table["affected_fraction"].draw(rng))))
        transmission = np.ones(n)
        t0 = table["transmission"].draw(rng)
        transmission[:affected] = t0 + (1 - t0) * np.arange(affected) / affected
        m.multiply(transmission)
        factor, frac = crit.low_q_distortion(m.expected, before)
        if crit.low_q_artefact_visible(factor, frac):
            raise Rejected("low-q distortion would be visible")
    elif kind == "background_offset":
        floor = float(np.min(m.expected[-max(n // 10, 3):]))
        if not floor > 0:
            raise Rejected("no positive high-q floor")
        m.expected = m.expected - table["fraction"].draw(rng) * floor
    else:
        raise ValueError(f"unknown near-miss kind {kind!r}")
    with_fault = m.noisy - m.z * m.d_i if kind == "few_spikes" else m.expected
    score = crit.visibility_score(with_fault, before, m.d_i)
    if score >= kind_points:
        raise Rejected("near miss would be visible")
    if np.any(m.expected < 0) or crit.trailing_negative_run_fraction(m.noisy, m.d_i) >= crit.NEGATIVE_MIN_RUN_FRACTION:
        raise Rejected("near miss looks over-subtracted")
    if kind != "few_spikes" and crit.spike_count(m.noisy, m.expected, m.d_i):
        raise Rejected("a >= 5 sigma outlier by chance")
    draft.params["near_miss"] = kind
    draft.criteria["near_miss_score"] = float(score)


def _near_miss(m: Measured, draft: Draft, shape: ShapeDraw, rng: np.random.Generator) -> bool:
    """Try to lay a near miss (:data:`NEAR_MISS_KINDS`) on a clean curve; True when one was laid (``m`` changed)."""
    kind = _draw_kind(NEAR_MISS_KINDS, rng)
    laid, _ = _on_a_copy(m, draft, lambda trial: _lay_near_miss(kind, trial, draft, shape, rng), NEAR_MISS_ATTEMPTS)
    return laid


def _aggregate_component(rng: np.random.Generator, grid: np.ndarray, q_min: float, rg: float) -> tuple[np.ndarray, dict[str, float | str]]:
    """An aggregate model of :data:`.specs.AGGREGATES` (drawn by weight) with its parameters, on ``grid``."""
    kind = _draw_kind(AGGREGATE_MODELS, rng)
    pars = specs.AGGREGATES[kind].draw(rng, rg=rg, q_min=q_min)
    values = call_model(kind, grid, pars)
    record: dict[str, float | str] = {"aggregate_model": kind}
    record.update({f"aggregate_{k}": v for k, v in pars.items()})
    return np.maximum(values, 1e-300), record


def _aggregation(rng: np.random.Generator) -> Outcome:
    inst = draw_instrument(rng)
    draft = Draft(inst)
    # Knee in the upper part of the window, leaving room for the upturn below it.
    strong = bool(specs.AGGREGATION["strong_upturn"].draw(rng))
    position = specs.AGGREGATION["strong_knee_position" if strong else "knee_position"]
    shape, grid, values, knee = _particle(inst, rng, rg=_place_rg(inst, rng, position))
    draft.params.update(shape.record())
    draft.criteria.update(knee)
    aggregate, record = _aggregate_component(rng, grid, float(inst.q[0]), shape.rg_target)
    draft.params.update(record)
    clean_s = _smear(inst, grid, values)
    agg_s = _smear(inst, grid, aggregate)
    if not agg_s[0] > 1e-250:
        raise Rejected("aggregate vanishes at q_min")
    # Excess at q_min of 1.2x to 199x the clean intensity, but no more than keeps the
    # aggregate below the particle at the particle's knee.
    k = int(np.searchsorted(inst.q, knee["knee_q"]))
    allowed = (1 - crit.UPTURN_MIN_KNEE_SHARE) / crit.UPTURN_MIN_KNEE_SHARE
    excess, strong_excess = specs.AGGREGATION["excess_at_q_min"], specs.AGGREGATION["strong_excess_at_q_min"]
    allowed_excess = 0.95 * allowed * (clean_s[k] / agg_s[k]) * (agg_s[0] / clean_s[0])
    ceiling = min(excess.high, allowed_excess)
    if ceiling <= excess.low:
        raise Rejected("no upturn is both visible and below the knee")
    low = excess.low
    if strong and allowed_excess > strong_excess.low:
        low, ceiling = strong_excess.low, min(strong_excess.high, allowed_excess)
    draft.params["strong_upturn"] = "yes" if low == strong_excess.low else "no"
    target = _log_uniform(rng, low, ceiling)
    factor = target * clean_s[0] / agg_s[0]
    aggregate = aggregate * factor
    agg_s = agg_s * factor
    draft.params["aggregate_ratio_target"] = target + 1.0
    ratio, slope = crit.upturn(inst.q, clean_s, agg_s)
    share = crit.share_at(inst.q, clean_s, agg_s, knee["knee_q"])
    draft.criteria.update({"upturn_ratio": ratio, "upturn_slope": slope, "knee_share": share})
    if not crit.aggregation_visible(ratio, slope):
        raise Rejected("upturn not visible")
    if share < crit.UPTURN_MIN_KNEE_SHARE:
        raise Rejected("upturn swamps the particle's knee")
    expected, noisy, d_i, scale = _finish(draft, clean_s + agg_s, rng)
    _clean_checks(draft, expected, noisy, d_i)
    draft.components.update(clean=clean_s * scale, aggregate=agg_s * scale,
                            particle=interpolate_loglog(grid, values, inst.q) * scale,
                            counterpart=expected - agg_s * scale)
    return draft, expected, noisy, d_i


#: Aggregate models and how often each is drawn (their tables: :data:`.specs.AGGREGATES`).
AGGREGATE_MODELS: dict[str, float] = specs.weights(specs.AGGREGATES)
#: Structure factors of concentrated particles and how often each is drawn (their tables: :data:`.specs.STRUCTURE_FACTORS`).
STRUCTURE_FACTORS: dict[str, float] = specs.weights(specs.STRUCTURE_FACTORS)


def _draw_structure_factor(radius: float, rng: np.random.Generator) -> tuple[str, dict[str, float]]:
    """A sasmodels structure factor and its parameters for particles of hard-sphere radius ``radius`` (Å).

    Repulsive: hard spheres and screened Coulomb (Hayter-MSA; low salt gives the
    low-q turnover of a salt-free protein solution). Attractive: sticky hard
    spheres (Baxter) and a square well, whose low-q rise is the taxonomy's
    S(q_min) >= 1.4.
    """
    model = _draw_kind(STRUCTURE_FACTORS, rng)
    return model, specs.STRUCTURE_FACTORS[model].draw(rng, radius=radius)


def _interparticle(rng: np.random.Generator) -> Outcome:
    inst = draw_instrument(rng)
    draft = Draft(inst)
    shape, grid, values, knee = _particle(inst, rng, COMPACT_SHAPES, rg=_place_rg(inst, rng, specs.INTERPARTICLE["knee_position"]))
    draft.params.update(shape.record())
    draft.criteria.update(knee)
    radius = shape.spec.outer_radius(shape.params)
    model, pars = _draw_structure_factor(radius, rng)
    s_grid = call_model(model, grid, pars)
    if not np.all(np.isfinite(s_grid)) or np.any(s_grid <= 0):
        raise Rejected("structure factor failed")
    q = inst.q
    s_q = interpolate_loglog(grid, s_grid, q)
    # Criterion values from sasmodels exactly at q_min and at the measured points around the peak.
    top = int(np.argmax(s_q))
    exact_at = np.unique(np.r_[0, np.arange(max(top - 3, 0), min(top + 4, q.size))])
    s_exact = call_model(model, q[exact_at], pars)
    s_q[exact_at] = s_exact
    draft.params["structure_factor"] = model
    draft.params.update({f"sq_{k}": v for k, v in pars.items()})
    s_min, s_peak = crit.structure_factor_extremes(s_exact)
    draft.criteria.update({"s_q_min": s_min, "s_peak": s_peak})
    if not crit.interparticle_visible(s_min, s_peak):
        raise Rejected("S(q) not visible")
    expected, noisy, d_i, scale = _finish(draft, _smear(inst, grid, values * s_grid), rng)
    _clean_checks(draft, expected, noisy, d_i)
    draft.components.update(structure_factor=s_q, particle=interpolate_loglog(grid, values, inst.q) * scale,
                            counterpart=_smear(inst, grid, values) * scale + draft.params["background"])
    return draft, expected, noisy, d_i


def _unit_peak(lorentz: bool, relative_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """One sasmodels peak at q = 1 with relative width ``relative_sigma``, on a fine x = q/q_peak grid.

    All Bragg peaks of a curve share the same relative width, so one sasmodels
    call gives every peak by scaling x (one kernel call instead of one per peak).
    Gaussian: sigma = relative_sigma; Lorentzian: the same FWHM.
    """
    span = 30.0 if lorentz else 6.0
    x = np.linspace(max(1 - span * relative_sigma, 0.05), 1 + span * relative_sigma, 801)
    if lorentz:
        values = call_model("peak_lorentz", x, {"peak_pos": 1.0, "peak_hwhm": 1.1774 * relative_sigma})
    else:
        values = call_model("gaussian_peak", x, {"peak_pos": 1.0, "sigma": relative_sigma})
    return x, values / values.max()


def _ordered(rng: np.random.Generator) -> Outcome:
    spec = specs.ORDERED
    relative_sigma = spec["peak_relative_sigma"].draw(rng)  # Gaussian sigma/q; FWHM/q = 2.355 x
    inst = draw_instrument(rng, max_relative_step=relative_sigma / 1.5)
    draft = Draft(inst)
    q = inst.q
    q1 = float(q[0] * (q[-1] / q[0]) ** spec["first_peak_position"].draw(rng))
    grid = inst.model_grid()
    if spec["lamellar_stack"].draw(rng):
        lattice = "lamellar"
        d = 2 * math.pi / q1
        # sigma_d is sasmodels' *relative* spread of the layer spacing.
        layers = spec.options["lamellar_stack"].draw(rng, d_spacing=d)
        thickness, sld, solvent = layers["thickness"], layers["sld"], layers["sld_solvent"]
        pars = {"thickness": thickness, "Nlayers": layers["Nlayers"], "d_spacing": d,
                "sigma_d": layers["sigma_d"], "sld": sld, "sld_solvent": solvent}
        qc = inst.q_calc
        stack = np.maximum(call_model("lamellar_stack_paracrystal", qc, pars), 0.0)
        # Underlying curve: the same bilayers without interference (Z_N = 1), i.e. sasmodels'
        # lamellar model divided by the thickness (lamellar is normalised per layer volume).
        single = call_model("lamellar", qc, {"thickness": thickness, "sld": sld, "sld_solvent": solvent}) / thickness
        with_peaks = inst.resolution.apply(stack)
        base = inst.resolution.apply(single)
        draft.params.update({"shape": "lamellar_stack_paracrystal", "model": "lamellar_stack_paracrystal"})
        draft.params.update(pars)
        relative_width = crit.peak_relative_width(qc, stack / single, q1)
        positions = q1 * np.asarray(LATTICES["lamellar"])
    else:
        peaks_spec = spec.options["bragg_peaks"]
        lattice = list(LATTICES)[int(rng.integers(len(LATTICES)))]
        shape, grid, values, knee = _particle(inst, rng, require_knee=False,
                                              rg=_place_rg(inst, rng, peaks_spec["knee_position"]))
        draft.params.update(shape.record())
        positions = q1 * np.asarray(LATTICES[lattice])
        positions = positions[positions <= q[-1] * 1.2]
        base_q = interpolate_loglog(grid, values, positions)
        qc = inst.q_calc
        lorentz = peaks_spec["lorentzian"].draw(rng)
        # Peak height over the underlying curve chosen for the *observed* (smeared) contrast.
        # Pinhole smearing of relative width r lowers a peak of relative width s by s/sqrt(s^2 + r^2);
        # a slit of length L keeps the fraction sqrt(2 s) q1 / L of it (the chord through the peak).
        if inst.resolution_kind == "pinhole":
            reduction = relative_sigma / math.hypot(relative_sigma, inst.dq_over_q)
        else:
            reduction = min(1.0, math.sqrt(2 * relative_sigma) * q1 / inst.slit_length)
        observed = peaks_spec["peak_contrast"].draw(rng)
        height = observed / reduction
        decay = peaks_spec["peak_decay"].draw(rng)
        # Paracrystalline disorder broadens higher orders: width_n = width_1 (1 + g (h_n^2 - 1)),
        # h_n = q_n / q_1 (g = 0: a perfect lattice, width set by the grain size only).
        growth = peaks_spec["peak_broadening"].draw(rng) if peaks_spec["broadened"].draw(rng) else 0.0
        draft.params["peak_broadening"] = growth
        profile_x, profile = _unit_peak(lorentz, relative_sigma)
        peaks = np.zeros_like(qc)
        for n, (p, b) in enumerate(zip(positions, base_q)):
            widen = 1.0 + growth * ((p / q1) ** 2 - 1.0)
            amp = b * height * decay**n * peaks_spec["peak_amplitude"].draw(rng) / math.sqrt(widen)
            peaks += amp * np.interp((qc / p - 1.0) / widen + 1.0, profile_x, profile, left=0.0, right=0.0)
        base = _smear(inst, grid, values)
        with_peaks = _smear(inst, grid, values, peaks)
        relative_width = 2.355 * relative_sigma
        draft.params["peak_shape"] = "peak_lorentz" if lorentz else "gaussian_peak"
        draft.params["peak_height"] = height
        draft.params["peak_contrast_target"] = observed
        draft.params["peak_decay"] = decay
    draft.params["lattice"] = lattice
    draft.params["q_first_peak"] = q1
    contrasts = crit.bragg_contrasts(q, with_peaks, base, positions)
    draft.criteria["peak_relative_width"] = relative_width
    if not crit.ordered_visible(contrasts, relative_width):
        raise Rejected("Bragg peaks not visible")
    expected, noisy, d_i, scale = _finish(draft, with_peaks, rng)
    _clean_checks(draft, expected, noisy, d_i)
    # Visible means >= 2x the underlying curve *and* >= 3 sigma above it.
    contrasts = crit.bragg_contrasts(q, with_peaks * scale, base * scale, positions, d_i)
    visible = contrasts >= crit.BRAGG_MIN_CONTRAST
    draft.criteria.update({"peak_contrast": float(contrasts.max()) if contrasts.size else 0.0,
                           "n_visible_peaks": float(visible.sum())})
    if not crit.ordered_visible(contrasts, relative_width):
        raise Rejected("Bragg peaks buried in noise")
    draft.components.update(without_peaks=base * scale, peak_positions=positions,
                            counterpart=base * scale + draft.params["background"])
    return draft, expected, noisy, d_i


def _with_guinier_points(shape: ShapeDraw, grid: np.ndarray) -> tuple[np.ndarray, float]:
    """Evaluate a shape on two deep-Guinier points plus the grid; returns (I on grid, measured Rg)."""
    q_pair = (0.02 / shape.rg_target, 0.04 / shape.rg_target)
    q_all = np.concatenate([q_pair, grid]) if q_pair[1] < grid[0] else None
    if q_all is None:
        pair = evaluate_shape(shape, np.asarray(q_pair))
        values = evaluate_shape(shape, grid)
    else:
        both = evaluate_shape(shape, q_all)
        pair, values = both[:2], both[2:]
    return values, crit.guinier_rg(q_pair, (float(pair[0]), float(pair[1])))


def _bimodal(rng: np.random.Generator) -> Outcome:
    inst = draw_instrument(rng, min_decades=1.2)
    draft = Draft(inst)
    q = inst.q
    rg_large = _place_rg(inst, rng, specs.BIMODAL["knee_position"])
    ratio = specs.BIMODAL["rg_ratio"].draw(rng)
    rg_small = rg_large / ratio
    large = draw_shape(rg_large, rng)
    small = draw_shape(rg_small, rng)
    grid = inst.model_grid()
    v_large, rg_l = _with_guinier_points(large, grid)
    v_small, rg_s = _with_guinier_points(small, grid)
    if not (rg_l > 0 and rg_s > 0):
        raise Rejected("no Guinier regime")
    v_small = v_small / v_small[0] * v_large[0]
    lg = np.log(grid)
    at = lambda v, rg: float(np.exp(np.interp(-math.log(rg), lg, np.log(v))))  # noqa: E731
    lo = 1.6 * at(v_large, rg_s) / at(v_small, rg_s)
    hi = at(v_large, rg_l) / (1.6 * at(v_small, rg_l))
    if not lo < hi:
        raise Rejected("no amplitude makes both populations dominant")
    amplitude = _log_uniform(rng, lo, hi)
    v_small = v_small * amplitude
    share_l, share_s = crit.knee_dominance(grid, v_large, v_small, rg_l, rg_s)
    draft.params.update(large.record("large_"))
    draft.params.update(small.record("small_"))
    draft.params["small_amplitude"] = amplitude
    draft.criteria.update({"rg_large": rg_l, "rg_small": rg_s, "rg_ratio": rg_l / rg_s,
                           "dominance_large": share_l, "dominance_small": share_s,
                           "knee_dominance": min(share_l, share_s)})
    dip, recovery = crit.shoulder_between_knees(grid, v_large + v_small, rg_l, rg_s)
    draft.criteria.update({"shoulder_dip": dip, "shoulder_recovery": recovery})
    if not crit.bimodal_visible(float(q[0]), float(q[-1]), rg_l, rg_s, share_l, share_s):
        raise Rejected("two knees not visible")
    if not crit.shoulder_visible(dip, recovery):
        raise Rejected("no shoulder between the knees: looks like one elongated particle")
    expected, noisy, d_i, scale = _finish(draft, _smear(inst, grid, v_large + v_small), rng)
    _clean_checks(draft, expected, noisy, d_i)
    # The small population's knee must stand out of the noise and the flat background.
    at_knee = int(np.clip(np.searchsorted(q, 1.0 / rg_s), 0, q.size - 1))
    signal_at_knee = expected[at_knee] - draft.params["background"]
    draft.criteria["small_knee_snr"] = float(signal_at_knee / d_i[at_knee])
    if signal_at_knee < crit.BIMODAL_MIN_KNEE_SNR * d_i[at_knee] or signal_at_knee < draft.params["true_background"]:
        raise Rejected("small population's knee buried in noise or background")
    draft.components.update(large=interpolate_loglog(grid, v_large, q) * scale,
                            small=interpolate_loglog(grid, v_small, q) * scale,
                            populations=np.stack([_smear(inst, grid, v_large), _smear(inst, grid, v_small)]) * scale)
    return draft, expected, noisy, d_i


def _oversubtracted(rng: np.random.Generator) -> Outcome:
    draft, shape, grid, values, smeared = _one_population(rng, specs.OVERSUBTRACTED)
    q = draft.instrument.q
    n = q.size
    crossing = int(round(n * (1 - specs.OVERSUBTRACTED["negative_fraction"].draw(rng))))
    delta = float(np.max(smeared[crossing:])) * specs.OVERSUBTRACTED["depth"].draw(rng)
    expected, noisy, d_i, scale = _finish(draft, smeared, rng, offset=delta, force_background="subtracted")
    draft.params["oversubtraction"] = delta * scale
    draft.params["oversubtraction_over_background"] = delta * scale / draft.params["true_background"]
    model_run, slope = crit.model_negative_run(q, expected)
    noisy_run = crit.trailing_negative_run_fraction(noisy, d_i)
    draft.criteria.update({"negative_run_fraction": noisy_run, "model_negative_fraction": model_run,
                           "high_q_slope": slope})
    if not crit.oversubtracted_visible(noisy_run, model_run, slope) or model_run > 0.7:
        raise Rejected("over-subtraction not visible")
    spikes = crit.spike_count(noisy, expected, d_i)
    draft.criteria["spike_count"] = float(spikes)
    if spikes:
        raise Rejected("a >= 5 sigma outlier by chance")
    draft.components.update(particle=interpolate_loglog(grid, values, q) * scale, clean=smeared * scale,
                            counterpart=smeared * scale)
    return draft, expected, noisy, d_i


#: Instrument and reduction faults, and how often each is drawn (their tables: :data:`.specs.ARTEFACTS`).
ARTEFACT_KINDS: dict[str, float] = specs.weights(specs.ARTEFACTS)


@dataclass
class Measured:
    """A measured curve in the making: noise-free ``expected``, its standard-normal noise draw ``z``,
    the gross intensity (signal + true background) behind the counting noise, and dI; shape (points,).

    ``noisy`` is expected + z dI plus ``extra`` (isolated spikes, which are not noise).
    """

    instrument: Instrument
    expected: np.ndarray
    z: np.ndarray
    gross: np.ndarray
    d_i: np.ndarray
    extra: np.ndarray

    @property
    def noisy(self) -> np.ndarray:
        return self.expected + self.z * self.d_i + self.extra

    def add(self, term: np.ndarray) -> None:
        """Add a noise-free intensity ``term`` (shape (points,)); the counting noise follows it."""
        self.expected = self.expected + term
        self.gross = np.maximum(self.gross + term, 0.0)
        self.d_i = counting_noise(self.instrument, self.gross, float(np.max(self.gross)))

    def multiply(self, factor: np.ndarray | float, start: int = 0) -> None:
        """Multiply points ``start:`` by ``factor`` (a miscalibrated segment or a transmission)."""
        for name in ("expected", "gross", "d_i", "extra"):
            values = getattr(self, name).copy()
            values[start:] = values[start:] * factor
            setattr(self, name, values)


def _apply_artefact(m: Measured, kind: str, rng: np.random.Generator, params: dict, criteria: dict,
                    components: dict) -> None:
    """Put an instrument or reduction fault of ``kind`` on a measured curve (in place); raise Rejected if it cannot show.

    * spikes: >= 1 % of points (at least 3), isolated, 8-50 sigma and at least 25 % of I off;
    * step: a multiplicative step of 1.4-3x between merged detector segments or configurations;
    * beamstop: the transmission rising over the first 2-8 % of points (shadow of the beamstop);
    * parasitic: a steep additive term confined to the first 2-8 % of points (slit or window scattering);
    * edge_points: one to four points at the beamstop edge far off the curve (mostly low: partly shadowed pixels);
    * cell_residue: an empty-cell or capillary subtraction residue, the broad scattering peak of the window
      material (Kapton, mica, quartz, at 0.05-1.3 1/Å) added or removed by 5-60 % of the curve.
    """
    q = m.instrument.q
    n = q.size
    params["artefact"] = kind
    before = m.expected.copy()
    table = specs.ARTEFACTS[kind] if kind in specs.ARTEFACTS else None
    if kind in ("beamstop", "parasitic"):
        affected = max(2, int(round(n * table["affected_fraction"].draw(rng))))
        params["affected_points"] = float(affected)
        signal = m.expected - params.get("background", 0.0)
        if kind == "beamstop":
            t0 = table["transmission"].draw(rng)
            ramp = (np.arange(affected) / affected) ** table["ramp_power"].draw(rng)
            transmission = np.ones(n)
            transmission[:affected] = t0 + (1 - t0) * ramp
            m.multiply(transmission)
            params["beamstop_transmission"] = t0
        else:
            a = table["amplitude"].draw(rng)
            ratio_edge = a / 0.02 * abs(signal[0]) / max(abs(signal[affected]), 1e-300)
            power = math.log(max(ratio_edge, 1.0001)) / math.log(q[affected] / q[0])
            m.add(a * abs(signal[0]) * (q / q[0]) ** (-power))
            params["parasitic_amplitude"] = a
            params["parasitic_power"] = power
        factor, frac = crit.low_q_distortion(m.expected, before)
        criteria.update({"low_q_distortion": factor, "affected_fraction": frac})
        if not crit.low_q_artefact_visible(factor, frac):
            raise Rejected("low-q distortion not visible")
    elif kind == "spikes":
        count = max(3, math.ceil(n * table["fraction"].draw(rng)))
        chosen: list[int] = []
        for idx in rng.permutation(np.arange(2, n - 2)):
            if all(abs(int(idx) - c) >= 3 for c in chosen):
                chosen.append(int(idx))
            if len(chosen) == count:
                break
        idx = np.asarray(sorted(chosen))
        signs = np.where(table["upward"].draw(rng, idx.size), 1.0, -1.0)
        size = np.maximum(table["size_sigma"].draw(rng, idx.size) * m.d_i[idx],
                          table["size_relative"].draw(rng, idx.size) * np.abs(m.expected[idx]))
        extra = m.extra.copy()
        extra[idx] += signs * size
        m.extra = extra
        spikes = crit.spike_count(m.noisy, m.expected, m.d_i)
        criteria["spike_count"] = float(spikes)
        criteria["spike_fraction"] = spikes / n
        if not crit.spikes_visible(spikes, n):
            raise Rejected("spikes not visible")
    elif kind == "step":
        rel = m.d_i / np.maximum(np.abs(m.expected), 1e-300)
        options = np.nonzero(rel < 0.05)[0]
        first, last = table["boundary"].bounds(n)
        options = options[(options >= first) & (options <= last)]
        if options.size == 0:
            raise Rejected("no quiet place for a step")
        boundary = int(options[int(rng.integers(options.size))])
        f = table["factor"].draw(rng) ** (1 if table["up"].draw(rng) else -1)
        m.multiply(f, boundary)
        measured = crit.step_factor(m.noisy, before, m.d_i, boundary)
        params["step_factor"] = f
        params["step_q"] = float(q[boundary] * (10.0 if m.instrument.unit == "1/nm" else 1.0))
        criteria["step_factor"] = measured
        components["step_boundary"] = np.asarray([boundary])
        if not measured >= crit.STEP_MIN_FACTOR:
            raise Rejected("step not visible")
    elif kind == "edge_points":
        k = table["count"].draw(rng)
        low = table["low"].draw(rng)
        factor = table["factor_low"].draw(rng, k) if low else table["factor_high"].draw(rng, k)
        values = m.expected.copy()
        values[:k] = values[:k] * factor
        m.expected = values
        params["edge_points"] = float(k)
        params["edge_factor"] = float(np.median(factor))
    elif kind == "cell_residue":
        peak_q = table["peak_q"].draw(rng)
        if not q[0] * 1.2 < peak_q < q[-1] * 1.1:
            raise Rejected("window material peak outside the window")
        width = table["width"].draw(rng)
        at = int(np.clip(np.searchsorted(q, peak_q), 0, n - 1))
        height = table["height"].draw(rng) * max(abs(m.expected[at]), 1e-300) * (1 if table["added"].draw(rng) else -1)
        hump = height * np.exp(-0.5 * ((q / peak_q - 1.0) / width) ** 2)
        m.add(hump)
        params["residue_q"] = float(peak_q * (10.0 if m.instrument.unit == "1/nm" else 1.0))
        params["residue_height"] = height
    else:
        raise ValueError(f"unknown artefact kind {kind!r}")
    with_fault = m.noisy - m.z * m.d_i if kind == "spikes" else m.expected
    score = crit.visibility_score(with_fault, before, m.d_i)
    criteria[crit.visibility_key("artefact")] = float(score)
    if score < crit.minimum_points(kind):
        raise Rejected("artefact not visible")


def _draw_kind(table: dict[str, float], rng: np.random.Generator) -> str:
    """One name of ``table`` (name -> relative weight), drawn by weight."""
    names = list(table)
    weights = np.array(list(table.values()))
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _draw_artefact_kind(rng: np.random.Generator) -> str:
    return _draw_kind(ARTEFACT_KINDS, rng)


def _measured(draft: Draft, expected: np.ndarray, noisy: np.ndarray, d_i: np.ndarray) -> Measured:
    return Measured(draft.instrument, expected.copy(), (noisy - expected) / d_i, draft.components["gross"].copy(),
                    d_i.copy(), np.zeros_like(expected))


def _artefact(rng: np.random.Generator) -> Outcome:
    draft, shape, grid, values, smeared = _one_population(rng, specs.ARTEFACT)
    q = draft.instrument.q
    expected, noisy, d_i, scale = _finish(draft, smeared, rng)
    _clean_checks(draft, expected, noisy, d_i)
    m = _measured(draft, expected, noisy, d_i)
    _apply_artefact(m, _draw_artefact_kind(rng), rng, draft.params, draft.criteria, draft.components)
    draft.components.update(clean=expected, particle=interpolate_loglog(grid, values, q) * scale, counterpart=expected)
    return draft, m.expected, m.noisy, m.d_i


ClassGenerator = Callable[[np.random.Generator], Outcome]

#: One generator per class, in taxonomy order (index = label).
CLASS_GENERATORS: dict[str, ClassGenerator] = {
    "clean": _clean,
    "aggregation": _aggregation,
    "interparticle": _interparticle,
    "ordered": _ordered,
    "bimodal": _bimodal,
    "oversubtracted": _oversubtracted,
    "artefact": _artefact,
}
assert tuple(CLASS_GENERATORS) == CLASS_NAMES, "generators must follow the taxonomy order"


#: Every sasmodels model the simulator may call (compiled on first use, about 1 s each).
MODELS_USED: tuple[str, ...] = tuple(sorted({s.model for s in SHAPES} | {
    "power_law", "mass_fractal", "surface_fractal", *STRUCTURE_FACTORS,
    "gaussian_peak", "peak_lorentz", "lamellar_stack_paracrystal", "lamellar"}))


def preload_models() -> None:
    """Compile and load every model in :data:`MODELS_USED` now (e.g. once per worker process)."""
    for name in MODELS_USED:
        load_model(name)


#: Probability that an anomalous curve gets secondary anomalies on top of its primary one (taxonomy version 2).
MIXTURE_PROBABILITY = specs.MIXTURES["mixture"].probability
#: Secondary anomalies that can be laid on a finished curve of each primary class, in the order they are applied.
#: (Structure factors, Bragg peaks and second populations change the particle itself and can only be primary;
#: an interacting sample with aggregates is an ``interparticle`` curve with ``aggregation`` laid on it, and
#: whichever moves more points is primary.)
SECONDARY_ANOMALIES: dict[str, tuple[str, ...]] = {
    "clean": (),
    "aggregation": ("oversubtracted", "artefact"),
    "interparticle": ("aggregation", "oversubtracted", "artefact"),
    "ordered": ("aggregation", "artefact"),
    "bimodal": ("oversubtracted", "artefact"),
    "oversubtracted": ("aggregation", "artefact"),
    "artefact": (),
}
#: Tries per secondary anomaly before the curve goes without it.
SECONDARY_ATTEMPTS = 4


def _primary_score(name: str, draft: Draft, expected: np.ndarray, d_i: np.ndarray, shift: np.ndarray | float = 0.0) -> int:
    """Visibility score (docs/taxonomy.md) of a curve's primary anomaly; ``shift`` is what secondaries added since."""
    comp = draft.components
    if name == "oversubtracted":
        return crit.oversubtraction_score(expected, d_i)
    if name == "artefact":
        return int(draft.criteria[crit.visibility_key("artefact")])
    if name == "bimodal":
        background = draft.params["background"]
        own = expected - shift - background
        return min(crit.visibility_score(own, crit.best_scaled(own, pop, d_i), d_i) for pop in comp["populations"])
    return crit.visibility_score(expected, comp["counterpart"] + shift, d_i)


def _copy(m: Measured) -> Measured:
    return Measured(m.instrument, m.expected.copy(), m.z.copy(), m.gross.copy(), m.d_i.copy(), m.extra.copy())


def _on_a_copy(m: Measured, draft: Draft, lay: Callable[[Measured], Any], attempts: int) -> tuple[bool, Any]:
    """Up to ``attempts`` times, ``lay`` something on a copy of ``m``; the first copy it does not reject becomes ``m``.

    A rejected try leaves the draft's params, criteria and components as they were. Returns
    (True, what ``lay`` returned) once one try is kept, (False, None) when every try was rejected.
    """
    for _ in range(attempts):
        trial = _copy(m)
        saved = (dict(draft.params), dict(draft.criteria), dict(draft.components))
        try:
            value = lay(trial)
        except Rejected:
            draft.params, draft.criteria, draft.components = saved
            continue
        m.expected, m.z, m.gross, m.d_i, m.extra = trial.expected, trial.z, trial.gross, trial.d_i, trial.extra
        return True, value
    return False, None


def _secondary_aggregation(m: Measured, draft: Draft, rng: np.random.Generator) -> int:
    inst, q = m.instrument, m.instrument.q
    grid = inst.model_grid()
    rg = float(draft.params.get("rg_target", draft.params.get("large_rg_target", 1.0 / q[0])))
    values, record = _aggregate_component(rng, grid, float(q[0]), rg)
    agg = _smear(inst, grid, values)
    signal = m.expected - draft.params["background"]
    if not (signal[0] > 0 and agg[0] > 1e-250):
        raise Rejected("no upturn possible")
    agg = agg * specs.MIXTURES["aggregate_excess"].draw(rng) * signal[0] / agg[0]
    ratio, slope = crit.upturn(q, signal, agg)
    if not crit.aggregation_visible(ratio, slope):
        raise Rejected("upturn not visible")
    before = m.expected.copy()
    m.add(agg)
    draft.params.update(record)
    draft.criteria.update({"upturn_ratio": ratio, "upturn_slope": slope})
    return crit.visibility_score(m.expected, before, m.d_i)


def _secondary_oversubtraction(m: Measured, draft: Draft, rng: np.random.Generator) -> int:
    inst, q = m.instrument, m.instrument.q
    if inst.background_mode != "subtracted":
        raise Rejected("a flat background left in place is not over-subtracted")
    n = q.size
    crossing = int(round(n * (1 - specs.OVERSUBTRACTION["negative_fraction"].draw(rng))))
    delta = float(np.max(m.expected[crossing:])) * specs.OVERSUBTRACTION["depth"].draw(rng)
    m.expected = m.expected - delta
    model_run, slope = crit.model_negative_run(q, m.expected)
    noisy_run = crit.trailing_negative_run_fraction(m.noisy, m.d_i)
    if not crit.oversubtracted_visible(noisy_run, model_run, slope) or model_run > 0.7:
        raise Rejected("over-subtraction not visible")
    draft.params["oversubtraction"] = delta
    draft.criteria.update({"negative_run_fraction": noisy_run, "model_negative_fraction": model_run, "high_q_slope": slope})
    return crit.oversubtraction_score(m.expected, m.d_i)


def _secondary_artefact(m: Measured, draft: Draft, rng: np.random.Generator) -> int:
    _apply_artefact(m, _draw_artefact_kind(rng), rng, draft.params, draft.criteria, draft.components)
    return int(draft.criteria[crit.visibility_key("artefact")])


SECONDARY_BUILDERS: dict[str, Callable[[Measured, Draft, np.random.Generator], int]] = {
    "aggregation": _secondary_aggregation,
    "oversubtracted": _secondary_oversubtraction,
    "artefact": _secondary_artefact,
}


def _lay_secondaries(name: str, draft: Draft, m: Measured, rng: np.random.Generator) -> dict[str, int]:
    """Lay one or two secondary anomalies on a finished curve of primary class ``name`` (in place).

    Returns the visibility score of every secondary that showed; one that does
    not show in :data:`SECONDARY_ATTEMPTS` draws is left out (with its parameters).
    """
    options = SECONDARY_ANOMALIES[name]
    k = min(len(options), 1 if specs.MIXTURES["one_secondary"].draw(rng) else 2)
    chosen = [options[i] for i in sorted(rng.choice(len(options), size=k, replace=False))]
    scores: dict[str, int] = {}
    for anomaly in chosen:

        def lay(trial: Measured, anomaly: str = anomaly) -> int:
            score = SECONDARY_BUILDERS[anomaly](trial, draft, rng)
            kind = str(draft.params.get("artefact", "")) if anomaly == "artefact" else anomaly
            if score < crit.minimum_points(kind):
                raise Rejected("secondary anomaly not visible")
            return score

        laid, score = _on_a_copy(m, draft, lay, SECONDARY_ATTEMPTS)
        if laid:
            scores[anomaly] = score
    return scores


def simulate(label: int, rng: np.random.Generator, mixture_probability: float = MIXTURE_PROBABILITY,
             uncertainty_kinds: Mapping[str, float] | None = None) -> Simulation:
    """Simulate one curve of planned primary class ``label`` and keep its noise-free components (for audits and tests).

    ``uncertainty_kinds`` weighs how the file reports dI (:data:`REPORTED_UNCERTAINTY_KINDS`, the default):
    ``{"honest": 1.0}`` simulates an instrument whose error bars are its counting noise.

    With probability ``mixture_probability`` an anomalous curve also gets one or
    two secondary anomalies (:data:`SECONDARY_ANOMALIES`). Every anomaly present
    must pass the visibility test of docs/taxonomy.md; its score (points moved)
    is stored as ``criteria["visibility_<anomaly>"]``, the anomalies present as
    ``params["anomalies"]`` ("aggregation;artefact", most visible first), and
    the curve's label is the most visible anomaly (the planned class unless a
    secondary anomaly moved more points).
    """
    if not 0 <= int(label) < len(CLASS_NAMES):
        raise ValueError(f"label {label} is not a class index; the classes are 0..{len(CLASS_NAMES) - 1}: {', '.join(CLASS_NAMES)}")
    name = CLASS_NAMES[int(label)]
    generator = CLASS_GENERATORS[name]
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            draft, expected, noisy, d_i = generator(rng)
            scores: dict[str, int] = {}
            if name != "clean":
                scores[name] = _primary_score(name, draft, expected, d_i)
                kind = str(draft.params.get("artefact", "")) if name == "artefact" else name
                if scores[name] < crit.minimum_points(kind):
                    raise Rejected("anomaly moves too few points to be seen")
        except Rejected:
            continue
        if not (np.all(np.isfinite(noisy)) and np.all(d_i > 0) and np.all(np.isfinite(d_i))):
            continue
        break
    else:
        raise RuntimeError(f"no visible {CLASS_NAMES[int(label)]} curve in {MAX_ATTEMPTS} draws: the simulator is mis-tuned")
    if SECONDARY_ANOMALIES[name] and rng.random() < mixture_probability:
        m = _measured(draft, expected, noisy, d_i)
        secondary = _lay_secondaries(name, draft, m, rng)
        if secondary:
            shift = m.expected - expected if name != "artefact" else 0.0
            additive = name in ("aggregation", "interparticle", "ordered", "bimodal") and "artefact" not in secondary
            primary = _primary_score(name, draft, m.expected, m.d_i, shift if additive else 0.0)
            if additive and primary < crit.VISIBLE_MIN_POINTS:
                pass  # the secondaries hid the primary anomaly: keep the single-anomaly curve
            else:
                if additive:
                    scores[name] = primary
                scores.update(secondary)
                expected, noisy, d_i = m.expected, m.noisy, m.d_i
    present = sorted(scores, key=lambda a: (-scores[a], a != name))
    if present:
        label = class_index(present[0])
    inst = draft.instrument
    factor = 10.0 if inst.unit == "1/nm" else 1.0
    draft.params["attempts"] = float(attempt)
    draft.params["simulator_version"] = SIMULATOR_VERSION
    draft.params["planned_class"] = name
    draft.params["anomalies"] = ";".join(present)
    for anomaly, score in scores.items():
        draft.criteria[crit.visibility_key(anomaly)] = float(score)
    draft.criteria["n_anomalies"] = float(len(present))
    reported, record = reported_uncertainties(d_i, rng, uncertainty_kinds)
    draft.params.update(record)
    curve = SimulatedCurve(
        label=int(label),
        q=inst.q * factor,
        intensity=noisy,
        d_intensity=reported,
        dq=inst.dq * factor,
        q_unit=inst.unit,
        slit_length=inst.slit_length * factor if inst.resolution_kind == "slit" else float("nan"),
        params=draft.params,
        instrument=inst.record(),
        criteria={k: float(v) for k, v in draft.criteria.items()},
    )
    components = {k: v for k, v in draft.components.items() if k not in ("gross", "populations")}
    components["expected"] = expected
    components["noise_sigma"] = d_i
    return Simulation(curve, components)


#: How files report their uncertainties, and how often each is drawn (their tables: :data:`.specs.REPORTED_UNCERTAINTIES`).
REPORTED_UNCERTAINTY_KINDS: dict[str, float] = specs.weights(specs.REPORTED_UNCERTAINTIES)


def reported_uncertainties(d_i: np.ndarray, rng: np.random.Generator,
                           kinds: Mapping[str, float] | None = None) -> tuple[np.ndarray, dict[str, float | str]]:
    """(dI as the file reports it, its record) for a curve whose true counting noise is ``d_i`` (points,).

    Drawn after the label (the noise and every visibility test use the true
    noise): honest, off by one factor for the whole curve, or missing (NaN),
    by the weights ``kinds`` (name -> weight; :data:`REPORTED_UNCERTAINTY_KINDS` if None).
    """
    table = REPORTED_UNCERTAINTY_KINDS if kinds is None else dict(kinds)
    unknown = set(table) - set(REPORTED_UNCERTAINTY_KINDS)
    if unknown:
        raise ValueError(f"unknown kind(s) of reported uncertainties {sorted(unknown)}; known: {sorted(REPORTED_UNCERTAINTY_KINDS)}")
    kind = _draw_kind(table, rng)
    record: dict[str, float | str] = {"reported_uncertainties": kind}
    if kind == "scaled":
        factor = float(specs.REPORTED_UNCERTAINTIES["scaled"]["factor"].draw(rng))
        record["reported_uncertainty_factor"] = factor
        return d_i * factor, record
    if kind == "missing":
        return np.full_like(d_i, np.nan), record
    return d_i, record


def simulate_curve(label: int, rng: np.random.Generator, mixture_probability: float = MIXTURE_PROBABILITY,
                   uncertainty_kinds: Mapping[str, float] | None = None) -> SimulatedCurve:
    """Simulate one labelled curve of class ``label`` (taxonomy index), deterministic given ``rng``.

    The curve's anomaly is visible inside its q-window by construction (draws
    failing the class criterion are redrawn); ``criteria`` holds the values
    that justified the label. q is in ``curve.q_unit`` ("1/A" or "1/nm"); ``uncertainty_kinds`` as in
    :func:`simulate`.
    """
    return simulate(label, rng, mixture_probability, uncertainty_kinds).curve
