"""``sasview-bnn-train evaluate``: metrics and an HTML report of an ONNX model on a test file."""

from __future__ import annotations

import argparse
import sys

from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="run an ONNX model with onnxruntime on a simulated test file and write metrics.json + an HTML report",
        description="Classification, calibration, uncertainty, novelty (unseen classes, pure noise, non-scattering "
        "curves) and robustness (noise level, q-window width) of MODEL.onnx on TEST.h5, run with onnxruntime.",
    )
    p.add_argument("model", metavar="MODEL.onnx", help="model written by `export`")
    p.add_argument("test", metavar="TEST.h5", help="simulated curve file (another seed than the training data)")
    p.add_argument("--report", metavar="DIR/", required=True, help="folder for metrics.json, index.html and the figures")
    p.add_argument("--novel-class", action="append", default=[], choices=CLASS_NAMES, metavar="NAME",
                   help="treat this class as unseen (repeatable); classes excluded from training are always treated so")
    p.add_argument("--synthetic", type=int, default=500, help="pure-noise and non-scattering curves generated per kind (default 500)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .evaluation.evaluate import evaluate_model
    from .evaluation.report import write_report

    try:
        ev = evaluate_model(args.model, args.test, novel_classes=args.novel_class, n_synthetic=args.synthetic,
                            threads=args.threads, progress=not args.quiet)
        page = write_report(ev, args.report)
    except (ValueError, OSError) as err:
        print(f"sasview-bnn-train evaluate: error: {err}", file=sys.stderr)
        return 1
    m = ev.metrics
    print(f"accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, anomaly AUROC {m['anomaly_auroc']:.4f}, "
          f"ECE {m['ece_15']:.4f}, NLL {m['nll']:.4f}; report: {page}")
    return 0
