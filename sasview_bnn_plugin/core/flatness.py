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
    if d_intensity is None:
        return None
    i = np.asarray(intensity, dtype=np.float64).ravel()
    di = np.asarray(d_intensity, dtype=np.float64).ravel()
    if i.shape != di.shape:
        return None
    ok = np.isfinite(i) & np.isfinite(di) & (di > 0)
    n = int(ok.sum())
    if n < MIN_POINTS:
        return None
    w = 1.0 / di[ok] ** 2
    level = float(np.sum(w * i[ok]) / np.sum(w))
    chi2 = float(np.sum(w * (i[ok] - level) ** 2))
    return chi2_sf(chi2, n - 1)


def is_featureless(p_value: float | None, level: float = FLATNESS_LEVEL) -> bool:
    """True when the flatness test ran and found no signal (p >= level)."""
    return p_value is not None and p_value >= level
