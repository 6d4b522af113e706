"""The per-curve classification result and its uncertainty summary.

From the S posterior samples of class probabilities, shape (S, 7), a result
keeps the posterior mean of each class probability, its standard deviation and
90 % interval (5th to 95th percentile over the samples), and the standard
information-theoretic split of uncertainty (natural logarithm, in nats):

- predictive entropy H[mean_s p_s] (total uncertainty),
- expected entropy mean_s H[p_s] (aleatoric: the data are ambiguous),
- mutual information = predictive - expected (epistemic: the samples disagree).

A result with ``status == "error"`` has no label and NaN probabilities; its
``message`` says why the curve was refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .taxonomy import CLASS_NAMES, CLEAN_INDEX

#: CSV columns, in order; ``p_<class>`` columns follow in taxonomy order.
CSV_COLUMNS: tuple[str, ...] = (
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

_NAN_CLASSES = np.full(len(CLASS_NAMES), np.nan)


def _entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats along the last axis; 0 log 0 = 0."""
    p = np.clip(p, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=-1)


@dataclass
class ClassificationResult:
    """The verdict on one curve, with its uncertainty.

    Probability arrays have shape (7,) in taxonomy order. ``coverage`` is the
    fraction of the model's log-q domain covered by the data; ``q_window`` the
    (min, max) q used, in 1/Å.
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
        file: str,
        dataset: str,
        coverage: float,
        q_window: tuple[float, float],
        n_points: int,
        model: str = "",
        notes: list[str] | None = None,
    ) -> "ClassificationResult":
        """Summarise posterior samples of shape (S, 7) for one curve."""
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 2 or samples.shape[1] != len(CLASS_NAMES):
            raise ValueError(f"expected samples of shape (S, {len(CLASS_NAMES)}), got {samples.shape}")
        mean = samples.mean(axis=0)
        predictive = float(_entropy(mean))
        expected = float(_entropy(samples).mean())
        score = float(novelty_score)
        novel = bool(score > novelty_threshold) if math.isfinite(score) else True
        index = int(np.argmax(mean))
        label = CLASS_NAMES[index]
        std = samples.std(axis=0)
        message = f"{label} (p = {mean[index]:.2f} ± {std[index]:.2f})"
        if novel:
            message += (
                f"; NOVEL: unlike the training data (novelty score {score:.3g} > threshold "
                f"{novelty_threshold:.3g}), do not trust the label"
            )
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
            probability_low=np.quantile(samples, 0.05, axis=0),
            probability_high=np.quantile(samples, 0.95, axis=0),
            predictive_entropy=predictive,
            expected_entropy=expected,
            mutual_information=max(predictive - expected, 0.0),
            novelty_score=score,
            novelty_threshold=float(novelty_threshold),
            is_novel=novel,
            coverage=float(coverage),
            q_window=(float(q_window[0]), float(q_window[1])),
            n_points=int(n_points),
            n_samples=int(samples.shape[0]),
            model=model,
            notes=all_notes,
        )

    @classmethod
    def error(cls, file: str, dataset: str, message: str, notes: list[str] | None = None, model: str = "") -> "ClassificationResult":
        """A refused curve: no label, NaN probabilities, ``message`` says why."""
        return cls(file=file, dataset=dataset, status="error", message=message, model=model, notes=list(notes or []))

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
        for name, p in zip(CLASS_NAMES, self.probabilities):
            row[f"p_{name}"] = float(p)
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
        out.update(
            {
                "expected_entropy": clean(self.expected_entropy),
                "novelty_threshold": clean(self.novelty_threshold),
                "probability_std": {n: clean(float(v)) for n, v in zip(CLASS_NAMES, self.probability_std)},
                "probability_interval_90": {
                    n: [clean(float(lo)), clean(float(hi))]
                    for n, lo, hi in zip(CLASS_NAMES, self.probability_low, self.probability_high)
                },
                "coverage": clean(self.coverage),
                "q_window_inverse_angstrom": [clean(v) for v in self.q_window],
                "n_points": self.n_points,
                "n_samples": self.n_samples,
                "model": self.model,
                "notes": list(self.notes),
            }
        )
        return out
