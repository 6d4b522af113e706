"""Writing a model card: ``NAME.json`` (for programs) and ``NAME.md`` (for people) beside ``NAME.onnx``.

The card gathers what a user needs to judge a model, from files the other
commands wrote: the ONNX metadata (data, method, S, novelty threshold), the
``evaluate`` report of an unseen-seed test set (``metrics.json``), optional
leave-one-class-out reports, an optional fit-and-select baseline summary, the
recorded training command and stage timings, and hand-written known weaknesses.
It records the sha256 and size of the ONNX file, which the runtime checks
(:func:`sasview_bnn_plugin.model.card.verify_model_file`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any, Sequence

from sasview_bnn_plugin.model.card import card_path, file_sha256, markdown_card_path
from sasview_bnn_plugin.core.model_format import CONFORMAL_KEY, LOW_CONFIDENCE_THRESHOLD, NOVELTY_SETTINGS_KEY, TRAINING_RUNS_KEY
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES

from sasview_bnn_plugin.model.catalog import read_metadata

#: Novelty scores the evaluation reports, in display order.
NOVELTY_SCORES: tuple[str, ...] = ("mutual_information", "predictive_entropy", "feature_score")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return text


def _loco_entry(metrics: dict[str, Any]) -> dict[str, Any]:
    """The unseen-class novelty block of one leave-one-class-out evaluation."""
    unseen = metrics.get("test_data", {}).get("unseen_classes", [])
    if len(unseen) != 1:
        raise ValueError(f"a leave-one-class-out report must have exactly one unseen class, this one has {unseen}")
    name = unseen[0]
    block = metrics["novelty"][f"class:{name}"]
    return {
        "left_out_class": name,
        "n_curves": block.get("n"),
        "flagged_by_threshold": block.get("flagged_by_threshold"),
        **{score: block[score] for score in NOVELTY_SCORES if score in block},
        "in_distribution_accuracy": metrics.get("accuracy"),
    }


def _study_entry(row: dict[str, Any]) -> dict[str, Any]:
    """A leave-one-class-out row of the novelty study in the card's per-class layout (exported score = feature score)."""
    return {
        "left_out_class": ", ".join(row["excluded"]),
        "n_curves": row["n_novel"],
        "flagged_by_threshold": None,
        "mutual_information": row["mutual_information"],
        "predictive_entropy": row["entropy"],
        "feature_score": row["exported"],
        "in_distribution_accuracy": row["id_accuracy"],
    }


def build_card(
    model_path: str | Path,
    test_metrics: dict[str, Any],
    *,
    loco_metrics: Sequence[dict[str, Any]] = (),
    baseline: dict[str, Any] | None = None,
    training_command: str = "",
    stage_seconds: dict[str, float] | None = None,
    weaknesses: Sequence[str] = (),
    description: str = "",
    loco_study: Sequence[dict[str, Any]] = (),
    real_data_markdown: str = "",
    family_study: Sequence[dict[str, Any]] = (),
    study_note: str = "",
) -> dict[str, Any]:
    """The JSON card of ``model_path`` (a dict; see the module docstring for the sources)."""
    model_path = Path(model_path)
    meta = read_metadata(model_path)
    training_data = _json(meta.get("training_data", "{}"))
    loco = [_loco_entry(m) for m in loco_metrics] or [_study_entry(r) for r in loco_study]
    loco_mean = {
        score: sum(e[score]["auroc"] for e in loco) / len(loco) for score in NOVELTY_SCORES if loco and all(score in e for e in loco)
    }
    headline = {
        "accuracy": test_metrics.get("accuracy"),
        "macro_f1": test_metrics.get("macro_f1"),
        "ece_15": test_metrics.get("ece_15"),
        "anomaly_auroc": test_metrics.get("anomaly_auroc"),
        "nll": test_metrics.get("nll"),
        "brier": test_metrics.get("brier"),
    }
    summary = {
        "description": description or f"{meta.get('inference_method', '?')} Bayesian CNN, {meta.get('n_samples', '?')} posterior samples",
        "test_accuracy": f"{headline['accuracy']:.4f}" if headline["accuracy"] is not None else "n/a",
        "test_macro_f1": f"{headline['macro_f1']:.4f}" if headline["macro_f1"] is not None else "n/a",
        "test_ece": f"{headline['ece_15']:.4f}" if headline["ece_15"] is not None else "n/a",
        "test_anomaly_auroc": f"{headline['anomaly_auroc']:.4f}" if headline["anomaly_auroc"] is not None else "n/a",
        "training_curves": str(training_data.get("n_curves", "?")) if isinstance(training_data, dict) else "?",
    }
    return {
        "name": model_path.stem,
        "file": model_path.name,
        "sha256": file_sha256(model_path),
        "size_bytes": model_path.stat().st_size,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "summary": summary,
        "classes": list(CLASS_NAMES),
        "package_version": meta.get("package_version"),
        "training_data": training_data,
        "inference_method": meta.get("inference_method"),
        "n_samples": int(meta.get("n_samples", 0)),
        "prior_sigma": _json(meta.get("prior_sigma", "null")),
        "network": _json(meta.get("network", "{}")),
        "training": _json(meta.get("training", "{}")),
        "training_runs": _json(meta.get(TRAINING_RUNS_KEY, "[]")),
        "training_command": training_command,
        "stage_seconds": dict(stage_seconds or {}),
        "weights_sha256": meta.get("weights_sha256"),
        "preprocessing": _json(meta.get("preprocessing", "{}")),
        "novelty": {
            "score": meta.get("novelty_score"),
            "settings": _json(meta.get(NOVELTY_SETTINGS_KEY, "null")),  # k, bank size ... (export --novelty-score)
            "scales": _json(meta.get("novelty_scales", "null")),
            "threshold": float(meta["novelty_threshold"]),
            "false_alarm_rate_on_validation": float(meta["novelty_false_alarm_rate"]),
            "false_alarm_rate_on_test": test_metrics.get("novelty", {}).get("in_distribution_false_alarm_rate"),
        },
        "validation_metrics": _json(meta.get("metrics", "{}")),
        "conformal_calibration": _json(meta.get(CONFORMAL_KEY, "null")),
        "test_set": test_metrics.get("test_data", {}),
        "test_metrics": headline,
        "test_evaluation": test_metrics,
        "leave_one_class_out": {"per_class": loco, "mean_auroc": loco_mean},
        "leave_one_class_out_study": list(loco_study),
        "leave_family_out_study": list(family_study),
        "real_data_markdown": real_data_markdown,
        "study_note": study_note,
        "baseline_comparison": baseline or {},
        "known_weaknesses": list(weaknesses),
    }


def _points_bin(lo: float, hi: float | None) -> str:
    """A visibility bin's heading: '5–7 points', '> 50 points' (``hi`` infinite, or None as strict JSON writes it)."""
    if hi is None or math.isinf(hi):
        return f"> {lo - 1:g} points"
    return f"{lo:g}–{hi - 1:g} points" if lo > 0 else f"< {hi:g} points"


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "n/a" if value is None else str(value)


def _settings_text(settings: Any) -> str:
    """" (k = 10, bank of 4000 training curves, mean features)" for a kNN score's settings; "" for the others."""
    if not isinstance(settings, dict) or "bank_size" not in settings:
        return ""
    return f" (k = {settings.get('k')}, bank of {settings['bank_size']} training curves, {settings.get('features')} features)"


def render_markdown(card: dict[str, Any]) -> str:
    """The Markdown model card for people, from the JSON card."""
    m = card["test_evaluation"]
    td = card["training_data"] if isinstance(card["training_data"], dict) else {}
    lines = [
        f"# Model card: {card['name']}",
        "",
        card["summary"]["description"],
        "",
        f"- File: `{card['file']}`, {card['size_bytes'] / 1e6:.1f} MB, sha256 `{card['sha256']}` "
        "(the runtime refuses the file if this does not match)",
        f"- Method: {card['inference_method']}, {card['n_samples']} posterior samples in one ONNX graph; "
        f"Gaussian prior sigma {card['prior_sigma']}; network {json.dumps(card['network'])}",
        f"- Training data: {td.get('n_curves', '?')} simulated curves (seed {td.get('seed', '?')}, "
        f"{td.get('n_train', '?')} training / {td.get('n_validation', '?')} validation), simulator "
        f"`{td.get('simulator_code_version', '?')}`",
        f"- Training settings: `{json.dumps(card['training'])}`",
        *([f"- Posterior samples from {len(card['training_runs'])} independent runs of these settings: "
           + "; ".join(f"{r['samples']} from `{r['run']}` (seed {r['seed']}, {r['epochs_done']} epochs)" for r in card["training_runs"])]
          if card.get("training_runs") else []),
        f"- Package version: {card['package_version']}; card written {card['created']}",
    ]
    if card["training_command"]:
        lines += ["", "Recorded training command:", "", "```", card["training_command"], "```"]
    if card["stage_seconds"]:
        lines += ["", "Stage wall times on the 2-core development machine: "
                  + ", ".join(f"{k} {v / 60:.1f} min" for k, v in card["stage_seconds"].items())]
    test = card["test_set"]
    lines += [
        "",
        f"## Test set ({test.get('n_curves', '?')} curves, unseen seed {test.get('seed', '?')})",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("ece_15", "ECE (15 bins)"), ("nll", "NLL"),
                       ("brier", "Brier"), ("anomaly_auroc", "anomaly-vs-clean AUROC")):
        lines.append(f"| {label} | {_fmt(m.get(key), 4)} |")
    lines += ["", "| class | precision | recall | F1 | one-vs-rest AUROC |", "|---|---|---|---|---|"]
    for name in CLASS_NAMES:
        pc = m.get("per_class", {}).get(name, {})
        lines.append(f"| {name} | {_fmt(pc.get('precision'))} | {_fmt(pc.get('recall'))} | {_fmt(pc.get('f1'))} | "
                     f"{_fmt(m.get('one_vs_rest_auroc', {}).get(name))} |")
    cm = m.get("confusion_matrix")
    if cm:
        lines += ["", "Confusion matrix (rows true, columns predicted):", "",
                  "| true \\ predicted | " + " | ".join(CLASS_NAMES) + " |", "|---" * (len(CLASS_NAMES) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(CLASS_NAMES, cm)]
    nov = card["novelty"]
    lines += [
        "",
        "## Novelty",
        "",
        f"Score `{nov['score']}`{_settings_text(nov.get('settings'))}, threshold {nov['threshold']:.4g}: false-alarm rate "
        f"{nov['false_alarm_rate_on_validation']:.3f} on validation curves, {_fmt(nov['false_alarm_rate_on_test'])} on the test set.",
        "",
        f"| novel input | n | flagged by threshold | flagged or low confidence (top p < {LOW_CONFIDENCE_THRESHOLD}) | "
        "AUROC MI | AUROC entropy | AUROC feature score | FPR@95 feature score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, block in m.get("novelty", {}).items():
        if isinstance(block, dict) and "n" in block and isinstance(block.get("feature_score"), dict):
            lines.append(f"| {key} | {block.get('n')} | {_fmt(block.get('flagged_by_threshold'))} | {_fmt(block.get('flagged_or_low_confidence'))} | "
                         f"{_fmt(block['mutual_information']['auroc'])} | {_fmt(block['predictive_entropy']['auroc'])} | "
                         f"{_fmt(block['feature_score']['auroc'])} | {_fmt(block['feature_score']['fpr_at_95_recall'])} |")
    loco = card["leave_one_class_out"]
    if loco["per_class"]:
        lines += ["", "## Leave-one-class-out novelty", "",
                  "One model per anomaly class, trained without it, scores that class against in-distribution test curves."]
        lines += _study_note(card) + ["",
                  "| left-out class | n | AUROC MI | AUROC entropy | AUROC feature score | FPR@95 (best score) | ID accuracy |",
                  "|---|---|---|---|---|---|---|"]
        for e in loco["per_class"]:
            best = min((e[s]["fpr_at_95_recall"] for s in NOVELTY_SCORES if s in e), default=None)
            lines.append(f"| {e['left_out_class']} | {e['n_curves']} | {_fmt(e['mutual_information']['auroc'])} | "
                         f"{_fmt(e['predictive_entropy']['auroc'])} | {_fmt(e['feature_score']['auroc'])} | {_fmt(best)} | "
                         f"{_fmt(e['in_distribution_accuracy'])} |")
        lines.append("| **mean** | | " + " | ".join(_fmt(loco["mean_auroc"].get(s)) for s in NOVELTY_SCORES) + " | | |")
    lines += _v2_sections(card)
    rob = m.get("robustness", {})
    for key, title in (("noise_level", "noise level (relative error at the strongest point)"), ("q_window_decades", "q-window width (decades)")):
        rows = rob.get(key)
        if isinstance(rows, list) and rows:
            lines += ["", f"## Robustness: {title}", "", "| from | to | n | accuracy | macro-F1 |", "|---|---|---|---|---|"]
            lines += [f"| {_fmt(r['low'], 4)} | {_fmt(r['high'], 4)} | {r['n']} | {_fmt(r['accuracy'])} | {_fmt(r.get('macro_f1'))} |" for r in rows]
    nm = m.get("near_miss")
    if nm and nm["with"]["n"]:
        lines += ["", "## Near misses: clean curves with an anomaly below the visibility line", "",
                  "Recall of `clean` on the test set's clean curves, with and without a near miss (simulator 2.2, "
                  "docs/taxonomy.md: an anomaly counts only if it is visible).", "",
                  "| clean curves | n | recall of clean |", "|---|---|---|",
                  f"| without a near miss | {nm['without']['n']} | {_fmt(nm['without']['clean_recall'])} |",
                  f"| with a near miss | {nm['with']['n']} | {_fmt(nm['with']['clean_recall'])} |"]
        lines += [f"| {kind} | {b['n']} | {_fmt(b['clean_recall'])} |" for kind, b in nm["per_kind"].items()]
    base = card["baseline_comparison"]
    if base:
        lines += ["", "## Against fit-and-select (traditional analysis)", "", base.get("table_markdown", "```\n" + json.dumps(base, indent=1) + "\n```")]
    if card["known_weaknesses"]:
        lines += ["", "## Known weaknesses", ""] + [f"- {w}" for w in card["known_weaknesses"]]
    return "\n".join(lines) + "\n"


def _study_note(card: dict[str, Any]) -> list[str]:
    """The provenance of the held-out studies' models, as a bold paragraph, when the card has one."""
    return ["", f"**{card['study_note']}**"] if card.get("study_note") else []


def _v2_sections(card: dict[str, Any]) -> list[str]:
    """Anomalies present, prediction sets, novelty p-values, the novelty-score study and the real-data table."""
    m = card["test_evaluation"]
    lines: list[str] = []
    pres = m.get("presence")
    if pres:
        lines += ["", "## Anomalies present (taxonomy version 2)", "",
                  f"Subset accuracy (every anomaly's yes/no right) {_fmt(pres['subset_accuracy'])}, on the "
                  f"{pres['n_mixtures']} test curves with two or more anomalies {_fmt(pres['subset_accuracy_mixtures'])}; "
                  f"per-anomaly accuracy {_fmt(pres['accuracy'])}.", "",
                  "| anomaly | prevalence in the test set | presence AUROC |", "|---|---|---|"]
        lines += [f"| {name} | {_fmt(pres['prevalence'][name])} | {_fmt(pres['auroc'][name], 4)} |" for name in pres["auroc"]]
        split = pres.get("primary_by_anomaly_count")
        if split:
            mix = split["mixture"]
            lines += ["", "Primary-class accuracy by how many anomalies a curve shows (the primary class of a mixture is "
                      "the anomaly that moves the most points):", "",
                      "| curves | n | primary-class accuracy |", "|---|---|---|",
                      f"| clean | {split['clean']['n']} | {_fmt(split['clean']['accuracy'])} |",
                      f"| one anomaly | {split['single']['n']} | {_fmt(split['single']['accuracy'])} |",
                      f"| two or more | {mix['n']} | {_fmt(mix['accuracy'])} (predicted class one of those present: "
                      f"{_fmt(mix.get('predicted_present'))}) |"]
        margin = pres.get("mixture_primary_by_margin")
        if margin:
            lines += ["", "Mixtures by how close their two most visible anomalies are (second-largest over largest "
                      "visibility score: near 1, which one is primary is nearly a tie):", "",
                      "| second / largest visibility | n | primary-class accuracy | predicted class one of those present |",
                      "|---|---|---|---|"]
            lines += [f"| {b['ratio_from']:g}–{b['ratio_to']:g} | {b['n']} | {_fmt(b['accuracy'])} | {_fmt(b['predicted_present'])} |"
                      for b in margin]
        strength = pres.get("single_primary_by_visibility")
        if strength:
            first = next(iter(strength.values()))
            heads = [_points_bin(b["points_from"], b["points_to"]) for b in first]
            lines += ["", "Curves with one anomaly by how visible it is (points it moves; most anomalies need 5, "
                      "spikes 3, edge points 1): primary-class accuracy (n):", "",
                      "| class | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
            lines += [f"| {name} | " + " | ".join(f"{_fmt(b['accuracy'])} ({b['n']})" if b["n"] else "–" for b in blocks) + " |"
                      for name, blocks in strength.items()]
    conf = m.get("conformal")
    if conf:
        lines += ["", "## Prediction sets (split-conformal APS)", "",
                  f"Calibrated on {card['validation_metrics'].get('n_calibration', '?')} held-out validation curves; "
                  f"the runtime's default level is {conf['default_level']}. On the test set:", "",
                  "| level | coverage | mean set size | lowest per-class coverage | sets of size 1 / 2 / 3+ |", "|---|---|---|---|---|"]
        for level, b in conf["levels"].items():
            per = [v for v in b["per_class_coverage"].values() if v is not None]
            counts = b["set_size_counts"]
            total = max(sum(counts), 1)
            lines.append(f"| {level} | {_fmt(b['coverage'])} | {_fmt(b['mean_set_size'], 2)} | {_fmt(min(per) if per else None)} | "
                         f"{counts[0] / total:.2f} / {counts[1] / total:.2f} / {sum(counts[2:]) / total:.2f} |")
        omitted = (card.get("conformal_calibration") or {}).get("omitted_levels") or {}
        if omitted:
            listed = ", ".join(f"{level} (sets of the top class alone would cover {_fmt(b['coverage'])} of the calibration curves)"
                               for level, b in sorted(omitted.items(), key=lambda item: float(item[0])))
            lines += ["", f"Levels not exported: {listed}. A set always holds the most probable class, so below the "
                      "model's accuracy a level can only be over-kept; asking for it is an error that lists the levels exported."]
    pv = m.get("novelty_p_value")
    if pv:
        far = pv["false_alarm_rate"]
        lines += ["", "## Novelty p-values", "",
                  f"Conformal p-value of the novelty score against {pv['n_reference']} held-out in-distribution curves; "
                  f"novel when p < {pv['default_level']} (the default). False-alarm rate on in-distribution test curves: "
                  + ", ".join(f"{_fmt(v)} at level {k}" for k, v in far.items()) + "."]
        flagged = {k.split(":", 1)[1]: v for k, v in pv.items() if k.startswith("flagged:")}
        flat = m.get("flatness", {})
        if flagged and flat:
            lines += ["", f"The runtime also marks a curve novel when it is flat within its error bars (flatness test, "
                          f"p >= {flat['level']}, `sasview_bnn_plugin.core.flatness`): "
                          f"{_fmt(flat['featureless_in_distribution'], 4)} of the in-distribution test curves are (false-alarm rate "
                          f"with both rules {_fmt(pv.get('false_alarm_rate_with_flatness'), 4)}).", "",
                      f"| novel input | flagged at p < {pv['default_level']} | featureless | novel (either) | novel or low confidence |",
                      "|---|---|---|---|---|"]
            lines += [f"| {k} | {_fmt(v)} | {_fmt(flat.get('featureless:' + k))} | {_fmt(flat.get('novel:' + k))} | "
                      f"{_fmt(flat.get('novel_or_low_confidence:' + k))} |" for k, v in flagged.items()]
        elif flagged:
            lines += ["", f"| novel input | flagged at p < {pv['default_level']} |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in flagged.items()]
    if card.get("leave_one_class_out_study"):
        from .evaluation.novelty_study import markdown_table

        lines += ["", "## Leave-one-class-out: which novelty score sees an unseen class", "",
                  "One model per anomaly class, trained by the shipped recipe on part of the same data without every curve "
                  "showing that class (primary or secondary); AUROC (FPR at 95 % recall) of each score for test curves "
                  "showing the class against in-distribution test curves. Scores: see "
                  "`sasview_bnn_trainer.evaluation.novelty_study`."] + _study_note(card) + ["", markdown_table(card["leave_one_class_out_study"])]
    if card.get("leave_family_out_study"):
        from .evaluation.family_study import markdown_table as family_table

        lines += ["", "## Leave-family-out: shapes, lattices, structure factors and faults the network never saw", "",
                  "Models trained by the shipped recipe on part of the same data without every curve holding a particle of a "
                  "shape family, or showing a lattice, structure factor or artefact kind; accuracy of the primary class on test "
                  "curves showing the left-out variant against test curves showing none of the run's left-out variants, same "
                  "model, also at the left-out curves' class mix (in-family recall per class weighted by their class shares; "
                  "`sasview_bnn_trainer.evaluation.family_study`)."]
        lines += _study_note(card) + ["", family_table(card["leave_family_out_study"])]
    if card.get("real_data_markdown"):
        lines += ["", "## Real data: SasView's example data, labelled by hand from the physics", "",
                  "Used to evaluate, never to train (docs/real_data/labels.csv, scripts/real_data_table.py).", "",
                  card["real_data_markdown"].strip()]
    return lines


def write_card(model_path: str | Path, card: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``NAME.json`` and ``NAME.md`` beside the model; return their paths."""
    js, md = card_path(model_path), markdown_card_path(model_path)
    js.write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    md.write_text(render_markdown(card), encoding="utf-8")
    return js, md
