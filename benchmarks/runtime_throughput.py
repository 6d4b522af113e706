"""Throughput of the runtime on sasdata's example data (294 1D curves in 54 files).

Prints, from one run: file reading time, classify() time (preprocessing + onnxruntime
+ result summaries) and the onnxruntime share, in curves per second. The model is
the small linear-heads test model (tests/onnx_test_models.py), so the onnxruntime
share here is a floor; a trained CNN ensemble costs more per curve (see
benchmarks/exported_model_throughput.py).

Usage: python benchmarks/runtime_throughput.py [--samples S] [--threads N] [--repeat R]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from onnx_test_models import write_model  # noqa: E402
from sasview_bnn_plugin import BNNClassifier, CurveLoader, find_data_files  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = Path(__import__("sasdata").__file__).parent / "example_data" / "1d_data"
    with tempfile.TemporaryDirectory() as tmp:
        model = write_model(Path(tmp) / "m.onnx", n_samples=args.samples)
        classifier = BNNClassifier(model, provider="cpu", intra_op_threads=args.threads)
        files, _ = find_data_files([data])
        loader = CurveLoader()
        t0 = time.perf_counter()
        curves = [c for f in files for c in loader.load(f)]
        t_load = time.perf_counter() - t0
        classifier.classify(curves)  # warm-up
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            results = classifier.classify(curves)
            best = min(best, time.perf_counter() - t0)
        features = np.random.default_rng(0).standard_normal((len(curves), 4, 256)).astype(np.float32)
        best_ort = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            classifier.predict_features(features)
            best_ort = min(best_ort, time.perf_counter() - t0)
    n, ok = len(curves), sum(r.ok for r in results)
    print(f"{len(files)} files, {n} curves ({ok} classified, {n - ok} refused), S = {args.samples}, {args.threads} threads")
    print(f"reading with sasdata: {t_load:.2f} s ({n / t_load:.0f} curves/s)")
    print(f"classify() end to end: {best:.3f} s ({n / best:.0f} curves/s)")
    print(f"onnxruntime alone:     {best_ort:.4f} s ({n / best_ort:.0f} curves/s); share of classify(): {best_ort / best:.2f}")


if __name__ == "__main__":
    main()
