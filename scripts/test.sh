#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run them all.
#
# 1. Core, simulator, trainer and runtime tests in .venv (Python 3.11, torch CPU wheel).
# 2. The SasView integration tests against SasView 6.1 on Python 3.11 (.venv-gui311) and
#    SasView 6.2 on Python 3.12 (.venv-gui312), the end-to-end one under Xvfb with Mesa.
#
# Usage: bash scripts/test.sh [extra pytest arguments for step 1]
# Set SKIP_GUI=1 to run step 1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

pip_install() { "$1/bin/python" -m pip install --quiet --disable-pip-version-check "${@:2}"; }

# --- 1. core -------------------------------------------------------------------------------
"$PYTHON" -m venv .venv
pip_install .venv --upgrade pip "setuptools>=77" wheel
# torch==2.13.0 (train extra) installs a CPU wheel on Python 3.11 machines of this kind.
pip_install .venv -e ".[train,dev,bluesky]"
# A real external plugin (own distribution, own entry point) that the plugin-host tests observe.
pip_install .venv ./tests/plugins/sasview-bnn-example-plugin
# jscatter's example data: real lab-SAXS files without a q unit (1/nm). GPL: the tests read them from the
# installed package, nothing is copied; reading files needs none of its dependencies (Jupyter, MDAnalysis).
pip_install .venv --no-deps "jscatter==1.9.0.5"
.venv/bin/python -m pytest -ra "$@"

[ "${SKIP_GUI:-0}" = "1" ] && exit 0

# --- 2. SasView integration ------------------------------------------------------------------
GUI_APT_PACKAGES="xvfb xauth libgl1 libgl1-mesa-dri libegl1 libopengl0 libxkbcommon-x11-0 libxcb-cursor0
 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0
 libxcb-xkb1 libfontconfig1 libdbus-1-3 libnss3 libxcomposite1 libxdamage1 libxrandr2 libxtst6 libxshmfence1
 libxkbfile1 libasound2"
if ! command -v xvfb-run >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $GUI_APT_PACKAGES >/dev/null
fi

find_python() {  # find_python 3.12 -> path of a working interpreter of that version, or nothing
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python "$(command -v "python$1" 2>/dev/null)"; do
        # pyenv shims exist for inactive versions and fail when run: check that it runs.
        [ -x "$candidate" ] && "$candidate" -c "import sys" >/dev/null 2>&1 && { echo "$candidate"; return; }
    done
}

GUI_TESTS="tests/test_gui_perspective.py tests/test_gui_hooks.py tests/test_gui_sasview_e2e.py tests/test_gui_robustness.py"
for version in 3.11 3.12; do
    interpreter="$(find_python "$version")"
    if [ -z "$interpreter" ]; then
        echo "error: Python $version is needed for the SasView GUI tests but was not found" >&2
        exit 1
    fi
    venv=".venv-gui${version/./}"
    "$interpreter" -m venv "$venv"
    pip_install "$venv" --upgrade pip
    # onnx writes the small test models; no torch in the GUI environments.
    pip_install "$venv" -e ".[gui,dev]" onnx
    echo "== SasView GUI tests, Python $version, SasView $("$venv/bin/python" -c 'from importlib.metadata import version; print(version("sasview"))')"
    # The GUI tests skip where Qt or SasView is missing; here they must run, so check first.
    QT_QPA_PLATFORM=offscreen "$venv/bin/python" -c "import PySide6, pytestqt, onnx, sas.qtgui.MainWindow.MainWindow"
    command -v xvfb-run >/dev/null
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pytest -ra -p no:cacheprovider $GUI_TESTS
done
