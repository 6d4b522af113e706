"""Faults inside inference: onnxruntime failing mid-batch, models returning NaN or non-probabilities.

The faulty models are real ONNX graphs run by onnxruntime: the linear-heads
test model plus a side branch that is exactly zero for ordinary curves and
either fails at run time (a Gather out of bounds) or turns into NaN for
marked curves. The marks are ordinary curve properties:

- a curve covering the whole model q-domain (1e-4 to 1 1/Å) fills all 256
  coverage bins, which makes the Gather index 2 in a table of 2 -> onnxruntime
  raises for the whole batch holding it;
- a curve with negative intensities (over-subtracted background) has a
  negative bin in channel 0, whose square root is NaN -> NaN outputs for that
  curve only.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_test_models import build_linear_heads_model, write_model
from sasview_bnn_plugin.model.classifier import BNNClassifier
from sasview_bnn_plugin.core.model_format import NOVELTY_OUTPUT

SEED, SAMPLES = 7, 4


@pytest.fixture(scope="module")
def sphere(sphere_curve):
    """Noisy sphere (q, I, dI, None, "1/A"), q in 1/Å, arrays of shape (n,); ``negative`` subtracts too much background."""

    def make(radius: float, q_min: float = 2e-3, q_max: float = 0.4, n: int = 160, negative: bool = False):
        q, intensity, d_i = sphere_curve(radius, n=n, q_min=q_min, q_max=q_max, seed=int(radius * 10))
        if negative:
            intensity = intensity - 0.05
        return q, intensity, d_i, None, "1/A"

    return make


def full_domain(sphere, radius: float):
    """A curve covering the model's whole q-domain: it marks the batch the faulty model fails on."""
    return sphere(radius, q_min=5e-5, q_max=1.5, n=400)


def with_side_branch(kind: str, target: str) -> onnx.ModelProto:
    """The linear-heads model (same weights as ``build_linear_heads_model(seed=SEED)``) with a zero side branch.

    kind "fail": Gather(index = number of covered bins // 128) from a table of 2 zeros
    -> out of bounds (onnxruntime raises) for a curve covering all 256 bins.
    kind "nan": sqrt(min of channel 0) * 0 -> NaN for a curve with a negative bin.
    ``target`` is the output the branch is added to: "probabilities" or "novelty".
    """
    model = build_linear_heads_model(n_samples=SAMPLES, seed=SEED)
    graph = model.graph
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "ch_start"),
        numpy_helper.from_array(np.array([1], np.int64), "ch_axis"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "reduce_axes"),
        numpy_helper.from_array(np.zeros(2, np.float32), "table"),
        numpy_helper.from_array(np.array(128.0, np.float32), "half"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "per_curve"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
    ]
    if kind == "fail":
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "ch_pick"))
        inits.append(numpy_helper.from_array(np.array([2], np.int64), "ch_end"))
        nodes = [
            helper.make_node("Slice", ["features", "ch_pick", "ch_end", "ch_axis"], ["coverage"]),
            helper.make_node("ReduceSum", ["coverage", "reduce_axes"], ["n_covered"], keepdims=0),
            helper.make_node("Div", ["n_covered", "half"], ["ratio"]),
            helper.make_node("Floor", ["ratio"], ["ratio_floor"]),
            helper.make_node("Cast", ["ratio_floor"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["side_flat"], axis=0),
        ]
    else:
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "ch_end"))
        nodes = [
            helper.make_node("Slice", ["features", "ch_start", "ch_end", "ch_axis"], ["intensity"]),
            helper.make_node("ReduceMin", ["intensity", "reduce_axes"], ["lowest"], keepdims=0),
            helper.make_node("Sqrt", ["lowest"], ["root"]),
            helper.make_node("Mul", ["root", "zero"], ["side_flat"]),
        ]
    original = list(graph.node)
    ordered = list(nodes)  # the side branch needs only the input: it goes first
    for node in original:
        if target == "probabilities" and node.op_type == "Softmax":
            ordered += [
                helper.make_node("Reshape", ["side_flat", "per_curve"], ["side"]),
                helper.make_node("Add", ["logits", "side"], ["logits_faulty"]),
            ]
            node.input[0] = "logits_faulty"
        if target == "novelty" and NOVELTY_OUTPUT in node.output:
            node.output[0] = "novelty_raw"
        ordered.append(node)
    if target == "novelty":
        ordered.append(helper.make_node("Add", ["novelty_raw", "side_flat"], [NOVELTY_OUTPUT]))
    graph.initializer.extend(inits)
    del graph.node[:]
    graph.node.extend(ordered)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> BNNClassifier:
    path = write_model(tmp_path_factory.mktemp("faults") / "healthy.onnx", n_samples=SAMPLES, seed=SEED)
    return BNNClassifier(path, provider="cpu", intra_op_threads=1)


def faulty(tmp_path, kind: str, target: str = "probabilities", batch_size: int = 4, model_streams: int = 1) -> BNNClassifier:
    path = tmp_path / f"{kind}_{target}.onnx"
    onnx.save(with_side_branch(kind, target), str(path))
    return BNNClassifier(path, provider="cpu", intra_op_threads=1, batch_size=batch_size, model_streams=model_streams)


def assert_same_verdicts(got, expected):
    assert got.ok and expected.ok
    assert got.label == expected.label and got.is_novel == expected.is_novel
    np.testing.assert_allclose(got.probabilities, expected.probabilities, rtol=1e-6, atol=1e-7)


def assert_no_label(result, message_fragment: str):
    assert result.status == "error" and result.label is None
    assert message_fragment in result.message and "nan" not in result.message.lower()
    assert math.isnan(result.confidence) and np.isnan(result.probabilities).all()


@pytest.mark.parametrize("streams", [1, 3])
def test_onnxruntime_failing_mid_batch_costs_only_the_curves_it_fails_on(healthy, tmp_path, caplog, sphere, streams):
    model = faulty(tmp_path, "fail", batch_size=4, model_streams=streams)  # 3 streams: the calls run side by side
    curves = [sphere(20 + 5 * k) for k in range(11)]
    marked = {2, 9}  # in the first and the third batch of four
    for k in marked:
        curves[k] = full_domain(sphere, 20 + 5 * k)
    covers_all = np.zeros((1, 4, 256), np.float32)
    covers_all[:, 1, :] = 1.0
    with pytest.raises(Exception, match="out of bounds|out of data bounds|indices"):
        model.predict_features(covers_all)  # the unprotected path: onnxruntime really fails
    with caplog.at_level(logging.WARNING, logger="sasview_bnn_plugin.model.classifier"):
        results = model.classify(curves)
    reference = healthy.classify(curves)
    assert len(results) == len(curves)
    for k, (got, expected) in enumerate(zip(results, reference)):
        if k in marked:
            assert_no_label(got, "the model could not be run on this curve")
        else:
            assert_same_verdicts(got, expected)
    assert "retrying them one by one" in caplog.text


def test_a_session_failing_on_one_call_loses_no_curve(healthy, tmp_path, sphere):
    """A transient failure (e.g. out of memory) on the second batch: the retry classifies every curve."""
    model = faulty(tmp_path, "nan", batch_size=3)  # no negative curves here: behaves like the healthy model

    class FailsOnSecondCall:
        def __init__(self, session):
            self.session, self.calls = session, 0

        def run(self, outputs, feeds):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory")
            return self.session.run(outputs, feeds)

    model._session = FailsOnSecondCall(model._session)
    curves = [sphere(15 + 7 * k) for k in range(8)]
    results = model.classify(curves)
    for got, expected in zip(results, healthy.classify(curves)):
        assert_same_verdicts(got, expected)
    assert model._session.calls == 1 + 1 + 3 + 1  # batch 1, batch 2 (fails), its 3 curves one by one, batch 3


def test_a_session_that_always_fails_gives_error_rows_not_an_exception(tmp_path, sphere):
    model = faulty(tmp_path, "nan", batch_size=2)

    class AlwaysFails:
        def run(self, outputs, feeds):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    model._session = AlwaysFails()
    results = model.classify([sphere(30), (np.arange(3.0), np.ones(3)), sphere(40), sphere(50)])
    assert [r.status for r in results] == ["error"] * 4
    assert "at least 30 are needed" in results[1].message  # refused before the model, as usual
    for k in (0, 2, 3):
        assert_no_label(results[k], "the model could not be run on this curve")
        assert "CUDA" not in results[k].message  # the detail goes to the log, not to the scientist


@pytest.mark.parametrize("target, fragment", [("probabilities", "not finite numbers"), ("novelty", "novelty score that is not a finite number")])
def test_nan_model_outputs_never_give_a_label(healthy, tmp_path, target, fragment, sphere):
    model = faulty(tmp_path, "nan", target=target, batch_size=8)
    curves = [sphere(25), sphere(35, negative=True), sphere(45), sphere(55, negative=True), sphere(65)]
    results = model.classify(curves)
    reference = healthy.classify(curves)
    for k, (got, expected) in enumerate(zip(results, reference)):
        if k in (1, 3):
            assert_no_label(got, fragment)
        else:
            assert_same_verdicts(got, expected)


def test_outputs_that_are_not_probabilities_are_refused(healthy, tmp_path, sphere):
    model = faulty(tmp_path, "nan", batch_size=8)

    class Doubles:
        def __init__(self, session):
            self.session = session

        def run(self, outputs, feeds):
            probs, novelty = self.session.run(outputs, feeds)
            probs = probs.copy()
            probs[1] *= 2.0  # the second curve of each batch: sums to 2
            return [probs, novelty]

    model._session = Doubles(model._session)
    results = model.classify([sphere(25), sphere(35), sphere(45)])
    assert results[0].ok and results[2].ok
    assert_no_label(results[1], "not probabilities")
