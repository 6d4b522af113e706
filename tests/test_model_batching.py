"""The classifier bounds the memory of each onnxruntime call by cutting batches (sasview_bnn_plugin.model.batching)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sasview_bnn_plugin import BNNClassifier
from sasview_bnn_plugin.model.batching import MIN_MODEL_BATCH, MODEL_CALL_BYTES, activation_bytes_per_curve, model_batch_size
from sasview_bnn_plugin.model.catalog import resolve_model, shipped_models


def _meta(channels, samples=16, kernel=7, n_bins=256) -> dict[str, str]:
    return {"network": json.dumps({"channels": channels, "in_channels": 4, "kernel": kernel, "n_bins": n_bins}), "n_samples": str(samples)}


def test_the_largest_unfolded_convolution_sets_the_estimate():
    # Layers see 256, 128, 64 bins: 4*7*256 + 16*256, 16*7*128 + 32*128, 32*7*64 + 64*64 values per sample.
    assert activation_bytes_per_curve(_meta([16, 32, 64])) == 4 * 16 * max(4 * 7 * 256 + 16 * 256, 16 * 7 * 128 + 32 * 128, 32 * 7 * 64 + 64 * 64)
    # Twice the channels after the first layer: twice the memory per curve; twice the samples: twice again.
    assert activation_bytes_per_curve(_meta([32, 64, 128])) == 2 * activation_bytes_per_curve(_meta([16, 32, 64]))
    assert activation_bytes_per_curve(_meta([16, 32, 64], samples=32)) == 2 * activation_bytes_per_curve(_meta([16, 32, 64]))


def test_batch_is_lowered_to_the_budget_never_raised_never_below_the_floor():
    per_curve = activation_bytes_per_curve(_meta([16, 32, 64]))
    assert model_batch_size(_meta([16, 32, 64]), 256) == MODEL_CALL_BYTES // per_curve < 256
    assert model_batch_size(_meta([16, 32, 64]), 4) == 4
    assert model_batch_size(_meta([512, 512, 512], samples=64), 256) == MIN_MODEL_BATCH
    # A user's model that does not describe its network keeps the batch it was given.
    assert model_batch_size({"n_samples": "8"}, 256) == 256
    assert model_batch_size({"network": "not json", "n_samples": "8"}, 256) == 256


def test_the_shipped_model_gives_the_same_answers_in_smaller_calls():
    source = resolve_model(None, shipped_models())
    big = BNNClassifier(source.path, provider="cpu", batch_size=256)
    assert MIN_MODEL_BATCH <= big.model_batch_size < 256
    small = BNNClassifier(source.path, provider="cpu", batch_size=MIN_MODEL_BATCH)
    assert small.model_batch_size == MIN_MODEL_BATCH
    features = np.random.default_rng(3).random((big.model_batch_size * 2 + 5, *big.config.input_shape), dtype=np.float32)
    p_big, n_big = big.predict_features(features)
    p_small, n_small = small.predict_features(features)
    assert p_big.shape == (features.shape[0], big.n_samples, 7)
    np.testing.assert_allclose(p_big, p_small, atol=1e-6)
    np.testing.assert_allclose(n_big, n_small, rtol=1e-5, atol=1e-6)


def test_model_streams_run_calls_side_by_side_with_the_same_answers():
    """Three calls at once (one intra-op thread each) give what one call after the other gives; the calls share the
    memory budget, so each holds at most a third of it."""
    source = resolve_model(None, shipped_models())
    one = BNNClassifier(source.path, provider="cpu", intra_op_threads=1)
    three = BNNClassifier(source.path, provider="cpu", intra_op_threads=1, model_streams=3)
    assert three.model_batch_size == model_batch_size(three.metadata, 256, MODEL_CALL_BYTES // 3) < one.model_batch_size
    features = np.random.default_rng(4).random((three.model_batch_size * 7 + 3, *one.config.input_shape), dtype=np.float32)
    p_one, n_one = one.predict_features(features)
    p_three, n_three = three.predict_features(features)
    np.testing.assert_allclose(p_three, p_one, atol=1e-6)
    np.testing.assert_allclose(n_three, n_one, rtol=1e-5, atol=1e-6)
    each = three.predict_each(features)
    assert len(each) == features.shape[0]
    np.testing.assert_allclose(np.stack([o[0] for o in each]), p_one, atol=1e-6)
    with pytest.raises(ValueError, match="model_streams"):
        BNNClassifier(source.path, provider="cpu", model_streams=0)
