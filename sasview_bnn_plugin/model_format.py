"""The contract between the trainer's ONNX export and the runtime.

One ONNX graph holds S fixed posterior weight samples (variational draws or
ensemble members) and no random operator.

Input
    ``features``: float32 (batch, channels, bins), the output of
    :func:`sasview_bnn_plugin.preprocessing.prepare_curve`, batch axis dynamic.

Outputs
    ``probabilities``: float32 (batch, S, n_classes), softmax of each posterior sample.
    ``novelty_score``: float32 (batch,), a feature-space novelty score (higher is
    more novel), compared with the ``novelty_threshold`` metadata entry.

Metadata (``metadata_props``, all values strings; JSON where structured) is
listed in :data:`REQUIRED_METADATA`.
"""

from __future__ import annotations

import json
from typing import Mapping

from .preprocessing import PreprocessingConfig
from .taxonomy import CLASS_NAMES

FORMAT_VERSION = "1"
INPUT_NAME = "features"
PROBABILITIES_OUTPUT = "probabilities"
NOVELTY_OUTPUT = "novelty_score"
#: A curve whose highest posterior-mean class probability is below this is reported
#: as low confidence: the label is a guess, whatever the novelty score says.
LOW_CONFIDENCE_THRESHOLD = 0.5

#: key -> what it holds. Every key must be present in a shipped model.
REQUIRED_METADATA: dict[str, str] = {
    "sasview_bnn.format_version": "version of this contract (\"1\")",
    "classes": "JSON list of class names in output order (must equal the taxonomy)",
    "preprocessing": "JSON of PreprocessingConfig (every preprocessing setting)",
    "n_samples": "S, the number of posterior samples in the graph",
    "inference_method": "\"vi\" (mean-field variational) or \"ensemble\" (deep ensemble), or another named method",
    "prior_sigma": "standard deviation of the Gaussian prior on the weights",
    "novelty_score": "name of the novelty score (e.g. \"mahalanobis\")",
    "novelty_threshold": "threshold above which a curve is novel",
    "novelty_false_alarm_rate": "fraction of in-distribution validation curves above the threshold",
    "training_data": "JSON: seed, n_curves, simulator code version, excluded classes",
    "metrics": "JSON of key validation/test metrics",
    "package_version": "sasview-bnn version that exported the model",
    "weights_sha256": "sha256 of the concatenated float32 weights of all samples",
}


class ModelFormatError(ValueError):
    """An ONNX model whose metadata does not match this runtime; the message says how."""


def check_metadata(meta: Mapping[str, str]) -> PreprocessingConfig:
    """Validate a model's metadata against the taxonomy; return its preprocessing config."""
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise ModelFormatError(f"the model's metadata lacks {', '.join(missing)}; it was not exported by sasview-bnn-train")
    if meta["sasview_bnn.format_version"] != FORMAT_VERSION:
        raise ModelFormatError(
            f"the model uses format version {meta['sasview_bnn.format_version']}, this runtime reads version {FORMAT_VERSION}"
        )
    try:
        classes = json.loads(meta["classes"])
    except json.JSONDecodeError:
        raise ModelFormatError("the model's class list is not valid JSON") from None
    if tuple(classes) != CLASS_NAMES:
        raise ModelFormatError(f"the model's classes {classes} differ from the taxonomy {list(CLASS_NAMES)}")
    try:
        return PreprocessingConfig.from_json(meta["preprocessing"])
    except (ValueError, TypeError) as err:
        raise ModelFormatError(f"the model's preprocessing settings cannot be used: {err}") from None
