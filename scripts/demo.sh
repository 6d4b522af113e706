#!/usr/bin/env bash
# The main job on a fresh machine: set up a virtual environment, then classify every 1D curve of
# SasView's example data (shipped inside the sasdata wheel) with the shipped model.
#
# The result is OUT/example_data.csv (one row per curve: label, confidence, uncertainty, novelty,
# status, message), written by the `sasview-bnn classify` command line; scripts/example_data_report.py
# then draws OUT/contact_sheet.png (every file's first curves with their verdicts) and prints a summary
# that counts the CSV's label column, then the novel curves among them and the refused ones.
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
"$VENV/bin/python" scripts/example_data_report.py --out "$OUT" --sheet-only
echo "result: $OUT/example_data.csv (one row per curve); contact sheet: $OUT/contact_sheet.png"
echo "to use sasview-bnn yourself: source $VENV/bin/activate"
