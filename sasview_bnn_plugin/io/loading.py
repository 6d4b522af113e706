"""Reading curves from every format sasdata reads, one :class:`Curve` per 1D entry.

ASCII (2-4 columns), CanSAS XML, NXcanSAS HDF5, IGOR ABS, Anton Paar PDH, CSV
… are read with ``sasdata.dataloader.loader.Loader``. A file may hold several
1D entries (each becomes a curve, named by the entry's title or its position);
2D entries and SESANS data become error curves with a message. An unreadable
or empty file becomes one error curve whose message says why in plain words
(never the reader's exception text): no exception escapes
:meth:`CurveLoader.iter_curves`, :meth:`CurveLoader.load` or :func:`load_curves`.
Plain NXcanSAS HDF5 files are read one entry at a time with h5py
(:mod:`sasview_bnn_plugin.io.nxcansas_entries`), so a file of thousands of entries
never sits in memory at once. sasdata's own logging and warnings are silenced
while reading.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from ..core.curve import DEFAULT_UNIT_READERS, Curve
from .fast_ascii import parse_plain_ascii_with_header, plain_ascii_bytes
from ..core.q_units import canonical_q_unit

if TYPE_CHECKING:
    import h5py

    from .nxcansas_entries import EntryPlan

log = logging.getLogger(__name__)

#: File name endings sasdata has readers for (lower case).
DATA_SUFFIXES: frozenset[str] = frozenset(
    {".txt", ".dat", ".csv", ".xml", ".h5", ".hdf", ".hdf5", ".nxs", ".abs", ".cor", ".pdh", ".sans", ".ses", ".sesans", ".asc"}
)

#: Suffixes for which sasdata tries its NXcanSAS reader first.
NXCANSAS_SUFFIXES: frozenset[str] = frozenset({".h5", ".hdf", ".hdf5", ".nxs"})

_NOT_1D = (
    "this entry is 2D data (a detector image); sasview-bnn classifies 1D curves I(q) only "
    "(reduce it to I(q) in SasView first)"
)


@contextlib.contextmanager
def quiet_sasdata() -> Iterator[None]:
    """Silence sasdata's logging (and library warnings) for the duration of a read."""
    logger = logging.getLogger("sasdata")
    old_level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(old_level)


class CurveLoader:
    """Reads data files into curves with one sasdata ``Loader`` (built on first use)."""

    def __init__(self, fast_ascii: bool = True) -> None:
        self._loader: Any = None
        #: Read plain 2-4 column ``.txt`` files without sasdata (:mod:`sasview_bnn_plugin.io.fast_ascii`, the same curves).
        self.fast_ascii = fast_ascii

    def _sasdata_loader(self) -> Any:
        if self._loader is None:
            with quiet_sasdata():
                from sasdata.dataloader.loader import Loader

                self._loader = Loader()
        return self._loader

    def load(self, path: str | os.PathLike[str]) -> list[Curve]:
        """All curves of one file; an unreadable file gives one error curve (see :meth:`iter_curves`)."""
        return list(self.iter_curves(path))

    def iter_curves(self, path: str | os.PathLike[str]) -> Iterator[Curve]:
        """The curves of one file, one at a time; an unreadable file gives one error curve.

        A plain NXcanSAS HDF5 file (see :mod:`sasview_bnn_plugin.io.nxcansas_entries`)
        is read one entry at a time, so memory is bounded by its largest entry
        however many entries it holds; an entry whose data cannot be read
        becomes an error curve and the following entries are still read. Every
        other file is read by sasdata as a whole. Both give the same curves as
        sasdata's own reader on SasView's example data.
        """
        path = path if isinstance(path, Path) else Path(path)
        raw = plain_ascii_bytes(path) if self.fast_ascii else None
        fast = None if raw is None else parse_plain_ascii_with_header(raw, str(path))
        if fast is not None:
            curve, header = fast
            # the header lines already split when the whole file is within the bytes a header is looked for in
            _fix_reader_quirks(curve, _ASCII_ENTRY, path, head=header if len(raw) <= _HEADER_BYTES else raw[:_HEADER_BYTES])
            yield curve
            return
        plans = _plain_nxcansas_plans(path)
        if plans is None:
            yield from self.read_with_sasdata(path)
            return
        source = str(path)
        names = _dataset_names([plan.title for plan in plans])
        import h5py  # loaded (with the NXcanSAS reader) on the first HDF5 file: a run of text files never needs it

        with h5py.File(path, "r") as h5:
            for plan, name in zip(plans, names):
                # sasdata is quiet while it reads, not while the caller handles the curve
                with quiet_sasdata():
                    curve = _read_planned_entry(h5, plan, source, name, path)
                yield curve

    def read_with_sasdata(self, path: str | os.PathLike[str]) -> list[Curve]:
        """All curves of one file as read by sasdata's ``Loader`` in one go (every entry in memory)."""
        path = Path(path)
        source = str(path)
        if not path.is_file():
            return [Curve.failed(source, "", f"{path} does not exist or is not a file")]
        if path.stat().st_size == 0:
            return [Curve.failed(source, "", "the file is empty")]
        if path.suffix.lower() == ".sans" and not _has_danse_data_section(path):
            # sasdata's DANSE reader loops forever on a .sans file without a "DATA:" line
            return [Curve.failed(source, "", "this .sans file has no DATA: section; sasdata cannot read it (is it a DANSE 2D file?)")]
        try:
            with quiet_sasdata():
                entries = self._sasdata_loader().load(source)
        except Exception as err:  # sasdata raises many types for unreadable files
            return [Curve.failed(source, "", unreadable_file_message(path, err))]
        if not entries:
            return [Curve.failed(source, "", "sasdata found no data in this file")]
        curves = []
        names = _dataset_names([getattr(e, "title", "") for e in entries])
        for entry, name in zip(entries, names):
            try:
                curves.append(_entry_to_curve(entry, source, name, path))
            except Exception:  # an entry sasdata half-read; keep the other entries
                log.debug("unreadable entry %r of %s", name, path, exc_info=True)
                curves.append(Curve.failed(source, name, _HALF_READ))
        return curves


def _has_danse_data_section(path: Path) -> bool:
    """Whether a DANSE .sans file holds the "DATA:" line its reader searches for (read in 1 MB blocks)."""
    marker, tail = b"DATA:", b""
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            if marker in tail + block:
                return True
            tail = block[-(len(marker) - 1) :]
    return False


class _AsciiEntry:
    """What :func:`_fix_reader_quirks` reads of an entry of sasdata's ASCII reader."""

    meta_data = {"loader": "ASCII"}


_ASCII_ENTRY = _AsciiEntry()

_HALF_READ = "sasdata returned this entry without usable q and I columns (the file may be damaged)"

#: Format names by file suffix, to tell a scientist what a file was expected to hold.
_FORMAT_NAMES = {
    ".xml": "CanSAS XML",
    ".h5": "NXcanSAS HDF5",
    ".hdf": "NXcanSAS HDF5",
    ".hdf5": "NXcanSAS HDF5",
    ".nxs": "NXcanSAS HDF5",
    ".txt": "ASCII columns (q, I[, dI[, dq]])",
    ".dat": "ASCII columns (q, I[, dI[, dq]])",
    ".csv": "ASCII columns (q, I[, dI[, dq]])",
    ".asc": "ASCII columns (q, I[, dI[, dq]])",
    ".abs": "IGOR ABS or ASCII columns",
    ".cor": "IGOR COR or ASCII columns",
    ".pdh": "Anton Paar PDH",
    ".ses": "SESANS",
    ".sesans": "SESANS",
}

#: Reader messages that are programming-language text, not an explanation.
_TECHNICAL = re.compile(
    r"Traceback|\b[A-Z]\w*(Error|Exception)\b|NoneType|has no attribute|object at 0x|not subscriptable|"
    r"unsupported operand|could not convert|invalid literal|index out of range|out of bounds|codec can't|"
    r"could not load|synchronously|superblock|symbol table|\bnan\b|errno|\[|\]|\{|\}",
    re.IGNORECASE,
)


def unreadable_file_message(path: Path, err: BaseException | str) -> str:
    """Why sasdata could not read ``path``, in words for a scientist (the reader's own text if it is plain)."""
    detail = _first_line(err) if isinstance(err, BaseException) else str(err).strip()
    log.debug("sasdata cannot read %s: %s", path, detail)
    if "truncated file" in detail:
        return "this HDF5 file is truncated (an incomplete download or copy?)"
    if "file signature not found" in detail:
        return f"this is not an HDF5 file although its name ends in {path.suffix}"
    if detail and len(detail) < 160 and not _TECHNICAL.search(detail):
        return f"sasdata cannot read this file: {detail.replace(str(path), path.name)}"
    expected = _FORMAT_NAMES.get(path.suffix.lower(), "a format sasdata knows")
    return f"sasdata cannot read this file: it is damaged, truncated or not in the expected format ({expected})"


def _read_planned_entry(h5: h5py.File, plan: EntryPlan, source: str, name: str, path: Path) -> Curve:
    from .nxcansas_entries import read_entry

    try:
        entry = read_entry(h5, plan, path.name)
    except Exception:  # a damaged dataset inside an otherwise readable file
        log.debug("cannot read entry %r of %s", plan.entry, path, exc_info=True)
        return Curve.failed(source, name, "this entry of the HDF5 file cannot be read: its data are damaged")
    try:
        return _entry_to_curve(entry, source, name, path)
    except Exception:
        log.debug("unreadable entry %r of %s", name, path, exc_info=True)
        return Curve.failed(source, name, _HALF_READ)


def _plain_nxcansas_plans(path: Path) -> list[EntryPlan] | None:
    """Entry plans if ``path`` is a plain NXcanSAS file sasdata would read as such, else None."""
    if path.suffix.lower() not in NXCANSAS_SUFFIXES or not path.is_file():
        return None
    import h5py

    from .nxcansas_entries import plan_entries

    try:
        if not h5py.is_hdf5(path):
            return None
        with quiet_sasdata(), h5py.File(path, "r") as h5:
            return plan_entries(h5)
    except Exception:  # not openable by h5py: sasdata gives the error message
        return None


def _dataset_names(titles: list[Any]) -> list[str]:
    """Names of a file's entries: the title, made unique by the position when needed."""
    texts = [str(t or "").strip() for t in titles]
    if len(texts) < 2:
        return texts
    counts = Counter(texts)
    return [
        (f"{name} #{index + 1}" if name else f"entry {index + 1}") if not name or counts[name] > 1 else name
        for index, name in enumerate(texts)
    ]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _entry_to_curve(entry: Any, source: str, dataset: str, path: Path) -> Curve:
    kind = type(entry).__name__
    if kind == "Data2D" or hasattr(entry, "qx_data"):
        return Curve.failed(source, dataset, _NOT_1D)
    if getattr(entry, "isSesans", False):
        return Curve.failed(source, dataset, "this entry is SESANS data (spin-echo length, not q); sasview-bnn classifies I(q) only")
    x = getattr(entry, "x", None)
    if x is None or np.ndim(x) != 1 or np.size(x) == 0:
        errors = [e for e in getattr(entry, "errors", []) or []]
        if not errors:
            return Curve.failed(source, dataset, "sasdata cannot read this file: no q and I columns found")
        return Curve.failed(source, dataset, unreadable_file_message(path, errors[0]))
    curve = Curve.from_data1d(entry, source, dataset)
    _fix_reader_quirks(curve, entry, path)
    return curve


def _fix_reader_quirks(curve: Curve, entry: Any, path: Path, head: bytes | Sequence[str] | None = None) -> None:
    """Correct what sasdata is known to get wrong, and say so in the curve's notes.

    sasdata's ASCII/CSV readers label every curve 1/Å without reading a unit
    (:meth:`Curve.from_data1d` marks those units "assumed"); a q unit named in
    the file's header (e.g. "# q (1/nm)  I  dI") is taken as the file's unit.
    ``head``: the file's first :data:`_HEADER_BYTES` bytes, or its lines before the data, when they have been
    read already (see :func:`header_q_unit_of`).
    """
    meta = getattr(entry, "meta_data", {}) or {}
    reader = str(meta.get("loader", ""))
    suffix = path.suffix.lower()
    if reader in DEFAULT_UNIT_READERS:
        header_unit = header_q_unit(path) if head is None else header_q_unit_of(head)
        if header_unit is not None:
            if canonical_q_unit_or_none(curve.q_unit) != header_unit:
                curve.q_unit = header_unit
            curve.q_unit_source = "file"
            return
    if suffix == ".pdh" and reader == "ASCII":
        # The Anton Paar PDH reader failed and the generic ASCII reader labelled q as 1/Å without
        # reading a unit; PDH files (SAXSquant, SAXSess) usually store q in 1/nm: expected, not certain.
        curve.q_unit = "1/nm"
        curve.q_unit_source = "assumed"
        curve.notes.append(
            "sasdata read this PDH file as plain ASCII and labelled q 1/Å without reading a unit; PDH files "
            "usually store q in 1/nm, so 1/nm is expected unless the q range says otherwise"
        )
    elif reader == "ASCII" and suffix in {".abs", ".cor"}:
        curve.notes.append("sasdata read this file as plain ASCII: the file gives no q unit")


#: Header lines read at most when looking for a q unit, and the bytes read at most.
_HEADER_LINES, _HEADER_BYTES = 500, 1 << 18
_ANGSTROM_UNIT = (
    r"(?:1\s*/\s*(?:[Aa]ngstroms?|[Aa]ng|[AÅ\u212b])"
    r"|(?:[Aa]ngstroms?|[Aa]ng|[AÅ\u212b])\s*(?:\^\s*\{?\s*[-\u2212]\s*1\s*\}?|[-\u2212]\s*1|\u207b\u00b9|\*\*\s*-\s*1)"
    r"|inverse\s+[Aa]ngstroms?)"
)
_NANOMETRE_UNIT = (
    r"(?:1\s*/\s*nm"
    r"|nm\s*(?:\^\s*\{?\s*[-\u2212]\s*1\s*\}?|[-\u2212]\s*1|\u207b\u00b9|\*\*\s*-\s*1)"
    r"|inverse\s+nanomet(?:er|re)s?)"
)
#: "q" (a word of its own) followed, through brackets, ":", "=", "/", "in" or "unit", by an inverse length unit.
_Q_WITH_UNIT = re.compile(
    r"(?<![A-Za-z])[qQ](?![A-Za-z])(?:\s*(?:[(\[{<:=,/_|]|in\b|units?\b))*\s*"
    rf"(?:(?P<angstrom>{_ANGSTROM_UNIT})|(?P<nanometre>{_NANOMETRE_UNIT}))(?![A-Za-z0-9])"
)
_NUMBER_SPLIT = re.compile(r"[\s,;]+")


def header_q_unit(path: str | os.PathLike[str]) -> str | None:
    """The q unit ("1/A" or "1/nm") that the header of a plain-column file names, else None.

    Looks at the text lines before the data (at most :data:`_HEADER_LINES`)
    for "q" followed by an inverse length: "q (1/nm)", "Q [Å^-1]", "# q/nm^-1",
    "q in 1/A" … A header naming both units, or none, gives None.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEADER_BYTES)
    except OSError:
        return None
    return header_q_unit_of(head)


def header_q_unit_of(head: bytes | Sequence[str]) -> str | None:
    """:func:`header_q_unit` of a file whose first :data:`_HEADER_BYTES` bytes are ``head``, or whose lines up to
    its first line of data are ``head`` (decoded; the lines after it, all numbers, cannot name a unit)."""
    if isinstance(head, bytes):
        if b"q" not in head and b"Q" not in head:  # no "q" to name a unit (a file of numbers only)
            return None
        lines: Sequence[str] = head.decode("utf-8", errors="replace").splitlines()
    else:
        lines = head
    found: set[str] = set()
    numeric_run = 0
    for number, line in enumerate(lines):
        if number >= _HEADER_LINES:
            break
        tokens = [t for t in _NUMBER_SPLIT.split(line.strip()) if t]
        if tokens and _all_numbers(tokens):
            numeric_run += 1
            if numeric_run >= 5:  # the data have begun
                break
            continue
        numeric_run = 0
        for match in _Q_WITH_UNIT.finditer(line):
            found.add("1/A" if match.group("angstrom") else "1/nm")
    return found.pop() if len(found) == 1 else None


def _all_numbers(tokens: list[str]) -> bool:
    try:
        for token in tokens:
            float(token)
    except ValueError:
        return False
    return True


def canonical_q_unit_or_none(unit: Any) -> str | None:
    """"1/A" or "1/nm" for a unit the preprocessing understands, else None."""
    try:
        return canonical_q_unit(unit)
    except ValueError:
        return None


def find_data_files(paths: Iterable[str | os.PathLike[str]], recursive: bool = False) -> tuple[list[Path], list[str]]:
    """Expand files and folders into data files (sorted within each folder).

    A folder contributes its files with a known data suffix (its sub-folders
    too when ``recursive``). Returns the files and the paths that do not exist.
    """
    files: list[Path] = []
    missing: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            files.append(path)
        elif path.is_dir() and not recursive:
            # the folder's entries as path.glob("*") lists them, told files by the folder's listing (no stat per file)
            with os.scandir(path) as entries:
                names = sorted(entry.name for entry in entries if not entry.name.startswith(".") and _is_file(entry))
            files.extend(p for p in map(path.joinpath, names) if p.suffix.lower() in DATA_SUFFIXES)
        elif path.is_dir():
            found = [
                p
                for p in path.glob("**/*")
                if p.is_file() and p.suffix.lower() in DATA_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ]
            files.extend(sorted(found))
        else:
            missing.append(str(raw))
    return files, missing


def _is_file(entry: os.DirEntry) -> bool:
    """``Path.is_file`` of a folder entry (symbolic links followed; False when it cannot be told)."""
    try:
        return entry.is_file()
    except OSError:
        return False


def load_curves(path: str | os.PathLike[str], loader: CurveLoader | None = None) -> list[Curve]:
    """All curves of one file (see :meth:`CurveLoader.load`)."""
    return (loader or CurveLoader()).load(path)
