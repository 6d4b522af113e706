"""Calibration to one instrument: the novelty reference (and prediction-set thresholds) of a user's own curves.

A model's novelty p-values and prediction sets are calibrated on *simulated*
curves. The guarantee of a conformal p-value ("at most a fraction ``level`` of
ordinary curves is flagged") holds only for curves drawn like the calibration
curves; on a real instrument -- another q-window, resolution, noise or
reduction -- the false-alarm rate can be far from the nominal level. Classifying
a set of the instrument's own ordinary, known-good curves gives a reference
drawn like the curves to come, and the guarantee holds again for them.

``sasview-bnn calibrate DIR... -o my_instrument.json`` writes an
:class:`InstrumentCalibration` file (JSON, see :meth:`InstrumentCalibration.to_dict`):

- ``format`` (:data:`CALIBRATION_FORMAT`) and ``version`` (:data:`CALIBRATION_VERSION`);
- ``model``: the model's name, ``weights_sha256`` and novelty-score name; the
  file is refused for a model with other weights (:meth:`~InstrumentCalibration.check_model`);
- ``created`` (UTC, ISO 8601), ``sasview_bnn_version``;
- ``n`` and ``novelty.scores``: the sorted novelty scores of the n curves used,
  which replace the model's own reference in the p-value
  (:func:`sasview_bnn_plugin.core.conformal.novelty_p_values`); p-values cannot go
  below 1/(n+1) (``novelty.p_value_floor``);
- ``conformal`` (or null): with the curves' true classes (``--labels``), APS
  thresholds in the model format's ``conformal`` layout, one per level the model
  exports (or 0.8, 0.9, 0.95, 0.99 for a model without sets), from
  :func:`~sasview_bnn_plugin.core.conformal.conformal_quantile` of
  :func:`~sasview_bnn_plugin.core.conformal.aps_scores`;
- ``instrument``: the q-window, number of points, q coverage and q units of the
  curves (min / median / max), and the number of files;
- ``model_rule``: how many of these curves the model's own rule flagged novel
  (the false-alarm rate on this instrument before calibration);
- ``sources``, ``n_refused`` and ``refused`` (file, dataset, reason: curves the
  runtime refused are counted and listed, never used), ``labels``, ``notes``.

A classifier given the file (``BNNClassifier(..., calibration=...)``,
``classify/watch --calibration FILE``, the SasView preference) computes
p-values against its scores -- also for a model without ``novelty_calibration``
-- and, if it has thresholds, prediction sets with them; every result's notes
name the calibration.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .. import __version__
from ..core.conformal import aps_scores, conformal_quantile
from ..core.model_format import ConformalCalibration, ModelFormatError, ModelOptionError, NoveltyCalibration, read_optional_parts
from ..core.taxonomy import CLASS_NAMES

#: The ``format`` entry of a calibration file.
CALIBRATION_FORMAT = "sasview-bnn instrument calibration"
#: The version this runtime writes and the newest it reads.
CALIBRATION_VERSION = 1
#: Fewer curves than this give coarse p-values (floor 1/(n+1)) and a warning, not a failure.
RECOMMENDED_MIN_CURVES = 50
#: Prediction-set levels calibrated for a model that exports none (the trainer's levels).
DEFAULT_SET_LEVELS: tuple[str, ...] = ("0.8", "0.9", "0.95", "0.99")
DEFAULT_SET_LEVEL = "0.9"
#: The novelty level used with a calibration when the model has no novelty calibration of its own.
DEFAULT_NOVELTY_LEVEL = 0.01


class CalibrationError(ModelOptionError):
    """A calibration file that cannot be used (unreadable, not a calibration, or made for another model); the message says why."""


@dataclass
class InstrumentCalibration:
    """The novelty reference (and optional prediction-set thresholds) of one instrument's curves for one model.

    ``novelty_scores`` are sorted ascending, shape (n,). ``conformal`` holds the
    recalibrated APS thresholds (None without labels). ``path`` is where the
    calibration was read from or written to (not stored in the file).
    """

    model_name: str
    weights_sha256: str
    novelty_scores: np.ndarray
    novelty_score_name: str = ""
    created: str = ""
    conformal: ConformalCalibration | None = None
    instrument: dict[str, Any] = field(default_factory=dict)
    model_rule: dict[str, Any] | None = None
    sources: list[str] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    labels: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    package_version: str = __version__
    path: Path | None = None

    @property
    def n(self) -> int:
        """The number of curves in the novelty reference."""
        return int(self.novelty_scores.size)

    @property
    def n_refused(self) -> int:
        return len(self.refused)

    @property
    def p_value_floor(self) -> float:
        """The smallest p-value this reference can give, 1/(n+1): a level at or below it flags nothing."""
        return 1.0 / (self.n + 1)

    @property
    def label(self) -> str:
        """How results and messages name this calibration: its file name, else "in memory"."""
        return self.path.name if self.path is not None else "in memory"

    def describe(self) -> str:
        """"my_instrument.json (300 curves, 2026-11-30)"."""
        date = self.created[:10]
        return f"{self.label} ({self.n} curve{'s' if self.n != 1 else ''}{', ' + date if date else ''})"

    def novelty_calibration(self, default_level: float = DEFAULT_NOVELTY_LEVEL) -> NoveltyCalibration:
        """The reference in the form the classifier uses for p-values."""
        return NoveltyCalibration(self.novelty_scores, float(default_level))

    def check_model(self, metadata: Mapping[str, str], model_name: str = "") -> None:
        """Raise :class:`CalibrationError` unless this calibration was made for a model with these weights."""
        shown = model_name or "this model"
        sha = str(metadata.get("weights_sha256", ""))
        if sha.lower() != self.weights_sha256.lower():
            raise CalibrationError(
                f"the calibration {self.label} was made for the model {self.model_name} (weights sha256 "
                f"{self.weights_sha256[:12]}...), not for {shown} (weights sha256 {sha[:12] or 'unknown'}...): its novelty "
                f"reference does not apply to another model; calibrate again with 'sasview-bnn calibrate DIR... --model "
                f"{model_name or 'MODEL'} -o FILE.json'"
            )
        score_name = str(metadata.get("novelty_score", ""))
        if self.novelty_score_name and score_name and score_name != self.novelty_score_name:
            raise CalibrationError(
                f"the calibration {self.label} holds {self.novelty_score_name!r} novelty scores, but {shown} computes "
                f"{score_name!r} scores; calibrate again with this model"
            )

    # -- the file ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (see the module docstring)."""
        conformal = None
        if self.conformal is not None:
            conformal = {
                "method": self.conformal.method,
                "levels": {k: float(v) for k, v in self.conformal.levels.items()},
                "n_calibration": int(self.conformal.n_calibration),
                "default_level": self.conformal.default_level,
            }
        return {
            "format": CALIBRATION_FORMAT,
            "version": CALIBRATION_VERSION,
            "created": self.created,
            "sasview_bnn_version": self.package_version,
            "model": {"name": self.model_name, "weights_sha256": self.weights_sha256, "novelty_score": self.novelty_score_name},
            "n": self.n,
            "novelty": {"scores": [float(v) for v in self.novelty_scores], "p_value_floor": self.p_value_floor},
            "conformal": conformal,
            "instrument": self.instrument,
            "model_rule": self.model_rule,
            "sources": list(self.sources),
            "n_refused": self.n_refused,
            "refused": list(self.refused),
            "labels": self.labels,
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the file (atomically: a temporary file beside it, then renamed); return its path."""
        target = Path(path)
        text = self.to_json()
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent if str(target.parent) else ".")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.path = target
        return target

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> "InstrumentCalibration":
        """Read a calibration document; :class:`CalibrationError` saying what is wrong with it."""
        where = f"the calibration file {path}" if path is not None else "the calibration"
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise CalibrationError(f"{where} is not a sasview-bnn instrument calibration (write one with 'sasview-bnn calibrate')")
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise CalibrationError(f"{where} has no valid format version")
        if version > CALIBRATION_VERSION:
            raise CalibrationError(
                f"{where} has format version {version}, made by a newer sasview-bnn; this one reads version {CALIBRATION_VERSION}"
            )
        model = data.get("model")
        if not isinstance(model, dict) or not isinstance(model.get("weights_sha256"), str) or not model["weights_sha256"]:
            raise CalibrationError(f"{where} does not say which model it was made for (model.weights_sha256)")
        scores = (data.get("novelty") or {}).get("scores") if isinstance(data.get("novelty"), dict) else None
        if (not isinstance(scores, list) or not scores
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in scores)):
            raise CalibrationError(f"{where} has no novelty reference scores (novelty.scores: a non-empty list of numbers)")
        values = np.sort(np.asarray(scores, dtype=np.float64))
        if not np.isfinite(values).all():
            raise CalibrationError(f"{where} has novelty reference scores that are not finite numbers")
        conformal = None
        if data.get("conformal") is not None:
            try:
                conformal = read_optional_parts({"conformal": json.dumps(data["conformal"])}, []).conformal
            except (ModelFormatError, TypeError, ValueError) as err:
                raise CalibrationError(f"{where} has unusable prediction-set thresholds: {err}") from None

        def entries(key: str, kind: type) -> Any:
            value = data.get(key)
            return value if isinstance(value, kind) else kind()

        return cls(
            model_name=str(model.get("name", "")),
            weights_sha256=model["weights_sha256"],
            novelty_scores=values,
            novelty_score_name=str(model.get("novelty_score", "") or ""),
            created=str(data.get("created", "")),
            conformal=conformal,
            instrument=entries("instrument", dict),
            model_rule=data.get("model_rule") if isinstance(data.get("model_rule"), dict) else None,
            sources=[str(s) for s in entries("sources", list)],
            refused=[r for r in entries("refused", list) if isinstance(r, dict)],
            labels=data.get("labels") if isinstance(data.get("labels"), dict) else None,
            notes=[str(s) for s in entries("notes", list)],
            package_version=str(data.get("sasview_bnn_version", "")),
            path=path,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "InstrumentCalibration":
        """Read a calibration file; :class:`CalibrationError` if it is missing, unreadable or not a calibration."""
        target = Path(path)
        if not target.is_file():
            raise CalibrationError(f"the calibration file {target} does not exist")
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CalibrationError(f"the calibration file {target} cannot be read ({type(err).__name__})") from None
        return cls.from_dict(data, target)


def load_calibration(value: "str | os.PathLike[str] | InstrumentCalibration | None") -> InstrumentCalibration | None:
    """A calibration given as a path or an object (None or "": no calibration)."""
    if value is None or isinstance(value, InstrumentCalibration):
        return value
    if not os.fspath(value).strip():
        return None
    return InstrumentCalibration.load(value)


# -- labels of the calibration curves ---------------------------------------------------------------


class LabelTable:
    """True classes of calibration curves from a CSV file with columns ``file``, ``dataset`` (optional), ``label``.

    ``file`` is a path, absolute or relative to the CSV's folder (or to the
    current folder), or a bare file name; an empty ``dataset`` labels every
    curve of the file. ``label`` is a class name of the taxonomy or its index.
    """

    def __init__(self, rows: Iterable[tuple[str, str, int]], base: Path | None = None) -> None:
        self._by_path: dict[tuple[str, str], int] = {}
        self._by_name: dict[tuple[str, str], int] = {}
        self.n_rows = 0
        for file, dataset, label in rows:
            self.n_rows += 1
            candidates = [Path(file)] if Path(file).is_absolute() else [p for p in ((base / file) if base else None, Path(file)) if p]
            found = next((p for p in candidates if p.exists()), None)
            if found is not None:
                self._by_path[(str(found.resolve()), dataset)] = label
            elif len(Path(file).parts) == 1:
                self._by_name[(file, dataset)] = label
            else:
                self._by_path[(str(candidates[0].resolve()), dataset)] = label
        self._used: set[tuple[str, str]] = set()

    def label_of(self, file: str, dataset: str) -> int | None:
        """The class index of a curve (None: not labelled)."""
        path = str(Path(file).resolve()) if file else ""
        name = Path(file).name
        for table, key in ((self._by_path, path), (self._by_name, name)):
            for ds in (dataset, ""):
                if (key, ds) in table:
                    self._used.add((key, ds))
                    return table[(key, ds)]
        return None

    @property
    def n_unused(self) -> int:
        """Rows that labelled no curve looked up so far."""
        return len(self._by_path) + len(self._by_name) - len(self._used)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> "LabelTable":
        """Read the CSV; :class:`CalibrationError` for a missing file, missing columns or an unknown class."""
        target = Path(path)
        try:
            with target.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                fields = [f.strip().lower() for f in (reader.fieldnames or [])]
                if "file" not in fields or "label" not in fields:
                    raise CalibrationError(f"the labels file {target} needs the columns file, dataset (optional) and label; it has {', '.join(fields) or 'none'}")
                rows = []
                for number, raw in enumerate(reader, start=2):
                    row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
                    if not row.get("file"):
                        continue
                    rows.append((row["file"], row.get("dataset", ""), _class_index(row.get("label", ""), target, number)))
        except OSError as err:
            raise CalibrationError(f"the labels file {target} cannot be read: {err.strerror or err}") from None
        except (UnicodeDecodeError, csv.Error) as err:
            raise CalibrationError(f"the labels file {target} is not a readable CSV file ({type(err).__name__})") from None
        return cls(rows, target.parent)


def _class_index(text: str, path: Path, line: int) -> int:
    names = [n.lower() for n in CLASS_NAMES]
    if text.lower() in names:
        return names.index(text.lower())
    if text.isdigit() and int(text) < len(CLASS_NAMES):
        return int(text)
    raise CalibrationError(f"the labels file {path}, line {line}: {text!r} is not a class; the classes are {', '.join(CLASS_NAMES)}")


# -- building a calibration -------------------------------------------------------------------------


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return None
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}


def calibrate_results(
    results: Iterable[Any],
    metadata: Mapping[str, str],
    model_name: str,
    *,
    labels: LabelTable | Mapping[tuple[str, str], int] | None = None,
    set_levels: Sequence[str] | None = None,
    default_set_level: str = DEFAULT_SET_LEVEL,
    sources: Sequence[str] = (),
    labels_source: str = "",
) -> InstrumentCalibration:
    """A calibration from the :class:`~sasview_bnn_plugin.core.result.ClassificationResult` of an instrument's ordinary curves.

    Refused results are listed, not used. With ``labels`` (a :class:`LabelTable`
    or a mapping (file, dataset) -> class index), APS thresholds are computed at
    ``set_levels`` (default :data:`DEFAULT_SET_LEVELS`) from the labelled curves;
    a level needing more labelled curves than there are is left out (a note says so).
    Raises :class:`CalibrationError` when no curve was classified.
    """
    used: list[Any] = []
    refused: list[dict[str, str]] = []
    for result in results:
        if result.ok:
            used.append(result)
        else:
            refused.append({"file": result.file, "dataset": result.dataset, "message": result.message})
    if not used:
        raise CalibrationError(f"none of the {len(refused)} curve(s) could be classified, so there is nothing to calibrate with")
    scores = np.sort(np.array([r.novelty_score for r in used], dtype=np.float64))
    n = scores.size
    flagged = sum(bool(r.is_novel) for r in used)
    levels_used = {r.novelty_level for r in used if math.isfinite(r.novelty_level)}
    rule = (f"novelty p-value < {min(levels_used):g} against the model's own reference" if levels_used
            else f"novelty score > {used[0].novelty_threshold:.4g}")
    instrument = {
        "q_min_inverse_angstrom": _spread([r.q_window[0] for r in used]),
        "q_max_inverse_angstrom": _spread([r.q_window[1] for r in used]),
        "n_points": _spread([float(r.n_points) for r in used]),
        "coverage": _spread([r.coverage for r in used]),
        "q_units": dict(Counter(r.q_unit_used or "unknown" for r in used)),
        "n_files": len({r.file for r in used}),
    }
    notes: list[str] = []
    if n < RECOMMENDED_MIN_CURVES:
        notes.append(f"only {n} curve(s): at least {RECOMMENDED_MIN_CURVES} are recommended, the p-values are coarse")
    conformal = None
    label_info = None
    if labels is not None:
        lookup = labels.label_of if isinstance(labels, LabelTable) else (lambda f, d: labels.get((f, d)))  # type: ignore[union-attr]
        pairs = [(r, lookup(r.file, r.dataset)) for r in used]
        labelled = [(r, y) for r, y in pairs if y is not None]
        label_info = {"file": labels_source, "n_labelled": len(labelled), "n_unlabelled": n - len(labelled),
                      "classes": dict(Counter(CLASS_NAMES[y] for _, y in labelled))}
        if labelled:
            probs = np.stack([np.asarray(r.probabilities, dtype=np.float64) for r, _ in labelled])
            conformity = aps_scores(probs, np.array([y for _, y in labelled], dtype=np.int64))
            thresholds: dict[str, float] = {}
            for level in set_levels or DEFAULT_SET_LEVELS:
                t = conformal_quantile(conformity, float(level))
                if math.isfinite(t):
                    thresholds[str(level)] = t
                else:
                    needed = math.ceil(float(level) / (1.0 - float(level)) - 1e-9)
                    notes.append(f"no prediction sets at level {level}: {len(labelled)} labelled curve(s), at least {needed} are needed")
            if thresholds:
                default = str(default_set_level)
                if default not in thresholds:
                    default = min(thresholds, key=lambda k: abs(float(k) - float(default_set_level)))
                conformal = ConformalCalibration("aps", thresholds, len(labelled), default)
        else:
            notes.append("no curve matched a row of the labels file, so no prediction-set thresholds were calibrated")
    return InstrumentCalibration(
        model_name=model_name,
        weights_sha256=str(metadata.get("weights_sha256", "")),
        novelty_scores=scores,
        novelty_score_name=str(metadata.get("novelty_score", "")),
        created=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        conformal=conformal,
        instrument=instrument,
        model_rule={"rule": rule, "flagged": int(flagged), "fraction": flagged / n},
        sources=[str(s) for s in sources],
        refused=refused,
        labels=label_info,
        notes=notes,
    )


def calibrate(classifier: Any, curves: Iterable[Any], labels: Any = None, sources: Sequence[str] = ()) -> InstrumentCalibration:
    """Classify an instrument's ordinary curves with ``classifier`` (a :class:`~sasview_bnn_plugin.model.classifier.BNNClassifier`
    without a calibration) and return their calibration; curves as :meth:`BNNClassifier.classify` takes them."""
    if getattr(classifier, "calibration", None) is not None:
        raise CalibrationError("calibrate with a classifier that uses no calibration of its own")
    conformal = classifier.optional_parts.conformal
    return calibrate_results(
        classifier.classify(curves),
        classifier.metadata,
        classifier.name,
        labels=labels,
        set_levels=sorted(conformal.levels, key=float) if conformal is not None else None,
        default_set_level=conformal.default_level if conformal is not None else DEFAULT_SET_LEVEL,
        sources=sources,
    )
