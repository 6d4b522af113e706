#!/usr/bin/env bash
# The main job on a fresh machine: set up a virtual environment, then classify every 1D curve of
# SasView's example data (shipped inside the sasdata wheel) with the shipped model.
#
# Writes OUT/example_data.csv (one row per curve: label, confidence, uncertainty, novelty, status,
# message) with the `sasview-bnn classify` command line, then OUT/results.csv and
# OUT/contact_sheet.png (every file's first curves with their verdicts) with scripts/example_data_report.py.
# Usage: bash scripts/demo.sh [output folder, default demo-output]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
OUT="${1:-demo-output}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[plot]"
mkdir -p "$OUT"
EXAMPLES="$("$VENV/bin/python" -c 'import pathlib, sasdata; print(pathlib.Path(sasdata.__file__).parent / "example_data" / "1d_data")')"
status=0
"$VENV/bin/sasview-bnn" classify "$EXAMPLES" --recursive --output "$OUT/example_data.csv" || status=$?
# Exit status 1 means some curves were refused (their rows say why): expected for this folder, which
# also holds a beam profile and a 3D-shape table that are not scattering curves.
[ "$status" -le 1 ] || exit "$status"
"$VENV/bin/python" scripts/example_data_report.py --out "$OUT"
echo "wrote $OUT/example_data.csv, $OUT/results.csv and $OUT/contact_sheet.png"
