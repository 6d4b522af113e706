"""The perspective's two plots, drawn with matplotlib onto given axes (no Qt).

- :func:`draw_curve`: I(q) on log-log axes, q in 1/Å, with the model's
  q-domain shaded and the part of the curve the model used marked.
- :func:`draw_probabilities`: posterior-mean class probabilities as bars with
  90 % posterior intervals (5th to 95th percentile over the samples) as error bars;
  for a model with the optional outputs, the probability that each anomaly is
  present as diamonds (with their 90 % intervals) over the anomaly classes, and
  the conformal prediction set in the title.

:func:`result_figure` puts both side by side in a new Figure (for reports).
A result explained by occlusion gets its strongest q-range shaded on the curve,
and :func:`trend_figure` draws a series of results; both with the command
line's renderer (:func:`sasview_bnn_plugin.io.plotting.draw_sensitivity`,
:func:`sasview_bnn_plugin.io.plotting.draw_trend`), not a copy.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..core.curve import Curve
from ..io.plotting import draw_sensitivity, draw_trend
from ..core.preprocessing import CurveError, q_unit_factor
from ..core.result import ClassificationResult, level_text
from ..core.taxonomy import ANOMALY_NAMES, CLASS_NAMES, CLEAN_INDEX

DOMAIN_COLOUR = "#90caf9"
WINDOW_COLOUR = "#1565c0"
CLEAN_COLOUR = "#66bb6a"
ANOMALY_COLOUR = "#ffa726"
CHOSEN_EDGE = "#263238"
PRESENCE_COLOUR = "#6a1b9a"


def curve_in_inverse_angstrom(curve: Curve, q_unit: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(q in 1/Å, I) of the finite points with I > 0, shape (points,) each; q read in ``q_unit`` (the unit the
    classification used) if given, else in the curve's own unit; unknown units are left as given."""
    try:
        factor, _ = q_unit_factor(q_unit or curve.q_unit)
    except CurveError:
        factor = 1.0
    q = np.asarray(curve.q, dtype=float) * factor
    intensity = np.asarray(curve.intensity, dtype=float)
    keep = np.isfinite(q) & np.isfinite(intensity) & (q > 0) & (intensity > 0)
    return q[keep], intensity[keep]


def draw_curve(ax: Axes, curve: Curve | None, result: ClassificationResult | None, q_domain: tuple[float, float], title: str = "") -> None:
    """Plot I(q) log-log with the model's q-domain (1/Å) shaded; clears ``ax`` first."""
    ax.clear()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("q (1/Å)")
    ax.set_ylabel("I(q)")
    lo, hi = q_domain
    ax.axvspan(lo, hi, color=DOMAIN_COLOUR, alpha=0.25, label="model q-domain")
    q, intensity = (np.zeros(0), np.zeros(0)) if curve is None else curve_in_inverse_angstrom(curve, getattr(result, "q_unit_used", None))
    if q.size:
        ax.plot(q, intensity, ".", color="#37474f", markersize=3, label="data")
        if result is not None and result.ok and all(math.isfinite(v) for v in result.q_window):
            w_lo, w_hi = result.q_window
            used = (q >= w_lo) & (q <= w_hi)
            if used.any():
                ax.plot(q[used], intensity[used], "-", color=WINDOW_COLOUR, linewidth=1.2, label="used by the model")
        ax.set_xlim(min(lo, q.min()) / 1.5, max(hi, q.max()) * 1.5)
    else:
        ax.set_xlim(lo / 1.5, hi * 1.5)
        ax.text(0.5, 0.5, "no positive intensities to plot", transform=ax.transAxes, ha="center", va="center")
    if q.size and getattr(result, "sensitivity", None) is not None:
        draw_sensitivity(ax, result.sensitivity)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower left", fontsize=7)


def draw_probabilities(ax: Axes, result: ClassificationResult | None) -> None:
    """Bars of the posterior-mean class probabilities with 90 % posterior intervals; clears ``ax`` first."""
    ax.clear()
    positions = np.arange(len(CLASS_NAMES))
    ax.set_xticks(positions)
    ax.set_xticklabels(CLASS_NAMES, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("probability")
    if result is None or not result.ok:
        ax.text(0.5, 0.5, "not classified", transform=ax.transAxes, ha="center", va="center")
        return
    p = np.asarray(result.probabilities, dtype=float)
    low = np.clip(p - np.asarray(result.probability_low, dtype=float), 0.0, None)
    high = np.clip(np.asarray(result.probability_high, dtype=float) - p, 0.0, None)
    colours = [CLEAN_COLOUR if i == CLEAN_INDEX else ANOMALY_COLOUR for i in range(len(CLASS_NAMES))]
    chosen = int(np.argmax(p))
    edges = [CHOSEN_EDGE if i == chosen else "none" for i in range(len(CLASS_NAMES))]
    ax.bar(positions, p, color=colours, edgecolor=edges, linewidth=1.5, yerr=np.vstack([low, high]), capsize=3, ecolor="#424242")
    title = "class probabilities (bars: posterior mean; whiskers: 90 % interval)"
    presence = np.asarray(result.presence_probabilities, dtype=float)
    if np.isfinite(presence).all():
        anomaly_positions = np.array([CLASS_NAMES.index(n) for n in ANOMALY_NAMES]) + 0.3  # beside the bars
        spread = np.vstack([np.clip(presence - result.presence_low, 0.0, None), np.clip(result.presence_high - presence, 0.0, None)])
        ax.errorbar(anomaly_positions, presence, yerr=spread, fmt="D", color=PRESENCE_COLOUR, markersize=5, capsize=2, label="p(anomaly present)")
        if math.isfinite(result.anomaly_threshold):
            ax.axhline(result.anomaly_threshold, color=PRESENCE_COLOUR, linestyle=":", linewidth=0.8)
        ax.legend(loc="upper right", fontsize=7)
    if result.prediction_set is not None:
        title += f"\nplausible at {level_text(result.set_level)}: {' or '.join(result.prediction_set)}"
    ax.set_title(title, fontsize=8)


def result_figure(curve: Curve | None, result: ClassificationResult | None, q_domain: tuple[float, float], title: str = "") -> Figure:
    """A new 9 x 3.5 inch Figure with the curve and the probability bars side by side."""
    figure = Figure(figsize=(9.0, 3.5))
    curve_ax, bars_ax = figure.subplots(1, 2)
    draw_curve(curve_ax, curve, result, q_domain, title)
    draw_probabilities(bars_ax, result)
    figure.tight_layout()
    return figure


def trend_figure(results: list[ClassificationResult], x: str | None = None) -> Figure:
    """A new 10 x 5 inch Figure with the trend of a series of results (table order), drawn by
    :func:`sasview_bnn_plugin.io.plotting.draw_trend`."""
    figure = Figure(figsize=(10.0, 5.0))
    draw_trend(figure, results, x)
    return figure
