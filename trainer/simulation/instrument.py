"""Random instrument configurations and how they turn a model into a measured curve.

An :class:`Instrument` holds the measured q points (1/Å internally), the
resolution (pinhole or slit, built with sasmodels' resolution functions), the
counting-noise level, the background handling and the unit q is written in.
:func:`draw_instrument` samples SAXS-, SANS- and USAXS-like configurations.

Resolution
----------
* Pinhole (SAXS/SANS): one-sigma ``dq = dq/q · q`` with dq/q of 1 to 10 %.
  sasmodels' :class:`sasmodels.resolution.Pinhole1D` builds a *dense*
  (q_calc × q) erf matrix: 38 ms for 1000 points measured here, ten times the
  per-curve budget. :class:`BandedPinhole` builds the *same* weights (sasmodels'
  midpoint rule on :func:`sasmodels.resolution.bin_edges`, truncated at
  sasmodels' ``PINHOLE_N_SIGMA`` and renormalised) but only inside each point's
  band (sparse). Its q_calc is a log grid over sasmodels' extension limits,
  fine enough that every resolution width (and every narrow feature such as
  a Bragg peak) is sampled by many points, whatever the data spacing.
  The test suite checks it against ``Pinhole1D`` given the same q_calc.
* Slit (USAXS-like, Bonse-Hart): sasmodels' :class:`~sasmodels.resolution.Slit1D`
  weights (:class:`LazySlit1D`, :func:`slit_weights`: the same numbers, all
  points in one array operation instead of sasmodels' loop over points, which
  costs about 20 µs per point) with a slit length of 0.3 to 3 × q_max, at most
  0.1 1/Å; these curves have at most 250 points.
* Both build their weights on the first smearing only: a draw rejected
  before smearing (most rejected bimodal draws) never pays for them.

Model evaluation grid
---------------------
Smooth model components are evaluated on a log-spaced *model grid*
(:data:`POINTS_PER_DECADE` points per decade over the resolution's q_calc
range) and interpolated in log-log onto q_calc. This bounds the kernel cost
whatever the number of measured points; narrow features (Bragg peaks,
lamellar stacks) are evaluated on q_calc directly.

q sampling
----------
The measured points (:func:`draw_q_points`) are log-spaced (52 %), linear (28 %), merged from
2-3 detector distances of their own spacing and density with interleaved overlaps (12 %), or a
log grid whose step varies smoothly along q (8 %; step scans, rebinned or desmeared data): the
layouts of SasView's example files (simulator 2.5; before it, log 65 % and linear 35 %).

Noise
-----
Counting statistics: the relative error at the strongest point is
``noise_level`` (0.1 to 5 %); elsewhere ``dI = noise_level · I_ref ·
(I_gross/I_ref)^exponent`` with exponent 0.5 (Poisson) down to 0.35 (more
pixels per annulus at high q), where ``I_gross`` includes the true flat
background even when it has been subtracted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import erf
from sasmodels import resolution as sas_resolution

#: Density of the log-spaced model grid (points per decade of q).
POINTS_PER_DECADE = 120
#: Pinhole dq/q (one sigma), log-uniform: a typical SAXS/SANS camera.
DQ_OVER_Q = (0.01, 0.10)
#: Nearly unsmeared curves (simulated data, fine collimation, a model exported without resolution):
#: deep form-factor minima, drawn for this share of pinhole instruments.
FINE_DQ_OVER_Q = (0.002, 0.01)
FINE_RESOLUTION_PROBABILITY = 0.15
#: The model's q-domain in 1/Å: windows are drawn inside it.
DOMAIN = (1e-4, 1.0)


@dataclass(frozen=True)
class Configuration:
    """A family of instruments: q-window ranges (1/Å), point counts and resolution."""

    name: str
    q_min_range: tuple[float, float]
    q_max_range: tuple[float, float]
    points_range: tuple[int, int]
    resolution: str  # "pinhole" or "slit"
    weight: float


CONFIGURATIONS: tuple[Configuration, ...] = (
    Configuration("SAXS", (2e-3, 3e-2), (0.08, 1.0), (30, 1500), "pinhole", 0.42),
    Configuration("SANS", (7e-4, 1e-2), (0.03, 0.6), (30, 600), "pinhole", 0.40),
    Configuration("USAXS-pinhole", (1e-4, 1e-3), (3e-3, 0.1), (30, 500), "pinhole", 0.08),
    Configuration("USAXS-slit", (1e-4, 1e-3), (5e-3, 0.1), (40, 250), "slit", 0.10),
)


_PROBABILITIES: tuple[tuple[Configuration, ...], np.ndarray] | None = None


def _configuration_probabilities() -> np.ndarray:
    """Drawing probabilities of :data:`CONFIGURATIONS`, recomputed only when the tuple is replaced (e.g. in tests)."""
    global _PROBABILITIES
    if _PROBABILITIES is None or _PROBABILITIES[0] is not CONFIGURATIONS:
        weights = np.array([c.weight for c in CONFIGURATIONS])
        _PROBABILITIES = (CONFIGURATIONS, weights / weights.sum())
    return _PROBABILITIES[1]


def log_grid(lo: float, hi: float, n: int) -> np.ndarray:
    """n log-spaced points from lo to hi inclusive (a faster np.geomspace for positive limits)."""
    grid = np.exp(np.linspace(math.log(lo), math.log(hi), n))
    grid[0], grid[-1] = lo, hi
    return grid


class BandedPinhole(sas_resolution.Resolution):
    """sasmodels' pinhole resolution weights, computed only inside each point's band (banded).

    ``q`` (points,) and ``q_width`` (points,) are in 1/Å. ``q_calc`` is a
    log-spaced grid from sasmodels' extension limits (``PINHOLE_N_SIGMA``)
    whose relative step is at most ``max_relative_step`` and at most a third
    of the smallest dq/q, so that every resolution function is sampled by at
    least about 16 points whatever the data spacing. The weights are those of
    :func:`sasmodels.resolution.pinhole_resolution` for this q_calc
    (midpoint rule on ``bin_edges(q_calc)``, truncation, renormalisation);
    ``weight_matrix`` is their dense (q_calc, q) form, built on request.
    ``apply(theory)`` maps I on ``q_calc`` (shape (q_calc,)) to I on ``q``.
    """

    def __init__(self, q: np.ndarray, q_width: np.ndarray, max_relative_step: float | None = None) -> None:
        self.q = np.asarray(q, dtype=np.float64)
        self.q_width = np.maximum(np.asarray(q_width, dtype=np.float64), sas_resolution.MINIMUM_RESOLUTION)
        low_sigma, high_sigma = sas_resolution.PINHOLE_N_SIGMA
        step = float(np.min(self.q_width / self.q)) / 3.0
        if max_relative_step is not None:
            step = min(step, max_relative_step)
        q_lo = max(float(np.min(self.q - low_sigma * self.q_width)), sas_resolution.MINIMUM_ABSOLUTE_Q * self.q[0])
        q_hi = float(np.max(self.q + high_sigma * self.q_width))
        n_calc = int(math.ceil(math.log(q_hi / q_lo) / math.log1p(step))) + 2
        self.q_calc = log_grid(q_lo, q_hi, n_calc)
        self._weights: np.ndarray | None = None  # built on the first smearing (rejected draws never need them)

    def _build(self) -> None:
        """Compute the banded weights from q, q_width and q_calc.

        Layout (band, points): column i holds the weights of point i on q_calc
        indices ``lo_i .. lo_i + band - 1``; past the point's own band the edge
        index is clamped to its last edge, so those weights are exactly 0
        (their q_calc index is clamped into range). Summing over axis 0 adds
        each point's weights in q_calc order, as a bincount over the sparse
        entries would, so the normalisation and the smearing are the same bit
        for bit as the sparse (COO) form, with no scatter.
        """
        low_sigma, high_sigma = sas_resolution.PINHOLE_N_SIGMA
        edges = sas_resolution.bin_edges(self.q_calc)
        lo = np.searchsorted(self.q_calc, self.q - low_sigma * self.q_width, side="left")
        hi = np.searchsorted(self.q_calc, self.q + high_sigma * self.q_width, side="right")
        band = max(int(np.max(hi - lo)), 1)
        # Edge indices lo..hi (inclusive) of every point, one column per point: one erf per edge.
        edge_index = np.minimum(lo[None, :] + np.arange(band + 1)[:, None], hi[None, :])
        cdf = erf((edges[edge_index] - self.q[None, :]) / (math.sqrt(2.0) * self.q_width[None, :]))
        weights = cdf[1:] - cdf[:-1]
        sums = np.add.reduce(weights, axis=0)
        self._weights = weights / sums[None, :]
        self._rows = np.minimum(edge_index[:-1], self.q_calc.size - 1)

    @property
    def weight_matrix(self) -> np.ndarray:
        """Dense weights, shape (q_calc, q), in sasmodels' layout (for checks; not used to smear)."""
        if self._weights is None:
            self._build()
        w = np.zeros((self.q_calc.size, self.q.size))
        cols = np.broadcast_to(np.arange(self.q.size)[None, :], self._rows.shape)
        np.add.at(w, (self._rows, cols), self._weights)
        return w

    def apply(self, theory: np.ndarray) -> np.ndarray:
        """Smear I(q_calc) (shape (q_calc,)) to I(q) (shape (points,))."""
        if self._weights is None:
            self._build()
        theory = np.asarray(theory, dtype=np.float64)
        return np.add.reduce(self._weights * theory[self._rows], axis=0)


class LazySlit1D(sas_resolution.Slit1D):
    """:class:`sasmodels.resolution.Slit1D` whose weight matrix is built on first use.

    Same q_calc and the same weights as ``Slit1D(q, q_length=..., q_calc=...)``
    (sasmodels' own code, run later): building them costs about 20 µs per
    point, and a draw rejected before smearing never needs them.
    """

    def __init__(self, q: np.ndarray, q_length: float, q_calc: np.ndarray | None = None) -> None:
        self.q_length, self.q_width = q_length, None
        self._q_length = np.ones(len(q)) * q_length
        self._q_width = np.zeros(len(q))
        self.q = q.flatten()
        q_calc = (sas_resolution.slit_extend_q(q, q_length=self._q_length, q_width=self._q_width)
                  if q_calc is None else np.sort(q_calc))
        cutoff = sas_resolution.MINIMUM_ABSOLUTE_Q * np.min(self.q)
        self._signed_q_calc = q_calc[abs(q_calc) >= cutoff]
        self.q_calc = abs(self._signed_q_calc)
        self._matrix: np.ndarray | None = None

    @property
    def weight_matrix(self) -> np.ndarray:  # type: ignore[override]
        """Dense weights, shape (q_calc, q), from :func:`sasmodels.resolution.slit_resolution`."""
        if self._matrix is None:
            self._matrix = slit_weights(self._signed_q_calc, self.q, float(self.q_length))
        return self._matrix


def slit_weights(q_calc: np.ndarray, q: np.ndarray, q_length: float) -> np.ndarray:
    """sasmodels' slit-length weight matrix (zero slit width), shape (q_calc, q), all points at once.

    The same arithmetic as :func:`sasmodels.resolution.slit_resolution` with
    ``q_width=0`` (its ``_q_perp_weights`` per point: the u-substitution
    midpoint rule on ``bin_edges(q_calc)``), element by element, so the same
    weights bit for bit; sasmodels loops over the points in Python (about 20 µs
    each), this is one (points, edges) array operation.
    """
    q_edges = sas_resolution.bin_edges(q_calc)
    q = np.asarray(q, dtype=np.float64)
    # sasmodels squares the scalars qi and u_limit with pow(), which differs from
    # an array's x*x in the last bit now and then: square them the same way.
    qi_sq = np.array([float(qi) ** 2 for qi in q])
    u_limit = np.sqrt(qi_sq + q_length**2)
    top = np.array([float(u) ** 2 for u in u_limit]) - qi_sq
    u_edges = q_edges[None, :] ** 2 - qi_sq[:, None]
    u_edges[q_edges[None, :] < np.abs(q)[:, None]] = 0.0
    above = q_edges[None, :] > u_limit[:, None]
    u_edges[above] = np.broadcast_to(top[:, None], u_edges.shape)[above]
    return (np.diff(np.sqrt(u_edges), axis=1) / q_length).T


@dataclass
class Instrument:
    """One random instrument configuration; q, dq and slit_length in 1/Å."""

    configuration: str
    q: np.ndarray
    spacing: str
    resolution_kind: str
    dq_over_q: float
    slit_length: float
    noise_level: float
    noise_exponent: float
    background_mode: str
    background_ratio: float
    unit: str
    resolution: sas_resolution.Resolution = field(repr=False)

    @property
    def q_calc(self) -> np.ndarray:
        """Points where the theory must be evaluated before smearing (1/Å)."""
        return self.resolution.q_calc

    @property
    def dq(self) -> np.ndarray:
        """One-sigma pinhole width per point (1/Å), NaN for slit-smeared curves."""
        if self.resolution_kind == "pinhole":
            return self.dq_over_q * self.q
        return np.full(self.q.shape, np.nan)

    def model_grid(self) -> np.ndarray:
        """Log-spaced grid covering q_calc with POINTS_PER_DECADE points per decade (1/Å)."""
        lo, hi = float(self.q_calc[0]), float(self.q_calc[-1])
        n = max(int(math.ceil(math.log10(hi / lo) * POINTS_PER_DECADE)) + 1, 8)
        return log_grid(lo, hi, n)

    def record(self) -> dict[str, float | str]:
        """Settings for SimulatedCurve.instrument (q values in the output unit)."""
        factor = 10.0 if self.unit == "1/nm" else 1.0
        return {
            "configuration": self.configuration,
            "q_min": float(self.q[0] * factor),
            "q_max": float(self.q[-1] * factor),
            "n_points": float(self.q.size),
            "spacing": self.spacing,
            "resolution": self.resolution_kind,
            "dq_over_q": self.dq_over_q if self.resolution_kind == "pinhole" else float("nan"),
            "slit_length": self.slit_length * factor if self.resolution_kind == "slit" else float("nan"),
            "noise_level": self.noise_level,
            "noise_exponent": self.noise_exponent,
            "background_mode": self.background_mode,
            "background_ratio": self.background_ratio,
            "unit": self.unit,
        }


#: Smallest step in ln q between two points of a merged layout (0.01 %: closer points count as one).
MIN_LOG_STEP = 1e-4
#: How the measured q points are laid out, and how often (module docstring, "q sampling").
SPACINGS: tuple[tuple[str, float], ...] = (("log", 0.52), ("linear", 0.28), ("merged", 0.12), ("irregular", 0.08))


def draw_q_points(u: float, q_min: float, q_max: float, n: int) -> tuple[str, np.ndarray]:
    """(spacing, q) of about ``n`` measured points from ``q_min`` to ``q_max`` (1/Å), sorted.

    ``u`` (uniform in [0, 1)) picks the layout of :data:`SPACINGS` and seeds the draws of the
    "merged" and "irregular" layouts, so that the caller's random stream is the same for every
    layout. "merged": 2-3 detector distances (segments), each log- or linear-spaced with its own
    density (up to 6x apart), overlapping their neighbour by up to 15 % of its log-width, the
    points of an overlap interleaved; "irregular": a log grid whose step drifts smoothly along q
    (e^(a·g), a of 0.2-0.7, g smoothed unit Gaussian noise clipped to ±2) (Bonse-Hart step scans, rebinned or desmeared data).
    """
    edges = np.cumsum([w for _, w in SPACINGS])
    kind = SPACINGS[min(int(np.searchsorted(edges, u * edges[-1], side="right")), len(SPACINGS) - 1)][0]
    if kind == "log":
        return kind, log_grid(q_min, q_max, n)
    if kind == "linear":
        return kind, np.linspace(q_min, q_max, n)
    local = np.random.default_rng([int(u * 2**53), 0x9A11])
    lo, hi = math.log(q_min), math.log(q_max)
    if kind == "irregular":
        drift = np.clip(_smooth_noise(local, n - 1, max(2, (n - 1) // local.integers(3, 12))), -2.0, 2.0)
        steps = np.exp(local.uniform(0.2, 0.7) * drift)
        logs = lo + (hi - lo) * np.concatenate([[0.0], np.cumsum(steps) / steps.sum()])
        q = np.exp(logs)
        q[0], q[-1] = q_min, q_max
        return kind, q
    k = int(local.integers(2, 4))
    cuts = np.sort(local.uniform(0.2, 0.8, k - 1)) if k == 2 else np.sort(local.dirichlet(np.full(k, 3.0)).cumsum()[:-1])
    bounds = np.concatenate([[0.0], cuts, [1.0]])
    density = np.exp(local.uniform(0.0, math.log(6.0), k))
    share = density * np.diff(bounds)
    counts = np.maximum(np.round(n * share / share.sum()).astype(int), 4)
    parts = []
    for i in range(k):
        a, b = bounds[i], bounds[i + 1]
        width = b - a
        if i > 0:
            a -= local.uniform(0.0, 0.15) * width
        if i < k - 1:
            b += local.uniform(0.0, 0.15) * width
        s_lo, s_hi = lo + (hi - lo) * max(a, 0.0), lo + (hi - lo) * min(b, 1.0)
        if local.random() < 0.6:
            parts.append(np.exp(np.linspace(s_lo, s_hi, counts[i])))
        else:
            parts.append(np.linspace(math.exp(s_lo), math.exp(s_hi), counts[i]))
    q = np.unique(np.concatenate(parts))
    q[0], q[-1] = q_min, q_max
    # Interleaved overlaps may put two points within rounding of each other (a segment's end, exp(log q_max), next to
    # q_max): keep the first of points closer than MIN_LOG_STEP, so that every step in log q is a real one.
    keep = np.concatenate([[True], np.diff(np.log(q)) > MIN_LOG_STEP])
    q = q[keep]
    q[-1] = q_max
    return kind, q


def _smooth_noise(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """n values of unit-variance Gaussian noise smoothed over about ``width`` neighbours (a moving average)."""
    raw = rng.standard_normal(n + width - 1)
    smooth = np.convolve(raw, np.ones(width) / math.sqrt(width), mode="valid")
    return smooth[:n]


def draw_instrument(rng: np.random.Generator, min_decades: float = 0.7, max_relative_step: float | None = None) -> Instrument:
    """A random SAXS/SANS/USAXS-like instrument whose window spans at least ``min_decades``.

    ``max_relative_step`` forces a finer q_calc, pinhole or slit (for narrow
    features such as Bragg peaks).
    """
    conf = CONFIGURATIONS[int(rng.choice(len(CONFIGURATIONS), p=_configuration_probabilities()))]
    for _ in range(100):
        q_min = math.exp(rng.uniform(*np.log(conf.q_min_range)))
        q_max = math.exp(rng.uniform(*np.log(conf.q_max_range)))
        if math.log10(q_max / q_min) >= min_decades:
            break
    else:
        q_max = min(q_min * 10 ** (min_decades + 0.2), DOMAIN[1])
        q_min = min(q_min, q_max / 10 ** min_decades)
    q_min = max(q_min, DOMAIN[0])
    q_max = min(q_max, DOMAIN[1])
    n = int(round(math.exp(rng.uniform(math.log(conf.points_range[0]), math.log(conf.points_range[1])))))
    spacing, q = draw_q_points(float(rng.random()), q_min, q_max, n)
    n = q.size  # a merged layout has about n points
    dq_over_q = float("nan")
    slit = float("nan")
    if conf.resolution == "pinhole":
        low, high = FINE_DQ_OVER_Q if rng.random() < FINE_RESOLUTION_PROBABILITY else DQ_OVER_Q
        dq_over_q = math.exp(rng.uniform(math.log(low), math.log(high)))
        resolution: sas_resolution.Resolution = BandedPinhole(q, dq_over_q * q, max_relative_step)
    else:
        slit = q_max * math.exp(rng.uniform(math.log(0.3), math.log(3.0)))
        slit = min(slit, 0.1)
        q_calc = None
        if max_relative_step is not None:
            # sasmodels' own extension limits, sampled finely enough for narrow peaks.
            default = sas_resolution.slit_extend_q(q, q_length=np.full(n, slit), q_width=np.zeros(n))
            step = min(max_relative_step, math.log(q_max / q_min) / (n - 1))
            q_calc = log_grid(float(default[0]), float(default[-1]),
                              int(math.ceil(math.log(default[-1] / default[0]) / step)) + 2)
        resolution = LazySlit1D(q, q_length=slit, q_calc=q_calc)
    noise_level = math.exp(rng.uniform(math.log(1e-3), math.log(5e-2)))
    return Instrument(
        configuration=conf.name,
        q=q,
        spacing=spacing,
        resolution_kind=conf.resolution,
        dq_over_q=dq_over_q,
        slit_length=slit,
        noise_level=noise_level,
        noise_exponent=float(rng.uniform(0.35, 0.5)),
        background_mode="flat" if rng.random() < 0.5 else "subtracted",
        # SANS keeps a flat incoherent background (hydrogen) of up to a few % of the forward intensity.
        background_ratio=math.exp(rng.uniform(math.log(1e-5), math.log(5e-2 if conf.name == "SANS" else 1e-2))),
        unit="1/nm" if rng.random() < 0.3 else "1/A",
        resolution=resolution,
    )


def interpolate_loglog(grid: np.ndarray, values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Interpolate strictly positive ``values`` on increasing ``grid`` onto ``q`` in log-log."""
    return np.exp(np.interp(np.log(q), np.log(grid), np.log(values)))


def counting_noise(instrument: Instrument, gross: np.ndarray, reference: float) -> np.ndarray:
    """One-sigma uncertainty per point from the gross (signal + true background) intensity.

    ``reference`` is the strongest gross intensity; at it the relative error is
    ``noise_level``; shape (points,).
    """
    ratio = np.maximum(gross, 1e-12 * reference) / reference
    return instrument.noise_level * reference * ratio**instrument.noise_exponent
