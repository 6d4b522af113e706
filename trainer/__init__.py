"""sasview-bnn trainer: simulate labelled curves with sasmodels, train the Bayesian
network with torch, evaluate it and export posterior samples to ONNX.

Installed as ``sasview_bnn_trainer`` (folder ``trainer/``); needs the ``train`` extra.
"""

from sasview_bnn_plugin import __version__

__all__ = ["__version__"]
