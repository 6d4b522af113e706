"""One PNG per classified curve: the data with the model's q-domain, and the class probabilities.

For a model with the optional outputs, the title of the probability panel
names the conformal prediction set, and a third panel shows the probability
that each anomaly is present (posterior mean, 90 % interval, the model's
threshold), titled with the anomalies present.

matplotlib is optional (not a base dependency); :func:`require_matplotlib`
raises :class:`PlottingUnavailable` with an installation hint.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np

from .curve import Curve
from .preprocessing import CurveError, PreprocessingConfig, q_unit_factor
from .result import ClassificationResult, level_text
from .taxonomy import ANOMALY_NAMES, CLASS_NAMES


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


def _q_and_intensity(curve: Curve, q_unit: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """q in 1/Å (read in ``q_unit``, the unit the classification used, else the curve's own; as given when
    the unit is unknown) and I, shape (points,), for drawing."""
    try:
        factor = q_unit_factor(q_unit or curve.q_unit)[0]
    except CurveError:
        factor = 1.0
    return np.asarray(curve.q, dtype=float) * factor, np.asarray(curve.intensity, dtype=float)


def plot_file_name(result: ClassificationResult, index: int) -> str:
    """A safe, unique PNG name built from the file and dataset names."""
    stem = Path(result.file).name or "curve"
    if result.dataset:
        stem += "_" + result.dataset
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_")[:120]
    return f"{index:04d}_{stem}.png"


def plot_result(curve: Curve, result: ClassificationResult, config: PreprocessingConfig, path: str | Path) -> Path:
    """Draw the curve (log-log, q in 1/Å, model q-domain shaded) and the probabilities with 90 % intervals.

    With anomaly-presence probabilities (optional model output) a third panel
    shows them; the prediction set, if any, is named in the probabilities' title.
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
    q, i = _q_and_intensity(curve, result.q_unit_used)
    shown = np.isfinite(q) & np.isfinite(i) & (q > 0)
    positive = shown & (i > 0)
    ax_data.axvspan(config.q_min, config.q_max, color="tab:green", alpha=0.08, label="model q-domain")
    if positive.any():
        ax_data.loglog(q[positive], i[positive], ".", ms=3, color="tab:blue", label="I(q) > 0")
    negative = shown & (i <= 0)
    if negative.any():
        floor = np.min(i[positive]) if positive.any() else 1.0
        ax_data.loglog(q[negative], np.full(negative.sum(), floor), "v", ms=3, color="tab:red", label="I(q) ≤ 0 (at floor)")
    ax_data.set_xlabel("q (1/Å)")
    ax_data.set_ylabel("I(q)")
    ax_data.set_title(f"{Path(result.file).name} {result.dataset}".strip(), fontsize=9)
    ax_data.legend(fontsize=8, loc="lower left")

    x = np.arange(len(CLASS_NAMES))
    if result.ok:
        mean = result.probabilities
        err = np.vstack([np.clip(mean - result.probability_low, 0, None), np.clip(result.probability_high - mean, 0, None)])
        colours = ["tab:orange" if n == result.label else "tab:gray" for n in CLASS_NAMES]
        ax_prob.bar(x, mean, yerr=err, color=colours, capsize=3)
        title = f"{result.label}  p = {result.confidence:.2f}"
        if result.is_novel:
            title += "   NOVEL (do not trust the label)"
            ax_prob.set_facecolor("#fde8e8")
        if result.prediction_set is not None:
            title += f"\nplausible ({level_text(result.set_level)}): {' or '.join(result.prediction_set)}"
        ax_prob.set_title(title, fontsize=10 if result.prediction_set is None else 9, color="tab:red" if result.is_novel else "black")
    else:
        ax_prob.text(0.5, 0.5, "not classified:\n" + result.message, ha="center", va="center", wrap=True, fontsize=8, transform=ax_prob.transAxes)
    ax_prob.set_xticks(x, CLASS_NAMES, rotation=40, ha="right", fontsize=8)
    ax_prob.set_ylim(0, 1)
    ax_prob.set_ylabel("posterior mean probability (90 % interval)")
    if with_presence:
        _draw_presence(ax_presence, result)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _draw_presence(ax, result: ClassificationResult) -> None:
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
    confidence, red for novel, grey for a refused curve.
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    from .model_format import LOW_CONFIDENCE_THRESHOLD

    n = max(len(items), 1)
    rows = (n + columns - 1) // columns
    fig = Figure(figsize=(2.6 * columns, 2.1 * rows + (0.4 if title else 0.0)))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes[len(items):]:
        ax.set_axis_off()
    for ax, (curve, result) in zip(axes, items):
        q, i = _q_and_intensity(curve, result.q_unit_used)
        keep = np.isfinite(q) & np.isfinite(i) & (q > 0) & (i > 0)
        if not result.ok:
            colour, verdict = "tab:gray", "refused"
        elif result.is_novel:
            colour, verdict = "tab:red", f"NOVEL ({result.label} {result.confidence:.2f})"
        elif result.confidence < LOW_CONFIDENCE_THRESHOLD:
            colour, verdict = "tab:orange", f"unsure: {result.label} {result.confidence:.2f}"
        else:
            colour, verdict = "tab:blue", f"{result.label} {result.confidence:.2f}"
        if keep.any():
            ax.loglog(q[keep], i[keep], ".", ms=1.5, color=colour)
        name = f"{Path(result.file).name} {result.dataset}".strip()
        ax.set_title(f"{name[:34]}\n{verdict}", fontsize=7, color=colour)
        ax.tick_params(labelsize=5)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path
