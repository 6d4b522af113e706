"""Contact sheet of simulated curves: a few curves of each class, to check labels by eye.

One row per class, one panel per curve: I(q) on log-log axes. Points with
I <= 0 cannot be drawn on a log axis, so their magnitude |I| is drawn with red
downward triangles (an over-subtracted tail shows as a red run). Each panel
title names the class and the curve's index in the file; the curve's
visibility criteria (``SimulatedCurve.criteria``) are printed inside it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullLocator

from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES

from .criteria import visibility_key
from .record import SimulatedCurve
from .store import CurveReader

#: Criteria printed per panel at most (the rest is summarised as "+n more").
MAX_CRITERIA_SHOWN = 3
#: Criteria that justify each label, printed first (names from ``simulation.criteria``).
KEY_CRITERIA: dict[str, tuple[str, ...]] = {
    "clean": ("knee_q", "knee_position", "relative_error_at_max"),
    "aggregation": ("upturn_ratio", "upturn_slope", "knee_q"),
    "interparticle": ("s_q_min", "s_peak", "knee_q"),
    "ordered": ("n_visible_peaks", "peak_relative_width", "peak_contrast"),
    "bimodal": ("rg_ratio", "dominance_small", "dominance_large", "rg_small", "rg_large"),
    "oversubtracted": ("negative_run_fraction", "high_q_slope", "model_negative_fraction"),
    "artefact": ("spike_fraction", "step_factor", "low_q_distortion", "affected_fraction", "spike_count"),
}
# Every anomaly's taxonomy-v2 visibility score closes its list (artefact kinds without a criterion of their own).
KEY_CRITERIA = {name: keys + ((visibility_key(name),) if name != "clean" else ()) for name, keys in KEY_CRITERIA.items()}
#: String parameters naming what was simulated, shown under the class name.
DESCRIPTIVE_PARAMS = ("shape", "large_shape", "small_shape", "aggregate_model", "structure_factor", "lattice", "artefact")


def pick_examples(reader: CurveReader, per_class: int = 4) -> dict[int, list[tuple[int, SimulatedCurve]]]:
    """The first ``per_class`` curves of each class present, as ``{label: [(index, curve), ...]}``.

    Curves simulated *for* their label come first (``params/planned_class``; a
    mixture can end with another primary class, the most visible anomaly), so
    each panel shows its class's own criteria; others fill up when too few.
    """
    examples: dict[int, list[tuple[int, SimulatedCurve]]] = {}
    planned = reader.column("params", "planned_class") if "planned_class" in reader.columns("params") else None
    for label in np.unique(reader.labels):
        indices = np.flatnonzero(reader.labels == label)
        if planned is not None:
            own = planned[indices] == CLASS_NAMES[int(label)]
            indices = np.r_[indices[own], indices[~own]]
        indices = indices[:per_class]
        examples[int(label)] = [(int(i), reader.read(int(i), int(i) + 1)[0]) for i in indices]
    return examples


def _criteria_text(class_name: str, criteria: Mapping[str, float]) -> str:
    key = KEY_CRITERIA.get(class_name, ())
    finite = {k: v for k, v in criteria.items() if np.isfinite(v)}
    items = [(k, finite[k]) for k in key if k in finite] + sorted((k, v) for k, v in finite.items() if k not in key)
    lines = [f"{k} = {v:.3g}" for k, v in items[:MAX_CRITERIA_SHOWN]]
    if len(items) > MAX_CRITERIA_SHOWN:
        lines.append(f"+{len(items) - MAX_CRITERIA_SHOWN} more")
    return "\n".join(lines)


def draw_curve(ax, curve: SimulatedCurve) -> None:
    """Draw one curve on log-log axes; non-positive points as red |I| triangles."""
    q, intensity = np.asarray(curve.q), np.asarray(curve.intensity)
    positive = intensity > 0
    ax.loglog(q[positive], intensity[positive], ".", ms=1.6, color="tab:blue", rasterized=True)
    if (~positive).any():
        magnitude = np.abs(intensity[~positive])
        shown = magnitude > 0
        ax.loglog(q[~positive][shown], magnitude[shown], "v", ms=2.2, color="tab:red", mfc="none", mew=0.5)
        ax.text(0.03, 0.03, f"{int((~positive).sum())} pts I<=0 (|I| in red)", transform=ax.transAxes, fontsize=5.5, color="tab:red")
    ax.text(
        0.97, 0.97, _criteria_text(CLASS_NAMES[curve.label], curve.criteria), transform=ax.transAxes, fontsize=5.5,
        ha="right", va="top", family="monospace",
        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.8", "alpha": 0.7},
    )
    for axis in (ax.xaxis, ax.yaxis):  # decades only: minor log ticks cost most of the drawing time
        axis.set_major_locator(LogLocator(numticks=6))
        axis.set_minor_locator(NullLocator())
    ax.tick_params(labelsize=6)
    ax.set_xlabel(f"q ({curve.q_unit})", fontsize=6, labelpad=1)


def contact_sheet(examples: Mapping[int, Sequence[tuple[int, SimulatedCurve]]], title: str = "") -> Figure:
    """A figure with one row per class of ``examples`` (see :func:`pick_examples`)."""
    labels = sorted(examples)
    n_cols = max(len(v) for v in examples.values())
    fig = Figure(figsize=(2.7 * n_cols, 2.3 * len(labels)))
    axes = fig.subplots(len(labels), n_cols, squeeze=False)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.35 / height, top=1 - 0.75 / height, wspace=0.25, hspace=0.5)
    for row, label in enumerate(labels):
        for col in range(n_cols):
            ax = axes[row, col]
            if col >= len(examples[label]):
                ax.set_axis_off()
                continue
            index, curve = examples[label][col]
            draw_curve(ax, curve)
            what = ", ".join(str(curve.params[k]) for k in DESCRIPTIVE_PARAMS if curve.params.get(k))
            ax.set_title(f"{CLASS_NAMES[label]}  #{index}\n{what}", fontsize=7.5, pad=2, linespacing=1.1)
            if col == 0:
                ax.set_ylabel("I(q)", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.12 / height, va="top")
    return fig


def check_image_path(path: str | Path) -> Path:
    """Raise ``ValueError`` unless an image can be written to ``path`` (folder writable, known format)."""
    path = Path(path)
    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in formats:
        raise ValueError(f"cannot write a preview to {path}: use one of the image suffixes {', '.join(sorted('.' + f for f in formats))}")
    if path.is_dir() or not path.parent.is_dir() or not os.access(path.parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write a preview to {path}: its folder does not exist or is not writable")
    return path


def write_contact_sheet(curve_file: str | Path, image: str | Path, per_class: int = 4, dpi: int = 130) -> Path:
    """Draw ``per_class`` curves of each class of ``curve_file`` into ``image`` (format from its suffix)."""
    image = check_image_path(image)
    with CurveReader(curve_file) as reader:
        examples = pick_examples(reader, per_class)
        title = f"{Path(curve_file).name}: {len(reader)} curves, seed {reader.seed}, {reader.attrs['code_version']}"
    fig = contact_sheet(examples, title)
    tmp = image.with_name(f".{image.name}.tmp{image.suffix}")
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, image)
    return image
