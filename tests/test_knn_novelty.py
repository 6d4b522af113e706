"""The kNN novelty score inside the exported graph (``sasview-bnn-train export --novelty-score knn_entropy``).

Two parts: random-weight networks (``test_export_layout.small_model``) check
the graph against its torch reference (:class:`~sasview_bnn_trainer.novelty.KnnNovelty`
in :class:`~sasview_bnn_trainer.novelty.ExportedModel`) for every layout, score
and feature choice, and the weights read back from the file; a tiny model
trained here on simulated curves (module fixture, slow) is exported with the
option and checked end to end: metadata and card, the score on curves far from
the bank, and the runtime's p-values on held-out in-distribution curves.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
# the layout tests' small networks and helpers (that module skips without onnxruntime too)
from test_export_layout import CONFIGS, TOL, realish_features, run, session, small_model  # noqa: E402

from sasview_bnn_trainer.export import float64_outputs, random_operators, write_graph  # noqa: E402
from sasview_bnn_trainer.novelty import KNN_FEATURES, NOVELTY_SCORES, ExportedModel, KnnNovelty, stratified_rows, unit_features  # noqa: E402
from sasview_bnn_trainer.onnx_graph import LAYOUTS, EnsembleWeights, build_graph  # noqa: E402


def knn_model(case: str, kind: str = "knn_entropy", features: str = "mean", k: int = 10, n_bank: int = 300) -> ExportedModel:
    """A random-weight network of CONFIGS[case] with a kNN head whose bank is ``n_bank`` analytic curves."""
    config, samples = CONFIGS[case]
    network = small_model(config, samples).network
    with torch.no_grad():
        hidden = network.hidden_features(torch.from_numpy(realish_features(n_bank, seed=5))).double().numpy()
    model = ExportedModel(network, KnnNovelty(hidden.transpose(1, 0, 2), k, features), with_entropy=kind == "knn_entropy").eval()
    model.set_novelty_scales(0.05, 0.8)
    return model


def scores_agree(got: np.ndarray, ref: np.ndarray) -> float:
    """Max |got - ref| / max(1, |ref|), asserted <= TOL (the layout tests' rule for the novelty score)."""
    rel = np.abs(got.astype(np.float64) - ref) / np.maximum(1.0, np.abs(ref))
    assert rel.size == 0 or float(rel.max()) <= TOL, float(rel.max())
    return float(rel.max()) if rel.size else 0.0


@pytest.mark.parametrize("features", KNN_FEATURES)
@pytest.mark.parametrize("kind", ["knn_entropy", "knn"])
@pytest.mark.parametrize("case", list(CONFIGS))
def test_the_graph_gives_the_torch_reference(case, kind, features, tmp_path):
    model = knn_model(case, kind, features)
    x = np.concatenate([realish_features(40, seed=7), np.random.default_rng(3).standard_normal((9, 4, 256)).astype(np.float32)])
    with torch.no_grad():
        ref = [t.numpy() for t in model(torch.from_numpy(x))]
    exact_probs, _, exact_scores = float64_outputs(model, x, with_scores=True)
    for layout in LAYOUTS:
        proto = write_graph(model, tmp_path / f"{layout}.onnx", layout)
        assert random_operators(proto) == []
        sess = session(tmp_path / f"{layout}.onnx")
        got = run(sess, x)
        assert list(got)[:2] == ["probabilities", "novelty_score"] and got["novelty_score"].shape == (x.shape[0],)
        assert np.max(np.abs(got["probabilities"] - ref[0])) <= TOL
        assert np.max(np.abs(got["probabilities"] - exact_probs)) <= TOL
        scores_agree(got["novelty_score"], ref[1])  # the float32 torch module the export calibrates with
        scores_agree(got["novelty_score"], exact_scores)  # and the exact (float64) answer
        for part in (x[:1], x[:0]):  # one curve, and the empty batch
            one = run(sess, part)["novelty_score"]
            assert one.shape == (part.shape[0],)
            scores_agree(one, ref[1][: part.shape[0]])


def test_the_score_is_one_minus_the_kth_cosine_similarity():
    """Against a plain numpy computation of the definition, posterior-mean features and per-sample ones."""
    for features in KNN_FEATURES:
        model = knn_model("flatten+presence", "knn", features, k=7)
        x = realish_features(30, seed=8)
        with torch.no_grad():
            hidden = model.network.hidden_features(torch.from_numpy(x)).double()
            _, knn, _, _ = model.components(torch.from_numpy(x))
            bank_hidden = model.network.hidden_features(torch.from_numpy(realish_features(300, seed=5))).double()
        if features == "mean":
            a, b = unit_features(hidden.mean(dim=1)).numpy(), unit_features(bank_hidden.mean(dim=1)).numpy()
        else:
            s = hidden.shape[1]
            a = unit_features(hidden).reshape(len(x), -1).numpy() / np.sqrt(s)
            b = unit_features(bank_hidden).reshape(300, -1).numpy() / np.sqrt(s)
        similarity = np.sort(a @ b.T, axis=1)[:, ::-1]
        # the bank is stored in float16: about 1e-3 of each component
        np.testing.assert_allclose(knn.numpy(), 1.0 - similarity[:, 6], atol=2e-3)


def test_the_score_is_larger_far_from_the_bank():
    model = knn_model("flatten+presence", "knn", "mean", n_bank=300)
    bank_curves = realish_features(300, seed=5)
    near = realish_features(60, seed=11)  # other curves of the bank's kinds
    far = np.random.default_rng(4).standard_normal((60, 4, 256)).astype(np.float32) * 3.0  # nothing like a curve
    with torch.no_grad():
        score = {name: model(torch.from_numpy(v))[1].numpy() for name, v in (("bank", bank_curves), ("near", near), ("far", far))}
    assert np.median(score["far"]) > np.quantile(score["bank"], 0.95)
    assert np.median(score["far"]) > np.median(score["near"]) >= np.median(score["bank"]) * 0.5


def test_the_weights_and_settings_read_back_from_the_file(tmp_path):
    for kind, features in (("knn_entropy", "mean"), ("knn", "samples")):
        model = knn_model("flatten+presence", kind, features, k=5)
        expected = EnsembleWeights.from_model(model)
        for layout in LAYOUTS:
            back = EnsembleWeights.from_onnx(write_graph(model, tmp_path / f"{kind}_{layout}.onnx", layout), CONFIGS["flatten+presence"][0])
            assert (back.novelty, back.knn_k, back.knn_features) == (kind, 5, features)
            assert back.scales[: 2 if kind == "knn_entropy" else 1] == expected.scales[: 2 if kind == "knn_entropy" else 1]
            np.testing.assert_array_equal(back.knn_bank, expected.knn_bank)
            for name, value in expected.params.items():
                np.testing.assert_array_equal(back.params[name], value)
            # rebuilt from what it read, the graph is the same graph
            assert build_graph(back, layout).graph == build_graph(expected, layout).graph


def test_the_bank_is_stored_once_in_float16(tmp_path):
    """The posterior-mean bank adds B x hidden float16 values to the file, the per-sample one S times that."""
    config, samples = CONFIGS["flatten+presence"]
    sizes = {}
    for features in KNN_FEATURES:
        proto = build_graph(EnsembleWeights.from_model(knn_model("flatten+presence", "knn_entropy", features, n_bank=300)))
        (bank,) = [t for t in proto.graph.initializer if t.name == "novelty.knn_bank"]
        assert bank.data_type == onnx.TensorProto.FLOAT16
        sizes[features] = int(np.prod(bank.dims))
    assert sizes == {"mean": config.hidden * 300, "samples": samples * config.hidden * 300}


def test_stratified_rows_are_even_over_the_classes_and_seeded():
    labels = np.r_[np.zeros(5000, int), np.ones(300, int), np.full(2000, 2)]
    rows = np.arange(labels.size) + 100
    picked = stratified_rows(rows, labels, 1200, seed=0)
    assert picked.size == 1200 and np.unique(picked).size == 1200 and np.all(np.diff(picked) > 0)
    counts = np.bincount(labels[picked - 100])
    assert counts[1] == 300 and abs(int(counts[0]) - int(counts[2])) <= 150  # the small class whole, the rest shared
    np.testing.assert_array_equal(picked, stratified_rows(rows, labels, 1200, seed=0))
    assert not np.array_equal(picked, stratified_rows(rows, labels, 1200, seed=1))
    np.testing.assert_array_equal(stratified_rows(rows[:50], labels[:50], 1200, seed=0), rows[:50])


def test_refusals():
    config, samples = CONFIGS["one sample"]
    with pytest.raises(ValueError, match="k <= the bank size"):
        KnnNovelty(np.ones((samples, 5, config.hidden)), k=6)
    with pytest.raises(ValueError, match="grouped"):
        write_graph(knn_model("one sample"), "unused.onnx", "grouped")


def test_the_export_command_offers_the_exporters_scores():
    from sasview_bnn_trainer import cli_export
    from sasview_bnn_trainer.novelty import DEFAULT_KNN_BANK, DEFAULT_KNN_K, DEFAULT_NOVELTY_SCORE

    assert cli_export.NOVELTY_SCORES == tuple(NOVELTY_SCORES) and cli_export.NOVELTY_SCORES[0] == DEFAULT_NOVELTY_SCORE
    assert cli_export.KNN_FEATURES == KNN_FEATURES
    import argparse

    parser = argparse.ArgumentParser()
    cli_export.add_parser(parser.add_subparsers())
    args = parser.parse_args(["export", "RUN", "--out", "m.onnx"])
    assert (args.novelty_score, args.knn_k, args.knn_bank, args.knn_features) == (DEFAULT_NOVELTY_SCORE, DEFAULT_KNN_K,
                                                                                  DEFAULT_KNN_BANK, KNN_FEATURES[0])


# -- a model trained here, exported with the option ---------------------------------------------------------------

N_TRAIN, N_HELD_OUT, N_BANK = 2000, 600, 600


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("sasmodels")
    from sasview_bnn_trainer.export import export_run
    from sasview_bnn_trainer.fit import FitConfig, fit
    from sasview_bnn_trainer.network import NetworkConfig
    from sasview_bnn_trainer.simulation.runner import simulate_to_file

    folder = tmp_path_factory.mktemp("knn")
    train = simulate_to_file(N_TRAIN, folder / "train.h5", seed=21, workers=1, progress=False)
    held_out = simulate_to_file(N_HELD_OUT, folder / "held_out.h5", seed=22, workers=1, progress=False)
    config = FitConfig(method="ensemble", epochs=3, samples=3, seed=2, lr=3e-3, val_fraction=0.4, outlier_fraction=0.1,
                       network=NetworkConfig(channels=(8, 16, 16), hidden=32))
    fit(train, folder / "run", config, progress=False)
    exported = export_run(folder / "run", folder / "knn.onnx", 3, novelty_score="knn_entropy", knn_bank=N_BANK, knn_k=10)
    return folder, train, held_out, exported


def held_out_inputs(path) -> list[tuple]:
    from sasview_bnn_trainer.simulation.store import CurveReader

    with CurveReader(path) as reader:
        return [(c.q, c.intensity, c.d_intensity, c.dq, c.q_unit) for c in reader.read(0, len(reader))]


@pytest.mark.slow
def test_an_exported_knn_model_carries_its_settings(trained):
    from sasview_bnn_plugin.core.model_format import check_metadata, read_optional_parts
    from sasview_bnn_plugin.model.catalog import card_from_metadata, read_metadata
    from sasview_bnn_trainer.card import build_card, render_markdown

    folder, _, _, exported = trained
    meta = read_metadata(exported.path)  # the one metadata reader, the runtime's
    check_metadata(meta)
    assert meta == exported.metadata
    assert meta["novelty_score"] == NOVELTY_SCORES["knn_entropy"] == "max(knn/q_knn, entropy/q_entropy)"
    settings = json.loads(meta["novelty_settings"])
    assert settings["score"] == "knn_entropy" and settings["k"] == 10 and settings["features"] == "mean"
    assert settings["bank_size"] == N_BANK == sum(settings["bank_classes"].values())
    assert len(settings["bank_classes"]) >= 6 and max(settings["bank_classes"].values()) - min(settings["bank_classes"].values()) <= N_BANK // 7
    assert set(json.loads(meta["novelty_scales"])) == {"knn", "entropy"}
    parts = read_optional_parts(meta, [o.name for o in session(exported.path).get_outputs()])
    assert parts.novelty_calibration is not None and parts.conformal is not None
    assert json.loads(card_from_metadata(meta)["novelty_settings"]) == settings  # `sasview-bnn models`
    card = build_card(exported.path, {})
    assert card["novelty"]["score"] == meta["novelty_score"] and card["novelty"]["settings"] == settings
    assert "k = 10, bank of 600 training curves, mean features" in render_markdown(card)
    back = EnsembleWeights.from_onnx(onnx.load(str(exported.path)))
    assert (back.novelty, back.knn_k, back.knn_bank.shape) == ("knn_entropy", 10, (32, N_BANK))
    # rebuilt in the other layout from the file alone: the same metadata, the same outputs
    from sasview_bnn_trainer.export import rebuild_model_file

    rebuilt = rebuild_model_file(exported.path, folder / "batch_major.onnx", "batch-major")
    assert read_metadata(rebuilt) == meta
    x = realish_features(20, seed=9)
    a, b = run(session(exported.path), x), run(session(rebuilt), x)
    assert np.max(np.abs(a["probabilities"] - b["probabilities"])) <= TOL
    scores_agree(b["novelty_score"], a["novelty_score"].astype(np.float64))


@pytest.mark.slow
def test_the_exported_graph_matches_its_torch_reference(trained):
    from sasview_bnn_trainer.features import FeatureFile, build_features

    _, _, held_out, exported = trained
    with FeatureFile(build_features(held_out, progress=False)) as ff:
        x = ff.read_rows(np.arange(len(ff)))
    got = run(session(exported.path), x)
    # against the float64 reference (as the export checks itself): two float32 sums differ from each other by
    # about twice what either differs from the exact score, which 1/q_knn magnifies
    probs, presence, scores = float64_outputs(exported.model, x, with_scores=True)
    assert np.max(np.abs(got["probabilities"] - probs)) <= TOL
    assert np.max(np.abs(got["anomaly_probabilities"] - presence)) <= TOL
    # K = 1 - (a cosine near 1) loses float32's resolution, ~1e-7, which the score then divides by q_knn
    q_knn = float(exported.model.scales[0])
    diff = np.abs(got["novelty_score"].astype(np.float64) - scores) / np.maximum(1.0, np.abs(scores))
    assert float(diff.max()) <= TOL + 8 * float(np.finfo(np.float32).eps) / q_knn, (float(diff.max()), q_knn)
    print(f"kNN-exported model, {len(x)} held-out curves: max relative score difference {float(diff.max()):.2g} (q_knn {q_knn:.3g})")


@pytest.mark.slow
def test_the_knn_score_sees_curves_far_from_the_bank(trained):
    """The bank's own curves (chosen again as the export chose them) score lowest, held-out ones a bit higher, inputs
    unlike any preprocessed curve far higher. (Pure-noise curves are not far for this network: they are the flatness
    test's job.)"""
    from sasview_bnn_trainer.features import FeatureFile, build_features, run_split
    from sasview_bnn_trainer.fit import load_run

    folder, _, held_out, exported = trained
    data = load_run(folder / "run")[1]["data"]
    with FeatureFile(data["features_path"]) as ff:
        train_rows, _ = run_split(data, ff)
        x_bank = ff.read_rows(stratified_rows(train_rows, ff.labels[train_rows], N_BANK, 0))
    with FeatureFile(build_features(held_out, progress=False)) as ff:
        x_held = ff.read_rows(np.arange(len(ff)))
    x_far = 3.0 * np.random.default_rng(0).standard_normal((100, 4, 256)).astype(np.float32)
    with torch.no_grad():
        knn = {name: exported.model.components(torch.from_numpy(x))[1].numpy()
               for name, x in (("bank", x_bank), ("held out", x_held), ("far", x_far))}
    print("kNN distance, median: " + ", ".join(f"{name} {np.median(v):.4f}" for name, v in knn.items()))
    # Bank and held-out curves are drawn alike; a bank curve counts itself among its k nearest, so it scores no higher
    # than a held-out one but for the medians' sampling spread over 600 curves (measured: 1.04x the other way round once).
    assert np.median(knn["bank"]) <= 1.1 * np.median(knn["held out"])
    far_vs_held = np.mean(knn["far"][:, None] > knn["held out"][None, :])  # AUROC of far against held-out curves
    print(f"AUROC far vs held out {far_vs_held:.3f}, far median / bank median {np.median(knn['far']) / np.median(knn['bank']):.1f}")
    assert np.median(knn["far"]) > np.quantile(knn["held out"], 0.9)
    assert np.mean(knn["far"][:, None] > knn["bank"][None, :]) > 0.9  # AUROC of far against bank curves
    assert far_vs_held > 0.9


@pytest.mark.slow
def test_the_runtime_classifies_with_it_and_its_p_values_are_uniform(trained):
    from sasview_bnn_plugin.model.classifier import BNNClassifier

    _, _, held_out, exported = trained
    classifier = BNNClassifier(exported.path, provider="cpu")
    results = [r for r in classifier.classify(held_out_inputs(held_out)) if r.status != "error"]
    assert len(results) >= 0.8 * N_HELD_OUT
    assert all(r.label is not None and np.isfinite(r.novelty_score) for r in results)
    p = np.array([r.novelty_p_value for r in results])
    assert np.all((p > 0) & (p <= 1))
    n_reference = classifier.novelty_reference.scores.size
    # uniform on in-distribution curves: P(p <= a) about a (the calibration curves are few: allow their granularity)
    for level in (0.1, 0.25, 0.5, 0.75):
        assert abs(float(np.mean(p <= level)) - level) <= 0.08 + 1.0 / n_reference, (level, float(np.mean(p <= level)))
    scores = np.array([r.novelty_score for r in results])
    print(f"runtime on {len(results)} held-out curves: P(p <= 0.1) = {np.mean(p <= 0.1):.3f}, P(p <= 0.5) = {np.mean(p <= 0.5):.3f}, "
          f"{n_reference} reference scores, novelty score median {np.median(scores):.3f}")


def test_the_study_table_reads_rows_of_an_earlier_study():
    """The leave-one-class-out study scores the exported kNN score too (knn_exported); a row written before has no such
    column, and the table shows the scores every row has."""
    from sasview_bnn_trainer.evaluation.novelty_study import SCORES, markdown_table

    assert "knn_exported" in SCORES
    entry = {"auroc": 0.7, "fpr_at_95_recall": 0.8}
    row = {"excluded": ["ordered"], "n_novel": 10, "id_accuracy": 0.9} | {s: entry for s in SCORES}
    old = {k: v for k, v in row.items() if k != "knn_exported"}
    assert "knn_exported" in markdown_table([row]) and "knn_exported" not in markdown_table([row, old])
    assert markdown_table([old]).count("0.700 (0.80)") == len(SCORES) - 1
