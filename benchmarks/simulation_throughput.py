"""Throughput of the simulation pipeline against the 1,000,000-curves-in-30-minutes target.

Measures, in one run on this machine:

* ``simulate_curve`` alone, in this process (the physics cost, no Dask, no HDF5);
* the full pipeline of ``simulate_to_file`` (simulate, encode parts on the
  workers, write parts, merge, rename) with 1 and with 2 single-threaded
  workers on a warm loopback LocalCluster (sasmodels kernels already compiled),
  excluding the cluster's start-up, which is printed separately;

and prints curves/s per worker, the parallel efficiency, the ratio to the
target (1e6 curves / 1800 s = 555.6 curves/s in total on 2 cores, i.e. 277.8
per worker) and the output size per curve. Ratios measured in one run are
what to compare; absolute rates drift with the machine's load (print below).

Wall clock means little on a machine whose cores are shared (a training job
next door halves it), so the benchmark also counts **CPU time**:

* ``time.process_time()`` per curve in this process, per class, over
  ``--cpu-n`` curves of a fixed seed after the kernels are compiled
  (``simulate_curve`` only, and the HDF5 encoding a worker adds);
* during each pipeline run, the CPU time of every process involved (this
  client with its scheduler, and each worker, from psutil), per curve.

The target in CPU terms: 2 cores / 555.6 curves/s = 3.6 ms of CPU per curve
for all processes together. ``--cpu-only`` skips the Dask runs.

    python benchmarks/simulation_throughput.py [--n 6000] [--chunk-size 1000] [--cpu-n 2800] [--cpu-only]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path


TARGET_CURVES = 1_000_000
TARGET_SECONDS = 30 * 60
TARGET_CORES = 2


def in_process_rate(n: int, seed: int) -> float:
    """Curves/s of the first ``n`` curves of the benchmark's run simulated here (no Dask, no HDF5)."""
    from sasview_bnn_trainer.simulation.runner import SimulationPlan, simulate_chunk

    simulate_chunk(SimulationPlan(14, seed + 1, tuple(range(7)), 14), 0)  # warm-up: kernels compiled/loaded
    start = time.perf_counter()
    simulate_chunk(SimulationPlan(n, seed, tuple(range(7)), n), 0)
    return n / (time.perf_counter() - start)


def cpu_per_curve(n: int, seed: int) -> dict[str, object]:
    """CPU time (time.process_time, this process) of the first ``n`` curves of seed ``seed``, per class.

    Kernels are compiled and a few curves simulated first. Returns
    {"ms": {class: ms per curve}, "attempts": {class: mean draws per curve},
    "total_ms": ms per curve over all n, "encode_ms": ms per curve to encode
    them as an HDF5 part in memory (what a worker adds)}.
    """
    import io

    from sasview_bnn_trainer.simulation.classes import CLASS_NAMES, preload_models, simulate_curve
    from sasview_bnn_trainer.simulation.runner import SimulationPlan
    from sasview_bnn_trainer.simulation.store import CurveWriter

    preload_models()
    warm = SimulationPlan(14, seed + 1, tuple(range(7)), 14)
    for i, label in enumerate(warm.labels(0, 14)):
        simulate_curve(int(label), warm.curve_rng(i))
    plan = SimulationPlan(n, seed, tuple(range(7)), n)
    spent = {name: 0.0 for name in CLASS_NAMES}
    count = {name: 0 for name in CLASS_NAMES}
    attempts = {name: 0.0 for name in CLASS_NAMES}
    records = []
    start_all = time.process_time()
    for i, label in enumerate(plan.labels(0, n)):
        name = CLASS_NAMES[int(label)]
        start = time.process_time()
        curve = simulate_curve(int(label), plan.curve_rng(i))
        spent[name] += time.process_time() - start
        count[name] += 1
        attempts[name] += float(curve.params["attempts"])
        records.append(curve)
    total = time.process_time() - start_all
    start = time.process_time()
    with CurveWriter(io.BytesIO(), seed=seed, code_version="benchmark", classes=list(CLASS_NAMES), config={}) as writer:
        writer.append(records)
    encode = time.process_time() - start
    return {"ms": {k: 1e3 * spent[k] / count[k] for k in CLASS_NAMES if count[k]},
            "attempts": {k: attempts[k] / count[k] for k in CLASS_NAMES if count[k]},
            "total_ms": 1e3 * total / n, "encode_ms": 1e3 * encode / n}


def _cpu_seconds(processes) -> dict[int, float]:
    """User + system CPU seconds of each live process in ``processes`` (psutil.Process), by pid."""
    out = {}
    for proc in processes:
        try:
            times = proc.cpu_times()
        except Exception:  # noqa: BLE001 - a process that ended has nothing more to count
            continue
        out[proc.pid] = times.user + times.system
    return out


def pipeline_run(n: int, workers: int, chunk_size: int, folder: Path, seed: int) -> tuple[float, float, int, float, float]:
    """(cluster start-up s, pipeline s, output bytes, client CPU s, workers' CPU s) for n curves on a fresh warm cluster.

    CPU seconds are counted by psutil over the timed run only: the client
    (this process, which also hosts LocalCluster's scheduler) and the sum over
    the worker processes (and their nanny parents).
    """
    import distributed
    import psutil

    from sasview_bnn_trainer.simulation.runner import simulate_to_file

    start = time.perf_counter()
    with distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR,
    ) as cluster:
        startup = time.perf_counter() - start
        # Warm-up: every worker imports the simulator and compiles / loads its sasmodels kernels.
        simulate_to_file(14 * workers, folder / f"warm{workers}.h5", seed + 1, scheduler=cluster.scheduler_address,
                         chunk_size=14, progress=False)
        me = psutil.Process()
        children = me.children(recursive=True)
        out = folder / f"bench{workers}.h5"
        client_before, children_before = _cpu_seconds([me]), _cpu_seconds(children)
        start = time.perf_counter()
        simulate_to_file(n, out, seed, scheduler=cluster.scheduler_address, chunk_size=chunk_size, progress=False)
        seconds = time.perf_counter() - start
        client_after, children_after = _cpu_seconds([me]), _cpu_seconds(children)
    client_cpu = client_after[me.pid] - client_before[me.pid]
    workers_cpu = sum(children_after[pid] - children_before.get(pid, 0.0) for pid in children_after)
    return startup, seconds, out.stat().st_size, client_cpu, workers_cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000, help="curves per pipeline run (default 6000)")
    parser.add_argument("--chunk-size", type=int, default=1000, help="curves per chunk (default 1000: 6 chunks)")
    parser.add_argument("--serial-n", type=int, default=700, help="curves for the in-process rate (default 700)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--cpu-n", type=int, default=2800, help="curves for the CPU-time measurement (default 2800)")
    parser.add_argument("--cpu-only", action="store_true", help="only the CPU-time measurement in this process")
    args = parser.parse_args(argv)
    from sasview_bnn_trainer.cli_simulate import quiet_logging

    quiet_logging()

    target_total = TARGET_CURVES / TARGET_SECONDS
    target_per_worker = target_total / TARGET_CORES
    target_cpu_ms = 1e3 * TARGET_CORES / target_total
    print(f"machine: {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}")
    from sasview_bnn_trainer.simulation.runner import code_version

    cpu = cpu_per_curve(args.cpu_n, args.seed)
    print(f"CPU time per curve in one process ({code_version()}, seed {args.seed}, {args.cpu_n} curves, kernels compiled first):")
    for name, ms in cpu["ms"].items():
        print(f"  {name:15s} {ms:6.2f} ms  ({cpu['attempts'][name]:.2f} draws per curve)")
    worker_ms = cpu["total_ms"] + cpu["encode_ms"]
    print(f"  {'all classes':15s} {cpu['total_ms']:6.2f} ms, + {cpu['encode_ms']:.2f} ms HDF5 encoding = {worker_ms:.2f} ms per curve "
          f"per worker; target {target_cpu_ms:.2f} ms of CPU per curve for all processes on {TARGET_CORES} cores "
          f"(ratio {worker_ms / target_cpu_ms:.2f}; CPU-bound rate {1e3 * TARGET_CORES / worker_ms:.0f} curves/s "
          f"on {TARGET_CORES} free cores, client not counted)")
    if args.cpu_only:
        return 0
    serial_before = in_process_rate(args.serial_n, args.seed)
    print(f"simulate_curve in-process:  {serial_before:7.1f} curves/s ({1e3 / serial_before:.2f} ms/curve, {args.serial_n} curves)")

    rates = {}
    with tempfile.TemporaryDirectory(prefix="sim-bench-") as tmp:
        for workers in (1, 2):
            startup, seconds, size, client_cpu, workers_cpu = pipeline_run(args.n, workers, args.chunk_size, Path(tmp), args.seed)
            rates[workers] = args.n / seconds
            print(
                f"pipeline, {workers} worker{'s' if workers > 1 else ' '}:     {rates[workers]:7.1f} curves/s total, "
                f"{rates[workers] / workers:7.1f} per worker  ({args.n} curves in {seconds:.1f} s; "
                f"cluster start {startup:.1f} s; {size / args.n / 1024:.1f} KiB/curve)"
            )
            cpu_ms = 1e3 * (client_cpu + workers_cpu) / args.n
            print(
                f"  CPU per curve: workers {1e3 * workers_cpu / args.n:.2f} ms, client + scheduler {1e3 * client_cpu / args.n:.2f} ms, "
                f"all {cpu_ms:.2f} ms (target {target_cpu_ms:.2f}; CPU-bound rate on {TARGET_CORES} free cores "
                f"{1e3 * TARGET_CORES / cpu_ms:.0f} curves/s)"
            )
    serial_after = in_process_rate(args.serial_n, args.seed)
    serial = (serial_before + serial_after) / 2
    print(f"simulate_curve in-process, again: {serial_after:7.1f} curves/s (the drift shows the machine's noise)")
    print(f"pipeline / in-process rate, 1 worker: {rates[1] / serial:.2f}  (cost of Dask + HDF5 + merge)")
    print(f"parallel efficiency, 2 workers: {rates[2] / (2 * rates[1]):.2f}")
    print(
        f"target: {TARGET_CURVES:,} curves in {TARGET_SECONDS // 60} min on {TARGET_CORES} cores = {target_total:.1f} curves/s "
        f"({target_per_worker:.1f} per worker)"
    )
    print(f"ratio measured/target: 2 workers {rates[2] / target_total:.2f}, per worker (1-worker run) {rates[1] / target_per_worker:.2f}")
    print(f"=> 1,000,000 curves on 2 workers would take {TARGET_CURVES / rates[2] / 60:.0f} min")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
