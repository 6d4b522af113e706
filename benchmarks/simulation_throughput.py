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

    python benchmarks/simulation_throughput.py [--n 6000] [--chunk-size 1000]
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


def pipeline_run(n: int, workers: int, chunk_size: int, folder: Path, seed: int) -> tuple[float, float, int]:
    """(cluster start-up s, pipeline s, output bytes) for n curves on a fresh warm cluster of ``workers``."""
    import distributed

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
        out = folder / f"bench{workers}.h5"
        start = time.perf_counter()
        simulate_to_file(n, out, seed, scheduler=cluster.scheduler_address, chunk_size=chunk_size, progress=False)
        seconds = time.perf_counter() - start
    return startup, seconds, out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000, help="curves per pipeline run (default 6000)")
    parser.add_argument("--chunk-size", type=int, default=1000, help="curves per chunk (default 1000: 6 chunks)")
    parser.add_argument("--serial-n", type=int, default=700, help="curves for the in-process rate (default 700)")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    from sasview_bnn_trainer.cli_simulate import quiet_logging

    quiet_logging()

    target_total = TARGET_CURVES / TARGET_SECONDS
    target_per_worker = target_total / TARGET_CORES
    print(f"machine: {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}")
    serial_before = in_process_rate(args.serial_n, args.seed)
    print(f"simulate_curve in-process:  {serial_before:7.1f} curves/s ({1e3 / serial_before:.2f} ms/curve, {args.serial_n} curves)")

    rates = {}
    with tempfile.TemporaryDirectory(prefix="sim-bench-") as tmp:
        for workers in (1, 2):
            startup, seconds, size = pipeline_run(args.n, workers, args.chunk_size, Path(tmp), args.seed)
            rates[workers] = args.n / seconds
            print(
                f"pipeline, {workers} worker{'s' if workers > 1 else ' '}:     {rates[workers]:7.1f} curves/s total, "
                f"{rates[workers] / workers:7.1f} per worker  ({args.n} curves in {seconds:.1f} s; "
                f"cluster start {startup:.1f} s; {size / args.n / 1024:.1f} KiB/curve)"
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
