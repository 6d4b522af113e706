"""Evaluation of an exported ONNX model on a simulated test file, run with onnxruntime.

:func:`evaluate_model` computes every number of the report (a JSON-ready dict)
plus the arrays the figures need (:class:`Evaluation`):

- classification on in-distribution test curves: accuracy, per-class
  precision/recall/F1, macro-F1, confusion matrix, one-vs-rest ROC AUC,
  anomaly-vs-clean ROC AUC (score 1 - p(clean));
- calibration: ECE (15 bins), NLL, Brier, reliability table;
- uncertainty: predictive entropy and mutual information, correct vs wrong;
- novelty: test curves of classes the model never saw (``novel_classes`` plus
  the classes excluded from its training, read from its metadata) and
  synthetic pure-noise / non-scattering curves against the in-distribution
  test curves: AUROC and FPR at 95 % recall of MI, entropy and the graph's
  feature-space score, and the fraction above the shipped threshold;
- anomalies present (models with that output): per-anomaly AUROC, subset
  accuracy, per-anomaly accuracy, over the mixtures of the test set;
- conformal prediction sets (models with ``conformal`` metadata): empirical
  coverage overall and per class and the set-size distribution at every
  exported level; novelty p-values (``novelty_calibration``): false-alarm
  rate on in-distribution test curves at several levels, and the flagged
  fraction of every novel set at the model's default level;
- robustness: accuracy and macro-F1 in bins of the simulator's recorded noise
  level (``instrument/noise_level``, relative error at the strongest point) and
  of the width of the q-window (decades of q actually used).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sasview_bnn_plugin.core.conformal import aps_sets, novelty_p_values
from sasview_bnn_plugin.core.flatness import FLATNESS_LEVEL, flatness_p_values, is_featureless
from sasview_bnn_plugin.core.model_format import LOW_CONFIDENCE_THRESHOLD, check_metadata, read_optional_parts
from sasview_bnn_plugin.core.preprocessing import prepare_batch
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES, CLEAN_INDEX, N_CLASSES, class_index

from sasview_bnn_plugin.model.catalog import read_metadata

from ..export import onnx_session, run_onnx, run_onnx_all
from ..features import FeatureFile, build_features, default_features_path
from ..simulation.criteria import visibility_key
from ..simulation.store import CurveReader
from . import metrics as M
from .novel_inputs import KINDS, novel_curves

NOVELTY_SCORES: tuple[str, ...] = ("mutual_information", "predictive_entropy", "feature_score")


@dataclass
class Evaluation:
    """All numbers (``metrics``, JSON-ready) and the arrays behind the figures."""

    metrics: dict[str, Any]
    labels: np.ndarray                      # (n,) in-distribution test labels
    probs: np.ndarray                       # (n, 7) predictive mean
    entropy: np.ndarray                     # (n,)
    mutual_information: np.ndarray          # (n,)
    feature_score: np.ndarray               # (n,)
    novel_sets: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # name -> score name -> (m,)
    novelty_threshold: float = float("nan")
    present: np.ndarray | None = None       # (n, 6) anomalies present (truth), in-distribution curves
    presence_probs: np.ndarray | None = None  # (n, 6) posterior-mean presence probabilities
    set_sizes: dict[str, np.ndarray] = field(default_factory=dict)  # level -> (n,) prediction-set sizes
    novelty_p: np.ndarray | None = None     # (n,) novelty p-values of the in-distribution curves


def _uncertainty_scores(sample_probs: np.ndarray, feature_score: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "mutual_information": M.mutual_information(sample_probs),
        "predictive_entropy": M.predictive_entropy(sample_probs),
        "feature_score": feature_score,
        "confidence": sample_probs.mean(axis=1).max(axis=1),
    }


def _novelty_block(in_dist: dict[str, np.ndarray], novel: dict[str, np.ndarray], threshold: float) -> dict[str, Any]:
    out: dict[str, Any] = {"n": int(novel["feature_score"].size)}
    for name in NOVELTY_SCORES:
        y = np.r_[np.zeros(in_dist[name].size, bool), np.ones(novel[name].size, bool)]
        s = np.r_[in_dist[name], novel[name]]
        out[name] = {"auroc": M.roc_auc(y, s), "fpr_at_95_recall": M.fpr_at_recall(y, s, 0.95)}
    if novel["feature_score"].size:
        flagged = novel["feature_score"] > threshold
        low = novel["confidence"] < LOW_CONFIDENCE_THRESHOLD
        out["flagged_by_threshold"] = float(np.mean(flagged))
        out["low_confidence"] = float(np.mean(low))
        out["flagged_or_low_confidence"] = float(np.mean(flagged | low))
    else:
        out["flagged_by_threshold"] = out["low_confidence"] = out["flagged_or_low_confidence"] = float("nan")
    return out


def _featureless(curves: Sequence[Any]) -> list[bool]:
    """The runtime's flatness verdicts on raw simulated curves (q, I and dI as stored), all of them at once."""
    return [is_featureless(p) for p in flatness_p_values([(c.intensity, c.d_intensity, c.q) for c in curves])]


def _binned(values: np.ndarray, labels: np.ndarray, predicted: np.ndarray, edges: np.ndarray, unit: str) -> list[dict[str, Any]]:
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (values >= lo) & (values <= hi if hi == edges[-1] else values < hi)
        if sel.sum() == 0:
            continue
        cm = M.confusion_matrix(labels[sel], predicted[sel], N_CLASSES)
        rows.append({"low": float(lo), "high": float(hi), "unit": unit, "n": int(sel.sum()),
                     "accuracy": M.accuracy(labels[sel], predicted[sel]), "macro_f1": M.macro_f1(cm)})
    return rows


def _near_miss_block(near_miss: np.ndarray, labels: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Recall of ``clean`` on clean curves with and without a near miss (simulator 2.2), overall and per kind."""
    clean = labels == CLEAN_INDEX
    hit = predicted == CLEAN_INDEX

    def recall(sel: np.ndarray) -> dict[str, Any]:
        return {"n": int(sel.sum()), "clean_recall": float(hit[sel].mean()) if sel.any() else None}

    block = {"without": recall(clean & (near_miss == "")), "with": recall(clean & (near_miss != ""))}
    block["per_kind"] = {k: recall(clean & (near_miss == k)) for k in sorted(set(near_miss[clean]) - {""})}
    return block


def evaluate_model(
    model_path: str | Path,
    test_path: str | Path,
    *,
    novel_classes: Sequence[str] = (),
    n_synthetic: int = 500,
    synthetic_seed: int = 12345,
    batch_size: int = 1024,
    threads: int = 2,
    progress: bool = True,
) -> Evaluation:
    """Run ``model_path`` (ONNX) on ``test_path`` (curve file) and compute every metric."""
    model_path, test_path = Path(model_path), Path(test_path)
    if not model_path.exists():
        raise FileNotFoundError(f"the model {model_path} does not exist")
    meta = read_metadata(model_path)
    cfg = check_metadata(meta)
    training = json.loads(meta["training_data"])
    unseen = sorted({*novel_classes, *training.get("excluded_classes", [])}, key=class_index)
    unseen_idx = [class_index(n) for n in unseen]
    threshold = float(meta["novelty_threshold"])
    session = onnx_session(model_path, threads)
    optional = read_optional_parts(meta, [o.name for o in session.get_outputs()])

    features_path = build_features(test_path, default_features_path(test_path, cfg, "eval-features"), cfg, progress=progress)
    with FeatureFile(features_path) as ff:
        labels_all = ff.labels
        present_all = ff.anomalies
        q_window = ff.column("q_window")
        source_index = ff.source_index
        summary = ff.summary
        outputs = [run_onnx_all(session, x, batch_size) for x, _ in ff.iter_batches(np.arange(len(ff)), batch_size)]
    if not outputs:
        raise ValueError(f"the preprocessing refused every curve of {test_path}; nothing to evaluate")
    sample_probs = np.concatenate([o[0] for o in outputs])
    feature_score = np.concatenate([o[1] for o in outputs])
    presence_all = np.concatenate([o[2] for o in outputs]).mean(axis=1) if outputs[0][2] is not None else None
    with CurveReader(test_path) as reader:
        noise_level = reader.column("instrument", "noise_level")[source_index] if "noise_level" in reader.columns("instrument") else None
        test_seed = reader.seed
        near_miss = reader.column("params", "near_miss")[source_index] if "near_miss" in reader.columns("params") else None
        visibility_columns = [visibility_key(name) for name in CLASS_NAMES[1:]]
        visibility_all = (np.stack([reader.column("criteria", c)[source_index] for c in visibility_columns], axis=1)
                          if set(visibility_columns) <= set(reader.columns("criteria")) else None)
        # The runtime's flatness test (core.flatness): a curve flat within its error bars is novel whatever the network says.
        featureless_all = np.array([f for start in range(0, len(reader), 4096) for f in _featureless(reader.read(start, start + 4096))])
    scores_all = _uncertainty_scores(sample_probs, feature_score)

    # A curve showing an unseen class, as primary or as a secondary anomaly, is not in-distribution.
    unseen_present = np.any(present_all[:, [c - 1 for c in unseen_idx if c > 0]] > 0, axis=1) if unseen_idx else np.zeros(len(labels_all), bool)
    in_dist = ~np.isin(labels_all, unseen_idx) & ~unseen_present
    labels = labels_all[in_dist]
    sp = sample_probs[in_dist]
    probs = sp.mean(axis=1)
    predicted = probs.argmax(axis=1)
    cm = M.confusion_matrix(labels, predicted, N_CLASSES)
    prf = M.precision_recall_f1(cm)
    correct = predicted == labels
    mi, ent, fs = (scores_all[k][in_dist] for k in NOVELTY_SCORES)
    rel = M.reliability(labels, probs, 15)

    metrics: dict[str, Any] = {
        "model": {"path": str(model_path), "n_samples": int(meta["n_samples"]), "inference_method": meta["inference_method"],
                  "novelty_threshold": threshold, "training_data": training, "package_version": meta["package_version"]},
        "test_data": {"path": str(test_path), "seed": test_seed, "n_curves": summary.n_curves, "n_refused": summary.n_refused,
                      "refusals": summary.refusals, "n_in_distribution": int(in_dist.sum()), "unseen_classes": unseen},
        "classes": list(CLASS_NAMES),
        "accuracy": M.accuracy(labels, predicted),
        "macro_f1": M.macro_f1(cm),
        "per_class": {name: {"precision": float(prf["precision"][c]), "recall": float(prf["recall"][c]),
                             "f1": float(prf["f1"][c]), "support": int(prf["support"][c])}
                      for c, name in enumerate(CLASS_NAMES)},
        "confusion_matrix": cm.tolist(),
        "one_vs_rest_auroc": {name: float(v) for name, v in zip(CLASS_NAMES, M.one_vs_rest_auc(labels, probs))},
        "anomaly_auroc": M.roc_auc(labels != CLEAN_INDEX, 1.0 - probs[:, CLEAN_INDEX]),
        "ece_15": M.expected_calibration_error(labels, probs, 15),
        "nll": M.negative_log_likelihood(labels, probs),
        "brier": M.brier_score(labels, probs),
        "reliability": {k: [None if not np.isfinite(v) else float(v) for v in rel[k]] for k in ("confidence", "accuracy")}
        | {"count": rel["count"].tolist()},
        "uncertainty": {
            "entropy_mean_correct": float(ent[correct].mean()) if correct.any() else None,
            "entropy_mean_wrong": float(ent[~correct].mean()) if (~correct).any() else None,
            "mi_mean_correct": float(mi[correct].mean()) if correct.any() else None,
            "mi_mean_wrong": float(mi[~correct].mean()) if (~correct).any() else None,
            "wrong_vs_correct_auroc_entropy": M.roc_auc(~correct, ent),
            "wrong_vs_correct_auroc_mi": M.roc_auc(~correct, mi),
        },
        "novelty": {"in_distribution_false_alarm_rate": float(np.mean(fs > threshold))},
    }

    in_scores = {"mutual_information": mi, "predictive_entropy": ent, "feature_score": fs}
    novel_sets: dict[str, dict[str, np.ndarray]] = {}
    for name, c in zip(unseen, unseen_idx):
        sel = (labels_all == c) | (present_all[:, c - 1] > 0 if c > 0 else False)
        if sel.any():
            novel_sets[f"class:{name}"] = {k: v[sel] for k, v in scores_all.items()}
    flat_in = featureless_all[source_index][in_dist]
    synthetic_featureless: dict[str, np.ndarray] = {}
    for kind in KINDS:
        if n_synthetic <= 0:
            break
        curves = novel_curves(kind, n_synthetic, synthetic_seed)
        batch, outcomes = prepare_batch([(c.q, c.intensity, c.d_intensity, c.q_unit) for c in curves], cfg)
        if batch.shape[0]:
            p, s = run_onnx(session, batch, batch_size)
            novel_sets[f"synthetic:{kind}"] = _uncertainty_scores(p, s)
            accepted = [c for c, o in zip(curves, outcomes) if not isinstance(o, Exception)]  # the rows of ``batch``
            synthetic_featureless[f"synthetic:{kind}"] = np.array(_featureless(accepted), dtype=bool)
        metrics["novelty"].setdefault("synthetic_refused_by_preprocessing", {})[kind] = int(n_synthetic - batch.shape[0])
    metrics["flatness"] = {"level": FLATNESS_LEVEL, "featureless_in_distribution": float(np.mean(flat_in)),
                           **{f"featureless:{k}": float(np.mean(v)) for k, v in synthetic_featureless.items()}}
    for name, sets in novel_sets.items():
        metrics["novelty"][name] = _novelty_block(in_scores, sets, threshold)
    present = presence = None
    if presence_all is not None:
        present, presence = present_all[in_dist], presence_all[in_dist]
        block = M.presence_summary(present, presence, optional.anomalies.threshold if optional.anomalies else 0.5)
        names = list(CLASS_NAMES[1:])
        metrics["presence"] = {
            "auroc": {names[k]: block[f"presence_auroc_{k}"] for k in range(len(names))},
            "auroc_min": block["presence_auroc_min"], "auroc_mean": block["presence_auroc_mean"],
            "subset_accuracy": block["presence_subset_accuracy"], "accuracy": block["presence_accuracy"],
            "n_mixtures": int(np.sum(present.sum(axis=1) > 1)),
            "subset_accuracy_mixtures": float(np.mean(np.all((presence >= 0.5) == (present > 0), axis=1)[present.sum(axis=1) > 1]))
            if np.any(present.sum(axis=1) > 1) else float("nan"),
            "prevalence": {names[k]: float(present[:, k].mean()) for k in range(len(names))},
            "primary_by_anomaly_count": M.primary_by_anomaly_count(labels, predicted, present),
        }
        if visibility_all is not None:
            metrics["presence"]["mixture_primary_by_margin"] = M.mixture_primary_by_margin(labels, predicted, present, visibility_all[in_dist])
            metrics["presence"]["single_primary_by_visibility"] = M.single_primary_by_visibility(
                labels, predicted, present, visibility_all[in_dist])
    set_sizes: dict[str, np.ndarray] = {}
    if optional.conformal is not None:
        block = {}
        for key, t in sorted(optional.conformal.levels.items(), key=lambda kv: float(kv[0])):
            sets = aps_sets(probs, t)
            covered = sets[np.arange(labels.size), labels]
            sizes = sets.sum(axis=1)
            set_sizes[key] = sizes
            block[key] = {"coverage": float(covered.mean()), "mean_set_size": float(sizes.mean()),
                          "per_class_coverage": {n: float(covered[labels == c].mean()) if np.any(labels == c) else None
                                                 for c, n in enumerate(CLASS_NAMES)},
                          "set_size_counts": np.bincount(sizes, minlength=N_CLASSES + 1)[1:].tolist()}
        metrics["conformal"] = {"method": optional.conformal.method, "levels": block, "default_level": optional.conformal.default_level}
    novelty_p = None
    if optional.novelty_calibration is not None:
        ref = optional.novelty_calibration.scores
        novelty_p = novelty_p_values(fs, ref, assume_sorted=True)
        level = optional.novelty_calibration.default_level
        block = {"default_level": level, "n_reference": int(ref.size),
                 "false_alarm_rate": {repr(a): float(np.mean(novelty_p < a)) for a in (0.001, 0.01, 0.05, 0.1)}}
        for name, sets in novel_sets.items():
            flagged = novelty_p_values(sets["feature_score"], ref, assume_sorted=True) < level
            block[f"flagged:{name}"] = float(np.mean(flagged))
            if name in synthetic_featureless:
                # What the runtime marks novel (p-value or flatness), and novel or low confidence (no trusted label).
                novel = flagged | synthetic_featureless[name]
                metrics["flatness"][f"novel:{name}"] = float(np.mean(novel))
                metrics["flatness"][f"novel_or_low_confidence:{name}"] = float(np.mean(novel | (sets["confidence"] < LOW_CONFIDENCE_THRESHOLD)))
        block["false_alarm_rate_with_flatness"] = float(np.mean((novelty_p < level) | flat_in))
        metrics["novelty_p_value"] = block
    class_blocks = [v for k, v in metrics["novelty"].items() if k.startswith("class:")]
    if class_blocks:
        metrics["novelty"]["mean_unseen_class_auroc"] = {
            s: float(np.mean([b[s]["auroc"] for b in class_blocks])) for s in NOVELTY_SCORES
        }

    robustness: dict[str, Any] = {}
    if noise_level is not None:
        nl = noise_level[in_dist].astype(np.float64)
        ok = np.isfinite(nl)
        if ok.any():
            edges = np.quantile(nl[ok], np.linspace(0, 1, 6))
            robustness["noise_level"] = _binned(nl[ok], labels[ok], predicted[ok], edges, "relative error at the strongest point")
    else:
        robustness["noise_level"] = "the test file records no instrument/noise_level column"
    width = np.log10(q_window[in_dist, 1] / q_window[in_dist, 0])
    edges = np.unique(np.quantile(width, np.linspace(0, 1, 6)))
    robustness["q_window_decades"] = _binned(width, labels, predicted, edges, "decades of q")
    metrics["robustness"] = robustness
    if near_miss is not None:
        metrics["near_miss"] = _near_miss_block(near_miss[in_dist].astype(str), labels, predicted)

    return Evaluation(metrics, labels, probs, ent, mi, fs, novel_sets, threshold, present, presence, set_sizes, novelty_p)
