"""The per-curve classification result and its uncertainty summary.

From the S posterior samples of class probabilities, shape (S, 7), a result
keeps the posterior mean of each class probability, its standard deviation and
90 % interval (5th to 95th percentile over the samples), and the standard
information-theoretic split of uncertainty (natural logarithm, in nats):

- predictive entropy H[mean_s p_s] (total uncertainty),
- expected entropy mean_s H[p_s] (aleatoric: the data are ambiguous),
- mutual information = predictive - expected (epistemic: the samples disagree).

Models with the optional outputs of :mod:`sasview_bnn_plugin.core.model_format`
add, for the same curve:

- the posterior mean, standard deviation and 90 % interval of the probability
  that each anomaly (classes 1-6) is *present*, and the anomalies present
  (mean >= the model's ``anomaly_threshold``), most probable first;
- a conformal prediction set: the classes that stay plausible at a chosen
  coverage level (e.g. 90 %), most probable first;
- the novelty p-value, which then decides ``is_novel`` (p < level).

Without them these fields are NaN/None and their CSV cells empty.

A result with ``status == "error"`` has no label and NaN probabilities; its
``message`` says why the curve was refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .conformal import aps_sets, novelty_p_values
from .flatness import FLATNESS_LEVEL, is_featureless
from .curve import Failure
from .model_format import DEFAULT_ANOMALY_THRESHOLD
from .taxonomy import ANOMALY_NAMES, CLASS_NAMES, CLEAN_INDEX

#: The CSV columns written before the optional model outputs existed, in order (``p_<class>`` in
#: taxonomy order); files with exactly these columns can still be resumed.
CSV_COLUMNS_V1: tuple[str, ...] = (
    "file",
    "dataset",
    "label",
    "confidence",
    "anomaly_probability",
    "entropy",
    "mutual_information",
    "novelty_score",
    "is_novel",
    "status",
    "message",
) + tuple(f"p_{name}" for name in CLASS_NAMES)

#: Columns of the optional model outputs, appended after :data:`CSV_COLUMNS_V1` (empty cells for a
#: model without them); ``p_present_<anomaly>`` in taxonomy order.
CSV_COLUMNS_OPTIONAL: tuple[str, ...] = (
    "anomalies_present",
    "prediction_set",
    "set_level",
    "novelty_p_value",
) + tuple(f"p_present_{name}" for name in ANOMALY_NAMES)

#: The q unit the curve was read in ("1/A" or "1/nm"; see :mod:`sasview_bnn_plugin.core.q_units`), appended last.
CSV_COLUMNS_UNITS: tuple[str, ...] = ("q_unit_used",)

#: CSV columns, in order.
CSV_COLUMNS: tuple[str, ...] = CSV_COLUMNS_V1 + CSV_COLUMNS_OPTIONAL + CSV_COLUMNS_UNITS

#: Appended after :data:`CSV_COLUMNS` only when asked for (``classify --explain``): the q-range that drove the
#: verdict, "q_lo;q_hi" in the unit of ``q_unit_used`` (see :mod:`sasview_bnn_plugin.model.explain`).
CSV_COLUMNS_EXPLAIN: tuple[str, ...] = ("strongest_q_range",)

#: Joins class names in a CSV cell ("aggregation;artefact"); human displays use ", " and " or ".
CSV_LIST_SEPARATOR = ";"

#: The columns of the class probabilities and of the presence probabilities, in taxonomy order.
_P_COLUMNS = tuple(f"p_{name}" for name in CLASS_NAMES)
_P_PRESENT_COLUMNS = tuple(f"p_present_{name}" for name in ANOMALY_NAMES)

_NAN_CLASSES = np.full(len(CLASS_NAMES), np.nan)
_NAN_ANOMALIES = np.full(len(ANOMALY_NAMES), np.nan)


def level_text(level: float) -> str:
    """0.9 -> "90 %", 0.975 -> "97.5 %" (a coverage level for people)."""
    return f"{100.0 * level:.4g} %"


def entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats along the last axis; 0 log 0 = 0 (the one entropy of the project: results, trainer metrics)."""
    p = np.clip(p, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=-1)


@dataclass
class ClassificationResult:
    """The verdict on one curve, with its uncertainty.

    Probability arrays have shape (7,) in taxonomy order. ``coverage`` is the
    fraction of the model's log-q domain covered by the data; ``q_window`` the
    (min, max) q used, in 1/Å. Presence arrays have shape (6,), in
    :data:`~sasview_bnn_plugin.core.taxonomy.ANOMALY_NAMES` order.
    """

    file: str
    dataset: str
    status: str
    message: str
    label: str | None = None
    probabilities: np.ndarray = field(default_factory=lambda: _NAN_CLASSES.copy())
    probability_std: np.ndarray = field(default_factory=lambda: _NAN_CLASSES.copy())
    probability_low: np.ndarray = field(default_factory=lambda: _NAN_CLASSES.copy())
    probability_high: np.ndarray = field(default_factory=lambda: _NAN_CLASSES.copy())
    predictive_entropy: float = math.nan
    expected_entropy: float = math.nan
    mutual_information: float = math.nan
    novelty_score: float = math.nan
    novelty_threshold: float = math.nan
    is_novel: bool | None = None
    coverage: float = math.nan
    q_window: tuple[float, float] = (math.nan, math.nan)
    n_points: int = 0
    n_samples: int = 0
    model: str = ""
    notes: list[str] = field(default_factory=list)
    #: Optional outputs (NaN / None when the model lacks them); see the module docstring.
    presence_probabilities: np.ndarray = field(default_factory=lambda: _NAN_ANOMALIES.copy())
    presence_std: np.ndarray = field(default_factory=lambda: _NAN_ANOMALIES.copy())
    presence_low: np.ndarray = field(default_factory=lambda: _NAN_ANOMALIES.copy())
    presence_high: np.ndarray = field(default_factory=lambda: _NAN_ANOMALIES.copy())
    anomaly_threshold: float = math.nan
    anomalies_present: tuple[str, ...] | None = None
    prediction_set: tuple[str, ...] | None = None
    set_level: float = math.nan
    novelty_p_value: float = math.nan
    #: The p-value level that decided ``is_novel`` (NaN: the novelty-threshold rule decided).
    novelty_level: float = math.nan
    #: p-value of "flat within the error bars" (:mod:`sasview_bnn_plugin.core.flatness`; NaN: no error bars,
    #: no test); at or above :data:`~sasview_bnn_plugin.core.flatness.FLATNESS_LEVEL` the curve is novel.
    flatness_p_value: float = math.nan
    #: The unit q was read in ("1/A", "1/nm"; "" when no curve was read), where it came from ("file",
    #: "user", "assumed": decided by the runtime, see :mod:`sasview_bnn_plugin.core.q_units`) and whether
    #: that decision is uncertain (the note in ``message`` says why).
    q_unit_used: str = ""
    q_unit_source: str = ""
    q_unit_uncertain: bool = False
    #: What the file says about the measurement (``Curve.metadata``: temperature, time, run, ...); not written
    #: to CSV or JSON, used for trends (:mod:`sasview_bnn_plugin.core.trend`).
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Where in q the verdict came from (a :class:`sasview_bnn_plugin.model.explain.Sensitivity`), only when asked
    #: for (``classify --explain``); None otherwise.
    sensitivity: Any = None

    @property
    def ok(self) -> bool:
        """True when the curve was classified."""
        return self.status == "ok"

    @property
    def confidence(self) -> float:
        """Posterior-mean probability of the chosen label (NaN for an error)."""
        return float(np.max(self.probabilities)) if self.ok else math.nan

    @property
    def anomaly_probability(self) -> float:
        """1 - p(clean): the probability that the curve shows any anomaly."""
        return float(1.0 - self.probabilities[CLEAN_INDEX]) if self.ok else math.nan

    @classmethod
    def from_samples(
        cls,
        samples: np.ndarray,
        novelty_score: float,
        novelty_threshold: float,
        *,
        anomaly_samples: np.ndarray | None = None,
        **keywords: Any,
    ) -> "ClassificationResult":
        """Summarise posterior samples of shape (S, 7) for one curve.

        ``keywords``: those of :func:`summarise_samples` (the optional outputs below) and those of
        :meth:`from_summary` saying which curve it is (``file``, ``dataset``, ``coverage``, ``q_window``,
        ``n_points``, ``model``, ``notes``, ``flatness_p``).
        Optional outputs: ``anomaly_samples`` (S, 6), presence probabilities per
        posterior sample, with ``anomaly_threshold``; ``set_threshold`` and
        ``set_level``, the APS threshold of a coverage level; ``novelty_calibration``,
        the sorted calibration novelty scores (gives the p-value) and
        ``novelty_level``: when given, ``is_novel`` is p < level instead of
        score > ``novelty_threshold``. ``flatness_p``: the curve's flatness p-value
        (:func:`~sasview_bnn_plugin.core.flatness.flatness_p_value` of the raw I and dI);
        a featureless curve is novel whatever the network says.

        The summary of a batch of one (:func:`summarise_samples`, then :meth:`from_summary`): the
        same numbers as a row of a batch.
        """
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 2 or samples.shape[1] != len(CLASS_NAMES):
            raise ValueError(f"expected samples of shape (S, {len(CLASS_NAMES)}), got {samples.shape}")
        presence = None
        if anomaly_samples is not None:
            presence = np.asarray(anomaly_samples, dtype=np.float64)
            if presence.ndim != 2 or presence.shape[1] != len(ANOMALY_NAMES):
                raise ValueError(f"expected anomaly samples of shape (S, {len(ANOMALY_NAMES)}), got {presence.shape}")
            presence = presence[None]
        options = {key: keywords.pop(key) for key in _SUMMARY_OPTIONS if key in keywords}
        summary = summarise_samples(samples[None], np.array([float(novelty_score)]), novelty_threshold, anomaly_samples=presence, **options)
        return cls.from_summary(summary, 0, **keywords)

    @classmethod
    def from_summary(
        cls,
        summary: "SampleSummary",
        k: int,
        *,
        file: str,
        dataset: str,
        coverage: float,
        q_window: tuple[float, float],
        n_points: int,
        model: str = "",
        notes: list[str] | None = None,
        flatness_p: float | None = None,
    ) -> "ClassificationResult":
        """The result of curve ``k`` of a batch summarised by :func:`summarise_samples` (the numbers are the
        summary's row ``k``; here only what is said about them: the label, the message, the lists of names).
        ``flatness_p`` as in :meth:`from_samples`."""
        mean, std = summary.mean[k], summary.std[k]
        score = float(summary.score[k])
        p_value = float(summary.p_value[k])
        featureless = is_featureless(flatness_p)
        novel = bool(summary.model_novel[k]) or featureless
        index = int(summary.index[k])
        label = CLASS_NAMES[index]
        message = f"{label} (p = {mean[index]:.2f} ± {std[index]:.2f})"
        if featureless:
            message += (
                f"; NO SIGNAL: the curve is flat within its error bars (flatness p-value {flatness_p:.3g} >= "
                f"{FLATNESS_LEVEL:g}): a blank, an empty cell or a background rather than a scattering curve; "
                "do not trust the label"
            )
        elif novel and summary.novelty_level is not None:
            message += (
                f"; NOVEL: unlike the training data (novelty p-value {p_value:.3g} < level "
                f"{summary.novelty_level:g}), do not trust the label"
            )
        elif novel:
            message += (
                f"; NOVEL: unlike the training data (novelty score {score:.3g} > threshold "
                f"{summary.novelty_threshold:.3g}), do not trust the label"
            )
        optional: dict[str, Any] = {}
        if summary.presence_mean is not None:
            p_present = summary.presence_mean[k]
            threshold = summary.anomaly_threshold
            present = p_present.tolist()  # the same numbers, as Python floats (cheaper to compare and format one by one)
            ranked = [j for j in summary.presence_order[k].tolist() if present[j] >= threshold]
            optional.update(
                presence_probabilities=p_present,
                presence_std=summary.presence_std[k],
                presence_low=summary.presence_low[k],
                presence_high=summary.presence_high[k],
                anomaly_threshold=float(threshold),
                anomalies_present=tuple(ANOMALY_NAMES[j] for j in ranked),
            )
            listed = ", ".join(f"{ANOMALY_NAMES[j]} ({present[j]:.2f})" for j in ranked)
            message += f"; anomalies present: {listed or 'none'}"
        if summary.in_set is not None:
            in_set = summary.in_set[k].tolist()
            plausible = tuple(CLASS_NAMES[j] for j in summary.class_order[k].tolist() if in_set[j])
            optional.update(prediction_set=plausible, set_level=float(summary.set_level))
            message += f"; plausible at {level_text(summary.set_level)}: {' or '.join(plausible)}"
        if summary.has_p_values:
            optional["novelty_p_value"] = p_value
        if summary.novelty_level is not None:
            optional["novelty_level"] = float(summary.novelty_level)
        if flatness_p is not None:
            optional["flatness_p_value"] = float(flatness_p)
        all_notes = list(notes or [])
        if all_notes:
            message += "; " + "; ".join(all_notes)
        return cls(
            file=file,
            dataset=dataset,
            status="ok",
            message=message,
            label=label,
            probabilities=mean,
            probability_std=std,
            probability_low=summary.low[k],
            probability_high=summary.high[k],
            predictive_entropy=float(summary.predictive[k]),
            expected_entropy=float(summary.expected[k]),
            mutual_information=float(summary.mutual_information[k]),
            novelty_score=score,
            novelty_threshold=float(summary.novelty_threshold),
            is_novel=novel,
            coverage=float(coverage),
            q_window=(float(q_window[0]), float(q_window[1])),
            n_points=int(n_points),
            n_samples=summary.n_samples,
            model=model,
            notes=all_notes,
            **optional,
        )

    @classmethod
    def error(cls, file: str, dataset: str, message: "str | Failure", notes: list[str] | None = None, model: str = "") -> "ClassificationResult":
        """A refused curve: no label, NaN probabilities, ``message`` (a :class:`~sasview_bnn_plugin.core.curve.Failure`
        or its text) says why."""
        return cls(file=file, dataset=dataset, status="error", message=str(message), model=model, notes=list(notes or []))

    @property
    def failure(self) -> "Failure | None":
        """Why the curve was not classified (a :class:`~sasview_bnn_plugin.core.curve.Failure`), None when it was."""
        return None if self.ok else Failure(self.message)

    def to_row(self) -> dict[str, Any]:
        """One CSV row: keys are :data:`CSV_COLUMNS`, in that order."""
        row: dict[str, Any] = {
            "file": self.file,
            "dataset": self.dataset,
            "label": self.label or "",
            "confidence": self.confidence,
            "anomaly_probability": self.anomaly_probability,
            "entropy": self.predictive_entropy,
            "mutual_information": self.mutual_information,
            "novelty_score": self.novelty_score,
            "is_novel": "" if self.is_novel is None else self.is_novel,
            "status": self.status,
            "message": self.message,
        }
        row.update(zip(_P_COLUMNS, np.asarray(self.probabilities, dtype=np.float64).tolist()))
        row["anomalies_present"] = "" if self.anomalies_present is None else CSV_LIST_SEPARATOR.join(self.anomalies_present)
        row["prediction_set"] = "" if self.prediction_set is None else CSV_LIST_SEPARATOR.join(self.prediction_set)
        row["set_level"] = float(self.set_level)
        row["novelty_p_value"] = float(self.novelty_p_value)
        row.update(zip(_P_PRESENT_COLUMNS, np.asarray(self.presence_probabilities, dtype=np.float64).tolist()))
        row["q_unit_used"] = self.q_unit_used
        if self.sensitivity is not None:  # only then: the column exists only with --explain
            row["strongest_q_range"] = CSV_LIST_SEPARATOR.join(f"{v:.6g}" for v in self.sensitivity.explain_q_range)
        return row

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (NaN becomes None): the CSV fields plus spreads and context."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value

        out = {k: clean(v) for k, v in self.to_row().items()}
        out["is_novel"] = self.is_novel
        out["label"] = self.label
        out["anomalies_present"] = None if self.anomalies_present is None else list(self.anomalies_present)
        out["prediction_set"] = None if self.prediction_set is None else list(self.prediction_set)
        out.update(
            {
                "expected_entropy": clean(self.expected_entropy),
                "novelty_threshold": clean(self.novelty_threshold),
                "probability_std": {n: clean(float(v)) for n, v in zip(CLASS_NAMES, self.probability_std)},
                "probability_interval_90": {
                    n: [clean(float(lo)), clean(float(hi))]
                    for n, lo, hi in zip(CLASS_NAMES, self.probability_low, self.probability_high)
                },
                "presence_std": {n: clean(float(v)) for n, v in zip(ANOMALY_NAMES, self.presence_std)},
                "presence_interval_90": {
                    n: [clean(float(lo)), clean(float(hi))]
                    for n, lo, hi in zip(ANOMALY_NAMES, self.presence_low, self.presence_high)
                },
                "anomaly_threshold": clean(self.anomaly_threshold),
                "novelty_level": clean(self.novelty_level),
                "flatness_p_value": clean(self.flatness_p_value),
                "coverage": clean(self.coverage),
                "q_window_inverse_angstrom": [clean(v) for v in self.q_window],
                "n_points": self.n_points,
                "n_samples": self.n_samples,
                "model": self.model,
                "notes": list(self.notes),
                "q_unit_source": self.q_unit_source,
                "q_unit_uncertain": self.q_unit_uncertain,
            }
        )
        if self.sensitivity is not None:
            out["strongest_q_range"] = [clean(float(v)) for v in self.sensitivity.explain_q_range]
            out["sensitivity"] = self.sensitivity.to_dict()
        return out


@dataclass(frozen=True)
class SampleSummary:
    """The numbers of the results of n curves, computed with numpy over the whole batch (:func:`summarise_samples`).

    Per curve (first axis n): class probabilities ``mean``, ``std``, ``low``/``high`` (5th/95th percentile)
    (n, 7); ``predictive``, ``expected`` entropy and ``mutual_information`` (n,); novelty ``score``,
    ``p_value`` (NaN without calibration scores) and ``model_novel`` (the novelty rule alone, before the
    flatness test) (n,); ``index``, the most probable class (n,); ``class_order``, classes by descending
    probability (n, 7). With anomaly samples: ``presence_mean``/``std``/``low``/``high`` and
    ``presence_order`` (n, 6); with a set threshold: ``in_set`` (n, 7), else None. And the settings they
    were computed with.
    """

    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray
    predictive: np.ndarray
    expected: np.ndarray
    mutual_information: np.ndarray
    score: np.ndarray
    p_value: np.ndarray
    model_novel: np.ndarray
    index: np.ndarray
    class_order: np.ndarray
    n_samples: int
    novelty_threshold: float
    novelty_level: float | None
    has_p_values: bool
    presence_mean: np.ndarray | None = None
    presence_std: np.ndarray | None = None
    presence_low: np.ndarray | None = None
    presence_high: np.ndarray | None = None
    presence_order: np.ndarray | None = None
    anomaly_threshold: float = math.nan
    in_set: np.ndarray | None = None
    set_level: float = math.nan


#: The keywords of :func:`summarise_samples` that :meth:`ClassificationResult.from_samples` passes on.
_SUMMARY_OPTIONS = ("anomaly_threshold", "set_threshold", "set_level", "novelty_calibration", "novelty_level")


class SampleVerdicts(NamedTuple):
    """What the model says of n curves before their results are summarised (:func:`sample_verdicts`): the most
    probable class ``index``, the novelty ``score`` and ``model_novel`` (the novelty rule alone), each (n,); the
    same numbers as those fields of :class:`SampleSummary`."""

    index: np.ndarray
    score: np.ndarray
    model_novel: np.ndarray


def sample_verdicts(
    samples: np.ndarray,
    novelty_scores: np.ndarray,
    novelty_threshold: float,
    *,
    novelty_calibration: np.ndarray | None = None,
    novelty_level: float | None = None,
    **unused: Any,
) -> SampleVerdicts:
    """The verdicts of n curves' posterior samples (n, S, 7) and novelty scores (n,), as :func:`summarise_samples`
    gives them, without the rest of the summary (the arguments as there; the others are ignored). For choosing
    between two readings of a curve before summarising the one kept."""
    samples = np.asarray(samples, dtype=np.float64)
    scores = np.asarray(novelty_scores, dtype=np.float64).reshape(-1)
    with np.errstate(invalid="ignore"):
        _, model_novel = _novelty_rule(scores, novelty_threshold, novelty_calibration, novelty_level)
        return SampleVerdicts(np.argmax(samples.mean(axis=1), axis=1), scores, model_novel)


def _novelty_rule(scores: np.ndarray, novelty_threshold: float, novelty_calibration: np.ndarray | None,
                  novelty_level: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The novelty p-values (NaN without calibration scores) and whether each curve is novel by the model's rule
    (p < level with a level, else score > threshold; a non-finite score is novel), each (n,)."""
    p_value = np.full(scores.shape, math.nan)
    if novelty_calibration is not None:
        p_value = novelty_p_values(scores, novelty_calibration, assume_sorted=True)
    finite = np.isfinite(scores)
    if novelty_level is not None:
        return p_value, ~finite | (p_value < novelty_level)
    return p_value, ~finite | (scores > novelty_threshold)


def summarise_samples(
    samples: np.ndarray,
    novelty_scores: np.ndarray,
    novelty_threshold: float,
    *,
    anomaly_samples: np.ndarray | None = None,
    anomaly_threshold: float = DEFAULT_ANOMALY_THRESHOLD,
    set_threshold: float | None = None,
    set_level: float | None = None,
    novelty_calibration: np.ndarray | None = None,
    novelty_level: float | None = None,
) -> SampleSummary:
    """The summaries of n curves' posterior samples, shape (n, S, 7), and novelty scores (n,), in one numpy
    pass over the batch; the arguments as in :meth:`ClassificationResult.from_samples` (``anomaly_samples``
    (n, S, 6)). Every number is the one a batch of one gives (the reductions run along the same axes in the
    same order). Rows of NaN (curves the model failed on) give NaN rows and raise nothing."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[2] != len(CLASS_NAMES):
        raise ValueError(f"expected samples of shape (n, S, {len(CLASS_NAMES)}), got {samples.shape}")
    scores = np.asarray(novelty_scores, dtype=np.float64).reshape(-1)
    if scores.shape != samples.shape[:1]:
        raise ValueError(f"expected {samples.shape[0]} novelty score(s), got {scores.size}")
    if novelty_level is not None and novelty_calibration is None:
        raise ValueError("novelty_level needs novelty_calibration scores")
    if set_threshold is not None and set_level is None:
        raise ValueError("set_threshold needs its set_level")
    with np.errstate(invalid="ignore"):
        mean = samples.mean(axis=1)
        predictive = entropy(mean)
        expected = entropy(samples).mean(axis=1)
        difference = predictive - expected
        p_value, model_novel = _novelty_rule(scores, novelty_threshold, novelty_calibration, novelty_level)
        optional: dict[str, Any] = {}
        if anomaly_samples is not None:
            presence = np.asarray(anomaly_samples, dtype=np.float64)
            if presence.ndim != 3 or presence.shape[0] != samples.shape[0] or presence.shape[2] != len(ANOMALY_NAMES):
                raise ValueError(f"expected anomaly samples of shape (n, S, {len(ANOMALY_NAMES)}), got {presence.shape}")
            p_present = presence.mean(axis=1)
            optional.update(
                presence_mean=p_present,
                presence_std=presence.std(axis=1),
                presence_low=np.quantile(presence, 0.05, axis=1),
                presence_high=np.quantile(presence, 0.95, axis=1),
                presence_order=np.argsort(-p_present, axis=1, kind="stable"),
                anomaly_threshold=float(anomaly_threshold),
            )
        if set_threshold is not None:
            optional.update(in_set=aps_sets(mean, set_threshold), set_level=float(set_level))
        return SampleSummary(
            mean=mean,
            std=samples.std(axis=1),
            low=np.quantile(samples, 0.05, axis=1),
            high=np.quantile(samples, 0.95, axis=1),
            predictive=predictive,
            expected=expected,
            mutual_information=np.where(0.0 > difference, 0.0, difference),  # max(difference, 0.0), NaN kept
            score=scores,
            p_value=p_value,
            model_novel=model_novel,
            index=np.argmax(mean, axis=1),
            class_order=np.argsort(-mean, axis=1, kind="stable"),
            n_samples=int(samples.shape[1]),
            novelty_threshold=float(novelty_threshold),
            novelty_level=None if novelty_level is None else float(novelty_level),
            has_p_values=novelty_calibration is not None,
            **optional,
        )
