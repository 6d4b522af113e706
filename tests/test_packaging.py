"""A built wheel (not only the editable checkout) carries and finds the shipped models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("onnx")
from onnx_test_models import write_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "sasview_bnn_plugin", "onnx_models", "trainer")


@pytest.mark.slow
def test_wheel_ships_onnx_models_and_the_runtime_finds_them(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    write_model(src / "onnx_models" / "wheel_probe.onnx")

    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("sasview_bnn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sasview_bnn_plugin/onnx_models/wheel_probe.onnx" in names
    assert "sasview_bnn_trainer/cli.py" in names and "sasview_bnn_plugin/gui/perspective.py" in names
    assert "sasview_bnn_plugin/gui/help/bnn_anomaly.html" in names  # the perspective's Help button opens it

    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import sasview_bnn_plugin, sasview_bnn_plugin.model.catalog as c;"
        "print(sasview_bnn_plugin.__file__);"
        "print([p.name for p in c.shipped_model_files()])"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, env=env, cwd=tmp_path).stdout
    package_file, models = out.strip().splitlines()
    assert Path(package_file).is_relative_to(target)  # the wheel's copy, not the checkout
    assert "wheel_probe.onnx" in models
