"""Score a model against the hand-labelled real curves of SasView's example data.

The labels (``docs/real_data/labels.csv``, see ``docs/real_data/README.md``) were
made by hand from the physics of each curve, never from a model's output, and
are for evaluation only. Each label row names a file of sasdata's
``example_data/1d_data`` and a dataset in it, or ``*`` for every dataset of the
file that has no row of its own (a series such as the 240 frames of VTMA.h5 is
one group). Every labelled curve is read with the project's loader and
classified; each gets a verdict:

- ``right``: the model's label is our primary class; for a curve we call
  ``ambiguous`` or ``novel``: the model flags it (novel) or is unsure
  (top probability below :data:`~sasview_bnn_plugin.core.model_format.LOW_CONFIDENCE_THRESHOLD`),
  or refuses it;
- ``flagged``: the label is wrong, but the model says novel, is unsure, or
  refuses the curve (no label is given);
- ``confidently wrong``: wrong label, top probability >= 0.9, not novel;
- ``wrong``: any other wrong label.

Curves without a q unit are read in the unit the labels judged right
(``--q-unit labels``, the default) or as the runtime decides (``--q-unit auto``);
the table shows the unit used.

Usage::

    python scripts/real_data_table.py [--model NAME|FILE] [--out docs/real_data] [--labels FILE] [--q-unit labels|auto]

Writes ``OUT/results_<model>.md`` (summary and one table row per label row; a
group shows the spread of its frames) and ``OUT/results_<model>.csv`` (one row
per curve) and prints the summary counts.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from sasview_bnn_plugin import ANOMALY_NAMES, CLASS_NAMES, LOW_CONFIDENCE_THRESHOLD, BNNClassifier, build_plugin_host, ClassificationResult, Curve, CurveLoader, resolve_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LABELS = ROOT / "docs" / "real_data" / "labels.csv"
DEFAULT_OUT = ROOT / "docs" / "real_data"

#: Verdicts, in the order they are reported.
VERDICTS: tuple[str, ...] = ("right", "flagged", "wrong", "confidently wrong")
#: A wrong label at or above this top probability (and not novel) is "confidently wrong".
CONFIDENTLY_WRONG_THRESHOLD = 0.9
#: Our labels for curves that belong in no class: the model should flag them.
NO_CLASS_LABELS: tuple[str, ...] = ("ambiguous", "novel")
#: q units a label may give ("n/a": not a scattering curve, the runtime decides).
LABEL_Q_UNITS: tuple[str, ...] = ("1/A", "1/nm", "n/a")
LABEL_COLUMNS: tuple[str, ...] = ("file", "dataset", "primary", "anomalies_present", "q_unit", "reason")
#: A label row with this dataset applies to every dataset of its file that has no row of its own.
ALL_DATASETS = "*"

CSV_COLUMNS: tuple[str, ...] = (
    "file", "dataset", "our_label", "our_anomalies", "our_q_unit", "model_label", "confidence",
    "model_anomalies_present", "prediction_set", "novelty_p_value", "novelty_score", "is_novel",
    "q_unit_used", "status", "verdict", "message",
)


@dataclass(frozen=True)
class Label:
    """One row of the labels file."""

    file: str
    dataset: str
    primary: str
    anomalies: tuple[str, ...]
    q_unit: str
    reason: str


@dataclass
class Row:
    """One classified curve with its label and verdict."""

    label: Label
    dataset: str
    result: ClassificationResult
    verdict: str


def read_labels(path: str | Path) -> list[Label]:
    """The label rows of ``path``, checked against the taxonomy (ValueError names the bad row)."""
    labels: list[Label] = []
    seen: set[tuple[str, str]] = set()
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(LABEL_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            primary = row["primary"].strip()
            anomalies = tuple(a.strip() for a in row["anomalies_present"].split(";") if a.strip())
            q_unit = row["q_unit"].strip()
            where = f"{path}, line {line}"
            if primary not in CLASS_NAMES and primary not in NO_CLASS_LABELS:
                raise ValueError(f"{where}: primary {primary!r} is neither a class nor one of {NO_CLASS_LABELS}")
            bad = [a for a in anomalies if a not in ANOMALY_NAMES]
            if bad:
                raise ValueError(f"{where}: {', '.join(bad)} is not an anomaly class")
            if primary in ANOMALY_NAMES and primary not in anomalies:
                raise ValueError(f"{where}: the primary anomaly {primary} must be listed among the anomalies present")
            if primary == "clean" and anomalies:
                raise ValueError(f"{where}: a clean curve has no anomalies present")
            if q_unit not in LABEL_Q_UNITS:
                raise ValueError(f"{where}: q_unit {q_unit!r} is not one of {LABEL_Q_UNITS}")
            key = (row["file"], row["dataset"])
            if key in seen:
                raise ValueError(f"{where}: {row['file']} [{row['dataset']}] is labelled twice")
            seen.add(key)
            labels.append(Label(row["file"], row["dataset"], primary, anomalies, q_unit, row["reason"].strip()))
    return labels


def verdict(primary: str, result: ClassificationResult) -> str:
    """The verdict on one result, given our primary label (see the module docstring)."""
    if not result.ok:
        # Refused: no label was given. Right for a curve that belongs in no class, flagged otherwise.
        return "right" if primary in NO_CLASS_LABELS else "flagged"
    confidence = result.confidence
    unsure = bool(result.is_novel) or confidence < LOW_CONFIDENCE_THRESHOLD
    if primary not in NO_CLASS_LABELS and result.label == primary:
        return "right"
    if unsure:
        return "right" if primary in NO_CLASS_LABELS else "flagged"
    if confidence >= CONFIDENTLY_WRONG_THRESHOLD:
        return "confidently wrong"
    return "wrong"


def labels_for_file(labels: Iterable[Label], file: str, datasets: Sequence[str]) -> tuple[dict[str, Label], list[Label]]:
    """Which label applies to each dataset of ``file`` (its own row, else the file's ``*`` row).

    Returns (dataset -> label, label rows of this file that matched no dataset).
    """
    mine = [lab for lab in labels if lab.file == file]
    exact = {lab.dataset: lab for lab in mine if lab.dataset != ALL_DATASETS}
    group = next((lab for lab in mine if lab.dataset == ALL_DATASETS), None)
    chosen: dict[str, Label] = {}
    for name in datasets:
        label = exact.get(name, group)
        if label is not None:
            chosen[name] = label
    used = set(map(id, chosen.values()))
    return chosen, [lab for lab in mine if id(lab) not in used]


def _with_label_unit(curve: Curve, label: Label) -> Curve:
    """The curve with q read in the label's unit, when the file gave none (a unit in the file is kept)."""
    if curve.error is None and curve.q_unit_source == "assumed" and label.q_unit in ("1/A", "1/nm"):
        curve.q_unit = label.q_unit
        curve.q_unit_source = "user"
        curve.notes.append(f"q read in {label.q_unit}, the unit the hand labels judged right")
    return curve


def classify_labelled(
    labels: Sequence[Label],
    classifier: BNNClassifier,
    folder: str | Path,
    loader: CurveLoader | None = None,
    q_unit_from_labels: bool = True,
) -> tuple[list[Row], list[str]]:
    """Classify every labelled curve; returns (rows in label order, warnings).

    Warnings name label rows that match no file or dataset and datasets of a
    labelled file that no row covers.
    """
    loader = loader or CurveLoader()
    folder = Path(folder)
    warnings: list[str] = []
    by_label: dict[int, list[Row]] = defaultdict(list)
    for file in dict.fromkeys(lab.file for lab in labels):
        path = folder / file
        if not path.is_file():
            warnings.append(f"{file}: labelled but not found in {folder}")
            continue
        curves = loader.load(path)
        chosen, unused = labels_for_file(labels, file, [c.dataset for c in curves])
        warnings += [f"{file} [{lab.dataset}]: label row matches no dataset of the file" for lab in unused]
        todo: list[tuple[Curve, Label]] = []
        for curve in curves:
            label = chosen.get(curve.dataset)
            if label is None:
                warnings.append(f"{file} [{curve.dataset}]: not labelled")
                continue
            todo.append((_with_label_unit(curve, label) if q_unit_from_labels else curve, label))
        results = classifier.classify([curve for curve, _ in todo])
        for (curve, label), result in zip(todo, results):
            result.file = file
            by_label[id(label)].append(Row(label, curve.dataset, result, verdict(label.primary, result)))
    rows = [row for lab in labels for row in by_label.get(id(lab), [])]
    return rows, warnings


def group_rows(rows: Sequence[Row]) -> list[list[Row]]:
    """Rows grouped by their label row, in order."""
    groups: dict[int, list[Row]] = {}
    for row in rows:
        groups.setdefault(id(row.label), []).append(row)
    return list(groups.values())


def group_verdict(group: Sequence[Row]) -> str:
    """A label row's verdict: its only curve's, or the most common among its curves (ties: the worse)."""
    counts = Counter(row.verdict for row in group)
    return max(VERDICTS, key=lambda v: (counts[v], VERDICTS.index(v)))


def summary(rows: Sequence[Row]) -> dict[str, dict[str, int]]:
    """Verdict counts per curve and per label row (a group counted once, by :func:`group_verdict`)."""
    per_curve = Counter(row.verdict for row in rows)
    per_row = Counter(group_verdict(g) for g in group_rows(rows))
    return {
        "curves": {v: per_curve[v] for v in VERDICTS},
        "label_rows": {v: per_row[v] for v in VERDICTS},
    }


def _fmt(value: float, spec: str = ".3f") -> str:
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def _names(names: tuple[str, ...] | None) -> str:
    """A model's list output for a CSV cell: "" when the model lacks it, "none" when empty."""
    if names is None:
        return ""
    return ";".join(names) if names else "none"


def csv_record(row: Row) -> dict[str, str]:
    """One CSV row (:data:`CSV_COLUMNS`)."""
    r = row.result
    return {
        "file": row.label.file,
        "dataset": row.dataset,
        "our_label": row.label.primary,
        "our_anomalies": ";".join(row.label.anomalies),
        "our_q_unit": row.label.q_unit,
        "model_label": (r.label or "") if r.ok else "refused",
        "confidence": _fmt(r.confidence),
        "model_anomalies_present": _names(r.anomalies_present),
        "prediction_set": _names(r.prediction_set),
        "novelty_p_value": _fmt(r.novelty_p_value, ".3g"),
        "novelty_score": _fmt(r.novelty_score, ".3g"),
        "is_novel": "" if r.is_novel is None else str(bool(r.is_novel)),
        "q_unit_used": r.q_unit_used,
        "status": r.status,
        "verdict": row.verdict,
        "message": r.message,
    }


def write_csv(rows: Sequence[Row], path: str | Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(csv_record(row))


def _spread(values: Iterable[str]) -> str:
    """"x" when all equal, else "x 230, y 8" (most common first)."""
    counts = Counter(values)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{k or '—'} {n}" for k, n in counts.most_common())


def _median(values: Iterable[float], spec: str) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    text = format(statistics.median(finite), spec)
    return text if len(finite) == 1 else f"{text} (median)"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ") or "—"


def markdown_table(rows: Sequence[Row], model: str, q_unit_mode: str = "labels") -> str:
    """The report: summary counts, the verdict rules and one table row per label row."""
    counts = summary(rows)
    groups = group_rows(rows)
    n_curves, n_rows = len(rows), len(groups)
    refused = sum(not row.result.ok for row in rows)
    lines = [
        f"# Real-data validation: {model}",
        "",
        f"{n_curves} curves in {n_rows} label rows (hand labels: `docs/real_data/labels.csv`, made from the physics, "
        "never from a model; for evaluation only).",
        f"q units of curves without one: {'the unit the labels judged right' if q_unit_mode == 'labels' else 'decided by the runtime'}.",
        "",
        "| | right | flagged | wrong | confidently wrong |",
        "|---|---|---|---|---|",
        "| label rows (a group counts once, by its most common verdict) | "
        + " | ".join(str(counts["label_rows"][v]) for v in VERDICTS) + " |",
        "| curves | " + " | ".join(str(counts["curves"][v]) for v in VERDICTS) + " |",
        "",
        f"Refused by the runtime (no label given): {refused} curve(s).",
        "",
        f"Verdicts: *right* = the model's label is our primary class, or, for a curve we call ambiguous or novel, "
        f"the model says novel, is unsure (top p < {LOW_CONFIDENCE_THRESHOLD}) or refuses it; *flagged* = wrong label, "
        f"but novel, unsure or refused; *confidently wrong* = wrong, top p >= {CONFIDENTLY_WRONG_THRESHOLD}, not novel; "
        "*wrong* = the rest. Model anomalies / set: empty cell = the model has no such output.",
        "",
        "| file | dataset | our label | anomalies we list | model label | confidence | model anomalies present "
        "| prediction set | novelty p | novel | q unit used | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in groups:
        label = group[0].label
        results = [row.result for row in group]
        dataset = (group[0].dataset or label.dataset) if len(group) == 1 else f"{label.dataset} ({len(group)} curves)"
        cells = [
            label.file,
            dataset,
            label.primary,
            ";".join(label.anomalies),
            _spread(((r.label or "") if r.ok else "refused") for r in results),
            _median((r.confidence for r in results if r.ok), ".2f"),
            _spread(_names(r.anomalies_present) for r in results) if any(r.anomalies_present is not None for r in results) else "",
            _spread(_names(r.prediction_set) for r in results) if any(r.prediction_set is not None for r in results) else "",
            _median((r.novelty_p_value for r in results if r.ok), ".3g"),
            _spread(("" if r.is_novel is None else ("yes" if r.is_novel else "no")) for r in results),
            _spread(r.q_unit_used for r in results),
            _spread(row.verdict for row in group) if len(group) > 1 else group[0].verdict,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def example_data_folder() -> Path:
    """sasdata's ``example_data/1d_data`` folder."""
    import sasdata

    return Path(sasdata.__file__).parent / "example_data" / "1d_data"


def summary_text(rows: Sequence[Row]) -> str:
    counts = summary(rows)
    curves = ", ".join(f"{v} {counts['curves'][v]}" for v in VERDICTS)
    label_rows = ", ".join(f"{v} {counts['label_rows'][v]}" for v in VERDICTS)
    return (
        f"label rows ({len(group_rows(rows))}; a group counts once): {label_rows}\n"
        f"curves ({len(rows)}): {curves}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name or ONNX file (default: the shipped model)")
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS, help=f"labels CSV (default {DEFAULT_LABELS.relative_to(ROOT)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--data", type=Path, default=None, help="folder of the labelled files (default: sasdata's example_data/1d_data)")
    parser.add_argument("--q-unit", choices=("labels", "auto"), default="labels",
                        help="unit of q for curves without one: the labels' (default) or the runtime's decision")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)

    labels = read_labels(args.labels)
    source = resolve_model(args.model, build_plugin_host().models())
    classifier = BNNClassifier(source.path, name=source.name, intra_op_threads=args.threads)
    rows, warnings = classify_labelled(labels, classifier, args.data or example_data_folder(), q_unit_from_labels=args.q_unit == "labels")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    md_path = args.out / f"results_{source.name}.md"
    csv_path = args.out / f"results_{source.name}.csv"
    md_path.write_text(markdown_table(rows, source.name, args.q_unit), encoding="utf-8")
    write_csv(rows, csv_path)
    print(f"{source.name} on the hand-labelled example data")
    print(summary_text(rows))
    print(f"wrote {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
