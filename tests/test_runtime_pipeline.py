"""``classify --jobs N``: files read and preprocessed in worker processes give the rows of ``--jobs 1``.

Same rows in the same order (CSV and JSON), the same resume, the same errors,
a plugin with a raw-curve step still applied (in the main process), and the
worker processes gone when the run ends.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sasview_bnn_plugin.cli import main
from sasview_bnn_plugin.cli import pipeline
from sasview_bnn_plugin.io.loading import CurveLoader
from sasview_bnn_plugin.model.classifier import BNNClassifier, prepare_curves

ONE_D = Path(__import__("sasdata").__file__).parent / "example_data" / "1d_data"
SOURCES = ("apoferritin.txt", "sphere_80.txt", "PolySpheres.txt", "ISIS_Polymer_Blend_TK49.xml", "1umSlitSmearSphere.ABS", "cyl_400_20.txt")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Real files, generated plain ASCII (q in 1/nm by header, unit to decide), and unreadable files: > 2 chunks."""
    data = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(3)
    for copy in range(8):
        for name in SOURCES:
            shutil.copyfile(ONE_D / name, data / f"{copy:02d}_{name}")
    q = np.geomspace(0.003, 0.5, 50)
    for k in range(30):
        intensity = 100 / (1 + (q * rng.uniform(10, 200)) ** 2) + 0.01
        header = "# q (1/nm)  I  dI\n" if k % 3 == 0 else ""
        scale = 10 if k % 3 == 0 else 1
        rows = "".join(f"{a * scale:.6g} {b:.6g} {0.03 * b:.6g}\n" for a, b in zip(q, intensity))
        (data / f"gen{k:03d}.txt").write_text(header + rows)
    (data / "empty.txt").write_text("")
    (data / "words.dat").write_text("no numbers here\n")
    return data


def run(tmp_path: Path, name: str, *args: str) -> tuple[int, str]:
    out = tmp_path / name
    code = main(["classify", *args, "-o", str(out)])
    return code, out.read_text()


def test_jobs_give_the_rows_of_one_process(model_path, folder, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "CHUNK_FILES", 7)
    n_files = len(list(folder.iterdir()))
    assert n_files > 3 * 7
    one = run(tmp_path, "one.csv", str(folder), "--model", str(model_path), "--jobs", "1", "--batch-size", "5")
    two = run(tmp_path, "two.csv", str(folder), "--model", str(model_path), "--jobs", "2", "--batch-size", "5")
    assert one[0] == two[0] == 1  # the unreadable files are refused rows
    assert one[1] == two[1]
    assert one[1].count("\n") > n_files


def test_json_is_the_same_with_jobs(model_path, folder, tmp_path):
    files = sorted(folder.iterdir())
    one = run(tmp_path, "one.json", *map(str, files), "--model", str(model_path), "--jobs", "1")
    three = run(tmp_path, "three.json", *map(str, files), "--model", str(model_path), "--jobs", "3")
    assert len(files) > pipeline.CHUNK_FILES  # the pool is used
    assert json.loads(one[1]) == json.loads(three[1])


def test_resume_with_jobs(model_path, folder, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert main(["classify", str(folder), "--model", str(model_path), "--jobs", "1", "-o", str(out)]) == 1
    complete = out.read_text()
    lines = complete.splitlines(keepends=True)
    out.unlink()
    (tmp_path / "r.csv.partial").write_text("".join(lines[:20]))
    assert main(["classify", str(folder), "--model", str(model_path), "--jobs", "2", "--resume", "-o", str(out)]) == 1
    assert out.read_text() == complete
    assert "19 kept from before" in capsys.readouterr().err


def test_workers_prepare_the_inputs_of_the_classifier(model_path, folder):
    classifier = BNNClassifier(model_path)
    curves = [c for path in sorted(folder.iterdir()) for c in CurveLoader().load(path)]
    mine, theirs = classifier.prepare(curves), prepare_curves(curves, classifier.config, classifier.q_unit)
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
        assert len(a.readings) == len(b.readings)
        for (ra, ma), (rb, mb) in zip(a.readings, b.readings):
            assert ra == rb
            if hasattr(ma, "features"):
                np.testing.assert_array_equal(ma.features, mb.features)
            else:
                assert ma == mb


def test_the_batches_are_those_of_one_process(model_path, folder, monkeypatch):
    monkeypatch.setattr(pipeline, "CHUNK_FILES", 5)
    classifier = BNNClassifier(model_path)
    files = sorted(folder.iterdir())
    batches = list(pipeline.prepared_batches(classifier, files, 9, 2, set(), chunk_files=5))
    sizes = [len(p) for _, p in batches]
    assert all(s == 9 for s in sizes[:-1]) and 0 < sizes[-1] <= 9
    curves = [c for path in files for c in CurveLoader().load(path)]
    assert [(c.source, c.dataset) for b, _ in batches for c in b] == [(c.source, c.dataset) for c in curves]


def test_a_raw_curve_plugin_runs_in_the_main_process(model_path, folder, tmp_path, monkeypatch):
    from sasview_bnn_plugin import hookimpl
    from sasview_bnn_plugin.plugins.host import build_plugin_host

    class Halve:
        @hookimpl
        def sasview_bnn_prepare_raw_curve(self, curve):
            curve.intensity = curve.intensity * 0.5
            curve.notes.append("halved")
            return curve

    import sasview_bnn_plugin.cli.classify as classify_cli

    monkeypatch.setattr(classify_cli, "build_plugin_host", lambda: build_plugin_host(extra_plugins=[Halve()]))
    files = sorted(folder.iterdir())
    one = run(tmp_path, "one.csv", *map(str, files), "--model", str(model_path), "--jobs", "1")
    two = run(tmp_path, "two.csv", *map(str, files), "--model", str(model_path), "--jobs", "2")
    assert one == two and "halved" in one[1]


def test_the_default_jobs_read_plain_text_in_this_process_on_two_cores(monkeypatch, tmp_path):
    """On up to 2 cores an archive of .txt files is read in the main process (faster there than passing curves
    between processes, measured); any other file, or more cores, keeps one reading process per core."""
    txt, xml = [tmp_path / "a.txt", tmp_path / "b.TXT"], tmp_path / "c.xml"
    for cores, files, expected in [(2, txt, 1), (1, txt, 1), (2, [*txt, xml], 2), (2, [xml], 2), (8, txt, 8), (2, [], 2)]:
        monkeypatch.setattr(pipeline, "available_cores", lambda cores=cores: cores)
        assert pipeline.default_jobs(files) == expected, (cores, files)


def test_the_cli_runs_two_model_calls_at_once_with_the_cores_shared(monkeypatch):
    """``--model-streams`` defaults to 2 calls at once (1 on one core), each with the cores / 2 intra-op threads
    unless ``--threads`` is given; one stream keeps onnxruntime's own choice of threads."""
    import argparse

    from sasview_bnn_plugin.cli.classify import open_classifier

    seen = {}

    def fake_classifier(path, **kwargs):
        seen.update(kwargs)
        raise SystemExit  # the options are what is checked; no model needs to load

    monkeypatch.setattr("sasview_bnn_plugin.cli.classify.BNNClassifier", fake_classifier)
    base = dict(model=None, provider="cpu", novelty_threshold=None, batch_size=256, set_level=None, novelty_level=None,
                q_unit="auto", calibration=None)
    for cores, streams, threads, expected in [(2, None, None, (2, 1)), (1, None, None, (1, None)), (8, None, None, (2, 4)),
                                              (2, 3, None, (3, 1)), (2, None, 2, (2, 2)), (2, 1, None, (1, None))]:
        monkeypatch.setattr(pipeline, "available_cores", lambda cores=cores: cores)
        seen.clear()
        with pytest.raises(SystemExit):
            open_classifier(argparse.Namespace(**base, threads=threads, model_streams=streams))
        assert (seen["model_streams"], seen["intra_op_threads"]) == expected, (cores, streams, threads)
