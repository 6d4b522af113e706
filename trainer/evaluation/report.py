"""The evaluation report: ``metrics.json``, PNG figures and ``index.html`` in one folder.

Figures (matplotlib, Agg): confusion matrix, one-vs-rest ROC curves,
reliability diagram, entropy / mutual-information histograms for correct vs
wrong predictions, novelty score distributions, robustness vs noise level and
q-window width.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES, CLEAN_INDEX  # noqa: E402

from . import metrics as M  # noqa: E402
from .evaluate import Evaluation  # noqa: E402


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _save(fig: plt.Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _confusion(ev: Evaluation, folder: Path) -> str:
    cm = np.asarray(ev.metrics["confusion_matrix"])
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, label="fraction of true class")
    return _save(fig, folder / "confusion_matrix.png")


def _roc(ev: Evaluation, folder: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for c, name in enumerate(CLASS_NAMES):
        y = ev.labels == c
        if y.any() and not y.all():
            fpr, tpr, _ = M.roc_curve(y, ev.probs[:, c])
            axes[0].plot(fpr, tpr, label=f"{name} ({M.roc_auc(y, ev.probs[:, c]):.3f})")
    axes[0].set_title("one-vs-rest ROC")
    y = ev.labels != CLEAN_INDEX
    if y.any() and not y.all():
        fpr, tpr, _ = M.roc_curve(y, 1 - ev.probs[:, CLEAN_INDEX])
        axes[1].plot(fpr, tpr, label=f"anomaly vs clean ({ev.metrics['anomaly_auroc']:.4f})")
    axes[1].set_title("anomaly (1 - p(clean)) vs clean")
    for ax in axes:
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.legend(fontsize=8)
    return _save(fig, folder / "roc.png")


def _reliability(ev: Evaluation, folder: Path) -> str:
    r = M.reliability(ev.labels, ev.probs, 15)
    centres = 0.5 * (r["edges"][1:] + r["edges"][:-1])
    fig, ax = plt.subplots(figsize=(5, 5))
    used = r["count"] > 0
    ax.bar(centres[used], r["accuracy"][used], width=1 / 15, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability, ECE = {ev.metrics['ece_15']:.4f}")
    ax.legend()
    return _save(fig, folder / "reliability.png")


def _uncertainty(ev: Evaluation, folder: Path) -> str:
    correct = ev.probs.argmax(axis=1) == ev.labels
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, values, title in ((axes[0], ev.entropy, "predictive entropy (nats)"), (axes[1], ev.mutual_information, "mutual information (nats)")):
        bins = np.linspace(0, max(float(values.max()), 1e-6), 40)
        ax.hist(values[correct], bins=bins, density=True, alpha=0.6, label=f"correct ({correct.sum()})")
        if (~correct).any():
            ax.hist(values[~correct], bins=bins, density=True, alpha=0.6, label=f"wrong ({(~correct).sum()})")
        ax.set_xlabel(title)
        ax.set_yscale("log")
        ax.legend()
    return _save(fig, folder / "uncertainty.png")


def _novelty(ev: Evaluation, folder: Path) -> str | None:
    if not ev.novel_sets:
        return None
    names = ("feature_score", "mutual_information", "predictive_entropy")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    in_scores = {"feature_score": ev.feature_score, "mutual_information": ev.mutual_information, "predictive_entropy": ev.entropy}
    for ax, name in zip(axes, names):
        values = [in_scores[name]] + [s[name] for s in ev.novel_sets.values()]
        if name == "feature_score":
            values = [np.log10(np.maximum(v, 1e-3)) for v in values]
        hi = max(float(v.max()) for v in values if v.size)
        lo = min(float(v.min()) for v in values if v.size)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
        ax.hist(values[0], bins=bins, density=True, alpha=0.5, label="in-distribution test")
        for label, v in zip(ev.novel_sets, values[1:]):
            ax.hist(v, bins=bins, density=True, histtype="step", lw=1.5, label=label)
        if name == "feature_score":
            ax.axvline(np.log10(max(ev.novelty_threshold, 1e-3)), color="k", ls="--", label="threshold")
            ax.set_xlabel("log10 feature-space score (squared Mahalanobis)")
        else:
            ax.set_xlabel(name.replace("_", " ") + " (nats)")
        ax.legend(fontsize=7)
    return _save(fig, folder / "novelty.png")


def _robustness(ev: Evaluation, folder: Path) -> str | None:
    rob = ev.metrics.get("robustness", {})
    panels = [(k, v) for k, v in rob.items() if isinstance(v, list) and v]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], panels):
        centres = [math.sqrt(r["low"] * r["high"]) if name == "noise_level" else 0.5 * (r["low"] + r["high"]) for r in rows]
        ax.plot(centres, [r["accuracy"] for r in rows], "o-", label="accuracy")
        ax.plot(centres, [r["macro_f1"] for r in rows], "s-", label="macro-F1")
        if name == "noise_level":
            ax.set_xscale("log")
        ax.set_xlabel(f"{name.replace('_', ' ')} ({rows[0]['unit']})")
        ax.legend()
    return _save(fig, folder / "robustness.png")


def _table(rows: list[list[Any]], header: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "n/a" if not math.isfinite(v) else f"{v:.4f}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(ev: Evaluation, folder: str | Path) -> Path:
    """Write metrics.json, the figures and index.html into ``folder``; return the HTML path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    m = _json_ready(ev.metrics)
    (folder / "metrics.json").write_text(json.dumps(m, indent=1))
    figures = [f for f in (_confusion(ev, folder), _roc(ev, folder), _reliability(ev, folder), _uncertainty(ev, folder),
                           _novelty(ev, folder), _robustness(ev, folder)) if f]

    def num(v: Any) -> float:
        return float("nan") if v is None else float(v)

    summary = _table(
        [["accuracy", num(m["accuracy"])], ["macro-F1", num(m["macro_f1"])], ["anomaly-vs-clean AUROC", num(m["anomaly_auroc"])],
         ["ECE (15 bins)", num(m["ece_15"])], ["NLL (nats)", num(m["nll"])], ["Brier", num(m["brier"])],
         ["in-distribution novelty false-alarm rate", num(m["novelty"]["in_distribution_false_alarm_rate"])]],
        ["metric", "value"],
    )
    per_class = _table(
        [[n, num(v["precision"]), num(v["recall"]), num(v["f1"]), v["support"], num(m["one_vs_rest_auroc"][n])] for n, v in m["per_class"].items()],
        ["class", "precision", "recall", "F1", "support", "one-vs-rest AUROC"],
    )
    nov_rows = []
    for name, block in m["novelty"].items():
        if isinstance(block, dict) and "feature_score" in block and isinstance(block["feature_score"], dict):
            nov_rows.append([name, block["n"]] + [num(block[s][k]) for s in ("feature_score", "mutual_information", "predictive_entropy")
                                                   for k in ("auroc", "fpr_at_95_recall")] + [num(block["flagged_by_threshold"])])
    novelty = _table(nov_rows, ["novel set", "n", "feature AUROC", "feature FPR@95", "MI AUROC", "MI FPR@95",
                                "entropy AUROC", "entropy FPR@95", "flagged"]) if nov_rows else "<p>no novel sets</p>"
    model, data = m["model"], m["test_data"]
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sasview-bnn evaluation</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #aaa;padding:3px 8px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>Evaluation of {html.escape(Path(model['path']).name)}</h1>
<p>{html.escape(model['inference_method'])} posterior, {model['n_samples']} samples, novelty threshold {model['novelty_threshold']:.4g};
test file {html.escape(Path(data['path']).name)} (seed {data['seed']}): {data['n_curves']} curves, {data['n_refused']} refused by the
preprocessing, {data['n_in_distribution']} in-distribution; unseen classes: {html.escape(', '.join(data['unseen_classes']) or 'none')}.</p>
<h2>Summary</h2>{summary}<h2>Per class</h2>{per_class}<h2>Novelty</h2>{novelty}
{''.join(f'<h2>{html.escape(f.removesuffix(".png").replace("_", " "))}</h2><img src="{f}">' for f in figures)}
<p>All numbers: <a href="metrics.json">metrics.json</a>.</p></body></html>"""
    out = folder / "index.html"
    out.write_text(page)
    return out
