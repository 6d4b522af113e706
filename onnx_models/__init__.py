"""Shipped ONNX models and their model cards (installed as ``sasview_bnn_plugin.onnx_models``)."""
