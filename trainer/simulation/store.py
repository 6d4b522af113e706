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
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from .record import SimulatedCurve

FORMAT = "sasview-bnn-curves"
FORMAT_VERSION = 1
_POINT_ARRAYS = ("q", "intensity", "d_intensity", "dq")
_GROUPS = ("params", "instrument", "criteria")
_STR = h5py.string_dtype()


def _append(ds: h5py.Dataset, values: np.ndarray) -> None:
    start = ds.shape[0]
    ds.resize((start + values.shape[0],))
    ds[start:] = values


def _column(records: Sequence[SimulatedCurve], group: str, name: str, is_str: bool) -> np.ndarray:
    values = [getattr(r, group).get(name) for r in records]
    if is_str:
        return np.array(["" if v is None else str(v) for v in values], dtype=object)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


class CurveWriter:
    """Appends :class:`SimulatedCurve` records to a new HDF5 file.

    Use as a context manager. Columns of ``params``/``instrument``/``criteria``
    appear as they are first seen; earlier rows are back-filled with NaN or "".
    """

    def __init__(self, path: str | Path, *, seed: int, code_version: str, classes: Sequence[str], config: dict) -> None:
        self.path = Path(path)
        self._f = h5py.File(self.path, "w")
        a = self._f.attrs
        a["format"] = FORMAT
        a["format_version"] = FORMAT_VERSION
        a["seed"] = int(seed)
        a["code_version"] = code_version
        a["classes"] = json.dumps(list(classes))
        a["config"] = json.dumps(config, sort_keys=True)
        a["n_curves"] = 0
        c = self._f.create_group("curves")
        c.create_dataset("offsets", data=np.zeros(1, dtype=np.int64), maxshape=(None,), chunks=(65536,))
        for name in _POINT_ARRAYS:
            c.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(262144,), compression="lzf")
        self._f.create_dataset("labels", shape=(0,), maxshape=(None,), dtype=np.int8, chunks=(65536,))
        self._f.create_dataset("q_unit", shape=(0,), maxshape=(None,), dtype=_STR, chunks=(65536,))
        self._f.create_dataset("slit_length", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(65536,))
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
        f = self._f
        n_before = int(f.attrs["n_curves"])
        c = f["curves"]
        lengths = np.array([r.q.shape[0] for r in records], dtype=np.int64)
        last = int(c["offsets"][-1])
        _append(c["offsets"], last + np.cumsum(lengths))
        _append(c["q"], np.concatenate([r.q for r in records]).astype(np.float64))
        _append(c["intensity"], np.concatenate([r.intensity for r in records]).astype(np.float64))
        _append(c["d_intensity"], np.concatenate([r.d_intensity for r in records]).astype(np.float64))
        _append(c["dq"], np.concatenate([r.dq for r in records]).astype(np.float64))
        _append(f["labels"], np.array([r.label for r in records], dtype=np.int8))
        _append(f["q_unit"], np.array([r.q_unit for r in records], dtype=object))
        _append(f["slit_length"], np.array([r.slit_length for r in records], dtype=np.float64))
        for g in _GROUPS:
            grp = f[g]
            names = sorted({k for r in records for k in getattr(r, g)})
            for name in names:
                is_str = any(isinstance(getattr(r, g).get(name), str) for r in records)
                if name not in grp:
                    fill = np.array([""] * n_before, dtype=object) if is_str else np.full(n_before, np.nan)
                    grp.create_dataset(name, data=fill, maxshape=(None,), chunks=(65536,), dtype=_STR if is_str else np.float64)
                col = _column(records, g, name, h5py.check_string_dtype(grp[name].dtype) is not None)
                _append(grp[name], col)
            for name in set(grp) - set(names):
                is_str = h5py.check_string_dtype(grp[name].dtype) is not None
                _append(grp[name], np.array([""] * len(records), dtype=object) if is_str else np.full(len(records), np.nan))
        f.attrs["n_curves"] = n_before + len(records)
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
