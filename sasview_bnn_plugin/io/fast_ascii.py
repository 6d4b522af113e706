"""A fast reader for plain 2-4 column ASCII ``.txt`` files: the curve sasdata would give, without sasdata.

sasdata's ``Loader`` costs about a millisecond per file whatever its size
(registry look-up, reader objects, ``DataInfo``). For the most common file of
an archive -- a ``.txt`` file holding optional header or comment lines, then
columns q, I[, dI[, dq]] of numbers and nothing after them -- this module
reads the same curve directly: the same lines split the same way as sasdata's
ASCII reader (``,`` then ``;`` then white space), points at q = 0 dropped,
q and dq passed through sasdata's unit conversion 1/Å -> 1/Å (the same arithmetic),
points sorted by (q, I), missing dI/dq as zeros, q labelled sasdata's
``A^{-1}`` with the unit "assumed", metadata ``{"loader": "ASCII"}``; the
q unit named in a header is then taken exactly as on the sasdata path
(:func:`sasview_bnn_plugin.io.loading._fix_reader_quirks`).

Anything else -- another suffix, text that is not UTF-8, a header line that
begins with a number, a footer, lines of different column counts, fewer than
five points, a value that is not a finite number -- returns None, and the
caller reads the file with sasdata (:meth:`CurveLoader.iter_curves`). The
result is identical to sasdata's by construction on the files it accepts
(tested on SasView's example data and generated files).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.curve import Curve

#: Suffixes (lower case) that sasdata reads with its generic ASCII reader first.
FAST_SUFFIXES: frozenset[str] = frozenset({".txt"})

#: sasdata's ASCII reader needs this many data lines (fewer: sasdata gives the error message).
_MIN_POINTS = 5

#: Files larger than this are left to sasdata (the fast path reads a file whole).
_MAX_BYTES = 16 << 20


#: sasdata's scale of 1/Å (``sasdata.data_util.nxsunit``: per metre), see :func:`read_plain_ascii`.
_SCALE = 1e10


def _split(line: str) -> list[str]:
    """sasdata's ``FileReader.splitline``: "," first, then ";", then white space."""
    tokens = line.split(",")
    if len(tokens) < 2:
        tokens = line.split(";")
    if len(tokens) < 2:
        tokens = line.split()
    return tokens


def _blank(tokens: list[str]) -> bool:
    return not tokens or (len(tokens) == 1 and not tokens[0])


def _first_data_line(lines: list[str]) -> int | None:
    """The index of the first line whose first value is a number (before it: header lines and blank lines,
    which sasdata's reader skips, starting again after each), or None."""
    for index, line in enumerate(lines):
        tokens = _split(line.strip())
        if _blank(tokens):
            continue
        try:
            float(tokens[0])
        except ValueError:
            continue
        return index
    return None


def _columns_line_by_line(lines: list[str]) -> np.ndarray | None:
    """The table (points, columns) of ``lines`` from the first data line on, read line by line; None when a line
    has another number of columns than the first, or fewer than 2 or more than 4, or is not numbers (a header
    line beginning with a number, or a footer: sasdata decides)."""
    rows: list[list[float]] = []
    for line in lines:
        tokens = _split(line.strip())
        if _blank(tokens):
            continue  # a blank line: sasdata skips it
        if not 2 <= len(tokens) <= 4 or (rows and len(tokens) != len(rows[0])):
            return None
        try:
            rows.append([float(t) for t in tokens])
        except ValueError:
            return None
    return np.array(rows, dtype=np.float64)


def _columns_at_once(lines: list[str]) -> np.ndarray | None:
    """:func:`_columns_line_by_line` for the common file, columns separated by white space only: the table parsed
    by numpy's C reader in one call (``np.loadtxt``: the same split, the same correctly rounded numbers as
    ``float``). None when a line holds "," or ";", has another number of columns, or a value is not a number:
    then line by line decides."""
    try:
        table = np.loadtxt(lines, dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
        return None
    return table if 2 <= table.shape[1] <= 4 else None


def read_plain_ascii(path: str | os.PathLike[str]) -> Curve | None:
    """The one curve of a plain ASCII column file as sasdata reads it, or None to read it with sasdata."""
    path = path if isinstance(path, Path) else Path(path)
    raw = plain_ascii_bytes(path)
    return None if raw is None else parse_plain_ascii(raw, str(path))


def plain_ascii_bytes(path: Path) -> bytes | None:
    """The bytes of a file the fast path may read (a suffix of :data:`FAST_SUFFIXES`, at most 16 MiB), opened
    once; None for any other file, or one that cannot be read."""
    if path.suffix.lower() not in FAST_SUFFIXES:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:  # the fewest system calls: one open, one fstat, reads to the end (usually one and the empty one)
        size = os.fstat(fd).st_size
        if size > _MAX_BYTES:
            return None
        parts = []
        while part := os.read(fd, size + 1):
            parts.append(part)
        return b"".join(parts)
    except OSError:  # a folder, a read error
        return None
    finally:
        os.close(fd)


def parse_plain_ascii(raw: bytes, source: str) -> Curve | None:
    """The curve of :func:`read_plain_ascii` from the file's bytes (``source``: ``str`` of the file's ``Path``), or
    None to read the file with sasdata."""
    parsed = parse_plain_ascii_with_header(raw, source)
    return None if parsed is None else parsed[0]


def parse_plain_ascii_with_header(raw: bytes, source: str) -> tuple[Curve, list[str]] | None:
    """:func:`parse_plain_ascii` and the file's lines before its first line of numbers (the header, where a q
    unit may be named), or None to read the file with sasdata."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.splitlines()
    first = _first_data_line(lines)
    if first is None:
        return None
    table = _columns_at_once(lines[first:])
    if table is None:
        table = _columns_line_by_line(lines[first:])
    if table is None or table.shape[0] < _MIN_POINTS or not np.isfinite(table).all():
        return None
    n_columns = table.shape[1]
    keep = table[:, 0] != 0
    table = table[keep]
    if table.shape[0] == 0:
        return None
    # sasdata converts q and dq from its default unit to itself ("1/A" -> "1/A"): (x + 0) * 1e10 / 1e10 - 0,
    # which moves some values by one ulp; done the same way so that the arrays are bit for bit the same.
    table[:, 0] = (table[:, 0] + 0.0) * _SCALE / _SCALE - 0.0
    if n_columns > 3:
        table[:, 3] = (table[:, 3] + 0.0) * _SCALE / _SCALE - 0.0
    order = np.lexsort((table[:, 1], table[:, 0]))
    table = table[order]
    zeros = np.zeros(table.shape[0])
    q, intensity = table[:, 0].copy(), table[:, 1].copy()
    d_intensity = table[:, 2].copy() if n_columns > 2 else zeros.copy()
    dq = table[:, 3].copy() if n_columns > 3 else zeros.copy()
    curve = Curve(
        q=q, intensity=intensity, d_intensity=d_intensity, dq=dq, q_unit="A^{-1}", source=source, dataset="",
        q_unit_source="assumed", metadata={"loader": "ASCII"},
    )
    return curve, lines[:first]
