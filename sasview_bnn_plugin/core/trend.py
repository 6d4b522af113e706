"""Trends over a series of curves: the x value of each frame and the first frame where an anomaly appears.

A *series* is a list of results in acquisition order (the files of one
``classify --trend`` run, the files of a watched folder as they arrive, the
rows of the perspective's table); each result is a *frame*. Frames are
numbered by their position in the list; refused curves keep their number but
are left out of the trend.

**The onset rule** (:func:`anomaly_onset`): the first anomaly frame is the
first classified frame from which, for :data:`ONSET_FRAMES` (k = 3)
consecutive classified frames,

- p(anomaly) = 1 - p(clean) (posterior mean) is at least :data:`ONSET_THRESHOLD` (0.5), or
- for a model with anomalies-present outputs, the probability that one and the
  same anomaly is present is at least 0.5.

The earliest frame that satisfies either criterion is marked; a run shorter
than k frames (a single noisy frame, or the last frames of a series that has
not yet confirmed it) is not. Requiring k frames in a row makes the mark
robust to one-off excursions; it is placed at the first frame of the run, not
where the run was confirmed.

**The x axis** (:func:`trend_axis`): the frame number by default, or a value
from each curve's metadata (``ClassificationResult.metadata``, read from the
file by sasdata, see :func:`sasview_bnn_plugin.core.curve.data1d_metadata`):
"time" (seconds since the first frame; numbers, datetimes or ISO dates),
"temperature" (with its unit), or any other metadata key holding a number.
When a frame lacks the value, the frame number is used and a note says why.

numpy only.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .result import ClassificationResult
from .taxonomy import ANOMALY_NAMES

#: Probability at or above which a frame counts as anomalous (1 - p(clean), or one anomaly's p(present)).
ONSET_THRESHOLD = 0.5
#: Consecutive frames the anomaly must last to be marked.
ONSET_FRAMES = 3
#: The rule in words, for legends and help texts.
ONSET_RULE = (
    f"first frame from which 1 − p(clean) ≥ {ONSET_THRESHOLD:g}, or one anomaly's p(present) ≥ {ONSET_THRESHOLD:g}, "
    f"for {ONSET_FRAMES} consecutive frames"
)

#: ``--trend-x`` values with a meaning of their own (any other value is a metadata key).
INDEX_AXIS, TIME_AXIS, TEMPERATURE_AXIS = "index", "time", "temperature"

_DATE_FORMATS = ("%d-%b-%Y %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%a %b %d %H:%M:%S %Y", "%d/%m/%Y %H:%M:%S", "%Y%m%dT%H%M%S")


@dataclass(frozen=True)
class AnomalyOnset:
    """Where the onset rule puts the first anomaly: ``frame`` is a position in the sequence given to
    :func:`anomaly_onset` (None: no anomaly lasting k frames); ``criterion`` names what crossed the threshold."""

    frame: int | None
    criterion: str = ""


def first_sustained(flags: Sequence[bool] | np.ndarray, k: int = ONSET_FRAMES) -> int | None:
    """The first position i with ``flags[i:i + k]`` all true, or None."""
    flags = np.asarray(flags, dtype=bool)
    if k < 1:
        raise ValueError("k must be at least 1")
    run = 0
    for i, flag in enumerate(flags):
        run = run + 1 if flag else 0
        if run >= k:
            return i - k + 1
    return None


def anomaly_onset(
    p_anomaly: Sequence[float] | np.ndarray,
    presence: np.ndarray | None = None,
    threshold: float = ONSET_THRESHOLD,
    k: int = ONSET_FRAMES,
) -> AnomalyOnset:
    """The first anomaly frame by the onset rule (module docstring).

    ``p_anomaly`` has shape (frames,): 1 - p(clean) of each frame, in order.
    ``presence`` (frames, 6), optional: each anomaly's posterior-mean
    probability of being present (NaN rows: not available). NaN never counts
    as anomalous.
    """
    p_anomaly = np.asarray(p_anomaly, dtype=float)
    with np.errstate(invalid="ignore"):
        candidates = [(first_sustained(p_anomaly >= threshold, k), "1 − p(clean)")]
        if presence is not None:
            presence = np.asarray(presence, dtype=float)
            for j, name in enumerate(ANOMALY_NAMES[: presence.shape[1]]):
                candidates.append((first_sustained(presence[:, j] >= threshold, k), f"p({name} present)"))
    found = [(frame, criterion) for frame, criterion in candidates if frame is not None]
    if not found:
        return AnomalyOnset(None)
    frame, criterion = min(found, key=lambda item: item[0])
    return AnomalyOnset(frame, criterion)


@dataclass
class TrendAxis:
    """The x values of the classified frames of a series.

    ``frames`` are the positions (in the list given) of the classified results,
    ``values`` their x values, shape (frames,); ``label`` names the axis and
    ``note`` says why the frame number is used instead of the value asked for
    (None when nothing needs saying).
    """

    frames: np.ndarray
    values: np.ndarray
    label: str
    note: str | None = None
    kind: str = INDEX_AXIS


def _seconds(value: Any) -> float | None:
    """A time as seconds (numbers as they are, datetimes and dates in text as POSIX seconds), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, _dt.datetime):
        return value.timestamp() if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc).timestamp()
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            return number if math.isfinite(number) else None
        try:
            return _seconds(_dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            pass
        for form in _DATE_FORMATS:
            try:
                return _seconds(_dt.datetime.strptime(text, form))
            except ValueError:
                continue
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _lookup(metadata: dict[str, Any], key: str) -> Any:
    """``metadata[key]``, the key matched case-insensitively; None when absent."""
    if key in metadata:
        return metadata[key]
    lowered = key.lower()
    return next((v for k, v in metadata.items() if isinstance(k, str) and k.lower() == lowered), None)


def trend_axis(results: Sequence[ClassificationResult], x: str | None = None) -> TrendAxis:
    """The x axis of a series for ``x`` (None or "index": the frame number; "time"; "temperature"; a metadata key).

    Only classified results are frames of the trend. If any of them lacks the
    value (or it is not a number, or a time for "time"), the frame number is
    used and :attr:`TrendAxis.note` says so.
    """
    frames = np.array([i for i, r in enumerate(results) if r.ok], dtype=int)
    index_axis = TrendAxis(frames, frames.astype(float), "frame")
    if x is None or not str(x).strip() or str(x).strip().lower() == INDEX_AXIS:
        return index_axis
    if not frames.size:
        return index_axis
    key = str(x).strip()
    kind = key.lower()
    read = _seconds if kind == TIME_AXIS else _number
    values = [read(_lookup(results[i].metadata or {}, key)) for i in frames]
    missing = sum(v is None for v in values)
    if missing:
        index_axis.note = (
            f"{key!r} is not in the metadata of {missing} of {frames.size} curve(s)"
            + (" as a number" if kind != TIME_AXIS else " as a time")
            + "; the trend is drawn against the frame number"
        )
        return index_axis
    array = np.array(values, dtype=float)
    if kind == TIME_AXIS:
        array = array - array[0]
        span = float(np.nanmax(np.abs(array))) if array.size else 0.0
        unit, scale = ("h", 3600.0) if span >= 3 * 3600 else ("min", 60.0) if span >= 180 else ("s", 1.0)
        return TrendAxis(frames, array / scale, f"time since the first frame ({unit})", kind=TIME_AXIS)
    if kind == TEMPERATURE_AXIS:
        units = {str(_lookup(results[i].metadata or {}, "temperature_unit") or "").strip() for i in frames}
        unit = units.pop() if len(units) == 1 else ""
        return TrendAxis(frames, array, f"temperature ({unit})" if unit else "temperature", kind=TEMPERATURE_AXIS)
    return TrendAxis(frames, array, key, kind="metadata")


def series_onset(results: Sequence[ClassificationResult]) -> AnomalyOnset:
    """The onset rule on the classified frames of ``results``; ``frame`` is a position in ``results``."""
    ok = [i for i, r in enumerate(results) if r.ok]
    if not ok:
        return AnomalyOnset(None)
    p_anomaly = np.array([results[i].anomaly_probability for i in ok])
    presence = np.stack([np.asarray(results[i].presence_probabilities, dtype=float) for i in ok])
    onset = anomaly_onset(p_anomaly, presence if np.isfinite(presence).any() else None)
    return AnomalyOnset(None if onset.frame is None else ok[onset.frame], onset.criterion)
