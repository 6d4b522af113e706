"""The raw curve record that flows from loading through plugins into the classifier.

A :class:`Curve` is one 1D measurement I(q) exactly as read (arrays in the file's
own units) plus where it came from. A curve that could not be read (an
unreadable file, a 2D entry) carries an ``error`` message instead of data, so it
still produces one result row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Curve:
    """One 1D curve, arrays of shape (points,).

    ``q`` is in ``q_unit`` ("1/Å", "1/nm", sasdata's "A^{-1}", … or None when
    the source gave no unit). ``d_intensity`` and ``dq`` are one-sigma
    uncertainties or None. ``source`` names the file (or any label) and
    ``dataset`` the entry inside it. ``notes`` collects remarks made before
    preprocessing (reader quirks, unit reinterpretation). ``error`` is set
    when there is no usable curve; then the arrays are empty.
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

    @classmethod
    def failed(cls, source: str, dataset: str, message: str, notes: list[str] | None = None) -> "Curve":
        """A placeholder for an entry that could not be read; ``message`` says why."""
        empty = np.zeros(0)
        return cls(q=empty, intensity=empty, source=source, dataset=dataset, notes=list(notes or []), error=message)

    @classmethod
    def from_data1d(cls, data: Any, source: str = "", dataset: str = "") -> "Curve":
        """Wrap a sasdata ``Data1D`` (x = q, y = I, dy, dx, ``_xunit``)."""

        def optional(values: Any) -> np.ndarray | None:
            if values is None:
                return None
            arr = np.asarray(values, dtype=np.float64)
            return arr if arr.size else None

        x = getattr(data, "x", None)
        y = getattr(data, "y", None)
        if x is None or y is None:
            return cls.failed(source, dataset, "the entry holds no q and I columns")
        return cls(
            q=np.asarray(x, dtype=np.float64),
            intensity=np.asarray(y, dtype=np.float64),
            d_intensity=optional(getattr(data, "dy", None)),
            dq=optional(getattr(data, "dx", None)),
            q_unit=getattr(data, "_xunit", None) or None,
            source=source or str(getattr(data, "filename", "") or ""),
            dataset=dataset or str(getattr(data, "title", "") or ""),
        )
