"""The project's own features, registered through the same hooks as any plugin."""

from __future__ import annotations

from .hookspecs import hookimpl
from .model_catalog import ModelSource, shipped_models

PLUGIN_NAME = "sasview_bnn.builtin"


@hookimpl
def sasview_bnn_models() -> list[ModelSource]:
    """The models installed in ``sasview_bnn_plugin.onnx_models``."""
    return shipped_models()
