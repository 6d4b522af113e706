"""Units never silently assumed: q without a unit is read by plausibility and the model, and every row says so.

The in-distribution check runs the shipped model (``onnx_models/sasview_bnn_vi16_1m.onnx``).
The curves are simulated here with sasmodels' sphere model (R = 65 Å).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from sasview_bnn_plugin.model.classifier import BNNClassifier
from sasview_bnn_plugin.cli import build_parser, main
from sasview_bnn_plugin.cli.classify import open_classifier
from sasview_bnn_plugin.cli.command_line import UsageError
from sasview_bnn_plugin.core.curve import Curve
from sasview_bnn_plugin.gui.settings import GuiSettings
from sasview_bnn_plugin.io.loading import CurveLoader, header_q_unit
from sasview_bnn_plugin.core.q_units import ModelVerdict, QUnitResolution, decide_q_unit, resolve_q_unit
from sasview_bnn_plugin.core.result import CSV_COLUMNS, CSV_COLUMNS_OPTIONAL, CSV_COLUMNS_V1

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "onnx_models" / "sasview_bnn_vi16_1m.onnx"
ONE_D = Path(__import__("sasdata").__file__).parent / "example_data" / "1d_data"
RADIUS = 65.0  # Å
NOTE_NM = "q unit not given in the file; read as 1/nm (q reaches 5, beyond any 1/Å small-angle range)"


def sphere(q_inverse_angstrom: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """I and dI of a dilute sphere (sasmodels), R = 65 Å, 2 % noise; q in 1/Å, shape (points,)."""
    from sasmodels.core import load_model
    from sasmodels.direct_model import call_kernel

    kernel = load_model("sphere").make_kernel([q_inverse_angstrom])
    intensity = call_kernel(kernel, {"radius": RADIUS, "scale": 0.01, "background": 0.001, "sld": 4.0, "sld_solvent": 1.0})
    d_i = 0.02 * intensity + 1e-4
    return intensity + np.random.default_rng(seed).normal(0.0, d_i), d_i


@pytest.fixture(scope="module")
def q_nm() -> np.ndarray:
    return np.geomspace(0.1, 5.0, 200)


@pytest.fixture(scope="module")
def sphere_files(tmp_path_factory, q_nm) -> dict[str, Path]:
    """The same sphere as unit-less ASCII (q in 1/nm, and q in 1/Å) and with a unit header."""
    folder = tmp_path_factory.mktemp("spheres")
    intensity, d_i = sphere(q_nm / 10)
    files = {"nm": folder / "sphere_nm.dat", "A": folder / "sphere_A.dat", "header_A": folder / "sphere_header_A.dat"}
    np.savetxt(files["nm"], np.column_stack([q_nm, intensity, d_i]))
    np.savetxt(files["A"], np.column_stack([q_nm / 10, intensity, d_i]))
    # q values of 1/nm data under a header saying 1/Å: the file's unit wins, however implausible
    np.savetxt(files["header_A"], np.column_stack([q_nm, intensity, d_i]), header="q (1/A)  I (1/cm)  dI (1/cm)")
    return files


@pytest.fixture(scope="module")
def shipped() -> BNNClassifier:
    return BNNClassifier(SHIPPED, provider="cpu", intra_op_threads=1)


def classify_rows(paths, tmp_path: Path, *options: str, name: str = "out.csv") -> tuple[list[str], list[dict]]:
    out = tmp_path / name
    code = main(["classify", *map(str, paths), "--model", str(SHIPPED), "--threads", "1", "-o", str(out), *options])
    assert code in (0, 1)
    if out.suffix == ".jsonl":
        return [], [json.loads(line) for line in out.read_text().splitlines()]
    with out.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def probabilities(row: dict) -> np.ndarray:
    from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES

    return np.array([float(row[f"p_{c}"]) for c in CLASS_NAMES])


# -- files without a unit --------------------------------------------------------------------------


def test_a_unitless_ascii_sphere_in_inverse_nanometres_is_read_as_nm(sphere_files, q_nm, shipped, tmp_path):
    header, (row,) = classify_rows([sphere_files["nm"]], tmp_path)
    assert row["status"] == "ok" and row["q_unit_used"] == "1/nm"
    assert NOTE_NM in row["message"]
    # exactly what the same curve gives with its unit stated
    intensity, d_i = sphere(q_nm / 10)
    stated = shipped.classify_curve(q_nm, intensity, d_i, q_unit="1/nm")
    np.testing.assert_allclose(probabilities(row), stated.probabilities, rtol=1e-4, atol=1e-6)
    assert header[-1] == "q_unit_used" and header[:-1] == list(CSV_COLUMNS_V1) + list(CSV_COLUMNS_OPTIONAL)


def test_the_same_sphere_with_q_in_inverse_angstrom_is_read_as_angstrom(sphere_files, tmp_path):
    _, rows = classify_rows([sphere_files["nm"], sphere_files["A"]], tmp_path)
    by_unit = {row["q_unit_used"]: row for row in rows}
    assert set(by_unit) == {"1/nm", "1/A"}
    row = by_unit["1/A"]
    assert row["file"].endswith("sphere_A.dat") and row["status"] == "ok"
    assert re.search(r"q unit not given in the file( and uncertain)?[:;(] ?.*read as 1/Å", row["message"])
    # the two files hold the same physical curve: read in the right unit each, they give the same answer
    np.testing.assert_allclose(probabilities(row), probabilities(by_unit["1/nm"]), rtol=1e-4, atol=1e-6)


def test_a_unit_given_by_the_file_is_never_changed(sphere_files, tmp_path):
    xml = tmp_path / "blend_q_times_10.xml"
    text = (ONE_D / "ISIS_Polymer_Blend_TK49.xml").read_text(encoding="utf-8")
    xml.write_text(re.sub(r'(<Q unit="1/A">)([^<]+)(</Q>)', lambda m: f"{m[1]}{float(m[2]) * 10:g}{m[3]}", text), encoding="utf-8")
    for options in ((), ("--q-unit", "1/nm")):
        _, rows = classify_rows([sphere_files["header_A"], xml], tmp_path, *options)
        assert [row["q_unit_used"] for row in rows] == ["1/A", "1/A"], options
        assert not any("q unit not given" in row["message"] or "as requested" in row["message"] for row in rows)
    (curve,) = CurveLoader().load(xml)
    assert curve.q.max() > 1.5 and curve.q_unit_source == "file"


def test_q_unit_option_forces_the_unit_of_files_without_one(sphere_files, tmp_path):
    _, (row,) = classify_rows([sphere_files["A"]], tmp_path, "--q-unit", "1/nm")
    assert row["q_unit_used"] == "1/nm" and "q unit not given in the file; read as 1/nm, as requested" in row["message"]
    _, (row,) = classify_rows([sphere_files["nm"]], tmp_path, "--q-unit", "1/A", name="forced.jsonl")
    assert row["q_unit_used"] == "1/A" and row["q_unit_source"] == "user" and row["q_unit_uncertain"] is False
    assert "read as 1/Å, as requested, although q reaches 5, beyond any 1/Å small-angle range" in row["message"]


def test_json_rows_carry_the_unit_its_source_and_whether_it_is_uncertain(sphere_files, tmp_path):
    _, rows = classify_rows([sphere_files["nm"], sphere_files["A"], sphere_files["header_A"]], tmp_path, name="r.jsonl")
    assert [(r["q_unit_used"], r["q_unit_source"]) for r in rows] == [("1/nm", "assumed"), ("1/A", "assumed"), ("1/A", "file")]
    assert rows[0]["q_unit_uncertain"] is False and NOTE_NM in rows[0]["notes"]
    assert all(set(CSV_COLUMNS) <= set(r) for r in rows)
    assert rows[1]["q_unit_uncertain"] == ("uncertain" in rows[1]["message"])


def test_jscatter_smeared_sphere_in_nm_is_never_read_as_angstrom_silently(tmp_path):
    # scripts/test.sh installs jscatter without its dependencies: its files are read, the package is never imported.
    spec = importlib.util.find_spec("jscatter")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("jscatter is not installed (scripts/test.sh installs it)")
    path = Path(spec.submodule_search_locations[0]) / "examples" / "exampleData" / "smearedSASdata.dat"
    assert path.is_file(), f"this jscatter has no {path.name}"
    _, (row,) = classify_rows([path], tmp_path)  # a 13 nm sphere, q in 1/nm up to 2
    assert row["status"] == "ok" and "q unit not given in the file" in row["message"]
    assert row["q_unit_used"] == "1/nm" or "uncertain" in row["message"]


def test_sasview_example_files_without_a_unit_say_which_unit_was_used(tmp_path):
    names = ["Anton-Paar.pdh", "apoferritin.txt", "sphere_80.txt", "Alumina_usaxs.csv", "ISIS_Polymer_Blend_TK49.xml"]
    _, rows = classify_rows([ONE_D / n for n in names], tmp_path)
    units = {Path(r["file"]).name: r["q_unit_used"] for r in rows}
    assert units == {"Anton-Paar.pdh": "1/nm", "apoferritin.txt": "1/A", "sphere_80.txt": "1/A", "Alumina_usaxs.csv": "1/A",
                     "ISIS_Polymer_Blend_TK49.xml": "1/A"}
    for row in rows:
        assert ("q unit not given in the file" in row["message"]) == (not row["file"].endswith(".xml")), row["file"]


# -- the Python API ----------------------------------------------------------------------------------


def test_classify_curve_without_a_unit_decides_and_with_one_obeys(shipped, q_nm):
    intensity, d_i = sphere(q_nm / 10)
    unknown = shipped.classify_curve(q_nm, intensity, d_i)
    assert unknown.q_unit_used == "1/nm" and unknown.q_unit_source == "assumed"
    assert "q unit not given; read as 1/nm (q reaches 5" in unknown.message
    stated = shipped.classify_curve(q_nm, intensity, d_i, q_unit="1/A")  # the caller said so: obeyed, no note
    assert stated.q_unit_used == "1/A" and stated.q_unit_source == "user" and "q unit" not in stated.message


def test_both_readings_of_an_ambiguous_curve_run_in_one_batch(shipped, q_nm, monkeypatch):
    intensity, d_i = sphere(q_nm / 10)
    chunks = []
    run = shipped._run_chunk
    monkeypatch.setattr(shipped, "_run_chunk", lambda chunk: chunks.append(len(chunk)) or run(chunk))
    result = shipped.classify_curve(q_nm / 10, intensity, d_i)  # q from 0.01 to 0.5: plausible in both units
    assert chunks == [2]
    assert result.q_unit_used == "1/A" and "q unit not given" in result.message and "novelty" in result.message


def test_the_q_unit_setting_applies_to_data1d_without_a_unit_only(q_nm):
    from sasdata.dataloader.data_info import Data1D

    intensity, d_i = sphere(q_nm / 10)
    clf = BNNClassifier(SHIPPED, provider="cpu", intra_op_threads=1, q_unit="1/nm")
    bare = Data1D(x=q_nm / 10, y=intensity, dy=d_i)  # no unit: read as the setting says
    ascii_read = Data1D(x=q_nm / 10, y=intensity, dy=d_i)
    ascii_read.xaxis("\\rm{Q}", "A^{-1}")
    ascii_read.meta_data["loader"] = "ASCII"  # sasdata's ASCII reader labels 1/Å without reading a unit
    given = Data1D(x=q_nm / 10, y=intensity, dy=d_i)
    given.xaxis("\\rm{Q}", "A^{-1}")  # a unit the data carry is never overridden
    results = clf.classify([bare, ascii_read, given])
    assert [r.q_unit_used for r in results] == ["1/nm", "1/nm", "1/A"]
    assert [r.q_unit_source for r in results] == ["user", "user", "file"]
    clf.q_unit = "auto"
    assert clf.classify([bare])[0].q_unit_source == "assumed"
    with pytest.raises(ValueError, match="auto, 1/A, 1/nm"):
        clf.q_unit = "furlongs"


def test_watch_takes_the_q_unit_option_and_passes_it_to_the_classifier():
    args = build_parser().parse_args(["watch", "somewhere", "--model", str(SHIPPED), "--provider", "cpu", "--q-unit", "1/nm"])
    assert args.q_unit == "1/nm"
    _, classifier, _ = open_classifier(args)
    assert classifier.q_unit == "1/nm"
    with pytest.raises(UsageError, match="expected auto, 1/A or 1/nm"):
        build_parser().parse_args(["watch", "somewhere", "--q-unit", "inch"])


def test_gui_setting_round_trips_and_falls_back_to_auto(tmp_path):
    path = tmp_path / "bnn.json"
    GuiSettings(q_unit="1/nm", path=path).save()
    assert GuiSettings.load(path).q_unit == "1/nm"
    assert GuiSettings.from_mapping({"q_unit": "inch"}).q_unit == "auto"
    assert GuiSettings.from_mapping({}).q_unit == "auto"
    with pytest.raises(ValueError):
        GuiSettings(q_unit="inch").validate()


# -- the loader: where the unit comes from ------------------------------------------------------------


def test_the_loader_tells_file_units_from_assumed_ones(sphere_files, tmp_path):
    loader = CurveLoader()
    (plain,) = loader.load(sphere_files["nm"])
    assert plain.q_unit_source == "assumed"  # sasdata labels it 1/Å without reading a unit
    (headed,) = loader.load(sphere_files["header_A"])
    assert headed.q_unit_source == "file" and headed.q_unit == "A^{-1}"
    nm_header = tmp_path / "nm_header.txt"
    nm_header.write_text("# Q [nm^-1]   I [a.u.]   dI\n" + sphere_files["nm"].read_text())
    (curve,) = loader.load(nm_header)
    assert curve.q_unit_source == "file" and curve.q_unit == "1/nm"
    (pdh,) = loader.load(ONE_D / "Anton-Paar.pdh")
    assert pdh.q_unit_source == "assumed" and pdh.q_unit == "1/nm"  # expected for PDH, not read from it
    (xml,) = loader.load(ONE_D / "ISIS_Polymer_Blend_TK49.xml")
    assert xml.q_unit_source == "file"
    assert Curve(np.ones(3), np.ones(3)).q_unit_source == "assumed" and Curve(np.ones(3), np.ones(3), q_unit="1/nm").q_unit_source == "file"


@pytest.mark.parametrize(
    "header, unit",
    [
        ("# q (1/A)  I (1/cm)", "1/A"),
        ("Q [nm^-1]   I [a.u.]", "1/nm"),
        ("q(nm-1) I(q)", "1/nm"),
        ("The 6 columns are | Q (1/A) | I(Q) (1/cm) |", "1/A"),
        ("# q / Å^-1", "1/A"),
        ("#    Q             counts           error          sigmaQ", None),
        ("Sv = 6e-5 1/A, a sphere of 100nm", None),  # an inverse length, but not the unit of q
        ("# q in 1/nm; multiply by 0.1 for q in 1/A", None),  # both units named: no decision
    ],
)
def test_header_units(tmp_path, header, unit):
    path = tmp_path / "h.txt"
    path.write_text(header + "\n" + "\n".join(f"{0.01 * k} {1.0 / k}" for k in range(1, 40)) + "\n")
    assert header_q_unit(path) == unit


# -- the decision itself -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "q, candidates, reason",
    [
        (np.geomspace(0.1, 5, 50), ("1/nm",), "q reaches 5, beyond any 1/Å small-angle range"),
        (np.geomspace(1e-3, 0.3, 50), ("1/A",), "reached only by ultra-small-angle instruments"),
        (np.geomspace(5e-5, 0.01, 50), ("1/A",), "below any instrument's reach"),
        (np.geomspace(0.01, 0.5, 50), ("1/A", "1/nm"), ""),
        (np.linspace(-0.1, 0.5, 200), ("1/A", "1/nm"), ""),  # through the beam centre: the lowest q says nothing
        (np.geomspace(0.1, 45, 50), ("1/A", "1/nm"), "even in 1/nm"),
        (np.geomspace(1e-3, 3, 50), ("1/A", "1/nm"), "unusual in either unit"),
        (np.full(50, np.nan), ("1/A",), ""),
    ],
)
def test_resolve_q_unit_by_plausibility(q, candidates, reason):
    resolution = resolve_q_unit(q, np.ones_like(q))
    assert resolution.candidates == candidates
    assert reason in resolution.reason
    preferring_nm = resolve_q_unit(q, None, preferred="1/nm").candidates
    if len(candidates) > 1:
        assert preferring_nm == ("1/nm", "1/A")  # the preferred unit comes first when the model must decide
    elif np.isfinite(q).any():
        assert preferring_nm == candidates  # the q range decides, whatever the preference


BOTH = QUnitResolution(("1/A", "1/nm"))


def test_the_model_check_switches_only_when_the_preferred_reading_is_novel_and_the_other_is_not():
    decision = decide_q_unit(BOTH, {"1/A": ModelVerdict(4.1, True, "clean"), "1/nm": ModelVerdict(0.8, False, "clean")}, "q unit not given")
    assert decision.unit == "1/nm" and not decision.uncertain
    assert decision.note == (
        "q unit not given; read as 1/nm: the model finds the curve in-distribution as 1/nm (novelty 0.8) and not as 1/Å (novelty 4.1)"
    )
    # in-distribution both ways: a lower score is no reason to leave 1/Å, and the unit is uncertain
    both_in = decide_q_unit(BOTH, {"1/A": ModelVerdict(1.15, False, "aggregation"), "1/nm": ModelVerdict(0.63, False, "aggregation")})
    assert both_in.unit == "1/A" and both_in.uncertain and "and uncertain" in both_in.note and "in-distribution both" in both_in.note


@pytest.mark.parametrize(
    "verdicts, unit, uncertain, words",
    [
        ({"1/A": ModelVerdict(0.3, False, "clean"), "1/nm": ModelVerdict(1.4, True, "ordered")}, "1/A", True, "different labels"),
        ({"1/A": ModelVerdict(1.3, True, "clean"), "1/nm": ModelVerdict(1.1, False, "clean")}, "1/nm", True, "scores are close"),
        ({"1/A": ModelVerdict(2.9, True, "clean"), "1/nm": ModelVerdict(1.5, True, "clean")}, "1/nm", True, "unlike its training data both"),
        ({"1/A": ModelVerdict(2.0, True, "clean"), "1/nm": ModelVerdict(1.8, True, "clean")}, "1/A", True, "unlike its training data both"),
        ({"1/A": "only 20 valid point(s)", "1/nm": ModelVerdict(2.0, True, "clean")}, "1/nm", False, "as 1/Å the curve cannot be classified (only 20"),
        ({"1/A": "no", "1/nm": "no"}, "1/A", True, "cannot be classified as 1/Å or as 1/nm"),
    ],
)
def test_close_or_disagreeing_readings_say_the_unit_is_uncertain(verdicts, unit, uncertain, words):
    decision = decide_q_unit(BOTH, verdicts, "q unit not given")
    assert (decision.unit, decision.uncertain) == (unit, uncertain)
    assert words in decision.note and decision.note.startswith("q unit not given")
    assert f"read as {'1/Å' if unit == '1/A' else '1/nm'}" in decision.note


def test_resolving_many_curves_at_once_gives_each_curves_resolution():
    from sasview_bnn_plugin.core.q_units import resolve_q_units

    rng = np.random.default_rng(0)
    cases = []
    for k in range(400):
        n = int(rng.choice([1, 5, 60, 300]))
        q = np.geomspace(10 ** rng.uniform(-5, -1), 10 ** rng.uniform(-1, 2), n)
        i = rng.uniform(0.1, 10, n)
        if k % 5 == 0:
            q[rng.integers(0, n)] = -q[0]  # through the beam centre
        if k % 7 == 0:
            i[rng.integers(0, n)] = np.nan
        if k % 11 == 0:
            q[:] = np.nan
        cases.append((q, None if k % 3 == 0 else i, [None, "1/A", "1/nm"][k % 3]))
    cases += [(np.array([]), np.array([]), None), (np.array([0.0, -0.0]), None, "1/nm"), ([0.001, 0.2], [1, 2], None),
              (np.array([0.001, 0.2], dtype=np.float32), None, None), (np.array([0.001, 0.2]), np.array([1.0]), None),
              (np.array([[0.001, 0.5], [0.7, 2.0]]), None, None), (np.array([1 + 1j, 2]), None, None)]
    assert resolve_q_units(cases) == [resolve_q_unit(*case) for case in cases]
