"""The contract between the trainer's ONNX export and the runtime.

One ONNX graph holds S fixed posterior weight samples (variational draws or
ensemble members) and no random operator.

Input
    ``features``: float32 (batch, channels, bins), the output of
    :func:`sasview_bnn_plugin.core.preprocessing.prepare_curve`, batch axis dynamic.

Outputs
    ``probabilities``: float32 (batch, S, n_classes), softmax of each posterior sample.
    ``novelty_score``: float32 (batch,), a feature-space novelty score (higher is
    more novel), compared with the ``novelty_threshold`` metadata entry.

Metadata (``metadata_props``, all values strings; JSON where structured) is
listed in :data:`REQUIRED_METADATA`. Which novelty score the graph computes
(``novelty_score``: its formula, e.g. "max(knn/q_knn, entropy/q_entropy)")
changes nothing for the runtime; its settings are in the informational
:data:`NOVELTY_SETTINGS_KEY` entry.

Optional parts (format version still "1")
    Each is detected by its presence; a model without them (such as the
    shipped ``sasview_bnn_vi16_1m``) works as before. Their keys are listed
    in :data:`OPTIONAL_METADATA`; :func:`read_optional_parts` validates them.

    1. **Anomalies present** (taxonomy version 2: several anomalies at once).
       Output ``anomaly_probabilities`` (:data:`ANOMALY_OUTPUT`): float32
       (batch, S, 6), per posterior sample the sigmoid probability that each
       anomaly -- classes 1-6 in taxonomy order,
       :data:`~sasview_bnn_plugin.core.taxonomy.ANOMALY_NAMES` -- is present.
       Metadata ``anomalies``: JSON list of those six names (required with the
       output); ``anomaly_threshold``: a number as text (default "0.5"); an
       anomaly is *present* when its posterior-mean probability is >= it.
    2. **Conformal prediction sets**. Metadata ``conformal``: JSON
       ``{"method": "aps", "levels": {"0.9": t, "0.95": t, "0.99": t},
       "n_calibration": n, "default_level": "0.9"}`` (levels below the model's
       accuracy, which the sets could only over-keep, are not exported) -- split-conformal
       adaptive prediction sets (non-randomised) on the posterior-mean class
       probabilities, one threshold ``t`` per coverage level; the set rule and
       the calibration score are :func:`sasview_bnn_plugin.core.conformal.aps_sets`
       and :func:`~sasview_bnn_plugin.core.conformal.aps_scores`.
    3. **Novelty p-values**. Metadata ``novelty_calibration``: JSON
       ``{"scores": [sorted in-distribution calibration novelty scores],
       "default_level": 0.01}``; a curve's p-value is
       :func:`sasview_bnn_plugin.core.conformal.novelty_p_values` of its novelty
       score, and it is novel when p < level. Without this entry the
       ``novelty_threshold`` rule applies.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from .preprocessing import PreprocessingConfig
from .taxonomy import ANOMALY_NAMES, CLASS_NAMES

FORMAT_VERSION = "1"
INPUT_NAME = "features"
PROBABILITIES_OUTPUT = "probabilities"
NOVELTY_OUTPUT = "novelty_score"
#: Optional output: (batch, S, 6) probabilities that each anomaly (ANOMALY_NAMES) is present.
ANOMALY_OUTPUT = "anomaly_probabilities"
#: A curve whose highest posterior-mean class probability is below this is reported
#: as low confidence: the label is a guess, whatever the novelty score says.
LOW_CONFIDENCE_THRESHOLD = 0.5

#: key -> what it holds. Every key must be present in a shipped model.
REQUIRED_METADATA: dict[str, str] = {
    "sasview_bnn.format_version": "version of this contract (\"1\")",
    "classes": "JSON list of class names in output order (must equal the taxonomy)",
    "preprocessing": "JSON of PreprocessingConfig (every preprocessing setting)",
    "n_samples": "S, the number of posterior samples in the graph",
    "inference_method": "\"vi\" (mean-field variational) or \"ensemble\" (deep ensemble), or another named method",
    "prior_sigma": "standard deviation of the Gaussian prior on the weights",
    "novelty_score": "name of the novelty score (e.g. \"mahalanobis\")",
    "novelty_threshold": "threshold above which a curve is novel",
    "novelty_false_alarm_rate": "fraction of in-distribution validation curves above the threshold",
    "training_data": "JSON: seed, n_curves, simulator code version, excluded classes",
    "metrics": "JSON of key validation/test metrics",
    "package_version": "sasview-bnn version that exported the model",
    "weights_sha256": "sha256 of the concatenated float32 weights of all samples",
}


class ModelFormatError(ValueError):
    """An ONNX model whose metadata does not match this runtime; the message says how."""


def check_metadata(meta: Mapping[str, str]) -> PreprocessingConfig:
    """Validate a model's metadata against the taxonomy; return its preprocessing config."""
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise ModelFormatError(f"the model's metadata lacks {', '.join(missing)}; it was not exported by sasview-bnn-train")
    if meta["sasview_bnn.format_version"] != FORMAT_VERSION:
        raise ModelFormatError(
            f"the model uses format version {meta['sasview_bnn.format_version']}, this runtime reads version {FORMAT_VERSION}"
        )
    try:
        classes = json.loads(meta["classes"])
    except json.JSONDecodeError:
        raise ModelFormatError("the model's class list is not valid JSON") from None
    if tuple(classes) != CLASS_NAMES:
        raise ModelFormatError(f"the model's classes {classes} differ from the taxonomy {list(CLASS_NAMES)}")
    try:
        return PreprocessingConfig.from_json(meta["preprocessing"])
    except (ValueError, TypeError) as err:
        raise ModelFormatError(f"the model's preprocessing settings cannot be used: {err}") from None


# -- optional parts ---------------------------------------------------------------------------

ANOMALIES_KEY = "anomalies"
ANOMALY_THRESHOLD_KEY = "anomaly_threshold"
CONFORMAL_KEY = "conformal"
NOVELTY_CALIBRATION_KEY = "novelty_calibration"
#: An anomaly is present when its posterior-mean probability is at least this (unless the model says otherwise).
DEFAULT_ANOMALY_THRESHOLD = 0.5
#: Conformal prediction-set methods this runtime computes.
CONFORMAL_METHODS: tuple[str, ...] = ("aps",)

#: key -> what it holds. Optional: a model may have any of them (see the module docstring).
OPTIONAL_METADATA: dict[str, str] = {
    ANOMALIES_KEY: f"JSON list of the anomalies in the {ANOMALY_OUTPUT!r} output, in order (must equal the taxonomy's classes 1-6); required with that output",
    ANOMALY_THRESHOLD_KEY: f"an anomaly is present when its posterior-mean probability is >= this (default \"{DEFAULT_ANOMALY_THRESHOLD}\")",
    CONFORMAL_KEY: "JSON {\"method\": \"aps\", \"levels\": {level: threshold}, \"n_calibration\": n, \"default_level\": level}: split-conformal prediction sets",
    NOVELTY_CALIBRATION_KEY: "JSON {\"scores\": [sorted in-distribution novelty scores], \"default_level\": 0.01}: novelty p-values",
}


#: Informational (the runtime computes nothing from it; model cards show it): JSON of the exported novelty
#: score's settings, ``{"score": "knn_entropy", "k": 10, "bank_size": 4000, ...}`` or
#: ``{"score": "mahalanobis_entropy", ...}`` (``sasview-bnn-train export --novelty-score``).
NOVELTY_SETTINGS_KEY = "novelty_settings"
#: Informational, only in a graph whose samples come from several training runs (``sasview-bnn-train export RUN RUN...``):
#: JSON list of ``{"run": name, "samples": n, "seed": s, "epochs_done": e}`` in the graph's sample order.
TRAINING_RUNS_KEY = "training_runs"


class ModelOptionError(ValueError):
    """A run-time option the model cannot honour (e.g. a prediction-set level it does not export); the message says what it offers."""


@dataclass(frozen=True)
class AnomalyHead:
    """The optional anomalies-present output: the anomaly names in output order and the presence threshold."""

    names: tuple[str, ...]
    threshold: float = DEFAULT_ANOMALY_THRESHOLD


@dataclass(frozen=True)
class ConformalCalibration:
    """The ``conformal`` metadata: one APS threshold per coverage level (levels keyed as the model writes them)."""

    method: str
    levels: Mapping[str, float]
    n_calibration: int
    default_level: str

    def available(self) -> str:
        """The exported levels, for messages: "0.8, 0.9, 0.95, 0.99"."""
        return ", ".join(sorted(self.levels, key=float))

    def resolve(self, level: str | float | None = None) -> tuple[float, float]:
        """(level, threshold) for a requested coverage level (None: the model's default).

        Levels match by value ("0.9", ".90" and 0.9 are one level); one the model
        does not export raises :class:`ModelOptionError` listing those it does.
        """
        wanted = self.default_level if level is None else level
        try:
            value = float(wanted)
        except (TypeError, ValueError):
            raise ModelOptionError(f"the prediction-set level must be a number, not {wanted!r}; this model exports {self.available()}") from None
        for key, threshold in self.levels.items():
            if math.isclose(float(key), value, rel_tol=0.0, abs_tol=1e-9):
                return float(key), float(threshold)
        raise ModelOptionError(f"this model has no prediction sets at level {wanted}; it exports the levels {self.available()}")


@dataclass(frozen=True)
class NoveltyCalibration:
    """The ``novelty_calibration`` metadata: calibration novelty scores (sorted ascending) and the default level."""

    scores: np.ndarray
    default_level: float


@dataclass(frozen=True)
class OptionalParts:
    """Which optional parts a model has (None: absent)."""

    anomalies: AnomalyHead | None = None
    conformal: ConformalCalibration | None = None
    novelty_calibration: NoveltyCalibration | None = None


def _json_entry(meta: Mapping[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except (json.JSONDecodeError, TypeError):
        raise ModelFormatError(f"the model's {key!r} metadata is not valid JSON") from None


def _json_object(meta: Mapping[str, str], key: str) -> dict:
    entry = _json_entry(meta, key)
    if not isinstance(entry, dict):
        raise ModelFormatError(f"the model's {key!r} metadata is not a JSON object")
    return entry


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ModelFormatError(f"the model's {what} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ModelFormatError(f"the model's {what} is not a number: {value!r}") from None
    if math.isnan(number):
        raise ModelFormatError(f"the model's {what} is not a number")
    return number


def _level(value: Any, what: str) -> float:
    level = _number(value, what)
    if not 0.0 < level < 1.0:
        raise ModelFormatError(f"the model's {what} must be between 0 and 1, not {value!r}")
    return level


def read_optional_parts(meta: Mapping[str, str], output_names: Iterable[str]) -> OptionalParts:
    """Validate the optional parts a model has (see the module docstring).

    ``output_names`` are the ONNX graph's output names. Raises
    :class:`ModelFormatError` saying what is wrong with a part that is present.
    """
    outputs = set(output_names)
    anomalies = None
    if ANOMALY_OUTPUT in outputs or ANOMALIES_KEY in meta:
        if ANOMALY_OUTPUT not in outputs:
            raise ModelFormatError(f"the model lists {ANOMALIES_KEY!r} in its metadata but has no {ANOMALY_OUTPUT!r} output")
        if ANOMALIES_KEY not in meta:
            raise ModelFormatError(f"the model has an {ANOMALY_OUTPUT!r} output but no {ANOMALIES_KEY!r} metadata naming them")
        names = _json_entry(meta, ANOMALIES_KEY)
        if not isinstance(names, list) or tuple(names) != ANOMALY_NAMES:
            raise ModelFormatError(f"the model's anomalies {names} differ from the taxonomy's classes 1-6 {list(ANOMALY_NAMES)}")
        threshold = _number(meta.get(ANOMALY_THRESHOLD_KEY, str(DEFAULT_ANOMALY_THRESHOLD)), ANOMALY_THRESHOLD_KEY)
        if not 0.0 <= threshold <= 1.0:
            raise ModelFormatError(f"the model's {ANOMALY_THRESHOLD_KEY} must be between 0 and 1, not {threshold}")
        anomalies = AnomalyHead(tuple(names), threshold)

    conformal = None
    if CONFORMAL_KEY in meta:
        entry = _json_object(meta, CONFORMAL_KEY)
        method = entry.get("method")
        if method not in CONFORMAL_METHODS:
            raise ModelFormatError(f"the model's prediction sets use the method {method!r}; this runtime computes {', '.join(CONFORMAL_METHODS)}")
        levels = entry.get("levels")
        if not isinstance(levels, dict) or not levels:
            raise ModelFormatError(f"the model's {CONFORMAL_KEY!r} metadata has no levels")
        checked: dict[str, float] = {}
        for key, threshold in levels.items():
            _level(key, f"prediction-set level {key!r}")
            t = _number(threshold, f"prediction-set threshold at level {key}")
            if t < 0:
                raise ModelFormatError(f"the model's prediction-set threshold at level {key} is negative ({t})")
            checked[str(key)] = t
        n_cal = entry.get("n_calibration")
        if isinstance(n_cal, bool) or not isinstance(n_cal, int) or n_cal < 1:
            raise ModelFormatError(f"the model's {CONFORMAL_KEY!r} n_calibration must be a positive whole number, not {n_cal!r}")
        default = entry.get("default_level", "0.9")
        calibration = ConformalCalibration(method, checked, n_cal, str(default))
        try:
            calibration.resolve(default)
        except ModelOptionError:
            raise ModelFormatError(f"the model's default prediction-set level {default!r} is not one of its levels {calibration.available()}") from None
        conformal = calibration

    novelty = None
    if NOVELTY_CALIBRATION_KEY in meta:
        entry = _json_object(meta, NOVELTY_CALIBRATION_KEY)
        scores = entry.get("scores")
        if not isinstance(scores, list) or not scores or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in scores):
            raise ModelFormatError(f"the model's {NOVELTY_CALIBRATION_KEY!r} scores must be a non-empty list of numbers")
        values = np.sort(np.asarray(scores, dtype=np.float64))
        if not np.isfinite(values).all():
            raise ModelFormatError(f"the model's {NOVELTY_CALIBRATION_KEY!r} scores must be finite numbers")
        novelty = NoveltyCalibration(values, _level(entry.get("default_level", 0.01), "novelty_calibration default_level"))
    return OptionalParts(anomalies, conformal, novelty)
