"""``sasview-bnn classify`` streams its rows: kill and resume, one writer, full disks.

Processes are killed for real (SIGKILL), the lock is held by another real
process, and full disks are real: the kernel's file-size limit
(RLIMIT_FSIZE), /dev/full, and a 16 KiB tmpfs in a private mount namespace
where the system allows one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sasview_bnn_plugin.cli import main
from sasview_bnn_plugin.core.result import CSV_COLUMNS
from sasview_bnn_plugin.io.result_stream import ResultsLock, ResultStream, read_written_rows

ONE_D = Path(__import__("sasdata").__file__).parent / "example_data" / "1d_data"
SOURCES = ("apoferritin.txt", "conalbumin.txt", "sphere_80.txt", "PolySpheres.txt", "ISIS_Polymer_Blend_TK49.xml", "latex_smeared.xml")
EXE = str(Path(sys.executable).with_name("sasview-bnn"))


@pytest.fixture(scope="module")
def model(make_test_model) -> Path:
    return make_test_model("heads.onnx", n_samples=4, seed=5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """180 real data files (6 sources x 30 copies): 210 curves."""
    data = tmp_path_factory.mktemp("data")
    for copy in range(30):
        for name in SOURCES:
            shutil.copyfile(ONE_D / name, data / f"{copy:02d}_{name}")
    return data


@pytest.fixture(scope="module")
def reference(model, folder, tmp_path_factory) -> list[dict]:
    """The rows of an uninterrupted run."""
    out = tmp_path_factory.mktemp("ref") / "ref.csv"
    assert main(["classify", str(folder), "--model", str(model), "-o", str(out)]) == 0
    return read_rows(out)


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == list(CSV_COLUMNS)
        return list(reader)


def assert_whole_rows(path: Path) -> int:
    """Every line of a CSV results file is a complete row; returns the number of rows."""
    text = path.read_text()
    assert text.endswith("\n")
    records = list(csv.reader(io.StringIO(text)))
    assert records[0] == list(CSV_COLUMNS)
    assert all(len(r) == len(CSV_COLUMNS) for r in records)
    return len(records) - 1


def _as_in_a_terminal() -> None:
    # A program started in the background by a non-interactive shell (`cmd &`, nohup, some CI runners) inherits
    # SIGINT ignored, and Python then never raises KeyboardInterrupt: give the child the disposition it has
    # when a user runs it in a terminal, where Ctrl-C is what these tests stand for.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def classify(*args: str, preexec_fn=None, **kwargs) -> subprocess.Popen:
    def setup() -> None:
        _as_in_a_terminal()
        if preexec_fn is not None:
            preexec_fn()

    return subprocess.Popen([EXE, "classify", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=setup, **kwargs)


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_one_row_per_curve(model, folder, reference, tmp_path):
    out = tmp_path / "results.csv"
    partial = tmp_path / "results.csv.partial"
    proc = classify(str(folder), "--model", str(model), "--batch-size", "2", "-o", str(out))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # rows are streamed: kill once some are on disk
        if partial.exists() and partial.read_bytes().count(b"\n") > 40:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "the run finished before it was killed"
    written = read_written_rows(partial, "csv")
    assert 40 <= written.n_rows < len(reference) and written.torn_bytes == 0

    resumed = classify(str(folder), "--model", str(model), "--resume", "-o", str(out))
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    rows = read_rows(out)
    assert [(r["file"], r["dataset"]) for r in rows] == [(r["file"], r["dataset"]) for r in reference]
    assert rows == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]  # no .partial, no .lock


def test_ctrl_c_keeps_whole_rows_and_says_how_to_resume(model, folder, tmp_path):
    out = tmp_path / "results.csv"
    partial = tmp_path / "results.csv.partial"
    proc = classify(str(folder), "--model", str(model), "--batch-size", "2", "-o", str(out))
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.read_bytes().count(b"\n") > 20) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert not out.exists(), "the run finished although Ctrl-C was sent mid-run"
    assert proc.returncode == 130, err
    n_rows = assert_whole_rows(partial)
    assert f"interrupted: {n_rows} row(s) kept in {partial}; rerun the same command with --resume to finish" in err, err[-400:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv.partial"]  # lock released and removed


def test_resume_drops_a_torn_last_row(model, folder, reference, tmp_path, capsys):
    files = sorted(folder.iterdir())[:12]
    out = tmp_path / "r.csv"
    assert main(["classify", *map(str, files), "--model", str(model), "-o", str(out)]) == 0
    complete = out.read_text()
    lines = complete.splitlines(keepends=True)
    torn = "".join(lines[:6]) + lines[6][:37]  # header, 5 rows and a third of a row
    out.unlink()
    (tmp_path / "r.csv.partial").write_text(torn)
    assert main(["classify", *map(str, files), "--model", str(model), "--resume", "-o", str(out)]) == 0
    assert f"dropped {len(lines[6][:37])} byte(s) of a half-written last row" in capsys.readouterr().err
    assert out.read_text() == complete


def test_resuming_a_finished_file_adds_only_the_new_curves(model, folder, tmp_path):
    files = sorted(folder.iterdir())
    out = tmp_path / "r.jsonl"
    assert main(["classify", *map(str, files[:6]), "--model", str(model), "-o", str(out)]) == 0
    first = out.read_text().splitlines()
    assert main(["classify", *map(str, files[:9]), "--model", str(model), "--resume", "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[: len(first)] == first
    keys = [(json.loads(x)["file"], json.loads(x)["dataset"]) for x in lines]
    assert len(keys) == len(set(keys)) == len(first) + 3  # three more files, one curve each


def test_json_is_one_document_and_not_resumable(model, folder, tmp_path, capsys):
    files = sorted(folder.iterdir())[:6]
    out = tmp_path / "r.json"
    assert main(["classify", *map(str, files), "--model", str(model), "-o", str(out), "--batch-size", "2"]) == 0
    payload = json.loads(out.read_text())
    assert payload["model"] == "heads" and len(payload["results"]) == 7
    assert main(["classify", *map(str, files), "--model", str(model), "-o", str(out), "--resume"]) == 2
    assert "a .json file is one document" in capsys.readouterr().err


def test_a_second_writer_fails_fast_naming_the_first(model, folder, tmp_path):
    out = tmp_path / "results.csv"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom sasview_bnn_plugin.io.result_stream import ResultsLock\n"
         "lock = ResultsLock(sys.argv[1]); lock.acquire(); print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = classify(str(sorted(folder.iterdir())[0]), "--model", str(model), "-o", str(out))
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2
        assert f"{out} is being written by another sasview-bnn process (pid {holder.pid})" in err
        assert not out.exists() and not (tmp_path / "results.csv.partial").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its stale lock file does not block the next run
    assert (tmp_path / "results.csv.lock").exists()
    assert main(["classify", str(sorted(folder.iterdir())[0]), "--model", str(model), "-o", str(out)]) == 0


def test_the_lock_file_is_replaced_safely_between_holders(tmp_path):
    first = ResultsLock(tmp_path / "r.csv")
    first.acquire()
    second = ResultsLock(tmp_path / "r.csv")
    with pytest.raises(Exception, match=rf"pid {os.getpid()}"):
        second.acquire()
    first.release()
    assert not first.path.exists()
    with second:
        assert second.path.read_text() == f"{os.getpid()}\n"
    assert not second.path.exists()


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_keeps_whole_rows_and_resume_completes(model, folder, reference, tmp_path):
    files = sorted(folder.iterdir())[:30]
    out = tmp_path / "r.csv"
    limit = 6000  # the kernel refuses writes beyond 6000 bytes (EFBIG): a disk that fills mid-run
    proc = classify(*map(str, files), "--model", str(model), "--batch-size", "3", "-o", str(out), preexec_fn=_limit_file_size(limit))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    partial = tmp_path / "r.csv.partial"
    assert "has reached the largest file size this system allows" in err and "stay intact" in err and "--resume" in err
    n_rows = assert_whole_rows(partial)
    assert 0 < n_rows and partial.stat().st_size <= limit and not out.exists()

    assert main(["classify", *map(str, files), "--model", str(model), "--resume", "-o", str(out)]) == 0
    rows = read_rows(out)
    keys = [(r["file"], r["dataset"]) for r in rows]
    assert rows == [r for r in reference if (r["file"], r["dataset"]) in set(keys)] and len(keys) == 35


def test_a_full_tmpfs_gives_a_clear_message(model, folder, tmp_path):
    """ENOSPC from a real 16 KiB tmpfs, mounted in a private user and mount namespace."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("this system does not allow a private mount namespace (unshare -rm)")
    disk = tmp_path / "disk"
    disk.mkdir()
    files = " ".join(str(f) for f in sorted(folder.iterdir())[:60])
    script = (
        f"mount -t tmpfs -o size=16k tmpfs {disk} || exit 99; "
        f"{EXE} classify {files} --model {model} --batch-size 4 -o {disk}/r.csv; rc=$?; "
        f"cp {disk}/r.csv.partial {tmp_path}/kept.csv; exit $rc"
    )
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    if done.returncode == 99:
        pytest.skip("cannot mount a tmpfs here")
    assert done.returncode == 1, done.stderr
    assert f"the disk holding {disk}/r.csv.partial is full" in done.stderr
    assert 0 < assert_whole_rows(tmp_path / "kept.csv") < 70


def test_standard_output_on_a_full_device(model, folder):
    with open("/dev/full", "w") as full:
        done = subprocess.run([EXE, "classify", str(sorted(folder.iterdir())[0]), "--model", str(model)], stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == "sasview-bnn: error: the disk holding standard output is full (no space left on device)\n"


def test_an_unwritable_output_is_refused_before_classifying(model, folder, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    assert main(["classify", str(sorted(folder.iterdir())[0]), "--model", str(model), "-o", str(blocker / "r.csv")]) == 2
    assert "its folder does not exist or is not a folder" in capsys.readouterr().err


def test_errors_before_writing_name_the_output_not_its_lock_file(model, folder, tmp_path, capsys):
    out = tmp_path / "missing" / "r.csv"
    assert main(["classify", str(sorted(folder.iterdir())[0]), "--model", str(model), "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"sasview-bnn: error: cannot create {out}: its folder does not exist or is not a folder\n"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_in_a_folder_that_takes_no_files_cannot_be_written(model, folder, capsys):
    # /proc is a folder, so "its folder does not exist or is not a folder" would be wrong
    assert main(["classify", str(sorted(folder.iterdir())[0]), "--model", str(model), "-o", "/proc/r.csv"]) == 2
    assert capsys.readouterr().err == (
        "sasview-bnn: error: cannot write /proc/r.csv: no new file can be created in /proc; choose another folder\n"
    )


def test_resume_refuses_a_file_it_did_not_write(model, folder, tmp_path, capsys):
    out = tmp_path / "r.csv"
    out.write_text("a,b,c\n1,2,3\n")
    assert main(["classify", str(sorted(folder.iterdir())[0]), "--model", str(model), "--resume", "-o", str(out)]) == 2
    assert "its first line is not the sasview-bnn CSV header" in capsys.readouterr().err
    assert out.read_text() == "a,b,c\n1,2,3\n" and sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]
