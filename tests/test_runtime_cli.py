"""The ``sasview-bnn`` command line: output formats, atomic writes, exit codes, plots, plugins."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onnx_test_models import write_truncated_model
from sasview_bnn_plugin.io import output as output_module
from sasview_bnn_plugin.cli import main
from sasview_bnn_plugin.model.catalog import shipped_model_files
from sasview_bnn_plugin.core.result import CSV_COLUMNS
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES

ONE_D = Path(__import__("sasdata").__file__).parent / "example_data" / "1d_data"
TWO_D = ONE_D.parent / "2d_data"
GOOD_FILES = [ONE_D / n for n in ("apoferritin.txt", "ISIS_Polymer_Blend_TK49.xml", "33837rear_1D_1.75_16.5_NXcanSAS.h5", "Anton-Paar.pdh")]


@pytest.fixture(scope="module")
def model(make_test_model) -> Path:
    return make_test_model("heads.onnx", n_samples=4, seed=11)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).with_name("sasview-bnn")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_csv_has_the_documented_columns_and_one_row_per_curve(model, tmp_path, capsys):
    out = tmp_path / "r.csv"
    code = main(["classify", *map(str, GOOD_FILES), str(ONE_D / "latex_smeared.xml"), "--model", str(model), "-o", str(out)])
    assert code == 0
    with out.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    expected = ["file", "dataset", "label", "confidence", "anomaly_probability", "entropy", "mutual_information",
                "novelty_score", "is_novel", "status", "message"] + [f"p_{c}" for c in CLASS_NAMES]
    # The columns of the optional model outputs come after the original ones; a model without them leaves them empty.
    appended = ["anomalies_present", "prediction_set", "set_level", "novelty_p_value"] + [f"p_present_{c}" for c in CLASS_NAMES[1:]]
    # Then the unit q was read in (another appended column).
    assert reader.fieldnames == expected + appended + ["q_unit_used"] == list(CSV_COLUMNS)
    assert all(row[c] == "" for row in rows for c in appended)
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    assert [r["dataset"] for r in rows if r["file"].endswith("latex_smeared.xml")] == [
        "latex particles 0.5micron diameter in D2O Qdev", "latex particles 0.5micron diameter in D2O slit"]
    for row in rows:
        probs = [float(row[f"p_{c}"]) for c in CLASS_NAMES]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert row["label"] in CLASS_NAMES and float(row["confidence"]) == pytest.approx(max(probs), abs=1e-5)
        assert float(row["anomaly_probability"]) == pytest.approx(1 - probs[0], abs=1e-5)
    (pdh,) = [r for r in rows if r["file"].endswith(".pdh")]
    assert "1/nm" in pdh["message"]


def test_json_carries_the_csv_fields_plus_spreads(model, tmp_path):
    out = tmp_path / "r.json"
    assert main(["classify", str(GOOD_FILES[0]), "--model", str(model), "-o", str(out), "--novelty-threshold", "0"]) == 0
    payload = json.loads(out.read_text())
    (result,) = payload["results"]
    assert set(CSV_COLUMNS) <= set(result)
    assert result["is_novel"] is True and result["novelty_threshold"] == 0
    assert set(result["probability_std"]) == set(CLASS_NAMES)
    low, high = result["probability_interval_90"]["clean"]
    assert low <= result["p_clean"] <= high
    assert payload["model"] == "heads" and payload["provider"] == "cpu"


def test_refused_curves_keep_their_rows_and_exit_1(model, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = tmp_path / "r.csv"
    files = [GOOD_FILES[0], empty, TWO_D / "P123_D2O_10_percent.dat", ONE_D / "cyl_400_20.txt", GOOD_FILES[1]]
    code = main(["classify", *map(str, files), "--model", str(model), "-o", str(out)])
    assert code == 1
    rows = list(csv.DictReader(out.open(newline="")))
    assert [r["status"] for r in rows] == ["ok", "error", "error", "error", "ok"]
    assert rows[1]["message"] == "the file is empty"
    assert "2D data" in rows[2]["message"]
    assert "at least 30 are needed" in rows[3]["message"]
    assert all(rows[k]["label"] == "" and rows[k]["p_clean"] == "" for k in (1, 2, 3))
    assert "3 of 5 curve(s) could not be classified" in capsys.readouterr().err


def test_a_file_output_says_how_many_rows_went_where(model, tmp_path, capsys):
    out = tmp_path / "r.csv"
    files = [str(GOOD_FILES[0]), str(ONE_D / "cyl_400_20.txt")]
    assert main(["classify", files[0], "--model", str(model), "-o", str(out)]) == 0
    assert capsys.readouterr().err == f"sasview-bnn: 1 row written to {out} (0 refused)\n"
    assert main(["classify", *files, "--model", str(model), "-o", str(out), "--resume"]) == 1
    assert f"sasview-bnn: 2 rows in {out} (1 new, 1 kept from before; 1 refused)\n" in capsys.readouterr().err
    assert main(["classify", *files, "--model", str(model), "-o", str(out)]) == 1
    assert f"sasview-bnn: 2 rows written to {out} (1 refused)\n" in capsys.readouterr().err
    assert main(["classify", files[0], "--model", str(model)]) == 0  # standard output: the rows are the answer
    assert capsys.readouterr().err == ""


def test_no_command_lists_every_command_with_one_line(capsys):
    from sasview_bnn_plugin.cli import COMMANDS

    assert main([]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "sasview-bnn: error: a command is needed, one of:"
    assert [line.split()[0] for line in lines[1:-1]] == list(COMMANDS)
    assert all(len(line.split()) > 2 for line in lines[1:-1])  # each with its help
    assert lines[-1] == "run 'sasview-bnn COMMAND --help' for the options of one"


def test_gui_without_sasview_shows_the_install_from_a_clone(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sas", None)
    monkeypatch.setitem(sys.modules, "sas.cli", None)
    assert main(["gui"]) == 2
    assert capsys.readouterr().err == (
        'sasview-bnn gui: error: SasView is not installed; install the [gui] extra: in your sasview-bnn clone, '
        'run pip install -e ".[gui]"\n'
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["classify", "/no/such/file.txt"], "no such file or folder"),
        (["classify", str(GOOD_FILES[0]), "--provider", "gpu"], "invalid choice"),
        (["classify", str(GOOD_FILES[0]), "--batch-size", "0"], "must be at least 1"),
        (["classify", str(GOOD_FILES[0]), "-o", "results.xlsx"], "must end in .csv, .jsonl or .json"),
        (["classify", str(GOOD_FILES[0]), "--model", "no-such-model"], "no model is named 'no-such-model'"),
        (["classify", str(GOOD_FILES[0]), "--model", "/tmp/missing-model.onnx"], "does not exist"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(model, args, fragment, capsys):
    if "--model" not in args and args[0] == "classify":
        args = [*args, "--model", str(model)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and err.startswith("sasview-bnn: error:")


def test_a_damaged_model_is_refused_before_classifying_and_the_old_output_survives(tmp_path, capsys):
    broken = write_truncated_model(tmp_path / "broken.onnx", 0.6)
    out = tmp_path / "r.csv"
    out.write_text("previous results\n")
    assert main(["classify", str(GOOD_FILES[0]), "--model", str(broken), "-o", str(out)]) == 2
    assert f"the model file {broken} is damaged or not an ONNX model" in capsys.readouterr().err
    assert out.read_text() == "previous results\n"


def test_output_is_replaced_atomically(model, tmp_path, monkeypatch):
    out = tmp_path / "r.csv"
    out.write_text("previous results\n")
    assert main(["classify", str(GOOD_FILES[0]), "--model", str(model), "-o", str(out)]) == 0
    assert out.read_text().startswith("file,dataset,label")
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]  # no temporary file left

    def rename_fails(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(output_module.os, "replace", rename_fails)
    before = out.read_text()
    with pytest.raises(OSError):
        output_module.write_atomically(out, "half-written")
    assert out.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_plots_are_written_per_curve(model, tmp_path):
    plots = tmp_path / "plots"
    code = main(["classify", str(GOOD_FILES[0]), str(ONE_D / "cyl_400_20.txt"), "--model", str(model), "-o", str(tmp_path / "r.csv"), "--plot", str(plots)])
    assert code == 1
    pngs = sorted(plots.glob("*.png"))
    assert [p.name for p in pngs] == ["0000_apoferritin.txt.png", "0001_cyl_400_20.txt.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in pngs)


def test_plot_without_matplotlib_says_how_to_fix_it(model, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["classify", str(GOOD_FILES[0]), "--model", str(model), "--plot", "/tmp/never"]) == 2
    assert "install matplotlib for --plot" in capsys.readouterr().err


def test_folders_show_progress_on_stderr_and_csv_on_stdout(model, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("apoferritin.txt", "conalbumin.txt", "sphere_80.txt", "PolySpheres.txt", "98929.txt", "ISIS_83404.TXT"):
        (folder / name).write_bytes((ONE_D / name).read_bytes())
    done = run_cli("classify", str(folder), "--model", str(model), "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("file,dataset,label") and len(lines) == 7
    assert "classifying" in done.stderr and "6/6" in done.stderr


def test_default_model_lookup(tmp_path):
    done = run_cli("classify", str(GOOD_FILES[0]))
    if shipped_model_files():
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 2
        assert "no model is shipped with this installation yet; pass --model FILE" in done.stderr


def test_models_lists_the_example_plugin_and_its_model_classifies_into_the_sink(tmp_path):
    listing = run_cli("models")
    assert listing.returncode == 0
    assert "example-linear-heads  [example]" in listing.stdout and "n_samples: 3" in listing.stdout
    sink = tmp_path / "sink.jsonl"
    out = tmp_path / "r.json"
    files = [GOOD_FILES[0], GOOD_FILES[2], ONE_D / "cyl_400_20.txt"]
    done = run_cli("classify", *map(str, files), "--model", "example-linear-heads", "-o", str(out), env={"SASVIEW_BNN_EXAMPLE_SINK": str(sink)})
    assert done.returncode == 1, done.stderr
    written = json.loads(out.read_text())["results"]
    received = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [r["file"] for r in received] == [r["file"] for r in written] == list(map(str, files))
    assert [r["status"] for r in received] == ["ok", "ok", "error"]
    assert all(r["model"] == "example-linear-heads" and r["n_samples"] in (3, 0) for r in received)


def test_models_labels_the_two_validation_counts(capsys):
    from sasview_bnn_plugin.cli.models import count_labels

    assert count_labels("training_data", '{"n_train": 90, "n_validation": 10}') == [
        "n_train 90: training curves", "n_validation 10: validation curves in training (held out of the fit)"]
    metrics = count_labels("metrics", '{"validation": {}, "n_validation": 8, "n_calibration": 4}')
    assert [line.split(":")[0] for line in metrics] == ["n_validation 8", "n_calibration 4"]
    assert "metrics were measured on" in metrics[0] and "calibration curves" in metrics[1]
    assert count_labels("metrics", "not json") == count_labels("n_samples", "16") == []
    if not shipped_model_files():
        return
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for key, label in (("metrics", "metrics were measured on"), ("training_data", "validation curves in training")):
        at = next(k for k, line in enumerate(lines) if line.startswith(f"    {key}: ") and '"n_validation"' in line)
        below = [line for line in lines[at + 1:at + 4] if line.startswith("        ")]  # labels right below their line
        assert any(line.startswith("        n_validation ") and label in line for line in below), lines[at:at + 4]


def test_models_json_lists_cards(capsys):
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    names = [m["name"] for m in listing]
    assert len(names) == len(set(names))
    assert all({"name", "path", "from", "card"} <= set(m) for m in listing)
    assert all(Path(m["path"]).is_file() for m in listing)
