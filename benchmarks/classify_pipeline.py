"""End-to-end ``sasview-bnn classify`` curves/s over model-only curves/s, and classify's peak memory, in one run.

Writes N one-curve ASCII files (60 points, q 0.003-0.5, I, dI: the files of
benchmarks/classify_memory.py; ``--unit-header`` adds a "# q (1/A) I dI"
header, so that the unit need not be decided by running both readings) into a
temporary folder, then measures, interleaved (model, classify, model) so that
a change of the machine's load hits both alike:

- **model-only**: the shipped model (or ``--model``) on the model inputs of
  exactly these curves (prepared in this process, untimed, as classify
  prepares them: a curve whose q unit is plausible both ways has two inputs),
  through ``BNNClassifier.predict_features`` at ``--batch-size``; curves/s =
  N / seconds.
- **end to end**: the installed ``sasview-bnn classify FOLDER -o out.csv
  --batch-size B --jobs J`` as a child process: wall time, and wall time less
  the start-up (the same command on one file: imports, model load, worker
  start); curves/s = N / seconds.
- **peak memory** of classify: the process tree's resident memory (main
  process plus its workers, summed) and the largest single process's, polled
  every 20 ms with psutil; for ``--memory-files`` files
  (default 10,000; e.g. ``--memory-files 10000 100000``), in runs of their own
  (the timed runs are not polled: polling takes CPU from classify).

Prints the ratio end-to-end / model-only. The machine's other load is not
controlled: the ratio from one run is the number to read, not the rates.

Usage: python benchmarks/classify_pipeline.py [--files 5000] [--memory-files 10000 [100000]]
       [--jobs J] [--batch-size 256] [--unit-header] [--model FILE] [--threads N] [--model-streams N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from sasview_bnn_plugin import BNNClassifier, CurveLoader

N_POINTS = 60
EXE = str(Path(sys.executable).with_name("sasview-bnn"))


def write_curves(folder: Path, n: int, unit_header: bool, seed: int = 0) -> None:
    """``n`` one-curve ASCII files (q in 1/Å, I, dI) in ``folder``."""
    rng = np.random.default_rng(seed)
    q = np.geomspace(0.003, 0.5, N_POINTS)
    folder.mkdir(parents=True, exist_ok=True)
    header = "# q (1/A)  I (1/cm)  dI (1/cm)\n" if unit_header else ""
    for k in range(n):
        width = rng.uniform(10, 200)
        intensity = 100 / (1 + (q * width) ** 2) + 0.01
        noisy = intensity * (1 + 0.03 * rng.standard_normal(N_POINTS))
        rows = "".join(f"{a:.6g} {b:.6g} {c:.6g}\n" for a, b, c in zip(q, noisy, 0.03 * intensity))
        (folder / f"curve{k:06d}.txt").write_text(header + rows)


def model_only(classifier: BNNClassifier, features: np.ndarray, n_curves: int) -> float:
    """Curves/s of the model alone on the inputs of ``n_curves`` curves."""
    started = time.perf_counter()
    classifier.predict_features(features)
    return n_curves / (time.perf_counter() - started)


class TreeMemory:
    """The largest summed RSS of a process and its descendants, polled in a thread."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.peak = 0
        self.largest = 0
        self._stop = threading.Event()
        self._root = psutil.Process(pid)
        self._thread = threading.Thread(target=self._poll, args=(every,), daemon=True)
        self._thread.start()

    def _poll(self, every: float) -> None:
        while not self._stop.is_set():
            try:
                procs = [self._root, *self._root.children(recursive=True)]
                total = 0
                for proc in procs:
                    try:
                        rss = proc.memory_info().rss
                    except psutil.Error:
                        continue
                    total += rss
                    self.largest = max(self.largest, rss)
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            time.sleep(every)

    def stop(self) -> tuple[float, float]:
        """The peaks in MiB: the tree's summed RSS, the largest single process's RSS."""
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20, self.largest / 2**20


def run_classify(args: list[str], out: Path, poll_memory: bool = True) -> tuple[float, float, float, int]:
    """Run ``sasview-bnn classify ARGS -o out``: wall seconds, tree peak MiB, largest process peak MiB, rows.

    (Polled, not ``ru_maxrss``: the child's ``ru_maxrss`` counts this benchmark's own memory, forked before the exec.)
    ``poll_memory=False`` for the timed runs: polling the process tree every 20 ms takes CPU from classify
    (the peaks are then 0)."""
    if out.exists():
        out.unlink()
    started = time.perf_counter()
    proc = subprocess.Popen([EXE, "classify", *args, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    memory = TreeMemory(proc.pid) if poll_memory else None
    _, status, _ = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    tree, largest = memory.stop() if memory is not None else (0.0, 0.0)
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"sasview-bnn classify failed ({code}): {err[-2000:]}")
    with out.open() as handle:
        rows = sum(1 for _ in handle) - 1
    return wall, tree, largest, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000, help="one-curve files for the rates (default 5000)")
    parser.add_argument("--memory-files", type=int, nargs="*", default=[10_000], help="file counts for the peak memory (default 10000)")
    parser.add_argument("--jobs", type=int, default=None, help="classify --jobs (default: classify's default, the cores)")
    parser.add_argument("--batch-size", type=int, default=256, help="classify --batch-size and the model-only batch (default 256, classify's)")
    parser.add_argument("--unit-header", action="store_true", help="files name their q unit (one model input per curve)")
    parser.add_argument("--model", default=None, help="model name or ONNX file (default: the first shipped model)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads, for both measurements")
    parser.add_argument("--model-streams", type=int, default=None, help="model calls at once (classify --model-streams; default classify's), for both measurements")
    args = parser.parse_args()

    common = ["--batch-size", str(args.batch_size)]
    if args.model:
        common += ["--model", args.model]
    if args.jobs:
        common += ["--jobs", str(args.jobs)]
    if args.threads:
        common += ["--threads", str(args.threads)]
    if args.model_streams:
        common += ["--model-streams", str(args.model_streams)]
    with tempfile.TemporaryDirectory(prefix="classify-pipeline-") as tmp:
        root = Path(tmp)
        data = root / "rate"
        t0 = time.perf_counter()
        write_curves(data, args.files, args.unit_header)
        print(f"wrote {args.files} one-curve files in {time.perf_counter() - t0:.0f} s (unit header: {args.unit_header})")

        from sasview_bnn_plugin.cli.classify import open_classifier  # the model classify opens, with its options

        options = argparse.Namespace(model=args.model, provider="auto", threads=args.threads, novelty_threshold=None,
                                     batch_size=args.batch_size, set_level=None, novelty_level=None, q_unit="auto", calibration=None,
                                     model_streams=args.model_streams)
        _, classifier, _ = open_classifier(options)
        loader = CurveLoader()
        files = sorted(data.iterdir())
        prepared = classifier.prepare(c for path in files for c in loader.load(path))
        features = np.stack([mi.features for p in prepared for _, mi in p.readings if hasattr(mi, "features")])
        n = len(prepared)
        print(f"{n} curves, {len(features)} model inputs ({len(features) / n:.2f} per curve), batch {args.batch_size}, "
              f"{psutil.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        classifier.predict_features(features[: args.batch_size])  # warm up

        startup, _, _, _ = run_classify([str(files[0]), *common], root / "one.csv", poll_memory=False)
        rate_before = model_only(classifier, features, n)
        wall, _, _, rows = run_classify([str(data), *common], root / "rate.csv", poll_memory=False)
        rate_after = model_only(classifier, features, n)
        assert rows == n, (rows, n)
        model_rate = (rate_before + rate_after) / 2
        e2e = n / wall
        print(f"model only:  {model_rate:8.1f} curves/s (before {rate_before:.1f}, after {rate_after:.1f})")
        if wall > startup:
            e2e_net = n / (wall - startup)
            print(f"end to end:  {e2e:8.1f} curves/s ({wall:.2f} s wall for {n} files); {e2e_net:.1f} curves/s less the start-up of {startup:.2f} s")
            print(f"ratio end-to-end / model-only: {e2e / model_rate:.3f} (start-up included), {e2e_net / model_rate:.3f} (start-up subtracted)")
        else:  # the one-file start-up took longer than the whole run: the machine's load changed, the run says nothing
            print(f"end to end:  {e2e:8.1f} curves/s ({wall:.2f} s wall for {n} files); the start-up ({startup:.2f} s) took longer: "
                  "the load changed during the run, measure again")
            print(f"ratio end-to-end / model-only: {e2e / model_rate:.3f} (start-up included)")
        del features, prepared, classifier

        for count in args.memory_files:
            folder = root / f"memory{count}"
            write_curves(folder, count, args.unit_header, seed=1)
            wall, tree, largest, rows = run_classify([str(folder), *common], root / "memory.csv")
            print(f"peak memory at {rows} files: {tree:.1f} MiB process tree (main + workers, summed), "
                  f"{largest:.1f} MiB largest process; {wall:.1f} s, {rows / wall:.1f} curves/s")
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()


if __name__ == "__main__":
    main()
