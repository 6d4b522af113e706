"""``sasview-bnn classify``: classify data files and write one row per curve.

Rows are streamed: each batch is appended to the output as soon as it is
classified (see :mod:`sasview_bnn_plugin.io.result_stream` for the guarantees:
whole rows only, ``FILE.partial`` until the run completes, ``--resume``, one
writer per file). Memory does not grow with the number of curves (``--trend``
keeps a small summary of each result for its figure). ``--explain`` adds where
in q each verdict came from (:mod:`sasview_bnn_plugin.model.explain`).

Exit codes: 0 every curve classified, 1 some curves refused (their rows say
why) or the output could not be completed (disk full: the rows written stay
intact, rerun with ``--resume``), 2 usage error (bad option, missing path,
unusable model, output locked or not writable) before any curve is classified.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..model.classifier import BNNClassifier, PreparedCurve
from .command_line import UsageError
from .dask_run import ClusterError
from .options import add_input_options, add_model_options, add_output_option, add_plot_option, add_trend_options, positive_int
from ..core.curve import Curve
from ..io.loading import CurveLoader, find_data_files
from ..model.catalog import ModelNotFoundError, ModelSource, resolve_model
from ..core.model_format import ModelFormatError, ModelOptionError
from ..plugins.host import PluginHost, build_plugin_host
from ..core.result import CSV_COLUMNS, CSV_COLUMNS_EXPLAIN, ClassificationResult
from ..io.result_stream import ResultsFileError, ResultStream, check_destination

log = logging.getLogger(__name__)

#: Progress bars appear above this many files.
PROGRESS_MIN_FILES = 5


def open_classifier(args: argparse.Namespace) -> tuple[ModelSource, BNNClassifier, PluginHost]:
    """The model chosen by :func:`add_model_options`, loaded; :class:`UsageError` if unusable."""
    from .options import default_model_streams
    from .pipeline import available_cores

    host = build_plugin_host()
    streams = getattr(args, "model_streams", None) or default_model_streams()
    threads = args.threads if args.threads is not None or streams == 1 else max(1, available_cores() // streams)
    try:
        source = resolve_model(args.model, host.models())
        classifier = BNNClassifier(
            source.path,
            provider=args.provider,
            intra_op_threads=threads,
            novelty_threshold=args.novelty_threshold,
            batch_size=args.batch_size,
            plugin_host=host,
            name=source.name,
            set_level=args.set_level,
            novelty_level=None if args.novelty_level is None else float(args.novelty_level),
            q_unit=getattr(args, "q_unit", "auto"),
            calibration=getattr(args, "calibration", None),
            # Reading processes share the cores with the session: its idle threads must not busy-wait on them.
            spinning=_jobs(args) <= 1,
            model_streams=streams,
        )
    except (ModelNotFoundError, ModelFormatError, ModelOptionError) as err:
        raise UsageError(str(err)) from None
    log.info("model %s on %s (%s)", source.name, classifier.providers.device, classifier.providers.reason)
    if classifier.calibration is not None:
        log.info("instrument calibration %s", classifier.calibration.describe())
    return source, classifier, host


def run_information(source: ModelSource, classifier: BNNClassifier) -> dict[str, str]:
    """The model, its file, the provider and (if any) the instrument calibration: the head of a .json output."""
    extra = {"model": source.name, "model_path": str(source.path), "provider": classifier.providers.device}
    if classifier.calibration is not None and classifier.calibration.path is not None:
        extra["calibration"] = str(classifier.calibration.path)
    return extra


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``classify`` sub-command."""
    parser = subparsers.add_parser(
        "classify",
        help="classify the 1D curves in data files",
        description="Classify every 1D curve in the given files and folders (any format sasdata reads). "
        "One output row per curve; refused curves get status 'error' and the reason.",
        epilog="Rows are appended batch by batch; a file output is written as FILE.partial and renamed "
        "to FILE when every curve is done. --resume continues an interrupted run. "
        "exit status: 0 every curve classified, 1 some curves refused (their rows say why) or the output "
        "could not be completed (e.g. disk full; rows written stay whole), 2 usage error, unusable model "
        "or output in use by another sasview-bnn process (nothing classified)",
    )
    add_input_options(parser, "PATH", "data files or folders")
    add_model_options(parser)
    add_output_option(parser, "FILE.csv|FILE.jsonl|FILE.json|-", "where to write the results: CSV, JSON Lines (one result per line) or one JSON document (default -: CSV on standard output)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run: keep the complete rows of FILE.partial (or FILE) and classify only the curves without a row (.csv or .jsonl)")
    add_plot_option(parser, "write one PNG per curve into DIR (needs matplotlib)")
    add_trend_options(parser, "the curves classified in this run, in the order of the files")
    parser.add_argument("--jobs", "-j", type=positive_int, default=None, metavar="N",
                        help="processes reading and preprocessing the files while the model runs in this one (default: the number "
                        "of cores, but 1 on up to 2 cores when every file is a .txt file; 1: everything in this process). The rows "
                        "and their order do not depend on it")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                        help="classify on the Dask cluster of this scheduler: files in chunks to its workers, one model session "
                        "per worker, rows written here in file order (the same rows; the model file must be readable at the same "
                        "path on the workers). Needs the [dask] extra")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="classify on an embedded Dask cluster of N worker processes on this machine (as --scheduler)")
    parser.add_argument("--explain", action="store_true",
                        help="also say where in q each verdict came from: occlude 32 q-windows of the model input in one model call "
                        "and measure the drop of the predicted class's probability (JSON: 'sensitivity' and 'strongest_q_range'; "
                        "CSV: a strongest_q_range column 'q_lo;q_hi' in the unit of q_unit_used, appended last; --plot: a shaded band). "
                        "Costs about 30 model inputs per curve")
    parser.set_defaults(run=run)


def check_figure_options(args: argparse.Namespace) -> None:
    """A :class:`UsageError` for --trend-x without --trend, or for --plot/--trend without matplotlib."""
    if getattr(args, "trend_x", None) is not None and getattr(args, "trend", None) is None:
        raise UsageError("--trend-x needs --trend FILE.png")
    if getattr(args, "plot", None) is not None or getattr(args, "trend", None) is not None:
        from ..io.plotting import PlottingUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlottingUnavailable as err:
            raise UsageError(str(err).replace("--plot", "--plot and --trend")) from None


def write_trend(path: Path, series: list[ClassificationResult], x: str | None, host: PluginHost, say_note: bool = True) -> str | None:
    """Draw the trend of ``series`` to ``path`` (a problem for ``host`` if it cannot be written); print and
    return the note saying the x axis fell back to the frame number, if it did."""
    from ..io.plotting import plot_trend
    from ..core.trend import trend_axis

    note = trend_axis(series, x).note
    if note and say_note:
        print(f"sasview-bnn: --trend: {note}", file=sys.stderr)
    try:
        plot_trend(series, path, x)
    except OSError as err:
        host.problems.append(f"could not write the trend {path}: {err}")
    return note


def trend_summary(result: ClassificationResult) -> ClassificationResult:
    """What a trend keeps of a result (no occlusion map)."""
    return result if result.sensitivity is None else dataclasses.replace(result, sensitivity=None)


def explain_batch(batch: list[Curve], results: list[ClassificationResult], classifier: BNNClassifier, host: PluginHost) -> None:
    """Attach the occlusion map (:func:`sasview_bnn_plugin.model.explain.explain_result`) to every classified result."""
    from ..model.explain import explain_result

    for curve, result in zip(batch, results):
        if not result.ok:
            continue
        try:
            result.sensitivity = explain_result(classifier, curve, result)
        except Exception as err:  # an explanation is extra: the row is written without it
            log.debug("explaining %s %s failed", result.file, result.dataset, exc_info=True)
            host.problems.append(f"could not explain {result.file} {result.dataset}".rstrip() + f": {err}")


def _batches(loader: CurveLoader, files: list[Path], batch_size: int, progress: bool, skip: set[tuple[str, str]]) -> Iterator[list[Curve]]:
    """Curves of all files, grouped into batches of at most ``batch_size``.

    Curves whose (file, dataset) is in ``skip`` (already written) are left out.
    Only one batch and the file being read are held in memory.
    """
    from contextlib import nullcontext

    bar = nullcontext()
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(files), unit="file", file=sys.stderr, desc="classifying")
        except ImportError:
            pass
    pending: list[Curve] = []
    with bar as pbar:
        for path in files:
            for curve in loader.iter_curves(path):
                if skip and (curve.source, curve.dataset) in skip:
                    continue
                pending.append(curve)
                if len(pending) >= batch_size:
                    yield pending
                    pending = []
            if pbar is not None:
                pbar.update(1)
        if pending:
            yield pending


def _jobs(args: argparse.Namespace) -> int:
    """The reading processes of ``--jobs`` (default: the cores); 1 for commands without the option."""
    from .pipeline import default_jobs

    if not hasattr(args, "jobs"):
        return 1
    return args.jobs if args.jobs is not None else default_jobs()


def _prepared_batches(classifier: BNNClassifier, files: list[Path], args: argparse.Namespace,
                      skip: set[tuple[str, str]]) -> Iterator[tuple[list[Curve], list[PreparedCurve]]]:
    """The batches of curves read and their prepared model inputs: in this process (``--jobs 1``, or
    files for one chunk only) or read and preprocessed by ``--jobs`` processes (:mod:`.pipeline`); the same
    batches either way."""
    from .pipeline import CHUNK_FILES, prepared_batches

    jobs = _jobs(args)
    progress = len(files) > PROGRESS_MIN_FILES
    if jobs <= 1 or len(files) <= CHUNK_FILES:
        for batch in _batches(CurveLoader(), files, args.batch_size, progress, skip):
            yield batch, classifier.prepare(batch)
        return
    with _progress_bar(len(files) if progress else 0) as bar:
        yield from prepared_batches(classifier, files, args.batch_size, jobs, skip, on_file=None if bar is None else bar.update)


def _progress_bar(total: int):
    """A tqdm bar over ``total`` files on standard error (a null context when 0 or without tqdm)."""
    from contextlib import nullcontext

    if total:
        try:
            from tqdm import tqdm

            return tqdm(total=total, unit="file", file=sys.stderr, desc="classifying")
        except ImportError:
            pass
    return nullcontext()


def run(args: argparse.Namespace) -> int:
    """Classify; return 0 when every curve was classified, 1 when some were refused."""
    mode = "resume" if args.resume else "new"
    try:
        check_destination(args.output, mode)
    except (ValueError, ResultsFileError) as err:
        raise UsageError(str(err)) from None
    check_figure_options(args)
    files, missing = find_data_files(args.paths, args.recursive)
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    if not files:
        raise UsageError("no data files found in " + ", ".join(args.paths) + (" (use --recursive for sub-folders)" if not args.recursive else ""))

    on_dask = getattr(args, "scheduler", None) is not None or getattr(args, "workers", None) is not None
    if on_dask:
        from .dask_run import require_dask

        if args.scheduler is not None and args.workers is not None:
            raise UsageError("give either --scheduler (an existing Dask cluster) or --workers (an embedded one), not both")
        if args.explain or args.plot is not None:
            raise UsageError("--explain and --plot need the curves in this process: not with --scheduler or --workers")
        require_dask()
    if getattr(args, "jobs", None) is None:
        from .pipeline import default_jobs

        args.jobs = default_jobs(files)
    source, classifier, host = open_classifier(args)
    extra = run_information(source, classifier)
    columns = CSV_COLUMNS + CSV_COLUMNS_EXPLAIN if args.explain else CSV_COLUMNS
    stream = ResultStream(args.output, mode=mode, extra=extra, columns=columns)
    series: list[ClassificationResult] | None = [] if args.trend is not None else None
    with contextlib.ExitStack() as cluster:
        client = None
        if on_dask:
            from .dask_run import dask_client

            client = cluster.enter_context(dask_client(args.scheduler, args.workers))
        try:
            stream.open()
        except ResultsFileError as err:
            raise UsageError(str(err)) from None
        code = _classify_into(stream, args, files, source, classifier, host, series, client)
    if code is not None:
        return code
    if series is not None:
        write_trend(args.trend, series, args.trend_x, host)
    for problem in host.problems:
        print(f"sasview-bnn: warning: {problem}", file=sys.stderr)
    failed, total = stream.written.n_failed, stream.written.n_rows
    if args.output != "-":  # on standard output the rows speak for themselves
        earlier = total - stream.n_new_rows
        where = (f"in {args.output} ({stream.n_new_rows} new, {earlier} kept from before; {failed} refused)" if earlier
                 else f"written to {args.output} ({failed} refused)")
        print(f"sasview-bnn: {_rows(total)} {where}", file=sys.stderr)
    if failed:
        print(f"sasview-bnn: {failed} of {total} curve(s) could not be classified (see the status and message columns)", file=sys.stderr)
        return 1
    return 0


def _dask_batches(client: Any, files: list[Path], source: ModelSource, args: argparse.Namespace,
                  skip: set[tuple[str, str]]) -> Iterator[list[ClassificationResult]]:
    """The results of ``files`` classified on the Dask cluster of ``client``, chunk by chunk in file order."""
    from .dask_run import dask_results
    from .pipeline import CHUNK_FILES

    with _progress_bar(len(files) if len(files) > PROGRESS_MIN_FILES else 0) as bar:
        yield from dask_results(client, files, source.path, source.name, args, skip, max(CHUNK_FILES, args.batch_size),
                                on_files=None if bar is None else bar.update)


def _classify_batches(stream: ResultStream, args: argparse.Namespace, batches: Iterable[tuple[list[Curve], list[PreparedCurve]]],
                      classifier: BNNClassifier, host: PluginHost, series: list[ClassificationResult] | None) -> None:
    """Classify and write ``batches`` in order: the model runs on the next batch (in a thread: onnxruntime
    releases the GIL) while this thread summarises and writes the one before."""
    from concurrent.futures import ThreadPoolExecutor

    def finish(batch: list[Curve], prepared: list[PreparedCurve], outcomes: Any) -> None:
        batch_results = classifier.results_of(prepared, outcomes.result())
        if args.explain:
            explain_batch(batch, batch_results, classifier, host)
        if args.plot is not None:
            _plot_batch(args.plot, batch, batch_results, stream.written.n_rows, classifier, host)
        stream.write(batch_results)
        if series is not None:
            series.extend(trend_summary(r) for r in batch_results)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sasview-bnn-model") as model:
        previous = None
        try:
            for batch, prepared in batches:
                running = (batch, prepared, model.submit(classifier.run_prepared, prepared))
                if previous is not None:
                    finish(*previous)
                previous = running
            if previous is not None:
                finish(*previous)
        finally:
            if previous is not None:
                previous[2].cancel()


def _classify_into(stream: ResultStream, args: argparse.Namespace, files: list[Path], source: ModelSource, classifier: BNNClassifier,
                   host: PluginHost, series: list[ClassificationResult] | None, client: Any) -> int | None:
    """Classify ``files`` into the open ``stream``; an exit code if the run ends early, else None."""
    with stream:
        for note in (stream.torn_note, stream.columns_note):
            if note:
                print(f"sasview-bnn: {note}", file=sys.stderr)
        if args.resume and stream.written.n_rows:
            log.info("resuming: %d row(s) already in %s", stream.written.n_rows, stream.path)
        skip = stream.written.keys
        try:
            if client is not None:
                for batch_results in _dask_batches(client, files, source, args, skip):
                    for result in batch_results:
                        host.publish_result(result)
                    stream.write(batch_results)
                    if series is not None:
                        series.extend(trend_summary(r) for r in batch_results)
            else:
                _classify_batches(stream, args, _prepared_batches(classifier, files, args, skip), classifier, host, series)
            stream.finish()
        except ResultsFileError as err:
            print(f"sasview-bnn: error: {err}; the {stream.written.n_rows} row(s) written before stay intact"
                  + (f" in {stream.path} (free space, then rerun with --resume)" if stream.path else ""), file=sys.stderr)
            return 1
        except ClusterError as err:
            print(f"sasview-bnn: error: {err}; the {stream.written.n_rows} row(s) written before stay intact"
                  + (f" in {stream.path} (rerun with --resume)" if stream.path else ""), file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            if stream.path is not None:
                print(f"sasview-bnn: interrupted: {stream.written.n_rows} row(s) kept in {stream.path}; "
                      "rerun the same command with --resume to finish", file=sys.stderr)
                return 130
            raise
    return None


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _plot_batch(folder: Path, batch: list[Curve], results: list[ClassificationResult], first_index: int, classifier: BNNClassifier, host: PluginHost) -> None:
    """One PNG per curve that was read (classified or refused), numbered from ``first_index``."""
    from ..io.plotting import plot_file_name, plot_result

    for offset, (curve, result) in enumerate(zip(batch, results)):
        if curve.failure is None:
            target = folder / plot_file_name(result, first_index + offset)
            try:
                plot_result(curve, result, classifier.config, target)
            except OSError as err:
                host.problems.append(f"could not write the plot {target}: {err}")
