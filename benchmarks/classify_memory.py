"""Peak memory of ``sasview-bnn classify`` on 10,000 and 100,000 curves.

Writes N small three-column ASCII files (60 points each, a Lorentzian with
noise and varying width; about 2 KB each) into a temporary folder, in
sub-folders of 10,000 files, and runs the installed ``sasview-bnn classify``
as a child process on one sub-folder and on all of them (``--recursive``),
streaming CSV into a file. The peak resident memory of each child is its
``ru_maxrss`` from ``os.wait4``. Prints both peaks, their ratio (1.0 means
memory does not grow with the number of curves), the wall and CPU times
(the wall time depends on what else the machine runs). Rows are not kept in
memory; what still grows is the list of data file paths (sasview_bnn_plugin.
loading.find_data_files, a few hundred bytes per file), and here every file
holds one curve. The model
is the small linear-heads test model (tests/onnx_test_models.py) unless
``--model`` is given.

Usage: python benchmarks/classify_memory.py [--sizes 10000 100000] [--model FILE] [--batch-size N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from onnx_test_models import write_model  # noqa: E402

FILES_PER_FOLDER = 10_000
N_POINTS = 60


def write_curves(root: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` ASCII curves (q in 1/Å, I, dI) in sub-folders of :data:`FILES_PER_FOLDER`; returns the sub-folders."""
    rng = np.random.default_rng(seed)
    q = np.geomspace(0.003, 0.5, N_POINTS)
    folders = []
    for start in range(0, n, FILES_PER_FOLDER):
        folder = root / f"part{start // FILES_PER_FOLDER:03d}"
        folder.mkdir()
        folders.append(folder)
        for k in range(start, min(n, start + FILES_PER_FOLDER)):
            width = rng.uniform(10, 200)
            intensity = 100 / (1 + (q * width) ** 2) + 0.01
            noisy = intensity * (1 + 0.03 * rng.standard_normal(N_POINTS))
            rows = "".join(f"{a:.6g} {b:.6g} {c:.6g}\n" for a, b, c in zip(q, noisy, 0.03 * intensity))
            (folder / f"curve{k:06d}.txt").write_text(rows)
    return folders


def peak_memory(command: list[str]) -> tuple[float, float, float]:
    """Run ``command``; return its peak resident memory in MiB, its wall time and its CPU time in seconds."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed with exit code {proc.returncode}")
    kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
    return kib / 1024, elapsed, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 100_000], metavar=("SMALL", "LARGE"), help="numbers of curves (multiples of 10000)")
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: the linear-heads test model, 32 samples)")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    small, large = args.sizes
    exe = str(Path(sys.executable).with_name("sasview-bnn"))
    with tempfile.TemporaryDirectory(prefix="classify-memory-") as tmp:
        root = Path(tmp)
        model = args.model or write_model(root / "heads.onnx", n_samples=32)
        t0 = time.perf_counter()
        data = root / "data"
        data.mkdir()
        folders = write_curves(data, large)
        print(f"wrote {large} curve files in {time.perf_counter() - t0:.0f} s")
        n_small_folders = max(1, small // FILES_PER_FOLDER)
        runs = {}
        for label, paths in (("small", folders[:n_small_folders]), ("large", [data])):
            out = root / f"{label}.csv"
            command = [exe, "classify", *map(str, paths), "--recursive", "--model", str(model), "--batch-size", str(args.batch_size), "-o", str(out), "--threads", "2"]
            peak, seconds, cpu = peak_memory(command)
            with out.open() as handle:
                rows = sum(1 for _ in handle) - 1
            runs[label] = (rows, peak, seconds)
            print(f"{rows:>7d} curves: peak RSS {peak:7.1f} MiB, {seconds:6.1f} s wall ({rows / seconds:.0f} curves/s), {cpu:6.1f} s CPU")
        (n_small, peak_small, _), (n_large, peak_large, _) = runs["small"], runs["large"]
        print(f"peak({n_large}) / peak({n_small}) = {peak_large / peak_small:.3f} for {n_large / n_small:.0f}x the curves")


if __name__ == "__main__":
    main()
