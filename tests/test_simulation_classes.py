"""The physics of the labelled-curve simulator: every class's visibility criterion holds.

Criteria are re-checked from the stored arrays and from components evaluated
again here with sasmodels' DirectModel (not the simulator's kernel path)
wherever that is possible; real sasmodels throughout.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sasmodels import core as sas_core
from sasmodels import data as sas_data
from sasmodels import direct_model as sas_direct
from sasmodels import resolution as sas_resolution

from sasview_bnn_plugin.core.preprocessing import prepare_curve
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES, class_index
from sasview_bnn_trainer.simulation import criteria as crit
from sasview_bnn_trainer.simulation.classes import (
    CLASS_GENERATORS,
    LATTICES,
    MODELS_USED,
    SECONDARY_ANOMALIES,
    SIMULATOR_VERSION,
    STRUCTURE_FACTORS,
    simulate,
    simulate_curve,
)
from sasview_bnn_trainer.simulation.instrument import DQ_OVER_Q, FINE_DQ_OVER_Q, BandedPinhole
from sasview_bnn_trainer.simulation.shapes import PD_POINTS, SHAPES, SHAPES_BY_NAME

N_PER_CLASS = 30
_MODELS: dict[str, object] = {}


def _direct(model: str, q_inv_a: np.ndarray, pars: dict) -> np.ndarray:
    """Evaluate a sasmodels model through DirectModel on q (1/Å): an independent path."""
    if model not in _MODELS:
        _MODELS[model] = sas_core.load_model(model)
    calculator = sas_direct.DirectModel(sas_data.empty_data1D(q_inv_a), _MODELS[model])
    return np.asarray(calculator(**{"scale": 1.0, "background": 0.0, **pars}))


def _q_inv_a(curve) -> np.ndarray:
    return curve.q * (0.1 if curve.q_unit == "1/nm" else 1.0)


def _shape_pars(params: dict, prefix: str = "") -> tuple[str, dict]:
    spec = SHAPES_BY_NAME[params[f"{prefix}shape"]]
    skip = {"shape", "model", "polydispersity", "rg_target", "pd_distribution", "scale", "background"}
    pars = {k[len(prefix):]: v for k, v in params.items()
            if k.startswith(prefix) and k[len(prefix):] in {p.name for p in _info(spec.model)} and k[len(prefix):] not in skip}
    if spec.pd_parameter and params[f"{prefix}polydispersity"] > 0:
        pars[f"{spec.pd_parameter}_pd"] = params[f"{prefix}polydispersity"]
        pars[f"{spec.pd_parameter}_pd_n"] = PD_POINTS
        pars[f"{spec.pd_parameter}_pd_type"] = params[f"{prefix}pd_distribution"]
    return spec.model, pars


def _info(model: str):
    if model not in _MODELS:
        _MODELS[model] = sas_core.load_model(model)
    return _MODELS[model].info.parameters.call_parameters


@pytest.fixture(scope="module")
def samples() -> dict[int, list]:
    """Single-anomaly curves of every class (the physics of each class on its own)."""
    out = {}
    for label in range(len(CLASS_NAMES)):
        rng = np.random.default_rng(1000 + label)
        out[label] = [simulate(label, rng, mixture_probability=0.0) for _ in range(N_PER_CLASS)]
    return out


@pytest.fixture(scope="module")
def mixtures() -> dict[int, list]:
    """Curves whose planned class takes secondary anomalies whenever it can (taxonomy version 2)."""
    out = {}
    for label in range(len(CLASS_NAMES)):
        rng = np.random.default_rng(2000 + label)
        out[label] = [simulate(label, rng, mixture_probability=1.0) for _ in range(12)]
    return out


def test_one_generator_per_class_in_taxonomy_order():
    assert tuple(CLASS_GENERATORS) == CLASS_NAMES
    assert isinstance(SIMULATOR_VERSION, str) and SIMULATOR_VERSION
    assert len(SHAPES) >= 10 and len({s.model for s in SHAPES}) >= 10


def test_models_used_lists_every_model_the_samples_needed(samples):
    seen = {v for sims in samples.values() for sim in sims for k, v in sim.curve.params.items()
            if isinstance(v, str) and (k.endswith("model") or k in ("structure_factor", "peak_shape"))}
    assert seen and seen <= set(MODELS_USED)


@pytest.mark.parametrize("label", range(len(CLASS_NAMES)))
def test_curves_are_valid_model_input(samples, label):
    for sim in samples[label]:
        c = sim.curve
        assert c.label == label
        sigma = sim.components["noise_sigma"]  # the true counting noise; the file reports c.d_intensity
        assert c.q.size >= 30 and c.q.shape == c.intensity.shape == c.d_intensity.shape == c.dq.shape == sigma.shape
        assert np.all(np.isfinite(c.q)) and np.all(np.isfinite(c.intensity)) and np.all(np.isfinite(sigma))
        assert np.all(np.diff(c.q) > 0) and np.all(sigma > 0)
        assert c.q_unit in ("1/A", "1/nm") and c.instrument["unit"] == c.q_unit
        q = _q_inv_a(c)
        assert 1e-4 <= q[0] and q[-1] <= 1.0 and math.log10(q[-1] / q[0]) >= 0.7
        if c.instrument["resolution"] == "pinhole":
            assert np.allclose(c.dq / c.q, c.instrument["dq_over_q"]) and FINE_DQ_OVER_Q[0] <= c.instrument["dq_over_q"] <= DQ_OVER_Q[1]
        else:
            assert np.isnan(c.dq).all() and c.slit_length > 0
        assert 1e-3 <= c.criteria["relative_error_at_max"] <= 5e-2 + 1e-12
        result = prepare_curve(c.q, c.intensity, c.d_intensity, c.q_unit)
        assert result.n_points == c.q.size


def test_reported_uncertainties_are_the_noise_off_by_one_factor_or_missing(samples):
    """The file's dI: the true noise (honest), the noise times the recorded factor (scaled), or NaN (missing);
    over the samples every kind is drawn, near its weight (0.6 / 0.3 / 0.1)."""
    kinds = []
    for sims in samples.values():
        for sim in sims:
            c, sigma = sim.curve, sim.components["noise_sigma"]
            kind = c.params["reported_uncertainties"]
            kinds.append(kind)
            if kind == "honest":
                assert np.array_equal(c.d_intensity, sigma) and "reported_uncertainty_factor" not in c.params
            elif kind == "scaled":
                factor = c.params["reported_uncertainty_factor"]
                assert 0.03 <= factor <= 30 and np.allclose(c.d_intensity, sigma * factor, rtol=1e-12)
            else:
                assert kind == "missing" and np.isnan(c.d_intensity).all()
                # the runtime estimates the uncertainties from the scatter; the curve is still model input
                assert prepare_curve(c.q, c.intensity, c.d_intensity, c.q_unit).n_points == c.q.size
    shares = {k: kinds.count(k) / len(kinds) for k in ("honest", "scaled", "missing")}
    assert 0.45 < shares["honest"] < 0.75 and 0.15 < shares["scaled"] < 0.45 and 0.02 < shares["missing"] < 0.2, shares


def test_strong_upturns_dominate_the_low_q_decades_and_keep_the_particle_at_its_knee():
    """Simulator 2.4: a strong upturn is 200x to 10^5x the clean intensity at q_min, and the particle still holds
    >= 75 % of I at its knee (else the taxonomy calls the curve a bare power law)."""
    rng = np.random.default_rng(2024)
    strong = [s for s in (simulate(class_index("aggregation"), rng, mixture_probability=0.0) for _ in range(60))
              if s.curve.params["strong_upturn"] == "yes"]
    assert len(strong) >= 5
    for sim in strong:
        c = sim.curve
        assert 200.0 <= c.params["aggregate_ratio_target"] <= 1e5 + 1
        assert c.criteria["knee_share"] >= crit.UPTURN_MIN_KNEE_SHARE


def test_same_seed_gives_the_same_curve():
    for label in range(len(CLASS_NAMES)):
        a = simulate_curve(label, np.random.default_rng(42))
        b = simulate_curve(label, np.random.default_rng(42))
        assert np.array_equal(a.intensity, b.intensity) and np.array_equal(a.q, b.q)
        assert a.params == b.params and a.criteria == b.criteria


def test_unknown_label_is_refused():
    with pytest.raises(ValueError, match="not a class index"):
        simulate_curve(7, np.random.default_rng(0))


def _knee_inside_recomputed(curve, prefix: str = "") -> bool:
    """Knee of the particle re-evaluated with DirectModel (1D shapes) on the stored q."""
    model, pars = _shape_pars(curve.params, prefix)
    particle = _direct(model, _q_inv_a(curve), pars)
    position, _ = crit.knee_position(_q_inv_a(curve), particle)
    return crit.knee_inside(position)


def test_clean_curves_keep_the_knee_and_fail_every_anomaly_criterion(samples):
    checked_directly = 0
    for sim in samples[class_index("clean")]:
        c, comp = sim.curve, sim.components
        q = _q_inv_a(c)
        position, _ = crit.knee_position(q, comp["particle"])
        assert crit.knee_inside(position)
        if not SHAPES_BY_NAME[c.params["shape"]].orientation_averaged:
            assert _knee_inside_recomputed(c)
            checked_directly += 1
        assert np.all(comp["expected"] > 0)
        assert crit.trailing_negative_run_fraction(c.intensity, comp["noise_sigma"]) < crit.NEGATIVE_MIN_RUN_FRACTION
        near_miss = c.params.get("near_miss")
        spikes = crit.spike_count(c.intensity, comp["expected"], comp["noise_sigma"])
        if near_miss == "few_spikes":
            assert 1 <= spikes < crit.VISIBLE_MIN_SPIKE_POINTS
        else:
            assert spikes == 0
        if near_miss == "weak_upturn":
            assert c.criteria["near_miss_upturn_ratio"] < crit.UPTURN_MIN_RATIO
        elif near_miss == "short_upturn":
            # Past 2x at q_min, yet fewer moved points than an upturn needs: still clean.
            assert c.criteria["near_miss_upturn_ratio"] >= crit.UPTURN_MIN_RATIO
            assert c.criteria["near_miss_score"] < crit.VISIBLE_MIN_POINTS
        elif near_miss is None:
            # No low-q upturn: the noise-free curve is flat (a plateau) at q_min.
            assert crit.log_slope(q, comp["expected"])[0] > crit.KNEE_SLOPE
    assert checked_directly >= 5


def test_clean_near_misses_stay_below_the_visibility_line():
    """About a third of clean curves carry an anomaly a person could not see (docs/taxonomy.md): still clean."""
    rng = np.random.default_rng(11)
    kinds = []
    for _ in range(150):
        c = simulate_curve(class_index("clean"), rng)
        assert c.label == class_index("clean") and c.params["anomalies"] == ""
        kind = c.params.get("near_miss")
        if kind is not None:
            kinds.append(kind)
            limit = {"few_spikes": crit.VISIBLE_MIN_SPIKE_POINTS, "edge_point": crit.VISIBLE_MIN_EDGE_POINTS}.get(kind, crit.VISIBLE_MIN_POINTS)
            assert 0 <= c.criteria["near_miss_score"] < limit
    assert 0.15 < len(kinds) / 150 < 0.5
    assert len(set(kinds)) >= 5


def test_aggregation_upturn_is_visible(samples):
    for sim in samples[class_index("aggregation")]:
        c, comp = sim.curve, sim.components
        q = _q_inv_a(c)
        ratio, slope = crit.upturn(q, comp["clean"], comp["aggregate"])
        assert crit.aggregation_visible(ratio, slope)
        assert comp["expected"][0] >= 2.0 * comp["clean"][0]
        # ... while the particle's own knee is not swamped.
        position, q_knee = crit.knee_position(q, comp["particle"])
        assert crit.knee_inside(position)
        assert crit.share_at(q, comp["clean"], comp["aggregate"], q_knee) >= crit.UPTURN_MIN_KNEE_SHARE
        # The aggregate component, evaluated again with DirectModel, is a power law of slope -1.5..-4.
        model = c.params["aggregate_model"]
        pars = {k[len("aggregate_"):]: v for k, v in c.params.items()
                if k.startswith("aggregate_") and k not in ("aggregate_model", "aggregate_ratio_target")}
        agg = _direct(model, q, pars)
        _, direct_slope = crit.upturn(q, comp["clean"], agg)
        assert crit.UPTURN_SLOPE_RANGE[0] <= direct_slope <= crit.UPTURN_SLOPE_RANGE[1]


def test_interparticle_structure_factor_is_visible(samples):
    models, worst = set(), 0.0
    for sim in samples[class_index("interparticle")]:
        c = sim.curve
        q = _q_inv_a(c)
        model = c.params["structure_factor"]
        models.add(model)
        pars = {k[3:]: v for k, v in c.params.items() if k.startswith("sq_")}
        s = _direct(model, q, pars)
        s_min, s_peak = crit.structure_factor_extremes(s)
        assert crit.interparticle_visible(s_min, s_peak)
        assert s_min == pytest.approx(c.criteria["s_q_min"], rel=1e-9) and s_peak >= c.criteria["s_peak"] - 1e-9
        assert 0.1 <= pars["volfraction"] <= 0.5
        worst = max(worst, float(np.max(np.abs(s / sim.components["structure_factor"] - 1))))
    assert models == set(STRUCTURE_FACTORS)
    assert worst < 0.03  # the simulator's S(q) is sasmodels' S(q), interpolated from its model grid


def test_ordered_peaks_sit_at_lattice_ratios_and_stand_out(samples):
    for sim in samples[class_index("ordered")]:
        c, comp = sim.curve, sim.components
        q = _q_inv_a(c)
        positions = comp["peak_positions"]
        ratios = np.asarray(LATTICES[c.params["lattice"]])[: positions.size]
        assert np.allclose(positions / positions[0], ratios)
        signal = comp["expected"] - c.params["background"]
        contrasts = crit.bragg_contrasts(q, signal, comp["without_peaks"], positions, comp["noise_sigma"])
        assert np.sum(contrasts >= crit.BRAGG_MIN_CONTRAST) >= 2
        assert c.criteria["peak_relative_width"] <= crit.BRAGG_MAX_RELATIVE_WIDTH
        # The strongest peak also stands out of the noisy data near its position.
        k = int(np.argmax(contrasts))
        near = np.abs(q - positions[k]) <= 0.03 * positions[k]
        underlying = comp["without_peaks"][near] + c.params["background"]
        assert np.max((c.intensity[near] - underlying) / comp["noise_sigma"][near]) > 0.0


def test_bimodal_has_two_dominant_knees(samples):
    checked = 0
    for sim in samples[class_index("bimodal")]:
        c, comp = sim.curve, sim.components
        q = _q_inv_a(c)
        rg_l, rg_s = c.criteria["rg_large"], c.criteria["rg_small"]
        assert rg_l / rg_s >= crit.BIMODAL_MIN_RG_RATIO and q[0] <= 1 / rg_l and 1 / rg_s <= q[-1]
        # The simulator checks dominance on its dense model grid; on the measured q the check
        # is only meaningful where a measured point lies within 10 % of each knee (linear
        # spacing can leave the first decade with 2-3 points).
        if max(np.min(np.abs(q * rg - 1.0)) for rg in (rg_l, rg_s)) > 0.1:
            continue
        share_l, share_s = crit.knee_dominance(q, comp["large"], comp["small"], rg_l, rg_s)
        # Components on the measured q (not the simulator's model grid): allow 2 % interpolation slack.
        assert min(share_l, share_s) >= crit.BIMODAL_MIN_DOMINANCE - 0.02
        checked += 1
    assert checked >= len(samples[class_index("bimodal")]) // 2


def test_bimodal_curves_flatten_between_their_knees(samples):
    for sim in samples[class_index("bimodal")]:
        c = sim.curve
        dip, recovery = c.criteria["shoulder_dip"], c.criteria["shoulder_recovery"]
        assert crit.shoulder_visible(dip, recovery)
        assert recovery - dip >= crit.SHOULDER_MIN_RISE


def test_a_clean_long_rod_has_two_knees_but_no_shoulder():
    """The case that made simulator 1.0.0 confuse clean and bimodal: a rod's length and cross-section knees."""
    q = np.geomspace(1e-4, 0.5, 800)
    radius, length = 20.0, 2000.0
    rod = _direct("cylinder", q, {"radius": radius, "length": length, "sld": 4.0, "sld_solvent": 1.0})
    rg_length = math.sqrt(radius**2 / 2 + length**2 / 12)
    rg_section = radius / math.sqrt(2)
    assert rg_length / rg_section >= crit.BIMODAL_MIN_RG_RATIO
    dip, recovery = crit.shoulder_between_knees(q, rod, rg_length, rg_section)
    assert not crit.shoulder_visible(dip, recovery)
    # Two spheres 10x apart in radius, each dominant at its own knee, do show the shoulder.
    pd = {"sld": 4.0, "sld_solvent": 1.0, "radius_pd": 0.1, "radius_pd_n": 35}
    large = _direct("sphere", q, {"radius": 400.0, **pd})
    small = _direct("sphere", q, {"radius": 40.0, **pd})
    small = small / small[0] * large[0] * 1e-3
    rg_l, rg_s = 400.0 * math.sqrt(0.6), 40.0 * math.sqrt(0.6)
    assert min(crit.knee_dominance(q, large, small, rg_l, rg_s)) >= crit.BIMODAL_MIN_DOMINANCE
    assert crit.shoulder_visible(*crit.shoulder_between_knees(q, large + small, rg_l, rg_s))


def test_smoothed_slope_of_a_power_law_is_its_exponent():
    q = np.geomspace(1e-3, 1.0, 300)
    slope = crit.smoothed_log_slope(q, 5.0 * q**-2.5)
    assert np.allclose(slope, -2.5)


def test_independent_guinier_radius_of_a_bimodal_population(samples):
    for sim in samples[class_index("bimodal")]:
        c = sim.curve
        if SHAPES_BY_NAME[c.params["large_shape"]].orientation_averaged:
            continue
        model, pars = _shape_pars(c.params, "large_")
        rg = c.criteria["rg_large"]
        pair = (0.02 / c.params["large_rg_target"], 0.04 / c.params["large_rg_target"])
        i = _direct(model, np.asarray(pair), pars)
        assert crit.guinier_rg(pair, (i[0], i[1])) == pytest.approx(rg, rel=0.02)
        return
    pytest.fail("no bimodal curve with a sasmodels-polydisperse large population in the sample")


def test_oversubtracted_curves_end_in_a_negative_run(samples):
    for sim in samples[class_index("oversubtracted")]:
        c, comp = sim.curve, sim.components
        n = c.q.size
        tail = slice(n - math.ceil(0.1 * n), n)
        assert crit.trailing_negative_run_fraction(c.intensity, comp["noise_sigma"]) >= 0.1
        assert np.all(comp["expected"][tail] < 0)
        assert np.median(c.intensity[tail]) < 0
        _, slope = crit.model_negative_run(_q_inv_a(c), comp["expected"])
        assert slope < -4.0


def test_artefacts_are_visible_on_the_stored_arrays(samples):
    kinds = set()
    for sim in samples[class_index("artefact")]:
        c, comp = sim.curve, sim.components
        kind = c.params["artefact"]
        kinds.add(kind)
        n = c.q.size
        if kind == "spikes":
            z = np.abs(c.intensity - comp["expected"]) / comp["noise_sigma"]
            spikes = np.nonzero(z >= 5)[0]
            assert spikes.size >= max(1, math.ceil(0.01 * n))
            assert np.all(np.diff(spikes) >= 2)  # isolated, not a distorted segment
        elif kind == "step":
            boundary = int(comp["step_boundary"][0])
            assert crit.step_factor(c.intensity, comp["clean"], comp["noise_sigma"], boundary) >= crit.STEP_MIN_FACTOR
        elif kind == "edge_points":
            k = int(c.params["edge_points"])
            moved = crit.moved_points(comp["expected"], comp["clean"], comp["noise_sigma"])
            assert 1 <= moved.sum() <= k <= 4 and not moved[k:].any()  # only the first points, at the beamstop edge
        elif kind == "cell_residue":
            moved = crit.moved_points(comp["expected"], comp["clean"], comp["noise_sigma"])
            assert moved.sum() >= crit.VISIBLE_MIN_POINTS
        else:
            factor, fraction = crit.low_q_distortion(comp["expected"], comp["clean"])
            assert factor >= 2.0 and fraction <= 0.1
            affected = np.abs(comp["expected"] / comp["clean"] - 1) > 0.05
            assert affected[0] and not affected[int(math.ceil(0.1 * n)):].any()
    assert len(kinds) >= 4


def test_banded_pinhole_equals_sasmodels_pinhole1d():
    for q in (np.geomspace(0.003, 0.3, 150), np.linspace(0.01, 0.5, 57)):
        banded = BandedPinhole(q, 0.04 * q)
        reference = sas_resolution.Pinhole1D(q, 0.04 * q, q_calc=banded.q_calc)
        theory = 1.0 / (1.0 + (banded.q_calc * 60.0) ** 4)
        assert np.allclose(banded.weight_matrix, reference.weight_matrix, atol=1e-14)
        assert np.allclose(banded.apply(theory), reference.apply(theory), rtol=1e-12)


def test_criteria_tell_a_negative_run_from_noise_around_zero():
    rng = np.random.default_rng(3)
    d_i = np.full(200, 1.0)
    noise = rng.normal(0.0, 1.0, 200)
    assert crit.trailing_negative_run_fraction(noise, d_i) < crit.NEGATIVE_MIN_RUN_FRACTION
    offset = noise.copy()
    offset[-40:] -= 3.0
    assert crit.trailing_negative_run_fraction(offset, d_i) == pytest.approx(0.2, abs=0.03)


def test_criteria_tell_a_knee_from_a_power_law():
    q = np.geomspace(1e-3, 1e-1, 100)
    guinier = np.exp(-(q * 100.0) ** 2 / 3.0) + 1e-6
    position, q_knee = crit.knee_position(q, guinier)
    assert crit.knee_inside(position) and q_knee * 100.0 == pytest.approx(0.87, rel=0.1)
    assert math.isnan(crit.knee_position(q, q**-3)[0])


def test_every_class_fits_one_curve_file(tmp_path):
    from sasview_bnn_trainer.simulation.store import CurveReader, CurveWriter

    rng = np.random.default_rng(8)
    curves = [simulate_curve(label, rng) for label in range(len(CLASS_NAMES))]
    with CurveWriter(tmp_path / "c.h5", seed=8, code_version=SIMULATOR_VERSION, classes=CLASS_NAMES, config={}) as w:
        w.append(curves)
    with CurveReader(tmp_path / "c.h5") as r:
        back = [c for chunk in r.iter_chunks(4) for c in chunk]
    for a, b in zip(curves, back):
        assert a.label == b.label and np.array_equal(a.intensity, b.intensity)
        assert b.params["simulator_version"] == SIMULATOR_VERSION


@pytest.mark.parametrize("label", range(1, len(CLASS_NAMES)))
def test_every_anomaly_earns_its_label_by_the_visibility_rule(samples, label):
    """Taxonomy v2: the anomaly moves >= 5 points (3 spikes, 1 beamstop-edge point) by > 4 sigma and > 20 %."""
    name = CLASS_NAMES[label]
    for sim in samples[label]:
        c, comp = sim.curve, sim.components
        assert c.params["anomalies"] == name and c.criteria["n_anomalies"] == 1
        score = c.criteria[f"visibility_{name}"]
        kind = c.params["artefact"] if name == "artefact" else name
        assert score >= crit.minimum_points(kind)
        if name in ("aggregation", "interparticle", "ordered"):
            # Recomputed from the stored noise-free curve and its counterpart without the anomaly.
            assert crit.visibility_score(comp["expected"], comp["counterpart"], comp["noise_sigma"]) == score
        if name == "oversubtracted":
            assert crit.oversubtraction_score(comp["expected"], comp["noise_sigma"]) == score


def test_clean_curves_carry_no_anomaly(samples):
    for sim in samples[class_index("clean")]:
        assert sim.curve.params["anomalies"] == "" and sim.curve.criteria["n_anomalies"] == 0


def test_mixtures_record_every_anomaly_and_the_most_visible_is_primary(mixtures):
    seen_mixtures = 0
    for planned, sims in mixtures.items():
        for sim in sims:
            c = sim.curve
            present = [a for a in c.params["anomalies"].split(";") if a]
            scores = {a: c.criteria[f"visibility_{a}"] for a in present}
            assert c.criteria["n_anomalies"] == len(present)
            if planned == class_index("clean"):
                assert present == [] and c.label == planned
                continue
            assert CLASS_NAMES[planned] in present
            assert set(present) - {CLASS_NAMES[planned]} <= set(SECONDARY_ANOMALIES[CLASS_NAMES[planned]])
            assert CLASS_NAMES[c.label] == present[0] and scores[present[0]] == max(scores.values())
            assert all(s >= crit.VISIBLE_MIN_EDGE_POINTS for s in scores.values())
            # No visibility score for anomalies that are absent.
            assert all(f"visibility_{a}" not in c.criteria for a in CLASS_NAMES[1:] if a not in present)
            seen_mixtures += len(present) > 1
            assert np.all(np.isfinite(c.intensity)) and np.all(sim.components["noise_sigma"] > 0)
    assert seen_mixtures >= 30


def test_secondary_artefacts_are_visible_against_the_curve_without_them(mixtures):
    checked = 0
    for planned, sims in mixtures.items():
        for sim in sims:
            c, comp = sim.curve, sim.components
            if planned == class_index("artefact") or "artefact" not in c.params["anomalies"]:
                continue
            kind = c.params["artefact"]
            assert c.criteria["visibility_artefact"] >= crit.minimum_points(kind)
            if kind == "step":
                assert c.criteria["step_factor"] >= crit.STEP_MIN_FACTOR
            checked += 1
    assert checked >= 5


def test_every_shape_family_is_drawn():
    from sasview_bnn_trainer.simulation.shapes import FAMILIES, draw_shape

    rng = np.random.default_rng(3)
    drawn = {draw_shape(100.0, rng).spec.family for _ in range(400)}
    assert drawn == set(FAMILIES) == {"sphere", "ellipsoid", "cylinder", "chain", "generic"}
    mono = [draw_shape(100.0, rng) for _ in range(400)]
    # Deep minima: some curves of shapes with a size distribution are monodisperse.
    assert any(d.polydispersity == 0.0 and d.spec.pd_parameter for d in mono)


def test_some_pinhole_instruments_are_nearly_unsmeared():
    # Simulator 2.3: 15 % of pinhole curves get dq/q of 0.2-1 % (deep minima), the rest 1-10 %.
    from sasview_bnn_trainer.simulation.instrument import FINE_RESOLUTION_PROBABILITY, draw_instrument

    rng = np.random.default_rng(11)
    widths = np.array([inst.dq_over_q for inst in (draw_instrument(rng) for _ in range(2000)) if inst.resolution_kind == "pinhole"])
    assert widths.size > 1000
    assert np.all((widths >= FINE_DQ_OVER_Q[0]) & (widths <= DQ_OVER_Q[1]))
    fine = np.mean(widths < DQ_OVER_Q[0])
    assert abs(fine - FINE_RESOLUTION_PROBABILITY) < 0.03
    assert np.min(widths) < 0.003


def test_q_layouts_of_real_files_are_drawn_in_their_shares():
    # Simulator 2.5: besides log and linear grids, points merged from 2-3 detector distances (each its own spacing and
    # density, overlaps interleaved) and log grids whose step drifts along q, as in SasView's example files.
    from sasview_bnn_trainer.simulation.instrument import MIN_LOG_STEP, SPACINGS, draw_instrument, draw_q_points

    rng = np.random.default_rng(12)
    instruments = [draw_instrument(rng) for _ in range(3000)]
    kinds = [inst.spacing for inst in instruments]
    for kind, share in SPACINGS:
        assert abs(kinds.count(kind) / len(kinds) - share / sum(w for _, w in SPACINGS)) < 0.03, kind
    for inst in instruments:
        assert np.all(np.diff(np.log(inst.q)) > 0.999 * MIN_LOG_STEP) and inst.record()["n_points"] == inst.q.size
        assert inst.q.size == (inst.resolution.q.size if hasattr(inst.resolution, "q") else inst.q.size)

    def step_ratio(q: np.ndarray) -> float:
        steps = np.diff(np.log(q))
        return float(np.max(steps) / np.min(steps))

    merged = [inst.q for inst in instruments if inst.spacing == "merged"]
    irregular = [inst.q for inst in instruments if inst.spacing == "irregular"]
    logs = [inst.q for inst in instruments if inst.spacing == "log"]
    assert max(step_ratio(q) for q in logs) < 1.0001
    # Segments of another density: the log step jumps; overlaps interleave points far closer than either segment's step.
    assert np.median([step_ratio(q) for q in merged]) > 5
    assert 1.3 < np.median([step_ratio(q) for q in irregular]) < 50
    # The layout and its draws depend on u alone, and every layout spans the window asked for.
    for u in (0.1, 0.6, 0.85, 0.95):
        kind, q = draw_q_points(u, 2e-3, 0.4, 200)
        again = draw_q_points(u, 2e-3, 0.4, 200)
        assert again[0] == kind and np.array_equal(again[1], q) and q[0] == 2e-3 and q[-1] == 0.4
        assert 0.5 * 200 < q.size < 2 * 200
    assert [draw_q_points(u, 2e-3, 0.4, 200)[0] for u in (0.1, 0.6, 0.85, 0.95)] == ["log", "linear", "merged", "irregular"]
