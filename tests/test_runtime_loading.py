"""Reading data files with sasdata into curves: real example data, multi-entry files, 2D, broken files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from sasview_bnn_plugin.io.loading import CurveLoader, find_data_files

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


# -- iter_curves: lazily, one curve at a time -------------------------------------------------

ALL_EXAMPLES = sorted(p for p in EXAMPLES.rglob("*") if p.is_file())
#: sasdata needs ~10 s for this 240-entry NXcanSAS file (the comparison reads it twice).
BIG_EXAMPLES = {"VTMA.h5"}


def assert_same_curves(expected, got):
    assert len(got) == len(expected)
    for a, b in zip(expected, got):
        for name in ("q", "intensity", "d_intensity", "dq"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None), name
            if x is not None:
                assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), (a.dataset, name)
        for name in ("q_unit", "source", "dataset", "notes", "error"):
            assert getattr(a, name) == getattr(b, name), name


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.name in BIG_EXAMPLES else p for p in ALL_EXAMPLES],
    ids=[str(p.relative_to(EXAMPLES)) for p in ALL_EXAMPLES],
)
def test_iter_curves_gives_exactly_the_curves_of_sasdata_on_every_example_file(loader, path):
    assert_same_curves(loader.read_with_sasdata(path), list(loader.iter_curves(path)))


def write_multi_entry_nxcansas(path: Path, n_entries: int, n_points: int, q_unit: str = "1/angstrom", titles=None, compression=None) -> None:
    """A NXcanSAS file in the layout of SasView's example data: one SASentry (with one SASdata) per curve."""
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        for k in range(n_entries):
            entry = h5.create_group(f"entry_{k:04d}")
            entry.attrs.update({"NX_class": "NXentry", "canSAS_class": "SASentry", "version": "1.0"})
            entry["definition"] = "NXcanSAS"
            entry["title"] = titles[k] if titles else f"sample {k}"
            data = entry.create_group("sasdata")
            data.attrs.update({"NX_class": "NXdata", "canSAS_class": "SASdata", "signal": "I", "I_axes": "Q", "Q_indices": "0"})
            q = np.geomspace(1e-3, 0.5, n_points)[::-1]  # stored descending: the reader must sort
            intensity = 1.0 / (1.0 + (q * (20 + k)) ** 2) + rng.normal(0, 1e-3, n_points)
            for name, values, unit in (("I", intensity, "1/cm"), ("Idev", np.full(n_points, 1e-3), "1/cm"), ("Q", q, q_unit), ("Qdev", 0.05 * q, q_unit)):
                data.create_dataset(name, data=values, compression=compression, chunks=(n_points,) if compression else None)
                if unit is not None:
                    data[name].attrs["units"] = unit
            data["I"].attrs["uncertainties"] = "Idev"
            data["Q"].attrs["resolutions"] = "Qdev"


@pytest.mark.slow
def test_iter_curves_reads_a_many_entry_nxcansas_file_one_entry_at_a_time(loader, tmp_path):
    import tracemalloc

    path = tmp_path / "many.h5"
    n_entries, n_points = 60, 4000  # 60 curves of 4 arrays of 32 kB: 7.7 MB in all
    write_multi_entry_nxcansas(path, n_entries, n_points, q_unit="1/nm")
    tracemalloc.start()
    try:
        seen = 0
        for curve in loader.iter_curves(path):
            assert curve.error is None and curve.q.size == n_points
            assert curve.q_unit == "A^{-1}" and curve.q.max() == pytest.approx(0.05)  # converted from 1/nm
            assert np.all(np.diff(curve.q) > 0) and curve.dataset == f"sample {seen}"
            seen += 1
            del curve
        _, lazy_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        all_at_once = loader.read_with_sasdata(path)
        _, load_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == n_entries
    total = n_entries * 4 * n_points * 8
    assert lazy_peak < 0.15 * total, (lazy_peak, total)
    assert load_peak > total  # sasdata holds every entry: the lazy path is what bounds memory
    assert_same_curves(all_at_once, list(loader.iter_curves(path)))


def test_iter_curves_names_entries_like_load_and_survives_a_damaged_entry(loader, tmp_path):
    import h5py

    path = tmp_path / "damaged.h5"
    write_multi_entry_nxcansas(path, 4, 200, titles=["same", "", "same", "other"], compression="gzip")
    with h5py.File(path, "r") as h5:
        offset = h5["entry_0001/sasdata/I"].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as f:  # overwrite the compressed bytes of entry 2's intensities
        f.seek(offset)
        f.write(b"\x00garbage" * 8)
    curves = list(loader.iter_curves(path))
    assert [c.dataset for c in curves] == ["same #1", "entry 2", "same #3", "other"]
    assert [c.error is None for c in curves] == [True, False, True, True]
    assert "this entry of the HDF5 file cannot be read" in curves[1].error
    assert curves[3].q.size == 200


def test_iter_curves_of_missing_and_non_hdf5_files_match_sasdata(loader, tmp_path):
    fake = tmp_path / "fake.h5"
    fake.write_text("0.01 1\n0.02 2\n")
    for path in (tmp_path / "absent.h5", fake):
        assert_same_curves(loader.read_with_sasdata(path), list(loader.iter_curves(path)))


@pytest.mark.parametrize(
    "unit, q_unit, q_max",
    [("1/nm", "A^{-1}", 0.05), (None, None, 0.5), ("furlongs", "furlongs", 0.5)],
)
def test_an_nxcansas_entry_with_a_missing_or_unknown_q_unit_is_read_not_the_whole_file_refused(loader, tmp_path, unit, q_unit, q_max):
    """sasdata refuses the whole file; here the entry keeps its unit and the preprocessing decides."""
    path = tmp_path / "units.h5"
    write_multi_entry_nxcansas(path, 2, 50, q_unit=unit)
    curves = list(loader.iter_curves(path))
    assert [c.q_unit for c in curves] == [q_unit, q_unit]
    assert all(c.error is None and c.q.max() == pytest.approx(q_max) for c in curves)
    if unit != "1/nm":
        (whole,) = loader.read_with_sasdata(path)
        assert whole.error and "sasdata cannot read this file" in whole.error


def test_unreadable_files_get_messages_for_a_scientist(loader, tmp_path):
    data = (ONE_D / "33837rear_1D_1.75_16.5_NXcanSAS.h5").read_bytes()
    cases = {
        "cut.h5": (data[: len(data) // 2], "this HDF5 file is truncated"),
        "text.h5": (b"0.01 1 0.1\n" * 3, "not an HDF5 file although its name ends in .h5"),
        "cut.xml": ((ONE_D / "ISIS_Polymer_Blend_TK49.xml").read_bytes()[:300], "not in the expected format (CanSAS XML)"),
        "binary.txt": (bytes(range(256)) * 4, "not in the expected format (ASCII columns"),
    }
    for name, (content, fragment) in cases.items():
        (tmp_path / name).write_bytes(content)
        (curve,) = loader.load(tmp_path / name)
        assert fragment in curve.error, (name, curve.error)
        assert "NoneType" not in curve.error and "synchronously" not in curve.error


def test_a_sans_file_without_a_data_section_is_refused_instead_of_hanging(loader, tmp_path):
    """sasdata's DANSE reader loops forever when no line holds "DATA:" (found by tests/test_fuzz_pipeline.py)."""
    import signal

    path = tmp_path / "noise.sans"
    path.write_bytes(b"FORMATVERSION:1.0\nWAVELENGTH:6\n" + bytes(range(1, 200)))

    def hang(signum, frame):
        raise TimeoutError("loading a .sans file without DATA: hangs")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        (curve,) = loader.load(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "no DATA: section" in curve.error
