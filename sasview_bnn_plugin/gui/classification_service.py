"""Classification off the GUI thread: one model, many jobs, results delivered as Qt signals.

:class:`ClassificationService` owns the :class:`GuiSettings` and the plugin
host, opens the chosen model once (re-opened only when the settings change)
and runs :class:`ClassificationJob` objects on a ``QThreadPool``. A job
classifies its curves in chunks, emitting ``progress(done, total)`` and
``chunk_done(first_index, results)`` after every chunk, so that a batch of
hundreds of curves fills the table while the GUI stays responsive; any
failure (missing or damaged model, unexpected error) arrives as
``failed(message)`` in words for a scientist, never as a traceback.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Sequence

from PySide6 import QtCore

from ..classifier import BNNClassifier
from ..curve import Curve
from ..model_catalog import ModelNotFoundError, ModelSource, resolve_model
from ..model_format import ModelFormatError
from ..plugin_host import PluginHost, build_plugin_host
from ..result import ClassificationResult
from .settings import GuiSettings

log = logging.getLogger(__name__)

#: Curves per chunk: small enough for smooth progress, large enough for efficient ONNX batches.
CHUNK_SIZE = 32

NO_MODEL_HINT = (
    "No classification model is available yet. Choose an ONNX model file in "
    "Preferences > BNN Anomaly (or install a plugin that ships one)."
)


class ModelUnavailableError(RuntimeError):
    """The chosen model cannot be used; the message says why and what to do."""


class JobSignals(QtCore.QObject):
    """Signals of one job (a QRunnable cannot carry signals itself)."""

    progress = QtCore.Signal(int, int)  # curves done, curves in the job
    chunk_done = QtCore.Signal(int, object)  # index of the chunk's first curve, list[ClassificationResult]
    failed = QtCore.Signal(str)  # a message for the user; the job stops
    finished = QtCore.Signal()  # always emitted last


class _CallbackRelay(QtCore.QObject):
    """Receives a job's signals in the thread it was created in (the GUI thread) and calls plain callbacks.

    Connecting a signal to a lambda would run it in the emitting (pool) thread;
    slots of a QObject run in that object's thread.
    """

    def __init__(self, on_chunk, on_progress, on_failed, on_finished, on_done) -> None:
        super().__init__()
        self._on_chunk, self._on_progress, self._on_failed, self._on_finished, self._on_done = (
            on_chunk, on_progress, on_failed, on_finished, on_done
        )

    @QtCore.Slot(int, object)
    def chunk_done(self, start: int, results: object) -> None:
        if self._on_chunk is not None:
            self._on_chunk(start, results)

    @QtCore.Slot(int, int)
    def progress(self, done: int, total: int) -> None:
        if self._on_progress is not None:
            self._on_progress(done, total)

    @QtCore.Slot(str)
    def failed(self, message: str) -> None:
        if self._on_failed is not None:
            self._on_failed(message)

    @QtCore.Slot()
    def finished(self) -> None:
        try:
            if self._on_finished is not None:
                self._on_finished()
        finally:
            self._on_done()


class ClassificationJob(QtCore.QRunnable):
    """Classify ``curves`` (a list of :class:`Curve`) with the service's model, chunk by chunk."""

    def __init__(self, service: "ClassificationService", curves: Sequence[Curve], chunk_size: int = CHUNK_SIZE) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.service = service
        self.curves = list(curves)
        self.chunk_size = max(1, int(chunk_size))
        self.signals = JobSignals()
        self._cancelled = threading.Event()
        self._done = threading.Event()
        self.relay: QtCore.QObject | None = None

    def cancel(self) -> None:
        """Stop after the chunk being classified; results already delivered stay."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (for shutdown and tests); True if it did."""
        return self._done.wait(timeout)

    def run(self) -> None:  # runs in a pool thread
        try:
            total = len(self.curves)
            try:
                classifier = self.service.classifier()
            except ModelUnavailableError as err:
                self.signals.failed.emit(str(err))
                return
            self.signals.progress.emit(0, total)
            for start in range(0, total, self.chunk_size):
                if self.cancelled:
                    break
                chunk = self.curves[start : start + self.chunk_size]
                results = classifier.classify(chunk)
                self.signals.chunk_done.emit(start, results)
                self.signals.progress.emit(min(start + len(chunk), total), total)
        except Exception as err:  # never let a worker thread die silently or show a traceback
            log.debug("classification job failed", exc_info=True)
            self.signals.failed.emit(f"classification failed: {type(err).__name__}: {err}")
        finally:
            self._done.set()
            self.signals.finished.emit()


class ClassificationService(QtCore.QObject):
    """The model in use and the thread pool that runs classification jobs.

    Parameters
    ----------
    settings:
        Model, provider and novelty threshold; :meth:`apply_settings` changes them.
    plugin_host:
        Supplies plugin models, raw-curve steps and result sinks; built
        (with installed entry-point plugins) when None.
    """

    #: Emitted after the settings changed (the model is re-opened lazily).
    settings_changed = QtCore.Signal()

    def __init__(self, settings: GuiSettings | None = None, plugin_host: PluginHost | None = None, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings if settings is not None else GuiSettings.load()
        self.plugin_host = plugin_host if plugin_host is not None else build_plugin_host()
        self._lock = threading.Lock()
        self._classifier: BNNClassifier | None = None
        self._classifier_key: tuple | None = None
        self.pool = QtCore.QThreadPool(self)
        # One classification at a time: onnxruntime already uses every core for one batch.
        self.pool.setMaxThreadCount(1)
        self._jobs: list[ClassificationJob] = []

    # -- models ----------------------------------------------------------------------------

    def available_models(self) -> list[ModelSource]:
        """Shipped and plugin models (a failing plugin is skipped and reported in the host's problems)."""
        return self.plugin_host.models()

    def model_source(self) -> ModelSource:
        """The model the settings point at; raises :class:`ModelUnavailableError` with advice."""
        try:
            return resolve_model(self.settings.model or None, self.available_models())
        except ModelNotFoundError as err:
            if not self.settings.model:
                raise ModelUnavailableError(NO_MODEL_HINT) from None
            raise ModelUnavailableError(f"{err}. Choose another model in Preferences > BNN Anomaly.") from None

    def classifier(self) -> BNNClassifier:
        """The open classifier for the current settings (opened once, thread-safe)."""
        with self._lock:
            source = self.model_source()
            key = (str(source.path), self.settings.provider, self.settings.novelty_threshold)
            if self._classifier is None or self._classifier_key != key:
                try:
                    self._classifier = BNNClassifier(
                        source.path,
                        provider=self.settings.provider,
                        novelty_threshold=self.settings.novelty_threshold,
                        plugin_host=self.plugin_host,
                        name=source.name,
                    )
                except (ModelFormatError, ModelNotFoundError, OSError) as err:
                    self._classifier = None
                    raise ModelUnavailableError(f"{err}. Choose another model in Preferences > BNN Anomaly.") from None
                self._classifier_key = key
            return self._classifier

    def describe_model(self) -> str:
        """One line naming the model in use, or why there is none."""
        try:
            source = self.model_source()
        except ModelUnavailableError as err:
            return str(err)
        threshold = "" if self.settings.novelty_threshold is None else f", novelty threshold {self.settings.novelty_threshold:g}"
        return f"Model: {source.name} ({source.path.name}), provider {self.settings.provider}{threshold}"

    def apply_settings(self, settings: GuiSettings, save: bool = True) -> None:
        """Use new settings from now on (the model is re-opened on the next job)."""
        settings.validate()
        with self._lock:
            settings.path = settings.path or self.settings.path
            self.settings = settings
            self._classifier = None
            self._classifier_key = None
        if save:
            try:
                settings.save()
            except OSError as err:
                log.warning("BNN Anomaly settings could not be saved: %s", err)
        self.settings_changed.emit()

    # -- jobs ------------------------------------------------------------------------------

    def submit(
        self,
        curves: Sequence[Curve],
        on_chunk: Callable[[int, list[ClassificationResult]], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        on_failed: Callable[[str], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> ClassificationJob:
        """Start classifying ``curves``; the callbacks run in the GUI thread.

        ``on_chunk(first_index, results)`` receives each chunk's results (indices
        into ``curves``), ``on_progress(done, total)`` follows every chunk,
        ``on_failed(message)`` reports a model that cannot be used or an
        unexpected error, ``on_finished()`` comes last, always.
        """
        job = ClassificationJob(self, curves, chunk_size)
        # The relay lives in this (GUI) thread, so the pool thread's signals are queued to it.
        job.relay = _CallbackRelay(on_chunk, on_progress, on_failed, on_finished, lambda: self._forget(job))
        job.signals.chunk_done.connect(job.relay.chunk_done)
        job.signals.progress.connect(job.relay.progress)
        job.signals.failed.connect(job.relay.failed)
        job.signals.finished.connect(job.relay.finished)
        self._jobs.append(job)
        self.pool.start(job)
        return job

    def _forget(self, job: ClassificationJob) -> None:
        if job in self._jobs:
            self._jobs.remove(job)

    @property
    def busy(self) -> bool:
        """True while any job is queued or running."""
        return bool(self._jobs)

    def cancel_all(self) -> None:
        """Cancel every queued or running job."""
        for job in list(self._jobs):
            job.cancel()

    def shutdown(self, timeout_ms: int = 5000) -> None:
        """Cancel everything and wait for the pool (called when SasView closes the perspective)."""
        self.cancel_all()
        self.pool.waitForDone(timeout_ms)

