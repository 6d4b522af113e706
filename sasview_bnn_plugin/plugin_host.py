"""The plugin manager: loads plugins and calls their hooks, isolating their failures.

Build one with :func:`build_plugin_host`; nothing is global. Each hook
implementation is called on its own, so one plugin raising is logged (with its
name) and the others, and classification, carry on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import pluggy

from . import builtin_plugin, hookspecs
from .curve import Curve
from .model_catalog import ModelSource
from .result import ClassificationResult

log = logging.getLogger(__name__)


class PluginHost:
    """Calls the ``sasview_bnn`` hooks of the registered plugins."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        #: Messages about plugins that failed (loading or inside a hook), for the user.
        self.problems: list[str] = []

    def plugin_names(self) -> list[str]:
        """Names of the registered plugins, built-in included."""
        return [name for name, _ in self.manager.list_name_plugin()]

    def _call_each(self, hook_name: str, **kwargs: Any) -> Iterable[tuple[str, Any]]:
        hook = getattr(self.manager.hook, hook_name)
        # get_hookimpls() is in registration order (pluggy's own calls go the other way).
        for impl in hook.get_hookimpls():
            try:
                yield impl.plugin_name, impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as err:
                message = f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(err).__name__}: {err}"
                log.warning("%s", message)
                self.problems.append(message)

    def models(self) -> list[ModelSource]:
        """Every contributed model, first contribution of a name wins."""
        seen: dict[str, ModelSource] = {}
        for plugin_name, sources in self._call_each("sasview_bnn_models"):
            for source in sources or []:
                if not isinstance(source, ModelSource):
                    self.problems.append(f"plugin {plugin_name!r} returned {type(source).__name__}, not a ModelSource")
                    continue
                # The contributor is recorded by the host, so no plugin can pose as the shipped models.
                origin = "shipped" if plugin_name == builtin_plugin.PLUGIN_NAME else plugin_name
                source = ModelSource(source.name, Path(source.path), dict(source.card), provider=origin)
                if source.name in seen:
                    log.warning("model name %r from %s is already taken; ignored", source.name, plugin_name)
                    continue
                seen[source.name] = source
        return list(seen.values())

    def prepare_raw_curve(self, curve: Curve) -> Curve:
        """Pass a readable curve through every plugin's raw-curve step, in order."""
        if curve.error is not None:
            return curve
        hook = self.manager.hook.sasview_bnn_prepare_raw_curve
        for impl in hook.get_hookimpls():
            try:
                out = impl.function(curve=curve)
            except Exception as err:
                message = f"plugin {impl.plugin_name!r} failed to prepare {curve.source} {curve.dataset}: {type(err).__name__}: {err}"
                log.warning("%s", message)
                self.problems.append(message)
                continue
            if out is not None:
                if isinstance(out, Curve):
                    curve = out
                else:
                    self.problems.append(f"plugin {impl.plugin_name!r} returned {type(out).__name__}, not a Curve; ignored")
        return curve

    def publish_result(self, result: ClassificationResult) -> None:
        """Hand a result to every result sink."""
        for _ in self._call_each("sasview_bnn_result", result=result):
            pass

    def perspectives(self) -> list[Any]:
        """SasView perspectives contributed by plugins (for the SasView integration)."""
        return [item for _, items in self._call_each("sasview_bnn_perspectives") for item in items or []]

    def menu_actions(self) -> list[Any]:
        """Menu actions contributed by plugins (for the SasView integration)."""
        return [item for _, items in self._call_each("sasview_bnn_menu_actions") for item in items or []]

    def grid_columns(self) -> list[Any]:
        """Batch-grid columns contributed by plugins (for the SasView integration)."""
        return [item for _, items in self._call_each("sasview_bnn_grid_columns") for item in items or []]


def build_plugin_host(load_entry_points: bool = True, extra_plugins: Iterable[object] = ()) -> PluginHost:
    """A host with the built-in plugin, installed entry-point plugins and ``extra_plugins``.

    Entry points are loaded one by one (rather than with
    ``PluginManager.load_setuptools_entrypoints``, which stops at the first
    failure) so that a plugin that fails to import is reported in
    ``host.problems`` and skipped while the others still load.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
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
