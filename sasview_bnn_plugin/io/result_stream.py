"""Streaming results into a file batch by batch: append, resume, lock.

A results file (``.csv``, ``.jsonl`` or ``.json``) or standard output (``-``,
CSV) grows by one *batch* of rows at a time. The guarantees:

- **No half-written rows.** A batch is rendered into one buffer and appended
  with one ``write`` (looped only if the kernel writes less, as on a full
  disk), then flushed and ``fsync``'d. If the write fails, the file is cut
  back to where the batch began, so only whole rows remain. SIGINT and
  SIGTERM wait until the batch is written (and counted). A ``SIGKILL``
  loses at most the batch in flight. Should a crash (power loss) still leave
  a torn last line, resuming drops it.
- **A finished file is a complete file.** ``classify`` writes into
  ``FILE.partial`` and renames it to ``FILE`` when every curve is written;
  an interrupted run leaves ``FILE.partial`` (and any older ``FILE``
  untouched). ``watch`` never finishes, so it appends to ``FILE`` directly.
- **Resume.** ``--resume`` continues ``FILE.partial`` (else ``FILE``),
  keeping its complete rows and skipping the curves, keyed by (file,
  dataset), that already have one. ``.json`` is one document and cannot be
  resumed; use ``.csv`` or ``.jsonl``. A CSV file written by an older
  sasview-bnn (the columns :data:`~sasview_bnn_plugin.core.result.CSV_COLUMNS_V1`,
  before the optional model outputs) is continued with its own columns, so
  every row of it has the same cells; a note says which columns it lacks.
- **One writer.** A writer holds an exclusive advisory lock
  (``fcntl.flock``) on the sidecar ``FILE.lock`` (holding its pid) while it
  writes; a second writer fails at once with "FILE is being written by
  another sasview-bnn process (pid N)". The lock file is removed on close.

Memory: rows are never kept. Resuming keeps the set of (file, dataset) keys
already written (about 100 bytes per row).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Iterator, Sequence

from .output import csv_header, output_format, render_csv_rows, render_json_record
from ..core.result import CSV_COLUMNS, CSV_COLUMNS_EXPLAIN, CSV_COLUMNS_OPTIONAL, CSV_COLUMNS_V1, ClassificationResult

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Formats a results file can stream; "-" (standard output) is CSV.
STREAM_FORMATS = ("csv", "jsonl", "json")
#: Formats whose interrupted files can be resumed.
RESUMABLE_FORMATS = ("csv", "jsonl")

PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"


class ResultsFileError(Exception):
    """The results file cannot be opened, locked, resumed or written; the message says why."""


class ResultsFileBusy(ResultsFileError):
    """Another process holds the results file's lock."""


def stream_format(destination: str) -> str:
    """"csv", "jsonl" or "json" from a file name; "-" (standard output) is CSV."""
    return output_format(destination, STREAM_FORMATS)


def check_destination(destination: str, mode: str = "new") -> str:
    """The format of a results destination for a stream in ``mode`` (see :class:`ResultStream`): the one check.

    Raises ValueError for a file name of no known format and :class:`ResultsFileError` for a
    destination that cannot be continued ("resume": standard output or a .json document) or
    appended to ("append": a .json document); the messages are the command line's.
    """
    fmt = stream_format(destination)
    if mode == "resume" and destination == "-":
        raise ResultsFileError("--resume needs --output FILE.csv or FILE.jsonl (standard output cannot be resumed)")
    if mode == "resume" and fmt not in RESUMABLE_FORMATS:
        raise ResultsFileError("--resume needs a .csv or .jsonl output: a .json file is one document that cannot be continued")
    if mode == "append" and fmt not in RESUMABLE_FORMATS:
        raise ResultsFileError("watch appends rows: use --output FILE.csv or FILE.jsonl (a .json file is one document)")
    if mode == "append" and destination == "-":
        raise ResultsFileError("--resume and watching need a results file, not standard output")
    return fmt


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where an unfinished ``classify`` run writes: ``FILE.partial``."""
    return Path(f"{os.fspath(path)}{PARTIAL_SUFFIX}")


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar lock file of a results file: ``FILE.lock``."""
    return Path(f"{os.fspath(path)}{LOCK_SUFFIX}")


def describe_os_error(err: OSError, target: str) -> str:
    """A sentence for a scientist saying why ``target`` could not be written."""
    if err.errno == errno.ENOSPC:
        return f"the disk holding {target} is full (no space left on device)"
    if err.errno == errno.EDQUOT:
        return f"the disk quota for {target} is exhausted"
    if err.errno == errno.EFBIG:
        return f"{target} has reached the largest file size this system allows"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write {target}"
    if err.errno == errno.EROFS:
        return f"{target} is on a read-only file system"
    if err.errno in (errno.ENOTDIR, errno.ENOENT, errno.EEXIST):
        folder = Path(target).parent
        if folder.is_dir():  # e.g. /proc, /sys: a folder, but one where no file can be created
            return f"cannot write {target}: no new file can be created in {folder}; choose another folder"
        return f"cannot create {target}: its folder does not exist or is not a folder"
    return f"cannot write {target}: {err.strerror or err}"


# -- reading what an interrupted run wrote ------------------------------------------------------


@dataclass
class WrittenRows:
    """What a results file already holds: its complete rows' keys and where they end."""

    keys: set[tuple[str, str]] = field(default_factory=set)
    files: set[str] = field(default_factory=set)
    n_rows: int = 0
    n_failed: int = 0
    #: Byte offset just past the last complete row (0: not even a header).
    end: int = 0
    #: Bytes after ``end`` (a torn last line) that resuming drops.
    torn_bytes: int = 0
    #: The CSV columns of the file (its header): :data:`CSV_COLUMNS`, or :data:`CSV_COLUMNS_V1` for a file of an older version.
    columns: tuple[str, ...] = CSV_COLUMNS

    def add(self, file: str, dataset: str, status: str) -> None:
        self.keys.add((file, dataset))
        self.files.add(file)
        self.n_rows += 1
        self.n_failed += status != "ok"


def _records(handle: io.BufferedReader, fmt: str) -> Iterator[tuple[bytes, int]]:
    """Complete records of a results file with the offset just past each.

    A CSV record may span lines (a quoted cell with a newline): it is complete
    when it ends in a newline and holds an even number of quotes. Whatever
    follows the last complete record is not yielded.
    """
    offset = 0
    pending = b""
    for line in handle:
        pending += line
        if not pending.endswith(b"\n"):
            break  # the torn end of the file
        if fmt == "csv" and pending.count(b'"') % 2:
            continue  # inside a quoted cell
        offset += len(pending)
        yield pending, offset
        pending = b""


def read_written_rows(path: str | os.PathLike[str], fmt: str) -> WrittenRows:
    """Scan a results file written by sasview-bnn (streaming, one record at a time).

    Raises :class:`ResultsFileError` when the file is not a sasview-bnn results
    file of format ``fmt`` ("csv" or "jsonl"), was written by a newer version
    with columns this one does not know, or a row in its middle is damaged.
    A CSV header of an older version (:data:`CSV_COLUMNS_V1`) is accepted and
    recorded in :attr:`WrittenRows.columns`.
    """
    path = Path(path)
    rows = WrittenRows()
    expected = list(CSV_COLUMNS)
    size = path.stat().st_size
    with path.open("rb") as handle:
        for number, (record, end) in enumerate(_records(handle, fmt), start=1):
            text = record.decode("utf-8", errors="replace")
            if fmt == "csv":
                cells = next(csv.reader(io.StringIO(text)), [])
                if number == 1:
                    expected = _known_header(cells, path)
                    rows.columns = tuple(expected)
                    rows.end = end
                    continue
                if len(cells) != len(expected):
                    raise ResultsFileError(f"cannot resume {path}: record {number} has {len(cells)} cells, not {len(expected)}")
                row = dict(zip(expected, cells))
            else:
                try:
                    row = json.loads(text)
                    row["file"], row["dataset"], row["status"]
                except (ValueError, TypeError, KeyError):
                    raise ResultsFileError(f"cannot resume {path}: line {number} is not a sasview-bnn JSON result") from None
            rows.add(str(row["file"]), str(row["dataset"]), str(row["status"]))
            rows.end = end
    rows.torn_bytes = size - rows.end
    return rows


def _known_header(cells: list[str], path: Path) -> list[str]:
    """The columns of a CSV header this version can continue, or :class:`ResultsFileError` saying why not."""
    # this version's (with and without --explain's column), then older ones
    for columns in (CSV_COLUMNS, CSV_COLUMNS + CSV_COLUMNS_EXPLAIN, CSV_COLUMNS_V1 + CSV_COLUMNS_OPTIONAL, CSV_COLUMNS_V1):
        if cells == list(columns):
            return cells
    if cells[: len(CSV_COLUMNS)] == list(CSV_COLUMNS):
        unknown = ", ".join(c for c in cells[len(CSV_COLUMNS):] if c not in CSV_COLUMNS_EXPLAIN)
        raise ResultsFileError(
            f"cannot resume {path}: it was written by a newer sasview-bnn (it has columns this version does not know: "
            f"{unknown}); resume it with that version or write to a new file"
        )
    raise ResultsFileError(f"cannot resume {path}: its first line is not the sasview-bnn CSV header")


def older_columns_note(path: str | os.PathLike[str], columns: Sequence[str]) -> str | None:
    """A note when a results file being continued has fewer columns than this version writes (else None)."""
    missing = [c for c in CSV_COLUMNS if c not in columns]
    if not missing:
        return None
    shown = [c for c in missing if not c.startswith("p_present_")]
    if len(shown) < len(missing):
        shown.append("p_present_*")
    return (
        f"{path} was started by an older sasview-bnn: its rows keep their columns, so the newer columns "
        f"({', '.join(shown)}) are left out of it; write to a new file to get them"
    )


# -- the advisory lock --------------------------------------------------------------------------


class ResultsLock:
    """An exclusive advisory lock on ``FILE.lock``, which holds the owner's pid.

    :meth:`acquire` fails at once (:class:`ResultsFileBusy`) if another process
    holds it; :meth:`release` removes the lock file while still holding the
    lock, and a process that locked a file just removed retries on the new one.
    Without ``fcntl`` (Windows) the lock is ``msvcrt.locking`` on the first byte.
    """

    def __init__(self, results: str | os.PathLike[str]) -> None:
        self.results = Path(results)
        self.path = lock_path(results)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`ResultsFileBusy` naming the holder's pid."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:  # name the output the user asked for, not its sidecar lock file
                raise ResultsFileError(describe_os_error(err, str(self.results))) from None
            try:
                self._lock(fd)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"pid {holder}" if holder else "pid unknown"
                raise ResultsFileBusy(
                    f"{self.results} is being written by another sasview-bnn process ({who}); "
                    f"wait for it to finish or write to another file"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed this lock file as we locked it
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return

    @staticmethod
    def _lock(fd: int) -> None:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> "ResultsLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except (OSError, AttributeError):
        return ""
    return text if text.isdigit() else ""


# -- the stream ---------------------------------------------------------------------------------


class ResultStream:
    """Append results batch by batch to a file (or CSV to standard output).

    ``mode`` is "new" (write ``FILE.partial``, rename to ``FILE`` on
    :meth:`finish`), "resume" (continue ``FILE.partial`` or ``FILE``, rename on
    :meth:`finish`) or "append" (write ``FILE`` itself, as ``watch`` does).
    ``extra`` goes into the head of a ``.json`` document (model, provider).
    ``columns`` are the CSV columns of a new file (:data:`CSV_COLUMNS`, or
    with :data:`CSV_COLUMNS_EXPLAIN` appended for ``--explain``); a file
    being continued keeps its own. After :meth:`open`, :attr:`written`
    describes the complete rows already in the file. Use as a context manager: leaving the block without
    :meth:`finish` keeps what was written and releases the lock.
    """

    def __init__(self, destination: str, mode: str = "new", extra: dict | None = None, columns: Sequence[str] = CSV_COLUMNS) -> None:
        if mode not in ("new", "resume", "append"):
            raise ValueError(f"unknown mode {mode!r}")
        self.destination = destination
        self.columns = tuple(columns)
        self.format = check_destination(destination, mode)
        self.mode = mode
        self.extra = dict(extra or {})
        self.written = WrittenRows()
        #: Rows written by this stream (not counting those found on resume).
        self.n_new_rows = 0
        self.torn_note: str | None = None
        #: Set when continuing a CSV file of an older version (see :func:`older_columns_note`).
        self.columns_note: str | None = None
        self._to_stdout = destination == "-"
        self._final = Path(destination)
        self._target = self._final if mode == "append" or self._to_stdout else partial_path(destination)
        self._lock = None if self._to_stdout else ResultsLock(destination)
        self._fd: int | None = None
        self._json_items = 0
        self._opened = False
        self._closed = False

    # -- opening

    def open(self) -> "ResultStream":
        """Lock the file, read back what it holds (resume/append) and write the head if new (once)."""
        if self._opened:
            return self
        self._opened = True
        if self._to_stdout:
            self.written.columns = self.columns
            self._write_text(csv_header(self.columns))
            return self
        assert self._lock is not None
        try:
            self._lock.acquire()
            self._open_file()
        except BaseException:
            self.close()
            raise
        return self

    def _open_file(self) -> None:
        existing = None
        if self.mode != "new":
            existing = next((p for p in (self._target, self._final) if p.is_file()), None)
        if existing is not None:  # check it before touching it
            self.written = read_written_rows(existing, self.format)
            if self.written.torn_bytes:
                self.torn_note = f"dropped {self.written.torn_bytes} byte(s) of a half-written last row in {existing}"
            if self.format == "csv" and self.written.end:
                self.columns_note = older_columns_note(existing, self.written.columns)
        try:
            self._final.parent.mkdir(parents=True, exist_ok=True)
            if existing is not None and existing != self._target:
                os.replace(existing, self._target)  # continue a finished file: it is unfinished again
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if existing is None else 0)
            self._fd = os.open(self._target, flags, 0o644)
        except OSError as err:
            raise ResultsFileError(describe_os_error(err, str(self._target))) from None
        if existing is not None:
            self._cut_to(self.written.end)
        if self.written.end == 0:  # a new file, or one whose header was torn
            self.written.columns = self.columns
            self._cut_to(0)
            head = csv_header(self.columns) if self.format == "csv" else self._json_head() if self.format == "json" else ""
            if head:
                self._write_text(head)

    def _json_head(self) -> str:
        head = json.dumps(self.extra, ensure_ascii=False, allow_nan=False)
        # {"model": ..., "results": [   -- items follow one per line, then ]}
        return (head[:-1] + (", " if self.extra else "") + '"results": [\n')

    # -- writing

    def write(self, results: Sequence[ClassificationResult]) -> None:
        """Append the rows of one batch with one write, then flush and fsync.

        Raises :class:`ResultsFileError` if the write fails; the file then
        holds exactly the rows written before this batch.
        """
        if not results:
            return
        if self.format == "csv":
            text = render_csv_rows(results, self.written.columns)
        elif self.format == "jsonl":
            text = "".join(render_json_record(r) + "\n" for r in results)
        else:
            items = [render_json_record(r) for r in results]
            text = (",\n" if self._json_items else "") + ",\n".join(items)
            self._json_items += len(items)
        with _signals_deferred():  # Ctrl-C lands before or after the batch and its count, never inside
            self._write_text(text)
            self.n_new_rows += len(results)
            self.written.n_rows += len(results)
            self.written.n_failed += sum(not r.ok for r in results)

    def _write_text(self, text: str) -> None:
        data = memoryview(text.encode("utf-8"))
        if self._to_stdout:
            self._write_stdout(data)
            return
        assert self._fd is not None
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(self._fd, data):]
            os.fsync(self._fd)
        except OSError as err:
            try:
                os.ftruncate(self._fd, start)  # whole rows only
                os.fsync(self._fd)
            except OSError:
                pass
            raise ResultsFileError(describe_os_error(err, str(self._target))) from None

    @staticmethod
    def _write_stdout(data: memoryview) -> None:
        try:
            fd = sys.stdout.fileno()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            fd = None
        try:
            if fd is None:  # a replaced sys.stdout (tests, notebooks)
                sys.stdout.write(bytes(data).decode("utf-8"))
                sys.stdout.flush()
                return
            sys.stdout.flush()
            while data:
                data = data[os.write(fd, data):]
        except OSError as err:
            raise ResultsFileError(describe_os_error(err, "standard output")) from None

    def _cut_to(self, offset: int) -> None:
        assert self._fd is not None
        try:
            if os.fstat(self._fd).st_size != offset:
                os.ftruncate(self._fd, offset)
        except OSError as err:
            raise ResultsFileError(describe_os_error(err, str(self._target))) from None

    # -- closing

    def finish(self) -> None:
        """Complete the file: close a ``.json`` document, rename ``FILE.partial`` to ``FILE``."""
        if self._to_stdout or self._closed:
            self._closed = True
            return
        if self.format == "json":
            self._write_text("\n]}\n")
        self._close_fd()
        if self._target != self._final:
            try:
                os.replace(self._target, self._final)
                _fsync_folder(self._final.parent)
            except OSError as err:
                raise ResultsFileError(describe_os_error(err, str(self._final))) from None
        self.close()

    def close(self) -> None:
        """Release the lock; what was written stays (idempotent)."""
        self._close_fd()
        if self._lock is not None:
            self._lock.release()
        self._closed = True

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def path(self) -> Path | None:
        """The file being written now (``FILE.partial`` until finished); None for stdout."""
        return None if self._to_stdout else self._target

    def __enter__(self) -> "ResultStream":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends, then act on them as before.

    Works in the main thread (where Python runs signal handlers), whatever
    thread the operating system delivered the signal to; elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append((signum, frame))

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum, frame in caught:
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)  # e.g. KeyboardInterrupt, or watch's stop request
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)  # the default action: terminate


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
