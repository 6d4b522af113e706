"""sasview-bnn: Bayesian anomaly classification of small-angle scattering curves.

The runtime (this package) needs only numpy, onnxruntime, pluggy and sasdata;
training lives in the separate ``sasview_bnn_trainer`` package (folder ``trainer/``).
"""

__version__ = "0.1.0"
