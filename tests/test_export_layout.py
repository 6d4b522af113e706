"""The exported graph's layouts give the outputs of the old (torch-exported, grouped Conv1d) graph.

A small network with random weights and a random novelty head is written both
ways (:func:`~sasview_bnn_trainer.export.write_graph` with layout "grouped",
the reference, and each new layout) and every output is compared on random
inputs and on real-ish ones (analytic scattering curves through the runtime's
preprocessing). The shipped model is rebuilt in the new layout from the
weights its own file holds and compared with the shipped file on 2,000
simulated curves; the shipped file itself is only read.

Tolerances: class and anomaly probabilities within 1e-5 (absolute); the
novelty score within 1e-5 * max(1, |score|): a score is M / q_M with M a sum
of squares of about a thousand, so far from the training data (scores of tens
to thousands on random inputs) float32 resolves it only to a few 1e-7
relative, and two float32 evaluations that add in another order differ by
about ten times that (each is about 2e-6 relative from the float64 answer).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from sasview_bnn_plugin.core.preprocessing import prepare_curve
from sasview_bnn_trainer.export import (
    EXPORT_LAYOUTS,
    float64_outputs,
    random_operators,
    read_metadata,
    rebuild_model_file,
    weights_sha256,
    write_graph,
)
from sasview_bnn_trainer.network import PARAMETER_NAMES, NetworkConfig, PackedCNN
from sasview_bnn_trainer.novelty import ExportedModel, MahalanobisNovelty
from sasview_bnn_trainer.onnx_graph import LAYOUTS, EnsembleWeights, build_graph

TOL = 1e-5


def small_model(config: NetworkConfig, samples: int, seed: int = 0) -> ExportedModel:
    """Random weights (a bit larger than PyTorch's init, so the logits spread) and a random novelty head."""
    torch.manual_seed(seed)
    net = PackedCNN(config, samples).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.5)
    rng = np.random.default_rng(seed)
    h = config.hidden
    means = rng.normal(size=(samples, 5, h))
    whiten = np.stack([np.linalg.cholesky(np.linalg.inv(np.cov(rng.normal(size=(h, 4 * h))) + 0.1 * np.eye(h))).T
                       for _ in range(samples)])
    model = ExportedModel(net, MahalanobisNovelty(means, whiten)).eval()
    model.set_novelty_scales(37.5, 0.8)
    return model


def realish_features(n: int, seed: int = 1, config=None) -> np.ndarray:
    """Analytic curves (polydisperse-looking spheres, power laws, Guinier humps, with noise and a flat background),
    mapped onto model inputs by ``config`` (a PreprocessingConfig; default: the default 4-channel input)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        q = np.geomspace(rng.uniform(0.002, 0.01), rng.uniform(0.2, 0.6), int(rng.integers(80, 400)))
        kind = k % 3
        if kind == 0:
            r = rng.uniform(20, 200)
            qr = q * r * rng.normal(1.0, 0.05, q.size).clip(0.7, 1.3)
            i = (3 * (np.sin(qr) - qr * np.cos(qr)) / qr**3) ** 2
        elif kind == 1:
            i = q ** -rng.uniform(1.0, 4.0)
        else:
            i = np.exp(-((q * rng.uniform(10, 100)) ** 2) / 3) + 1e-3 * q**-1
        i = i / i[0] * rng.uniform(1, 1e3) + rng.uniform(0, 1e-2)
        di = np.abs(i) * rng.uniform(0.01, 0.1)
        i = i + di * rng.normal(size=q.size)
        out.append(prepare_curve(q, i, di, "1/A", config).features)
    return np.stack(out).astype(np.float32)


def session(path) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"features": x})))


def assert_same_outputs(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Every output of ``ref`` is in ``got`` with the same shape and agrees within the module's tolerances."""
    assert list(got) == list(ref)
    diffs = {}
    for name, value in ref.items():
        assert got[name].shape == value.shape and got[name].dtype == value.dtype, name
        d = np.abs(got[name].astype(np.float64) - value)
        if d.size == 0:  # an empty batch: shapes and types checked above
            diffs[name] = 0.0
            continue
        if name == "novelty_score":
            assert np.all(d <= TOL * np.maximum(1.0, np.abs(value))), (name, float(d.max()))
        else:
            assert float(d.max()) <= TOL, (name, float(d.max()))
        diffs[name] = float(d.max())
    return diffs


CONFIGS = {
    "flatten+presence": (NetworkConfig(channels=(8, 16, 32), hidden=32), 4),
    "average, no presence": (NetworkConfig(channels=(8, 16, 16), hidden=24, kernel=5, pooling="average", n_anomalies=0), 3),
    "one sample": (NetworkConfig(channels=(4, 8, 16), hidden=16), 1),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_new_layouts_give_the_outputs_of_the_old_graph(case, tmp_path):
    config, samples = CONFIGS[case]
    model = small_model(config, samples)
    write_graph(model, tmp_path / "old.onnx", "grouped")
    old = session(tmp_path / "old.onnx")
    x_random = np.random.default_rng(2).standard_normal((37, 4, 256)).astype(np.float32)
    x_real = realish_features(48)
    for layout in LAYOUTS:
        proto = write_graph(model, tmp_path / f"{layout}.onnx", layout)
        assert random_operators(proto) == []
        new = session(tmp_path / f"{layout}.onnx")
        assert [(i.name, i.shape[1:]) for i in new.get_inputs()] == [(i.name, i.shape[1:]) for i in old.get_inputs()]
        for x in (x_random, x_real, x_real[:1], x_real[:0]):  # the empty batch too, as the old graph allows it
            assert_same_outputs(run(new, x), run(old, x))
        ref = run(old, x_real)
        with torch.no_grad():  # and the torch module (float32) the export calibrates with
            t_out = [t.numpy() for t in model(torch.from_numpy(x_real))]
        assert_same_outputs(run(new, x_real), dict(zip(ref, t_out)))
        exact_probs, exact_presence = float64_outputs(model, x_real)
        got = run(new, x_real)
        assert np.max(np.abs(got["probabilities"] - exact_probs)) <= TOL
        if config.n_anomalies:
            assert np.max(np.abs(got["anomaly_probabilities"] - exact_presence)) <= TOL
        else:
            assert "anomaly_probabilities" not in got


def test_weights_read_back_from_either_layout_are_the_models(tmp_path):
    config, samples = CONFIGS["flatten+presence"]
    model = small_model(config, samples, seed=3)
    expected = EnsembleWeights.from_model(model)
    for layout in EXPORT_LAYOUTS:
        back = EnsembleWeights.from_onnx(write_graph(model, tmp_path / f"{layout}.onnx", layout), config)
        assert back.samples == samples and back.scales == expected.scales
        for name in PARAMETER_NAMES:
            np.testing.assert_array_equal(back.params[name], expected.params[name], err_msg=f"{layout} {name}")
        for field in ("whiten", "project", "mean_norms"):
            np.testing.assert_array_equal(getattr(back, field), getattr(expected, field), err_msg=f"{layout} {field}")
        digest = hashlib.sha256(b"".join(back.params[n].astype("<f4").tobytes() for n in PARAMETER_NAMES))
        assert digest.hexdigest() == weights_sha256(model.network)


def test_the_new_graph_stores_each_weight_once(tmp_path):
    """No duplicated weights: the file stays the size of the old one (the shipped model must stay under 20 MB)."""
    config, samples = CONFIGS["flatten+presence"]
    model = small_model(config, samples)
    old = write_graph(model, tmp_path / "old.onnx", "grouped")
    new = build_graph(EnsembleWeights.from_model(model))
    floats = lambda proto: sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    assert floats(new) <= floats(old) * 1.01 + 16


def test_unknown_layout_is_refused():
    config, samples = CONFIGS["one sample"]
    with pytest.raises(ValueError, match="layout"):
        build_graph(EnsembleWeights.from_model(small_model(config, samples)), "tiled")


@pytest.mark.slow
def test_the_shipped_model_rebuilt_from_its_own_weights_gives_its_outputs(tmp_path):
    """The default shipped model, rebuilt in the new layout from its initializers: same metadata, same outputs on 2,000 curves."""
    simulation = pytest.importorskip("sasview_bnn_trainer.simulation.runner")
    from sasview_bnn_plugin.model.card import file_sha256, verify_model_file
    from sasview_bnn_plugin.model.catalog import resolve_model, shipped_models
    from sasview_bnn_plugin.core.model_format import check_metadata
    from sasview_bnn_trainer.features import FeatureFile, build_features, default_features_path

    shipped = resolve_model(None, shipped_models()).path
    before = file_sha256(shipped)
    rebuilt = rebuild_model_file(shipped, tmp_path / "rebuilt.onnx")
    assert file_sha256(shipped) == before == verify_model_file(shipped, require_card=True)["sha256"]
    old_proto, new_proto = onnx.load(str(shipped)), onnx.load(str(rebuilt))
    assert [(p.key, p.value) for p in new_proto.metadata_props] == [(p.key, p.value) for p in old_proto.metadata_props]
    assert read_metadata(rebuilt) == read_metadata(shipped)
    assert random_operators(new_proto) == []
    assert {n.op_type for n in new_proto.graph.node}.isdisjoint({"Tile", "Expand"})  # the input is not tiled any more

    used = json.loads(read_metadata(shipped)["training_data"])["seed"]
    seed = 77_123
    assert seed != used
    data = simulation.simulate_to_file(2000, tmp_path / "curves.h5", seed=seed, workers=2, progress=False)
    config = check_metadata(read_metadata(shipped))  # the model's own preprocessing (its input channels)
    with FeatureFile(build_features(data, default_features_path(data, config), config, progress=False)) as ff:
        x = ff.read_rows(np.arange(len(ff)))
    assert x.shape[0] >= 1900  # a few curves may be refused by the preprocessing
    x = np.concatenate([x, realish_features(100, seed=5, config=config)])
    old, new = session(shipped), session(rebuilt)
    for batch in (1000, 1):  # the batch size must not matter either
        rows = slice(0, None) if batch > 1 else slice(0, 20)
        ref = {k: np.concatenate(v) for k, v in zip(
            run(old, x[:1]), zip(*[run(old, x[rows][s : s + batch]).values() for s in range(0, x[rows].shape[0], batch)]))}
        got = {k: np.concatenate(v) for k, v in zip(
            run(new, x[:1]), zip(*[run(new, x[rows][s : s + batch]).values() for s in range(0, x[rows].shape[0], batch)]))}
        diffs = assert_same_outputs(got, ref)
        print(f"shipped model rebuilt, batch {batch}, {x[rows].shape[0]} curves: max abs differences {diffs}")


def test_the_export_command_offers_the_exporters_layouts():
    from sasview_bnn_trainer import cli_export, export
    from sasview_bnn_trainer.onnx_graph import DEFAULT_LAYOUT

    assert cli_export.EXPORT_LAYOUTS == export.EXPORT_LAYOUTS and cli_export.DEFAULT_LAYOUT == DEFAULT_LAYOUT
