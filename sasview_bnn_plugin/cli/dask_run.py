"""``classify --scheduler tcp://HOST:PORT`` / ``--workers N``: an archive classified on a Dask cluster.

The files are cut into chunks (``CHUNK_FILES`` of :mod:`.pipeline`) sent as
tasks to the cluster's workers. Each worker process opens the model once (one
session per worker process, cached under the model options; reused by every
later task and run with the same options) and returns the results of its chunk: the
files read (:class:`~sasview_bnn_plugin.io.loading.CurveLoader`), the worker's
own plugins' raw-curve steps, and :meth:`BNNClassifier.classify` in batches of
``--batch-size``. The client takes the chunks back in file order and writes
them through the one :class:`~sasview_bnn_plugin.io.result_stream.ResultStream`:
the same rows in the same order as the single-process run, the same CSV/JSON
and ``--resume`` (the rows already written are left out by the workers). Results
are published to the client's plugins (``sasview_bnn_result``,
``sasview_bnn_anomaly``). At most ``2 x workers + 1`` chunks are in flight.

The model file must be readable at the same path on every worker (a shared
file system, as on an HPC cluster); its card is verified by each worker.
Needs the ``[dask]`` extra (dask, distributed).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..core.curve import Curve
from ..core.extras import extra_install_hint
from ..core.result import ClassificationResult
from ..io.loading import CurveLoader
from ..model.classifier import BNNClassifier
from .command_line import UsageError
from .dask_cluster import dask_client as cluster_client

log = logging.getLogger(__name__)

#: The options that make a worker's classifier (``add_model_options``' and ``--q-unit``/``--calibration``).
MODEL_OPTIONS = ("provider", "threads", "novelty_threshold", "batch_size", "set_level", "novelty_level", "q_unit", "calibration")

_classifiers: dict[tuple, tuple[BNNClassifier, Any]] = {}
_lock = threading.Lock()


class ClusterError(Exception):
    """A task failed on the cluster (e.g. the model or a data file is not readable on a worker)."""


def require_dask() -> Any:
    """The ``distributed`` module; a :class:`UsageError` naming the ``[dask]`` extra when it is not installed."""
    try:
        import dask  # noqa: F401
        import distributed
    except ImportError as err:
        name = (getattr(err, "name", None) or "distributed").split(".")[0]
        raise UsageError(f"--scheduler and --workers need the Python package {name!r}, which is not installed; "
                         f"{extra_install_hint('dask')}") from None
    return distributed


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A ``distributed.Client`` of the cluster at ``scheduler``, or of an embedded ``LocalCluster`` of ``workers`` processes (no dashboard)."""
    require_dask()
    with cluster_client(scheduler, workers, connect_timeout="30s", unreachable=_unreachable, dashboard_address=None) as client:
        yield client


def _unreachable(scheduler: str, err: BaseException) -> UsageError:
    return UsageError(f"cannot connect to the Dask scheduler {scheduler}: {err}")


def worker_classifier(model_path: str, name: str, options: dict[str, Any]) -> tuple[BNNClassifier, Any]:
    """This worker process's classifier for ``options`` (opened on first use, then reused) and its plugin host."""
    key = (model_path, name, tuple(sorted(options.items())))
    with _lock:
        if key not in _classifiers:
            from ..plugins.host import build_plugin_host

            host = build_plugin_host()
            classifier = BNNClassifier(
                model_path, provider=options["provider"], intra_op_threads=options["threads"],
                novelty_threshold=options["novelty_threshold"], batch_size=options["batch_size"], name=name,
                set_level=options["set_level"],
                novelty_level=None if options["novelty_level"] is None else float(options["novelty_level"]),
                q_unit=options["q_unit"], calibration=options["calibration"],
            )
            _classifiers.clear()  # one model session per worker process
            _classifiers[key] = (classifier, host)
        return _classifiers[key]


def classify_chunk(paths: Sequence[str], skip: dict[str, set[str]], model_path: str, name: str,
                   options: dict[str, Any]) -> list[ClassificationResult]:
    """On a worker: the results of the curves of ``paths`` in order, those in ``skip`` (file -> datasets) left out."""
    classifier, host = worker_classifier(model_path, name, options)
    loader = CurveLoader()
    curves: list[Curve] = []
    for path in paths:
        done = skip.get(path, ())
        curves.extend(c for c in loader.load(path) if c.dataset not in done)
    curves = [host.prepare_raw_curve(c) for c in curves]
    results: list[ClassificationResult] = []
    for start in range(0, len(curves), classifier.batch_size):
        results.extend(classifier.classify(curves[start : start + classifier.batch_size]))
    return results


def dask_results(client: Any, files: Sequence[Path], source_path: Path, source_name: str, args: argparse.Namespace,
                 skip: set[tuple[str, str]], chunk_files: int, on_files: Any = None) -> Iterator[list[ClassificationResult]]:
    """The results of ``files`` chunk by chunk, in file order, classified on ``client``'s workers."""
    options = {key: getattr(args, key, None) for key in MODEL_OPTIONS}
    options["q_unit"] = options["q_unit"] or "auto"
    if options["calibration"] is not None:
        options["calibration"] = str(Path(options["calibration"]).resolve())
    done: dict[str, set[str]] = {}
    for file, dataset in skip:
        done.setdefault(file, set()).add(dataset)
    chunks = [[str(p) for p in files[i : i + chunk_files]] for i in range(0, len(files), chunk_files)]
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    in_flight: deque = deque()
    queue = iter(chunks)

    def submit(chunk: list[str]) -> None:
        chunk_skip = {p: done[p] for p in chunk if p in done}
        in_flight.append((chunk, client.submit(classify_chunk, chunk, chunk_skip, str(source_path), source_name, options, pure=False)))

    try:
        for chunk in islice(queue, 2 * n_workers + 1):
            submit(chunk)
        while in_flight:
            chunk, future = in_flight.popleft()
            try:
                results = future.result()
            except Exception as err:  # the worker's error, e.g. a path it cannot read
                raise ClusterError(f"a Dask worker failed on the files from {chunk[0]}: {type(err).__name__}: {err}") from None
            for later in islice(queue, 1):
                submit(later)
            if on_files is not None:
                on_files(len(chunk))
            yield results
    finally:
        for _, future in in_flight:
            future.cancel()
