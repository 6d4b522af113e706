"""A trainer sub-command run without the ``[train]`` extra says which extra to install (no traceback).

The missing package is simulated in the real console script's process: a
``sitecustomize`` on PYTHONPATH sets ``sys.modules[name] = None``, which makes
every ``import name`` fail with ModuleNotFoundError, as on a fresh runtime-only
install.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONSOLE_SCRIPT = Path(sys.executable).with_name("sasview-bnn-train")


def run_without(module: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``sasview-bnn-train ARGS`` in a process where ``module`` cannot be imported."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules[{module!r}] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)


@pytest.mark.parametrize(
    "module, args",
    [
        ("scipy", ["simulate", "--n", "5", "--out", "curves.h5", "--seed", "1", "--workers", "1"]),
        ("torch", ["fit", "curves.h5", "--method", "vi", "--out", "run"]),
    ],
    ids=["simulate without scipy", "fit without torch"],
)
def test_a_missing_train_package_names_the_extra(tmp_path, module, args):
    done = run_without(module, tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr == (
        f"sasview-bnn-train {args[0]}: error: the Python package '{module}' is not installed; "
        'install the [train] extra: in your sasview-bnn clone, run pip install -e ".[train]"\n'
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # nothing written


def test_the_probe_really_hides_the_module(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['scipy'] = None\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", "import scipy"], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr


def test_no_command_lists_the_commands(tmp_path):
    done = subprocess.run([str(CONSOLE_SCRIPT)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0] == "sasview-bnn-train: error: a command is needed, one of:"
    assert [line.split()[0] for line in lines[1:-1]] == ["simulate", "fit", "export", "evaluate", "card"]
    assert lines[-1] == "run 'sasview-bnn-train COMMAND --help' for the options of one"
