"""Run a model on every 1D dataset in SasView's example data; write a table and a contact sheet.

The example data ship inside the sasdata wheel (``sasdata/example_data/1d_data``:
apoferritin, P123, hSDS, AOT, Ludox, latex, alumina USAXS, ...); nothing is
copied into this repository. Files holding many datasets (VTMA.h5 has 240)
keep every row in the table but show only their first ``--per-file`` curves
on the sheet.

Usage::

    python scripts/example_data_report.py --out docs/example_data [--model NAME|FILE] [--per-file 4] [--sheet-only]

Writes ``OUT/results.csv`` (file, dataset, label, confidence, anomaly
probability, novelty score, novel, status, message) and ``OUT/contact_sheet.png``;
with ``--sheet-only`` the contact sheet only (``scripts/demo.sh``: its table is
``sasview-bnn classify``'s CSV). The summary it prints counts the label column
(a novel curve keeps its label and is counted there too), then the novel curves
among them and the refused ones, as in the table.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import defaultdict
from pathlib import Path

from sasview_bnn_plugin import BNNClassifier, build_plugin_host, CurveLoader, find_data_files, plot_contact_sheet, resolve_model

COLUMNS = ("file", "dataset", "label", "confidence", "anomaly_probability", "novelty_score", "is_novel", "status", "message")


def summary_line(labels: dict[str, int], n_novel: int, n_refused: int, n_files: int) -> str:
    """"N curves from F files: K classified (label counts, as in the label column), of them V novel; R refused"."""
    classified = sum(labels.values())
    return (f"{classified + n_refused} curves from {n_files} files: {classified} classified ("
            + ", ".join(f"{k} {v}" for k, v in sorted(labels.items()))
            + f"), {n_novel} of them novel (their labels are not to be trusted); {n_refused} refused")


def example_data_folder() -> Path:
    """sasdata's ``example_data/1d_data`` folder."""
    import sasdata

    return Path(sasdata.__file__).parent / "example_data" / "1d_data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--model", default=None, help="model name or ONNX file (default: the shipped model)")
    parser.add_argument("--per-file", type=int, default=4, help="curves per file shown on the contact sheet (default 4)")
    parser.add_argument("--sheet-only", action="store_true", help="write the contact sheet only, no results.csv")
    args = parser.parse_args(argv)

    folder = example_data_folder()
    files, _ = find_data_files([str(folder)], recursive=True)
    source = resolve_model(args.model, build_plugin_host().models())
    classifier = BNNClassifier(source.path, name=source.name)
    loader = CurveLoader()
    args.out.mkdir(parents=True, exist_ok=True)
    shown: list = []
    per_file: dict[str, int] = defaultdict(int)
    labels: dict[str, int] = defaultdict(int)
    n_novel = n_refused = 0
    table = os.devnull if args.sheet_only else args.out / "results.csv"
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for path in files:
            curves = loader.load(path)
            for curve, result in zip(curves, classifier.classify(curves)):
                name = path.relative_to(folder).as_posix()
                ok = result.ok
                writer.writerow([
                    name, result.dataset, result.label or "", f"{result.confidence:.3f}" if ok else "",
                    f"{result.anomaly_probability:.3f}" if ok else "", f"{result.novelty_score:.4g}" if ok else "",
                    result.is_novel if ok else "", result.status, result.message,
                ])
                if ok:  # the label column; a novel curve keeps its label
                    labels[result.label] += 1
                    n_novel += bool(result.is_novel)
                else:
                    n_refused += 1
                if per_file[name] < args.per_file:
                    per_file[name] += 1
                    result.file = name
                    shown.append((curve, result))
    plot_contact_sheet(shown, args.out / "contact_sheet.png", columns=8,
                       title=f"SasView example data classified by {source.name}")
    print(summary_line(labels, n_novel, n_refused, len(files)))
    if not args.sheet_only:
        print(f"wrote {args.out / 'results.csv'} and {args.out / 'contact_sheet.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
