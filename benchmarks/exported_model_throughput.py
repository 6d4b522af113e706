"""Speed of an exported sasview-bnn ONNX model with onnxruntime on CPU, old graph layout against the new.

Prints, all measured in one run (timings on a shared machine are noisy; the
layouts are timed alternately, best of ``--repeat`` rounds, so their ratios are
fair):

- FLOPs per curve counted from the graph (2 x multiply-adds of every Conv,
  MatMul and Gemm at batch 1, from ONNX shape inference; the new layouts'
  unfolding of the input, a copy done as a conv, is shown but not counted as
  work);
- curves/s per batch size (default 1, 32, 256, 1024) for the model as given
  and for the same weights rebuilt in each new layout
  (:func:`sasview_bnn_trainer.export.rebuild_model_file`, written to a
  temporary folder; the given file is only read);
- the numpy float32 sgemm rate with as many BLAS threads as onnxruntime gets
  (``--threads``; 1024^2 and 2048^2 matmuls, best of the measurements taken
  before, between and after the models) and the efficiency = achieved GFLOP/s
  / sgemm GFLOP/s (``--threads 1`` compares one core with one core, the
  ratio least changed by other jobs on the machine); on a CPU with AVX-512
  also the sgemm rate with OpenBLAS's AVX-512 kernels forced
  (OPENBLAS_CORETYPE=SkylakeX, in a subprocess) and the efficiency against
  it: numpy's OpenBLAS may not recognise a newer CPU and run its AVX2 kernels
  at half the machine's rate, while onnxruntime uses its own AVX-512 kernels;
- the single-curve latency (batch 1, best of ``--latency-repeat`` calls);
- the largest difference of every output between each layout and the given file.

With ``--knn-banks 2000,4000,8000`` it also times the default layout with the
kNN novelty head (``export --novelty-score knn_entropy``) in place of the
Mahalanobis one, one variant per bank size (k = ``--knn-k``, features
``--knn-features``): the bank is the penultimate features of the first input
curves (so ``--features`` with at least that many curves gives the real
thing), the network and the scales are the given model's. For each it prints
the added FLOPs, the file size and the largest difference of its novelty
score from its torch reference computed in float64 (relative to max(1, |s|)).

With ``--explore`` it also times the default new layout at other onnxruntime
graph optimisation levels and intra-op thread counts (batch 1 and 256), the
measurement the session settings are chosen by.

Inputs are real preprocessed curves when ``--features`` names a features file
(*.features.h5), otherwise random normal features.

Usage: python benchmarks/exported_model_throughput.py MODEL.onnx [--features F.h5] [--threads 2]
       [--batches 1,32,256,1024] [--layouts sample-major,batch-major] [--repeat 3] [--explore]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import shape_inference

from sasview_bnn_trainer.export import float64_outputs, read_metadata, rebuild_model_file
from sasview_bnn_trainer.onnx_graph import DEFAULT_LAYOUT, LAYOUTS, EnsembleWeights, build_graph

LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
}


def graph_flops(path: str | Path) -> tuple[float, float]:
    """(FLOPs of one curve, the part that is the network's arithmetic): 2 x multiply-adds of Conv, MatMul, Gemm.

    Shapes are inferred at batch 1. The second number leaves out the first
    layer's unfolding (the Conv with one-hot weights ``unfold.weight`` of the
    new layouts, a copy of the input); it is the work every layout does, and
    what the efficiencies are computed from.
    """
    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim
        if dim and not dim[0].HasField("dim_value"):
            dim[0].dim_value = 1
    model = shape_inference.infer_shapes(model, data_prop=True)
    # An axis shape inference cannot resolve (dim_value 0) follows from the batch axis, so it is 1 here.
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    total = copies = 0.0
    for node in model.graph.node:
        flops = 0.0
        if node.op_type == "Conv":
            out, weight = shapes[node.output[0]], shapes[node.input[1]]
            flops = 2.0 * np.prod(out) * np.prod(weight[1:])  # weight (out, in/group, *kernel)
            if node.input[1] == "unfold.weight":
                copies += flops
        elif node.op_type in ("MatMul", "Gemm"):
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            k = a[-1] if not (node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)) else a[0]
            flops = 2.0 * np.prod(out) * k
        total += flops
    return float(total), float(total - copies)


def blas_threads(n: int):
    """A context limiting numpy's BLAS to ``n`` threads (threadpoolctl), or doing nothing without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def sgemm_gflops(sizes: tuple[tuple[int, int], ...] = ((1024, 12), (2048, 3))) -> float:
    """numpy float32 matmul rate, GFLOP/s: the best of ``repeat`` products of each (n, repeat) size.

    Many short products as well as a few long ones, so that on a shared machine
    the sgemm rate is sampled in quiet moments as often as the model timings
    (best of several rounds) are.
    """
    best = 0.0
    for n, repeat in sizes:
        a = np.random.default_rng(1).random((n, n), dtype=np.float32)
        b = np.random.default_rng(2).random((n, n), dtype=np.float32)
        a @ b
        best = max(best, 2.0 * n**3 / min(_timed(lambda: a @ b, "sgemm", 2.0 * n**3) for _ in range(repeat)) / 1e9)
    return best


_SGEMM_CHILD = """
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
with threadpool_limits(limits=int(sys.argv[1]), user_api="blas"):
    best = 0.0
    for n, repeat in ((1024, 12), (2048, 3)):
        a = np.random.default_rng(1).random((n, n), dtype=np.float32)
        b = np.random.default_rng(2).random((n, n), dtype=np.float32)
        a @ b
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter(); a @ b; times.append(time.perf_counter() - t0)
        best = max(best, 2.0 * n**3 / min(times) / 1e9)
arch = [i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"]
print(json.dumps({"gflops": best, "architecture": arch}))
"""


def blas_architecture() -> str | None:
    """The kernel set numpy's OpenBLAS picked for this CPU (e.g. "Haswell": AVX2), None if unknown."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    found = [i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"]
    return found[0] if found else None


def sgemm_avx512_gflops(threads: int) -> float | None:
    """numpy sgemm with OpenBLAS's AVX-512 kernels forced (OPENBLAS_CORETYPE=SkylakeX, in a subprocess).

    On a CPU with AVX-512 that OpenBLAS does not recognise (it falls back to
    its AVX2 "Haswell" kernels) this is the machine's real float32 rate, the
    one onnxruntime's own AVX-512 kernels compete with. None when the CPU has
    no AVX-512, or numpy's BLAS is not OpenBLAS with threadpoolctl.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    if "avx512f" not in flags or blas_architecture() is None:
        return None
    env = dict(os.environ, OPENBLAS_CORETYPE="SkylakeX")
    done = subprocess.run([sys.executable, "-c", _SGEMM_CHILD, str(threads)], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode:
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["gflops"]) if result["architecture"] == ["SkylakeX"] else None


#: key -> [CPU seconds of this process, FLOPs done]: rates per CPU-second, which other jobs on the cores change less.
CPU: dict[str, list[float]] = {}


def _timed(fn, key: str | None = None, flops: float = 0.0) -> float:
    """Wall time of ``fn()``; with ``key``, its CPU time (all threads) and ``flops`` are added to :data:`CPU`."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    if key is not None:
        entry = CPU.setdefault(key, [0.0, 0.0])
        entry[0] += time.process_time() - c0
        entry[1] += flops
    return wall


def session(path: str | Path, threads: int, level: str = "all") -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = LEVELS[level]
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def alternate(sessions: dict[str, ort.InferenceSession], x: np.ndarray, repeat: int,
              flops: dict[str, float] | None = None) -> dict[str, float]:
    """Best time of one run of each session on ``x``, the sessions timed in turn ``repeat`` times.

    With ``flops`` (per curve, by session name) the CPU time is recorded in :data:`CPU` too.
    """
    feed = {"features": x}
    for s in sessions.values():
        s.run(None, feed)  # warm-up
    best = {name: float("inf") for name in sessions}
    for _ in range(repeat):
        for name, s in sessions.items():
            key = f"{name} @ {x.shape[0]}" if flops else None
            best[name] = min(best[name], _timed(lambda: s.run(None, feed), key, (flops or {}).get(name, 0.0) * x.shape[0]))
    return best


def max_differences(ref: ort.InferenceSession, other: ort.InferenceSession, x: np.ndarray) -> dict[str, float]:
    """Max abs difference of every output; for the novelty score also relative to max(1, |score|)."""
    names = [o.name for o in ref.get_outputs()]
    a, b = ref.run(names, {"features": x}), other.run(names, {"features": x})
    out = {}
    for name, u, v in zip(names, a, b):
        d = np.abs(u.astype(np.float64) - v)
        out[name] = float(d.max())
        if name == "novelty_score":
            out[name + " (relative)"] = float(np.max(d / np.maximum(1.0, np.abs(u))))
    return out


def knn_variant(model_path: str | Path, bank_curves: np.ndarray, out: Path, k: int, features: str,
                check: np.ndarray) -> tuple[Path, float]:
    """The given model rebuilt in the default layout with a kNN head (bank: ``bank_curves``), and its score's
    largest relative difference from the float64 torch reference on ``check``."""
    import torch

    from sasview_bnn_trainer.network import PackedCNN
    from sasview_bnn_trainer.novelty import ExportedModel, KnnNovelty

    proto = onnx.load(str(model_path))
    weights = EnsembleWeights.from_onnx(proto)
    net = PackedCNN(weights.config, weights.samples).eval()
    with torch.no_grad():
        for name, value in weights.params.items():
            net.get_parameter(name).copy_(torch.from_numpy(value))
        hidden = np.concatenate([net.hidden_features(torch.tensor(bank_curves[s : s + 1024])).double().numpy()
                                 for s in range(0, bank_curves.shape[0], 1024)])
        model = ExportedModel(net, KnnNovelty(hidden.transpose(1, 0, 2), k, features)).eval()
        scales = json.loads(read_metadata(model_path).get("novelty_scales", "{}"))
        # q_knn: the 95 % quantile of the score on the check curves (not the bank), as the export takes it on validation curves
        _, knn, _, _ = model.components(torch.from_numpy(check))
        model.set_novelty_scales(float(np.quantile(knn.numpy(), 0.95)), float(scales.get("entropy", 1.0)))
    knn_proto = build_graph(EnsembleWeights.from_model(model), DEFAULT_LAYOUT)
    onnx.save(knn_proto, str(out))
    got = session(out, 1).run(["novelty_score"], {"features": check})[0]
    _, _, exact = float64_outputs(model, check, with_scores=True)
    return out, float(np.max(np.abs(got - exact) / np.maximum(1.0, np.abs(exact))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--features", help="features file (*.features.h5) to take inputs from")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="1,32,256,1024", help="comma-separated batch sizes (default 1,32,256,1024)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"new layouts to rebuild the model in (default {','.join(LAYOUTS)})")
    parser.add_argument("--repeat", type=int, default=3, help="timing rounds per batch size (default 3)")
    parser.add_argument("--latency-repeat", type=int, default=50, help="single-curve calls timed (default 50)")
    parser.add_argument("--explore", action="store_true", help="also time optimisation levels and thread counts")
    parser.add_argument("--knn-banks", default="", help="comma-separated kNN bank sizes to time the kNN novelty head with")
    parser.add_argument("--knn-k", type=int, default=10)
    parser.add_argument("--knn-features", default="mean", choices=("mean", "samples"))
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    layouts = [name for name in args.layouts.split(",") if name]
    meta = read_metadata(args.model)
    n = max(batches)
    banks = [int(b) for b in args.knn_banks.split(",") if b]
    n_read = n + max(banks, default=0)  # the bank curves come after the timed ones
    if args.features:
        from sasview_bnn_trainer.features import FeatureFile

        with FeatureFile(args.features) as ff:
            pool = ff.read_rows(np.arange(min(n_read, len(ff))))
        source = f"{args.features}"
    else:
        pool = np.random.default_rng(0).standard_normal((n_read, 4, 256)).astype(np.float32)
        source = "random normal features"
    pool = np.concatenate([pool] * int(np.ceil(n_read / pool.shape[0])))[:n_read]
    x, bank_pool = pool[:n], pool[n:]

    def sgemm_gflops_threads() -> float:  # numpy with as many BLAS threads as onnxruntime has
        with blas_threads(args.threads):
            return sgemm_gflops()

    sgemm = [sgemm_gflops_threads()]
    avx512 = [sgemm_avx512_gflops(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"as given": Path(args.model)}
        for layout in layouts:
            paths[layout] = rebuild_model_file(args.model, Path(tmp) / f"{layout}.onnx", layout)
        knn_diff = {}
        for bank in banks:
            name = f"knn bank {bank}"
            paths[name], knn_diff[name] = knn_variant(args.model, bank_pool[:bank], Path(tmp) / f"knn{bank}.onnx", args.knn_k,
                                                      args.knn_features, x[: min(n, 512)])
        sizes = {name: p.stat().st_size for name, p in paths.items()}
        counted = {name: graph_flops(p) for name, p in paths.items()}
        flops = {name: c[1] for name, c in counted.items()}
        sessions = {name: session(p, args.threads) for name, p in paths.items()}
        diffs = {name: max_differences(sessions["as given"], s, x[: min(n, 1024)]) for name, s in sessions.items() if name != "as given"}
        for name in knn_diff:  # another novelty score by design: only the other outputs are compared
            diffs[name] = {k: v for k, v in diffs[name].items() if not k.startswith("novelty_score")}

        rates: dict[int, dict[str, float]] = {}
        for batch in batches:
            times = alternate(sessions, x[:batch], args.repeat if batch > 1 else 5 * args.repeat, flops)
            rates[batch] = {name: batch / t for name, t in times.items()}
            sgemm.append(sgemm_gflops_threads())
        one = {name: t for name, t in alternate(sessions, x[:1], args.latency_repeat).items()}
        sgemm.append(sgemm_gflops_threads())
        avx512.append(sgemm_avx512_gflops(args.threads))

        explore = []
        if args.explore:
            variants = {}
            for level in LEVELS:
                for threads in sorted({1, args.threads}):
                    variants[f"{DEFAULT_LAYOUT}, {level}, {threads} threads"] = session(paths[DEFAULT_LAYOUT], threads, level)
            variants["as given, all, %d threads" % args.threads] = sessions["as given"]
            for batch in (1, 256):
                times = alternate(variants, x[:batch], args.repeat if batch > 1 else 10 * args.repeat)
                explore.append((batch, {k: batch / t for k, t in times.items()}))
            sgemm.append(sgemm_gflops_threads())

    peak = max(sgemm)
    print(f"{args.model}: {meta.get('inference_method')}, S = {meta.get('n_samples')}, {args.threads} onnxruntime threads, "
          f"inputs: {source}")
    print(f"numpy float32 sgemm, {args.threads} BLAS threads: {peak:.1f} GFLOP/s (best of {len(sgemm)} in this run: "
          f"{', '.join(f'{v:.0f}' for v in sgemm)})")
    peak512 = max(avx512) if all(v is not None for v in avx512) else None
    if peak512:
        print(f"numpy float32 sgemm with OpenBLAS's AVX-512 kernels (OPENBLAS_CORETYPE=SkylakeX), {args.threads} threads: "
              f"{peak512:.1f} GFLOP/s (best of {len(avx512)}: {', '.join(f'{v:.0f}' for v in avx512)}); numpy as installed "
              f"uses OpenBLAS's {blas_architecture()!r} kernels on this CPU, onnxruntime its own AVX-512 ones")
    for name in paths:
        print(f"FLOPs per curve counted from the graph, {name}: {counted[name][0] / 1e6:.2f} MFLOP"
              + (f" ({flops[name] / 1e6:.2f} without unfolding the input, used for the efficiencies)"
                 if counted[name][0] != flops[name] else ""))
    header = f"{'batch':>6} " + " ".join(f"{name + ' curves/s':>24} {'eff.':>5}" + (f" {'AVX512':>6}" if peak512 else "")
                                       for name in paths)
    print(header)
    for batch in batches:
        cells = []
        for name in paths:
            gf = rates[batch][name] * flops[name] / 1e9
            cells.append(f"{rates[batch][name]:>24.0f} {gf / peak:>5.2f}" + (f" {gf / peak512:>6.2f}" if peak512 else ""))
        ratio = " ".join(f"{name}/given {rates[batch][name] / rates[batch]['as given']:.2f}x" for name in layouts)
        ratio += "".join(f" {name}/{DEFAULT_LAYOUT} {rates[batch][name] / rates[batch][DEFAULT_LAYOUT]:.2f}x"
                         for name in knn_diff if DEFAULT_LAYOUT in rates[batch])
        print(f"{batch:>6} " + " ".join(cells) + "   " + ratio)
    for name in paths:
        best_batch = max(batches, key=lambda b: rates[b][name])
        gf = rates[best_batch][name] * flops[name] / 1e9
        also = f" ({gf / peak512:.2f} of the AVX-512 sgemm)" if peak512 else ""
        print(f"{name}: best {rates[best_batch][name]:.0f} curves/s at batch {best_batch} = {gf:.1f} GFLOP/s = "
              f"{gf / peak:.2f} of sgemm{also}; single curve {one[name] * 1e3:.3f} ms")
    cpu_sgemm = CPU["sgemm"][1] / CPU["sgemm"][0] / 1e9
    print(f"per CPU-second of this process (all its threads; spinning threads count): sgemm {cpu_sgemm:.1f} GFLOP/cpu-s")
    for name in paths:
        cells = []
        for batch in batches:
            used, done = CPU[f"{name} @ {batch}"]
            cells.append(f"batch {batch}: {done / used / 1e9:.1f} ({done / used / 1e9 / cpu_sgemm:.2f})")
        print(f"  {name}: GFLOP/cpu-s (of sgemm's): " + ", ".join(cells))
    for name, d in knn_diff.items():
        print(f"{name} (k = {args.knn_k}, {args.knn_features} features): file {sizes[name] / 1e6:.2f} MB (as given "
              f"{sizes['as given'] / 1e6:.2f} MB), {(flops[name] - flops.get(DEFAULT_LAYOUT, flops[name])) / 1e6:+.2f} MFLOP per curve "
              f"against {DEFAULT_LAYOUT}; novelty score vs its float64 torch reference: max relative difference {d:.2g}")
    for name, d in diffs.items():
        print(f"max |{name} - as given| on {min(n, 1024)} curves: " + ", ".join(f"{k} {v:.2g}" for k, v in d.items()))
    for batch, row in explore:
        print(f"explore, batch {batch}: " + "; ".join(f"{k}: {v:.0f} curves/s" for k, v in row.items()))


if __name__ == "__main__":
    main()
