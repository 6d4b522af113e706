"""Execution-provider choice and CPU fall-back, with real onnxruntime sessions on CPU.

There is no GPU here, so the list of available providers is injected; with a
CPU-only onnxruntime, asking a real session for CUDA makes onnxruntime drop it
silently, which is exactly the broken-CUDA case the fall-back must survive.
"""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from sasview_bnn_plugin.model.providers import CPU, CUDA, choose_providers, open_session

WITH_CUDA = [CUDA, CPU]


@pytest.fixture(scope="module")
def model_path(make_test_model):
    return make_test_model("m.onnx", n_samples=2)


def real_session(model, options, providers):
    return ort.InferenceSession(model, sess_options=options, providers=providers)


def test_auto_picks_cuda_only_when_offered():
    assert choose_providers("auto", WITH_CUDA).providers == (CUDA, CPU)
    decision = choose_providers("auto", [CPU])
    assert decision.providers == (CPU,) and "onnxruntime-gpu" in decision.reason


def test_cpu_forced_even_when_cuda_is_offered():
    decision = choose_providers("cpu", WITH_CUDA)
    assert decision.providers == (CPU,) and decision.device == "cpu"


def test_cuda_requested_but_missing_falls_back_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="sasview_bnn_plugin.model.providers"):
        decision = choose_providers("cuda", [CPU])
    assert decision.providers == (CPU,)
    assert "CUDA was requested" in caplog.text


def test_unknown_provider_is_refused():
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        choose_providers("tpu", [CPU])


def test_cuda_silently_dropped_by_onnxruntime_falls_back_to_cpu(model_path, caplog):
    # This onnxruntime has no CUDA: the real session drops the provider it was asked for.
    with caplog.at_level(logging.WARNING, logger="sasview_bnn_plugin.model.providers"):
        session, decision = open_session(model_path, "auto", available=WITH_CUDA)
    assert decision.providers == (CPU,) and "dropped" in decision.reason
    assert "dropped" in caplog.text
    out = session.run(None, {"features": np.zeros((2, 4, 256), np.float32)})
    assert out[0].shape == (2, 2, 7)


def test_cuda_session_creation_raising_falls_back_to_cpu(model_path):
    calls = []

    def broken_cuda(model, options, providers):
        calls.append(tuple(providers))
        if CUDA in providers:
            raise RuntimeError("libcublasLt.so.12: cannot open shared object file")
        return real_session(model, options, providers)

    session, decision = open_session(model_path, "auto", intra_op_threads=1, available=WITH_CUDA, session_factory=broken_cuda)
    assert calls == [(CUDA, CPU), (CPU,)]
    assert decision.providers == (CPU,) and "libcublasLt" in decision.reason
    assert session.get_providers() == [CPU]


def test_working_cuda_is_kept(model_path):
    # A factory whose session reports CUDA in use stands in for a GPU machine.
    class ReportsCuda:
        def __init__(self, inner):
            self.inner = inner

        def get_providers(self):
            return [CUDA, CPU]

    session, decision = open_session(
        model_path, "auto", available=WITH_CUDA, session_factory=lambda m, o, p: ReportsCuda(real_session(m, o, [CPU]))
    )
    assert decision.device == "cuda" and decision.providers == (CUDA, CPU)


def test_cpu_requested_never_asks_for_cuda(model_path):
    asked = []
    open_session(model_path, "cpu", available=WITH_CUDA, session_factory=lambda m, o, p: asked.append(p) or real_session(m, o, p))
    assert asked == [[CPU]]


def test_intra_op_threads_reach_the_session(model_path):
    seen = []

    def record(model, options, providers):
        seen.append(options.intra_op_num_threads)
        return real_session(model, options, providers)

    open_session(model_path, "cpu", intra_op_threads=1, session_factory=record)
    assert seen == [1]
    with pytest.raises(ValueError):
        open_session(model_path, "cpu", intra_op_threads=-2)


def spinning_entry(options: ort.SessionOptions) -> str | None:
    """The session's ``session.intra_op.allow_spinning`` entry; None when unset (onnxruntime's default: spinning)."""
    try:
        return options.get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:
        return None


def test_spinning_off_reaches_the_session_and_the_fallback(model_path):
    """``spinning=False`` (classify with reading processes) sets onnxruntime's allow_spinning to 0, also on the
    CPU session a broken CUDA falls back to; the default leaves onnxruntime's own setting."""
    seen = []

    def record(model, options, providers):
        seen.append((providers[0], spinning_entry(options)))
        if CUDA in providers:
            raise RuntimeError("libcudart.so.12: cannot open shared object file")
        return real_session(model, options, providers)

    open_session(model_path, "auto", available=WITH_CUDA, session_factory=record, spinning=False)
    assert seen == [(CUDA, "0"), (CPU, "0")]
    seen.clear()
    open_session(model_path, "cpu", session_factory=record)
    assert seen == [(CPU, None)]


@pytest.mark.parametrize("jobs, expected", [(2, "0"), (1, None)])
def test_classify_with_reading_processes_turns_spinning_off(model_path, jobs, expected):
    import argparse

    from sasview_bnn_plugin.cli.classify import open_classifier

    args = argparse.Namespace(model=str(model_path), provider="cpu", threads=1, novelty_threshold=None, batch_size=8,
                              set_level=None, novelty_level=None, jobs=jobs)
    _, classifier, _ = open_classifier(args)
    assert spinning_entry(classifier._session.get_session_options()) == expected
