"""The figures of a result, of many results and of a series: the one renderer of the CLI and the perspective.

Panels, drawn onto given matplotlib axes (no Qt, no pyplot):

- :func:`draw_curve`: I(q) on log-log axes, q in 1/Å (:func:`q_in_inverse_angstrom`, the one unit
  helper of the figures), the model's q-domain shaded, the part of the curve the model used marked,
  points with I <= 0 at the floor; a result explained by occlusion
  (:mod:`sasview_bnn_plugin.model.explain`) gets its strongest q-range shaded (:func:`draw_sensitivity`).
- :func:`draw_probabilities`: posterior-mean class probabilities as bars with 90 % posterior
  intervals, titled with the label (and NOVEL, and the conformal prediction set); for a model with
  the optional outputs, the probability that each anomaly is present as diamonds beside the bars.
- :func:`draw_presence`: the probability that each anomaly is present as bars (the threshold dashed).
- :func:`draw_trend`: a series of results (:mod:`sasview_bnn_plugin.core.trend`): class probabilities
  and anomalies-present probabilities with their 90 % posterior bands against the frame number or a
  metadata value, the first anomaly frame marked.

Figures: :func:`result_figure` and :func:`trend_figure` (the perspective's window and report),
:func:`plot_result` (``classify --plot``: one PNG per curve, with a third panel of
:func:`draw_presence` for a model with the optional outputs), :func:`plot_contact_sheet` and
:func:`plot_trend` (PNG files).

matplotlib is optional (not a base dependency); :func:`require_matplotlib`
raises :class:`PlottingUnavailable` with an installation hint.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.curve import Curve
from ..core.preprocessing import CurveError, PreprocessingConfig, q_unit_factor
from ..core.result import ClassificationResult, level_text
from ..core.taxonomy import ANOMALY_NAMES, CLASS_NAMES, CLEAN_INDEX

#: One colour per class (taxonomy order), shared by the trend's classes and anomalies.
CLASS_COLOURS = ("tab:green", "tab:brown", "tab:blue", "tab:purple", "tab:olive", "tab:cyan", "tab:red")
SENSITIVITY_COLOUR = "tab:orange"


class PlottingUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`PlottingUnavailable` unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlottingUnavailable(
            'install matplotlib for --plot (the [plot] extra: in your sasview-bnn clone, run pip install -e ".[plot]")'
        ) from None


#: Colours of the result panels.
DOMAIN_COLOUR = "#90caf9"
WINDOW_COLOUR = "#1565c0"
CLEAN_COLOUR = "#66bb6a"
ANOMALY_COLOUR = "#ffa726"
CHOSEN_EDGE = "#263238"
PRESENCE_COLOUR = "#6a1b9a"


def q_in_inverse_angstrom(curve: Curve, q_unit: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """q in 1/Å (read in ``q_unit``, the unit the classification used, else the curve's own; as given when
    the unit is unknown) and I, shape (points,), for drawing."""
    try:
        factor = q_unit_factor(q_unit or curve.q_unit)[0]
    except CurveError:
        factor = 1.0
    return np.asarray(curve.q, dtype=float) * factor, np.asarray(curve.intensity, dtype=float)


def draw_curve(ax, curve: Curve | None, result: ClassificationResult | None, q_domain: tuple[float, float], title: str = "") -> None:
    """Plot I(q) log-log with the model's q-domain (1/Å) shaded; clears ``ax`` first."""
    ax.clear()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("q (1/Å)")
    ax.set_ylabel("I(q)")
    lo, hi = q_domain
    ax.axvspan(lo, hi, color=DOMAIN_COLOUR, alpha=0.25, label="model q-domain")
    if curve is None:
        q, intensity = np.zeros(0), np.zeros(0)
    else:
        q, intensity = q_in_inverse_angstrom(curve, getattr(result, "q_unit_used", None))
    shown = np.isfinite(q) & np.isfinite(intensity) & (q > 0)
    positive = shown & (intensity > 0)
    if positive.any():
        qp, ip = q[positive], intensity[positive]
        ax.plot(qp, ip, ".", color="#37474f", markersize=3, label="data")
        if result is not None and result.ok and all(math.isfinite(v) for v in result.q_window):
            w_lo, w_hi = result.q_window
            used = (qp >= w_lo) & (qp <= w_hi)
            if used.any():
                ax.plot(qp[used], ip[used], "-", color=WINDOW_COLOUR, linewidth=1.2, label="used by the model")
        negative = shown & (intensity <= 0)
        if negative.any():
            ax.plot(q[negative], np.full(int(negative.sum()), ip.min()), "v", ms=3, color="tab:red", label="I(q) ≤ 0 (at floor)")
        ax.set_xlim(min(lo, qp.min()) / 1.5, max(hi, qp.max()) * 1.5)
    else:
        ax.set_xlim(lo / 1.5, hi * 1.5)
        ax.text(0.5, 0.5, "no positive intensities to plot", transform=ax.transAxes, ha="center", va="center")
    if positive.any() and getattr(result, "sensitivity", None) is not None:
        draw_sensitivity(ax, result.sensitivity)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower left", fontsize=7)


def draw_probabilities(ax, result: ClassificationResult | None, presence: bool = True) -> None:
    """Bars of the posterior-mean class probabilities with 90 % posterior intervals; clears ``ax`` first.

    The title names the label and its probability (NOVEL for a novel curve, the prediction set if
    any); with ``presence`` the anomaly-presence probabilities (if the model gives them) are drawn
    beside the bars.
    """
    ax.clear()
    positions = np.arange(len(CLASS_NAMES))
    ax.set_xticks(positions)
    ax.set_xticklabels(CLASS_NAMES, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("probability (90 % interval)")
    if result is None or not result.ok:
        message = "not classified" + (f":\n{result.message}" if result is not None and result.message else "")
        ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", wrap=True, fontsize=8)
        return
    p = np.asarray(result.probabilities, dtype=float)
    low = np.clip(p - np.asarray(result.probability_low, dtype=float), 0.0, None)
    high = np.clip(np.asarray(result.probability_high, dtype=float) - p, 0.0, None)
    colours = [CLEAN_COLOUR if i == CLEAN_INDEX else ANOMALY_COLOUR for i in range(len(CLASS_NAMES))]
    chosen = int(np.argmax(p))
    edges = [CHOSEN_EDGE if i == chosen else "none" for i in range(len(CLASS_NAMES))]
    ax.bar(positions, p, color=colours, edgecolor=edges, linewidth=1.5, yerr=np.vstack([low, high]), capsize=3, ecolor="#424242")
    title = f"{result.label}  p = {result.confidence:.2f}"
    if result.is_novel:
        title += "   NOVEL (do not trust the label)"
        ax.set_facecolor("#fde8e8")
    values = np.asarray(result.presence_probabilities, dtype=float)
    if presence and np.isfinite(values).all():
        anomaly_positions = np.array([CLASS_NAMES.index(n) for n in ANOMALY_NAMES]) + 0.3  # beside the bars
        spread = np.vstack([np.clip(values - result.presence_low, 0.0, None), np.clip(result.presence_high - values, 0.0, None)])
        ax.errorbar(anomaly_positions, values, yerr=spread, fmt="D", color=PRESENCE_COLOUR, markersize=5, capsize=2, label="p(anomaly present)")
        if math.isfinite(result.anomaly_threshold):
            ax.axhline(result.anomaly_threshold, color=PRESENCE_COLOUR, linestyle=":", linewidth=0.8)
        ax.legend(loc="upper right", fontsize=7)
    if result.prediction_set is not None:
        title += f"\nplausible at {level_text(result.set_level)}: {' or '.join(result.prediction_set)}"
    ax.set_title(title, fontsize=9, color="tab:red" if result.is_novel else "black")


def result_figure(curve: Curve | None, result: ClassificationResult | None, q_domain: tuple[float, float], title: str = ""):
    """A new 9 x 3.5 inch Figure with the curve and the probability bars side by side (the perspective's report)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.0, 3.5))
    curve_ax, bars_ax = figure.subplots(1, 2)
    draw_curve(curve_ax, curve, result, q_domain, title)
    draw_probabilities(bars_ax, result)
    figure.tight_layout()
    return figure


def trend_figure(results: Sequence[ClassificationResult], x: str | None = None):
    """A new 10 x 5 inch Figure with the trend of a series of results, drawn by :func:`draw_trend`."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 5.0))
    draw_trend(figure, results, x)
    return figure


def plot_file_name(result: ClassificationResult, index: int) -> str:
    """A safe, unique PNG name built from the file and dataset names."""
    stem = Path(result.file).name or "curve"
    if result.dataset:
        stem += "_" + result.dataset
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_")[:120]
    return f"{index:04d}_{stem}.png"


def plot_result(curve: Curve, result: ClassificationResult, config: PreprocessingConfig, path: str | Path) -> Path:
    """Draw the curve (:func:`draw_curve`) and the probabilities (:func:`draw_probabilities`) into a PNG.

    With anomaly-presence probabilities (optional model output) a third panel
    shows them (:func:`draw_presence`); the prediction set, if any, is named in the probabilities' title.
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    with_presence = result.ok and bool(np.isfinite(result.presence_probabilities).all())
    if with_presence:
        fig = Figure(figsize=(13.5, 4))
        fig.subplots_adjust(left=0.06, right=0.99, bottom=0.24, top=0.86, wspace=0.3)
        ax_data, ax_prob, ax_presence = fig.subplots(1, 3, width_ratios=[1.3, 1, 0.9])
    else:
        fig = Figure(figsize=(10, 4))
        # Fixed margins: a layout engine would triple the drawing time of every PNG.
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.24, top=0.9, wspace=0.28)
        ax_data, ax_prob = fig.subplots(1, 2, width_ratios=[1.3, 1])
    draw_curve(ax_data, curve, result, (config.q_min, config.q_max), f"{Path(result.file).name} {result.dataset}".strip())
    draw_probabilities(ax_prob, result, presence=False)
    if with_presence:
        draw_presence(ax_presence, result)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def draw_presence(ax, result: ClassificationResult) -> None:
    """Bars: probability that each anomaly is present (posterior mean, 90 % interval), the threshold dashed."""
    x = np.arange(len(ANOMALY_NAMES))
    mean = result.presence_probabilities
    err = np.vstack([np.clip(mean - result.presence_low, 0, None), np.clip(result.presence_high - mean, 0, None)])
    present = set(result.anomalies_present or ())
    colours = ["tab:red" if n in present else "tab:gray" for n in ANOMALY_NAMES]
    ax.bar(x, mean, yerr=err, color=colours, capsize=3)
    if np.isfinite(result.anomaly_threshold):
        ax.axhline(result.anomaly_threshold, color="black", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, ANOMALY_NAMES, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("p(present) (90 % interval)", fontsize=8)
    names = ", ".join(result.anomalies_present or ())
    ax.set_title("anomalies present:\n" + "\n".join(textwrap.wrap(names, 36)) if names else "no anomaly present", fontsize=9)


def plot_contact_sheet(
    items: list[tuple[Curve, ClassificationResult]], path: str | Path, *, columns: int = 6, title: str = ""
) -> Path:
    """Many curves on one page: one small log-log panel per curve (q in 1/Å), titled with its verdict.

    Panels are coloured by outcome: blue for a confident label, orange for low
    confidence, red for novel, grey for a refused curve; a legend under the title
    lists the outcomes that occur. The left column and the bottom panels carry
    axis labels (q in each curve's unit used, I in the file's scale).
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    from ..core.model_format import LOW_CONFIDENCE_THRESHOLD

    n = max(len(items), 1)
    rows = (n + columns - 1) // columns
    header = 0.9 if title else 0.5  # inches reserved above the panels for the title and the legend
    height = 2.1 * rows + header
    fig = Figure(figsize=(2.6 * columns, height))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    outcomes = {"tab:blue": "confident label", "tab:orange": f"low confidence (top p < {LOW_CONFIDENCE_THRESHOLD})",
                "tab:red": "novel", "tab:gray": "refused"}
    used: list[str] = []
    for ax in axes[len(items):]:
        ax.set_axis_off()
    for k, (ax, (curve, result)) in enumerate(zip(axes, items)):
        q, i = q_in_inverse_angstrom(curve, result.q_unit_used)
        keep = np.isfinite(q) & np.isfinite(i) & (q > 0) & (i > 0)
        if not result.ok:
            colour, verdict = "tab:gray", "refused"
        elif result.is_novel:
            colour, verdict = "tab:red", f"NOVEL ({result.label} {result.confidence:.2f})"
        elif result.confidence < LOW_CONFIDENCE_THRESHOLD:
            colour, verdict = "tab:orange", f"unsure: {result.label} {result.confidence:.2f}"
        else:
            colour, verdict = "tab:blue", f"{result.label} {result.confidence:.2f}"
        if colour not in used:
            used.append(colour)
        if keep.any():
            ax.loglog(q[keep], i[keep], ".", ms=1.5, color=colour)
        name = f"{Path(result.file).name} {result.dataset}".strip()
        ax.set_title(f"{name[:34]}\n{verdict}", fontsize=7, color=colour)
        ax.tick_params(labelsize=6)
        if k % columns == 0:
            ax.set_ylabel("I", fontsize=7)
        if k + columns >= len(items):
            ax.set_xlabel(f"q ({result.q_unit_used or '1/A'})", fontsize=7)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    if title:
        fig.suptitle(title, fontsize=10, y=1.0 - 0.15 / height)
    from matplotlib.lines import Line2D

    order = [c for c in outcomes if c in used]
    fig.legend([Line2D([], [], marker="o", ls="", color=c) for c in order], [outcomes[c] for c in order],
               loc="upper center", ncol=len(order) or 1, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0 - 0.45 / height))
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - header / height))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path


def draw_sensitivity(ax, sensitivity: Any) -> None:
    """Shade where in q the verdict came from (a :class:`sasview_bnn_plugin.model.explain.Sensitivity`, q in 1/Å):
    every window by its mean probability drop (darker: more), the strongest q-range outlined and labelled."""
    edges = np.asarray(sensitivity.q_edges, dtype=float)
    drops = np.asarray(sensitivity.drop_mean, dtype=float)
    peak = float(np.nanmax(drops)) if np.isfinite(drops).any() else 0.0
    if peak > 0:
        for k in np.flatnonzero(np.isfinite(drops) & (drops > 0.1 * peak)):
            ax.axvspan(edges[k], edges[k + 1], color=SENSITIVITY_COLOUR, alpha=0.25 * float(drops[k]) / peak, linewidth=0)
    lo, hi = sensitivity.strongest_q_range_inverse_angstrom
    shown_lo, shown_hi = sensitivity.explain_q_range
    ax.axvspan(lo, hi, facecolor="none", edgecolor=SENSITIVITY_COLOUR, linewidth=1.5,
               label=f"drove {sensitivity.class_name}: q {shown_lo:.3g}–{shown_hi:.3g} {sensitivity.q_unit} "
               f"(hidden: p −{max(peak, 0.0):.2f})")


def _save_atomically(fig, path: str | Path, dpi: int) -> Path:
    """Save ``fig`` as PNG through a temporary file and a rename: a reader never sees a half-written image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def draw_trend(fig, results: Sequence[ClassificationResult], x: str | None = None):
    """Draw the trend of a series into ``fig`` (a matplotlib Figure, cleared first); return its
    :class:`~sasview_bnn_plugin.core.trend.TrendAxis` (with the note when ``x`` could not be used).

    Top panel: each class's posterior-mean probability with its 90 % posterior
    band; bottom panel (models with anomalies-present outputs): each anomaly's
    probability of being present with its band. Novel frames are marked with
    a cross; the first anomaly frame (:data:`~sasview_bnn_plugin.core.trend.ONSET_RULE`)
    is a dashed vertical line named, with the rule, in the legend.
    """
    from ..core.trend import ONSET_RULE, series_onset, trend_axis

    fig.clear()
    axis = trend_axis(results, x)
    ok = [results[i] for i in axis.frames]
    with_presence = any(np.isfinite(r.presence_probabilities).all() for r in ok)
    axes = np.atleast_1d(fig.subplots(2 if with_presence else 1, 1, sharex=True))
    fig.subplots_adjust(left=0.07, right=0.74, bottom=0.11 if with_presence else 0.16, top=0.9, hspace=0.12)
    xs = axis.values
    if ok:
        mean = np.stack([r.probabilities for r in ok])
        low = np.stack([r.probability_low for r in ok])
        high = np.stack([r.probability_high for r in ok])
        for c, name in enumerate(CLASS_NAMES):
            axes[0].fill_between(xs, low[:, c], high[:, c], color=CLASS_COLOURS[c], alpha=0.15, linewidth=0)
            axes[0].plot(xs, mean[:, c], ".-", ms=3, lw=1.2, color=CLASS_COLOURS[c], label=name)
        novel = np.array([bool(r.is_novel) for r in ok])
        if novel.any():
            axes[0].plot(xs[novel], np.full(int(novel.sum()), 1.03), "x", color="black", ms=5, clip_on=False, label="novel (label not trusted)")
    axes[0].set_ylabel("p(class)\n(mean, 90 % band)")
    if with_presence:
        presence = np.stack([np.asarray(r.presence_probabilities, dtype=float) for r in ok])
        p_low = np.stack([np.asarray(r.presence_low, dtype=float) for r in ok])
        p_high = np.stack([np.asarray(r.presence_high, dtype=float) for r in ok])
        for j, name in enumerate(ANOMALY_NAMES):
            colour = CLASS_COLOURS[CLASS_NAMES.index(name)]
            axes[1].fill_between(xs, p_low[:, j], p_high[:, j], color=colour, alpha=0.15, linewidth=0)
            axes[1].plot(xs, presence[:, j], ".-", ms=3, lw=1.2, color=colour, label=f"{name} present")
        axes[1].set_ylabel("p(present)\n(mean, 90 % band)")
    for ax in axes:
        ax.set_ylim(0, 1)
        ax.axhline(0.5, color="gray", linestyle=":", linewidth=0.8)
    onset = series_onset(results)
    rule = "\n".join(textwrap.wrap(f"rule: {ONSET_RULE}", 40))
    if onset.frame is not None:
        where = float(xs[list(axis.frames).index(onset.frame)])
        shown = f"frame {onset.frame}" + ("" if axis.kind == "index" else f", {axis.label} {where:.4g}")
        for k, ax in enumerate(axes):
            ax.axvline(where, color="black", linestyle="--", linewidth=1.2,
                       label=f"first anomaly: {shown}\n({onset.criterion})\n{rule}" if k == 0 else None)
    else:
        axes[0].plot([], [], " ", label=f"no anomaly onset\n{rule}")
    for ax in axes:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    axes[-1].set_xlabel(axis.label)
    n_refused = len(results) - len(ok)
    title = f"{len(ok)} classified frame(s)" + (f", {n_refused} refused (left out)" if n_refused else "")
    if axis.note:
        title += "\n" + axis.note
    axes[0].set_title(title, fontsize=8, pad=10)
    if axis.kind == "index":
        from matplotlib.ticker import MaxNLocator

        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if not ok:
        axes[0].text(0.5, 0.5, "no classified curve yet", ha="center", va="center", transform=axes[0].transAxes)
    return axis


def plot_trend(results: Sequence[ClassificationResult], path: str | Path, x: str | None = None) -> Path:
    """Write the trend figure of a series (:func:`draw_trend`) to ``path`` as PNG (replaced atomically).

    ``x``: None or "index" (the frame number), "time", "temperature" or a metadata key
    (see :func:`sasview_bnn_plugin.core.trend.trend_axis`; the frame number, with a note, when frames lack it).
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    with_presence = any(r.ok and np.isfinite(r.presence_probabilities).all() for r in results)
    fig = Figure(figsize=(11, 6.5 if with_presence else 4.2))
    draw_trend(fig, results, x)
    return _save_atomically(fig, path, dpi=90)
