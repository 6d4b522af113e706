"""Is there any scattering signal at all? A chi-square test of "flat within the error bars".

An empty cell, a blank or a detector-noise measurement is not a curve of any
class (docs/taxonomy.md: a curve without a feature that survives the
visibility test is *novel*). The network, which never saw such curves as a
class, can still give them a label, so the runtime asks the data first:

    H0: I(q) = c + noise with the stated standard deviations dI(q).

The weighted mean c is fitted, chi2 = sum(((I - c) / dI)^2) has n - 1 degrees
of freedom under H0, and :func:`flatness_p_value` returns the probability of
a chi2 at least this large under H0 (Wilson-Hilferty approximation of the
chi-square tail, accurate to about 1e-3 for n >= 10; numpy only). Any real
form factor, power law or peak measured with counting statistics gives
chi2/dof in the hundreds and p ~ 0; a blank gives p spread uniformly over
(0, 1). A curve is called *featureless* when p >= :data:`FLATNESS_LEVEL`
(there is no evidence of a signal at that level): the runtime marks it novel
with a note, whatever the network says.

The test needs error bars: without positive finite dI for at least
:data:`MIN_POINTS` points it returns None (no verdict), and it says nothing
about curves whose error bars are wrong by a large factor (overestimated
error bars make a curve look flat, which the note then states plainly).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: Flatness p-value at or above which a curve is called featureless (no signal at the 0.1 % level).
FLATNESS_LEVEL = 1e-3
#: Points with usable error bars the test needs.
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


def flatness_p_value(intensity: np.ndarray, d_intensity: np.ndarray | None) -> float | None:
    """p-value of "I is a constant plus noise of standard deviation dI"; None without usable error bars.

    ``intensity`` and ``d_intensity`` have shape (points,), any intensity unit
    (the same for both). Points with non-finite I or non-positive/non-finite dI are ignored.
    """
    return flatness_p_values([(intensity, d_intensity)])[0]


def flatness_p_values(curves: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> list[float | None]:
    """:func:`flatness_p_value` of each (I, dI) pair of ``curves`` (arrays of shape (points,)): with the weights
    w = 1/dI^2 of the usable points, the weighted mean c = sum(w I) / sum(w) and chi2 = sum(w (I - c)^2) with
    n - 1 degrees of freedom. The curves with the same number n of usable points are tested together, their
    points as the rows of one (curves, n) array: each row's sums are those of the curve alone, bit for bit."""
    out: list[float | None] = [None] * len(curves)
    tested: list[int] = []
    intensities: list[np.ndarray] = []
    uncertainties: list[np.ndarray] = []
    for k, (intensity, d_intensity) in enumerate(curves):
        if d_intensity is None:
            continue
        i = np.asarray(intensity, dtype=np.float64).ravel()
        di = np.asarray(d_intensity, dtype=np.float64).ravel()
        if i.shape != di.shape or i.size == 0:
            continue
        tested.append(k)
        intensities.append(i)
        uncertainties.append(di)
    if not tested:
        return out
    i = np.concatenate(intensities)
    di = np.concatenate(uncertainties)
    curve_of = np.repeat(np.arange(len(tested)), [a.shape[0] for a in intensities])
    ok = np.isfinite(i) & np.isfinite(di) & (di > 0)
    i, di, curve_of = i[ok], di[ok], curve_of[ok]
    counts = np.bincount(curve_of, minlength=len(tested))
    for n in np.unique(counts[counts >= MIN_POINTS]).tolist():
        members = np.flatnonzero(counts == n)
        rows = np.isin(curve_of, members)
        i_n, di_n = i[rows].reshape(-1, n), di[rows].reshape(-1, n)
        w = 1.0 / di_n**2
        level = np.sum(w * i_n, axis=1) / np.sum(w, axis=1)
        chi2 = np.sum(w * (i_n - level[:, None]) ** 2, axis=1)
        for member, value in zip(members.tolist(), chi2.tolist()):
            out[tested[member]] = chi2_sf(value, n - 1)
    return out


def is_featureless(p_value: float | None, level: float = FLATNESS_LEVEL) -> bool:
    """True when the flatness test ran and found no signal (p >= level)."""
    return p_value is not None and p_value >= level
