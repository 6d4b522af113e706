"""HDF5 storage of simulated curves: write in chunks, read back streaming.

Layout of one file (format ``sasview-bnn-curves``, version 1)::

    /                      attrs: format, format_version, seed, n_curves,
                                  code_version, classes (JSON list), config (JSON)
    /curves/offsets        (N+1,) int64   curve k is points offsets[k]:offsets[k+1]
    /curves/q              (P,) float64   in the curve's q_unit
    /curves/intensity      (P,) float64
    /curves/d_intensity    (P,) float64
    /curves/dq             (P,) float64   pinhole sigma, NaN if none
    /labels                (N,) int8      taxonomy index
    /q_unit                (N,) str       "1/A" or "1/nm"
    /slit_length           (N,) float64   NaN unless slit smeared
    /params/<name>         (N,) float64 or str ("" / NaN where not used)
    /instrument/<name>     (N,) float64 or str
    /criteria/<name>       (N,) float64

All datasets are chunked and resizable so chunks can be appended, and read
back in slices without loading the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import h5py
import numpy as np

from .record import SimulatedCurve

FORMAT = "sasview-bnn-curves"
FORMAT_VERSION = 1
_POINT_ARRAYS = ("q", "intensity", "d_intensity", "dq")
# No compression: lzf left simulated q, dq, I and dI at their raw size (ratio
# 1.00, measured) while making appends ~10x slower. Per-curve columns use
# small chunks so that a part file of a few thousand curves carries little padding.
_ROW = {"maxshape": (None,), "chunks": (4096,)}
_GROUPS = ("params", "instrument", "criteria")
_STR = h5py.string_dtype()


def _append(ds: h5py.Dataset, values: np.ndarray) -> None:
    start = ds.shape[0]
    ds.resize((start + values.shape[0],))
    ds[start:] = values


def _group_columns(records: Sequence[SimulatedCurve], group: str) -> dict[str, np.ndarray]:
    """Columns of one metadata group: (N,) float64 with NaN where absent, or object str with "".

    A column holding any string is a string column (its numbers written with ``str``).
    """
    n = len(records)
    numbers: dict[str, np.ndarray] = {}
    texts: dict[str, list] = {}
    for i, record in enumerate(records):
        for name, value in getattr(record, group).items():
            if isinstance(value, str):
                texts.setdefault(name, [""] * n)[i] = value
            elif value is not None:
                column = numbers.get(name)
                if column is None:
                    column = numbers[name] = np.full(n, np.nan)
                column[i] = value
    columns: dict[str, np.ndarray] = dict(numbers)
    for name, text in texts.items():
        if name in numbers:  # mixed: every given value as text
            text = ["" if (v := getattr(r, group).get(name)) is None else str(v) for r in records]
        columns[name] = np.array(text, dtype=object)
    return columns


def _as_column(values: np.ndarray, as_str: bool) -> np.ndarray:
    """``values`` converted to the type of the dataset it is appended to."""
    if as_str and values.dtype != object:
        return np.array(["" if np.isnan(v) else str(v) for v in values], dtype=object)
    if not as_str and values.dtype == object:
        return np.array([np.nan if v == "" else float(v) for v in values], dtype=np.float64)
    return values


def _read_column(ds: h5py.Dataset) -> np.ndarray:
    return ds.asstr()[:] if h5py.check_string_dtype(ds.dtype) is not None else ds[:]


class CurveWriter:
    """Appends :class:`SimulatedCurve` records to a new HDF5 file.

    Use as a context manager. Columns of ``params``/``instrument``/``criteria``
    appear as they are first seen; earlier rows are back-filled with NaN or "".
    ``path`` may also be a seekable binary file object (e.g. ``io.BytesIO``) to
    build a file in memory; ``self.path`` is then ``None``.
    """

    def __init__(
        self, path: str | Path | BinaryIO, *, seed: int, code_version: str, classes: Sequence[str], config: dict
    ) -> None:
        self.path = Path(path) if isinstance(path, (str, os.PathLike)) else None
        self._f = h5py.File(self.path if self.path is not None else path, "w")
        a = self._f.attrs
        a["format"] = FORMAT
        a["format_version"] = FORMAT_VERSION
        a["seed"] = int(seed)
        a["code_version"] = code_version
        a["classes"] = json.dumps(list(classes))
        a["config"] = json.dumps(config, sort_keys=True)
        a["n_curves"] = 0
        c = self._f.create_group("curves")
        c.create_dataset("offsets", data=np.zeros(1, dtype=np.int64), **_ROW)
        for name in _POINT_ARRAYS:
            c.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(262144,))
        self._f.create_dataset("labels", shape=(0,), dtype=np.int8, **_ROW)
        self._f.create_dataset("q_unit", shape=(0,), dtype=_STR, **_ROW)
        self._f.create_dataset("slit_length", shape=(0,), dtype=np.float64, **_ROW)
        for g in _GROUPS:
            self._f.create_group(g)

    def __enter__(self) -> "CurveWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def append(self, records: Sequence[SimulatedCurve]) -> None:
        """Append records (in order) to the file."""
        if not records:
            return
        self._append_columns(
            lengths=np.array([r.q.shape[0] for r in records], dtype=np.int64),
            points={name: np.concatenate([getattr(r, name) for r in records]) for name in _POINT_ARRAYS},
            labels=np.array([r.label for r in records], dtype=np.int8),
            q_unit=np.array([r.q_unit for r in records], dtype=object),
            slit_length=np.array([r.slit_length for r in records], dtype=np.float64),
            groups={g: _group_columns(records, g) for g in _GROUPS},
        )

    def append_files(self, paths: Sequence[str | Path]) -> int:
        """Append every curve of other files written by :class:`CurveWriter`, in order.

        Copies column by column with one write per dataset for all ``paths``
        together (no per-curve Python work): merging many part files costs
        about as much as reading them. All of them are held in memory at
        once. Returns the number of curves appended.
        """
        parts = []
        for path in paths:
            with h5py.File(path, "r") as src:
                if src.attrs.get("format") != FORMAT:
                    raise ValueError(f"{path} is not a sasview-bnn curve file")
                parts.append(
                    {
                        "lengths": np.diff(src["curves/offsets"][:]),
                        "points": {name: src["curves"][name][:] for name in _POINT_ARRAYS},
                        "labels": src["labels"][:],
                        "q_unit": _read_column(src["q_unit"]),
                        "slit_length": src["slit_length"][:],
                        "groups": {g: {name: _read_column(src[g][name]) for name in src[g]} for g in _GROUPS},
                    }
                )
        parts = [part for part in parts if part["labels"].shape[0]]
        if not parts:
            return 0
        groups: dict[str, dict[str, np.ndarray]] = {}
        for g in _GROUPS:
            groups[g] = {}
            for name in sorted({name for part in parts for name in part["groups"][g]}):
                is_str = any(part["groups"][g].get(name, np.empty(0)).dtype == object for part in parts)
                groups[g][name] = np.concatenate(
                    [
                        _as_column(part["groups"][g][name], is_str) if name in part["groups"][g]
                        else (np.full(part["labels"].shape[0], "", dtype=object) if is_str else np.full(part["labels"].shape[0], np.nan))
                        for part in parts
                    ]
                )
        self._append_columns(
            lengths=np.concatenate([part["lengths"] for part in parts]),
            points={name: np.concatenate([part["points"][name] for part in parts]) for name in _POINT_ARRAYS},
            labels=np.concatenate([part["labels"] for part in parts]),
            q_unit=np.concatenate([part["q_unit"] for part in parts]),
            slit_length=np.concatenate([part["slit_length"] for part in parts]),
            groups=groups,
        )
        return int(sum(part["labels"].shape[0] for part in parts))

    def _append_columns(
        self,
        lengths: np.ndarray,
        points: dict[str, np.ndarray],
        labels: np.ndarray,
        q_unit: np.ndarray,
        slit_length: np.ndarray,
        groups: dict[str, dict[str, np.ndarray]],
    ) -> None:
        f = self._f
        n_before, n_new = int(f.attrs["n_curves"]), labels.shape[0]
        c = f["curves"]
        _append(c["offsets"], int(c["offsets"][-1]) + np.cumsum(lengths))
        for name in _POINT_ARRAYS:
            _append(c[name], points[name].astype(np.float64))
        _append(f["labels"], labels.astype(np.int8))
        _append(f["q_unit"], q_unit)
        _append(f["slit_length"], slit_length)
        for g in _GROUPS:
            grp = f[g]
            columns = groups[g]
            for name in sorted(columns):
                values = columns[name]
                if name not in grp:
                    is_str = values.dtype == object
                    fill = np.array([""] * n_before, dtype=object) if is_str else np.full(n_before, np.nan)
                    grp.create_dataset(name, data=fill, dtype=_STR if is_str else np.float64, **_ROW)
                _append(grp[name], _as_column(values, h5py.check_string_dtype(grp[name].dtype) is not None))
            for name in set(grp) - set(columns):
                is_str = h5py.check_string_dtype(grp[name].dtype) is not None
                _append(grp[name], np.array([""] * n_new, dtype=object) if is_str else np.full(n_new, np.nan))
        f.attrs["n_curves"] = n_before + n_new
        f.flush()


class CurveReader:
    """Streams curves back from a file written by :class:`CurveWriter`.

    ``labels`` is loaded (N bytes); point arrays are read only for the slices
    asked for, so a 1,000,000-curve file never has to fit in memory.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f = h5py.File(self.path, "r")
        if self._f.attrs.get("format") != FORMAT:
            self._f.close()
            raise ValueError(f"{self.path} is not a sasview-bnn curve file")
        self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self._f.attrs.items()}
        self.classes: list[str] = json.loads(self.attrs["classes"])
        self.config: dict = json.loads(self.attrs["config"])
        self.seed = int(self.attrs["seed"])
        self.labels: np.ndarray = self._f["labels"][:]

    def __enter__(self) -> "CurveReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def column(self, group: str, name: str) -> np.ndarray:
        """One metadata column for all curves, shape (N,)."""
        data = self._f[group][name][:]
        if data.dtype == object:
            data = np.array([v.decode() if isinstance(v, bytes) else v for v in data], dtype=object)
        return data

    def columns(self, group: str) -> list[str]:
        """Names of the columns of ``params``, ``instrument`` or ``criteria``."""
        return sorted(self._f[group])

    def read(self, start: int, stop: int) -> list[SimulatedCurve]:
        """Curves start..stop-1 as records (one contiguous read per dataset)."""
        stop = min(stop, len(self))
        if start >= stop:
            return []
        f = self._f
        offsets = f["curves/offsets"][start : stop + 1]
        lo, hi = int(offsets[0]), int(offsets[-1])
        arrays = {name: f["curves"][name][lo:hi] for name in _POINT_ARRAYS}
        units = f["q_unit"][start:stop]
        slits = f["slit_length"][start:stop]
        meta = {g: {name: f[g][name][start:stop] for name in f[g]} for g in _GROUPS}
        out = []
        for k in range(stop - start):
            a, b = int(offsets[k]) - lo, int(offsets[k + 1]) - lo
            rec_meta = {}
            for g in _GROUPS:
                d = {}
                for name, col in meta[g].items():
                    v = col[k]
                    if isinstance(v, bytes):
                        v = v.decode()
                        if v:
                            d[name] = v
                    elif not (isinstance(v, float) or np.issubdtype(type(v), np.floating)) or np.isfinite(v):
                        d[name] = float(v) if not isinstance(v, str) else v
                rec_meta[g] = d
            unit = units[k]
            out.append(
                SimulatedCurve(
                    label=int(self.labels[start + k]),
                    q=arrays["q"][a:b],
                    intensity=arrays["intensity"][a:b],
                    d_intensity=arrays["d_intensity"][a:b],
                    dq=arrays["dq"][a:b],
                    q_unit=unit.decode() if isinstance(unit, bytes) else str(unit),
                    slit_length=float(slits[k]),
                    **rec_meta,
                )
            )
        return out

    def iter_chunks(self, chunk_size: int = 4096, start: int = 0, stop: int | None = None) -> Iterator[list[SimulatedCurve]]:
        """Yield consecutive lists of at most ``chunk_size`` curves."""
        stop = len(self) if stop is None else min(stop, len(self))
        for s in range(start, stop, chunk_size):
            yield self.read(s, min(s + chunk_size, stop))
