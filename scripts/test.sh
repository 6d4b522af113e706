#!/usr/bin/env bash
# Set up a fresh virtual environment with everything the tests need, then run them.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch==2.13.0 (train extra) installs a CPU wheel on Python 3.11 machines of this kind.
"$VENV/bin/python" -m pip install --quiet -e ".[train,dev]"
# A real external plugin (own distribution, own entry point) that the plugin-host tests observe.
"$VENV/bin/python" -m pip install --quiet ./tests/plugins/sasview-bnn-example-plugin
"$VENV/bin/python" -m pytest -ra "$@"
