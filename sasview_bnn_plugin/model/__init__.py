"""The classifier and everything about model files: the only subpackage that imports onnxruntime.

``providers`` (execution provider, session), ``card`` (model card, file hash), ``catalog`` (shipped and
contributed models, ONNX metadata), ``classifier`` (:class:`~.classifier.BNNClassifier`),
``calibration`` (per-instrument calibration), ``explain`` (sensitivity maps). Imports ``core`` only.
"""
