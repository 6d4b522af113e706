"""Export of a trained run to one ONNX graph following ``sasview_bnn_plugin.model_format``.

The graph holds S fixed posterior weight samples (VI draws or ensemble
members; :class:`~sasview_bnn_trainer.network.PackedCNN` in training) and
computes, with no random operator:

- ``probabilities`` (batch, S, 7): the softmax of every sample;
- ``anomaly_probabilities`` (batch, S, 6), for networks with presence outputs:
  the sigmoid of every sample's presence logits (taxonomy version 2);
- ``novelty_score`` (batch,): max(M / q_M, H / q_H), two views of "unlike the
  training data" on a common scale:

  * M, the squared Mahalanobis distance of each sample's penultimate
    activations h (hidden,) to the nearest training-class mean, with a
    covariance shared by the classes (fitted on training curves, a small ridge
    of 1e-3 of the mean variance added), averaged over the S samples:
    mean_s min_c (h_s - mu_sc)^T Sigma_s^-1 (h_s - mu_sc);
  * H, the predictive entropy (nats) of the posterior-mean probabilities.
    With outlier exposure in training (``fit --outlier-fraction``) the network
    answers inputs unlike any scattering curve with a flat distribution, which
    H sees and M (trained only on class structure) does not;

  q_M and q_H are their (1 - false-alarm rate) quantiles on validation curves.

  With ``novelty_score="knn_entropy"`` (``export --novelty-score``) M is
  replaced by K, the cosine distance of the posterior-mean penultimate
  features to the k-th nearest of a bank of training curves (stratified over
  the classes, chosen with the export seed; default k = 10, 4,000 curves,
  stored as float16), max(K / q_K, H / q_H); ``"knn"`` is K / q_K alone
  (:class:`~sasview_bnn_trainer.novelty.KnnNovelty`). The runtime sees the
  same ``novelty_score`` output and p-value reference either way; the
  ``novelty_settings`` metadata names the score and its settings. On the
  shipped 16-sample network the kNN head (bank 4,000) leaves the file 0.2 MB
  smaller (no whitening matrices) and the speed unchanged within the
  measurement's noise (``benchmarks/exported_model_throughput.py --knn-banks``).

The novelty model and the torch module of the whole computation live in
:mod:`sasview_bnn_trainer.novelty`; the ONNX graph is built from the weights by
:mod:`sasview_bnn_trainer.onnx_graph` (default layout "sample-major": one dense
first conv on the shared input, one product per sample over the whole batch
for the later layers, fused heads; 2-5x the old graph's curves/s at batch 32
to 1024 and 1.1-1.7x at batch 1, measured on 2 shared cores with
``benchmarks/exported_model_throughput.py``). The graph of earlier releases
(torch-exported, grouped Conv1d layers on the input tiled S times) is still
written with ``layout="grouped"``; :func:`rebuild_model_file` rewrites an
exported file in another layout from the weights it holds.

The run's validation curves (in-distribution by construction) are split in
two seeded halves: the first sets q_M, q_H and the legacy novelty threshold
(its (1 - false-alarm rate) quantile); the second, never seen by anything
else, calibrates what the runtime applies (:mod:`sasview_bnn_plugin.conformal`):
the split-conformal APS thresholds of the prediction sets at several coverage
levels, and the reference novelty scores of the novelty p-values.

``weights_sha256`` is the sha256 of the packed classifier parameters as
little-endian float32, concatenated in the order of
:data:`~sasview_bnn_trainer.network.PARAMETER_NAMES` (each packed tensor holds
the S samples in order).
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor

from sasview_bnn_plugin import __version__
from sasview_bnn_plugin.core.conformal import aps_scores, aps_sets, conformal_quantile
from sasview_bnn_plugin.core.model_format import (
    ANOMALIES_KEY,
    ANOMALY_OUTPUT,
    ANOMALY_THRESHOLD_KEY,
    CONFORMAL_KEY,
    DEFAULT_ANOMALY_THRESHOLD,
    FORMAT_VERSION,
    INPUT_NAME,
    NOVELTY_CALIBRATION_KEY,
    NOVELTY_OUTPUT,
    NOVELTY_SETTINGS_KEY,
    PROBABILITIES_OUTPUT,
    REQUIRED_METADATA,
    TRAINING_RUNS_KEY,
    check_metadata,
)
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES, CLEAN_INDEX, N_CLASSES
from sasview_bnn_plugin.model.catalog import read_metadata  # the one ONNX-metadata reader (the runtime's)

from .evaluation.metrics import classification_summary, presence_summary, roc_auc
from .features import FeatureFile, run_split
from .fit import load_run
from .network import PARAMETER_NAMES, NetworkConfig, PackedCNN, inference_members, pack_members
from .novelty import (
    DEFAULT_KNN_BANK,
    DEFAULT_KNN_FEATURES,
    DEFAULT_KNN_K,
    DEFAULT_NOVELTY_SCORE,
    NOVELTY_SCORES,
    ExportedModel,
    MahalanobisNovelty,
    fit_knn_bank,
    fit_mahalanobis,
    stratified_rows,
)
from .onnx_graph import DEFAULT_LAYOUT, LAYOUTS, EnsembleWeights, build_graph

__all__ = [  # the novelty model lives in .novelty, the graph in .onnx_graph; re-exported for callers of this module
    "EXPORT_LAYOUTS", "ExportResult", "ExportedModel", "MahalanobisNovelty", "export_run", "fit_mahalanobis",
    "metadata_summary", "onnx_session", "random_operators", "read_metadata", "rebuild_model_file", "run_onnx",
    "run_onnx_all", "weights_sha256", "write_graph",
]

#: Operators that draw random numbers (or may, like Dropout); none may appear in an exported graph.
RANDOM_OPERATORS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"}
)
OPSET = 17
#: The torch-exported graph of earlier releases (the input tiled S times, every layer a grouped Conv1d).
LEGACY_LAYOUT = "grouped"
#: Graph layouts :func:`write_graph` can write; the default is :data:`~sasview_bnn_trainer.onnx_graph.DEFAULT_LAYOUT`.
EXPORT_LAYOUTS: tuple[str, ...] = (*LAYOUTS, LEGACY_LAYOUT)
#: Coverage levels of the exported conformal prediction sets, those the calibration curves let the sets meet
#: (see :data:`LEVEL_TOLERANCE`); the default is 0.9 (when it is exported, else the lowest level exported).
CONFORMAL_LEVELS: tuple[float, ...] = (0.8, 0.9, 0.95, 0.99)
DEFAULT_CONFORMAL_LEVEL = 0.9
#: A level whose sets cover the calibration curves more than this above it is not exported: APS sets always hold
#: the most probable class, so at a level below the model's accuracy every set is that class alone and covers the
#: accuracy instead (e.g. 0.91 at 0.8): the level could not be kept, only over-kept (issue 12 asks for +-2 %).
LEVEL_TOLERANCE = 0.02
#: Default level of the novelty p-value: a curve is novel when p < this.
DEFAULT_NOVELTY_LEVEL = 0.01
#: Reference novelty scores stored for the p-values (a seeded subset when there are more).
MAX_NOVELTY_REFERENCE = 5000


def weights_sha256(network: PackedCNN) -> str:
    """sha256 of the packed parameters, float32 little-endian, in PARAMETER_NAMES order."""
    digest = hashlib.sha256()
    for name in PARAMETER_NAMES:
        digest.update(network.get_parameter(name).detach().cpu().numpy().astype("<f4").tobytes())
    return digest.hexdigest()


def random_operators(model: onnx.ModelProto) -> list[str]:
    """Random (or possibly random) operators found anywhere in the graph, including subgraphs."""
    found = []

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            if node.op_type in RANDOM_OPERATORS:
                found.append(node.op_type)
            for attr in node.attribute:
                if attr.g is not None and attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for g in attr.graphs:
                    visit(g)

    visit(model.graph)
    return found


def run_onnx(session: ort.InferenceSession, features: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (n, S, 7) and novelty scores (n,) of features (n, 4, bins) with onnxruntime."""
    probs, scores, _ = run_onnx_all(session, features, batch_size)
    return probs, scores


def run_onnx_all(session: ort.InferenceSession, features: np.ndarray,
                 batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(probabilities (n, S, 7), novelty scores (n,), anomaly probabilities (n, S, 6) or None for a model without them)."""
    names = [PROBABILITIES_OUTPUT, NOVELTY_OUTPUT]
    if ANOMALY_OUTPUT in {o.name for o in session.get_outputs()}:
        names.append(ANOMALY_OUTPUT)
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for s in range(0, features.shape[0], batch_size):
        for part, value in zip(parts, session.run(names, {INPUT_NAME: features[s : s + batch_size]})):
            part.append(value)
    out = [np.concatenate(p) if p else np.zeros((0,)) for p in parts]
    return out[0], out[1], (out[2] if len(out) > 2 else None)


def onnx_session(path: str | Path, threads: int = 2) -> ort.InferenceSession:
    """A CPU onnxruntime session with ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def write_graph(model: ExportedModel, path: str | Path, layout: str = DEFAULT_LAYOUT) -> onnx.ModelProto:
    """Write the ONNX graph of ``model`` (no metadata yet) to ``path`` and return it.

    ``layout`` "sample-major" (default) or "batch-major": the graph built from
    the weights by :func:`~sasview_bnn_trainer.onnx_graph.build_graph`;
    "grouped": the graph of earlier releases, ``model`` exported by torch (the
    input tiled S times, grouped Conv1d layers), kept as the reference the new
    layouts are tested against.
    """
    path = Path(path)
    if layout == LEGACY_LAYOUT:
        if model.score_kind != "mahalanobis_entropy":
            raise ValueError(f"the {LEGACY_LAYOUT!r} layout holds the Mahalanobis novelty score only; "
                             f"export {model.score_kind!r} in {' or '.join(LAYOUTS)}")
        example = torch.zeros((2, model.network.config.in_channels, model.network.config.n_bins))
        output_names = [PROBABILITIES_OUTPUT, NOVELTY_OUTPUT] + ([ANOMALY_OUTPUT] if model.has_presence else [])
        with warnings.catch_warnings():
            # the TorchScript exporter is used on purpose: the dynamo one needs onnxscript, not a dependency
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *output_names]},
                opset_version=OPSET,
                dynamo=False,
            )
        return onnx.load(str(path))
    proto = build_graph(EnsembleWeights.from_model(model), layout)
    onnx.save(proto, str(path))
    return proto


def float64_outputs(model: ExportedModel, features: np.ndarray, batch_size: int = 512,
                    with_scores: bool = False) -> tuple[np.ndarray, ...]:
    """(class probabilities (n, S, 7), anomaly probabilities (n, S, n_anomalies)[, novelty scores (n,)]) of ``model`` in float64."""
    exact = copy.deepcopy(model).double().eval()
    probs, presence, scores = [], [], []
    with torch.no_grad():
        for s in range(0, features.shape[0], batch_size):
            x = torch.from_numpy(np.asarray(features[s : s + batch_size], np.float64))
            p, _, _, a = exact.components(x)
            probs.append(p.numpy())
            presence.append(a.numpy())
            if with_scores:
                scores.append(exact(x)[1].numpy())
    out = (np.concatenate(probs), np.concatenate(presence)) if probs else (np.zeros((0,)), np.zeros((0,)))
    if with_scores:
        out += (np.concatenate(scores) if scores else np.zeros((0,)),)
    return out


def rebuild_model_file(source: str | Path, out_path: str | Path, layout: str = DEFAULT_LAYOUT) -> Path:
    """Write the model in ``source`` again in ``layout``, from the weights the file holds; metadata kept as they are.

    The weights are read back from the file's initializers
    (:meth:`~sasview_bnn_trainer.onnx_graph.EnsembleWeights.from_onnx`) and
    checked against its ``weights_sha256``; every metadata entry, the producer
    and the opset stay identical, so the runtime reads the new file exactly as
    the old one. ``source`` itself is never written.
    """
    source, out_path = Path(source), Path(out_path)
    if out_path.resolve() == source.resolve():
        raise ValueError("the rebuilt model must go to another file than its source")
    old = onnx.load(str(source))
    weights = EnsembleWeights.from_onnx(old)
    meta = {p.key: p.value for p in old.metadata_props}
    digest = hashlib.sha256(b"".join(weights.params[n].astype("<f4").tobytes() for n in PARAMETER_NAMES)).hexdigest()
    if "weights_sha256" in meta and digest != meta["weights_sha256"]:
        raise ValueError(f"the weights read back from {source} do not match its weights_sha256; not rebuilt")
    proto = build_graph(weights, layout)
    for entry in old.metadata_props:
        proto.metadata_props.add().CopyFrom(entry)
    proto.producer_name, proto.producer_version = old.producer_name, old.producer_version
    onnx.checker.check_model(proto)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out_path))
    return out_path


@dataclass
class ExportResult:
    """What :func:`export_run` wrote and the checks it made."""

    path: Path
    metadata: dict[str, str]
    parity_max_abs_diff: float
    model: ExportedModel
    #: max |onnxruntime - torch (float64)| / max(1, |score|) of the novelty score on the checked curves
    score_parity: float = 0.0


#: What runs exported into one graph must share: the curves the network saw and the split that kept the
#: validation curves out of every run's training (the calibration halves are validation curves).
SHARED_RUN_DATA = ("features_path", "preprocessing", "val_fraction", "split_seed", "excluded_classes",
                   "excluded_families", "max_train")


def _posterior_samples(run_dirs: Sequence[str | Path], n_samples: int, seed: int) -> tuple[Any, dict[str, Any], NetworkConfig, list[dict[str, Tensor]], list[dict[str, Any]]]:
    """The first run's posterior and record, the inference network and ``n_samples`` member weights drawn evenly
    from the runs (run 1's samples first), and per run its directory, samples and training settings."""
    if not run_dirs:
        raise ValueError("at least one run directory is needed")
    if n_samples < 1:
        raise ValueError("at least one posterior sample is needed")
    if n_samples % len(run_dirs):
        raise ValueError(f"--samples {n_samples} cannot be split evenly over {len(run_dirs)} runs; "
                         f"give a multiple of {len(run_dirs)}")
    per_run = n_samples // len(run_dirs)
    loaded = [load_run(run_dir) for run_dir in run_dirs]
    (posterior, record), configs, members, runs = loaded[0], [], [], []
    for run_dir, (other, other_record) in zip(run_dirs, loaded):
        if other.max_samples is not None and per_run > other.max_samples:
            raise ValueError(f"the run {run_dir} is an ensemble of {other.max_samples} members; "
                             f"{per_run} samples from it is more than it has")
        config, states = inference_members(other.config, other.sample_weights(per_run, seed))
        if configs and config.to_json() != configs[0].to_json():
            raise ValueError(f"the run {run_dir} has another network than {run_dirs[0]}; runs exported together "
                             "must share the architecture")
        if other.method != posterior.method:
            raise ValueError(f"the run {run_dir} is a {other.method} posterior and {run_dirs[0]} a "
                             f"{posterior.method} one; export runs of one method together")
        differ = [k for k in SHARED_RUN_DATA if other_record["data"].get(k) != record["data"].get(k)]
        if differ:
            raise ValueError(f"the run {run_dir} differs from {run_dirs[0]} in {', '.join(differ)}: runs exported "
                             "together must be trained on one features file with one training/validation split "
                             "(fit --split-seed), or the calibration curves of one would be training curves of another")
        configs.append(config)
        members.extend(states)
        runs.append({"run": Path(run_dir).name, "samples": per_run, "seed": other_record["fit_config"]["seed"],
                     "epochs_done": other_record["epoch"]})
    return posterior, record, configs[0], members, runs


def export_run(
    run_dir: str | Path | Sequence[str | Path],
    out_path: str | Path,
    n_samples: int,
    *,
    false_alarm_rate: float = 0.05,
    seed: int = 0,
    max_fit_curves: int = 20_000,
    max_val_curves: int = 20_000,
    parity_tolerance: float = 1e-5,
    layout: str = DEFAULT_LAYOUT,
    novelty_score: str = DEFAULT_NOVELTY_SCORE,
    knn_k: int = DEFAULT_KNN_K,
    knn_bank: int = DEFAULT_KNN_BANK,
    knn_features: str = DEFAULT_KNN_FEATURES,
) -> ExportResult:
    """Export ``n_samples`` posterior samples of a run to ``out_path`` (ONNX) with full metadata.

    VI draws use ``seed``; an ensemble exports its first ``n_samples`` members.
    Several run directories (independent trainings of one recipe, e.g. ``fit
    --seed 1 --split-seed 0``) give one graph of ``n_samples`` samples, an
    equal share from each run (in the order given), over which every output is
    averaged as over one run's samples: an ensemble of posteriors. The runs must
    share the architecture, the method, the features file and the
    training/validation split (:data:`SHARED_RUN_DATA`); the first run's
    training settings go into the ``training`` metadata and every run's seed,
    samples and epochs into ``training_runs``.
    The novelty statistics are fitted on at most ``max_fit_curves`` training
    curves; the threshold and the stored metrics come from at most
    ``max_val_curves`` validation curves (seeded random subsets). ``layout``
    is the graph layout (:data:`EXPORT_LAYOUTS`; see :func:`write_graph`). The
    written file is re-read with onnxruntime and must agree within
    ``parity_tolerance`` (max abs difference of the class and anomaly
    probabilities) with the same model evaluated by torch in float64 -- the
    exact answer, so the check measures the graph's own rounding, not the sum
    of two float32 computations' (both are about 1e-6 to 1e-5 from it); the
    novelty score must agree with the float64 one within ``parity_tolerance``
    x max(1, |value|) for the kNN scores, compared before the scaling by the
    validation quantiles (in the units of the cosine distance and the entropy,
    whose float32 rounding it is). The default Mahalanobis score is
    measured too (``ExportResult.score_parity``) but, as before this check
    existed, not refused on it: its squared distances of a few hundred are
    differences of large float32 terms, and the tests allow it 1e-4 (7.8e-7 on
    a tiny test run).

    ``novelty_score`` is a key of
    :data:`~sasview_bnn_trainer.novelty.NOVELTY_SCORES`: "mahalanobis_entropy"
    (default) fits the Mahalanobis head on the ``max_fit_curves`` curves;
    "knn_entropy" and "knn" store the penultimate features of ``knn_bank``
    training curves, stratified over the classes (seeded by ``seed``), and
    score the cosine distance to the ``knn_k``-th nearest of them
    (:class:`~sasview_bnn_trainer.novelty.KnnNovelty`). The score's name and
    settings go into the ``novelty_score`` and ``novelty_settings`` metadata.
    ``knn_features`` "mean" (default) compares the posterior-mean features
    (a bank of B x hidden), "samples" every sample's (S times the bank and
    the arithmetic; a 16-sample, 128-hidden model with 4,000 curves would add
    16 MB to the file).
    """
    if layout not in EXPORT_LAYOUTS:
        raise ValueError(f"unknown graph layout {layout!r}; choose from {', '.join(EXPORT_LAYOUTS)}")
    if novelty_score not in NOVELTY_SCORES:
        raise ValueError(f"unknown novelty score {novelty_score!r}; choose from {', '.join(NOVELTY_SCORES)}")
    knn = novelty_score != "mahalanobis_entropy"
    if knn and layout == LEGACY_LAYOUT:
        raise ValueError(f"the {LEGACY_LAYOUT!r} layout holds the Mahalanobis novelty score only; export {novelty_score!r} "
                         f"in {' or '.join(LAYOUTS)}")
    if knn and not 1 <= knn_k <= knn_bank:
        raise ValueError(f"the kNN score needs 1 <= k <= the bank size, got k = {knn_k}, bank {knn_bank}")
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"the false-alarm rate must lie between 0 and 1, got {false_alarm_rate}")
    run_dirs = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
    # The graph holds what the runtime reads: the auxiliary visibility outputs of a training run are left out.
    posterior, record, network_config, members, runs = _posterior_samples(run_dirs, n_samples, seed)
    data = record["data"]
    fit_config = record["fit_config"]
    network = pack_members(network_config, members).eval()

    with FeatureFile(data["features_path"]) as features:
        if features.summary.preprocessing != data["preprocessing"]:
            raise ValueError("the features file of the run was rebuilt with other preprocessing settings; re-run fit")
        train_rows, val_rows = run_split(data, features)
        rng = np.random.default_rng(seed)
        fit_rows = np.sort(rng.choice(train_rows, min(max_fit_curves, train_rows.size), replace=False))
        if knn:
            bank_rows = stratified_rows(train_rows, features.labels[train_rows], knn_bank, seed)
            novelty = fit_knn_bank(network, features, bank_rows, k=min(knn_k, bank_rows.size), knn_features=knn_features)
            settings = {"score": novelty_score, "k": novelty.k, "bank_size": novelty.bank_size, "features": knn_features,
                        "bank_dtype": "float16", "bank_seed": seed, "bank_from": "training curves, stratified over the classes",
                        "bank_classes": {CLASS_NAMES[c]: int(n) for c, n in zip(*np.unique(features.labels[bank_rows], return_counts=True))},
                        "distance": "1 - the k-th largest cosine similarity of the L2-normalised penultimate features"
                                    + (" (posterior mean)" if knn_features == "mean" else " (every sample's, averaged over the samples)")}
        else:
            novelty = fit_mahalanobis(network, features, fit_rows)
            settings = {"score": novelty_score, "fit_curves": int(fit_rows.size), "ridge": 1e-3}
        model = ExportedModel(network, novelty, with_entropy=novelty_score != "knn").eval()
        if val_rows.size > max_val_curves:
            val_rows = np.sort(rng.choice(val_rows, max_val_curves, replace=False))
        val_x = features.read_rows(val_rows)
        val_y = features.labels[val_rows]
        val_present = features.anomalies[val_rows]

    with torch.no_grad():
        parts = [model.components(torch.from_numpy(val_x[s : s + 1024])) for s in range(0, val_x.shape[0], 1024)]
        torch_probs_all = np.concatenate([p.numpy() for p, _, _, _ in parts])
        feature = np.concatenate([m.numpy() for _, m, _, _ in parts])
        entropy = np.concatenate([h.numpy() for _, _, h, _ in parts])
        presence_all = np.concatenate([a.numpy() for _, _, _, a in parts])
        # Two disjoint halves of the validation curves: scales and legacy threshold / conformal calibration.
        calibration = np.random.default_rng([seed, 0xCA1]).random(val_y.size) < 0.5
        fitting = ~calibration
        scales = [max(float(np.quantile(v[fitting], 1.0 - false_alarm_rate)), 1e-12) for v in (feature, entropy)]
        model.set_novelty_scales(*scales)
    scores = feature / np.float32(scales[0])  # the graph's combination
    if model.with_entropy:
        scores = np.maximum(scores, entropy / np.float32(scales[1]))
    threshold = float(np.quantile(scores[fitting], 1.0 - false_alarm_rate))
    achieved_far = float(np.mean(scores[calibration] > threshold))
    mean_probs = torch_probs_all.mean(axis=1)
    conformal, novelty_reference = _calibrate(mean_probs[calibration], val_y[calibration], scores[calibration], seed)
    metrics = classification_summary(val_y, mean_probs, N_CLASSES)
    metrics["anomaly_auroc"] = roc_auc(val_y != CLEAN_INDEX, 1.0 - mean_probs[:, CLEAN_INDEX])
    if model.has_presence:
        metrics.update({k: v for k, v in presence_summary(val_present, presence_all.mean(axis=1)).items() if np.isfinite(v)})
    metrics = {"validation": {k: round(float(v), 6) for k, v in metrics.items()}, "n_validation": int(val_y.size),
               "n_calibration": int(calibration.sum())}

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    proto = write_graph(model, out_path, layout)
    metadata = {
        "sasview_bnn.format_version": FORMAT_VERSION,
        "classes": json.dumps(list(CLASS_NAMES)),
        "preprocessing": data["preprocessing"],
        "n_samples": str(n_samples),
        "inference_method": posterior.method,
        "prior_sigma": repr(posterior.prior_sigma),
        "novelty_score": NOVELTY_SCORES[novelty_score],
        NOVELTY_SETTINGS_KEY: json.dumps(settings),
        "novelty_threshold": repr(threshold),
        "novelty_false_alarm_rate": repr(achieved_far),
        "training_data": json.dumps(
            {
                "seed": data["seed"],
                "n_curves": data["n_curves"],
                "n_refused": data["n_refused"],
                "n_train": data["n_train"],
                "n_validation": data["n_val"],
                "split_seed": data["split_seed"],
                "simulator_code_version": data["code_version"],
                "excluded_classes": data["excluded_classes"],
                "file": Path(data["path"]).name,
            }
        ),
        "metrics": json.dumps(metrics),
        "package_version": __version__,
        "weights_sha256": weights_sha256(network),
        "network": network_config.to_json(),
        "training": json.dumps({k: fit_config[k] for k in ("method", "epochs", "seed", "lr", "batch_size", "loss", "prior_sigma")}
                               | {k: fit_config.get(k, 0.0) for k in ("outlier_fraction", "outlier_weight")}
                               | {"kl_weight": fit_config.get("kl_weight", 1.0), "lr_schedule": fit_config.get("lr_schedule", "constant"),
                                  "epochs_done": record["epoch"]}
                               | ({"visibility_weight": fit_config["visibility_weight"]} if fit_config.get("visibility_weight") else {})),
        "novelty_target_false_alarm_rate": repr(false_alarm_rate),
        "novelty_scales": json.dumps({"knn" if knn else "mahalanobis": scales[0]} | ({"entropy": scales[1]} if model.with_entropy else {})),
        "posterior_sample_seed": str(seed),
        **({TRAINING_RUNS_KEY: json.dumps(runs)} if len(runs) > 1 else {}),
        CONFORMAL_KEY: json.dumps(conformal),
        NOVELTY_CALIBRATION_KEY: json.dumps({"scores": novelty_reference, "default_level": DEFAULT_NOVELTY_LEVEL}),
    }
    if model.has_presence:
        metadata[ANOMALIES_KEY] = json.dumps(list(CLASS_NAMES[1:]))
        metadata[ANOMALY_THRESHOLD_KEY] = repr(DEFAULT_ANOMALY_THRESHOLD)
    missing = set(REQUIRED_METADATA) - set(metadata)
    assert not missing, missing
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "sasview-bnn-train"
    proto.producer_version = __version__
    onnx.checker.check_model(proto)
    bad = random_operators(proto)
    if bad:
        raise RuntimeError(f"the exported graph contains random operators {sorted(set(bad))}; it would not be reproducible")
    onnx.save(proto, str(out_path))
    check_metadata(metadata)

    session = onnx_session(out_path)
    check_rows = min(val_x.shape[0], 2048)
    ort_probs, ort_scores, ort_presence = run_onnx_all(session, val_x[:check_rows])
    exact_probs, exact_presence, exact_scores = float64_outputs(model, val_x[:check_rows], with_scores=True)
    diff = float(np.max(np.abs(ort_probs - exact_probs))) if check_rows else 0.0
    if ort_presence is not None and check_rows:
        diff = max(diff, float(np.max(np.abs(ort_presence - exact_presence))))
    if diff > parity_tolerance:
        raise RuntimeError(f"onnxruntime and torch (float64) disagree by {diff:.3g} on the probabilities (tolerance {parity_tolerance:g})")
    score_diff = float(np.max(np.abs(ort_scores - exact_scores) / np.maximum(1.0, np.abs(exact_scores)))) if check_rows else 0.0
    if knn and check_rows:
        # The score is a raw distance (or entropy) divided by its validation quantile; float32 rounding is a property
        # of the raw quantity, so the check is made in its units: a small quantile (well-clustered features) must not
        # turn a 1e-6 rounding of the cosine similarity into a refused export.
        raw_scale = np.full(check_rows, scales[0], dtype=np.float64)
        if model.with_entropy:
            entropy_branch = entropy[:check_rows] / scales[1] > feature[:check_rows] / scales[0]
            raw_scale[entropy_branch] = scales[1]
        raw_exact = np.abs(exact_scores) * raw_scale
        raw_diff = float(np.max(np.abs(ort_scores - exact_scores) * raw_scale / np.maximum(1.0, raw_exact)))
        if raw_diff > parity_tolerance:
            raise RuntimeError(f"onnxruntime and torch (float64) disagree by {raw_diff:.3g} on the novelty score's distance "
                               f"or entropy before scaling (relative to max(1, |value|); tolerance {parity_tolerance:g}; "
                               f"{score_diff:.3g} after scaling by the validation quantiles {scales})")
    return ExportResult(out_path, metadata, diff, model, score_diff)


def _calibrate(probs: np.ndarray, labels: np.ndarray, novelty: np.ndarray, seed: int) -> tuple[dict[str, Any], list[float]]:
    """Conformal APS thresholds at :data:`CONFORMAL_LEVELS` and the novelty reference scores, from calibration curves.

    ``probs`` (n, 7) posterior-mean probabilities, ``labels`` (n,), ``novelty``
    (n,) scores of curves used for nothing else. Returns the ``conformal``
    metadata entry (with the achieved coverage and mean set size on these
    curves, for the card; levels the sets cannot meet, see :data:`LEVEL_TOLERANCE`,
    are listed under ``omitted_levels`` with their coverage, not exported) and the sorted
    reference scores (at most :data:`MAX_NOVELTY_REFERENCE`, a seeded subset).
    """
    scores = aps_scores(probs, labels)
    levels: dict[str, float] = {}
    achieved: dict[str, dict[str, float]] = {}
    omitted: dict[str, dict[str, float]] = {}
    for level in CONFORMAL_LEVELS:
        t = conformal_quantile(scores, level)
        sets = aps_sets(probs, t)
        on_calibration = {"coverage": float(np.mean(sets[np.arange(labels.size), labels])),
                          "mean_set_size": float(sets.sum(axis=1).mean())}
        if on_calibration["coverage"] > level + LEVEL_TOLERANCE:
            omitted[repr(level)] = on_calibration
            continue
        levels[repr(level)] = t
        achieved[repr(level)] = on_calibration
    default = repr(DEFAULT_CONFORMAL_LEVEL) if repr(DEFAULT_CONFORMAL_LEVEL) in levels else min(levels, key=float)
    reference = np.sort(novelty.astype(np.float64))
    if reference.size > MAX_NOVELTY_REFERENCE:
        pick = np.random.default_rng([seed, 0x9E7]).choice(reference.size, MAX_NOVELTY_REFERENCE, replace=False)
        reference = np.sort(reference[pick])
    conformal: dict[str, Any] = {"method": "aps", "levels": levels, "n_calibration": int(labels.size),
                                 "default_level": default, "calibration_set": achieved}
    if omitted:
        conformal["omitted_levels"] = omitted
    return conformal, [float(v) for v in reference]


def metadata_summary(metadata: dict[str, str]) -> dict[str, Any]:
    """Decoded JSON entries of a model's metadata, for reports."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            out[key] = value
    return out
