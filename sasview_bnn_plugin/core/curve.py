"""The raw curve record that flows from loading through plugins into the classifier.

A :class:`Curve` is one 1D measurement I(q) exactly as read (arrays in the file's
own units) plus where it came from. A curve that could not be read (an
unreadable file, a 2D entry) carries an ``error`` message instead of data, so it
still produces one result row.

"This curve failed" is said one way: a :class:`Failure` (the message for a
scientist). A curve that could not be read is ``Curve.failed(...)``
(:attr:`Curve.failure`), a step that refuses a curve (preprocessing, the
model's outputs) returns a :class:`Failure`, and the result of a failed curve is
``ClassificationResult.error(...)`` (its ``failure``; ``status`` "error" and the
message in the files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Where a curve's q unit comes from (see :class:`Curve`).
Q_UNIT_SOURCES: tuple[str, ...] = ("file", "user", "assumed")

#: sasdata readers (``meta_data["loader"]``) that never read a q unit and label q 1/Å by default.
DEFAULT_UNIT_READERS: frozenset[str] = frozenset({"ASCII", "CSV"})


@dataclass(frozen=True)
class Failure:
    """Why a curve gets no answer: the message says it for a scientist (see the module's docstring)."""

    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class Curve:
    """One 1D curve, arrays of shape (points,).

    ``q`` is in ``q_unit`` ("1/Å", "1/nm", sasdata's "A^{-1}", … or None when
    the source gave no unit). ``q_unit_source`` says where that unit comes
    from: "file" (given with the data: a unit in the file, or by whoever built
    the curve), "user" (set by the user for data without one) or "assumed"
    (nobody gave it: ``q_unit`` is at most a reader's default, e.g. sasdata's
    1/Å for plain ASCII columns, and the classifier decides the unit, see
    :mod:`sasview_bnn_plugin.core.q_units`). Left as None it is "file" when
    ``q_unit`` is set and "assumed" when not. ``d_intensity`` and ``dq`` are
    one-sigma uncertainties or None. ``source`` names the file (or any label)
    and ``dataset`` the entry inside it. ``notes`` collects remarks made before
    preprocessing (reader quirks, unit reinterpretation). ``error`` is set
    when there is no usable curve; then the arrays are empty. ``metadata``
    holds what the file says about the measurement, as far as sasdata reads
    it (see :func:`data1d_metadata`: ``temperature``, ``temperature_unit``,
    ``time``, ``run`` and the file's other scalar metadata); it is carried
    into the result (``ClassificationResult.metadata``), e.g. for trends.
    """

    q: np.ndarray
    intensity: np.ndarray
    d_intensity: np.ndarray | None = None
    dq: np.ndarray | None = None
    q_unit: str | None = None
    source: str = ""
    dataset: str = ""
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    q_unit_source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.q_unit_source is None:
            self.q_unit_source = "file" if self.q_unit is not None and str(self.q_unit).strip() else "assumed"
        elif self.q_unit_source not in Q_UNIT_SOURCES:
            raise ValueError(f"q_unit_source must be one of {', '.join(Q_UNIT_SOURCES)}, not {self.q_unit_source!r}")

    @classmethod
    def failed(cls, source: str, dataset: str, message: str | Failure, notes: list[str] | None = None) -> "Curve":
        """A placeholder for an entry that could not be read; ``message`` says why."""
        empty = np.zeros(0)
        return cls(q=empty, intensity=empty, source=source, dataset=dataset, notes=list(notes or []), error=str(message))

    @property
    def failure(self) -> Failure | None:
        """Why there is no usable curve (:class:`Failure`), None for a curve with data."""
        return None if self.error is None else Failure(self.error)

    @classmethod
    def from_data1d(cls, data: Any, source: str = "", dataset: str = "") -> "Curve":
        """Wrap a sasdata ``Data1D`` (x = q, y = I, dy, dx, ``_xunit``).

        The unit is "assumed" when the entry has none or was read by sasdata's
        ASCII/CSV reader (which labels every curve 1/Å without reading a unit).
        """

        def optional(values: Any) -> np.ndarray | None:
            if values is None:
                return None
            arr = np.asarray(values, dtype=np.float64)
            return arr if arr.size else None

        x = getattr(data, "x", None)
        y = getattr(data, "y", None)
        if x is None or y is None:
            return cls.failed(source, dataset, "the entry holds no q and I columns")
        unit = getattr(data, "_xunit", None) or None
        meta = getattr(data, "meta_data", None)
        reader = str(meta.get("loader", "")) if isinstance(meta, dict) else ""
        # sasdata's ASCII and CSV readers never read a unit: they label every curve 1/Å by default.
        assumed = unit is None or not str(unit).strip() or reader in DEFAULT_UNIT_READERS
        return cls(
            q=np.asarray(x, dtype=np.float64),
            intensity=np.asarray(y, dtype=np.float64),
            d_intensity=optional(getattr(data, "dy", None)),
            dq=optional(getattr(data, "dx", None)),
            q_unit=unit,
            source=source or str(getattr(data, "filename", "") or ""),
            dataset=dataset or str(getattr(data, "title", "") or ""),
            q_unit_source="assumed" if assumed else "file",
            metadata=data1d_metadata(data),
        )


#: sasdata ``meta_data`` keys (lower case) that give the time of a measurement, in order of preference.
TIME_KEYS: tuple[str, ...] = ("time", "start_time", "timestamp", "datetime", "date", "end_time")


def _scalar(value: Any) -> Any:
    """A number, text or datetime of one metadata value (a one-element list or array unpacked), else None."""
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != 1:
            return None
        value = value[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) or hasattr(value, "timestamp"):
        return value
    return None


def data1d_metadata(data: Any) -> dict[str, Any]:
    """What a sasdata ``Data1D`` says about its measurement: ``temperature`` (a number) with
    ``temperature_unit`` (``sample.temperature``), ``time`` (the first of :data:`TIME_KEYS` in
    ``meta_data``, else the first ``process`` date), ``run`` (the first run name) and every other
    scalar ``meta_data`` entry under its own key. Values are numbers, text or datetimes; anything
    missing is left out. Never raises."""
    out: dict[str, Any] = {}
    try:
        meta = getattr(data, "meta_data", None)
        if isinstance(meta, dict):
            for key, value in meta.items():
                value = _scalar(value)
                if value is not None and isinstance(key, str):
                    out.setdefault(key, value)
        sample = getattr(data, "sample", None)
        temperature = _scalar(getattr(sample, "temperature", None))
        if temperature is not None:
            try:
                out["temperature"] = float(temperature)
            except (TypeError, ValueError):
                pass
            else:
                unit = _scalar(getattr(sample, "temperature_unit", None))
                if isinstance(unit, str):
                    out["temperature_unit"] = unit
        lowered = {k.lower(): k for k in out}
        time = next((out[lowered[k]] for k in TIME_KEYS if k in lowered), None)
        if time is None:
            for process in getattr(data, "process", None) or []:
                time = _scalar(getattr(process, "date", None))
                if time is not None:
                    break
        if time is not None:
            out["time"] = time
        runs = getattr(data, "run", None) or []
        run = _scalar(runs[:1]) if isinstance(runs, (list, tuple)) else None
        if run is not None:
            out.setdefault("run", run)
    except Exception:  # metadata are a bonus: an odd object never costs the curve
        return out
    return out
