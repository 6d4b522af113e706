"""Rendering results as CSV or JSON text, and writing a whole results file atomically.

Streaming a results file batch by batch (classify, watch) is in
:mod:`sasview_bnn_plugin.io.result_stream`, which renders with these functions.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from ..core.result import CSV_COLUMNS, ClassificationResult

OUTPUT_FORMATS = ("csv", "json")


def output_format(destination: str, formats: Sequence[str] = OUTPUT_FORMATS) -> str:
    """The format (one of ``formats``, by default "csv" or "json") from a file name; "-" (standard output) is CSV."""
    if destination == "-":
        return "csv"
    suffix = Path(destination).suffix.lower().lstrip(".")
    if suffix not in formats:
        endings = ", ".join(f".{f}" for f in formats[:-1]) + f" or .{formats[-1]}"
        raise ValueError(f"the output file must end in {endings} (or be - for standard output), not {destination!r}")
    return suffix


def csv_header(columns: Sequence[str] = CSV_COLUMNS) -> str:
    """The CSV header line (:data:`CSV_COLUMNS` unless other ``columns`` are given)."""
    return ",".join(columns) + "\n"


def render_csv_rows(results: Sequence[ClassificationResult], columns: Sequence[str] = CSV_COLUMNS) -> str:
    """CSV rows without the header, one per result; NaN is an empty cell.

    ``columns`` (a subset of :data:`CSV_COLUMNS` in the same order, e.g. the
    columns of an older results file being resumed) chooses the cells written.
    """
    names = list(columns)
    missing = [""] * len(names)  # a column the row lacks (strongest_q_range of an unexplained result) is empty
    rows = []
    for result in results:
        values = map(result.to_row().get, names, missing)
        # a float (numpy's too) as 6 significant digits, NaN as an empty cell; other values as they are
        rows.append([("" if v != v else f"{v:.6g}") if isinstance(v, float) else v for v in values])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def render_csv(results: Sequence[ClassificationResult]) -> str:
    """CSV text: header :data:`CSV_COLUMNS`, one row per result; NaN is an empty cell."""
    return csv_header() + render_csv_rows(results)


def render_json_record(result: ClassificationResult) -> str:
    """One result as one line of JSON (no newline): the JSON Lines record; NaN becomes null."""
    return json.dumps(result.to_dict(), ensure_ascii=False, allow_nan=False)


def render_json(results: Sequence[ClassificationResult], extra: dict | None = None) -> str:
    """JSON text: {"results": [...], **extra}; NaN becomes null."""
    payload = dict(extra or {})
    payload["results"] = [r.to_dict() for r in results]
    return json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename.

    A reader never sees a half-written file; an interrupted write leaves the old file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_if_present(tmp)
        raise


def _remove_if_present(path: str) -> None:
    """Remove a leftover temporary file, ignoring a file that is already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_results(results: Sequence[ClassificationResult], destination: str, extra: dict | None = None) -> None:
    """Write results to a .csv/.json file (atomically) or CSV to standard output ("-")."""
    fmt = output_format(destination)
    text = render_csv(results) if fmt == "csv" else render_json(results, extra)
    if destination == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomically(destination, text)
