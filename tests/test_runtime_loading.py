"""Reading data files with sasdata into curves: real example data, multi-entry files, 2D, broken files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from sasview_bnn_plugin.loading import CurveLoader, find_data_files

EXAMPLES = Path(__import__("sasdata").__file__).parent / "example_data"
ONE_D = EXAMPLES / "1d_data"


@pytest.fixture(scope="module")
def loader() -> CurveLoader:
    return CurveLoader()


@pytest.mark.parametrize(
    "name, n_points, q_max",
    [
        ("apoferritin.txt", 395, 0.3995),  # ASCII, 4 columns
        ("ISIS_Polymer_Blend_TK49.xml", 102, 0.26875),  # CanSAS XML
        ("33837rear_1D_1.75_16.5_NXcanSAS.h5", 66, 0.6189),  # NXcanSAS HDF5
        ("Alumina_usaxs.csv", 112, 0.6758),  # CSV
        ("1umSlitSmearSphere.ABS", 150, 0.01),  # IGOR ABS
    ],
)
def test_real_example_files_load_one_curve_each(loader, name, n_points, q_max):
    (curve,) = loader.load(ONE_D / name)
    assert curve.error is None
    assert curve.q.shape == curve.intensity.shape == (n_points,)
    assert curve.q.max() == pytest.approx(q_max, rel=1e-3)
    assert curve.q_unit == "A^{-1}" and curve.source.endswith(name)


def test_a_file_with_several_1d_entries_gives_one_named_curve_each(loader):
    curves = loader.load(ONE_D / "latex_smeared.xml")
    assert len(curves) == 2
    assert [c.dataset for c in curves] == ["latex particles 0.5micron diameter in D2O Qdev", "latex particles 0.5micron diameter in D2O slit"]
    assert [c.q.size for c in curves] == [301, 82]


@pytest.mark.parametrize("name", ["P123_D2O_10_percent.dat", "33837rear_2D_1.75_16.5_NXcanSAS.h5"])
def test_2d_entries_are_refused_with_a_clear_message(loader, name):
    curves = loader.load(EXAMPLES / "2d_data" / name)
    assert curves and all(c.error and "2D data" in c.error and "1D curves" in c.error for c in curves)


def test_pdh_files_read_as_ascii_are_converted_from_inverse_nanometres(loader):
    (curve,) = loader.load(ONE_D / "Anton-Paar.pdh")
    assert curve.error is None and curve.q_unit == "1/nm"
    assert any("PDH" in note and "1/nm" in note for note in curve.notes)


def test_entries_with_equal_titles_get_distinct_dataset_names(loader, tmp_path):
    text = (ONE_D / "latex_smeared.xml").read_text(encoding="utf-8")
    same = tmp_path / "same_titles.xml"
    same.write_text(text.replace(" Qdev<", "<").replace(" slit<", "<"), encoding="utf-8")
    curves = loader.load(same)
    assert len(curves) == 2 and len({c.dataset for c in curves}) == 2
    assert all(c.dataset.endswith(("#1", "#2")) for c in curves)


def test_empty_missing_and_garbage_files_become_error_curves(loader, tmp_path, caplog):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("this is a letter to my aunt\nnot data\n")
    binary = tmp_path / "broken.h5"
    binary.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(200)))
    few = tmp_path / "few.txt"
    few.write_text("0.01 1\n0.02 2\n")
    with caplog.at_level(logging.DEBUG):
        outcomes = {p.name: loader.load(p) for p in (empty, garbage, binary, few, tmp_path / "absent.txt")}
    for name, curves in outcomes.items():
        assert len(curves) == 1 and curves[0].error, name
        assert curves[0].q.size == 0
    assert outcomes["empty.txt"][0].error == "the file is empty"
    assert "sasdata cannot read this file" in outcomes["garbage.txt"][0].error
    assert "does not exist" in outcomes["absent.txt"][0].error
    assert not [r for r in caplog.records if r.name.startswith("sasdata")], "sasdata logging leaked"


def test_find_data_files_expands_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    for rel in ["a.txt", "b.xml", "notes.docx", "sub/c.h5", ".hidden/d.txt"]:
        (tmp_path / rel).write_text("x")
    flat, missing = find_data_files([tmp_path, tmp_path / "nope.txt"])
    assert [p.name for p in flat] == ["a.txt", "b.xml"] and missing == [str(tmp_path / "nope.txt")]
    deep, _ = find_data_files([tmp_path], recursive=True)
    assert sorted(p.name for p in deep) == ["a.txt", "b.xml", "c.h5"]


def test_curves_from_example_files_carry_finite_uncertainties(loader):
    (curve,) = loader.load(ONE_D / "ISIS_Polymer_Blend_TK49.xml")
    assert curve.d_intensity is not None and np.isfinite(curve.d_intensity).all()
    assert curve.dq is not None and curve.dq.shape == curve.q.shape
