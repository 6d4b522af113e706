"""The demo's summary (scripts/example_data_report.py) counts the way the result CSV reads.

``scripts/demo.sh`` writes one table, ``sasview-bnn classify``'s CSV; the report
draws the contact sheet and prints a summary whose class counts are the CSV's
label column (a novel curve keeps its label), with the novel and refused
curves counted separately.
"""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sasview_bnn_plugin.model.catalog import shipped_model_files

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "example_data_report.py"
EXE = Path(sys.executable).with_name("sasview-bnn")


def load_report():
    spec = importlib.util.spec_from_file_location("example_data_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_summary_counts_labels_and_names_novel_and_refused_apart():
    line = load_report().summary_line({"clean": 3, "aggregation": 5}, n_novel=2, n_refused=1, n_files=4)
    assert line == ("9 curves from 4 files: 8 classified (aggregation 5, clean 3), "
                    "2 of them novel (their labels are not to be trusted); 1 refused")


def test_the_demo_writes_one_table_and_says_which_file_is_the_result():
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    assert "example_data_report.py --out \"$OUT\" --sheet-only" in demo
    assert 'echo "result: $OUT/example_data.csv' in demo and "source $VENV/bin/activate" in demo


@pytest.mark.slow
@pytest.mark.skipif(not shipped_model_files(), reason="no shipped model")
def test_the_printed_summary_matches_the_classify_csv(tmp_path):
    examples = load_report().example_data_folder()
    table = tmp_path / "example_data.csv"
    done = subprocess.run([str(EXE), "classify", str(examples), "--recursive", "-o", str(table)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    report = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--sheet-only", "--per-file", "1"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert report.returncode == 0, report.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contact_sheet.png", "example_data.csv"]  # one table
    (summary,) = report.stdout.splitlines()
    rows = list(csv.DictReader(table.open(newline="", encoding="utf-8")))
    labels = Counter(r["label"] for r in rows if r["status"] == "ok")
    shown = dict((name, int(n)) for name, n in re.findall(r"([a-z]+) (\d+)", summary.split("(", 1)[1].split(")", 1)[0]))
    assert shown == dict(labels)
    n_novel = int(re.search(r"(\d+) of them novel", summary).group(1))
    n_refused = int(re.search(r"(\d+) refused", summary).group(1))
    assert n_novel == sum(r["is_novel"] == "True" for r in rows)
    assert n_refused == sum(r["status"] != "ok" for r in rows)
    assert summary.startswith(f"{len(rows)} curves from ")
    assert f"{len(rows)} rows written to {table} ({n_refused} refused)" in done.stderr
