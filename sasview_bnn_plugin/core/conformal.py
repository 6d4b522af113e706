"""Split-conformal calibration shared by the runtime and the trainer (numpy only).

Two calibrated statements about a curve, each with a guarantee that holds for
any model, provided the calibration curves and the new curve are exchangeable
(drawn the same way):

**Prediction sets** (adaptive prediction sets, APS, non-randomised) on the
posterior-mean class probabilities, shape (n, 7). The classes are sorted by
probability, most probable first (ties: lower class index first), and
included until their cumulative probability reaches the threshold ``t``: the
class that crosses ``t`` is included, and the most probable class always is.
Equivalently, class k is in the set when the probability mass of the classes
ranked *above* it is at most ``t``.

The conformity score of a labelled curve, :func:`aps_scores`, is exactly the
quantity that rule compares with ``t``, so that for every curve and threshold

    ``label in aps_sets(p, t)``  if and only if  ``aps_scores(p, label) <= t``.

Calibrating ``t`` as the split-conformal quantile of the scores of n
calibration curves (:func:`conformal_quantile`) then gives sets containing the
true class of a new curve with probability at least ``level`` (and at most
``level + 1/(n+1)`` when the scores have no ties), whatever the model.

Scoring with the mass *up to and including* the true class instead, while
still including the class that crosses ``t``, would make every set about one
class larger than needed: on calibrated Dirichlet-random probabilities with
7 classes it covers 96-99.9 % of curves at a nominal 90 % (measured while
writing this module). The mass *above* the true class is the score consistent
with the inclusion rule.

**Novelty p-values**: with in-distribution calibration novelty scores
c_1..c_n (higher = more novel), the p-value of a new score s is
(1 + #{c_i >= s}) / (n + 1). For an in-distribution curve it is uniform
(P(p <= a) <= a for every a), so "novel when p < level" flags at most a
fraction ``level`` of in-distribution curves.

The trainer imports :func:`aps_scores`, :func:`aps_sets`,
:func:`conformal_quantile` and :func:`novelty_p_values` to calibrate what it
writes into a model's ``conformal`` and ``novelty_calibration`` metadata
(see :mod:`sasview_bnn_plugin.core.model_format`).
"""

from __future__ import annotations

import math

import numpy as np


def _as_probabilities(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"probabilities must have shape (n, n_classes), got {p.shape}")
    return p


def _ranked(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, mass_above): classes by descending probability (stable), and the mass ranked above each, both (n, k).

    ``mass_above[i, r]`` is the summed probability of the r classes ranked before
    rank r of row i; it is exactly 0 for the top class.
    """
    order = np.argsort(-p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1)
    above = np.zeros_like(ranked)
    np.cumsum(ranked[:, :-1], axis=1, out=above[:, 1:])
    return order, above


def aps_scores(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """APS conformity scores of labelled curves, shape (n,).

    ``probs``: class probabilities, shape (n, n_classes) (rows sum to 1);
    ``labels``: true class indices, shape (n,). The score of a curve is the
    probability mass of the classes ranked above its true class (sorted by
    descending probability, ties by class index): 0 when the true class is the
    most probable one. It is the smallest threshold ``t`` for which
    :func:`aps_sets` contains the true class.
    """
    p = _as_probabilities(probs)
    y = np.asarray(labels)
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must have shape ({p.shape[0]},), got {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must be class indices 0..{p.shape[1] - 1}")
    order, above = _ranked(p)
    rank = np.argmax(order == y[:, None], axis=1)
    return above[np.arange(p.shape[0]), rank]


def aps_sets(probs: np.ndarray, threshold: float) -> np.ndarray:
    """APS prediction sets as a boolean mask of shape (n, n_classes), in class order.

    Classes sorted by descending probability are included until their
    cumulative probability reaches ``threshold`` (the crossing class is
    included); the most probable class is always included. Class k is in the
    set of row i exactly when ``aps_scores`` of (row i, label k) <= threshold.
    """
    p = _as_probabilities(probs)
    order, above = _ranked(p)
    keep_ranked = above <= float(threshold)
    keep_ranked[:, 0] = True
    mask = np.zeros(p.shape, dtype=bool)
    np.put_along_axis(mask, order, keep_ranked, axis=1)
    return mask


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal threshold of n calibration scores for coverage ``level``.

    The ceil((n + 1) * level)-th smallest score; ``inf`` when that exceeds n
    (too few calibration curves for this level: every set is the full set).
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if not 0.0 < level < 1.0:
        raise ValueError(f"the coverage level must be between 0 and 1, not {level}")
    if s.size == 0 or not np.isfinite(s).all():
        raise ValueError("conformal calibration needs at least one finite score")
    k = math.ceil((s.size + 1) * level - 1e-12)
    return math.inf if k > s.size else float(s[k - 1])


def novelty_p_values(scores: np.ndarray, calibration_scores: np.ndarray, *, assume_sorted: bool = False) -> np.ndarray:
    """Conformal p-values of novelty scores (higher = more novel), same shape as ``scores``.

    p = (1 + #{calibration scores >= s}) / (n + 1), computed with
    ``np.searchsorted`` on the sorted calibration scores (pass
    ``assume_sorted=True`` when they are sorted ascending already). A NaN
    score gets a NaN p-value.
    """
    s = np.asarray(scores, dtype=np.float64)
    cal = np.asarray(calibration_scores, dtype=np.float64).ravel()
    if cal.size == 0 or not np.isfinite(cal).all():
        raise ValueError("novelty calibration needs at least one finite calibration score")
    if not assume_sorted:
        cal = np.sort(cal)
    at_least = cal.size - np.searchsorted(cal, s, side="left")
    p = (1.0 + at_least) / (cal.size + 1.0)
    return np.where(np.isnan(s), np.nan, p)
