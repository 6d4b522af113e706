"""Live classification in Bluesky: a verdict for every curve of a scan, as documents of the run.

Needs the ``[bluesky]`` extra (bluesky, event-model; ophyd for the tests); nothing
else in the package imports this module.

:class:`BNNCallback` is an :class:`event_model.DocumentRouter` that a beamline
subscribes to its RunEngine::

    from bluesky import RunEngine
    from sasview_bnn_plugin.bluesky import BNNCallback

    RE = RunEngine()
    docs = []
    bnn = BNNCallback(emit=docs.append, q_field="q", intensity_field="I", error_field="dI")
    RE.subscribe(bnn)

For every event of the watched streams (default ``"primary"``) carrying a
reduced curve (fields ``q``, ``I`` and optionally ``dI``, arrays of shape
(points,)) it classifies the curve with its one :class:`BNNClassifier` (one
onnxruntime session for all runs) and:

- emits the verdict as documents of the same run: one EventDescriptor of its
  own stream (``stream_name``, default ``"bnn_verdicts"``, ``run_start`` the
  run's uid) before the first verdict, then one Event per curve whose data are
  the ``sasview-bnn classify`` CSV columns (label, confidence,
  anomaly_probability, entropy, novelty_score, is_novel, status, message,
  p_<class>, anomalies_present, prediction_set, set_level, novelty_p_value,
  p_present_<anomaly>, q_unit_used; lists joined with ";", NaN where the model
  has no such output) plus ``anomalous`` and the event judged
  (``source_stream``, ``source_seq_num``, ``source_event``). They go to
  ``emit``: a callable taking ``(name, doc)`` (a Tiled/databroker writer,
  :func:`emit_to_run_engine` so that every subscriber of the RunEngine stores
  them beside the data) or one ``(name, doc)`` pair (``list.append``);
- writes the usual results file if ``output`` is given (``.csv`` or
  ``.jsonl``, appended one row per curve through
  :class:`~sasview_bnn_plugin.io.result_stream.ResultStream`, one locked writer);
  the ``file`` column is the run's uid, ``dataset`` "<stream> event <seq_num>";
- publishes the result through the plugin host: the ``sasview_bnn_result``
  hook, and ``sasview_bnn_anomaly`` for an anomalous or novel curve.

The q unit is the ``units`` of the q field in the descriptor's ``data_keys``,
else ``q_unit`` (default None: the runtime decides it from the q range and the
model, and the verdict says which unit was used and why).

An event with a 2D detector frame in ``image_field`` instead of ``I`` is
reduced to I(q) by the first plugin implementing ``sasview_bnn_reduce_frame``
(e.g. a radial average with pyFAI), then classified. Images stored as external
data must be filled: subscribe :func:`bnn_run_router` with a handler registry.

A bad event (fields missing, data not numbers, non-finite, too few points, no
reducer) gets an error verdict (``status`` "error", ``message`` says why).
Nothing raises into the RunEngine: a failure of the callback itself, of
``emit`` or of the results file is logged and listed in :attr:`BNNCallback.problems`,
and the scan goes on. Classification runs on the RunEngine's event-loop
thread, a few milliseconds per curve (a reducer plugin adds its own time).

Closed loop: :class:`PauseOnAnomalies`, a plugin of the anomaly hook, pauses
the scan after N anomalous (or novel) curves in a row; the user inspects the
sample, calls :meth:`PauseOnAnomalies.clear` and ``RE.resume()``.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import numpy as np

from .core.extras import extra_install_hint
from .plugins.hookspecs import hookimpl
from .plugins.host import PluginHost, build_plugin_host, is_anomalous
from .core.result import ClassificationResult

try:
    import event_model
    from event_model import DocumentNames, DocumentRouter, Filler, RunRouter
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(f"sasview_bnn_plugin.bluesky needs event-model and bluesky: {extra_install_hint('bluesky')}") from err

if TYPE_CHECKING:
    from .model.classifier import BNNClassifier

log = logging.getLogger(__name__)

#: Default name of the verdict stream in each run.
VERDICT_STREAM = "bnn_verdicts"
#: The ``source`` of every verdict data key.
VERDICT_SOURCE = "sasview-bnn"
#: Result columns that the verdict event replaces by the run and event it judges.
_LOCATION_COLUMNS = ("file", "dataset")
#: At most this many problem messages are kept (a failing sink must not grow memory over a beamtime).
MAX_PROBLEMS = 100


def _python_value(value: Any) -> Any:
    """A plain Python str/bool/int/float for a document (numpy scalars converted)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return "" if value is None else str(value)


def _dtype(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def verdict_data(result: ClassificationResult, stream: str = "", seq_num: int = 0, event_uid: str = "") -> dict[str, Any]:
    """The data of one verdict event: the result's CSV columns (less file, dataset), ``anomalous`` and the event judged."""
    data = {k: _python_value(v) for k, v in result.to_row().items() if k not in _LOCATION_COLUMNS}
    data["is_novel"] = bool(result.is_novel)  # the CSV's "" for a refused curve: False (``status`` says it was refused)
    data["anomalous"] = is_anomalous(result)
    data["source_stream"] = str(stream)
    data["source_seq_num"] = int(seq_num)
    data["source_event"] = str(event_uid)
    return data


def verdict_data_keys() -> dict[str, dict[str, Any]]:
    """The descriptor ``data_keys`` of the verdict stream (every key a scalar: shape [])."""
    template = verdict_data(ClassificationResult.error("", "", ""))
    return {key: {"source": VERDICT_SOURCE, "dtype": _dtype(value), "shape": []} for key, value in template.items()}


def _document_name(name: Any) -> str:
    return name.name if isinstance(name, DocumentNames) else str(name)


def _emitter(emit: Callable[..., Any] | None) -> Callable[[str, dict], Any] | None:
    """``emit`` as a function of (name, doc): a callable of one argument gets the pair (name, doc)."""
    if emit is None:
        return None
    if not callable(emit):
        raise TypeError(f"emit must be callable, not {type(emit).__name__}")
    try:
        signature = inspect.signature(emit)
    except (TypeError, ValueError):  # no signature to read (some builtins): assume the bluesky (name, doc)
        return emit
    try:
        signature.bind(None, None)
        return emit
    except TypeError:
        pass
    try:
        signature.bind(None)
    except TypeError:
        raise TypeError("emit must take (name, doc), as a bluesky callback does, or one (name, doc) pair, as list.append does") from None
    return lambda name, doc: emit((name, doc))


def emit_to_run_engine(RE: Any) -> Callable[[str, dict], None]:
    """An ``emit`` that hands each verdict document to every callback subscribed to ``RE``.

    So a TiledWriter, databroker or BestEffortCallback subscribed to the
    RunEngine stores (or shows) the verdict stream beside the data of the run.
    The :class:`BNNCallback` itself receives its own documents back and ignores them.
    """

    def emit(name: str, doc: dict) -> None:
        RE.dispatcher.process(DocumentNames[_document_name(name)], doc)

    return emit


@dataclass
class _Run:
    """What the callback keeps about one open run."""

    start: dict
    #: The verdict stream's descriptor bundle (descriptor, compose_event), made at the first verdict.
    verdicts: Any = None
    streams: dict = field(default_factory=dict)
    event_counters: dict = field(default_factory=dict)
    descriptors: set[str] = field(default_factory=set)


class BNNCallback(DocumentRouter):
    """Classifies every curve of a Bluesky scan and emits the verdicts as a stream of the run (see the module docstring).

    Parameters
    ----------
    emit:
        Receives the verdict documents: ``emit(name, doc)`` (bluesky's
        callback signature) or ``emit((name, doc))`` (e.g. ``list.append``).
        Held by a strong reference (a lambda is fine). None: no documents.
    classifier:
        An open :class:`~sasview_bnn_plugin.model.classifier.BNNClassifier`; by
        default one is opened once here on ``model`` (a name or ONNX file;
        None: the shipped model) with ``classifier_options``.
    plugin_host:
        Where results are published and frames reduced; default the
        classifier's host, else :func:`build_plugin_host` (entry-point plugins loaded).
    plugins:
        Extra plugin objects registered into that host (e.g. a :class:`PauseOnAnomalies`).
    q_field, intensity_field, error_field:
        Field names of q, I and dI in the events (``error_field`` None or
        absent: no dI).
    image_field:
        Field of a 2D detector frame, used when an event has no ``intensity_field``.
    q_unit:
        The q unit when the descriptor gives none: "1/A", "1/nm", or None/"auto"
        (the runtime decides). A reducer plugin's own unit wins for its curves.
    streams:
        Names of the streams whose events are classified (default "primary");
        None: every stream whose descriptor has ``intensity_field`` or ``image_field``.
    stream_name:
        Name of the verdict stream.
    output:
        A results file (``.csv`` or ``.jsonl``, appended; ``-``: CSV on
        standard output), opened once here and written one row per curve.
        Raises :class:`~sasview_bnn_plugin.io.result_stream.ResultsFileError`
        here (not during a scan) if it cannot be opened or is in use.
    """

    def __init__(
        self,
        emit: Callable[..., Any] | None = None,
        *,
        classifier: "BNNClassifier | None" = None,
        model: str | os.PathLike[str] | None = None,
        plugin_host: PluginHost | None = None,
        plugins: Iterable[object] = (),
        q_field: str = "q",
        intensity_field: str = "I",
        error_field: str | None = "dI",
        image_field: str | None = None,
        q_unit: str | None = None,
        streams: Iterable[str] | None = ("primary",),
        stream_name: str = VERDICT_STREAM,
        output: str | os.PathLike[str] | None = None,
        **classifier_options: Any,
    ) -> None:
        if classifier is not None and (classifier_options or model is not None):
            raise TypeError("give either an open classifier or model and classifier options, not both")
        super().__init__()  # no weak-referenced emit: ours is held strongly below
        self._emit = _emitter(emit)
        if plugin_host is None:
            plugin_host = classifier.plugin_host if classifier is not None and classifier.plugin_host is not None else build_plugin_host()
        self.host = plugin_host
        for plugin in plugins:
            self.host.manager.register(plugin)
        if classifier is None:
            from .model.classifier import BNNClassifier
            from .model.catalog import resolve_model

            source = resolve_model(model, self.host.models())
            classifier = BNNClassifier(source.path, plugin_host=self.host, name=source.name, **classifier_options)
        #: The one classifier (one onnxruntime session) used for every curve of every run.
        self.classifier = classifier
        self.q_field = q_field
        self.intensity_field = intensity_field
        self.error_field = error_field
        self.image_field = image_field
        self.q_unit = None if q_unit is None or str(q_unit).strip().lower() in ("", "auto") else str(q_unit)
        self.streams = None if streams is None else frozenset([streams] if isinstance(streams, str) else streams)
        self.stream_name = stream_name
        #: Messages about failures of this callback, its ``emit`` or its results file (the scan went on), newest last.
        self.problems: deque[str] = deque(maxlen=MAX_PROBLEMS)
        #: The latest verdict (None before the first).
        self.last_result: ClassificationResult | None = None
        self.n_verdicts = 0
        self.n_refused = 0
        self._data_keys = verdict_data_keys()
        self._runs: dict[str, _Run] = {}
        self._descriptors: dict[str, dict] = {}
        self._own_descriptors: set[str] = set()
        self._stream = None
        if output is not None:
            from .io.result_stream import ResultStream

            destination = os.fspath(output)
            extra = {"model": classifier.name, "model_path": str(classifier.model_path), "provider": classifier.providers.device}
            self._stream = ResultStream(destination, mode="new" if destination == "-" else "append", extra=extra)
            self._stream.open()

    # -- documents in ---------------------------------------------------------------------------

    def __call__(self, name: Any, doc: dict, validate: bool = False) -> tuple[str, dict]:
        """Process one document; never raises (a failure is logged and listed in :attr:`problems`)."""
        try:
            return super().__call__(_document_name(name), doc, validate)
        except Exception as err:
            self._problem(f"the verdict callback failed on a {_document_name(name)} document: {type(err).__name__}: {err}", exc=True)
            return _document_name(name), doc

    def factory(self, name: str, start_doc: dict) -> tuple[list[Callable], list[Callable]]:
        """A :class:`event_model.RunRouter` factory: this callback receives every run (see :func:`bnn_run_router`)."""
        return [self], []

    def start(self, doc: dict) -> None:
        self._runs[doc["uid"]] = _Run(start=doc)

    def descriptor(self, doc: dict) -> None:
        if doc["uid"] in self._own_descriptors or doc.get("name") == self.stream_name:
            return  # our own verdict stream (emitted back to us through the RunEngine), or one like it
        run = self._run(doc["run_start"])
        self._descriptors[doc["uid"]] = doc
        run.descriptors.add(doc["uid"])

    def event(self, doc: dict) -> None:
        descriptor = self._descriptors.get(doc["descriptor"])
        if descriptor is None:
            return  # our own verdicts, or a stream whose descriptor this callback never saw
        if not self._watched(descriptor):
            return
        run = self._run(descriptor["run_start"])
        stream = str(descriptor.get("name", ""))
        seq_num = int(doc.get("seq_num", 0))
        file, dataset = str(run.start["uid"]), f"{stream} event {seq_num}"
        try:
            result, published = self._judge(descriptor, run, doc, file, dataset)
        except Exception as err:  # a bug, not the event's fault: still one verdict for it
            self._problem(f"classifying {dataset} of run {file} failed: {type(err).__name__}: {err}", exc=True)
            result, published = self._refused(file, dataset, f"sasview-bnn failed on this event ({type(err).__name__}: {err}; see the log)"), False
        if not published:
            self.host.publish_result(result)
        self._record(result)
        self._emit_verdict(run, result, stream, seq_num, str(doc.get("uid", "")))

    def stop(self, doc: dict) -> None:
        run = self._runs.pop(doc["run_start"], None)
        if run is not None:
            for uid in run.descriptors:
                self._descriptors.pop(uid, None)
            if run.verdicts is not None:
                self._own_descriptors.discard(run.verdicts.descriptor_doc["uid"])

    # -- judging one event ----------------------------------------------------------------------------

    def _run(self, start_uid: str) -> _Run:
        run = self._runs.get(start_uid)
        if run is None:  # subscribed in the middle of a run: the descriptor's run_start is all we know
            run = self._runs[start_uid] = _Run(start={"uid": start_uid})
        return run

    def _watched(self, descriptor: dict) -> bool:
        if self.streams is not None:
            return descriptor.get("name") in self.streams
        keys = descriptor.get("data_keys", {})
        return self.intensity_field in keys or (self.image_field is not None and self.image_field in keys)

    def _refused(self, file: str, dataset: str, message: str) -> ClassificationResult:
        return ClassificationResult.error(file, dataset, message, model=self.classifier.name)

    def _judge(self, descriptor: dict, run: _Run, event: dict, file: str, dataset: str) -> tuple[ClassificationResult, bool]:
        """The verdict on one event and whether the classifier already published it."""
        data = event.get("data", {})
        keys = descriptor.get("data_keys", {})
        if self.intensity_field in data:
            missing = self._unfilled(event, [self.q_field, self.intensity_field, self.error_field])
            if self.q_field not in data:
                return self._refused(file, dataset, f"the event has {self.intensity_field!r} but no q field {self.q_field!r}"), False
            if missing:
                return self._refused(file, dataset, missing), False
            q, intensity = data[self.q_field], data[self.intensity_field]
            d_intensity = data.get(self.error_field) if self.error_field else None
            unit = keys.get(self.q_field, {}).get("units") or self.q_unit
        elif self.image_field is not None and self.image_field in data:
            missing = self._unfilled(event, [self.image_field])
            if missing:
                return self._refused(file, dataset, missing), False
            reduced = self._reduce(descriptor, run, event)
            if isinstance(reduced, str):
                return self._refused(file, dataset, reduced), False
            q, intensity, d_intensity, unit = reduced
            unit = unit or self.q_unit
        else:
            wanted = repr(self.intensity_field) + (f" nor a 2D frame {self.image_field!r}" if self.image_field else "")
            return self._refused(file, dataset, f"the event has no intensity field {wanted} (fields: {', '.join(sorted(data)) or 'none'})"), False
        if isinstance(unit, str) and unit.strip().lower() == "auto":
            unit = None
        result = self.classifier.classify_curve(q, intensity, d_intensity, q_unit=unit, source=file, dataset=dataset)
        return result, self.classifier.plugin_host is self.host

    def _unfilled(self, event: dict, names: list[str | None]) -> str | None:
        """Why a field holds a reference to external data instead of the data (None: all filled)."""
        data, filled = event.get("data", {}), event.get("filled", {})
        for name in names:
            if name is None or name not in data:
                continue
            if filled.get(name) is False or isinstance(data[name], str):
                return (
                    f"the field {name!r} holds a reference to external data ({data[name]!r}), not the data: subscribe "
                    "through bnn_run_router(callback, handler_registry=...) with a handler for its spec"
                )
        return None

    def _reduce(self, descriptor: dict, run: _Run, event: dict) -> tuple[Any, Any, Any, str | None] | str:
        """The curve (q, I, dI, q_unit) a reducer plugin makes of the event's frame, or why there is none."""
        name = self.image_field
        assert name is not None
        try:
            frame = np.asarray(event["data"][name])
        except Exception:
            return f"the field {name!r} is not an array"
        while frame.ndim > 2 and frame.shape[0] == 1:  # area detectors often give (1, rows, columns)
            frame = frame[0]
        if frame.ndim != 2:
            return f"the field {name!r} has shape {frame.shape}, not a 2D detector frame (rows, columns)"
        metadata = {
            "field": name,
            "data_key": dict(descriptor.get("data_keys", {}).get(name, {})),
            "start": run.start,
            "descriptor": descriptor,
            "event": event,
        }
        out = self.host.reduce_frame(frame=frame, metadata=metadata)
        if out is None:
            return (
                f"no plugin reduced the 2D frame in {name!r} to I(q): install or register one implementing "
                "sasview_bnn_reduce_frame"
            )
        if not isinstance(out, (tuple, list)) or not 2 <= len(out) <= 4:
            return f"the reducer plugin returned {type(out).__name__}, not (q, I, dI, q_unit)"
        q, intensity, d_intensity, unit = (list(out) + [None, None])[:4]
        if unit is not None and not isinstance(unit, str):
            unit = str(unit)
        return q, intensity, d_intensity, unit

    # -- results out -----------------------------------------------------------------------------------

    def _record(self, result: ClassificationResult) -> None:
        self.last_result = result
        self.n_verdicts += 1
        self.n_refused += not result.ok
        if self._stream is not None:
            try:
                self._stream.write([result])
            except Exception as err:  # e.g. disk full: the file keeps whole rows; the scan goes on
                self._problem(f"the results file could not be written: {err}")

    def _emit_verdict(self, run: _Run, result: ClassificationResult, stream: str, seq_num: int, event_uid: str) -> None:
        if self._emit is None:
            return
        now = time.time()
        if run.verdicts is None:
            configuration = self._configuration(now)
            run.verdicts = event_model.compose_descriptor(
                start=run.start,
                streams=run.streams,
                event_counters=run.event_counters,
                name=self.stream_name,
                data_keys=self._data_keys,
                configuration=configuration,
                object_keys={VERDICT_SOURCE: list(self._data_keys)},
                hints={VERDICT_SOURCE: {"fields": ["confidence", "anomaly_probability", "novelty_score"]}},
            )
            self._own_descriptors.add(run.verdicts.descriptor_doc["uid"])  # before emitting: it may come straight back
            self.emit("descriptor", run.verdicts.descriptor_doc)
        data = verdict_data(result, stream, seq_num, event_uid)
        doc = run.verdicts.compose_event(data=data, timestamps={key: now for key in data}, time=now)
        self.emit("event", doc)

    def _configuration(self, now: float) -> dict[str, Any]:
        from . import __version__

        clf = self.classifier
        values = {
            "model": clf.name,
            "model_file": str(clf.model_path),
            "provider": clf.providers.device,
            "sasview_bnn_version": __version__,
        }
        return {
            VERDICT_SOURCE: {
                "data": values,
                "timestamps": {key: now for key in values},
                "data_keys": {key: {"source": VERDICT_SOURCE, "dtype": "string", "shape": []} for key in values},
            }
        }

    def emit(self, name: str, doc: dict) -> None:
        """Hand one verdict document to ``emit``; a failure there is logged, never raised."""
        if self._emit is None:
            return
        try:
            self._emit(name, doc)
        except Exception as err:
            self._problem(f"emit failed on a {name} document: {type(err).__name__}: {err}", exc=True)

    def _problem(self, message: str, exc: bool = False) -> None:
        if exc:
            log.exception("sasview-bnn: %s", message)
        else:
            log.warning("sasview-bnn: %s", message)
        self.problems.append(message)

    # -- closing ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the results file (what was written stays; idempotent)."""
        if self._stream is not None:
            self._stream.close()

    def __enter__(self) -> "BNNCallback":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TolerantFiller(Filler):
    """A Filler that leaves an event unfilled instead of raising when its external data cannot be read.

    The callback then gives that event an error verdict saying the data were not filled.
    """

    def event_page(self, doc: dict) -> dict:
        return self._filled(super().event_page, doc, "an event page")

    def event(self, doc: dict) -> dict:
        return self._filled(super().event, doc, "an event")

    @staticmethod
    def _filled(fill: Callable[[dict], dict], doc: dict, what: str) -> dict:
        """``fill(doc)``, or ``doc`` unfilled (logged) when its external data cannot be read."""
        try:
            return fill(doc)
        except Exception as err:
            log.warning("sasview-bnn: external data of %s could not be filled: %s: %s", what, type(err).__name__, err)
            return doc


class _SafeRunRouter(RunRouter):
    """A RunRouter that never raises into the RunEngine (e.g. subscribed in the middle of a run)."""

    def __call__(self, name: Any, doc: dict, validate: bool = False) -> tuple[str, dict]:
        try:
            return super().__call__(_document_name(name), doc, validate)
        except Exception as err:
            log.warning("sasview-bnn: the run router dropped a %s document: %s: %s", _document_name(name), type(err).__name__, err)
            return _document_name(name), doc


def bnn_run_router(
    callback: BNNCallback,
    handler_registry: Mapping[str, Any] | None = None,
    *,
    root_map: Mapping[str, str] | None = None,
) -> RunRouter:
    """A :class:`event_model.RunRouter` that hands every run to ``callback``, with external data filled.

    ``handler_registry`` (spec -> handler class, as for :class:`event_model.Filler`)
    fills events whose curves or frames are stored outside the documents (area
    detectors); data that cannot be read leave the event unfilled and it gets an
    error verdict. Subscribe the router instead of the callback:
    ``RE.subscribe(bnn_run_router(bnn, {"AD_HDF5": HDF5Handler}))``.
    """
    return _SafeRunRouter(
        [callback.factory],
        handler_registry=dict(handler_registry or {}),
        root_map=dict(root_map) if root_map else None,
        filler_class=_TolerantFiller,
    )


class PauseOnAnomalies:
    """Pauses a Bluesky RunEngine after ``n`` anomalous (or novel) curves in a row; resumes when cleared.

    A sasview-bnn plugin (hooks ``sasview_bnn_result`` and
    ``sasview_bnn_anomaly``): give it to the callback,
    ``BNNCallback(..., plugins=[pause])``, or register it with any plugin host.
    A clean, in-distribution curve resets the count; a refused curve neither
    counts nor resets it. With ``novel_only`` only novel curves count (an
    anomalous curve the model knows resets the count).

    After the ``n``-th curve in a row it is *tripped* (:attr:`tripped`,
    :attr:`justification`) and asks the RunEngine to pause the way bluesky's
    own Ctrl-C handler does: ``RE.request_pause(defer=...)`` from a thread of
    its own (the callback runs on the RunEngine's event loop, where
    ``request_pause`` would wait for itself). ``defer=True`` (default) is
    bluesky's soft pause: at the next checkpoint (in a ``count`` or ``scan``:
    before the next point), so every point is measured once; ``defer=False``
    pauses at once and rewinds to the last checkpoint, and bluesky measures
    again from there on resume (the point just judged is taken a second time).
    ``RE(plan)`` then raises ``RunEngineInterrupted`` and ``RE.state`` is
    "paused". When the user has looked at the sample: :meth:`clear`, then
    ``RE.resume()`` (or :meth:`resume`, both at once); ``RE.abort()`` or
    ``RE.stop()`` end the scan as usual. Until cleared, every further
    anomalous curve asks for a pause again. A scan that ended before the
    pause could land is not paused (the request is logged); the pauser stays
    tripped until cleared.
    """

    def __init__(self, RE: Any, n: int = 3, *, novel_only: bool = False, defer: bool = True) -> None:
        if int(n) < 1:
            raise ValueError("n must be at least 1")
        self.RE = RE
        self.n = int(n)
        self.novel_only = bool(novel_only)
        self.defer = bool(defer)
        #: Anomalous (or novel) curves in a row so far.
        self.in_a_row = 0
        self.tripped = False
        #: Why it tripped ("" while not tripped), as bluesky's suspenders say it.
        self.justification = ""
        #: The results that made it trip (the last ``n``).
        self.recent: deque[ClassificationResult] = deque(maxlen=self.n)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        what = "novel" if self.novel_only else "anomalous"
        return f"PauseOnAnomalies(n={self.n}, {what}, in_a_row={self.in_a_row}, tripped={self.tripped})"

    @hookimpl
    def sasview_bnn_result(self, result: ClassificationResult) -> None:
        if result.ok and not is_anomalous(result):
            with self._lock:
                self.in_a_row = 0
                self.recent.clear()

    @hookimpl
    def sasview_bnn_anomaly(self, result: ClassificationResult) -> None:
        with self._lock:
            if self.novel_only and not result.is_novel:
                self.in_a_row = 0
                self.recent.clear()
                return
            self.in_a_row += 1
            self.recent.append(result)
            if self.in_a_row < self.n:
                return
            self.tripped = True
            what = "novel" if self.novel_only else "anomalous or novel"
            self.justification = (
                f"{self.in_a_row} {what} curves in a row; the last: {result.dataset} of run {result.file}: {result.message}"
            )
            justification = self.justification
        print(
            f"sasview-bnn: pausing the scan: {justification}. When the sample is checked: pause.clear(); RE.resume()",
            file=sys.stderr,
        )
        log.info("sasview-bnn: pausing the scan: %s", justification)  # printed above for the console, as bluesky does
        threading.Thread(target=self._request_pause, name="sasview-bnn-pause", daemon=True).start()

    def _request_pause(self) -> None:
        try:
            self.RE.request_pause(defer=self.defer)
        except Exception as err:  # TransitionError: the scan already ended or is pausing; a panicked RunEngine
            log.warning("sasview-bnn: the RunEngine could not be paused (state %s): %s", getattr(self.RE, "state", "?"), err)

    def clear(self) -> None:
        """Reset: not tripped, no anomalous curves counted. Then ``RE.resume()`` goes on without a new pause."""
        with self._lock:
            self.tripped = False
            self.justification = ""
            self.in_a_row = 0
            self.recent.clear()

    def resume(self) -> Any:
        """:meth:`clear`, then ``RE.resume()`` (its return value; RunEngineInterrupted if it pauses again)."""
        self.clear()
        return self.RE.resume()


__all__ = [
    "BNNCallback",
    "PauseOnAnomalies",
    "VERDICT_STREAM",
    "bnn_run_router",
    "emit_to_run_engine",
    "verdict_data",
    "verdict_data_keys",
]
