"""Is there any scattering signal at all? Two tests of "flat within the noise"; featureless when neither sees a signal.

An empty cell, a blank or a detector-noise measurement is not a curve of any
class (docs/taxonomy.md: a curve without a feature that survives the
visibility test is *novel*). The network, which never saw such curves as a
class, can still give them a label, so the runtime asks the data first:

    H0: I(q) = c + noise, c a constant.

1. *Against the stated error bars*: noise of standard deviation dI(q). The
   weighted mean c is fitted, chi2 = sum(((I - c) / dI)^2) has n - 1 degrees
   of freedom under H0 (:func:`chi2_sf`, the Wilson-Hilferty approximation of
   the chi-square tail, accurate to about 1e-3 for n >= 10).
2. *Against the curve's own scatter*: noise of standard deviation s * dI(q),
   s unknown. The error bars files report are often off by a large factor for
   the whole curve (on SasView's example files the point-to-point scatter is
   0.04x to 28,000x the reported dI; docs/experiments/sim24_breadth.md): a
   weak curve whose error bars are 30x too large passes test 1 as flat. The
   points, in q order, are taken in pairs (0, 1), (2, 3), …; for Gaussian
   noise a pair's weighted mean a_j and its normalised difference
   d_j = (I_2 - I_1) / sqrt(dI_1^2 + dI_2^2) are independent, so with m pairs

       F = [sum_j w_j (a_j - c)^2 / (m - 1)] / [sum_j d_j^2 / m],
       w_j = dI_1^-2 + dI_2^-2, c = sum_j w_j a_j / sum_j w_j,

   follows Fisher's F(m - 1, m) under H0 for any s, exactly (:func:`f_sf`,
   the regularised incomplete beta function). This test alone is not enough:
   a curve whose signal changes faster than its sampling (Bragg peaks a few
   points wide) puts its signal into the differences too (measured: it calls
   2.4 % of simulator-2.4 test curves flat, most of them ordered), so it only
   overrules test 1, never replaces it.

:func:`flatness_p_value` returns the smaller p-value of the two: any real form
factor, power law or peak measured with counting statistics gives p ~ 0 in
one of them; a blank gives p spread over (0, 1) in both. A curve is called
*featureless* when p >= :data:`FLATNESS_LEVEL` (no evidence of a signal at
that level in either test; a blank is missed at most twice as often as the
level): the runtime marks it novel with a note, whatever the network says.

Measured on 20,000 simulator-2.4 test curves (seed 6006; 30 % of them with
error bars off by 0.03x-30x): test 1 alone calls 1.6 % of those with dI
featureless, both together 0.06 %; 99.8 % of the synthetic blanks are
featureless either way. The test needs error bars: without positive finite
dI for at least :data:`MIN_POINTS` points it returns None (no verdict; test 2
alone, with equal weights, calls 2.1 % of such test curves flat).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: Flatness p-value at or above which a curve is called featureless (no signal at the 0.1 % level).
FLATNESS_LEVEL = 1e-3
#: Points with usable error bars the test needs (five pairs).
MIN_POINTS = 10


def chi2_sf(chi2: float, dof: int) -> float:
    """Upper tail P(X >= chi2) of a chi-square distribution with ``dof`` degrees of freedom (Wilson-Hilferty)."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {dof}")
    if chi2 <= 0:
        return 1.0
    k = float(dof)
    z = ((chi2 / k) ** (1.0 / 3.0) - (1.0 - 2.0 / (9.0 * k))) / math.sqrt(2.0 / (9.0 * k))
    return 0.5 * math.erfc(z / math.sqrt(2.0))


#: Continued-fraction terms of the incomplete beta function at most (converges in far fewer for the F tails used).
_MAX_TERMS = 300


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes' betacf)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, _MAX_TERMS + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError(f"a and b must be positive, got {a} and {b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def f_sf(f: float, dfn: int, dfd: int) -> float:
    """Upper tail P(X >= f) of Fisher's F distribution with (``dfn``, ``dfd``) degrees of freedom."""
    if dfn < 1 or dfd < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {dfn} and {dfd}")
    if not f > 0:
        return 1.0
    if math.isinf(f):
        return 0.0
    return incomplete_beta(0.5 * dfd, 0.5 * dfn, dfd / (dfd + dfn * f))


def flatness_p_value(intensity: np.ndarray, d_intensity: np.ndarray | None, q: np.ndarray | None = None) -> float | None:
    """p-value of "I is a constant plus noise" (the smaller of the two tests' p-values); None without usable error bars.

    ``intensity`` and ``d_intensity`` have shape (points,), any intensity unit (the same for both); ``q``
    (points,), any unit, orders the points for the scatter test (None: they are in q order already). Points
    with non-finite I or non-positive/non-finite dI are ignored.
    """
    return flatness_p_values([(intensity, d_intensity, q)])[0]


def _usable(curve: tuple) -> tuple[np.ndarray, np.ndarray] | None:
    """(I, dI) of a curve's usable points in q order; None: no test (no dI, or not one per point)."""
    intensity, d_intensity = curve[0], curve[1]
    q = curve[2] if len(curve) > 2 else None
    if d_intensity is None:
        return None
    i = np.asarray(intensity, dtype=np.float64).ravel()
    di = np.asarray(d_intensity, dtype=np.float64).ravel()
    if i.size == 0 or di.shape != i.shape:
        return None
    if q is not None:
        q_arr = np.asarray(q, dtype=np.float64).ravel()
        if q_arr.shape != i.shape:
            return None
        order = np.argsort(q_arr, kind="stable")
        i, di = i[order], di[order]
    ok = np.isfinite(i) & np.isfinite(di) & (di > 0)
    return i[ok], di[ok]


def flatness_p_values(curves: Sequence[tuple]) -> list[float | None]:
    """:func:`flatness_p_value` of each (I, dI) or (I, dI, q) tuple of ``curves`` (arrays of shape (points,); dI may
    be None). The curves with the same number n of usable points are tested together, their points as the rows of
    one (curves, n) array: each row's sums are those of the curve alone, bit for bit."""
    out: list[float | None] = [None] * len(curves)
    by_length: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for k, curve in enumerate(curves):
        usable = _usable(curve)
        if usable is not None and usable[0].size >= MIN_POINTS:
            by_length.setdefault(usable[0].size, []).append((k, *usable))
    for n, members in by_length.items():
        i_n = np.stack([member[1] for member in members])
        di_n = np.stack([member[2] for member in members])
        # 1. against the stated error bars
        w = 1.0 / di_n**2
        level = np.sum(w * i_n, axis=1) / np.sum(w, axis=1)
        chi2 = np.sum(w * (i_n - level[:, None]) ** 2, axis=1)
        # 2. against the curve's own scatter: pairs of neighbours
        m = n // 2
        i, di, w = i_n[:, : 2 * m].reshape(-1, m, 2), di_n[:, : 2 * m].reshape(-1, m, 2), w[:, : 2 * m].reshape(-1, m, 2)
        pair_weight = w[..., 0] + w[..., 1]
        pair_mean = (w[..., 0] * i[..., 0] + w[..., 1] * i[..., 1]) / pair_weight
        pair_level = np.sum(pair_weight * pair_mean, axis=1) / np.sum(pair_weight, axis=1)
        between = np.sum(pair_weight * (pair_mean - pair_level[:, None]) ** 2, axis=1) / (m - 1)
        within = np.sum((i[..., 1] - i[..., 0]) ** 2 / (di[..., 0] ** 2 + di[..., 1] ** 2), axis=1) / m
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = between / within
        for (k, _, _), stated, scatter in zip(members, chi2.tolist(), ratio.tolist()):
            p_stated = chi2_sf(stated, n - 1)
            if p_stated == 0.0 and scatter >= 2.0:
                # a curve with a signal: the smaller p-value is 0 whatever the scatter test's (which is >= 0 there:
                # F >= 2 puts x = m / (m + (m - 1) F) below the first branch's bound of incomplete_beta), so it is not
                # computed (its continued fraction cost more than everything else of the test)
                out[k] = 0.0
                continue
            # no scatter between neighbours at all: only the stated error bars can judge
            p_scatter = 1.0 if math.isnan(scatter) else f_sf(scatter, m - 1, m)
            out[k] = min(p_stated, p_scatter)
    return out


def is_featureless(p_value: float | None, level: float = FLATNESS_LEVEL) -> bool:
    """True when the flatness test ran and found no signal (p >= level)."""
    return p_value is not None and p_value >= level
