"""Visibility criteria of the seven classes, as plain functions of arrays.

Every function takes arrays of shape (points,) on the measured q points (1/Å,
increasing) and returns numbers; nothing here knows how a curve was simulated,
so the same functions check a simulated curve from its stored arrays or from
separately evaluated sasmodels components. Thresholds follow
``docs/taxonomy.md``.
"""

from __future__ import annotations

import math

import numpy as np

#: Local log-log slope that marks the Guinier knee (the plateau has slope 0;
#: a Guinier law reaches -0.5 at q·Rg ≈ 0.87, a rod or disc crosses it on
#: its way to -1 or -2).
KNEE_SLOPE = -0.5
#: Accepted knee positions, as a fraction of the window's log-width.
KNEE_POSITION_RANGE = (0.03, 0.8)
#: Minimum number of points on the plateau side of the knee.
KNEE_MIN_PLATEAU_POINTS = 2

UPTURN_MIN_RATIO = 2.0
UPTURN_SLOPE_RANGE = (-4.3, -1.3)
#: The clean particle's share of I at its own knee, so the knee stays visible under the upturn.
UPTURN_MIN_KNEE_SHARE = 0.75

S_Q_MIN_MAX = 0.7
#: Attraction (sticky hard spheres, square well) raises S(q_min) instead (taxonomy version 2).
S_Q_MIN_ATTRACTIVE = 1.4
S_PEAK_MIN = 1.15

BRAGG_MIN_CONTRAST = 2.0
BRAGG_MAX_RELATIVE_WIDTH = 0.05
BRAGG_MIN_VISIBLE_PEAKS = 2
BRAGG_MIN_SIGNIFICANCE = 3.0

BIMODAL_MIN_RG_RATIO = 3.0
BIMODAL_MIN_DOMINANCE = 0.6
#: The second knee must be at least this many sigma above zero (and above the background).
BIMODAL_MIN_KNEE_SNR = 5.0
#: Half-width (decades of q) of the straight-line fits behind the smoothed slope.
SHOULDER_HALF_WIDTH_DECADES = 0.1
#: Between the knees the smoothed slope must rise again by at least
#: SHOULDER_MIN_RISE after its steepest point, to at least SHOULDER_MIN_RECOVERY
#: (the small population's plateau). Chosen from 500 draws of simulator 1.0.0,
#: where only 41 % of the "bimodal" curves passed: the rest (large rods, coils,
#: flexible cylinders as the big population) looked like one elongated particle.
SHOULDER_MIN_RISE = 0.6
SHOULDER_MIN_RECOVERY = -0.9

NEGATIVE_MIN_RUN_FRACTION = 0.1
NEGATIVE_RUN_WINDOW = 5
NEGATIVE_RUN_Z = -1.0
OVERSUBTRACTED_MAX_SLOPE = -4.0

SPIKE_MIN_SIGMA = 5.0
SPIKE_MIN_FRACTION = 0.01
STEP_MIN_FACTOR = 1.3
LOW_Q_MIN_DISTORTION = 2.0
LOW_Q_MAX_AFFECTED_FRACTION = 0.1


def log_slope(q: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """Local slope d ln I / d ln q, shape (points,); intensity must be positive.

    ``np.gradient(np.log(intensity), np.log(q))`` (second-order central
    differences inside, first-order at the ends), written out for one axis:
    the same arithmetic in the same order, without np.gradient's general
    set-up (about half its cost on a few hundred points).
    """
    f = np.log(np.asarray(intensity, dtype=np.float64))
    x = np.log(np.asarray(q, dtype=np.float64))
    if f.size < 2:
        return np.gradient(f, x)
    dx = np.diff(x)
    out = np.empty_like(f)
    if (dx == dx[0]).all():
        step = dx[0]
        out[1:-1] = (f[2:] - f[:-2]) / (2.0 * step)
        out[0] = (f[1] - f[0]) / step
        out[-1] = (f[-1] - f[-2]) / step
        return out
    dx1, dx2 = dx[:-1], dx[1:]
    a = -(dx2) / (dx1 * (dx1 + dx2))
    b = (dx2 - dx1) / (dx1 * dx2)
    c = dx1 / (dx2 * (dx1 + dx2))
    out[1:-1] = a * f[:-2] + b * f[1:-1] + c * f[2:]
    out[0] = (f[1] - f[0]) / dx[0]
    out[-1] = (f[-1] - f[-2]) / dx[-1]
    return out


def knee_position(q: np.ndarray, particle: np.ndarray) -> tuple[float, float]:
    """(position, q_knee) of the Guinier knee of a noise-free particle curve.

    q_knee is the first q where the local log-log slope falls below
    :data:`KNEE_SLOPE`; position is log(q_knee/q_min)/log(q_max/q_min).
    NaN when the slope is already below it at q_min (knee below the window)
    or never reaches it (knee above the window).
    """
    slope = log_slope(q, particle)
    below = np.nonzero(slope < KNEE_SLOPE)[0]
    if below.size == 0 or below[0] < KNEE_MIN_PLATEAU_POINTS:
        return float("nan"), float("nan")
    q_knee = float(q[below[0]])
    return math.log(q_knee / q[0]) / math.log(q[-1] / q[0]), q_knee


def knee_inside(position: float) -> bool:
    """True if a knee position (from :func:`knee_position`) lies inside the accepted range."""
    return KNEE_POSITION_RANGE[0] <= position <= KNEE_POSITION_RANGE[1]


def upturn(q: np.ndarray, clean: np.ndarray, aggregate: np.ndarray) -> tuple[float, float]:
    """(upturn_ratio, upturn_slope) of an aggregate component over a clean curve.

    upturn_ratio = (clean + aggregate)/clean at the lowest q; upturn_slope is
    the least-squares log-log slope of the aggregate over the first 20 % of
    the window (in log q, at least 3 points).
    """
    ratio = float((clean[0] + aggregate[0]) / clean[0])
    edge = q[0] * (q[-1] / q[0]) ** 0.2
    n = max(int(np.searchsorted(q, edge)), 3)
    slope = float(np.polyfit(np.log(q[:n]), np.log(aggregate[:n]), 1)[0])
    return ratio, slope


def share_at(q: np.ndarray, component: np.ndarray, other: np.ndarray, q_at: float) -> float:
    """Share component/(component + other) at q_at (1/Å), interpolated in log q."""
    return float(np.interp(math.log(q_at), np.log(q), component / (component + other)))


def aggregation_visible(ratio: float, slope: float) -> bool:
    """Upturn at least 2x the clean intensity at q_min with a power-law slope of about -1.5 to -4."""
    return ratio >= UPTURN_MIN_RATIO and UPTURN_SLOPE_RANGE[0] <= slope <= UPTURN_SLOPE_RANGE[1]


def structure_factor_extremes(structure_factor: np.ndarray) -> tuple[float, float]:
    """(S(q_min), max S) of a structure factor on the measured q points."""
    return float(structure_factor[0]), float(np.max(structure_factor))


def interparticle_visible(s_q_min: float, s_peak: float) -> bool:
    """Low-q suppression S(q_min) <= 0.7, a low-q rise S(q_min) >= 1.4 and/or a correlation peak S >= 1.15."""
    return s_q_min <= S_Q_MIN_MAX or s_q_min >= S_Q_MIN_ATTRACTIVE or s_peak >= S_PEAK_MIN


def bragg_contrasts(q: np.ndarray, with_peaks: np.ndarray, without_peaks: np.ndarray,
                    positions: np.ndarray, d_intensity: np.ndarray | None = None,
                    half_width: float = 0.03) -> np.ndarray:
    """Contrast of each Bragg peak over the underlying curve, shape (peaks,).

    For each peak position (1/Å) the largest ratio with/without among the
    measured points within ±``half_width`` (relative) of it; 0 for peaks
    outside the window or without a point nearby. Both curves should be
    resolution smeared and noise free (no background). With ``d_intensity``
    only points where the excess with - without is at least
    :data:`BRAGG_MIN_SIGNIFICANCE` sigma count, so a peak buried in noise is
    not visible.
    """
    out = np.zeros(len(positions))
    for k, p in enumerate(positions):
        near = np.abs(q - p) <= half_width * p
        if d_intensity is not None:
            near &= (with_peaks - without_peaks) >= BRAGG_MIN_SIGNIFICANCE * d_intensity
        if near.any():
            out[k] = float(np.max(with_peaks[near] / without_peaks[near]))
    return out


def peak_relative_width(q: np.ndarray, ratio: np.ndarray, q_peak: float) -> float:
    """Full width at half maximum over q_peak of the peak of ``ratio`` (e.g. a structure factor) nearest q_peak.

    ``ratio`` is sampled finely on ``q`` (1/Å); the half maximum is taken above
    the lowest value within ±30 % of q_peak. Returns NaN if the peak is not resolved.
    """
    window = (q >= 0.7 * q_peak) & (q <= 1.3 * q_peak)
    if window.sum() < 5:
        return float("nan")
    qw, rw = q[window], ratio[window]
    top = int(np.argmax(np.where(np.abs(qw - q_peak) <= 0.05 * q_peak, rw, -np.inf)))
    half = 0.5 * (rw[top] + rw.min())
    left = np.nonzero(rw[:top] < half)[0]
    right = np.nonzero(rw[top:] < half)[0]
    if left.size == 0 or right.size == 0:
        return float("nan")
    return float((qw[top + right[0]] - qw[left[-1]]) / qw[top])


def ordered_visible(contrasts: np.ndarray, relative_width: float) -> bool:
    """At least two peaks at lattice positions >= 2x above the underlying curve (and above the noise), narrow enough."""
    return (int(np.sum(contrasts >= BRAGG_MIN_CONTRAST)) >= BRAGG_MIN_VISIBLE_PEAKS
            and bool(relative_width <= BRAGG_MAX_RELATIVE_WIDTH))


def guinier_rg(q_pair: tuple[float, float], i_pair: tuple[float, float]) -> float:
    """Radius of gyration (Å) from two intensities deep in the Guinier regime (q in 1/Å)."""
    (q1, q2), (i1, i2) = q_pair, i_pair
    return math.sqrt(max(3.0 * math.log(i1 / i2) / (q2**2 - q1**2), 0.0))


def knee_dominance(grid: np.ndarray, large: np.ndarray, small: np.ndarray,
                   rg_large: float, rg_small: float) -> tuple[float, float]:
    """Share of the large population at q = 1/Rg_large and of the small one at q = 1/Rg_small.

    ``large`` and ``small`` are noise-free component intensities on ``grid`` (1/Å).
    """
    lg = np.log(grid)
    share_large = np.interp(-math.log(rg_large), lg, large / (large + small))
    share_small = np.interp(-math.log(rg_small), lg, small / (large + small))
    return float(share_large), float(share_small)


def bimodal_visible(q_min: float, q_max: float, rg_large: float, rg_small: float,
                    share_large: float, share_small: float) -> bool:
    """Rg ratio >= 3, both knees q = 1/Rg inside the window, each population >= 60 % at its knee."""
    return (rg_large / rg_small >= BIMODAL_MIN_RG_RATIO
            and q_min <= 1.0 / rg_large and 1.0 / rg_small <= q_max
            and min(share_large, share_small) >= BIMODAL_MIN_DOMINANCE)


def smoothed_log_slope(q: np.ndarray, intensity: np.ndarray, half_width_decades: float = SHOULDER_HALF_WIDTH_DECADES) -> np.ndarray:
    """Local log-log slope from a straight-line fit over +-``half_width_decades`` around each point, shape (points,).

    Smoothing over a fixed log-q width makes the slope independent of the
    point density and keeps form-factor wiggles from looking like shoulders.
    """
    lq, li = np.log10(q), np.log10(intensity)
    lo = np.searchsorted(lq, lq - half_width_decades, side="left")
    hi = np.searchsorted(lq, lq + half_width_decades, side="right")
    c = np.concatenate([[0.0], np.cumsum(lq)])
    cc = np.concatenate([[0.0], np.cumsum(lq * lq)])
    ci = np.concatenate([[0.0], np.cumsum(li)])
    cq = np.concatenate([[0.0], np.cumsum(lq * li)])
    n = (hi - lo).astype(float)
    sx, sxx, sy, sxy = c[hi] - c[lo], cc[hi] - cc[lo], ci[hi] - ci[lo], cq[hi] - cq[lo]
    denominator = n * sxx - sx * sx
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n >= 3) & (denominator > 0), (n * sxy - sx * sy) / denominator, np.nan)


def shoulder_between_knees(q: np.ndarray, total: np.ndarray, rg_large: float, rg_small: float) -> tuple[float, float]:
    """(dip, recovery) of the smoothed log-log slope of a noise-free two-population curve between q = 1/Rg_large and 1/Rg_small.

    dip is the steepest slope after the large population's knee; recovery is
    the shallowest slope after the dip, before the small population's knee.
    Two populations show a shoulder: the curve falls steeply, flattens on the
    small population's plateau, then falls again. A single elongated particle
    (rod, disc, coil) goes from its length knee to its cross-section knee on a
    steady -1 or -2 and never flattens; this is what tells them apart.
    ``q`` in 1/Å on a dense log grid, ``total`` shape (points,).
    """
    slope = smoothed_log_slope(q, total)
    inside = (q >= 1.0 / rg_large) & (q <= 1.0 / rg_small) & np.isfinite(slope)
    segment = slope[inside]
    if segment.size < 3:
        return float("nan"), float("nan")
    k = int(np.argmin(segment))
    return float(segment[k]), float(np.max(segment[k:]))


def shoulder_visible(dip: float, recovery: float) -> bool:
    """True if the slope between the knees flattens again (from :func:`shoulder_between_knees`)."""
    return bool(recovery - dip >= SHOULDER_MIN_RISE and recovery >= SHOULDER_MIN_RECOVERY)


def trailing_negative_run_fraction(intensity: np.ndarray, d_intensity: np.ndarray) -> float:
    """Fraction of points in the trailing run that is systematically negative.

    z = I/dI is averaged over a centred window of :data:`NEGATIVE_RUN_WINDOW`
    points (shrinking at the ends); the run is the last points whose mean z is
    below :data:`NEGATIVE_RUN_Z`. Scattered negative noise around zero gives
    a run of (almost) zero length.
    """
    z = intensity / d_intensity
    half = NEGATIVE_RUN_WINDOW // 2
    csum = np.concatenate([[0.0], np.cumsum(z)])
    idx = np.arange(z.size)
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, z.size)
    mean = (csum[hi] - csum[lo]) / (hi - lo)
    negative = mean < NEGATIVE_RUN_Z
    if not negative[-1]:
        return 0.0
    run = int(np.argmin(negative[::-1])) if not negative.all() else z.size
    return run / z.size


def model_negative_run(q: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(trailing negative fraction, slope before the crossing) of a noise-free curve.

    The slope is the log-log slope between the last two positive points before
    the trailing negative run (NaN if there are fewer than two).
    """
    negative = expected < 0
    if not negative[-1]:
        return 0.0, float("nan")
    run = int(np.argmin(negative[::-1])) if not negative.all() else expected.size
    c = expected.size - run
    if c < 2 or expected[c - 2] <= 0:
        return run / expected.size, float("nan")
    slope = math.log(expected[c - 1] / expected[c - 2]) / math.log(q[c - 1] / q[c - 2])
    return run / expected.size, slope


def oversubtracted_visible(noisy_run: float, model_run: float, slope: float) -> bool:
    """Systematically negative over the last >= 10 % of points, falling faster than q^-4 before."""
    return noisy_run >= NEGATIVE_MIN_RUN_FRACTION and model_run >= NEGATIVE_MIN_RUN_FRACTION and slope < OVERSUBTRACTED_MAX_SLOPE


def spike_count(intensity: np.ndarray, expected: np.ndarray, d_intensity: np.ndarray) -> int:
    """Number of points deviating from the noise-free curve by at least 5 sigma."""
    return int(np.sum(np.abs(intensity - expected) >= SPIKE_MIN_SIGMA * d_intensity))


def spikes_visible(count: int, n_points: int) -> bool:
    """At least 1 % of the points (and at least one) are >= 5 sigma spikes."""
    return count >= max(1, math.ceil(SPIKE_MIN_FRACTION * n_points))


def step_factor(intensity: np.ndarray, expected: np.ndarray, d_intensity: np.ndarray,
                boundary: int, span: int = 8) -> float:
    """Measured multiplicative step at index ``boundary`` (first point of the new segment).

    Inverse-variance weighted mean of I/expected over ``span`` points after the
    boundary divided by the same over ``span`` points before; >= 1 (the
    larger of the ratio and its inverse).
    """
    def weighted(sl: slice) -> float:
        ratio = intensity[sl] / expected[sl]
        w = (expected[sl] / d_intensity[sl]) ** 2
        return float(np.sum(w * ratio) / np.sum(w))

    before = weighted(slice(max(boundary - span, 0), boundary))
    after = weighted(slice(boundary, boundary + span))
    if before <= 0 or after <= 0:
        return float("nan")
    r = after / before
    return max(r, 1.0 / r)


def low_q_distortion(distorted: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    """(distortion factor at q_min, fraction of points distorted by more than 5 %).

    The factor is max(r, 1/r) with r = distorted/clean at the first point.
    """
    r = distorted / clean
    factor = float(max(r[0], 1.0 / r[0]))
    affected = np.abs(r - 1.0) > 0.05
    return factor, float(np.sum(affected)) / r.size


def low_q_artefact_visible(factor: float, affected_fraction: float) -> bool:
    """The first points are distorted by >= 2x and at most the first 10 % of points are touched."""
    return factor >= LOW_Q_MIN_DISTORTION and 0 < affected_fraction <= LOW_Q_MAX_AFFECTED_FRACTION


# ----------------------------------------------------------------------------- visibility (taxonomy version 2)

#: An anomaly must move at least this many points (docs/taxonomy.md, "Visibility") ...
VISIBLE_MIN_POINTS = 5
#: ... or this many for isolated spikes ...
VISIBLE_MIN_SPIKE_POINTS = 3
#: ... or this many for bad points at the beamstop edge ("a single point or a few points"),
VISIBLE_MIN_EDGE_POINTS = 1
#: each by more than this many sigma ...
VISIBLE_MIN_SIGMA = 4.0
#: ... and by more than this fraction of the clean intensity.
VISIBLE_MIN_RELATIVE = 0.2
#: An over-subtracted curve must fall below this many sigma on VISIBLE_MIN_POINTS points.
OVERSUBTRACTED_VISIBLE_SIGMA = -3.0


def moved_points(with_anomaly: np.ndarray, counterpart: np.ndarray, d_intensity: np.ndarray) -> np.ndarray:
    """Mask (points,) of points an anomaly moves by > 4 sigma and by > 20 % of the clean intensity.

    ``with_anomaly`` and ``counterpart`` are the noise-free (or, for spikes, the
    measured) curve with the anomaly and its clean counterpart (same particles,
    instrument and reduction without that anomaly); ``d_intensity`` the
    one-sigma uncertainty. All shape (points,).
    """
    delta = np.abs(with_anomaly - counterpart)
    return (delta > VISIBLE_MIN_SIGMA * d_intensity) & (delta > VISIBLE_MIN_RELATIVE * np.abs(counterpart))


def visibility_key(anomaly: str) -> str:
    """Name of the criterion that stores an anomaly's visibility score (points moved), e.g. ``visibility_artefact``.

    Every simulated curve records one per anomaly present (docs/taxonomy.md, version 2); the
    features file, the evaluation and the contact sheet read it back under this name.
    """
    return f"visibility_{anomaly}"


def visibility_score(with_anomaly: np.ndarray, counterpart: np.ndarray, d_intensity: np.ndarray) -> int:
    """The visibility score of an anomaly: the number of points it moves visibly (:func:`moved_points`)."""
    return int(np.sum(moved_points(with_anomaly, counterpart, d_intensity)))


def oversubtraction_score(expected: np.ndarray, d_intensity: np.ndarray) -> int:
    """Points of a noise-free curve below -3 sigma (the over-subtraction's visibility score)."""
    return int(np.sum(expected < OVERSUBTRACTED_VISIBLE_SIGMA * d_intensity))


def best_scaled(target: np.ndarray, component: np.ndarray, d_intensity: np.ndarray) -> np.ndarray:
    """``component`` times the scale that fits ``target`` best in the least-squares sense (weights 1/sigma^2)."""
    w = 1.0 / d_intensity**2
    scale = float(np.sum(w * target * component) / max(np.sum(w * component * component), 1e-300))
    return component * scale


def minimum_points(kind: str) -> int:
    """Points an anomaly of ``kind`` ("spikes", "edge_points" or anything else) must move to be visible."""
    return {"spikes": VISIBLE_MIN_SPIKE_POINTS, "edge_points": VISIBLE_MIN_EDGE_POINTS}.get(kind, VISIBLE_MIN_POINTS)
