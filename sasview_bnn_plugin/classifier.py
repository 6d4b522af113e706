"""Bayesian classification of 1D curves with an ONNX posterior-sample model.

:class:`BNNClassifier` opens the model once, checks its metadata against this
runtime, maps curves through the shared preprocessing
(:func:`sasview_bnn_plugin.preprocessing.prepare_curve`) and runs them in
float32 batches of shape (batch, 4, 256). A refused curve becomes an error
result; the rest of the batch is classified as usual.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from .curve import Curve
from .model_catalog import ModelNotFoundError
from .model_format import INPUT_NAME, NOVELTY_OUTPUT, PROBABILITIES_OUTPUT, ModelFormatError, check_metadata
from .preprocessing import CurveError, ModelInput, prepare_curve
from .providers import PROVIDER_CHOICES, ProviderDecision, open_session
from .result import ClassificationResult
from .taxonomy import N_CLASSES

if TYPE_CHECKING:
    from .plugin_host import PluginHost

log = logging.getLogger(__name__)

#: Largest q (1/Å) of a plausible SAS curve; beyond it a curve without a unit is suspected to be in 1/nm.
class BNNClassifier:
    """Classifies curves with an ONNX model of S posterior samples.

    Parameters
    ----------
    model_path:
        ONNX file following :mod:`sasview_bnn_plugin.model_format`.
    provider:
        "auto", "cpu" or "cuda" (see :mod:`sasview_bnn_plugin.providers`).
    intra_op_threads:
        onnxruntime intra-op threads; None lets onnxruntime choose.
    novelty_threshold:
        Overrides the model's ``novelty_threshold`` metadata.
    batch_size:
        Curves per onnxruntime call.
    plugin_host:
        If given, its raw-curve steps run before preprocessing and every
        result is published to its sinks.
    name:
        Model name shown in results; the file stem by default.

    Raises
    ------
    ModelNotFoundError
        The file does not exist.
    ModelFormatError
        The file is damaged, not ONNX, or its metadata or inputs/outputs do
        not match this runtime. Raised before any curve is classified.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        provider: str = "auto",
        intra_op_threads: int | None = None,
        novelty_threshold: float | None = None,
        batch_size: int = 256,
        plugin_host: "PluginHost | None" = None,
        name: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if provider.lower() not in PROVIDER_CHOICES:
            raise ValueError(f"provider must be one of {', '.join(PROVIDER_CHOICES)}, not {provider!r}")
        if intra_op_threads is not None and intra_op_threads < 0:
            raise ValueError("intra_op_threads must be positive")
        self.model_path = Path(model_path)
        self.name = name or self.model_path.stem
        if not self.model_path.is_file():
            raise ModelNotFoundError(f"the model file {self.model_path} does not exist")
        try:
            # The one and only session of this classifier; the metadata are read from it.
            self._session, self.provider_decision = open_session(self.model_path, provider, intra_op_threads)
        except Exception:
            raise ModelFormatError(f"the model file {self.model_path} is damaged or not an ONNX model") from None
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        self.config = check_metadata(self.metadata)
        try:
            self.n_samples = int(self.metadata["n_samples"])
            model_threshold = float(self.metadata["novelty_threshold"])
        except ValueError:
            raise ModelFormatError(f"the model file {self.model_path} has a non-numeric n_samples or novelty_threshold") from None
        self.novelty_threshold = float(novelty_threshold) if novelty_threshold is not None else model_threshold
        self.batch_size = int(batch_size)
        self.plugin_host = plugin_host
        self._check_signature()

    @property
    def providers(self) -> ProviderDecision:
        """The execution providers in use and why."""
        return self.provider_decision

    def _check_signature(self) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        problems = []
        if INPUT_NAME not in inputs:
            problems.append(f"no input named {INPUT_NAME!r}")
        else:
            shape = inputs[INPUT_NAME].shape
            expected = self.config.input_shape
            if len(shape) != 3 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected)):
                problems.append(f"input {INPUT_NAME!r} has shape {shape}, expected (batch, {expected[0]}, {expected[1]})")
            if inputs[INPUT_NAME].type != "tensor(float)":
                problems.append(f"input {INPUT_NAME!r} is {inputs[INPUT_NAME].type}, expected float32")
        for name in (PROBABILITIES_OUTPUT, NOVELTY_OUTPUT):
            if name not in outputs:
                problems.append(f"no output named {name!r}")
        if problems:
            raise ModelFormatError(f"the model file {self.model_path} does not follow the sasview-bnn format: " + "; ".join(problems))

    # -- inference -------------------------------------------------------------------------

    def predict_features(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model on preprocessed inputs.

        ``features`` has shape (batch, 4, 256) (see ``config.input_shape``).
        Returns probabilities of shape (batch, S, 7) and novelty scores of
        shape (batch,).
        """
        batch = np.ascontiguousarray(features, dtype=np.float32)
        if batch.ndim != 3 or batch.shape[1:] != self.config.input_shape:
            raise ValueError(f"features must have shape (batch, {self.config.input_shape[0]}, {self.config.input_shape[1]}), got {batch.shape}")
        probs_out, novelty_out = [], []
        for start in range(0, batch.shape[0], self.batch_size):
            chunk = batch[start : start + self.batch_size]
            probs, novelty = self._session.run([PROBABILITIES_OUTPUT, NOVELTY_OUTPUT], {INPUT_NAME: chunk})
            probs_out.append(np.asarray(probs))
            novelty_out.append(np.asarray(novelty).reshape(-1))
        if not probs_out:
            return np.zeros((0, self.n_samples, N_CLASSES), np.float32), np.zeros(0, np.float32)
        probs = np.concatenate(probs_out)
        if probs.ndim != 3 or probs.shape[2] != N_CLASSES:
            raise ModelFormatError(f"the model returned probabilities of shape {probs.shape}, expected (batch, S, {N_CLASSES})")
        return probs, np.concatenate(novelty_out)

    def classify(self, curves: Iterable[Any]) -> list[ClassificationResult]:
        """Classify many curves; one result per curve, in order.

        Each item is a :class:`~sasview_bnn_plugin.curve.Curve`, a sasdata
        ``Data1D``, or a tuple (q, I[, dI[, dq[, q_unit]]]) with q in q_unit
        (1/Å if None). A refused curve gets an error result; the others are
        unaffected.
        """
        prepared: list[tuple[Curve, ModelInput | str]] = []
        for index, item in enumerate(curves):
            curve = self._as_curve(item, index)
            if self.plugin_host is not None:
                curve = self.plugin_host.prepare_raw_curve(curve)
            prepared.append((curve, self._prepare(curve)))
        accepted = [mi.features for _, mi in prepared if isinstance(mi, ModelInput)]
        if accepted:
            probs, novelty = self.predict_features(np.stack(accepted))
        results: list[ClassificationResult] = []
        k = 0
        for curve, outcome in prepared:
            if isinstance(outcome, ModelInput):
                result = ClassificationResult.from_samples(
                    probs[k],
                    float(novelty[k]),
                    self.novelty_threshold,
                    file=curve.source,
                    dataset=curve.dataset,
                    coverage=outcome.coverage,
                    q_window=outcome.q_window,
                    n_points=outcome.n_points,
                    model=self.name,
                    notes=curve.notes + outcome.notes,
                )
                k += 1
            else:
                result = ClassificationResult.error(curve.source, curve.dataset, outcome, curve.notes, model=self.name)
            if self.plugin_host is not None:
                self.plugin_host.publish_result(result)
            results.append(result)
        return results

    def classify_curve(
        self,
        q: Sequence[float] | np.ndarray,
        intensity: Sequence[float] | np.ndarray,
        d_intensity: Sequence[float] | np.ndarray | None = None,
        dq: Sequence[float] | np.ndarray | None = None,
        q_unit: str | None = None,
        source: str = "",
        dataset: str = "",
    ) -> ClassificationResult:
        """Classify one curve given as arrays of shape (points,), q in ``q_unit`` (1/Å if None)."""
        curve = Curve(
            q=np.asarray(q, dtype=np.float64),
            intensity=np.asarray(intensity, dtype=np.float64),
            d_intensity=None if d_intensity is None else np.asarray(d_intensity, dtype=np.float64),
            dq=None if dq is None else np.asarray(dq, dtype=np.float64),
            q_unit=q_unit,
            source=source,
            dataset=dataset,
        )
        return self.classify([curve])[0]

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _as_curve(item: Any, index: int) -> Curve:
        if isinstance(item, Curve):
            return item
        if hasattr(item, "x") and hasattr(item, "y"):
            return Curve.from_data1d(item)
        if isinstance(item, (tuple, list)) and 2 <= len(item) <= 5:
            q, i, di, dq, unit = (list(item) + [None, None, None])[:5]
            try:
                return Curve(
                    q=np.asarray(q, dtype=np.float64),
                    intensity=np.asarray(i, dtype=np.float64),
                    d_intensity=None if di is None else np.asarray(di, dtype=np.float64),
                    dq=None if dq is None else np.asarray(dq, dtype=np.float64),
                    q_unit=unit,
                    dataset=f"curve {index}",
                )
            except (TypeError, ValueError):
                return Curve.failed("", f"curve {index}", "q, I and dI must be numbers")
        return Curve.failed("", f"curve {index}", f"cannot classify a {type(item).__name__}: pass a Curve, a Data1D or (q, I, dI, dq, q_unit)")

    def _prepare(self, curve: Curve) -> ModelInput | str:
        """The model input of a curve, or the message saying why it is refused."""
        if curve.error is not None:
            return curve.error
        try:
            model_input = prepare_curve(curve.q, curve.intensity, curve.d_intensity, curve.q_unit, self.config)
        except CurveError as err:
            return str(err)
        return model_input
