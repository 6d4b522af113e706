"""BNN against fit-and-select on the same test curves: accuracy, macro-F1, per-class recall, seconds per curve.

Runs the model (preprocessing + onnxruntime, one process, ``--threads``
intra-op threads, batches of 256) on every curve of TEST.h5, reads the
fit-and-select summary written by ``benchmarks/fit_and_select.py`` on the same
file, and prints and writes the side-by-side table (``OUT/comparison.json``
with a ``table_markdown`` entry, which ``sasview-bnn-train card --baseline``
puts in the model card). Seconds per curve are wall-clock times measured in
this run (BNN) and in the fit-and-select run (its summary), and the speed
ratio is their quotient.

Usage::

    python benchmarks/bnn_vs_fit_and_select.py MODEL.onnx TEST.h5 --fit-and-select DIR/summary.json --out DIR/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from sasview_bnn_plugin import CLASS_NAMES, BNNClassifier
from sasview_bnn_trainer.evaluation import metrics as M
from sasview_bnn_trainer.simulation.store import CurveReader


def run_bnn(model: Path, test: Path, threads: int) -> dict:
    """Classify every curve of ``test``; accuracy, macro-F1, per-class recall and wall seconds per curve."""
    with CurveReader(test) as reader:
        curves = reader.read(0, len(reader))
    items = [(c.q, c.intensity, c.d_intensity, None, c.q_unit) for c in curves]
    labels = np.array([c.label for c in curves])
    classifier = BNNClassifier(model, intra_op_threads=threads, batch_size=256)
    classifier.classify(items[:64])  # warm-up: first onnxruntime call allocates
    start = time.perf_counter()
    results = classifier.classify(items)
    wall = time.perf_counter() - start
    predicted = np.array([CLASS_NAMES.index(r.label) if r.ok else -1 for r in results])
    cm = M.confusion_matrix(labels, predicted, len(CLASS_NAMES))
    recall = {name: float(cm[k, k] / cm[k].sum()) if cm[k].sum() else float("nan") for k, name in enumerate(CLASS_NAMES)}
    return {
        "n_curves": len(curves),
        "refused": int(np.sum(predicted < 0)),
        "accuracy": float(np.mean(predicted == labels)),
        "macro_f1": M.macro_f1(cm),
        "recall": recall,
        "confusion": cm.tolist(),
        "wall_seconds_per_curve": wall / len(curves),
        "threads": threads,
        "novel_flagged": int(sum(bool(r.is_novel) for r in results if r.ok)),
    }


def table(bnn: dict, fas: dict) -> str:
    """Markdown table: BNN and fit-and-select (BIC, AIC, best chi-square) side by side."""
    crit = [c for c in ("bic", "aic", "chi2") if c in fas]
    head = ["", "BNN"] + [f"fit-and-select ({c.upper() if c != 'chi2' else 'best χ²'})" for c in crit]
    rows = [head, ["---"] * len(head)]
    rows.append(["accuracy", f"{bnn['accuracy']:.3f}"] + [f"{fas[c]['accuracy']:.3f}" for c in crit])
    rows.append(["macro-F1", f"{bnn['macro_f1']:.3f}"] + [f"{fas[c]['macro_f1']:.3f}" for c in crit])
    for name in CLASS_NAMES:
        rows.append([f"recall {name}", f"{bnn['recall'][name]:.3f}"] + [f"{fas[c]['recall'][name]:.3f}" for c in crit])
    fas_s = fas["timing"]["wall_seconds_per_curve_elapsed"]
    rows.append(["seconds per curve (wall)", f"{bnn['wall_seconds_per_curve']:.2e}"] + [f"{fas_s:.2f}"] * len(crit))
    ratio = fas_s / bnn["wall_seconds_per_curve"]
    text = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    return (text + f"\n\nSame {bnn['n_curves']} test curves. BNN: one process, {bnn['threads']} onnxruntime thread(s), "
            f"preprocessing included; fit-and-select: {fas.get('workers', '?')} worker process(es). "
            f"The BNN is {ratio:,.0f}x faster per curve.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--fit-and-select", type=Path, required=True, help="summary.json written by fit_and_select.py on TEST")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1, like one fit worker)")
    args = parser.parse_args(argv)
    fas = json.loads(args.fit_and_select.read_text())
    bnn = run_bnn(args.model, args.test, args.threads)
    if fas.get("n_curves") != bnn["n_curves"]:
        print(f"warning: fit-and-select classified {fas.get('n_curves')} curves, the BNN {bnn['n_curves']}", file=sys.stderr)
    md = table(bnn, fas)
    args.out.mkdir(parents=True, exist_ok=True)
    out = {"bnn": bnn, "fit_and_select": {k: fas[k] for k in fas if k != "per_curve"}, "table_markdown": md,
           "speed_ratio": fas["timing"]["wall_seconds_per_curve_elapsed"] / bnn["wall_seconds_per_curve"]}
    (args.out / "comparison.json").write_text(json.dumps(out, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
