"""Reading curves from every format sasdata reads, one :class:`Curve` per 1D entry.

ASCII (2-4 columns), CanSAS XML, NXcanSAS HDF5, IGOR ABS, Anton Paar PDH, CSV
… are read with ``sasdata.dataloader.loader.Loader``. A file may hold several
1D entries (each becomes a curve, named by the entry's title or its position);
2D entries and SESANS data become error curves with a message. An unreadable
or empty file becomes one error curve: no exception escapes :func:`load_curves`.
sasdata's own logging and warnings are silenced while reading.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .curve import Curve

#: File name endings sasdata has readers for (lower case).
DATA_SUFFIXES: frozenset[str] = frozenset(
    {".txt", ".dat", ".csv", ".xml", ".h5", ".hdf", ".hdf5", ".nxs", ".abs", ".cor", ".pdh", ".sans", ".ses", ".sesans", ".asc"}
)

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

    def __init__(self) -> None:
        self._loader: Any = None

    def _sasdata_loader(self) -> Any:
        if self._loader is None:
            with quiet_sasdata():
                from sasdata.dataloader.loader import Loader

                self._loader = Loader()
        return self._loader

    def load(self, path: str | os.PathLike[str]) -> list[Curve]:
        """All curves of one file; an unreadable file gives one error curve."""
        path = Path(path)
        source = str(path)
        if not path.is_file():
            return [Curve.failed(source, "", f"{path} does not exist or is not a file")]
        if path.stat().st_size == 0:
            return [Curve.failed(source, "", "the file is empty")]
        try:
            with quiet_sasdata():
                entries = self._sasdata_loader().load(source)
        except Exception as err:  # sasdata raises many types for unreadable files
            return [Curve.failed(source, "", f"sasdata cannot read this file: {_first_line(err)}")]
        if not entries:
            return [Curve.failed(source, "", "sasdata found no data in this file")]
        curves = []
        multiple = len(entries) > 1
        titles = [str(getattr(e, "title", "") or "").strip() for e in entries]
        for index, entry in enumerate(entries):
            name = titles[index]
            if multiple and (not name or titles.count(name) > 1):
                name = f"{name} #{index + 1}".strip() if name else f"entry {index + 1}"
            try:
                curves.append(_entry_to_curve(entry, source, name, path))
            except Exception as err:  # an entry sasdata half-read; keep the other entries
                curves.append(Curve.failed(source, name, f"sasdata returned an unreadable entry: {_first_line(err)}"))
        return curves


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
        detail = _first_line(errors[0]) if errors else "no q and I columns found"
        return Curve.failed(source, dataset, f"sasdata cannot read this file: {detail}")
    curve = Curve.from_data1d(entry, source, dataset)
    _fix_reader_quirks(curve, entry, path)
    return curve


def _fix_reader_quirks(curve: Curve, entry: Any, path: Path) -> None:
    """Correct what sasdata is known to get wrong, and say so in the curve's notes."""
    meta = getattr(entry, "meta_data", {}) or {}
    reader = str(meta.get("loader", ""))
    suffix = path.suffix.lower()
    if suffix == ".pdh" and reader == "ASCII":
        # The Anton Paar PDH reader failed and the generic ASCII reader labelled q as 1/Å;
        # PDH files (SAXSquant, SAXSess) store q in 1/nm.
        curve.q_unit = "1/nm"
        curve.notes.append(
            "sasdata read this PDH file as plain ASCII and labelled q 1/Å; PDH files store q in 1/nm, "
            "so q was converted from 1/nm (check if your instrument exported 1/Å)"
        )
    elif reader == "ASCII" and suffix in {".abs", ".cor"}:
        curve.notes.append("sasdata read this file as plain ASCII: q is assumed to be in 1/Å (no unit in the file)")


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
        elif path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = [
                p
                for p in path.glob(pattern)
                if p.is_file() and p.suffix.lower() in DATA_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ]
            files.extend(sorted(found))
        else:
            missing.append(str(raw))
    return files, missing


def load_curves(path: str | os.PathLike[str], loader: CurveLoader | None = None) -> list[Curve]:
    """All curves of one file (see :meth:`CurveLoader.load`)."""
    return (loader or CurveLoader()).load(path)
