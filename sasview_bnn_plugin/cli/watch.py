"""``sasview-bnn watch``: classify every new data file of a folder as it arrives.

The folder is polled every ``--interval`` seconds (:class:`FolderWatcher`); a
file is classified once its size and modification time have stayed unchanged
for ``--settle`` seconds. All rows of a group of files are appended with one
write, so a file has either all of its rows in the results or none. A file
sasdata cannot read gets a row with status "error" and the reason; watching
goes on. On restart, files that already have rows in the results file are
skipped (the file column holds absolute paths). Ctrl-C (SIGINT) or SIGTERM
finishes the group in flight, writes its rows, prints a one-line summary and
exits 0; a second signal stops at once (exit 130, whole rows only).

Exit codes: 0 stopped by a signal, 1 the results file could not be written
(rows written stay intact), 2 usage error, unusable model, or results file
in use by another sasview-bnn process.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from ..model.classifier import BNNClassifier
from .classify import _plot_batch, check_figure_options, open_classifier, run_information, trend_summary, write_trend
from .options import add_model_options, add_output_option, add_plot_option, add_trend_options, finite_float
from .command_line import UsageError
from ..core.curve import Curve
from ..io.folder_watch import FolderWatcher
from ..io.loading import CurveLoader
from ..plugins.host import PluginHost
from ..io.result_stream import ResultsFileError, ResultStream, check_destination, lock_path, partial_path

log = logging.getLogger(__name__)


def _non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero or more seconds")
    return value


def _positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than zero seconds")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``watch`` sub-command."""
    parser = subparsers.add_parser(
        "watch",
        help="classify new data files in a folder as they appear",
        description="Watch a folder and classify every new data file once it is completely written "
        "(size and modification time unchanged for --settle seconds). One row per curve is appended "
        "to the results; unreadable files get a row with status 'error'. Stop with Ctrl-C or SIGTERM.",
        epilog="Restarting with the same --output skips the files already in it. The results file is locked "
        "(FILE.lock) while watching. exit status: 0 stopped by Ctrl-C/SIGTERM, 1 the results could not be "
        "written (e.g. disk full; rows written stay whole), 2 usage error, unusable model or output in use",
    )
    parser.add_argument("folder", metavar="DIR", type=Path, help="the folder to watch (not its sub-folders)")
    add_output_option(parser, "FILE.csv|FILE.jsonl|-", "results file to append to (default -: CSV on standard output)")
    parser.add_argument("--pattern", metavar="GLOB", default=None, help="only file names matching GLOB, e.g. '*.xml' (default: every format sasdata reads)")
    parser.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS", help="seconds between looks at the folder (default 1)")
    parser.add_argument("--settle", type=_non_negative_float, default=2.0, metavar="SECONDS", help="a file is complete when unchanged for this long (default 2)")
    add_model_options(parser)
    add_plot_option(parser, "write one PNG per curve into DIR, as classify does (needs matplotlib)")
    add_trend_options(parser, "the curves classified since watching started, in the order they arrived (redrawn after each batch)")
    parser.set_defaults(run=run)


class StopSignals:
    """Turns the first SIGINT/SIGTERM into a request to stop; a second one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.received is not None

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking within 0.1 s of a stop request."""
        end = time.monotonic() + seconds
        while not self and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))


def _curves_of(loader: CurveLoader, path: Path) -> list[Curve]:
    """Every curve of a file; any failure becomes one error curve (watching must go on)."""
    try:
        return list(loader.iter_curves(path))
    except Exception as err:  # the loader should not raise; a watch must survive it anyway
        return [Curve.failed(str(path), "", f"cannot read this file: {err}")]


def run(args: argparse.Namespace) -> int:
    """Watch until a signal; return 0 then, 1 if the results could not be written."""
    mode = "new" if args.output == "-" else "append"
    try:
        check_destination(args.output, mode)
    except (ValueError, ResultsFileError) as err:
        raise UsageError(str(err)) from None
    if not args.folder.is_dir():
        raise UsageError(f"no such folder: {args.folder}")
    check_figure_options(args)
    source, classifier, host = open_classifier(args)
    extra = run_information(source, classifier)
    stream = ResultStream(args.output, mode=mode, extra=extra)
    try:
        stream.open()
    except ResultsFileError as err:
        raise UsageError(str(err)) from None
    ignore = [] if args.output == "-" else [args.output, lock_path(args.output), partial_path(args.output)]
    watcher = FolderWatcher(args.folder, args.pattern, args.settle, done=stream.written.files, ignore=ignore)
    for note in (stream.torn_note, stream.columns_note):
        if note:
            print(f"sasview-bnn: {note}", file=sys.stderr)
    print(f"sasview-bnn: watching {watcher.folder} (Ctrl-C to stop); {len(stream.written.files)} file(s) already in the results",
          file=sys.stderr)
    counts = {"files": 0, "curves": 0, "failed": 0}
    series: list | None = [] if args.trend is not None else None
    trend_noted = False
    loader = CurveLoader()
    with stream, StopSignals() as stop:
        try:
            while not stop:
                ready = watcher.poll()
                while ready and not stop:
                    group, ready = _take_group(loader, ready, args.batch_size)
                    results = _classify_group(group, classifier, stream, watcher, counts, args.plot, host)
                    if series is not None:  # redrawn after every batch, from the rows of this session; the note once
                        series.extend(trend_summary(r) for r in results)
                        trend_noted = bool(write_trend(args.trend, series, args.trend_x, host, say_note=not trend_noted)) or trend_noted
                stop.sleep(args.interval)
        except ResultsFileError as err:
            print(f"sasview-bnn: error: {err}; the rows written before stay intact", file=sys.stderr)
            return 1
    for problem in host.problems:
        print(f"sasview-bnn: warning: {problem}", file=sys.stderr)
    print(
        f"sasview-bnn: stopped watching {watcher.folder} ({stop.received}): {counts['files']} new file(s), "
        f"{counts['curves']} curve(s) written ({counts['failed']} refused), {watcher.n_waiting} file(s) still being written",
        file=sys.stderr,
    )
    return 0


def _take_group(loader: CurveLoader, ready: list[Path], batch_size: int) -> tuple[list[tuple[Path, list[Curve]]], list[Path]]:
    """Read ready files until about ``batch_size`` curves; return them and the files left."""
    group: list[tuple[Path, list[Curve]]] = []
    n_curves = 0
    while ready and (not group or n_curves < batch_size):
        path, ready = ready[0], ready[1:]
        curves = _curves_of(loader, path)
        group.append((path, curves))
        n_curves += len(curves)
    return group, ready


def _classify_group(
    group: list[tuple[Path, list[Curve]]],
    classifier: BNNClassifier,
    stream: ResultStream,
    watcher: FolderWatcher,
    counts: dict[str, int],
    plot: Path | None = None,
    host: PluginHost | None = None,
) -> list:
    """Classify whole files and append all their rows with one write (and with ``plot``, one PNG per curve there);
    return their results."""
    curves = [curve for _, file_curves in group for curve in file_curves]
    results = classifier.classify(curves)
    first_index = stream.written.n_rows
    stream.write(results)  # the rows first: plots are extra
    if plot is not None and host is not None:
        _plot_batch(plot, curves, results, first_index, classifier, host)
    for path, _ in group:
        watcher.mark_done(path)
        log.info("classified %s", path)
    counts["files"] += len(group)
    counts["curves"] += len(results)
    counts["failed"] += sum(not r.ok for r in results)
    return results
