"""The contract the runtime shares with the trainer: numpy only (no onnxruntime, Qt or torch).

``taxonomy`` (the classes), ``curve`` (one I(q) curve), ``preprocessing`` (curve -> model input),
``q_units`` (q-unit reading), ``model_format`` (the ONNX model contract), ``conformal`` (sets and
p-values), ``result`` (one classification result, its CSV/JSON fields), ``trend`` (results along a
series), ``extras`` (the optional extras' names). See ``docs/architecture.md``.
"""
