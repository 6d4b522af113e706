"""``sasview-bnn-train simulate``: arguments, preview, and a run cut off by SIGKILL then resumed."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("sasmodels")

from sasview_bnn_trainer.cli import main
from sasview_bnn_trainer.simulation.runner import simulate_to_file
from sasview_bnn_trainer.simulation.store import CurveReader

CONSOLE_SCRIPT = Path(sys.executable).with_name("sasview-bnn-train")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("sasview-bnn-train: error: ")
    return err


BAD_ARGUMENTS = {
    "unknown class": (["--classes", "clean", "glassy"], "unknown class 'glassy'; the classes are: clean,"),
    "unknown excluded class": (["--exclude-class", "dust"], "unknown class 'dust'"),
    "no class left": (["--classes", "ordered", "--exclude-class", "ordered"], "no class left to simulate"),
    "zero curves": (["--n", "0"], "n curves must be a positive whole number, got 0"),
    "negative curves": (["--n", "-3"], "n curves must be a positive whole number, got -3"),
    "count not a number": (["--n", "ten"], "argument --n: invalid int value: 'ten'"),
    "zero workers": (["--workers", "0"], "workers must be a positive whole number, got 0"),
    "negative workers": (["--workers", "-2"], "workers must be a positive whole number"),
    "negative seed": (["--seed", "-1"], "seed must be a whole number >= 0"),
    "zero chunk size": (["--chunk-size", "0"], "chunk size must be a positive whole number"),
    "workers with scheduler": (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "--workers sizes the embedded"),
    "preview not an image": (["--preview", "sheet.txt"], "cannot write a preview to sheet.txt: use one of"),
}


@pytest.mark.parametrize("extra, message", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_argument_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "curves.h5"
    argv = ["simulate", "--n", "5", "--out", str(out), "--seed", "1", *extra]
    assert main(argv) == 2
    assert message in _error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "where, message",
    [("missing/curves.h5", "folder {d}/missing does not exist"), ("a_file/curves.h5", "{d}/a_file is a file, not a folder"),
     (".", "is a folder; give a file name")],
)
def test_unwritable_output_path(tmp_path, capsys, where, message):
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / where
    assert main(["simulate", "--n", "5", "--out", str(out), "--seed", "1", "--workers", "1"]) == 2
    assert message.format(d=tmp_path) in _error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        assert main(["simulate", "--n", "5", "--out", str(folder / "c.h5"), "--seed", "1"]) == 2
        assert "is not writable" in _error_line(capsys)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_console_script_reports_a_bad_class_in_one_line(tmp_path):
    out = tmp_path / "c.h5"
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "simulate", "--n", "10", "--out", str(out), "--seed", "0", "--classes", "crystal"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "sasview-bnn-train: error: unknown class 'crystal'; the classes are: "
        "clean, aggregation, interparticle, ordered, bimodal, oversubtracted, artefact"
    ]
    assert list(tmp_path.iterdir()) == []


def test_simulate_with_preview(tmp_path, capsys):
    out, sheet = tmp_path / "c.h5", tmp_path / "sheet.png"
    argv = ["simulate", "--n", "14", "--out", str(out), "--seed", "2", "--workers", "1", "--chunk-size", "5",
            "--classes", "clean", "oversubtracted", "--preview", str(sheet), "--no-progress"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert f"wrote 14 curves to {out}" in stdout and f"contact sheet: {sheet}" in stdout
    with CurveReader(out) as reader:
        assert len(reader) == 14 and reader.classes == ["clean", "oversubtracted"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "sheet.png"]
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_run_killed_midway_resumes_to_the_same_file(tmp_path, capsys):
    """SIGKILL the whole process group (client and workers) once some parts exist, then --resume on another cluster."""
    n, chunk = 84, 6
    reference = simulate_to_file(n, tmp_path / "ref.h5", 5, workers=2, chunk_size=chunk, progress=False)
    out = tmp_path / "cut.h5"
    parts = tmp_path / "cut.h5.parts"
    argv = ["simulate", "--n", str(n), "--out", str(out), "--seed", "5", "--chunk-size", str(chunk), "--no-progress"]
    proc = subprocess.Popen([str(CONSOLE_SCRIPT), *argv, "--workers", "1"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(parts.glob("chunk_*.h5"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finished_before = {p.name for p in parts.glob("chunk_*.h5")}
    assert 2 <= len(finished_before) < n // chunk, "the run was not cut off midway"
    assert not out.exists()

    with distributed.LocalCluster(
        host="127.0.0.1", n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    ) as cluster:  # resume on a separately started cluster: the --scheduler path
        scheduler = ["--scheduler", cluster.scheduler_address]
        assert main(argv + scheduler) == 2  # without --resume: refuses to touch the parts
        capsys.readouterr()
        assert main(argv + scheduler + ["--resume"]) == 0
    assert not parts.exists()
    kept = chunk * len(finished_before)  # the rate counts the curves made by this run only
    assert f"wrote {n} curves to {out} in " in (said := capsys.readouterr().out)
    assert f"({n - kept} simulated now, " in said and f"; {kept} were done before this run)" in said
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(reference.read_bytes()).digest()
