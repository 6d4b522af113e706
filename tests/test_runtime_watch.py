"""``sasview-bnn watch``: new files are classified once completely written; stop and restart cleanly.

The command runs for real as a subprocess on a temporary folder fed with
SasView's example data, a garbage file and a file written in two halves.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sasview_bnn_plugin.cli import main
from sasview_bnn_plugin.io.folder_watch import FolderWatcher
from sasview_bnn_plugin.core.result import CSV_COLUMNS

ONE_D = Path(__import__("sasdata").__file__).parent / "example_data" / "1d_data"
EXE = str(Path(sys.executable).with_name("sasview-bnn"))


class FakeClock:
    """Seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_file_is_ready_only_after_it_stops_changing(tmp_path):
    clock = FakeClock()
    watcher = FolderWatcher(tmp_path, settle=2.0, clock=clock, ignore=[tmp_path / "results.csv"])
    data = tmp_path / "a.txt"
    data.write_text("0.01 1.0\n")
    (tmp_path / "results.csv").write_text("file\n")  # the output is never classified
    (tmp_path / ".hidden.txt").write_text("0.01 1.0\n")
    (tmp_path / "notes.docx").write_text("not data")
    assert watcher.poll() == [] and watcher.n_waiting == 1
    clock.now = 1.5
    with data.open("a") as handle:
        handle.write("0.02 0.9\n")  # still being written: the settle time starts again
    assert watcher.poll() == []
    clock.now = 3.0
    assert watcher.poll() == []
    clock.now = 3.6
    assert watcher.poll() == [data]
    assert watcher.poll() == [data]  # until its rows are written
    watcher.mark_done(data)
    clock.now = 10.0
    assert watcher.poll() == [] and watcher.n_waiting == 0


def test_empty_files_wait_and_deleted_files_are_forgotten(tmp_path):
    clock = FakeClock()
    watcher = FolderWatcher(tmp_path, pattern="*.dat", settle=0.5, clock=clock, done=[str(tmp_path / "old.dat")])
    (tmp_path / "old.dat").write_text("0.01 1\n")
    (tmp_path / "empty.dat").write_text("")
    (tmp_path / "gone.dat").write_text("0.01 1\n")
    (tmp_path / "skipped.txt").write_text("0.01 1\n")
    assert watcher.poll() == []
    (tmp_path / "gone.dat").unlink()
    clock.now = 5.0
    assert watcher.poll() == [] and watcher.n_waiting == 1  # only the empty file, still waiting
    (tmp_path / "empty.dat").write_text("0.01 1\n")
    assert watcher.poll() == []
    clock.now = 6.0
    assert watcher.poll() == [tmp_path / "empty.dat"]


@pytest.fixture(scope="module")
def model(make_test_model) -> Path:
    return make_test_model("heads.onnx", n_samples=4, seed=3)


def rows_of(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames in (None, list(CSV_COLUMNS))
    return rows


def start_watch(folder: Path, out: Path, model: Path, log: Path, *extra: str) -> subprocess.Popen:
    with log.open("w") as err:
        proc = subprocess.Popen(
            [EXE, "watch", str(folder), "--output", str(out), "--model", str(model), "--interval", "0.2", "--settle", "1.5", *extra],
            stdout=subprocess.DEVNULL, stderr=err, text=True,
        )
    deadline = time.monotonic() + 60
    while "watching" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return proc


def wait_for_rows(out: Path, count: int, proc: subprocess.Popen) -> list[dict]:
    deadline = time.monotonic() + 60
    while len(rows := rows_of(out)) < count:
        assert proc.poll() is None and time.monotonic() < deadline, f"{len(rows)} rows"
        time.sleep(0.1)
    return rows


def stop(proc: subprocess.Popen, sig: int) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=30)


@pytest.mark.slow
def test_watch_classifies_new_files_and_restarts_without_duplicates(model, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    out = folder / "results.csv"  # inside the watched folder: must not classify itself
    log = tmp_path / "watch.log"
    proc = start_watch(folder, out, model, log)
    try:
        for name in ("apoferritin.txt", "latex_smeared.xml", "33837rear_1D_1.75_16.5_NXcanSAS.h5"):
            shutil.copyfile(ONE_D / name, folder / name)
        (folder / "garbage.dat").write_bytes(os.urandom(3000))
        slow = (ONE_D / "conalbumin.txt").read_bytes()
        with (folder / "slow.txt").open("wb") as handle:  # an instrument still writing: half, pause, rest
            handle.write(slow[: len(slow) // 2])
            handle.flush()
            time.sleep(0.6)
            handle.write(slow[len(slow) // 2:])
        rows = wait_for_rows(out, 6, proc)
        time.sleep(0.5)  # nothing more may come
        assert stop(proc, signal.SIGINT) == 0
    finally:
        proc.kill()
    summary = log.read_text().splitlines()[-1]
    assert summary.startswith(f"sasview-bnn: stopped watching {folder} (SIGINT): 5 new file(s), 6 curve(s) written (1 refused)")
    rows = rows_of(out)
    by_file = {}
    for row in rows:
        by_file.setdefault(Path(row["file"]).name, []).append(row)
    assert sorted(by_file) == ["33837rear_1D_1.75_16.5_NXcanSAS.h5", "apoferritin.txt", "garbage.dat", "latex_smeared.xml", "slow.txt"]
    assert len(by_file["latex_smeared.xml"]) == 2 and all(r["file"] == str(folder / Path(r["file"]).name) for r in rows)
    (garbage,) = by_file["garbage.dat"]
    assert garbage["status"] == "error" and garbage["message"]
    # the slowly written file was read whole: same verdict as the finished file
    reference = tmp_path / "conalbumin.csv"
    assert main(["classify", str(ONE_D / "conalbumin.txt"), "--model", str(model), "-o", str(reference)]) == 0
    (expected,) = rows_of(reference)
    (got,) = by_file["slow.txt"]
    assert {k: v for k, v in got.items() if k != "file"} == {k: v for k, v in expected.items() if k != "file"}
    assert sorted(p.name for p in folder.iterdir()) == sorted([*by_file, "results.csv"])  # lock file gone

    # restart: the old files are skipped, a new one is classified, SIGTERM stops cleanly
    proc = start_watch(folder, out, model, log)
    try:
        assert "5 file(s) already in the results" in log.read_text()
        shutil.copyfile(ONE_D / "sphere_80.txt", folder / "sphere_80.txt")
        wait_for_rows(out, 7, proc)
        time.sleep(0.5)
        assert stop(proc, signal.SIGTERM) == 0
    finally:
        proc.kill()
    assert "(SIGTERM): 1 new file(s), 1 curve(s) written (0 refused)" in log.read_text()
    rows = rows_of(out)
    keys = [(r["file"], r["dataset"]) for r in rows]
    assert len(rows) == 7 and len(set(keys)) == 7 and rows[-1]["file"] == str(folder / "sphere_80.txt")


@pytest.mark.slow
def test_watch_plots_one_png_per_curve_like_classify(model, tmp_path):
    folder, plots = tmp_path / "incoming", tmp_path / "plots"
    folder.mkdir()
    out = tmp_path / "results.csv"
    log = tmp_path / "watch.log"
    proc = start_watch(folder, out, model, log, "--plot", str(plots))
    try:
        shutil.copyfile(ONE_D / "apoferritin.txt", folder / "apoferritin.txt")
        wait_for_rows(out, 1, proc)
        shutil.copyfile(ONE_D / "latex_smeared.xml", folder / "latex_smeared.xml")  # two curves in one file
        wait_for_rows(out, 3, proc)
        (folder / "garbage.dat").write_bytes(os.urandom(3000))  # unreadable: a row, no plot
        wait_for_rows(out, 4, proc)
        assert stop(proc, signal.SIGINT) == 0
    finally:
        proc.kill()
    pngs = sorted(plots.glob("*.png"))
    assert [p.name for p in pngs] == [
        "0000_apoferritin.txt.png",
        "0001_latex_smeared.xml_latex_particles_0.5micron_diameter_in_D2O_Qdev.png",
        "0002_latex_smeared.xml_latex_particles_0.5micron_diameter_in_D2O_slit.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in pngs)
    # the renderer is classify's: same file for the same curve
    again = tmp_path / "classify_plots"
    assert main(["classify", str(folder / "apoferritin.txt"), "--model", str(model), "-o", str(tmp_path / "r.csv"), "--plot", str(again)]) == 0
    assert (again / "0000_apoferritin.txt.png").stat().st_size == pngs[0].stat().st_size


def test_watch_plot_without_matplotlib_says_how_to_fix_it(model, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["watch", str(tmp_path), "--model", str(model), "--plot", str(tmp_path / "plots")]) == 2
    assert "install matplotlib for --plot" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_watch_usage_errors(model, tmp_path, capsys):
    assert main(["watch", str(tmp_path / "missing"), "--model", str(model)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["watch", str(tmp_path), "--model", str(model), "-o", str(tmp_path / "r.json")]) == 2
    assert "use --output FILE.csv or FILE.jsonl" in capsys.readouterr().err
    assert main(["watch", str(tmp_path), "--model", str(model), "--interval", "0"]) == 2
    assert "must be more than zero seconds" in capsys.readouterr().err
