"""The plugin manager: loads plugins and calls their hooks through pluggy, isolating their failures.

Build one with :func:`build_plugin_host`; nothing is global. Every hook is
called the pluggy way, ``manager.hook.<name>(...)``, so pluggy's own call loop
runs the implementations: later-registered plugins first, ``tryfirst`` and
``trylast`` respected, ``wrapper=True`` and old-style ``hookwrapper=True``
implementations around the others, each implementation given only the spec
arguments it declares.

Failures are isolated by :class:`IsolatingPluginManager`: when a plugin is
registered, each of its :class:`pluggy.HookImpl` objects gets its ``function``
replaced by a layer made with :func:`functools.wraps` (so the signature, and
the argument names pluggy reads, stay the plugin's):

- a plain implementation that raises is logged with its plugin's name and
  recorded in :attr:`PluginHost.problems`, and returns None, which pluggy
  leaves out of the results: the other plugins, and classification, carry on;
- a wrapper whose own code raises (or that does not yield exactly once) is
  reported the same way and becomes transparent: the result it wraps passes
  through unchanged. An exception raised inside the call is still thrown into
  it, as pluggy documents.

The same layer checks return values (a ``Curve`` from the raw-curve step, a
list from the list hooks; anything else is reported and dropped), records the
contributor of every :class:`~.model_catalog.ModelSource` (also of one added
by a wrapper), and chains the raw-curve step: each implementation receives
the previous one's output instead of the raw curve (the per-call state lives in
a :class:`contextvars.ContextVar` set by pluggy's hook-call monitoring, so
concurrent calls in other threads do not mix).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar, Token
from pathlib import Path
from typing import Any

import pluggy

from . import builtin as builtin_plugin, hookspecs
from ..core.curve import Curve
from ..model.catalog import LazyCard, ModelSource
from ..core.result import ClassificationResult

log = logging.getLogger(__name__)

PREPARE_HOOK = "sasview_bnn_prepare_raw_curve"
MODELS_HOOK = "sasview_bnn_models"
RESULT_HOOK = "sasview_bnn_result"
ANOMALY_HOOK = "sasview_bnn_anomaly"
REDUCE_HOOK = "sasview_bnn_reduce_frame"


def is_anomalous(result: ClassificationResult) -> bool:
    """True for a classified curve whose label is not clean, that is novel, or that shows an anomaly present."""
    if not getattr(result, "ok", False):
        return False
    return result.label != "clean" or bool(result.is_novel) or bool(getattr(result, "anomalies_present", None))


class _HookCall:
    """The state one hook call shares between the isolation layers of its implementations."""

    __slots__ = ("curve", "stamped", "token")

    def __init__(self, curve: Any) -> None:
        #: The raw-curve chain: the curve the next implementation receives.
        self.curve = curve
        #: The ModelSource objects made by the host in this call (by id), whose provider is known.
        self.stamped: dict[int, ModelSource] = {}
        self.token: Token[_HookCall | None] | None = None


_CURRENT_CALL: ContextVar[_HookCall | None] = ContextVar("sasview_bnn_hook_call", default=None)


def _log_problem(message: str) -> None:
    log.warning("%s", message)


class IsolatingPluginManager(pluggy.PluginManager):
    """A pluggy manager whose hook implementations cannot break a hook call (see the module docstring).

    ``report`` receives the message of each plugin failure; :class:`PluginHost`
    sets it to record them in ``host.problems`` (the default only logs).
    :attr:`list_hooks` are the hooks whose implementations each return a list
    (or None), named by the ``LIST_HOOKS`` of each hookspec module added.
    """

    def __init__(self, project_name: str = hookspecs.PROJECT_NAME, report: Callable[[str], None] | None = None) -> None:
        super().__init__(project_name)
        self.report: Callable[[str], None] = report or _log_problem
        self.list_hooks: frozenset[str] = frozenset()
        self._hookspec_sources: list[Any] = []
        self.add_hookcall_monitoring(self._call_started, self._call_ended)

    def add_hookspecs(self, module_or_class: Any) -> None:
        """Add hook specifications as pluggy does, once per module (again: nothing); their ``LIST_HOOKS`` become list hooks.

        Implementations registered before are checked against the new
        specifications by pluggy (e.g. the GUI's hooks added to a host built
        for the runtime).
        """
        if any(source is module_or_class for source in self._hookspec_sources):
            return
        super().add_hookspecs(module_or_class)
        self._hookspec_sources.append(module_or_class)
        self.list_hooks = self.list_hooks | frozenset(getattr(module_or_class, "LIST_HOOKS", ()))

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register ``plugin`` as pluggy does, then put the isolation layer around each of its hook implementations."""
        plugin_name = super().register(plugin, name)
        if plugin_name is not None:
            for caller in self.get_hookcallers(plugin) or []:
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin:
                        # pluggy has read the argument names, validated the impl and placed it in its call order;
                        # only the function it calls changes (HookImpl.function is a plain slot).
                        impl.function = self._isolation_layer(caller.name, impl)  # type: ignore[misc]
        return plugin_name

    # -- per-call state (pluggy's hook-call monitoring runs around every call of every hook) --------

    @staticmethod
    def _call_started(hook_name: str, hook_impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, object]) -> None:
        call = _HookCall(kwargs.get("curve") if hook_name == PREPARE_HOOK else None)
        call.token = _CURRENT_CALL.set(call)

    @staticmethod
    def _call_ended(outcome: Any, hook_name: str, hook_impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, object]) -> None:
        call = _CURRENT_CALL.get()
        if call is not None and call.token is not None:
            _CURRENT_CALL.reset(call.token)

    # -- the isolation layers -----------------------------------------------------------------------------

    def _isolation_layer(self, hook_name: str, impl: pluggy.HookImpl) -> Callable[..., Any]:
        if impl.wrapper or impl.hookwrapper:
            return self._wrapper_layer(hook_name, impl)
        return self._plain_layer(hook_name, impl)

    def _failure(self, hook_name: str, plugin_name: str, err: BaseException, call: _HookCall | None) -> None:
        if hook_name == PREPARE_HOOK:
            curve = call.curve if call is not None else None
            where = f"{curve.source} {curve.dataset}" if isinstance(curve, Curve) else "a curve"
            self.report(f"plugin {plugin_name!r} failed to prepare {where}: {type(err).__name__}: {err}")
        else:
            self.report(f"plugin {plugin_name!r} failed in {hook_name}: {type(err).__name__}: {err}")

    def _plain_layer(self, hook_name: str, impl: pluggy.HookImpl) -> Callable[..., Any]:
        function = impl.function
        plugin_name = impl.plugin_name
        curve_at = impl.argnames.index("curve") if hook_name == PREPARE_HOOK and "curve" in impl.argnames else None

        @functools.wraps(function)
        def isolated(*args: Any, **kwargs: Any) -> Any:
            call = _CURRENT_CALL.get()
            if hook_name == PREPARE_HOOK and call is not None:
                # The chain: this implementation gets the previous one's output, not the raw curve of the call.
                if curve_at is not None and curve_at < len(args):
                    args = (*args[:curve_at], call.curve, *args[curve_at + 1 :])
                elif "curve" in kwargs:
                    kwargs["curve"] = call.curve
            try:
                return self._accept(hook_name, plugin_name, function(*args, **kwargs), call)
            except Exception as err:
                self._failure(hook_name, plugin_name, err, call)
                return None

        return isolated

    def _accept(self, hook_name: str, plugin_name: str, out: Any, call: _HookCall | None) -> Any:
        """What a plain implementation's return value becomes in pluggy's results (None: left out)."""
        if out is None:
            return None
        if hook_name == PREPARE_HOOK:
            if not isinstance(out, Curve):
                self.report(f"plugin {plugin_name!r} returned {type(out).__name__}, not a Curve; ignored")
                return None
            if call is not None:
                call.curve = out
            return out
        if hook_name in self.list_hooks:
            if isinstance(out, (str, bytes)) or not isinstance(out, Iterable):
                self.report(f"plugin {plugin_name!r} returned {type(out).__name__} from {hook_name}, not a list; ignored")
                return None
            items = list(out)
            return self._stamp(items, plugin_name, call) if hook_name == MODELS_HOOK else items
        return out

    def _stamp(self, items: Iterable[Any], plugin_name: str, call: _HookCall | None) -> list[ModelSource]:
        """The contributed models with the host-recorded contributor, so no plugin can pose as the shipped models."""
        origin = "shipped" if plugin_name == builtin_plugin.PLUGIN_NAME else plugin_name
        sources = []
        for item in items:
            if not isinstance(item, ModelSource):
                self.report(f"plugin {plugin_name!r} returned {type(item).__name__}, not a ModelSource")
                continue
            if call is not None and call.stamped.get(id(item)) is item:
                sources.append(item)  # already stamped in this call (a wrapper passing on another plugin's model)
                continue
            card = item.card if isinstance(item.card, LazyCard) else dict(item.card)  # a lazy card stays unread
            source = ModelSource(item.name, Path(item.path), card, provider=origin)
            if call is not None:
                call.stamped[id(source)] = source
            sources.append(source)
        return sources

    def _after_wrapper(self, hook_name: str, plugin_name: str, result: Any, call: _HookCall | None) -> Any:
        """The result a wrapper returns, with the models it added attributed to its plugin."""
        if hook_name != MODELS_HOOK or not isinstance(result, list):
            return result
        return [self._stamp(group, plugin_name, call) if isinstance(group, (list, tuple)) else group for group in result]

    def _start_wrapper(self, hook_name: str, impl: pluggy.HookImpl, function: Callable[..., Any], args: tuple, kwargs: dict,
                       call: _HookCall | None) -> Any:
        """Run a wrapper (``wrapper=True`` or ``hookwrapper=True``) up to its yield; None, reported, if it fails or does not yield."""
        try:
            teardown = function(*args, **kwargs)
            next(teardown)
        except StopIteration:
            kind = "wrapper" if impl.wrapper else "hookwrapper"
            self.report(f"plugin {impl.plugin_name!r} failed in {hook_name}: its {kind} did not yield; ignored")
            return None
        except Exception as err:
            self._failure(hook_name, impl.plugin_name, err, call)
            return None
        return teardown

    def _wrapper_layer(self, hook_name: str, impl: pluggy.HookImpl) -> Callable[..., Any]:
        """The layer around a ``wrapper=True`` or an old-style ``hookwrapper=True`` implementation."""
        function = impl.function
        around = self._around_new_style if impl.wrapper else self._around_old_style

        @functools.wraps(function)
        def isolated(*args: Any, **kwargs: Any) -> Any:
            call = _CURRENT_CALL.get()
            teardown = self._start_wrapper(hook_name, impl, function, args, kwargs, call)
            return (yield from around(hook_name, impl.plugin_name, teardown, call))

        return isolated

    def _around_new_style(self, hook_name: str, plugin_name: str, teardown: Any, call: _HookCall | None) -> Any:
        """The rest of a ``wrapper=True`` layer, from the yield on (``teardown`` None: a failed wrapper, transparent)."""
        if teardown is None:
            return (yield)  # the result it wraps passes through
        try:
            result = yield
        except BaseException as exc:
            # Something inside the call raised: the plugin's wrapper handles it or raises, as pluggy documents.
            try:
                teardown.throw(exc)
            except StopIteration as stop:
                return self._after_wrapper(hook_name, plugin_name, stop.value, call)
            teardown.close()
            raise exc
        try:
            teardown.send(result)
        except StopIteration as stop:
            try:
                return self._after_wrapper(hook_name, plugin_name, stop.value, call)
            except Exception as err:
                self._failure(hook_name, plugin_name, err, call)
                return result
        except Exception as err:
            self._failure(hook_name, plugin_name, err, call)
            return result
        teardown.close()
        self.report(f"plugin {plugin_name!r} failed in {hook_name}: its wrapper yielded twice; ignored")
        return result

    def _around_old_style(self, hook_name: str, plugin_name: str, teardown: Any, call: _HookCall | None) -> Any:
        """The rest of a ``hookwrapper=True`` layer, from the yield on (``teardown`` None: a failed wrapper, transparent)."""
        if teardown is None:
            yield  # the outcome passes through
            return
        outcome = yield
        try:
            teardown.send(outcome)
        except StopIteration:
            pass
        except Exception as err:
            if err is outcome.exception:
                raise  # the wrapper re-raised the call's own failure (outcome.get_result()): pluggy's business
            self._failure(hook_name, plugin_name, err, call)
            return
        else:
            teardown.close()
            self.report(f"plugin {plugin_name!r} failed in {hook_name}: its hookwrapper yielded twice; ignored")
            return
        if outcome.exception is None:
            try:
                outcome.force_result(self._after_wrapper(hook_name, plugin_name, outcome.get_result(), call))
            except Exception as err:
                self._failure(hook_name, plugin_name, err, call)


class PluginHost:
    """Calls the ``sasview_bnn`` hooks of the registered plugins, through pluggy."""

    def __init__(self, manager: IsolatingPluginManager) -> None:
        if not isinstance(manager, IsolatingPluginManager):
            raise TypeError("PluginHost needs an IsolatingPluginManager (build one with build_plugin_host)")
        self.manager = manager
        #: Messages about plugins that failed (loading or inside a hook), for the user.
        self.problems: list[str] = []
        manager.report = self._report

    def _report(self, message: str) -> None:
        log.warning("%s", message)
        self.problems.append(message)

    def plugin_names(self) -> list[str]:
        """Names of the registered plugins, built-in included."""
        return [name for name, _ in self.manager.list_name_plugin()]

    def _call(self, hook_name: str, default: Any, **kwargs: Any) -> Any:
        """``manager.hook.<hook_name>(**kwargs)``; ``default`` if the call as a whole fails (e.g. a wrapper re-raised)."""
        try:
            return getattr(self.manager.hook, hook_name)(**kwargs)
        except Exception as err:
            self._report(f"the {hook_name} hook failed: {type(err).__name__}: {err}")
            return default

    def _lists(self, hook_name: str, **kwargs: Any) -> list[list[Any]]:
        """The per-implementation lists of a list hook, in pluggy's call order."""
        results = self._call(hook_name, [], **kwargs)
        if not isinstance(results, list):
            self._report(f"the {hook_name} hook gave {type(results).__name__}, not a list; ignored")
            return []
        lists = []
        for group in results:
            if isinstance(group, (list, tuple)):
                lists.append(list(group))
            else:
                self._report(f"the {hook_name} hook gave {type(group).__name__} among its lists; ignored")
        return lists

    def models(self) -> list[ModelSource]:
        """Every contributed model, each name once.

        The lists are taken from the last-called implementation back to the
        first (registration order unless tryfirst/trylast are used; the built-in
        plugin's implementation is trylast, so the shipped models come first),
        and on a name clash the model taken first is kept.
        """
        seen: dict[str, ModelSource] = {}
        for sources in reversed(self._lists(MODELS_HOOK)):
            for source in sources:
                if not isinstance(source, ModelSource):  # only a wrapper can leave one here
                    self._report(f"the {MODELS_HOOK} hook gave {type(source).__name__}, not a ModelSource; ignored")
                    continue
                if source.name in seen:
                    log.warning("model name %r from %s is already taken; ignored", source.name, source.provider)
                    continue
                seen[source.name] = source
        return list(seen.values())

    def prepare_raw_curve(self, curve: Curve) -> Curve:
        """The curve after every plugin's raw-curve step (chained in pluggy's order, see the hookspec)."""
        if curve.failure is not None or not self._implemented(PREPARE_HOOK):
            return curve
        results = self._call(PREPARE_HOOK, [], curve=curve)
        if not isinstance(results, list):
            self._report(f"the {PREPARE_HOOK} hook gave {type(results).__name__}, not a list of curves; ignored")
            return curve
        for out in reversed(results):  # the last output is the chain's end (unless a wrapper changed the list)
            if isinstance(out, Curve):
                return out
        return curve

    def has_raw_curve_steps(self) -> bool:
        """Whether a plugin implements the raw-curve hook (:meth:`prepare_raw_curve` then may change curves)."""
        return self._implemented(PREPARE_HOOK)

    def _implemented(self, hook_name: str) -> bool:
        """Whether any plugin implements ``hook_name`` (a hook nobody implements is not called: pluggy would
        return nothing and call no monitor that shows)."""
        return bool(getattr(self.manager.hook, hook_name).get_hookimpls())

    def publish_result(self, result: ClassificationResult) -> None:
        """Hand a result to every result sink, then, if it :func:`is_anomalous`, to the anomaly hook."""
        if self._implemented(RESULT_HOOK):
            self._call(RESULT_HOOK, None, result=result)
        if is_anomalous(result) and self._implemented(ANOMALY_HOOK):
            self._call(ANOMALY_HOOK, None, result=result)

    def reduce_frame(self, frame: Any, metadata: dict[str, Any]) -> Any:
        """The first plugin's reduction of a 2D frame, ``(q, I, dI, q_unit)``, or None when no plugin reduces it."""
        return self._call(REDUCE_HOOK, None, frame=frame, metadata=metadata)

    def collect(self, hook_name: str) -> list[Any]:
        """The items every implementation of the list hook ``hook_name`` contributes, concatenated in pluggy's call order.

        For hooks of other front ends, e.g. the GUI's (:mod:`sasview_bnn_plugin.gui.hookspecs`).
        """
        return [item for items in self._lists(hook_name) for item in items]


def build_plugin_host(load_entry_points: bool = True, extra_plugins: Iterable[object] = (),
                      extra_hookspecs: Iterable[Any] = ()) -> PluginHost:
    """A host with the built-in plugin, installed entry-point plugins and ``extra_plugins``.

    ``extra_hookspecs``: hookspec modules of a front end (the GUI's
    :mod:`sasview_bnn_plugin.gui.hookspecs`) added next to the runtime's
    before any plugin is registered, so plugins are checked against them.
    Registration order: the built-in plugin, the entry points, then
    ``extra_plugins`` (pluggy calls later-registered plugins first). Entry
    points are loaded one by one (rather than with
    ``PluginManager.load_setuptools_entrypoints``, which stops at the first
    failure) so that a plugin that fails to import is reported in
    ``host.problems`` and skipped while the others still load.
    """
    manager = IsolatingPluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    for specs in extra_hookspecs:
        manager.add_hookspecs(specs)
    manager.register(builtin_plugin, name=builtin_plugin.PLUGIN_NAME)
    host = PluginHost(manager)
    if load_entry_points:
        _load_entry_points(host)
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        manager.register(plugin, name=None if manager.has_plugin(name) else name)
    return host


def _load_entry_points(host: PluginHost) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=hookspecs.ENTRY_POINT_GROUP):
        if host.manager.get_plugin(ep.name) is not None or host.manager.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
            host.manager.register(plugin, name=ep.name)
        except Exception as err:
            message = f"plugin {ep.name!r} ({ep.value}) could not be loaded: {type(err).__name__}: {err}"
            log.warning("%s", message)
            host.problems.append(message)
