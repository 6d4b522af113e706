#!/usr/bin/env bash
# The main job on a fresh machine: set up a virtual environment and run sasview-bnn.
#
# Until a trained default model ships in onnx_models/ (issue 6), the main job is the
# simulator: it writes 700 labelled curves (100 per class) and a contact sheet a
# scientist can check by eye.
# Usage: bash scripts/demo.sh [output folder, default demo-output]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
OUT="${1:-demo-output}"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[train]"
mkdir -p "$OUT"
"$VENV/bin/sasview-bnn-train" simulate --n 700 --seed 2026 --workers 2 \
    --out "$OUT/simulated.h5" --preview "$OUT/contact_sheet.png"
echo "wrote $OUT/simulated.h5 and $OUT/contact_sheet.png"
