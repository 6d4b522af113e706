"""The example plugin's hook implementations: one model and a JSONL result sink."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sasview_bnn_plugin import ModelSource, card_from_metadata, hookimpl, read_metadata

MODEL_NAME = "example-linear-heads"
MODEL_PATH = Path(__file__).with_name("example_model.onnx")
SINK_VARIABLE = "SASVIEW_BNN_EXAMPLE_SINK"


@hookimpl
def sasview_bnn_models() -> list[ModelSource]:
    """The shipped example model with its card read from the model's metadata."""
    card = card_from_metadata(read_metadata(MODEL_PATH))
    card["description"] = "example plugin model: random weights, for testing the plugin machinery only"
    return [ModelSource(MODEL_NAME, MODEL_PATH, card)]


@hookimpl
def sasview_bnn_result(result) -> None:
    """Append the result as one JSON line to the file named by $SASVIEW_BNN_EXAMPLE_SINK, if set."""
    target = os.environ.get(SINK_VARIABLE)
    if not target:
        return
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
