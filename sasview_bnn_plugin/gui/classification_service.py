"""Classification off the GUI thread: one model, many jobs, results delivered as Qt signals.

:class:`ClassificationService` owns the :class:`GuiSettings` and the plugin
host, opens the chosen model once (re-opened only when the settings change)
and runs :class:`ClassificationJob` objects on a ``QThreadPool``. A job
classifies its curves in chunks, emitting ``progress(done, total)`` and
``chunk_done(first_index, results)`` after every chunk, so that a batch of
hundreds of curves fills the table while the GUI stays responsive; any
failure (missing or damaged model, unexpected error) arrives as
``failed(message)`` in words for a scientist, never as a traceback.

Stopping is bounded and safe at any moment: :meth:`ClassificationService.shutdown`
cancels every job (checked between chunks), detaches its callbacks so that no
result reaches a widget that is closing or already deleted, and waits at most
``timeout_ms`` for the worker thread. It runs when the perspective closes, when
SasView quits (its ``closeSignal``), when the Qt application quits
(``aboutToQuit``) and, for a script that simply ends, at interpreter exit
(:mod:`atexit`), so that no worker thread is still running Python code while
Qt and Python tear down.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Sequence

from PySide6 import QtCore

from ..model.calibration import CalibrationError
from ..model.classifier import BNNClassifier
from ..core.curve import Curve
from ..model.catalog import ModelNotFoundError, ModelSource, resolve_model
from ..core.model_format import ModelFormatError
from ..plugins.host import PluginHost, build_plugin_host
from ..core.q_units import shown
from ..core.result import ClassificationResult
from .settings import GuiSettings

log = logging.getLogger(__name__)

#: Curves per chunk: small enough for smooth progress, large enough for efficient ONNX batches.
CHUNK_SIZE = 32

#: How long closing waits for the chunk being classified, in milliseconds (a chunk takes well under a second).
SHUTDOWN_TIMEOUT_MS = 5000

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

    def detach(self) -> None:
        """Drop the caller's callbacks: signals still queued (or emitted later) reach nobody."""
        self._on_chunk = self._on_progress = self._on_failed = self._on_finished = None

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
        self.relay: _CallbackRelay | None = None
        #: Curves classified so far (read from any thread; for progress and tests).
        self.curves_done = 0

    def cancel(self) -> None:
        """Stop after the chunk being classified; results already delivered stay."""
        self._cancelled.set()

    def detach(self) -> None:
        """Cancel and drop the callbacks (nothing more is delivered); for closing windows and quitting."""
        self._cancelled.set()
        if self.relay is not None:
            self.relay.detach()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        """True once :meth:`run` has returned (or the job was taken off the queue before it started)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished, at most ``timeout`` seconds (releases the GIL); True if it did."""
        return self._done.wait(timeout)

    def mark_done(self) -> None:
        """Record that the job will never run (it was taken off the pool's queue)."""
        self._done.set()

    def _emit(self, signal: QtCore.SignalInstance, *args: object) -> bool:
        """Emit ``signal``; if its object is gone (the application is tearing down) cancel instead and return False."""
        try:
            signal.emit(*args)
            return True
        except RuntimeError:  # "Signal source has been deleted": nobody is left to receive
            self._cancelled.set()
            return False

    def run(self) -> None:  # runs in a pool thread
        try:
            total = len(self.curves)
            if self.cancelled:  # cancelled while queued: do not even open the model
                return
            try:
                classifier = self.service.classifier()
            except ModelUnavailableError as err:
                self._emit(self.signals.failed, str(err))
                return
            self._emit(self.signals.progress, 0, total)
            for start in range(0, total, self.chunk_size):
                if self.cancelled:  # the cancellation point: between chunks
                    break
                chunk = self.curves[start : start + self.chunk_size]
                results = classifier.classify(chunk)
                self.curves_done = start + len(chunk)
                if not (self._emit(self.signals.chunk_done, start, results) and self._emit(self.signals.progress, self.curves_done, total)):
                    break
        except Exception as err:  # never let a worker thread die silently or show a traceback
            log.debug("classification job failed", exc_info=True)
            self._emit(self.signals.failed, f"classification failed: {type(err).__name__}: {err}")
        finally:
            self._emit(self.signals.finished)
            # Last: whoever waits for the job may tear the signals down as soon as this is set.
            self._done.set()


class ClassificationService(QtCore.QObject):
    """The model in use and the thread pool that runs classification jobs.

    Parameters
    ----------
    settings:
        Model, provider, novelty threshold and the q unit of data without one;
        :meth:`apply_settings` changes them.
    plugin_host:
        Supplies plugin models, raw-curve steps and result sinks; built
        (with installed entry-point plugins) when None.
    chunk_size:
        Curves classified between two deliveries of results (and two checks
        for cancellation); :data:`CHUNK_SIZE` by default.
    """

    #: Emitted after the settings changed (the model is re-opened lazily).
    settings_changed = QtCore.Signal()

    def __init__(
        self,
        settings: GuiSettings | None = None,
        plugin_host: PluginHost | None = None,
        parent: QtCore.QObject | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        super().__init__(parent)
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1 curve")
        self.chunk_size = int(chunk_size)
        self.settings = settings if settings is not None else GuiSettings.load()
        self.plugin_host = plugin_host if plugin_host is not None else build_plugin_host()
        self._lock = threading.Lock()
        self._classifier: BNNClassifier | None = None
        self._classifier_key: tuple | None = None
        self.pool = QtCore.QThreadPool(self)
        # One classification at a time: onnxruntime already uses every core for one batch.
        self.pool.setMaxThreadCount(1)
        self._jobs: list[ClassificationJob] = []
        app = QtCore.QCoreApplication.instance()
        if app is not None:  # quitting Qt's event loop (SasView's own quit path is the perspective's business)
            app.aboutToQuit.connect(self.shutdown)
        _LIVE_SERVICES.add(self)

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
        """The open classifier for the current settings (opened once, thread-safe).

        The model catalog is read when the classifier is (re)opened, not on every job.
        """
        with self._lock:
            key = (self.settings.model, self.settings.provider, self.settings.novelty_threshold, self.settings.q_unit, self.settings.calibration)
            if self._classifier is None or self._classifier_key != key:
                source = self.model_source()
                try:
                    self._classifier = BNNClassifier(
                        source.path,
                        provider=self.settings.provider,
                        novelty_threshold=self.settings.novelty_threshold,
                        plugin_host=self.plugin_host,
                        name=source.name,
                        q_unit=self.settings.q_unit,
                        calibration=self.settings.calibration or None,
                    )
                except CalibrationError as err:
                    self._classifier = None
                    raise ModelUnavailableError(
                        f"{err}. Choose another calibration file (or none) in Preferences > BNN Anomaly."
                    ) from None
                except (ModelFormatError, ModelNotFoundError, OSError) as err:
                    self._classifier = None
                    raise ModelUnavailableError(f"{err}. Choose another model in Preferences > BNN Anomaly.") from None
                self._classifier_key = key
            return self._classifier

    def loaded_classifier(self) -> BNNClassifier | None:
        """The classifier of the last job if one is open (never opens one)."""
        return self._classifier

    def describe_model(self) -> str:
        """One line naming the model in use, or why there is none."""
        try:
            source = self.model_source()
        except ModelUnavailableError as err:
            return str(err)
        threshold = "" if self.settings.novelty_threshold is None else f", novelty threshold {self.settings.novelty_threshold:g}"
        unit = "" if self.settings.q_unit == "auto" else f", q of files without a unit read as {shown(self.settings.q_unit)}"
        calibration = f", instrument calibration {Path(self.settings.calibration).name}" if self.settings.calibration else ""
        return f"Model: {source.name} ({source.path.name}), provider {self.settings.provider}{threshold}{unit}{calibration}"

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
        chunk_size: int | None = None,
    ) -> ClassificationJob:
        """Start classifying ``curves``; the callbacks run in the GUI thread.

        ``on_chunk(first_index, results)`` receives each chunk's results (indices
        into ``curves``), ``on_progress(done, total)`` follows every chunk,
        ``on_failed(message)`` reports a model that cannot be used or an
        unexpected error, ``on_finished()`` comes last, always -- unless
        :meth:`shutdown` detached the job first: then nothing more is called.
        ``chunk_size`` defaults to the service's :attr:`chunk_size`.
        """
        job = ClassificationJob(self, curves, self.chunk_size if chunk_size is None else chunk_size)
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

    @property
    def jobs(self) -> list[ClassificationJob]:
        """The jobs queued or running (a copy)."""
        return list(self._jobs)

    def shutdown(self, timeout_ms: int = SHUTDOWN_TIMEOUT_MS) -> bool:
        """Stop every job for good and wait, at most ``timeout_ms``, for the worker thread; True if it stopped.

        Queued jobs are taken off the queue, the running one stops after its
        current chunk; all are detached first, so no callback runs any more
        (their windows may be closing). The wait releases the GIL, so the
        worker can finish its chunk. The service stays usable: a later
        :meth:`submit` starts a new job.
        """
        jobs = list(self._jobs)
        if not jobs:
            return True
        deadline = time.monotonic() + max(0, timeout_ms) / 1000.0
        for job in jobs:
            job.detach()
            if self._pool_call(lambda j=job: self.pool.tryTake(j)):
                job.mark_done()
        stopped = all(job.wait(max(0.0, deadline - time.monotonic())) for job in jobs)
        # The pool thread returns from run() just after the job's done flag: wait for that too.
        remaining_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
        stopped = bool(self._pool_call(lambda: self.pool.waitForDone(remaining_ms), default=True)) and stopped
        for job in jobs:
            if job.done:
                self._forget(job)
        if not stopped:
            log.warning("sasview-bnn: classification did not stop within %d ms; it ends after its current chunk", timeout_ms)
        return stopped

    def _pool_call(self, call: Callable[[], object], default: object = False) -> object:
        """``call()`` on the thread pool, or ``default`` when Qt already deleted it (the application is tearing down)."""
        try:
            return call()
        except RuntimeError:
            return default


#: Services that may have running jobs, stopped at interpreter exit (a script may end while a job runs).
_LIVE_SERVICES: "weakref.WeakSet[ClassificationService]" = weakref.WeakSet()


@atexit.register
def _shut_down_live_services() -> None:
    """Stop every service's jobs before Python and Qt tear down (a worker must not run Python code then)."""
    for service in list(_LIVE_SERVICES):
        try:
            service.shutdown()
        except RuntimeError:  # the service's Qt object is already gone, and with it its pool
            pass

