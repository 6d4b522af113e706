"""Chunked, resumable, deterministic simulation of labelled curves on Dask.

A run of ``n_curves`` curves with seed ``seed`` is fixed curve by curve,
independently of how many workers run it, in which order chunks finish and
even of the chunk size:

* the label of curve ``i`` comes from a balanced plan: the curves are taken in
  consecutive blocks of K (K = number of simulated classes) and each block holds
  every class once, in an order drawn from ``SeedSequence(seed, spawn_key=(1, block))``;
  so class counts differ by at most one;
* curve ``i`` is simulated by ``simulate_curve(label, rng)`` with
  ``rng = default_rng(SeedSequence(seed, spawn_key=(0, i)))``, so any single
  curve can be regenerated alone (:func:`regenerate_curve`).

Chunks of ``chunk_size`` consecutive curves are the unit of work. A Dask task
simulates one chunk and encodes it as an HDF5 part file in memory, so workers
need no shared filesystem and never touch the output folder; the client writes
it as ``<out>.parts/chunk_000123.h5`` (temp name, then atomic rename, so a
cut-off run never leaves a torn part) and, as soon as a fixed group of
consecutive chunks (about :data:`MERGE_GROUP_CURVES` curves) is complete,
appends the group *in order* through :class:`~.store.CurveWriter` to
``<out>.parts/merged.h5.tmp``. At the end the merged file is renamed to
``out`` and the parts folder removed. The client holds at most one group in
memory (about 10 kB per curve), whatever ``n_curves``. Disk: parts are kept
until the end (they are what ``resume`` trusts), so a run needs about 2.5x the
output's size (measured 11.6 kB per curve in the output) while it runs.

A run that stopped (crash, kill, Ctrl-C) keeps its finished parts; calling
again with ``resume=True`` and the same settings simulates only the missing
chunks and gives a file identical to an uninterrupted run.

Compute: by default an embedded ``distributed.LocalCluster`` on 127.0.0.1 with
``workers`` processes of one thread each; ``scheduler="tcp://host:port"`` sends
the same tasks to an existing cluster (for instance one started by
dask-jobqueue on SLURM or PBS). Its workers must have ``sasview-bnn[train]``
installed; they never touch the output folder.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from sasview_bnn_plugin import __version__ as PACKAGE_VERSION
from sasview_bnn_plugin.cli.dask_cluster import dask_client as cluster_client
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES, class_index

from .record import SimulatedCurve
from .store import CurveReader, CurveWriter

#: Default number of curves per chunk (one Dask task, one part file).
DEFAULT_CHUNK_SIZE = 2000
#: Curves merged into the output per write (parts held in memory together: ~10 kB per curve).
MERGE_GROUP_CURVES = 10_000

_CURVE_STREAM = 0
_LABEL_STREAM = 1
_PART_RE = re.compile(r"^chunk_(\d{6,})\.h5$")
_MANIFEST = "manifest.json"
_MERGED_TMP = "merged.h5.tmp"


class SimulationConfigError(ValueError):
    """A setting of the run is invalid (bad count, class name, path...); nothing was written."""


class SimulationError(RuntimeError):
    """The run failed while simulating; finished chunks are kept for ``resume``."""


#: Modules of this package that do not shape the curves (left out of the source digest).
_NOT_SIMULATOR = {"runner.py", "preview.py", "store.py"}


def code_version() -> str:
    """Package version plus the simulator's version, e.g. ``"0.1.0+sim.1.0.0"``."""
    from .classes import SIMULATOR_VERSION

    return f"{PACKAGE_VERSION}+sim.{SIMULATOR_VERSION}"


@functools.lru_cache(maxsize=None)
def simulator_source_digest() -> str:
    """SHA-256 (first 16 hex digits) of the simulator's source files, read once per process.

    Catches what SIMULATOR_VERSION cannot: physics edited without a version
    bump between a run and its resume, or cluster workers running other code
    than the client.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.name not in _NOT_SIMULATOR:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def resolve_classes(classes: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> tuple[int, ...]:
    """Taxonomy indices (sorted) of the classes to simulate.

    ``classes`` are class names (all seven if None or empty); ``exclude`` names
    are removed from them. Raises :class:`SimulationConfigError` on an unknown
    name or when no class is left.
    """
    try:
        chosen = {class_index(c) for c in (classes or CLASS_NAMES)}
        removed = {class_index(c) for c in exclude}
    except ValueError as err:
        raise SimulationConfigError(str(err)) from None
    left = tuple(sorted(chosen - removed))
    if not left:
        raise SimulationConfigError(
            "no class left to simulate: --exclude-class removes every class chosen with --classes"
        )
    return left


@dataclass(frozen=True)
class SimulationPlan:
    """What a run produces: curve count, seed, classes (taxonomy indices) and chunking.

    Everything here except ``chunk_size`` fixes the content of the output;
    ``chunk_size`` only fixes how the work is cut.
    """

    n_curves: int
    seed: int
    classes: tuple[int, ...]
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self) -> None:
        for name in ("n_curves", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise SimulationConfigError(f"{name.replace('_', ' ')} must be a positive whole number, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise SimulationConfigError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if not self.classes or any(not 0 <= c < len(CLASS_NAMES) for c in self.classes):
            raise SimulationConfigError(f"classes must be taxonomy indices 0..{len(CLASS_NAMES) - 1}, got {self.classes!r}")

    @property
    def class_names(self) -> list[str]:
        """Names of the simulated classes, in taxonomy order."""
        return [CLASS_NAMES[c] for c in self.classes]

    @property
    def n_chunks(self) -> int:
        """Number of chunks (the last one may be short)."""
        return -(-self.n_curves // self.chunk_size)

    def chunk_bounds(self, k: int) -> tuple[int, int]:
        """Curve indices ``start, stop`` of chunk ``k``."""
        start = k * self.chunk_size
        return start, min(start + self.chunk_size, self.n_curves)

    def chunk_length(self, k: int) -> int:
        """Number of curves in chunk ``k``."""
        start, stop = self.chunk_bounds(k)
        return stop - start

    def labels(self, start: int, stop: int) -> np.ndarray:
        """Taxonomy labels of curves ``start..stop-1``, shape (stop - start,), int8."""
        k = len(self.classes)
        classes = np.asarray(self.classes, dtype=np.int8)
        out = np.empty(stop - start, dtype=np.int8)
        for block in range(start // k, -(-stop // k)):
            order = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_LABEL_STREAM, block))).permutation(k)
            lo, hi = max(block * k, start), min((block + 1) * k, stop)
            out[lo - start : hi - start] = classes[order[lo - block * k : hi - block * k]]
        return out

    def curve_rng(self, i: int) -> np.random.Generator:
        """The random generator that simulates curve ``i``."""
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_CURVE_STREAM, i)))

    def config(self, version: str, source_digest: str) -> dict:
        """JSON-serialisable record of the run, stored in the file's ``config`` attribute."""
        return {
            "command": "simulate",
            "n_curves": int(self.n_curves),
            "seed": int(self.seed),
            "classes": self.class_names,
            "chunk_size": int(self.chunk_size),
            "code_version": version,
            "simulator_source_sha256": source_digest,
            "labels": "balanced blocks of len(classes), order from SeedSequence(seed, spawn_key=(1, block))",
            "rng": "curve i: numpy default_rng(SeedSequence(seed, spawn_key=(0, i)))",
        }


def simulate_chunk(plan: SimulationPlan, k: int) -> list[SimulatedCurve]:
    """Simulate the curves of chunk ``k`` in order."""
    from .classes import simulate_curve

    start, stop = plan.chunk_bounds(k)
    return [simulate_curve(int(label), plan.curve_rng(start + j)) for j, label in enumerate(plan.labels(start, stop))]


def regenerate_curve(plan: SimulationPlan, i: int) -> SimulatedCurve:
    """Curve ``i`` of the run described by ``plan``, simulated alone."""
    from .classes import simulate_curve

    return simulate_curve(int(plan.labels(i, i + 1)[0]), plan.curve_rng(i))


@dataclass(frozen=True)
class EncodedChunk:
    """What a worker returns: chunk ``k`` as the bytes of an HDF5 curve file, and the code that made it."""

    k: int
    code_version: str
    source_digest: str
    data: bytes


@functools.lru_cache(maxsize=None)
def prepare_worker() -> None:
    """Compile or load every sasmodels kernel, once per worker process, one worker at a time.

    sasmodels compiles a kernel straight into its shared cache
    (~/.sasmodels/compiled_models or $SAS_DLL_PATH), so two workers compiling
    the same model at once can load a half-written library. A cluster-wide
    ``distributed.Lock`` makes the first worker compile while the others
    wait, then load. With a warm cache this takes about a second. Outside a
    worker (a task run by hand) it just compiles.
    """
    import distributed

    from .classes import preload_models

    try:
        distributed.get_worker()
    except ValueError:
        preload_models()
        return
    with distributed.Lock("sasview-bnn-trainer/compile-sasmodels-kernels"):
        preload_models()


def encode_chunk(plan: SimulationPlan, k: int) -> EncodedChunk:
    """Dask task: simulate chunk ``k`` and encode it as an HDF5 curve file in memory."""
    prepare_worker()
    records = simulate_chunk(plan, k)
    version, digest = code_version(), simulator_source_digest()
    buffer = io.BytesIO()
    with CurveWriter(
        buffer, seed=plan.seed, code_version=version, classes=plan.class_names,
        config={"chunk": k, "simulator_source_sha256": digest},
    ) as w:
        w.append(records)
    return EncodedChunk(k, version, digest, buffer.getvalue())


class PartsFolder:
    """The ``<out>.parts`` folder of a run: a manifest, finished chunks, the merge in progress."""

    def __init__(self, out: Path) -> None:
        self.path = out.with_name(out.name + ".parts")

    def part(self, k: int) -> Path:
        """Path of the part file of chunk ``k``."""
        return self.path / f"chunk_{k:06d}.h5"

    @property
    def merged_tmp(self) -> Path:
        """Where the merged output grows before it is renamed to the output path."""
        return self.path / _MERGED_TMP

    def manifest(self) -> dict | None:
        """The settings of the run that owns the folder (None if unreadable)."""
        try:
            return json.loads((self.path / _MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def create(self, config: dict) -> None:
        """Make the folder and record the run's settings."""
        self.path.mkdir()
        self._write_atomic(self.path / _MANIFEST, json.dumps(config, indent=1, sort_keys=True).encode())

    def finished(self, n_chunks: int) -> set[int]:
        """Chunks whose part file is complete; removes leftovers of a cut-off run."""
        done = set()
        for entry in self.path.iterdir():
            match = _PART_RE.match(entry.name)
            if match and int(match.group(1)) < n_chunks:
                done.add(int(match.group(1)))
            elif entry.name.endswith(".tmp"):
                entry.unlink()
        return done

    def write_part(self, k: int, data: bytes) -> None:
        """Store chunk ``k`` (temp name then rename)."""
        self._write_atomic(self.part(k), data)

    @staticmethod
    def _write_atomic(path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)

    def remove(self) -> None:
        """Delete the folder and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)


class _OrderedMerger:
    """Appends part files to the merged temp file in chunk order, in fixed groups.

    Chunks are merged ``group`` at a time (one write per dataset per group),
    chunks ``[g*group, (g+1)*group)`` together, once all of them are
    finished: the groups never depend on the order in which chunks finish,
    so the output file is the same byte for byte on any cluster.
    """

    def __init__(self, parts: PartsFolder, plan: SimulationPlan, config: dict) -> None:
        self._parts = parts
        self._plan = plan
        self._config = config
        self._writer: CurveWriter | None = None
        self.group = max(1, MERGE_GROUP_CURVES // plan.chunk_size)
        self.next_chunk = 0

    def merge_ready(self, finished: set[int]) -> None:
        """Append every complete group of finished chunks that follows the merged ones."""
        while self.next_chunk < self._plan.n_chunks:
            group = range(self.next_chunk, min(self.next_chunk + self.group, self._plan.n_chunks))
            if not all(k in finished for k in group):
                return
            if self._writer is None:
                self._writer = CurveWriter(
                    self._parts.merged_tmp,
                    seed=self._plan.seed,
                    code_version=self._config["code_version"],
                    classes=self._plan.class_names,
                    config=self._config,
                )
            expected = sum(self._plan.chunk_length(k) for k in group)
            appended = self._writer.append_files([self._parts.part(k) for k in group])
            if appended != expected:
                raise SimulationError(
                    f"part files {group.start}..{group.stop - 1} in {self._parts.path} hold {appended} curves "
                    f"instead of {expected}; delete the folder and start again"
                )
            self.next_chunk = group.stop

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


#: Dask settings of the embedded LocalCluster's workers (a CPU-bound task per chunk needs no stack sampling).
EMBEDDED_WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


@contextlib.contextmanager
def dask_client(workers: int, scheduler: str | None) -> Iterator["distributed.Client"]:  # noqa: F821
    """A ``distributed.Client``: on an embedded loopback LocalCluster of ``workers``
    single-threaded processes, or connected to ``scheduler`` (``tcp://host:port``).

    The embedded cluster's workers run without Dask's statistical profiler
    (:data:`EMBEDDED_WORKER_CONFIG`): sampling the task thread's stack every
    10 ms cost about 0.17 ms of CPU per curve, 6 % of a worker's time,
    measured here. An existing cluster keeps its own settings.
    """
    with cluster_client(
        scheduler,
        workers,
        connect_timeout="15s",
        unreachable=_unreachable,
        config=EMBEDDED_WORKER_CONFIG,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # the HTTP server on a free loopback port
    ) as client:
        yield client


def _unreachable(scheduler: str, err: BaseException) -> SimulationConfigError:
    return SimulationConfigError(f"cannot reach the Dask scheduler at {scheduler}: {err}")


def check_output_path(out: Path) -> None:
    """Raise :class:`SimulationConfigError` unless ``out`` can be created."""
    if out.is_dir():
        raise SimulationConfigError(f"output path {out} is a folder; give a file name such as {out / 'curves.h5'}")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise SimulationConfigError(f"cannot write {out}: {parent} is a file, not a folder")
    if not parent.is_dir():
        raise SimulationConfigError(f"cannot write {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SimulationConfigError(f"cannot write {out}: folder {parent} is not writable")


def _already_done(out: Path, config: dict) -> bool:
    if not out.is_file():
        return False
    try:
        with CurveReader(out) as reader:
            return reader.config == config and len(reader) == config["n_curves"]
    except (OSError, ValueError, KeyError):
        return False


def simulate_to_file(
    n: int,
    out: str | Path,
    seed: int,
    *,
    workers: int = 2,
    scheduler: str | None = None,
    classes: Sequence[str] | None = None,
    exclude_classes: Sequence[str] = (),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Simulate ``n`` labelled curves into the HDF5 file ``out`` (see :mod:`.store`).

    ``classes`` (names, default all seven) minus ``exclude_classes`` are
    simulated in balanced numbers. ``workers`` sizes the embedded Dask cluster;
    ``scheduler`` (``tcp://host:port``) uses an existing one instead.
    ``resume=True`` continues a run cut off with the same settings (and does
    nothing if ``out`` already holds that run). Returns ``out`` as a Path.

    Raises :class:`SimulationConfigError` for invalid settings (nothing is
    written) and :class:`SimulationError` when a chunk fails (finished chunks
    are kept in ``<out>.parts`` for ``resume``).
    """
    plan = SimulationPlan(n_curves=n, seed=seed, classes=resolve_classes(classes, exclude_classes), chunk_size=chunk_size)
    if scheduler is None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers <= 0):
        raise SimulationConfigError(f"workers must be a positive whole number, got {workers!r}")
    out = Path(out)
    check_output_path(out)
    config = plan.config(code_version(), simulator_source_digest())
    parts = PartsFolder(out)
    if parts.path.exists():
        if not resume:
            raise SimulationConfigError(
                f"{parts.path} holds chunks of an interrupted run; pass --resume to continue it, or delete the folder"
            )
        if parts.manifest() != config:
            raise SimulationConfigError(
                f"{parts.path} belongs to a run with other settings ({_describe_difference(parts.manifest(), config)}); "
                "use the same settings to resume it, or delete the folder"
            )
    elif resume and _already_done(out, config):
        return out

    created = not parts.path.exists()
    if created:
        try:
            parts.create(config)
        except OSError as err:
            raise SimulationConfigError(f"cannot write {out}: {err.strerror or err} ({parts.path})") from None
    try:
        with dask_client(workers, scheduler) as client:
            _run_chunks(client, plan, parts, config, progress)
    except BaseException:
        if created and not parts.finished(plan.n_chunks):
            parts.remove()
        raise
    os.replace(parts.merged_tmp, out)
    parts.remove()
    return out


def _run_chunks(client, plan: SimulationPlan, parts: PartsFolder, config: dict, progress: bool) -> None:
    """Simulate the missing chunks on ``client`` and merge all parts into ``parts.merged_tmp``."""
    from tqdm import tqdm

    finished = parts.finished(plan.n_chunks)
    merger = _OrderedMerger(parts, plan, config)
    futures: list = []
    try:
        with tqdm(
            total=plan.n_curves,
            initial=sum(plan.chunk_length(k) for k in finished),
            unit="curve",
            desc="simulate",
            disable=not progress,
            dynamic_ncols=True,
        ) as bar:
            futures = _submit(client, plan, config, sorted(set(range(plan.n_chunks)) - finished))
            merger.merge_ready(finished)  # parts of an earlier run, while the workers start
            _collect(futures, plan, config, parts, finished, merger, bar)
            merger.merge_ready(finished)
    except BaseException:
        for future in futures:
            future.cancel()
        merger.close()
        parts.merged_tmp.unlink(missing_ok=True)
        raise
    merger.close()


def _submit(client, plan: SimulationPlan, config: dict, chunks: list[int]) -> list:
    """One task per chunk; keys name the run, so two runs sharing a scheduler never mix."""
    from dask.base import tokenize

    token = tokenize(plan, config)
    return [client.submit(encode_chunk, plan, k, key=f"simulate-chunk-{token}-{k:06d}", retries=1) for k in chunks]


def _collect(futures: list, plan: SimulationPlan, config: dict, parts: PartsFolder, finished: set[int],
             merger: _OrderedMerger, bar) -> None:
    """Write each chunk's part as it arrives (checking the worker ran the client's code), merge, advance ``bar``."""
    import distributed

    for future in distributed.as_completed(futures):
        try:
            chunk: EncodedChunk = future.result()
        except Exception as err:
            k = int(future.key.rsplit("-", 1)[1])
            raise SimulationError(
                f"chunk {k} failed on a worker: {type(err).__name__}: {err}. "
                f"Finished chunks are kept in {parts.path}; fix the cause and rerun with --resume"
            ) from err
        future.release()
        if (chunk.code_version, chunk.source_digest) != (config["code_version"], config["simulator_source_sha256"]):
            raise SimulationError(
                f"a worker runs other simulator code (version {chunk.code_version}, source {chunk.source_digest}) "
                f"than this client ({config['code_version']}, {config['simulator_source_sha256']}): "
                "install the same sasview-bnn on every worker"
            )
        parts.write_part(chunk.k, chunk.data)
        finished.add(chunk.k)
        merger.merge_ready(finished)
        bar.update(plan.chunk_length(chunk.k))


def _describe_difference(old: dict | None, new: dict) -> str:
    if old is None:
        return "its manifest is missing or unreadable"
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys) or "none"
