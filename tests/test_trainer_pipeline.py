"""End to end with the real simulator: simulate -> fit (VI and ensemble) -> export ONNX -> evaluate.

Simulation and training run once per module (module-scoped fixtures); the
models are tiny and trained for two epochs, so the assertions check the
plumbing, the ONNX contract and torch/onnxruntime parity, not final accuracy.
"""

import hashlib
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("sasmodels")

from sasview_bnn_plugin.model.card import verify_model_file
from sasview_bnn_plugin.core.model_format import REQUIRED_METADATA, check_metadata, read_optional_parts
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES, class_index
from sasview_bnn_trainer.cli import main
from sasview_bnn_trainer.export import (
    CONFORMAL_LEVELS,
    LEVEL_TOLERANCE,
    _calibrate,
    export_run,
    onnx_session,
    random_operators,
    read_metadata,
    run_onnx,
    run_onnx_all,
    weights_sha256,
)
from sasview_bnn_trainer.features import FeatureFile, build_features
from sasview_bnn_trainer.fit import FitConfig, fit, learning_rate, load_run
from sasview_bnn_trainer.network import NetworkConfig
from sasview_bnn_trainer.simulation.runner import simulate_to_file

pytestmark = pytest.mark.slow

N_TRAIN, N_TEST = 1400, 700


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    train = simulate_to_file(N_TRAIN, folder / "train.h5", seed=11, workers=1, progress=False)
    test = simulate_to_file(N_TEST, folder / "test.h5", seed=12, workers=1, progress=False)
    return folder, train, test


@pytest.fixture(scope="module")
def vi_model(data):
    folder, train, _ = data
    result = fit(train, folder / "vi", FitConfig(method="vi", epochs=2, samples=8, seed=0, lr=3e-3), progress=False)
    exported = export_run(folder / "vi", folder / "vi.onnx", 8)
    return result, exported


@pytest.fixture(scope="module")
def ensemble_model(data):
    folder, train, _ = data
    # A network without the anomalies-present outputs (version 1) keeps its two-output graph.
    config = FitConfig(method="ensemble", epochs=2, samples=4, seed=1, lr=3e-3, exclude_classes=("ordered",), outlier_fraction=0.1,
                       network=NetworkConfig(n_anomalies=0))
    result = fit(train, folder / "ens", config, progress=False)
    exported = export_run(folder / "ens", folder / "ens.onnx", 4)
    return result, exported


def test_features_are_cached_and_refusals_counted(data):
    _, train, _ = data
    path = build_features(train, progress=False)
    stamp = path.stat().st_mtime_ns
    assert build_features(train, progress=False) == path and path.stat().st_mtime_ns == stamp
    with FeatureFile(path) as ff:
        s = ff.summary
        assert s.n_curves == N_TRAIN and s.n_accepted + s.n_refused == N_TRAIN
        assert sum(s.refusals.values()) == s.n_refused
        assert ff.features.shape[1:] == (4, 256)
        seen = np.concatenate([y for _, y in ff.iter_batches(np.arange(len(ff)), 64, shuffle_seed=3, block_rows=300)])
        np.testing.assert_array_equal(np.sort(seen), np.sort(ff.labels))


@pytest.mark.parametrize("which", ["vi_model", "ensemble_model"])
def test_training_writes_a_run_and_learns(which, request):
    result, _ = request.getfixturevalue(which)
    run = result.run_dir
    for name in ("checkpoint.pt", "history.json", "training_curves.png", "run.json"):
        assert (run / name).stat().st_size > 0
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    # learns: above chance (1/7; 1/6 with a class left out) by more than three standard errors of the
    # validation accuracy (about 140 curves; two epochs of a tiny model, so not much more is asked)
    n_val = json.loads((run / "run.json").read_text())["data"]["n_val"]
    chance = 1 / 7 if which == "vi_model" else 1 / 6
    assert history[-1]["val_accuracy"] > chance + 3 * np.sqrt(chance * (1 - chance) / n_val)


@pytest.mark.parametrize("which", ["vi_model", "ensemble_model"])
def test_exported_graph_follows_the_contract_and_matches_torch(which, request, data):
    _, exported = request.getfixturevalue(which)
    proto = onnx.load(str(exported.path))
    assert random_operators(proto) == []
    meta = read_metadata(exported.path)
    assert set(REQUIRED_METADATA) <= set(meta) and all(meta[k] for k in REQUIRED_METADATA)
    check_metadata(meta)
    n_samples = int(meta["n_samples"])
    assert weights_sha256(exported.model.network) == meta["weights_sha256"]
    # the rate at the 5 % threshold measured on the calibration half of the validation curves (about 130 here):
    # within four standard errors of 5 %
    n_calibration = json.loads(meta["metrics"])["n_calibration"]
    assert 0.0 < float(meta["novelty_false_alarm_rate"]) <= 0.05 + 4 * np.sqrt(0.05 * 0.95 / n_calibration)
    training = json.loads(meta["training_data"])
    assert training["seed"] == 11 and training["n_curves"] == N_TRAIN

    session = onnx_session(exported.path)
    (inp,) = session.get_inputs()
    assert inp.name == "features" and inp.shape[1:] == [4, 256] and isinstance(inp.shape[0], str)
    presence = which == "vi_model"
    assert [o.name for o in session.get_outputs()] == ["probabilities", "novelty_score"] + (["anomaly_probabilities"] if presence else [])
    parts = read_optional_parts(meta, [o.name for o in session.get_outputs()])
    assert (parts.anomalies is not None) == presence and parts.conformal is not None and parts.novelty_calibration is not None
    # every level is exported or, when the sets would over-cover it, listed as omitted with that coverage
    conformal = json.loads(meta["conformal"])
    omitted = conformal.get("omitted_levels", {})
    assert sorted(float(k) for k in [*parts.conformal.levels, *omitted]) == list(CONFORMAL_LEVELS) and parts.conformal.levels
    assert all(b["coverage"] > float(level) + LEVEL_TOLERANCE for level, b in omitted.items())
    assert np.all(np.diff(parts.novelty_calibration.scores) >= 0)

    _, _, test = data
    with FeatureFile(build_features(test, progress=False)) as ff:
        x = ff.read_rows(np.arange(min(len(ff), 300)))
    probs, scores, anomaly_probs = run_onnx_all(session, x, batch_size=97)  # uneven batches exercise the dynamic axis
    with torch.no_grad():
        t_out = exported.model(torch.from_numpy(x))
    t_probs, t_scores = t_out[:2]
    if presence:
        assert anomaly_probs.shape == (x.shape[0], n_samples, 6)
        assert np.max(np.abs(anomaly_probs - t_out[2].numpy())) <= 1e-5
        assert np.all((anomaly_probs >= 0) & (anomaly_probs <= 1))
    else:
        assert anomaly_probs is None
    assert probs.shape == (x.shape[0], n_samples, 7) and scores.shape == (x.shape[0],)
    assert np.max(np.abs(probs - t_probs.numpy())) <= 1e-5
    np.testing.assert_allclose(scores, t_scores.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(probs.sum(axis=2), 1.0, atol=1e-5)
    # The novelty score is max(Mahalanobis / q_M, entropy of the mean probabilities / q_H).
    scales = json.loads(meta["novelty_scales"])
    with torch.no_grad():
        _, mahalanobis, _, _ = exported.model.components(torch.from_numpy(x))
    mean = probs.mean(axis=1)
    entropy = -(mean * np.log(np.clip(mean, 1e-12, None))).sum(axis=1)
    expected = np.maximum(mahalanobis.numpy() / scales["mahalanobis"], entropy / scales["entropy"])
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
    one, _ = run_onnx(session, x[:1])
    np.testing.assert_allclose(one[0], probs[0], atol=1e-6)


def test_random_operator_check_can_fail():
    from onnx import TensorProto, helper

    node = helper.make_node("RandomNormal", [], ["r"], shape=[1])
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1])])
    assert random_operators(helper.make_model(graph)) == ["RandomNormal"]


def test_vi_export_is_reproducible_for_a_seed(vi_model, data):
    folder = data[0]
    _, first = vi_model
    again = export_run(folder / "vi", folder / "vi_again.onnx", 8, seed=0)
    other = export_run(folder / "vi", folder / "vi_other.onnx", 8, seed=1)
    assert again.metadata["weights_sha256"] == first.metadata["weights_sha256"]
    assert other.metadata["weights_sha256"] != first.metadata["weights_sha256"]


def test_runs_of_several_seeds_export_as_one_ensemble_of_their_samples(vi_model, ensemble_model, data):
    folder, train, test = data
    first, _ = vi_model
    second = fit(train, folder / "vi_seed1", FitConfig(method="vi", epochs=1, samples=4, seed=1, split_seed=0, lr=3e-3),
                 progress=False)
    # One split, other weights: the validation (and so calibration) curves of one run are never training curves of the other.
    assert np.array_equal(second.val_rows, first.val_rows) and np.array_equal(second.train_rows, first.train_rows)
    both = export_run([folder / "vi", folder / "vi_seed1"], folder / "both.onnx", 8)
    alone = [export_run(folder / run, folder / f"{run}_4.onnx", 4) for run in ("vi", "vi_seed1")]
    runs = json.loads(both.metadata["training_runs"])
    assert [(r["run"], r["samples"], r["seed"]) for r in runs] == [("vi", 4, 0), ("vi_seed1", 4, 1)]
    assert "training_runs" not in alone[0].metadata
    with FeatureFile(build_features(test)) as features:
        x = features.read_rows(np.arange(64))
    probs, _ = run_onnx(onnx_session(both.path), x)
    parts = [run_onnx(onnx_session(a.path), x)[0] for a in alone]
    # The graph's samples are run 1's draws, then run 2's: each run's share gives that run's own probabilities.
    np.testing.assert_allclose(probs[:, :4], parts[0], atol=1e-5)
    np.testing.assert_allclose(probs[:, 4:], parts[1], atol=1e-5)
    assert main(["export", str(folder / "vi"), str(folder / "vi_seed1"), "--samples", "4", "--out", str(folder / "cli.onnx")]) == 0
    assert json.loads(read_metadata(folder / "cli.onnx")["training_runs"])[1]["samples"] == 2

    with pytest.raises(ValueError, match="evenly over 2 runs"):
        export_run([folder / "vi", folder / "vi_seed1"], folder / "odd.onnx", 7)
    fit(train, folder / "vi_seed2", FitConfig(method="vi", epochs=1, samples=2, seed=2, lr=3e-3), progress=False)
    with pytest.raises(ValueError, match="split_seed"):
        export_run([folder / "vi", folder / "vi_seed2"], folder / "other_split.onnx", 4)
    with pytest.raises(ValueError, match="another network"):
        export_run([folder / "vi", folder / "ens"], folder / "mixed.onnx", 4)


def test_ensemble_export_refuses_more_samples_than_members(ensemble_model, data):
    with pytest.raises(ValueError, match="ensemble of 4 members"):
        export_run(data[0] / "ens", data[0] / "too_many.onnx", 5)


@pytest.mark.parametrize("which", ["vi_model", "ensemble_model"])
def test_evaluate_writes_metrics_and_report(which, request, data, capsys):
    _, exported = request.getfixturevalue(which)
    folder, _, test = data
    report = folder / f"report_{which}"
    assert main(["evaluate", str(exported.path), str(test), "--report", str(report), "--synthetic", "100", "--quiet"]) == 0
    m = json.loads((report / "metrics.json").read_text())
    assert m["classes"] == list(CLASS_NAMES)
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == m["test_data"]["n_in_distribution"]
    assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    for key in ("macro_f1", "anomaly_auroc", "ece_15", "brier"):
        assert 0.0 <= m[key] <= 1.0
    assert m["nll"] > 0
    for kind in ("synthetic:pure_noise", "synthetic:non_scattering"):
        for score in ("mutual_information", "predictive_entropy", "feature_score"):
            assert 0.0 <= m["novelty"][kind][score]["auroc"] <= 1.0
    assert {r["n"] for r in m["robustness"]["noise_level"]} and sum(r["n"] for r in m["robustness"]["q_window_decades"]) == cm.sum()
    # Conformal sets: the coverage rises with the level, sets grow; p-values flag about their level.
    levels = m["conformal"]["levels"]
    assert [levels[k]["coverage"] for k in sorted(levels, key=float)] == sorted(levels[k]["coverage"] for k in levels)
    assert all(1.0 <= levels[k]["mean_set_size"] <= 7.0 for k in levels)
    assert 0.0 <= m["novelty_p_value"]["false_alarm_rate"]["0.05"] <= 0.2
    # The flatness test marks blanks novel and (almost) no simulated scattering curve.
    flat = m["flatness"]
    assert flat["featureless:synthetic:pure_noise"] >= 0.95 and flat["featureless_in_distribution"] <= 0.01
    assert flat["novel:synthetic:pure_noise"] >= flat["featureless:synthetic:pure_noise"]
    if which == "vi_model":
        assert set(m["presence"]["auroc"]) == set(CLASS_NAMES[1:]) and 0.0 <= m["presence"]["subset_accuracy"] <= 1.0
    else:
        assert "presence" not in m
    page = (report / "index.html").read_text()
    for png in ("confusion_matrix.png", "roc.png", "reliability.png", "uncertainty.png", "novelty.png", "robustness.png"):
        assert (report / png).stat().st_size > 0 and png in page
    if which == "ensemble_model":
        assert json.loads(exported.metadata["training"])["outlier_fraction"] == 0.1
        unseen = m["novelty"]["class:ordered"]
        with FeatureFile(test.with_name("test.eval-features.h5")) as ff:
            # Unseen: every curve showing the left-out class, as its primary class or as a secondary anomaly.
            shows = (ff.labels == class_index("ordered")) | (ff.anomalies[:, class_index("ordered") - 1] > 0)
            assert unseen["n"] == int(np.sum(shows)) > 0
        assert m["test_data"]["unseen_classes"] == ["ordered"] and cm[class_index("ordered")].sum() == 0
        assert 0.0 <= unseen["feature_score"]["auroc"] <= 1.0
        assert "mean_unseen_class_auroc" in m["novelty"]
    assert "accuracy" in capsys.readouterr().out
    # The model card gathers the report and records the file's sha256, which the runtime checks.
    model = folder / f"carded_{which}.onnx"
    shutil.copyfile(exported.path, model)
    assert main(["card", str(model), "--report", str(report), "--command", "sasview-bnn-train fit ..."]) == 0
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert card["test_metrics"]["accuracy"] == m["accuracy"] and card["n_samples"] == int(exported.metadata["n_samples"])
    assert card["training_command"] == "sasview-bnn-train fit ..."
    md = model.with_suffix(".md").read_text()
    assert card["sha256"] in md and "Confusion matrix" in md
    if "presence" in m:  # the network with the anomalies-present outputs: curves with one anomaly, by its visibility
        by_strength = m["presence"]["single_primary_by_visibility"]
        assert sum(b["n"] for blocks in by_strength.values() for b in blocks) == m["presence"]["primary_by_anomaly_count"]["single"]["n"]
        assert "Curves with one anomaly by how visible it is" in md and "| 5–7 points |" in md
    assert verify_model_file(model) == card


def test_same_seed_same_weights_and_resume_continues_exactly(data):
    folder, train, _ = data
    config = FitConfig(method="vi", epochs=2, seed=5, samples=2)
    one = fit(train, folder / "det_a", config, progress=False).posterior.state_dict()
    two = fit(train, folder / "det_b", config, progress=False).posterior.state_dict()
    fit(train, folder / "det_c", FitConfig(method="vi", epochs=1, seed=5, samples=2), progress=False)
    resumed = fit(train, folder / "det_c", config, resume=True, progress=False).posterior.state_dict()
    for name in one:
        assert torch.equal(one[name], two[name]), name
        assert torch.equal(one[name], resumed[name]), name
    other = fit(train, folder / "det_d", FitConfig(method="vi", epochs=1, seed=6, samples=2), progress=False)
    assert not torch.equal(other.posterior.state_dict()["mu.conv1__weight"], one["mu.conv1__weight"])
    posterior, record = load_run(folder / "det_a")
    assert record["epoch"] == 2 and torch.equal(posterior.state_dict()["mu.fc__weight"], one["mu.fc__weight"])


def test_fit_cli_reports_problems_in_one_line(data, capsys):
    folder, train, _ = data
    assert main(["fit", str(train), "--method", "vi", "--out", str(folder / "bad"), "--epochs", "0", "--quiet"]) == 1
    assert "must be positive" in capsys.readouterr().err
    assert main(["fit", str(train), "--method", "vi", "--out", str(folder / "bad"), "--exclude-class", "dust"]) == 2
    assert main(["fit", str(folder / "missing.h5"), "--method", "vi", "--out", str(folder / "bad2"), "--quiet"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", str(folder / "nothing"), "--out", str(folder / "x.onnx")]) == 1
    assert "holds no training run" in capsys.readouterr().err


def test_cosine_schedule_falls_from_lr_to_zero_and_constant_stays():
    constant = FitConfig(method="ensemble", lr=2e-3)
    cosine = FitConfig(method="ensemble", lr=2e-3, lr_schedule="cosine")
    assert [learning_rate(constant, s, 100) for s in (0, 50, 100)] == [2e-3] * 3
    assert learning_rate(cosine, 0, 100) == pytest.approx(2e-3)
    assert learning_rate(cosine, 50, 100) == pytest.approx(1e-3)
    assert learning_rate(cosine, 100, 100) == pytest.approx(0.0, abs=1e-12)
    rates = [learning_rate(cosine, s, 100) for s in range(101)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    with pytest.raises(ValueError, match="schedule"):
        FitConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="vi only"):
        FitConfig(method="ensemble", kl_weight=0.5)


def test_leave_one_class_out_study_scores_the_left_out_class(ensemble_model, vi_model, data):
    from sasview_bnn_trainer.evaluation.novelty_study import SCORES, markdown_table, study_run

    folder, _, test = data
    row = study_run(folder / "ens", test, n_samples=2, n_fit=500)
    assert row["excluded"] == ["ordered"] and row["n_novel"] > 0 and row["n_in_distribution"] > 0
    for name in SCORES:
        assert 0.0 <= row[name]["auroc"] <= 1.0 and 0.0 <= row[name]["fpr_at_95_recall"] <= 1.0
    table = markdown_table([row])
    assert "| ordered |" in table and "mean AUROC" in table
    with pytest.raises(ValueError, match="exclude-class"):
        study_run(folder / "vi", test)


def test_leave_family_out_run_never_trains_on_the_family_and_the_study_splits_the_test_set(data, vi_model):
    from sasview_bnn_trainer.evaluation.family_study import markdown_table, study_run
    from sasview_bnn_trainer.features import family_membership, leave_out_membership
    from sasview_bnn_trainer.simulation.shapes import FAMILIES
    from sasview_bnn_trainer.simulation.store import CurveReader

    folder, train, test = data
    with pytest.raises(ValueError, match="unknown shape family"):
        FitConfig(exclude_families=("blob",))
    with pytest.raises(ValueError, match="unknown lattice 'diamond'; choose among lamellar, hexagonal"):
        FitConfig(exclude_families=("lattice:diamond",))
    with pytest.raises(ValueError, match="'colour' is not an axis"):
        FitConfig(exclude_families=("colour:red",))
    left_out = ("chain", "lattice:hexagonal", "artefact:edge_points")
    result = fit(train, folder / "no_chains", FitConfig(method="vi", epochs=1, samples=2, seed=0, lr=3e-3, exclude_families=left_out),
                 progress=False)
    with FeatureFile(result.features_path) as ff:
        source = ff.column("source_index")
    families, member = family_membership(train, source)
    assert families == FAMILIES
    shows = leave_out_membership(train, left_out, source)
    assert np.array_equal(shows[:, 0], member[:, families.index("chain")])
    with CurveReader(train) as reader:
        lattice, artefact = reader.column("params", "lattice")[source], reader.column("params", "artefact")[source]
        anomalies = reader.column("params", "anomalies")[source]
    assert np.array_equal(shows[:, 1], lattice == "hexagonal") and np.array_equal(shows[:, 2], artefact == "edge_points")
    # Edge points laid as a secondary artefact on another class count as shown too.
    assert all("artefact" in a.split(";") for a in anomalies[shows[:, 2]])
    # The simulator draws chains, hexagonal lattices and edge points for a fair share of curves; none reaches training.
    assert shows[:, 0].sum() > 50 and shows[:, 1].sum() > 3 and shows[:, 2].sum() > 3
    assert not shows[result.train_rows].any()
    # Every reader of the run (export's novelty bank and calibration curves, the studies) takes fit's own rows.
    from sasview_bnn_trainer.features import run_split

    with FeatureFile(result.features_path) as ff:
        train_rows, val_rows = run_split(load_run(folder / "no_chains")[1]["data"], ff)
    assert np.array_equal(train_rows, result.train_rows) and np.array_equal(val_rows, result.val_rows)
    assert not shows[val_rows].any()
    rows = study_run(folder / "no_chains", test, n_samples=2)
    assert [r["left_out"] for r in rows] == [[name] for name in left_out]
    for row in rows:
        assert row["trained_without"] == list(left_out) and row["left_out_family"]["n"] > 0 and row["in_family"]["n"] > 0
        assert row["gap"] == pytest.approx(row["in_family"]["accuracy"] - row["left_out_family"]["accuracy"])
        assert row["gap_matched"] == pytest.approx(row["in_family_matched"] - row["left_out_family"]["accuracy"])
        confusion = np.array(row["left_out_family"]["confusion"])  # where the left-out curves went
        assert confusion.shape == (7, 7) and confusion.sum() == row["left_out_family"]["n"]
        assert np.trace(confusion) / confusion.sum() == pytest.approx(row["left_out_family"]["accuracy"])
        # The exported kNN score's flags: at most the level on the run's own validation curves (a conformal threshold),
        # one threshold per run, rates and AUROC in range.
        nov = row["novelty"]
        assert nov["score"] == "knn_exported" and nov["level"] == 0.01 and nov["threshold"] == rows[0]["novelty"]["threshold"]
        assert nov["flagged_validation"] <= nov["level"]
        assert 0.0 <= nov["flagged_in_family"] <= 1.0 and 0.0 <= nov["flagged_left_out"] <= 1.0
        assert 0.0 <= nov["auroc_left_out_vs_in_family"] <= 1.0
    # At the left-out curves' class mix: the in-family recall of each class weighted by the left-out curves' class shares
    # (edge-point curves all show an artefact, so the in-family artefact recall weighs most there).
    for row in rows:
        counts = np.array(row["left_out_family"]["confusion"]).sum(axis=1)
        recall = row["in_family"]["recall"]
        expected = sum(counts[k] / counts.sum() * recall[name] for k, name in enumerate(CLASS_NAMES) if counts[k])
        assert row["in_family_matched"] == pytest.approx(expected)
    assert "| chain (run also without lattice:hexagonal, artefact:edge_points) |" in markdown_table(rows)
    assert "flagged novel left-out" in markdown_table(rows) and f"| {rows[0]['novelty']['flagged_left_out']:.3f} |" in markdown_table(rows)
    from sasview_bnn_trainer.evaluation.family_study import main as family_main

    assert family_main([str(folder / "no_chains"), "--test", str(test), "--out", str(folder / "lfo_cli"), "--samples", "2"]) == 0
    assert json.loads((folder / "lfo_cli.json").read_text()) == rows and "| chain (" in (folder / "lfo_cli.md").read_text()
    with pytest.raises(ValueError, match="exclude-family"):
        study_run(folder / "vi", test)
    # The model card shows the study.
    row = rows[0]
    (folder / "lfo.json").write_text(json.dumps([row]))
    model = export_run(folder / "no_chains", folder / "no_chains.onnx", 2).path
    assert main(["evaluate", str(model), str(test), "--report", str(folder / "report_lfo"), "--synthetic", "20", "--quiet"]) == 0
    assert main(["card", str(model), "--report", str(folder / "report_lfo"), "--family-study", str(folder / "lfo.json")]) == 0
    assert json.loads(model.with_suffix(".json").read_text())["leave_family_out_study"] == [row]
    assert "## Leave-family-out" in model.with_suffix(".md").read_text() and "| chain (run also" in model.with_suffix(".md").read_text()


def test_extra_input_channels_go_from_training_to_the_runtime(data):
    """A network trained on the density and noise channels: its own features file, six input channels in the graph,
    and the runtime, reading the channels from the model's metadata, gives on raw curves what the graph gives on the
    training-side features of the same curves."""
    from sasview_bnn_plugin import BNNClassifier
    from sasview_bnn_plugin.core.preprocessing import CHANNELS, PreprocessingConfig
    from sasview_bnn_trainer.simulation.store import CurveReader

    folder, train, test = data
    config = FitConfig(method="vi", epochs=1, samples=2, seed=0, lr=3e-3, extra_channels=("density", "noise"))
    assert config.network.in_channels == 6 and FitConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="then any of density, noise"):
        FitConfig(extra_channels=("colour",))
    result = fit(train, folder / "dn", config, progress=False)
    assert result.features_path.name == "train.features+density+noise.h5"
    with FeatureFile(result.features_path) as extra, FeatureFile(build_features(train, progress=False)) as default:
        assert extra.features.shape[1:] == (6, 256) and default.features.shape[1:] == (4, 256)
        np.testing.assert_array_equal(extra.read_rows(np.arange(50))[:, :4], default.read_rows(np.arange(50)))
    exported = export_run(folder / "dn", folder / "dn.onnx", 2)
    cfg = check_metadata(read_metadata(exported.path))
    assert cfg.channels == CHANNELS + ("density", "noise")
    session = onnx_session(exported.path)
    assert session.get_inputs()[0].shape[1:] == [6, 256]

    with FeatureFile(build_features(test, config=PreprocessingConfig(channels=cfg.channels), progress=False)) as ff:
        assert ff.path.name == "test.features+density+noise.h5"
        rows = np.arange(40)
        x, source = ff.read_rows(rows), ff.column("source_index")[rows]
    probs, _, _ = run_onnx_all(session, x, batch_size=16)
    with CurveReader(test) as reader:
        curves = [reader.read(int(k), int(k) + 1)[0] for k in source]
    results = BNNClassifier(exported.path, provider="cpu").classify(
        [(c.q, c.intensity, c.d_intensity, None, c.q_unit) for c in curves])
    assert all(r.status == "ok" for r in results)
    np.testing.assert_allclose(np.array([r.probabilities for r in results]), probs.mean(axis=1), atol=1e-5)


def test_fit_cli_refuses_an_unknown_extra_channel_in_the_preprocessing_words(capsys):
    """``fit --extra-channels`` is judged by the preprocessing config itself: an unknown or repeated name is an
    argparse error (exit 2) naming the channels that exist, before any data is read."""
    from sasview_bnn_trainer.cli import main

    for bad in ("colour", "density,density"):
        assert main(["fit", "missing.h5", "--method", "vi", "--out", "run", "--extra-channels", bad]) == 2
        err = capsys.readouterr().err
        assert "--extra-channels" in err and "then any of density, noise" in err


def test_visibility_outputs_train_on_the_points_each_anomaly_moves_and_stay_out_of_the_graph(data):
    """``visibility_weight`` > 0: the features file holds each anomaly's visibility score from the simulator's
    criteria, the network gets six regression outputs trained on log1p(score), and export leaves them out (the
    graph equals the one of the same weights without them)."""
    from sasview_bnn_trainer.features import ANOMALY_NAMES
    from sasview_bnn_trainer.network import VISIBILITY_SCALE, inference_members, pack_members
    from sasview_bnn_trainer.posterior.base import objective
    from sasview_bnn_trainer.simulation.criteria import visibility_key
    from sasview_bnn_trainer.simulation.store import CurveReader

    folder, train, _ = data
    with FeatureFile(build_features(train, progress=False)) as ff, CurveReader(train) as reader:
        rows = np.arange(len(ff))
        expected = np.stack([np.nan_to_num(reader.column("criteria", visibility_key(n))[ff.source_index], nan=0.0)
                             for n in ANOMALY_NAMES], axis=1)
        np.testing.assert_array_equal(ff.visibility, np.round(expected))
        assert np.array_equal(ff.visibility > 0, ff.anomalies > 0)  # a score exactly where an anomaly is present
        assert ff.visibility.max() >= 5  # the rule asks for 5 moved points (1 at the beamstop edge, 3 for spikes)
        _, y = next(ff.iter_batches(rows, 64, with_anomalies=True, with_visibility=True))
        assert y.shape == (64, 13)

    # The term is zero where the outputs hit log1p(score) / scale and grows with the error.
    labels = torch.tensor([[1, 1, 0, 0, 0, 0, 1, 40, 0, 0, 0, 0, 7]])
    logits, presence = torch.zeros(1, 2, 7), torch.zeros(1, 2, 6)
    goal = torch.log1p(labels[:, 7:].double()).float()[:, None, :].expand(-1, 2, -1) / VISIBILITY_SCALE
    base = objective((logits, presence), labels[:, :7], "nll")
    torch.testing.assert_close(objective((logits, presence, goal), labels, "nll", visibility_weight=2.0), base)
    assert torch.all(objective((logits, presence, goal + 0.1), labels, "nll", visibility_weight=2.0) > base)

    config = FitConfig(method="vi", epochs=2, samples=2, seed=0, lr=3e-3, visibility_weight=1.0)
    assert config.network.n_visibility == 6 and FitConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="anomalies-present"):
        FitConfig(visibility_weight=1.0, network=NetworkConfig(n_anomalies=0))
    result = fit(train, folder / "visibility", config, progress=False)
    assert result.history[-1]["val_accuracy"] > 0.2
    states = result.posterior.sample_weights(2, 0)
    assert states[0]["out.weight"].shape[0] == 7 + 6 + 6
    exported = export_run(folder / "visibility", folder / "visibility.onnx", 2)
    meta = read_metadata(exported.path)
    assert NetworkConfig.from_json(meta["network"]).n_visibility == 0
    assert json.loads(meta["training"])["visibility_weight"] == 1.0
    inference_config, members = inference_members(result.posterior.config, states)
    assert members[0]["out.weight"].shape[0] == 13
    with FeatureFile(result.features_path) as ff:
        x = ff.read_rows(np.arange(32))
    probs, _ = run_onnx(onnx_session(exported.path), x, 32)
    with torch.no_grad():
        logits = pack_members(inference_config, members)(torch.from_numpy(x))
    np.testing.assert_allclose(probs, torch.softmax(logits, -1).numpy(), atol=1e-5)


def test_a_finer_q_grid_goes_from_training_to_the_runtime(data):
    """``fit --bins 128``: the preprocessing of the run bins onto 128 q bins (its own features file, never the
    256-bin one), the graph takes (batch, 4, 128), and the runtime, reading the grid from the metadata, gives on raw
    curves what the graph gives on the training-side features."""
    from sasview_bnn_plugin import BNNClassifier, Curve
    from sasview_bnn_trainer.simulation.store import CurveReader

    folder, train, test = data
    assert main(["fit", str(train), "--method", "vi", "--out", str(folder / "bins128"), "--epochs", "1", "--samples", "2",
                 "--bins", "128", "--quiet"]) == 0
    run = json.loads((folder / "bins128" / "run.json").read_text())
    assert run["fit_config"]["network"]["n_bins"] == 128
    features_path = folder / "train.features+bins128.h5"
    assert run["data"]["features_path"] == str(features_path.resolve())
    with FeatureFile(features_path) as ff, FeatureFile(build_features(train, progress=False)) as default:
        assert ff.features.shape[1:] == (4, 128) and default.features.shape[1:] == (4, 256)
    exported = export_run(folder / "bins128", folder / "bins128.onnx", 2)
    cfg = check_metadata(read_metadata(exported.path))
    assert cfg.n_bins == 128
    session = onnx_session(exported.path)
    assert session.get_inputs()[0].shape[1:] == [4, 128]
    with CurveReader(test) as reader:
        curves = list(reader.read(0, 40))
    with FeatureFile(build_features(test, folder / "test.bins128.h5", cfg, progress=False)) as ff:
        rows = np.arange(min(len(ff), 40))
        probs, _ = run_onnx(session, ff.read_rows(rows), 64)
        picked = [curves[int(k)] for k in ff.source_index[rows]]
    results = BNNClassifier(exported.path, provider="cpu").classify(
        [Curve(q=c.q, intensity=c.intensity, d_intensity=c.d_intensity, q_unit=c.q_unit) for c in picked])
    np.testing.assert_allclose(np.stack([r.probabilities for r in results]), probs.mean(axis=1), atol=1e-5)


def test_levels_the_sets_can_only_over_keep_are_not_exported():
    """APS sets always hold the top class: with calibration curves whose top class is right 95 % of the time, the
    sets at 0.8 and 0.9 are the top class alone and cover 0.95, so those levels are omitted (with their coverage),
    0.95 and 0.99 are exported and 0.95 becomes the default; at 70 % accuracy every level is exported."""
    rng = np.random.default_rng(5)
    n = 4000
    labels = rng.integers(0, 7, n)
    for accuracy, exported, default in [(0.95, ["0.95", "0.99"], "0.95"), (0.70, ["0.8", "0.9", "0.95", "0.99"], "0.9")]:
        top = np.where(rng.random(n) < accuracy, labels, (labels + rng.integers(1, 7, n)) % 7)
        probs = rng.dirichlet(np.ones(7), n) * 0.4
        probs[np.arange(n), top] += 0.6
        conformal, _ = _calibrate(probs, labels, rng.random(n), seed=0)
        assert sorted(conformal["levels"], key=float) == exported and conformal["default_level"] == default
        omitted = conformal.get("omitted_levels", {})
        assert sorted(omitted, key=float) == [level for level in ("0.8", "0.9") if level not in exported]
        for b in omitted.values():
            assert b["mean_set_size"] == 1.0 and abs(b["coverage"] - accuracy) < 0.02
        for level, b in conformal["calibration_set"].items():
            assert float(level) - 0.01 <= b["coverage"] <= float(level) + LEVEL_TOLERANCE
