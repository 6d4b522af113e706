"""The simulator's fast paths give sasmodels' own numbers, bit for bit.

``call_model`` (cached call details, own value vector), ``LazySlit1D`` /
``slit_weights`` (one array operation instead of sasmodels' loop over points)
and the vectorised self-similar sum are speed-ups only: a change that made
them differ from sasmodels would change every simulated curve.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("sasmodels")

from sasmodels import direct_model as sas_direct
from sasmodels import resolution as sas_resolution

from sasview_bnn_trainer.simulation import shapes
from sasview_bnn_trainer.simulation.instrument import LazySlit1D, draw_instrument


def _reference_call(name: str, q: np.ndarray, params: dict) -> np.ndarray:
    kernel = shapes.load_model(name).make_kernel([np.ascontiguousarray(q, dtype=np.float64)])
    try:
        return np.asarray(sas_direct.call_kernel(kernel, {"scale": 1.0, "background": 0.0, **params}), dtype=np.float64)
    finally:
        kernel.release()


@pytest.mark.parametrize("name, params", [
    ("sphere", {"radius": 50.0, "sld": 1.0, "sld_solvent": 4.0}),
    ("sphere", {"radius": 50.0, "sld": 1.0, "sld_solvent": 4.0, "radius_pd": 0.2, "radius_pd_n": 21, "radius_pd_type": "schulz"}),
    ("flexible_cylinder", {"length": 900.0, "kuhn_length": 100.0, "radius": 12.0, "length_pd": 0.1, "length_pd_n": 21,
                           "length_pd_type": "lognormal"}),
    ("cylinder", {"radius": 20.0, "length": 400.0, "sld": 1.0, "sld_solvent": 3.0}),
    ("hayter_msa", {"radius_effective": 40.0, "volfraction": 0.2, "charge": 20.0, "temperature": 298.15,
                    "concentration_salt": 1e-3, "dielectconst": 78.4}),
    ("power_law", {"power": 2.5}),
])
def test_call_model_matches_call_kernel(name, params):
    q = np.geomspace(1e-3, 0.5, 173)
    assert np.array_equal(shapes.call_model(name, q, params), _reference_call(name, q, params))


def test_shapes_match_sasmodels_and_the_loop_form_of_self_similar_polydispersity():
    rng = np.random.default_rng(3)
    for _ in range(40):
        q = np.geomspace(10 ** rng.uniform(-4, -2.5), 10 ** rng.uniform(-1.5, 0), int(rng.integers(5, 300)))
        draw = shapes.draw_shape(float(10 ** rng.uniform(1, 3)), rng)
        spec, pd = draw.spec, draw.polydispersity
        if not spec.orientation_averaged:
            params = dict(draw.params)
            if spec.pd_parameter is not None and pd > 0:
                params.update({f"{spec.pd_parameter}_pd": pd, f"{spec.pd_parameter}_pd_n": shapes.PD_POINTS,
                               f"{spec.pd_parameter}_pd_type": draw.distribution})
            assert np.array_equal(shapes.call_model(spec.model, q, params), _reference_call(spec.model, q, params))
            continue
        # The documented loop: I(q) = sum n_i s_i^6 I_mono(s_i q) / sum n_i s_i^3, I_mono interpolated in log-log.
        s = np.linspace(max(1 - 3 * pd, 0.1), 1 + 3 * pd, shapes.SELF_SIMILAR_PD_POINTS)
        weights = np.exp(-0.5 * ((s - 1) / pd) ** 2)
        lo, hi = q[0] * s[0], q[-1] * s[-1]
        n_grid = max(int(math.ceil(math.log10(hi / lo) * shapes.SELF_SIMILAR_POINTS_PER_DECADE)), 16)
        grid = np.exp(np.linspace(math.log(lo), math.log(hi), n_grid))
        log_mono = np.log(np.maximum(_reference_call(spec.model, grid, draw.params), 1e-300))
        total = np.zeros_like(q)
        for s_i, w_i in zip(s, weights):
            total += w_i * s_i**6 * np.exp(np.interp(np.log(q) + math.log(s_i), np.log(grid), log_mono))
        expected = total / float(np.sum(weights * s**3))
        assert np.array_equal(shapes.self_similar_polydisperse(spec.model, draw.params, q, pd), expected)


def test_lazy_slit_matches_sasmodels_slit1d():
    rng = np.random.default_rng(8)
    checked = 0
    while checked < 12:
        inst = draw_instrument(rng, max_relative_step=0.005 if checked % 2 else None)
        if inst.resolution_kind != "slit":
            continue
        q_calc = inst.q_calc if checked % 2 else None
        reference = sas_resolution.Slit1D(inst.q, q_length=inst.slit_length, q_calc=q_calc)
        lazy = LazySlit1D(inst.q, q_length=inst.slit_length, q_calc=q_calc)
        assert np.array_equal(lazy.q_calc, reference.q_calc)
        assert np.array_equal(lazy.weight_matrix, reference.weight_matrix)
        theory = np.exp(-lazy.q_calc * 30.0)
        assert np.array_equal(lazy.apply(theory), reference.apply(theory))
        checked += 1
