"""Bayesian classification of 1D curves with an ONNX posterior-sample model.

:class:`BNNClassifier` opens the model once, checks its metadata against this
runtime, maps curves through the shared preprocessing
(:func:`sasview_bnn_plugin.core.preprocessing.prepare_curve`) and runs them in
float32 batches of shape (batch, channels, 256): the 4 default channels, or the ones the model's metadata names. A refused curve becomes an error
result; the rest of the batch is classified as usual.

A model with the optional parts of :mod:`sasview_bnn_plugin.core.model_format`
(anomalies present, conformal prediction sets, novelty p-values) gives them in
every result; a model without them gives the same results as before.

An instrument calibration (:mod:`sasview_bnn_plugin.model.calibration`, written by
``sasview-bnn calibrate``) replaces the model's novelty reference -- and, if it
has them, its prediction-set thresholds -- by those of a user's own curves.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from .calibration import DEFAULT_NOVELTY_LEVEL, InstrumentCalibration, load_calibration
from .batching import MODEL_CALL_BYTES, model_batch_size
from ..core.curve import Curve, Failure
from .catalog import ModelNotFoundError
from .card import verify_model_file
from ..core.model_format import (
    ANOMALY_OUTPUT,
    INPUT_NAME,
    NOVELTY_OUTPUT,
    PROBABILITIES_OUTPUT,
    ConformalCalibration,
    ModelFormatError,
    ModelOptionError,
    NoveltyCalibration,
    check_metadata,
    read_optional_parts,
)
from ..core.flatness import flatness_p_values
from ..core.preprocessing import CurveError, ModelInput, PreprocessingConfig, prepare_curve, prepare_many
from .providers import PROVIDER_CHOICES, ProviderDecision, open_session
from ..core.q_units import (ModelVerdict, QUnitReading, QUnitResolution, canonical_q_unit, decide_q_unit, forced_note, q_unit_setting,
                             resolve_q_unit, resolve_q_units)
from ..core.result import ClassificationResult, SampleSummary, SampleVerdicts, sample_verdicts, summarise_samples
from ..core.taxonomy import ANOMALY_NAMES, CLASS_NAMES, N_CLASSES

if TYPE_CHECKING:
    from ..plugins.host import PluginHost

log = logging.getLogger(__name__)


class BNNClassifier:
    """Classifies curves with an ONNX model of S posterior samples.

    Parameters
    ----------
    model_path:
        ONNX file following :mod:`sasview_bnn_plugin.core.model_format`.
    provider:
        "auto", "cpu" or "cuda" (see :mod:`sasview_bnn_plugin.model.providers`).
    intra_op_threads:
        onnxruntime intra-op threads; None lets onnxruntime choose.
    spinning:
        False: idle onnxruntime threads sleep between calls instead of busy-waiting
        (for a session sharing the cores with reading processes, as ``classify --jobs``).
    novelty_threshold:
        Overrides the model's ``novelty_threshold`` metadata; ``is_novel`` is
        then decided by this threshold even for a model with novelty p-values.
    novelty_level:
        For a model with ``novelty_calibration``: a curve is novel when its
        novelty p-value is below this (default: the model's ``default_level``).
    set_level:
        For a model with ``conformal`` prediction sets: the coverage level of
        the sets (e.g. 0.9 or "0.9"; default: the model's ``default_level``);
        it must be one of the levels the model exports.
    batch_size:
        Curves per onnxruntime call, at most; lowered for a model whose calls
        would hold more than about 64 MiB of intermediate tensors
        (:attr:`model_batch_size`, see :mod:`sasview_bnn_plugin.model.batching`).
    model_streams:
        onnxruntime calls run at once, each on a thread of its own (the calls of
        one batch share the 64 MiB, so memory stays bounded); 1 (default): one call
        after the other. With N streams give each call one intra-op thread
        (``intra_op_threads=1``): the cores then run whole calls side by side instead
        of splitting every operator of one call between them. The outputs are the same.
    plugin_host:
        If given, its raw-curve steps run before preprocessing and every
        result is published to its sinks.
    name:
        Model name shown in results; the file stem by default.
    q_unit:
        The unit of q for curves whose unit nobody gave (``Curve.q_unit_source``
        "assumed": plain ASCII columns, PDH files, arrays without a unit):
        "auto" (default) decides from the q range and, when both are
        plausible, by running both readings (see :mod:`sasview_bnn_plugin.core.q_units`);
        "1/A" or "1/nm" reads every such curve in that unit. A unit given
        with the data is never overridden. Can be changed later (:attr:`q_unit`).
    calibration:
        An instrument calibration (:mod:`sasview_bnn_plugin.model.calibration`): the
        path of a file written by ``sasview-bnn calibrate`` or an
        :class:`~sasview_bnn_plugin.model.calibration.InstrumentCalibration`. Novelty
        p-values are then computed against its reference scores (also for a
        model without ``novelty_calibration``; default level the model's, else
        0.01) and prediction sets use its thresholds if it has them; every
        result's notes name it. It must have been made with this model's weights.

    Raises
    ------
    ModelNotFoundError
        The file does not exist.
    ModelFormatError
        The file is damaged, not ONNX, its sha256 differs from its model card
        (``NAME.json`` beside it, see :mod:`sasview_bnn_plugin.model.card`), or
        its metadata or inputs/outputs do not match this runtime. Raised before
        any curve is classified.
    ModelOptionError
        ``set_level`` or ``novelty_level`` is one the model cannot honour (the
        message lists what it offers), or both a novelty threshold and level are given.
        :class:`~sasview_bnn_plugin.model.calibration.CalibrationError` (a subclass) for a
        calibration file that cannot be read or was made for another model.
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
        set_level: float | str | None = None,
        novelty_level: float | None = None,
        q_unit: str = "auto",
        calibration: "str | os.PathLike[str] | InstrumentCalibration | None" = None,
        spinning: bool = True,
        model_streams: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if model_streams < 1:
            raise ValueError("model_streams must be at least 1")
        if provider.lower() not in PROVIDER_CHOICES:
            raise ValueError(f"provider must be one of {', '.join(PROVIDER_CHOICES)}, not {provider!r}")
        if intra_op_threads is not None and intra_op_threads < 0:
            raise ValueError("intra_op_threads must be positive")
        self.model_path = Path(model_path)
        self.name = name or self.model_path.stem
        if not self.model_path.is_file():
            raise ModelNotFoundError(f"the model file {self.model_path} does not exist")
        #: The model's card (None for a user's model without one); a file changed after its card was written is refused.
        self.card = verify_model_file(self.model_path)
        try:
            # The one and only session of this classifier; the metadata are read from it.
            self._session, self.provider_decision = open_session(self.model_path, provider, intra_op_threads, spinning=spinning)
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
        #: Curves per onnxruntime call: ``batch_size`` lowered to bound the call's memory (:mod:`.batching`).
        self.model_streams = int(model_streams)
        self.model_batch_size = model_batch_size(self.metadata, self.batch_size, MODEL_CALL_BYTES // self.model_streams)
        self._call_pool: ThreadPoolExecutor | None = None
        self.plugin_host = plugin_host
        self._check_signature()
        #: The optional parts this model has (see :mod:`sasview_bnn_plugin.core.model_format`).
        self.optional_parts = read_optional_parts(self.metadata, [o.name for o in self._session.get_outputs()])
        #: The instrument calibration in use (None: the model's own references), see :mod:`sasview_bnn_plugin.model.calibration`.
        self.calibration: InstrumentCalibration | None = load_calibration(calibration)
        if self.calibration is not None:
            self.calibration.check_model(self.metadata, self.name)
        self._choose_levels(set_level, novelty_threshold, novelty_level)
        self._calibration_notes = self._describe_calibration()
        self.q_unit = q_unit

    @property
    def q_unit(self) -> str:
        """The unit of q for curves without one: "auto", "1/A" or "1/nm" (see the class docstring)."""
        return self._q_unit

    @q_unit.setter
    def q_unit(self, value: str | None) -> None:
        self._q_unit = q_unit_setting(value)

    @property
    def conformal(self) -> ConformalCalibration | None:
        """The prediction-set thresholds in use: the instrument calibration's if it has them, else the model's (None: no sets)."""
        if self.calibration is not None and self.calibration.conformal is not None:
            return self.calibration.conformal
        return self.optional_parts.conformal

    @property
    def novelty_reference(self) -> NoveltyCalibration | None:
        """The reference scores of the novelty p-values: the instrument calibration's, else the model's (None: no p-values)."""
        own = self.optional_parts.novelty_calibration
        if self.calibration is not None:
            return self.calibration.novelty_calibration(own.default_level if own is not None else DEFAULT_NOVELTY_LEVEL)
        return own

    def _describe_calibration(self) -> list[str]:
        """The note every result gets when an instrument calibration is in use (empty otherwise)."""
        if self.calibration is None:
            return []
        used = "novelty p-value" + (" and prediction set" if self.calibration.conformal is not None and self.set_threshold is not None else "")
        note = f"{used} from the instrument calibration {self.calibration.describe()}"
        floor = self.calibration.p_value_floor
        if self.novelty_level is not None and floor >= self.novelty_level:
            note += f" (its p-values cannot go below 1/(n+1) = {floor:.3g}, so none is below the level {self.novelty_level:g})"
            log.warning("the calibration %s has %d curves: no p-value can be below the novelty level %g", self.calibration.label,
                        self.calibration.n, self.novelty_level)
        return [note]

    def _choose_levels(self, set_level: float | str | None, novelty_threshold: float | None, novelty_level: float | None) -> None:
        """Set :attr:`set_level`/:attr:`set_threshold` and :attr:`novelty_level` from the options, the model and the calibration."""
        conformal, reference = self.conformal, self.novelty_reference
        #: Coverage level and APS threshold of the prediction sets (None: the model has no sets).
        self.set_level: float | None = None
        self.set_threshold: float | None = None
        if conformal is not None:
            self.set_level, self.set_threshold = conformal.resolve(set_level)
        elif set_level is not None:
            raise ModelOptionError(f"the model {self.name} has no conformal prediction sets (no 'conformal' metadata), so it takes no set level")
        #: The novelty p-value level deciding ``is_novel`` (None: the novelty threshold decides).
        self.novelty_level: float | None = None
        if novelty_level is not None:
            level = float(novelty_level)
            if not 0.0 < level < 1.0:
                raise ModelOptionError(f"the novelty level is a p-value between 0 and 1, not {novelty_level}")
            if novelty_threshold is not None:
                raise ModelOptionError("give either a novelty threshold or a novelty level, not both")
            if reference is None:
                raise ModelOptionError(
                    f"the model {self.name} has no novelty calibration (no 'novelty_calibration' metadata), so it gives no "
                    "novelty p-values; use a novelty threshold instead, or an instrument calibration (sasview-bnn calibrate)"
                )
            self.novelty_level = level
        elif reference is not None and novelty_threshold is None:
            self.novelty_level = reference.default_level

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
        shape (batch,). onnxruntime errors propagate; :meth:`classify` is the
        fault-tolerant path.
        """
        batch = self._check_features(features)
        probs_out, novelty_out = [], []
        for answer in self._run_chunks(self._chunks(batch)):
            if isinstance(answer, BaseException):
                raise answer
            probs_out.append(answer[0])
            novelty_out.append(answer[1])
        if not probs_out:
            return np.zeros((0, self.n_samples, N_CLASSES), np.float32), np.zeros(0, np.float32)
        return np.concatenate(probs_out), np.concatenate(novelty_out)

    def _chunks(self, batch: np.ndarray) -> list[np.ndarray]:
        """``batch`` cut into the model calls of at most :attr:`model_batch_size` curves (views, in order)."""
        return [batch[start : start + self.model_batch_size] for start in range(0, batch.shape[0], self.model_batch_size)]

    def _run_chunks(self, chunks: Sequence[np.ndarray]) -> list["tuple[np.ndarray, np.ndarray, np.ndarray | None] | Exception"]:
        """:meth:`_run_chunk` of each chunk, in order, :attr:`model_streams` calls at a time; a call that fails
        gives its exception in its place (the caller decides)."""
        if self.model_streams > 1 and len(chunks) > 1:
            if self._call_pool is None:
                self._call_pool = ThreadPoolExecutor(max_workers=self.model_streams, thread_name_prefix="sasview-bnn-call")
            calls = [self._call_pool.submit(self._run_chunk, chunk) for chunk in chunks]
            answers: list[tuple[np.ndarray, np.ndarray, np.ndarray | None] | Exception] = []
            for call in calls:
                err = call.exception()
                if err is not None and not isinstance(err, Exception):
                    raise err  # an interrupt, not a failing call
                answers.append(err if err is not None else call.result())
            return answers
        answers = []
        for chunk in chunks:
            try:
                answers.append(self._run_chunk(chunk))
            except Exception as err:
                answers.append(err)
        return answers

    def predict_each(self, features: np.ndarray) -> list[tuple[np.ndarray, float] | Failure]:
        """Run the model on preprocessed inputs, one outcome per input; never raises for a curve.

        ``features`` has shape (batch, 4, 256). Each outcome is (probabilities
        of shape (S, 7), novelty score) or a :class:`Failure` saying why the model gave
        no usable answer. A batch on which onnxruntime fails is retried curve
        by curve, so one bad curve costs no other curve its result; outputs
        that are not finite probabilities are refused, never turned into a label.
        """
        return [o if isinstance(o, Failure) else (o.samples, o.novelty) for o in self._predict_each(self._check_features(features))]

    def _predict_each(self, batch: np.ndarray) -> "ModelOutcomes":
        """:meth:`predict_each` with the optional anomaly probabilities (S, 6) of each curve, as
        :class:`ModelOutcomes` (the batch's arrays, checked with numpy over the batch)."""
        parts: list[ModelOutcomes] = []
        chunks = self._chunks(batch)
        for chunk, answer in zip(chunks, self._run_chunks(chunks)):
            if isinstance(answer, BaseException):  # onnxruntime fails on this batch: find the curve(s) it fails on
                log.warning("the model failed on a batch of %d curve(s) (%s); retrying them one by one", len(chunk), _first_line(answer))
                if len(chunk) == 1:
                    parts.append(self._no_outcomes(1, _MODEL_FAILED))
                    continue
                parts.extend(self._predict_each(chunk[k : k + 1]) for k in range(len(chunk)))
                continue
            parts.append(_checked_outcomes(*answer))
        return ModelOutcomes.concatenate(parts) if parts else self._no_outcomes(0)

    def _no_outcomes(self, n: int, failure: Failure | None = None) -> "ModelOutcomes":
        """``n`` outcomes that are all ``failure`` (NaN rows; ``n`` = 0: the outcomes of no input)."""
        presence = np.full((n, self.n_samples, len(ANOMALY_NAMES)), np.nan) if self.optional_parts.anomalies is not None else None
        return ModelOutcomes(np.full((n, self.n_samples, N_CLASSES), np.nan), np.full(n, np.nan), presence, [failure] * n)

    def _as_outcomes(self, outcomes: Sequence["_Outcome | Failure"]) -> "ModelOutcomes":
        """``outcomes`` as :class:`ModelOutcomes` (a list of :class:`_Outcome` / :class:`Failure` given by hand)."""
        if isinstance(outcomes, ModelOutcomes):
            return outcomes
        parts = [self._no_outcomes(1, o) if isinstance(o, Failure) else
                 ModelOutcomes(np.asarray(o.samples, np.float64)[None], np.array([float(o.novelty)]),
                               None if o.presence is None else np.asarray(o.presence, np.float64)[None], [None])
                 for o in outcomes]
        return ModelOutcomes.concatenate(parts) if parts else self._no_outcomes(0)

    def run_batch(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One onnxruntime call on all of ``features`` (batch, 4, 256), however large (no chunking).

        Returns probabilities (batch, S, 7), novelty scores (batch,) and, for a
        model with them, anomaly probabilities (batch, S, 6) (else None).
        onnxruntime errors propagate. Used by :mod:`sasview_bnn_plugin.model.explain`.
        """
        return self._run_chunk(self._check_features(features))

    def prepare_input(self, curve: Curve, q_unit: str | None = None) -> ModelInput | Failure:
        """The model input of ``curve`` as :meth:`classify` builds it (the plugins' raw-curve steps,
        then the shared preprocessing, q read in ``q_unit`` if given, e.g. a result's ``q_unit_used``),
        or the :class:`Failure` saying why the curve is refused."""
        if self.plugin_host is not None:
            curve = self.plugin_host.prepare_raw_curve(curve)
        return self._prepare(curve, q_unit or None)

    def _check_features(self, features: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(features, dtype=np.float32)
        if batch.ndim != 3 or batch.shape[1:] != self.config.input_shape:
            raise ValueError(f"features must have shape (batch, {self.config.input_shape[0]}, {self.config.input_shape[1]}), got {batch.shape}")
        return batch

    def _run_chunk(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One onnxruntime call: probabilities (n, S, 7), novelty (n,) and, if the model has them,
        anomaly probabilities (n, S, 6) for a chunk of n inputs (else None)."""
        names = [PROBABILITIES_OUTPUT, NOVELTY_OUTPUT]
        if self.optional_parts.anomalies is not None:
            names.append(ANOMALY_OUTPUT)
        outputs = self._session.run(names, {INPUT_NAME: chunk})
        probs = np.asarray(outputs[0])
        novelty = np.asarray(outputs[1]).reshape(-1)
        if probs.ndim != 3 or probs.shape[0] != len(chunk) or probs.shape[2] != N_CLASSES:
            raise ModelFormatError(f"the model returned probabilities of shape {probs.shape}, expected ({len(chunk)}, S, {N_CLASSES})")
        if novelty.shape != (len(chunk),):
            raise ModelFormatError(f"the model returned {novelty.size} novelty score(s) for {len(chunk)} curve(s)")
        presence = None
        if len(names) > 2:
            presence = np.asarray(outputs[2])
            expected = (len(chunk), probs.shape[1], len(ANOMALY_NAMES))
            if presence.shape != expected:
                raise ModelFormatError(f"the model returned anomaly probabilities of shape {presence.shape}, expected {expected}")
        return probs, novelty, presence

    def classify(self, curves: Iterable[Any]) -> list[ClassificationResult]:
        """Classify many curves; one result per curve, in order.

        Each item is a :class:`~sasview_bnn_plugin.core.curve.Curve`, a sasdata
        ``Data1D``, or a tuple (q, I[, dI[, dq[, q_unit]]]) with q in q_unit
        (None: unknown, decided as :attr:`q_unit` says). A curve whose unit
        is unknown and plausible both ways is run in both readings, in the
        same batch, and the reading the model finds in-distribution is kept
        (:mod:`sasview_bnn_plugin.core.q_units`); every result carries the unit
        used (``q_unit_used``) and, when nobody gave it, a note saying why.
        A refused curve, or one on which the model fails or returns no finite
        probabilities, gets an error result; the others are unaffected.
        """
        return self.classify_prepared(self.prepare(curves))

    def prepare(self, curves: Iterable[Any]) -> list["PreparedCurve"]:
        """The first half of :meth:`classify`, without the model: each curve (after the plugins' raw-curve
        steps) with the model input(s) of its q-unit reading(s).
        Pure numpy: it can be done in another process (:func:`prepare_curves`) and handed to
        :meth:`classify_prepared`."""
        ready: list[Curve] = []
        for index, item in enumerate(curves):
            curve = self._as_curve(item, index)
            if self.plugin_host is not None:
                curve = self.plugin_host.prepare_raw_curve(curve)
            ready.append(curve)
        return _prepare_many(self.config, ready, self.q_unit)

    def classify_prepared(self, prepared: Sequence["PreparedCurve"]) -> list[ClassificationResult]:
        """The second half of :meth:`classify`: one model call over the inputs of ``prepared`` (from
        :meth:`prepare` or :func:`prepare_curves`), then one result per curve, in order."""
        return self.results_of(prepared, self.run_prepared(prepared))

    def run_prepared(self, prepared: Sequence["PreparedCurve"]) -> "ModelOutcomes":
        """The model's outcomes for the inputs of ``prepared``, in order (the model half of
        :meth:`classify_prepared`; releases the GIL while onnxruntime runs, so it can run in a thread)."""
        accepted = [mi.features for _, readings in prepared for _, mi in readings if isinstance(mi, ModelInput)]
        return self._predict_each(self._check_features(np.stack(accepted))) if accepted else self._no_outcomes(0)

    def results_of(self, prepared: Sequence["PreparedCurve"], model_outcomes: Sequence["_Outcome | Failure"]) -> list[ClassificationResult]:
        """One result per curve of ``prepared`` from the outcomes :meth:`run_prepared` gave (the rest of
        :meth:`classify_prepared`: the q-unit choice, the summaries, the plugins' result hooks).
        The numbers of all the batch's results are computed at once: the verdicts of every reading, to choose
        (:meth:`verdicts`), then the summaries of the readings kept (:func:`~sasview_bnn_plugin.core.result.summarise_samples`)."""
        outcomes = self._as_outcomes(model_outcomes)
        verdicts = self.verdicts(outcomes)
        chosen: list[tuple[Curve, QUnitReading, ModelInput | Failure, int | None]] = []
        k = 0
        for curve, readings in prepared:
            answers = []
            for reading, outcome in readings:
                row = None
                if isinstance(outcome, ModelInput):
                    row = k
                    k += 1
                    failure = outcomes.failures[row]
                    if failure is not None:
                        outcome = failure
                answers.append((reading, outcome, row))
            chosen.append((curve, *self._choose_reading(answers, verdicts)))
        # Only the readings kept are summarised (each row's numbers do not depend on the others').
        kept = [row for _, _, outcome, row in chosen if isinstance(outcome, ModelInput)]
        summary = self.summarise(outcomes.take(kept)) if kept else None
        position = iter(range(len(kept)))
        flatness = iter(flatness_p_values([(curve.intensity, curve.d_intensity, curve.q) for curve, _, outcome, _ in chosen
                                           if isinstance(outcome, ModelInput)]))
        results: list[ClassificationResult] = []
        for curve, reading, outcome, row in chosen:
            if isinstance(outcome, ModelInput):
                result = ClassificationResult.from_summary(
                    summary,
                    next(position),
                    file=curve.source,
                    dataset=curve.dataset,
                    coverage=outcome.coverage,
                    q_window=outcome.q_window,
                    n_points=outcome.n_points,
                    model=self.name,
                    notes=curve.notes + reading.notes + outcome.notes + self._calibration_notes,
                    flatness_p=next(flatness),
                )
            else:
                result = ClassificationResult.error(curve.source, curve.dataset, outcome, curve.notes + reading.notes, model=self.name)
            result.q_unit_used = reading.unit or ""
            result.q_unit_source = reading.source if reading.unit else ""
            result.q_unit_uncertain = reading.uncertain
            result.metadata = dict(curve.metadata)
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
        """Classify one curve given as arrays of shape (points,), q in ``q_unit``.

        ``q_unit`` None means unknown: the unit is decided as :attr:`q_unit`
        says (by default from the q range and the model) and the result says
        which unit was used and why.
        """
        return self.classify([_curve_from_arrays(q, intensity, d_intensity, dq, q_unit, source, dataset)])[0]

    # -- helpers -----------------------------------------------------------------------------

    def summarise(self, outcomes: "ModelOutcomes") -> SampleSummary:
        """The numbers of the results of ``outcomes`` (all rows at once; failed rows are NaN and unused), with this
        classifier's novelty rule, anomaly threshold and prediction sets."""
        return summarise_samples(outcomes.samples, outcomes.novelty, self.novelty_threshold, anomaly_samples=outcomes.presence,
                                 **self._optional_arguments())

    def verdicts(self, outcomes: "ModelOutcomes") -> SampleVerdicts:
        """The verdicts of ``outcomes`` (the class, the novelty score and rule of each row, as :meth:`summarise` gives
        them), without the rest of the summary: to choose between the readings of a curve."""
        return sample_verdicts(outcomes.samples, outcomes.novelty, self.novelty_threshold, **self._optional_arguments())

    def _optional_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~sasview_bnn_plugin.core.result.summarise_samples` for this model's optional
        parts (but the anomaly samples)."""
        parts = self.optional_parts
        arguments: dict[str, Any] = {}
        if parts.anomalies is not None:
            arguments.update(anomaly_threshold=parts.anomalies.threshold)
        if self.set_threshold is not None:
            arguments.update(set_threshold=self.set_threshold, set_level=self.set_level)
        reference = self.novelty_reference
        if reference is not None:
            arguments.update(novelty_calibration=reference.scores, novelty_level=self.novelty_level)
        return arguments

    @staticmethod
    def _as_curve(item: Any, index: int) -> Curve:
        if isinstance(item, Curve):
            return item
        if hasattr(item, "x") and hasattr(item, "y"):
            return Curve.from_data1d(item)
        if isinstance(item, (tuple, list)) and 2 <= len(item) <= 5:
            q, i, di, dq, unit = (list(item) + [None, None, None])[:5]
            return _curve_from_arrays(q, i, di, dq, unit, "", f"curve {index}")
        return Curve.failed("", f"curve {index}", f"cannot classify a {type(item).__name__}: pass a Curve, a Data1D or (q, I, dI, dq, q_unit)")

    def _prepare(self, curve: Curve, q_unit: str | None = None) -> ModelInput | Failure:
        """The model input of a curve (q read in ``q_unit``, else its own unit), or the :class:`Failure` saying why it is refused."""
        return _prepare_input(self.config, curve, q_unit)

    def _choose_reading(self, answers: list[tuple[QUnitReading, Any, int | None]],
                        summary: SampleVerdicts) -> tuple[QUnitReading, Any, int | None]:
        """The (reading, model input or refusal, row of ``summary``) to report: the only one, or the one the model check keeps."""
        if len(answers) == 1:
            return answers[0]
        verdicts = {reading.unit: self._verdict(outcome, row, summary) for reading, outcome, row in answers}
        first = answers[0][0]
        decision = decide_q_unit(first.resolution, verdicts, first.subject)
        for reading, outcome, row in answers:
            if reading.unit == decision.unit:
                reading.note, reading.uncertain = decision.note, decision.uncertain
                return reading, outcome, row
        raise AssertionError("the q-unit decision chose a unit that was not tried")  # pragma: no cover

    @staticmethod
    def _verdict(outcome: ModelInput | Failure, row: int | None, summary: SampleVerdicts) -> ModelVerdict | str:
        """The model's verdict on one reading (novelty decided exactly as in the results, before the flatness
        test), or why it has none (the failure's message, as :func:`~sasview_bnn_plugin.core.q_units.decide_q_unit` takes it)."""
        if not isinstance(outcome, ModelInput) or row is None:
            return str(outcome)
        return ModelVerdict(float(summary.score[row]), bool(summary.model_novel[row]), CLASS_NAMES[int(summary.index[row])])

#: Curves the model gave no usable answer for (they never get a label).
_MODEL_FAILED = Failure("the model could not be run on this curve (onnxruntime reported an error, see the log); no label is given")
_NON_FINITE = Failure("the model returned probabilities that are not finite numbers for this curve; no label is given")
_NOT_PROBABILITIES = Failure("the model returned values that are not probabilities (outside 0 to 1 or not summing to 1) for this curve; no label is given")
_BAD_NOVELTY = Failure("the model returned a novelty score that is not a finite number for this curve; no label is given")
_BAD_PRESENCE = Failure("the model returned anomaly probabilities that are not finite numbers between 0 and 1 for this curve; no label is given")


class _Outcome(NamedTuple):
    """The model's answer for one curve: samples (S, 7), novelty score, anomaly probabilities (S, 6) or None."""

    samples: np.ndarray
    novelty: float
    presence: np.ndarray | None = None


class ModelOutcomes(Sequence):
    """The model's answers for m inputs (:meth:`BNNClassifier.run_prepared`): the batch's arrays, float64 --
    ``samples`` (m, S, 7), ``novelty`` (m,), ``presence`` (m, S, 6) clipped to [0, 1] or None -- and per input
    the :class:`Failure` refusing its answer or None (a refused row is NaN). Item ``k`` is an :class:`_Outcome`
    or that :class:`Failure`."""

    def __init__(self, samples: np.ndarray, novelty: np.ndarray, presence: np.ndarray | None, failures: list[Failure | None]) -> None:
        self.samples, self.novelty, self.presence, self.failures = samples, novelty, presence, failures

    def __len__(self) -> int:
        return len(self.failures)

    def __getitem__(self, k: int) -> "_Outcome | Failure":  # type: ignore[override]
        failure = self.failures[k]
        if failure is not None:
            return failure
        return _Outcome(self.samples[k], float(self.novelty[k]), None if self.presence is None else self.presence[k])

    def __iter__(self) -> Iterator["_Outcome | Failure"]:
        return (self[k] for k in range(len(self)))

    def take(self, rows: Sequence[int]) -> "ModelOutcomes":
        """The outcomes of the inputs ``rows``, in that order."""
        index = np.asarray(rows, dtype=np.intp)
        return ModelOutcomes(self.samples[index], self.novelty[index], None if self.presence is None else self.presence[index],
                             [self.failures[k] for k in rows])

    @staticmethod
    def concatenate(parts: Sequence["ModelOutcomes"]) -> "ModelOutcomes":
        """The outcomes of ``parts`` one after the other."""
        if len(parts) == 1:
            return parts[0]
        presence = None if parts[0].presence is None else np.concatenate([p.presence for p in parts])
        return ModelOutcomes(np.concatenate([p.samples for p in parts]), np.concatenate([p.novelty for p in parts]), presence,
                             [f for p in parts for f in p.failures])
_INTERNAL_ERROR = Failure("sasview-bnn failed while preparing this curve (an internal error, see the log; please report it with the file)")


def _curve_from_arrays(q: Any, intensity: Any, d_intensity: Any, dq: Any, q_unit: Any, source: str, dataset: str) -> Curve:
    """A Curve of float arrays, or an error Curve saying why the values are not numbers."""
    arrays = []
    for values in (q, intensity, d_intensity, dq):
        if values is None:
            arrays.append(None)
            continue
        if np.iscomplexobj(values):
            return Curve.failed(source, dataset, "q, I and dI must be real numbers, not complex numbers")
        try:
            arrays.append(np.asarray(values, dtype=np.float64))
        except (TypeError, ValueError, OverflowError):
            return Curve.failed(source, dataset, "q, I and dI must be numbers")
    q_arr, i_arr, di_arr, dq_arr = arrays
    unit = q_unit if q_unit is None or isinstance(q_unit, str) else str(q_unit)
    given = unit is not None and bool(unit.strip())
    return Curve(
        q=q_arr, intensity=i_arr, d_intensity=di_arr, dq=dq_arr, q_unit=unit if given else None, source=source, dataset=dataset,
        q_unit_source="user" if given else "assumed",
    )


def _checked_outcomes(samples: np.ndarray, novelty: np.ndarray, presence: np.ndarray | None = None) -> ModelOutcomes:
    """The outcomes of a model call on n inputs, each checked (with numpy over the batch): samples (n, S, 7) and
    presence (n, S, 6) must be finite probabilities (each sample's classes summing to 1 within 1e-3) and the
    novelty scores (n,) finite, else that input's :class:`Failure` (the first that applies of: non-finite,
    not probabilities, bad novelty, bad presence) and a NaN row."""
    samples = np.array(samples, dtype=np.float64)
    scores = np.array(novelty, dtype=np.float64).reshape(-1)
    n = samples.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(samples).reshape(n, -1).all(axis=1)
        flat = samples.reshape(n, -1)
        in_range = (flat.min(axis=1, initial=np.inf) >= -1e-4) & (flat.max(axis=1, initial=-np.inf) <= 1 + 1e-4)
        sums = samples.sum(axis=2)
        normalised = ((np.abs(sums - 1.0) <= 1e-3 + 1e-5 * 1.0) | (sums == 1.0)).all(axis=1)  # np.allclose(sums, 1, atol=1e-3)
        checks = [(finite, _NON_FINITE), (in_range & normalised, _NOT_PROBABILITIES), (np.isfinite(scores), _BAD_NOVELTY)]
        if presence is not None:
            presence = np.array(presence, dtype=np.float64)
            flat_presence = presence.reshape(n, -1)
            usable = (np.isfinite(flat_presence).all(axis=1) & (flat_presence.min(axis=1, initial=np.inf) >= -1e-4)
                      & (flat_presence.max(axis=1, initial=-np.inf) <= 1 + 1e-4))
            checks.append((usable, _BAD_PRESENCE))
            np.clip(presence, 0.0, 1.0, out=presence)
    failures: list[Failure | None] = [None] * n
    for passed, failure in reversed(checks):  # the first check that fails names the failure
        for k in np.flatnonzero(~passed):
            failures[k] = failure
    failed = np.array([f is not None for f in failures], dtype=bool)
    if failed.any():
        samples[failed] = np.nan
        scores[failed] = np.nan
        if presence is not None:
            presence[failed] = np.nan
    return ModelOutcomes(samples, scores, presence, failures)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class PreparedCurve(NamedTuple):
    """A curve and the model input(s) of its q-unit reading(s) (:meth:`BNNClassifier.prepare`); picklable."""

    curve: Curve
    readings: list[tuple[QUnitReading, ModelInput | Failure]]


def prepare_curves(curves: Iterable[Curve], config: PreprocessingConfig, q_unit: str = "auto") -> list[PreparedCurve]:
    """:meth:`BNNClassifier.prepare` without a classifier (no model, no session; no plugins' raw-curve steps):
    for another process, given the classifier's ``config`` and ``q_unit``. The same inputs, bit for bit."""
    return _prepare_many(config, list(curves), q_unit_setting(q_unit))


class _ToPrepare(NamedTuple):
    """A reading still to be mapped onto the model input: q read in ``unit`` (None: the curve's own unit)."""

    unit: str | None


def _prepare_many(config: PreprocessingConfig, curves: Sequence[Curve], q_unit: str) -> list[PreparedCurve]:
    """Each curve with the model input(s) of its reading(s) (``q_unit`` the classifier's setting): the readings
    chosen curve by curve, then all their inputs mapped at once
    (:func:`~sasview_bnn_plugin.core.preprocessing.prepare_many`: the inputs of one curve at a time, bit for bit)."""
    resolutions = _resolutions(q_unit, curves)
    plans = [_plan_readings(q_unit, curve, resolution) for curve, resolution in zip(curves, resolutions)]
    jobs = [(curve, step.unit) for curve, plan in zip(curves, plans) for _, step in plan if isinstance(step, _ToPrepare)]
    inputs = iter(_prepare_inputs(config, jobs))
    return [PreparedCurve(curve, [(reading, next(inputs) if isinstance(step, _ToPrepare) else step) for reading, step in plan])
            for curve, plan in zip(curves, plans)]


def _prepare_inputs(config: PreprocessingConfig, jobs: Sequence[tuple[Curve, str | None]]) -> list[ModelInput | Failure]:
    """The model inputs of (curve, unit) pairs (q read in ``unit``, else the curve's own unit), or the :class:`Failure`
    saying why each is refused."""
    try:
        outcomes = prepare_many([(curve.q, curve.intensity, curve.d_intensity, unit or curve.q_unit) for curve, unit in jobs], config)
    except Exception:  # a bug, not a curve's fault: one at a time, so that only the curve at fault gets the internal error
        return [_prepare_input(config, curve, unit) for curve, unit in jobs]
    return [Failure(str(outcome)) if isinstance(outcome, CurveError) else outcome for outcome in outcomes]


def _prepare_input(config: PreprocessingConfig, curve: Curve, q_unit: str | None = None) -> ModelInput | Failure:
    """The model input of a curve (q read in ``q_unit``, else its own unit), or the :class:`Failure` saying why it is refused."""
    if curve.failure is not None:
        return curve.failure
    try:
        model_input = prepare_curve(curve.q, curve.intensity, curve.d_intensity, q_unit or curve.q_unit, config)
    except CurveError as err:
        return Failure(str(err))
    except Exception:  # a bug, not the curve's fault: keep the other curves, say so plainly
        log.exception("preprocessing failed on %s %s", curve.source, curve.dataset)
        return _INTERNAL_ERROR
    return model_input


def _preferred_unit(curve: Curve) -> str | None:
    """The unit a curve's reader suggests ("1/A", "1/nm"), the one kept unless the q range or the model speaks against it."""
    try:
        return canonical_q_unit(curve.q_unit)
    except CurveError:
        return None


def _resolutions(q_unit: str, curves: Sequence[Curve]) -> list[QUnitResolution | None]:
    """What the q range says of each curve whose unit is to be decided (``q_unit`` "auto", nobody gave the unit), all
    at once (:func:`~sasview_bnn_plugin.core.q_units.resolve_q_units`); None for the others, and for all of them if
    that fails (then :func:`_plan_readings` resolves curve by curve and names the curve at fault)."""
    out: list[QUnitResolution | None] = [None] * len(curves)
    if q_unit != "auto":
        return out
    chosen = [k for k, curve in enumerate(curves) if curve.failure is None and curve.q_unit_source == "assumed"]
    try:
        found = resolve_q_units([(curves[k].q, curves[k].intensity, _preferred_unit(curves[k])) for k in chosen])
    except Exception:  # a bug, not a curve's fault: curve by curve, so that only the curve at fault is refused
        return out
    for k, resolution in zip(chosen, found):
        out[k] = resolution
    return out


def _plan_readings(q_unit: str, curve: Curve, resolution: QUnitResolution | None = None) -> list[tuple[QUnitReading, _ToPrepare | Failure]]:
    """The reading(s) of a curve to run: one, or two when nobody gave its q unit and both units are plausible
    (``q_unit`` the classifier's setting: "auto", "1/A" or "1/nm"; ``resolution``: what its q range says, if known);
    each still to be mapped, or the failure refusing it."""
    if curve.failure is not None:
        return [(QUnitReading(None, curve.q_unit_source or "assumed"), curve.failure)]
    if curve.q_unit_source != "assumed":
        try:
            unit = canonical_q_unit(curve.q_unit)
        except CurveError:  # the preprocessing refuses it and says so
            unit = None
        return [(QUnitReading(unit, curve.q_unit_source or "file"), _ToPrepare(None))]
    subject = "q unit not given in the file" if curve.source else "q unit not given"
    try:
        if q_unit != "auto":
            note = forced_note(q_unit, curve.q, curve.intensity, subject)
            return [(QUnitReading(q_unit, "user", note), _ToPrepare(q_unit))]
        if resolution is None:
            resolution = resolve_q_unit(curve.q, curve.intensity, _preferred_unit(curve))
    except Exception:  # a bug, not the curve's fault: keep the other curves, say so plainly
        log.exception("deciding the q unit failed on %s %s", curve.source, curve.dataset)
        return [(QUnitReading(None, "assumed"), _INTERNAL_ERROR)]
    if not resolution.needs_model:
        decision = decide_q_unit(resolution, subject=subject)
        return [(QUnitReading(decision.unit, "assumed", decision.note), _ToPrepare(decision.unit))]
    return [
        (QUnitReading(unit, "assumed", resolution=resolution, subject=subject), _ToPrepare(unit))
        for unit in resolution.candidates
    ]
