"""Where in q: the q-ranges that drove a verdict, by occluding windows of the model input.

A classified curve's model input, ``features`` of shape (4, 256) (see
:mod:`sasview_bnn_plugin.core.preprocessing`), is copied once per window of
``window_bins`` consecutive q bins (default 8: 32 windows over the model's
q-domain, 1/8 decade each for 256 bins over 1e-4 to 1 1/Å), and in each copy
the window is replaced by a neutral value, channel by channel:

- ``intensity``: the straight line between the nearest measured bins just
  outside the window (the channel is logarithmic in I and the bins are
  log-spaced in q, so this is a power law across the window); at an end of the
  measured range the nearest measured bin is continued flat. This removes a
  peak, spike, upturn, step or minimum inside the window and keeps the level
  around it.
- ``coverage``: unchanged: the window is still measured; occlusion asks what the
  data in it contribute, not what their absence would.
- ``outlier`` and ``jump``: 0, the value of a smooth curve (no outlier, no jump).

Only windows that overlap the measured range are occluded; the others have
nothing to remove and their drop is NaN. The original input and every occluded
copy go through the classifier's onnxruntime session in ONE call (one
contiguous float32 batch of 1 + windows inputs).

For the class c of the verdict (largest posterior-mean probability), the drop
of window w for posterior sample s is p_s(c | original) - p_s(c | w occluded);
the map is its mean over the S samples, with the standard deviation and 90 %
interval (5th to 95th percentile) over the samples as its spread. A positive
drop means the data in the window support the verdict; a negative one, that
they speak against it.

The **strongest q-range** is the window of the largest mean drop, widened over
the contiguous neighbouring windows whose mean drop is at least
:data:`STRONGEST_FRACTION` (half) of it; its limits are the outer bin edges.

numpy only, plus the classifier's session; nothing is computed unless asked
for (``classify --explain``, the perspective's "where in q" box).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.preprocessing import CurveError, ModelInput, q_unit_factor
from ..core.taxonomy import CLASS_NAMES

if TYPE_CHECKING:
    from .classifier import BNNClassifier
    from ..core.curve import Curve
    from ..core.result import ClassificationResult

#: Bins per occluded window (256 bins: 32 windows).
DEFAULT_WINDOW_BINS = 8
#: Neighbouring windows join the strongest q-range while their mean drop is at least this fraction of its peak.
STRONGEST_FRACTION = 0.5

_INTENSITY, _COVERAGE, _OUTLIER, _JUMP = 0, 1, 2, 3


def occlusion_windows(n_bins: int, window_bins: int = DEFAULT_WINDOW_BINS) -> list[tuple[int, int]]:
    """The (start, stop) bin ranges of the windows: consecutive, ``window_bins`` wide (the last may be narrower)."""
    if window_bins < 1:
        raise ValueError("window_bins must be at least 1")
    return [(start, min(start + window_bins, n_bins)) for start in range(0, n_bins, window_bins)]


def occlude_window(features: np.ndarray, start: int, stop: int) -> np.ndarray:
    """A copy of ``features`` (4, bins) with bins [start, stop) replaced by neutral values (module docstring)."""
    out = np.array(features, dtype=np.float32, copy=True)
    covered = out[_COVERAGE] > 0.5
    inside = np.zeros(out.shape[1], dtype=bool)
    inside[start:stop] = True
    target = inside & covered
    if not target.any():
        return out
    left = start - 1 if start >= 1 and covered[start - 1] else None
    right = stop if stop < out.shape[1] and covered[stop] else None
    intensity = out[_INTENSITY]
    index = np.flatnonzero(target)
    if left is not None and right is not None:
        intensity[index] = np.interp(index, [left, right], [intensity[left], intensity[right]])
    elif left is not None or right is not None:
        intensity[index] = intensity[left if left is not None else right]
    out[_OUTLIER, index] = 0.0
    out[_JUMP, index] = 0.0
    return out


@dataclass
class Sensitivity:
    """The occlusion map of one verdict.

    Arrays have one value per window, shape (windows,), except ``q_edges``
    (windows + 1,), the windows' limits in 1/Å. Drops are NaN for windows
    outside the measured range. ``q_unit`` is the unit the curve was read in
    ("1/A" or "1/nm"), used for :attr:`q_centres` and :attr:`explain_q_range`.
    """

    class_name: str
    q_edges: np.ndarray
    drop_mean: np.ndarray
    drop_std: np.ndarray
    drop_low: np.ndarray
    drop_high: np.ndarray
    #: First and last window (inclusive) of the strongest q-range.
    strongest: tuple[int, int]
    #: Posterior-mean probability of the class on the original input.
    baseline: float
    q_unit: str = "1/A"
    window_bins: int = DEFAULT_WINDOW_BINS
    n_samples: int = 0

    @property
    def q_centres_inverse_angstrom(self) -> np.ndarray:
        """Geometric centres of the windows in 1/Å, shape (windows,)."""
        return np.sqrt(self.q_edges[:-1] * self.q_edges[1:])

    @property
    def _per_inverse_angstrom(self) -> float:
        """1/Å per unit of :attr:`q_unit` (1 for 1/Å, 0.1 for 1/nm)."""
        try:
            return q_unit_factor(self.q_unit)[0]
        except CurveError:
            return 1.0

    @property
    def q_centres(self) -> np.ndarray:
        """Centres of the windows in the curve's unit, shape (windows,)."""
        return self.q_centres_inverse_angstrom / self._per_inverse_angstrom

    @property
    def strongest_q_range_inverse_angstrom(self) -> tuple[float, float]:
        """(q_lo, q_hi) of the strongest q-range in 1/Å."""
        first, last = self.strongest
        return float(self.q_edges[first]), float(self.q_edges[last + 1])

    @property
    def explain_q_range(self) -> tuple[float, float]:
        """(q_lo, q_hi) of the strongest q-range in the curve's unit."""
        lo, hi = self.strongest_q_range_inverse_angstrom
        factor = self._per_inverse_angstrom
        return lo / factor, hi / factor

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None): what ``classify --explain`` writes as ``sensitivity``."""

        def numbers(values: Any) -> list[float | None]:
            return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=float)]

        return {
            "class": self.class_name,
            "baseline_probability": float(self.baseline),
            "window_bins": self.window_bins,
            "n_samples": self.n_samples,
            "q_unit": self.q_unit,
            "q_centres": numbers(self.q_centres),
            "q_centres_inverse_angstrom": numbers(self.q_centres_inverse_angstrom),
            "q_edges_inverse_angstrom": numbers(self.q_edges),
            "drop_mean": numbers(self.drop_mean),
            "drop_std": numbers(self.drop_std),
            "drop_interval_90": [list(pair) for pair in zip(numbers(self.drop_low), numbers(self.drop_high))],
            "explain_q_range": numbers(self.explain_q_range),
            "explain_q_range_inverse_angstrom": numbers(self.strongest_q_range_inverse_angstrom),
        }


def strongest_windows(drop_mean: np.ndarray, fraction: float = STRONGEST_FRACTION) -> tuple[int, int]:
    """First and last window (inclusive) of the strongest q-range: the largest mean drop, widened over
    contiguous neighbours whose drop is at least ``fraction`` of it (the peak alone when it is not positive)."""
    drops = np.asarray(drop_mean, dtype=float)
    if not np.isfinite(drops).any():
        raise ValueError("no window was occluded")
    peak = int(np.nanargmax(drops))
    first = last = peak
    if drops[peak] > 0:
        floor = fraction * drops[peak]
        while first > 0 and np.isfinite(drops[first - 1]) and drops[first - 1] >= floor:
            first -= 1
        while last < drops.size - 1 and np.isfinite(drops[last + 1]) and drops[last + 1] >= floor:
            last += 1
    return first, last


def occlusion_sensitivity(
    classifier: "BNNClassifier",
    features: np.ndarray,
    class_index: int | None = None,
    window_bins: int = DEFAULT_WINDOW_BINS,
    q_unit: str = "1/A",
) -> Sensitivity:
    """The occlusion map of one model input ``features`` (4, bins) for ``class_index`` (default: the verdict).

    One onnxruntime call (:meth:`BNNClassifier.run_batch`) on the original and
    all occluded copies. Raises ValueError for a non-finite model answer.
    """
    features = np.asarray(features, dtype=np.float32)
    n_bins = features.shape[-1]
    windows = occlusion_windows(n_bins, window_bins)
    covered = features[_COVERAGE] > 0.5
    run = [k for k, (start, stop) in enumerate(windows) if covered[start:stop].any()]
    batch = np.empty((1 + len(run), *features.shape), dtype=np.float32)  # contiguous float32
    batch[0] = features
    for row, k in enumerate(run, start=1):
        batch[row] = occlude_window(features, *windows[k])
    probabilities, _, _ = classifier.run_batch(batch)
    probabilities = np.asarray(probabilities, dtype=np.float64)  # (1 + run, S, 7)
    if not np.isfinite(probabilities).all():
        raise ValueError("the model returned probabilities that are not finite numbers")
    original = probabilities[0]
    if class_index is None:
        class_index = int(np.argmax(original.mean(axis=0)))
    drops = original[None, :, class_index] - probabilities[1:, :, class_index]  # (run, S)
    shape = len(windows)
    mean, std, low, high = (np.full(shape, np.nan) for _ in range(4))
    if run:
        mean[run] = drops.mean(axis=1)
        std[run] = drops.std(axis=1)
        low[run] = np.quantile(drops, 0.05, axis=1)
        high[run] = np.quantile(drops, 0.95, axis=1)
    edges = _window_edges(classifier, windows)
    return Sensitivity(
        class_name=CLASS_NAMES[class_index],
        q_edges=edges,
        drop_mean=mean,
        drop_std=std,
        drop_low=low,
        drop_high=high,
        strongest=strongest_windows(mean),
        baseline=float(original[:, class_index].mean()),
        q_unit=q_unit or "1/A",
        window_bins=int(window_bins),
        n_samples=int(original.shape[0]),
    )


def _window_edges(classifier: "BNNClassifier", windows: list[tuple[int, int]]) -> np.ndarray:
    """The windows' limits in 1/Å, shape (windows + 1,), from the model's bin edges."""
    bin_edges = classifier.config.bin_edges
    return np.array([bin_edges[start] for start, _ in windows] + [bin_edges[windows[-1][1]]], dtype=float)


def explain_result(
    classifier: "BNNClassifier", curve: "Curve", result: "ClassificationResult", window_bins: int = DEFAULT_WINDOW_BINS
) -> Sensitivity | None:
    """The occlusion map of a classified curve for its label (None for a refused curve).

    The model input is rebuilt exactly as :meth:`BNNClassifier.classify` built
    it (the plugins' raw-curve steps, q read in the result's ``q_unit_used``).
    """
    if not result.ok or result.label is None:
        return None
    model_input = classifier.prepare_input(curve, result.q_unit_used or None)
    if not isinstance(model_input, ModelInput):
        return None
    return occlusion_sensitivity(
        classifier, model_input.features, CLASS_NAMES.index(result.label), window_bins, result.q_unit_used or "1/A"
    )
