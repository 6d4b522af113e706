"""Reading and preprocessing in worker processes while the one model session runs: ``classify --jobs N``.

The files are cut into chunks (:data:`CHUNK_FILES` files each) that a
``ProcessPoolExecutor`` of N processes reads (:class:`~sasview_bnn_plugin.io.loading.CurveLoader`,
the fast ASCII path included) and maps onto model inputs
(:func:`~sasview_bnn_plugin.model.classifier.prepare_curves`, the classifier's own code, bit for bit
the same inputs). The main process takes the chunks back in file order and
regroups their curves into the same batches as the single-process run, so
every row, its order and the batches written are those of ``--jobs 1``. At
most ``2 N + 1`` chunks are in flight (submitted, read or waiting for the
model): memory is bounded whatever the number of files.

When a plugin has a raw-curve step (``sasview_bnn_prepare_raw_curve``), the
workers only read and the main process runs the plugins' steps and the
preprocessing (plugins live in the main process).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from ..core.curve import Curve
from ..core.preprocessing import ModelInput, PreprocessingConfig
from ..io.fast_ascii import FAST_SUFFIXES
from ..io.loading import CurveLoader
from ..model.classifier import BNNClassifier, PreparedCurve, prepare_curves

#: Files per task handed to a worker process.
CHUNK_FILES = 32

_worker_state: dict[str, object] = {}


def available_cores() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_jobs(files: Sequence[Path] = ()) -> int:
    """The default of ``--jobs`` for ``files``: the cores, but 1 (everything in this process) on at most 2 cores
    when every file is a ``.txt`` file (those the fast ASCII path reads).

    Measured on 2 cores (2026-12-08, nothing else running, two model calls at once): 20,000 one-curve 60-point
    ``.txt`` files 3,073 curves/s end to end in one process against 2,651 with 2 reading processes (passing
    the curves between processes costs more than reading them), 5,000 files of 400 points 2.28-2.40 s against
    2.55-2.92 s; 1,500 sasdata-read XML files 11.1 s in one process against 6.3 s with 2.
    """
    cores = available_cores()
    if cores <= 2 and files and all(Path(path).suffix.lower() in FAST_SUFFIXES for path in files):
        return 1
    return cores


def _init_worker(config_json: str | None, q_unit: str) -> None:
    # A worker holds none of the caller's pipes (whoever reads sasview-bnn's output sees its end when sasview-bnn
    # ends, even when it is killed) and ends when sasview-bnn does (a killed parent closes no queue).
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: sasview-bnn handles it
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _worker_state["config"] = None if config_json is None else PreprocessingConfig.from_json(config_json)
    _worker_state["q_unit"] = q_unit
    _worker_state["loader"] = CurveLoader()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _read_chunk(paths: Sequence[str]) -> "_PackedChunk":
    """In a worker: the curves of each file (prepared unless the main process prepares them; the curves of
    all the chunk's files at once, the same inputs as file by file), packed for the way back (:func:`_pack`)."""
    loader: CurveLoader = _worker_state["loader"]  # type: ignore[assignment]
    config = _worker_state["config"]
    per_file = [loader.load(path) for path in paths]
    if config is None:
        return _pack(per_file)
    prepared = iter(prepare_curves([curve for curves in per_file for curve in curves], config, str(_worker_state["q_unit"])))
    return _pack([[next(prepared) for _ in curves] for curves in per_file])


#: The array fields of a :class:`Curve` that travel packed.
_CURVE_ARRAYS = ("q", "intensity", "d_intensity", "dq")


class _PackedChunk(NamedTuple):
    """A chunk's curves (or prepared curves) per file, as a worker sends them: their 1-D float64 arrays (each
    field of :data:`_CURVE_ARRAYS`) one after the other in one array per field, and the model inputs' features
    in one (inputs, channels, bins) array, taken out of the objects (None there); pickling a few large arrays
    costs both processes far less than pickling a few small arrays per curve. :func:`_unpack` puts them back."""

    per_file: list[list[PreparedCurve] | list[Curve]]
    arrays: dict[str, tuple[np.ndarray, list[int]]]
    features: np.ndarray | None


def _pack(per_file: list[list[PreparedCurve] | list[Curve]]) -> _PackedChunk:
    """The chunk ``per_file`` packed (its objects lose the arrays packed: they are the worker's, about to be sent)."""
    items = [item for file_items in per_file for item in file_items]
    curves = [item.curve if isinstance(item, PreparedCurve) else item for item in items]
    arrays: dict[str, tuple[np.ndarray, list[int]]] = {}
    for name in _CURVE_ARRAYS:
        values = [getattr(curve, name) for curve in curves]
        # -1: not a 1-D float64 array (None, another dtype): it travels in the object, as it is
        lengths = [v.shape[0] if isinstance(v, np.ndarray) and v.dtype == np.float64 and v.ndim == 1 else -1 for v in values]
        packed = [v for v, n in zip(values, lengths) if n >= 0]
        arrays[name] = (np.concatenate(packed) if packed else np.zeros(0), lengths)
        for curve, n in zip(curves, lengths):
            if n >= 0:
                setattr(curve, name, None)
    inputs = [mi for item in items if isinstance(item, PreparedCurve) for _, mi in item.readings if isinstance(mi, ModelInput)]
    features = np.stack([mi.features for mi in inputs]) if inputs else None
    for mi in inputs:
        mi.features = None  # type: ignore[assignment]
    return _PackedChunk(per_file, arrays, features)


def _unpack(chunk: _PackedChunk) -> list[list[PreparedCurve] | list[Curve]]:
    """In the main process: the chunk's objects with their arrays back (views of the packed arrays, the same values)."""
    items = [item for file_items in chunk.per_file for item in file_items]
    curves = [item.curve if isinstance(item, PreparedCurve) else item for item in items]
    for name, (packed, lengths) in chunk.arrays.items():
        start = 0
        for curve, n in zip(curves, lengths):
            if n >= 0:
                setattr(curve, name, packed[start : start + n])
                start += n
    if chunk.features is not None:
        inputs = (mi for item in items if isinstance(item, PreparedCurve) for _, mi in item.readings if isinstance(mi, ModelInput))
        for mi, features in zip(inputs, chunk.features):
            mi.features = features
    return chunk.per_file


def prepared_batches(
    classifier: BNNClassifier,
    files: Sequence[Path],
    batch_size: int,
    jobs: int,
    skip: set[tuple[str, str]],
    on_file: Callable[[int], None] | None = None,
    chunk_files: int | None = None,
) -> Iterator[tuple[list[Curve], list[PreparedCurve]]]:
    """The curves of all ``files`` in file order, in batches of ``batch_size`` (those of ``classify``'s
    single-process run), read and preprocessed by ``jobs`` worker processes: each batch as the curves
    read and their :class:`PreparedCurve` (after the plugins' raw-curve steps).

    Curves whose (file, dataset) is in ``skip`` are left out. ``on_file(n)`` is called as chunks of n
    files come back (the progress bar).
    """
    chunk_files = chunk_files or CHUNK_FILES
    host = classifier.plugin_host
    main_prepares = host is not None and host.has_raw_curve_steps()
    config_json = None if main_prepares else classifier.config.to_json()
    chunks = [[str(p) for p in files[i : i + chunk_files]] for i in range(0, len(files), chunk_files)]
    context = multiprocessing.get_context("spawn")  # no fork of a process running onnxruntime threads
    curves: list[Curve] = []
    pending: list[PreparedCurve] = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=(config_json, classifier.q_unit)) as pool:
        in_flight: deque[Future] = deque()
        queue = iter(chunks)
        try:
            for chunk in _take(queue, 2 * jobs + 1):
                in_flight.append(pool.submit(_read_chunk, chunk))
            while in_flight:
                per_file = _unpack(in_flight.popleft().result())
                for chunk in _take(queue, 1):
                    in_flight.append(pool.submit(_read_chunk, chunk))
                for items in per_file:
                    for item in items:
                        curve = item if main_prepares else item.curve
                        if skip and (curve.source, curve.dataset) in skip:
                            continue
                        curves.append(curve)
                        pending.append(item)
                        if len(pending) >= batch_size:
                            yield curves, classifier.prepare(pending) if main_prepares else pending
                            curves, pending = [], []
                if on_file is not None:
                    on_file(len(per_file))
            if pending:
                yield curves, classifier.prepare(pending) if main_prepares else pending
        finally:
            for future in in_flight:
                future.cancel()


def _take(items: Iterator[list[str]], n: int) -> Iterable[list[str]]:
    for _ in range(n):
        item = next(items, None)
        if item is None:
            return
        yield item
