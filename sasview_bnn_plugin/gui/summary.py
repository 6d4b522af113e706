"""Plain-language wording of a result, shared by the perspective, its report and the batch grid (no Qt)."""

from __future__ import annotations

import math

import numpy as np

from ..core.result import ClassificationResult, level_text
from ..core.taxonomy import ANOMALY_NAMES

NOVEL_SENTENCE = "novel: this curve is unlike anything the model was trained on"

#: Below this fraction of the model's log-q domain, the summary warns that little of the curve was seen.
LOW_COVERAGE = 0.25


def percent(value: float) -> str:
    """0.973 -> "97 %"; NaN -> "–"."""
    return "–" if not math.isfinite(value) else f"{100.0 * value:.0f} %"


def label_with_confidence(result: ClassificationResult) -> str:
    """ "aggregation, 97 % ± 2 %" (posterior mean ± posterior standard deviation of the chosen class)."""
    if not result.ok or result.label is None:
        return "not classified"
    index = int(np.argmax(result.probabilities))
    return f"{result.label}, {percent(result.confidence)} ± {percent(float(result.probability_std[index]))}"


def anomalies_present_text(result: ClassificationResult) -> str:
    """ "aggregation 93 %, artefact 71 %" (most probable first), "none", or "–" when the model does not say."""
    if not result.ok or result.anomalies_present is None:
        return "–"
    if not result.anomalies_present:
        return "none"
    return ", ".join(f"{name} {percent(float(result.presence_probabilities[ANOMALY_NAMES.index(name)]))}" for name in result.anomalies_present)


def plausible_text(result: ClassificationResult) -> str:
    """The conformal prediction set, "interparticle or artefact" (most probable first); "–" when the model has none."""
    if not result.ok or result.prediction_set is None:
        return "–"
    return " or ".join(result.prediction_set)


def plain_language(result: ClassificationResult) -> str:
    """One or two sentences a scientist reads at a glance."""
    if not result.ok:
        return f"not classified: {result.message}"
    parts = [label_with_confidence(result)]
    if result.is_novel:
        parts.append(NOVEL_SENTENCE)
    if result.anomalies_present:
        parts.append(f"anomalies present: {anomalies_present_text(result)}")
    if result.prediction_set is not None:
        parts.append(f"plausible at {level_text(result.set_level)}: {plausible_text(result)}")
    if math.isfinite(result.coverage) and result.coverage < LOW_COVERAGE:
        parts.append(f"the data cover only {percent(result.coverage)} of the model's q-range")
    return "; ".join(parts)


def grid_cell(result: ClassificationResult) -> str:
    """Text of the batch grid's "BNN anomaly" cell: label, confidence, other anomalies present (if the model says) and novelty."""
    if not result.ok:
        return f"not classified: {result.message}"
    text = f"{result.label} {percent(result.confidence)}"
    others = [name for name in result.anomalies_present or () if name != result.label]
    if others:
        text += " + " + ", ".join(others)
    return text + (" NOVEL" if result.is_novel else "")
