"""sasview-bnn: Bayesian anomaly classification of small-angle scattering curves.

The runtime (this package) needs only numpy, onnxruntime, pluggy and sasdata;
training lives in the separate ``sasview_bnn_trainer`` package (folder ``trainer/``).

The public API is what this module exports (``__all__``): plugins, scripts and
notebooks import from here, never from the subpackages (whose layout is
described in ``docs/architecture.md`` and may change)::

    from sasview_bnn_plugin import BNNClassifier, CurveLoader, hookimpl

The names are loaded on first use, so ``import sasview_bnn_plugin`` (and
importing ``sasview_bnn_plugin.core`` from the trainer) does not start
onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> module (relative to this package) that defines it.
_PUBLIC: dict[str, str] = {
    # plugins
    "hookimpl": "plugins.hookspecs",
    "PluginHost": "plugins.host",
    "build_plugin_host": "plugins.host",
    # models
    "ModelSource": "model.catalog",
    "ModelNotFoundError": "model.catalog",
    "resolve_model": "model.catalog",
    "read_metadata": "model.catalog",
    "card_from_metadata": "model.catalog",
    "BNNClassifier": "model.classifier",
    # data and results (the contract shared with the trainer)
    "Curve": "core.curve",
    "ClassificationResult": "core.result",
    "CurveError": "core.preprocessing",
    "ModelFormatError": "core.model_format",
    "LOW_CONFIDENCE_THRESHOLD": "core.model_format",
    "CLASS_NAMES": "core.taxonomy",
    "ANOMALY_NAMES": "core.taxonomy",
    # files
    "CurveLoader": "io.loading",
    "find_data_files": "io.loading",
    "plot_contact_sheet": "io.plotting",
}

__all__ = ["__version__", *_PUBLIC]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from .core.curve import Curve
    from .core.model_format import LOW_CONFIDENCE_THRESHOLD, ModelFormatError
    from .core.preprocessing import CurveError
    from .core.result import ClassificationResult
    from .core.taxonomy import ANOMALY_NAMES, CLASS_NAMES
    from .io.loading import CurveLoader, find_data_files
    from .io.plotting import plot_contact_sheet
    from .model.catalog import ModelNotFoundError, ModelSource, card_from_metadata, read_metadata, resolve_model
    from .model.classifier import BNNClassifier
    from .plugins.hookspecs import hookimpl
    from .plugins.host import PluginHost, build_plugin_host


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'sasview_bnn_plugin' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
