"""How many curves go into one onnxruntime call: the batch that keeps a model call's memory bounded.

onnxruntime holds every intermediate tensor of a call in its memory arena and
keeps the arena at its peak. For the exported graph (``trainer/onnx_graph.py``:
S posterior samples side by side, each convolution as an unfolded product) the
largest of them is a convolution's unfolded input plus its output,

    S x max over layers (c_in x kernel x L + c_out x L) float32 values per curve,

with L = n_bins / 2**layer the length the layer sees. For the shipped 16-sample
network of channels 16, 32, 64 that is 1.2 MB per curve: 256 curves per call
held about 410 MiB in all, against 230 MiB at 64 curves, at the same curves/s
(measured 2026-12-02, batch 16 to 256 within the noise on a shared 2-core
machine). So the classifier cuts whatever the caller hands it into model calls
of at most :func:`model_batch_size` curves; the caller's batch (files read and
rows written together) stays the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

#: Bytes of intermediate tensors one model call may hold (onnxruntime keeps its arena at the peak).
MODEL_CALL_BYTES = 64 * 2**20
#: Fewest curves per call whatever the model (a call has a fixed cost of its own).
MIN_MODEL_BATCH = 8


def activation_bytes_per_curve(metadata: Mapping[str, str]) -> int | None:
    """Estimated bytes of the largest intermediate tensor pair per curve, from the ``network`` and
    ``n_samples`` metadata; None when the model does not describe its network (a user's model)."""
    try:
        network = json.loads(metadata["network"])
        samples = int(metadata["n_samples"])
        channels = [int(network.get("in_channels", 4)), *map(int, network["channels"])]
        kernel, length = int(network["kernel"]), int(network["n_bins"])
    except (KeyError, TypeError, ValueError):
        return None
    largest = 0
    for layer, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        n = max(length >> layer, 1)
        largest = max(largest, c_in * kernel * n + c_out * n)
    return 4 * samples * largest


def model_batch_size(metadata: Mapping[str, str], requested: int, budget_bytes: int = MODEL_CALL_BYTES) -> int:
    """Curves per onnxruntime call: ``requested``, lowered so that a call stays within ``budget_bytes``
    (never below :data:`MIN_MODEL_BATCH`, nor above ``requested``)."""
    per_curve = activation_bytes_per_curve(metadata)
    if not per_curve:
        return requested
    return max(min(requested, budget_bytes // per_curve), min(requested, MIN_MODEL_BATCH))
