"""Small but real ONNX models that honour the sasview-bnn model contract, for tests.

:func:`build_linear_heads_model` builds a graph of S linear heads on pooled
features with fixed random weights: the input (batch, 4, 256) is averaged in 8
blocks of 32 bins per channel -> (batch, 32); head s computes
softmax(x W_s + b_s) -> probabilities (batch, S, 7); the novelty score is the
mean squared distance of x from a fixed centre, (batch,). Metadata is complete
(see ``sasview_bnn_plugin.core.model_format.REQUIRED_METADATA``). No torch needed.

With ``v2=True`` (or the separate ``anomalies``/``conformal``/``novelty_calibration``
arguments) the model also has the optional parts of the contract
(``OPTIONAL_METADATA``): an ``anomaly_probabilities`` output, sigmoid(x A_s + a_s)
of a second set of S linear heads -> (batch, S, 6), the ``anomalies`` and
``anomaly_threshold`` metadata, ``conformal`` APS thresholds and
``novelty_calibration`` scores (made-up numbers: the tests compute what the
runtime must do with them).

Run ``python tests/onnx_test_models.py OUT.onnx`` to write the default model
(used to regenerate the example plugin's shipped model).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sasview_bnn_plugin import __version__
from sasview_bnn_plugin.core.model_format import (
    ANOMALIES_KEY,
    ANOMALY_OUTPUT,
    ANOMALY_THRESHOLD_KEY,
    CONFORMAL_KEY,
    FORMAT_VERSION,
    INPUT_NAME,
    NOVELTY_CALIBRATION_KEY,
    NOVELTY_OUTPUT,
    PROBABILITIES_OUTPUT,
    REQUIRED_METADATA,
)
from sasview_bnn_plugin.core.preprocessing import PreprocessingConfig
from sasview_bnn_plugin.core.taxonomy import ANOMALY_NAMES, CLASS_NAMES

N_BLOCKS = 8

#: The ``conformal`` metadata of a v2 test model (thresholds made up, not calibrated).
TEST_CONFORMAL = {"method": "aps", "levels": {"0.8": 0.35, "0.9": 0.6, "0.95": 0.8, "0.99": 0.95}, "n_calibration": 1000, "default_level": "0.9"}


def sample_novelty_calibration(novelty_threshold: float, seed: int = 0, n: int = 199) -> dict:
    """The ``novelty_calibration`` metadata of a v2 test model: n sorted scores spread around the threshold."""
    rng = np.random.default_rng(seed + 1000)
    return {"scores": sorted(float(v) for v in novelty_threshold * rng.gamma(2.0, 0.5, n)), "default_level": 0.01}


def contract_metadata(n_samples: int, weights: list[np.ndarray], novelty_threshold: float, config: PreprocessingConfig | None = None) -> dict[str, str]:
    """A complete metadata dictionary for a test model."""
    cfg = config or PreprocessingConfig()
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(w, np.float32).tobytes() for w in weights)).hexdigest()
    meta = {
        "sasview_bnn.format_version": FORMAT_VERSION,
        "classes": json.dumps(list(CLASS_NAMES)),
        "preprocessing": cfg.to_json(),
        "n_samples": str(n_samples),
        "inference_method": "ensemble",
        "prior_sigma": "1.0",
        "novelty_score": "squared_distance",
        "novelty_threshold": repr(float(novelty_threshold)),
        "novelty_false_alarm_rate": "0.05",
        "training_data": json.dumps({"seed": 0, "n_curves": 0, "simulator": "none (test model with random weights)", "excluded_classes": []}),
        "metrics": json.dumps({"note": "random weights; no metrics"}),
        "package_version": __version__,
        "weights_sha256": digest,
    }
    assert set(meta) == set(REQUIRED_METADATA)
    return meta


def build_linear_heads_model(
    n_samples: int = 4,
    seed: int = 0,
    novelty_threshold: float = 0.5,
    metadata_overrides: dict[str, str] | None = None,
    drop_metadata: tuple[str, ...] = (),
    config: PreprocessingConfig | None = None,
    weight_scale: float = 3.0,
    v2: bool = False,
    anomalies: bool | None = None,
    anomaly_threshold: float | None = None,
    conformal: dict | None = None,
    novelty_calibration: dict | None = None,
) -> onnx.ModelProto:
    """S linear softmax heads on block-pooled features; real weights from ``seed``.

    ``v2`` adds the three optional parts (anomaly head, ``TEST_CONFORMAL``,
    :func:`sample_novelty_calibration`); ``anomalies``, ``conformal`` and
    ``novelty_calibration`` add or replace one of them (``anomalies=False``
    or an empty dict leaves a part out).
    """
    cfg = config or PreprocessingConfig()
    channels, bins = cfg.input_shape
    block = bins // N_BLOCKS
    n_features = channels * N_BLOCKS
    rng = np.random.default_rng(seed)
    weights = (weight_scale * rng.standard_normal((n_features, n_samples * len(CLASS_NAMES)))).astype(np.float32)
    bias = (0.5 * rng.standard_normal(n_samples * len(CLASS_NAMES))).astype(np.float32)
    centre = (0.3 * rng.standard_normal(n_features)).astype(np.float32)
    with_anomalies = v2 if anomalies is None else anomalies
    n_anomalies = len(ANOMALY_NAMES)
    anomaly_weights = (weight_scale * rng.standard_normal((n_features, n_samples * n_anomalies))).astype(np.float32)
    anomaly_bias = (0.5 * rng.standard_normal(n_samples * n_anomalies)).astype(np.float32)

    inits = [
        numpy_helper.from_array(np.array([-1, channels, N_BLOCKS, block], np.int64), "block_shape"),
        numpy_helper.from_array(np.array([3], np.int64), "pool_axes"),
        numpy_helper.from_array(np.array([-1, n_features], np.int64), "flat_shape"),
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(bias, "b"),
        numpy_helper.from_array(np.array([-1, n_samples, len(CLASS_NAMES)], np.int64), "head_shape"),
        numpy_helper.from_array(centre, "centre"),
        numpy_helper.from_array(np.array([1], np.int64), "feature_axis"),
    ]
    nodes = [
        helper.make_node("Reshape", [INPUT_NAME, "block_shape"], ["blocks"]),
        helper.make_node("ReduceMean", ["blocks", "pool_axes"], ["pooled"], keepdims=0),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["x"]),
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits_flat"]),
        helper.make_node("Reshape", ["logits_flat", "head_shape"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [PROBABILITIES_OUTPUT], axis=-1),
        helper.make_node("Sub", ["x", "centre"], ["dx"]),
        helper.make_node("Mul", ["dx", "dx"], ["dx2"]),
        helper.make_node("ReduceMean", ["dx2", "feature_axis"], [NOVELTY_OUTPUT], keepdims=0),
    ]
    outputs = [
        helper.make_tensor_value_info(PROBABILITIES_OUTPUT, TensorProto.FLOAT, ["batch", n_samples, len(CLASS_NAMES)]),
        helper.make_tensor_value_info(NOVELTY_OUTPUT, TensorProto.FLOAT, ["batch"]),
    ]
    if with_anomalies:
        inits += [
            numpy_helper.from_array(anomaly_weights, "A"),
            numpy_helper.from_array(anomaly_bias, "a"),
            numpy_helper.from_array(np.array([-1, n_samples, n_anomalies], np.int64), "anomaly_shape"),
        ]
        nodes += [
            helper.make_node("MatMul", ["x", "A"], ["xa"]),
            helper.make_node("Add", ["xa", "a"], ["anomaly_logits_flat"]),
            helper.make_node("Reshape", ["anomaly_logits_flat", "anomaly_shape"], ["anomaly_logits"]),
            helper.make_node("Sigmoid", ["anomaly_logits"], [ANOMALY_OUTPUT]),
        ]
        outputs.append(helper.make_tensor_value_info(ANOMALY_OUTPUT, TensorProto.FLOAT, ["batch", n_samples, n_anomalies]))
    graph = helper.make_graph(
        nodes,
        "linear_heads_test_model",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", channels, bins])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="sasview-bnn tests")
    model.ir_version = 8
    meta = contract_metadata(n_samples, [weights, bias] + ([anomaly_weights, anomaly_bias] if with_anomalies else []), novelty_threshold, cfg)
    if with_anomalies:
        meta[ANOMALIES_KEY] = json.dumps(list(ANOMALY_NAMES))
        if anomaly_threshold is not None:
            meta[ANOMALY_THRESHOLD_KEY] = repr(float(anomaly_threshold))
    conformal_entry = TEST_CONFORMAL if conformal is None and v2 else conformal
    if conformal_entry:
        meta[CONFORMAL_KEY] = json.dumps(conformal_entry)
    novelty_entry = sample_novelty_calibration(novelty_threshold, seed) if novelty_calibration is None and v2 else novelty_calibration
    if novelty_entry:
        meta[NOVELTY_CALIBRATION_KEY] = json.dumps(novelty_entry)
    meta.update(metadata_overrides or {})
    for key in drop_metadata:
        meta.pop(key, None)
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def write_model(path: str | Path, **kwargs) -> Path:
    """Build a test model (see :func:`build_linear_heads_model`) and save it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build_linear_heads_model(**kwargs), str(path))
    return path


def write_truncated_model(path: str | Path, fraction: float = 0.5, **kwargs) -> Path:
    """A valid model cut after ``fraction`` of its bytes (a broken download)."""
    data = build_linear_heads_model(**kwargs).SerializeToString()
    path = Path(path)
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write a linear-heads test model")
    parser.add_argument("output", type=Path)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--v2", action="store_true", help="with the optional parts (anomalies present, prediction sets, novelty p-values)")
    cli = parser.parse_args()
    write_model(cli.output, n_samples=cli.samples, seed=cli.seed, v2=cli.v2)
