"""``sasview-bnn-train export``: write S posterior samples of a run as one ONNX model."""

from __future__ import annotations

import argparse
import sys

#: The exporter's graph layouts (``export.EXPORT_LAYOUTS``, spelled out so that --help imports no torch), default first.
EXPORT_LAYOUTS = ("sample-major", "batch-major", "grouped")
DEFAULT_LAYOUT = EXPORT_LAYOUTS[0]
#: The exported novelty scores (``novelty.NOVELTY_SCORES``, spelled out for the same reason), default first.
NOVELTY_SCORES = ("mahalanobis_entropy", "knn_entropy", "knn")
KNN_FEATURES = ("mean", "samples")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export S posterior weight samples of a run to ONNX (with metadata and a calibrated novelty threshold)",
        description="Pack S fixed posterior samples (VI draws or the first S ensemble members) of the run in RUN/ "
        "(or S/n of each of n runs) into one ONNX graph (no random operator; by default the sample-major layout: one dense first convolution on the "
        "shared input, one GEMM per sample over the whole batch after it) following sasview_bnn_plugin.core.model_format, fit the "
        "feature-space novelty score on training curves, calibrate its threshold on validation curves and check "
        "onnxruntime against torch.",
    )
    p.add_argument("run_dir", metavar="RUN/", nargs="+",
                   help="run directory written by `fit`; several runs of one recipe and one training/validation split "
                   "(fit --seed S --split-seed 0) give one graph with an equal share of the samples from each")
    p.add_argument("--samples", type=int, default=32,
                   help="posterior samples in the graph, over all runs (default 32; at most K per run for an ensemble)")
    p.add_argument("--out", metavar="MODEL.onnx", required=True, help="ONNX file to write, e.g. onnx_models/NAME.onnx")
    p.add_argument("--false-alarm-rate", type=float, default=0.05,
                   help="fraction of in-distribution validation curves allowed above the novelty threshold (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the VI posterior draws and of the novelty fit subset (default 0)")
    p.add_argument("--layout", choices=EXPORT_LAYOUTS, default=DEFAULT_LAYOUT,
                   help=f"graph layout (default {DEFAULT_LAYOUT}; 'grouped' is the slower torch-exported graph of earlier "
                   "releases, same outputs within 1e-5)")
    p.add_argument("--novelty-score", choices=NOVELTY_SCORES, default=NOVELTY_SCORES[0],
                   help="the novelty score in the graph: max(F/q_F, entropy/q_entropy) with F the Mahalanobis distance "
                   "(mahalanobis_entropy, the default) or the kNN distance (knn_entropy), or knn/q_knn alone (knn); "
                   "q are validation quantiles at 1 - the false-alarm rate")
    p.add_argument("--knn-k", type=int, default=10, help="kNN scores: the k-th nearest bank curve (default 10)")
    p.add_argument("--knn-bank", type=int, default=4000,
                   help="kNN scores: training curves in the bank, stratified over the classes, chosen with --seed (default 4000)")
    p.add_argument("--knn-features", choices=KNN_FEATURES, default=KNN_FEATURES[0],
                   help="kNN scores: compare the posterior-mean penultimate features (mean, default: a bank of "
                   "4000 x hidden float16 values) or every sample's (samples: S times the size and the arithmetic)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .export import export_run

    if not args.out.endswith(".onnx"):
        print("sasview-bnn-train export: error: --out must name a .onnx file", file=sys.stderr)
        return 2
    try:
        result = export_run(args.run_dir, args.out, args.samples, false_alarm_rate=args.false_alarm_rate, seed=args.seed,
                            layout=args.layout, novelty_score=args.novelty_score, knn_k=args.knn_k, knn_bank=args.knn_bank,
                            knn_features=args.knn_features)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"sasview-bnn-train export: error: {err}", file=sys.stderr)
        return 1
    meta = result.metadata
    print(f"wrote {result.path}: {meta['n_samples']} {meta['inference_method']} samples, novelty score {meta['novelty_score']} "
          f"({meta['novelty_settings']}), novelty threshold "
          f"{float(meta['novelty_threshold']):.4g} (false-alarm rate {float(meta['novelty_false_alarm_rate']):.3f}); "
          f"onnxruntime vs torch (float64) max |dp| = {result.parity_max_abs_diff:.2g}, novelty score "
          f"{result.score_parity:.2g} (relative); validation {meta['metrics']}")
    return 0
