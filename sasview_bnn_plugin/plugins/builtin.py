"""The project's own features, registered through the same hooks as any plugin.

:func:`~sasview_bnn_plugin.plugins.host.build_plugin_host` registers this module
first, under :data:`PLUGIN_NAME`; models it contributes get the provider
``"shipped"`` (the host records every model's contributor, so no other plugin
can pose as the shipped models).
"""

from __future__ import annotations

from .hookspecs import hookimpl
from ..model.catalog import ModelSource, shipped_models

PLUGIN_NAME = "sasview_bnn.builtin"


@hookimpl(trylast=True)
def sasview_bnn_models() -> list[ModelSource]:
    """The models installed in ``sasview_bnn_plugin.onnx_models``.

    ``trylast``: pluggy calls it after every other (non-trylast) implementation,
    and the host keeps, on a name clash, the model of the implementation called
    last, so the shipped models keep their names and are listed first.
    """
    return shipped_models()
