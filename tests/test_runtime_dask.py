"""``classify --workers N`` / ``--scheduler``: the archive on a Dask cluster gives the rows of the single-process run.

A ``distributed.LocalCluster`` of 2 worker processes (one model session each),
the same CSV and JSON, ``--resume``, and the missing ``[dask]`` extra named
in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sasview_bnn_plugin.cli import main

distributed = pytest.importorskip("distributed")

ONE_D = Path(__import__("sasdata").__file__).parent / "example_data" / "1d_data"
SOURCES = ("apoferritin.txt", "sphere_80.txt", "ISIS_Polymer_Blend_TK49.xml", "1umSlitSmearSphere.ABS")
EXE = Path(sys.executable).with_name("sasview-bnn")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("data")
    for copy in range(5):
        for name in SOURCES:
            shutil.copyfile(ONE_D / name, data / f"{copy:02d}_{name}")
    q = np.geomspace(0.003, 0.5, 40)
    for k in range(12):
        rows = "".join(f"{a:.6g} {100 / (1 + (a * (20 + 10 * k)) ** 2):.6g} 0.1\n" for a in q)
        (data / f"gen{k:02d}.txt").write_text(rows)
    (data / "empty.txt").write_text("")
    return data


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


def test_a_local_cluster_gives_the_rows_of_one_process(model_path, folder, tmp_path, cluster):
    one, dask = tmp_path / "one.csv", tmp_path / "dask.csv"
    assert main(["classify", str(folder), "--model", str(model_path), "--jobs", "1", "--batch-size", "8", "-o", str(one)]) == 1
    assert main(["classify", str(folder), "--model", str(model_path), "--scheduler", cluster.scheduler_address,
                 "--batch-size", "8", "-o", str(dask)]) == 1
    assert dask.read_text() == one.read_text()
    assert one.read_text().count("\n") > 30


def test_json_and_resume_on_the_cluster(model_path, folder, tmp_path, cluster, capsys):
    one = tmp_path / "one.jsonl"
    assert main(["classify", str(folder), "--model", str(model_path), "--jobs", "1", "-o", str(one)]) == 1
    lines = one.read_text().splitlines(keepends=True)
    out = tmp_path / "r.jsonl"
    (tmp_path / "r.jsonl.partial").write_text("".join(lines[:9]))
    assert main(["classify", str(folder), "--model", str(model_path), "--scheduler", cluster.scheduler_address,
                 "--resume", "-o", str(out)]) == 1
    assert [json.loads(x) for x in out.read_text().splitlines()] == [json.loads(x) for x in lines]
    full = tmp_path / "full.json"
    assert main(["classify", str(folder), "--model", str(model_path), "--jobs", "1", "-o", str(full)]) == 1
    on_cluster = tmp_path / "cluster.json"
    assert main(["classify", str(folder), "--model", str(model_path), "--scheduler", cluster.scheduler_address, "-o", str(on_cluster)]) == 1
    assert json.loads(on_cluster.read_text())["results"] == json.loads(full.read_text())["results"]


def test_an_embedded_cluster_of_two_workers(model_path, folder, tmp_path):
    """The console script with --workers 2: its own LocalCluster of two processes."""
    one, dask = tmp_path / "one.csv", tmp_path / "dask.csv"
    assert main(["classify", str(folder), "--model", str(model_path), "--jobs", "1", "-o", str(one)]) == 1
    done = subprocess.run([str(EXE), "classify", str(folder), "--model", str(model_path), "--workers", "2", "-o", str(dask)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert dask.read_text() == one.read_text()


def test_options_that_need_this_process(model_path, folder, tmp_path, capsys):
    assert main(["classify", str(folder), "--model", str(model_path), "--workers", "2", "--explain", "-o", str(tmp_path / "x.csv")]) == 2
    assert "not with --scheduler or --workers" in capsys.readouterr().err
    assert main(["classify", str(folder), "--model", str(model_path), "--workers", "2", "--scheduler", "tcp://127.0.0.1:1",
                 "-o", str(tmp_path / "x.csv")]) == 2
    assert list(tmp_path.iterdir()) == []


def test_without_the_dask_extra_the_extra_is_named(model_path, folder, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['distributed'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([str(EXE), "classify", str(folder), "--model", str(model_path), "--workers", "2", "-o", "out.csv"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr == ("sasview-bnn: error: --scheduler and --workers need the Python package 'distributed', which is not "
                           'installed; install the [dask] extra: in your sasview-bnn clone, run pip install -e ".[dask]"\n')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_a_failing_worker_is_one_line_and_the_rows_stay(model_path, folder, tmp_path, cluster, capsys, monkeypatch):
    import sasview_bnn_plugin.cli.dask_run as dask_run

    def broken(paths, *args):
        raise OSError(f"cannot read {paths[0]}")

    monkeypatch.setattr(dask_run, "classify_chunk", broken)
    out = tmp_path / "r.csv"
    assert main(["classify", str(folder), "--model", str(model_path), "--scheduler", cluster.scheduler_address, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "error: a Dask worker failed on the files from" in err and "OSError: cannot read" in err and "Traceback" not in err
    assert "rerun with --resume" in err and not out.exists()
