"""The flatness test: blanks are featureless, every scattering curve of the simulator is not."""

import numpy as np
import pytest

from sasview_bnn_plugin.core.flatness import FLATNESS_LEVEL, MIN_POINTS, chi2_sf, flatness_p_value, flatness_p_values, is_featureless


@pytest.mark.parametrize("dof", [9, 30, 100, 400])
def test_chi2_tail_matches_scipy(dof):
    stats = pytest.importorskip("scipy.stats")
    for x in stats.chi2.ppf([1e-4, 0.01, 0.3, 0.7, 0.99, 0.999], dof):
        assert chi2_sf(float(x), dof) == pytest.approx(float(stats.chi2.sf(x, dof)), abs=2e-3)


def test_blank_measurements_are_featureless_at_about_the_level():
    rng = np.random.default_rng(3)
    p = []
    for _ in range(2000):
        n = int(rng.integers(30, 400))
        level, rel = 10 ** rng.uniform(-3, 1), 10 ** rng.uniform(-2, -0.5)
        di = np.full(n, level * rel)
        p.append(flatness_p_value(level + di * rng.normal(size=n), di))
    p = np.array(p)
    # Under H0 the p-value is uniform: the miss rate is the level.
    assert np.mean(p < FLATNESS_LEVEL) < 0.005 and 0.4 < np.median(p) < 0.6


def test_a_weak_form_factor_with_counting_noise_is_not_featureless():
    q = np.geomspace(1e-2, 0.5, 200)
    r = 30.0
    x = q * r
    form = (3 * (np.sin(x) - x * np.cos(x)) / x**3) ** 2
    signal = 1.0 + 0.2 * form  # a particle 20 % above a flat background
    di = 0.02 * signal
    p = flatness_p_value(signal + di * np.random.default_rng(0).normal(size=q.size), di)
    assert p is not None and p < 1e-12 and not is_featureless(p)


def test_no_verdict_without_error_bars():
    i = np.ones(50)
    assert flatness_p_value(i, None) is None
    assert flatness_p_value(i, np.zeros(50)) is None
    assert flatness_p_value(i, np.full(5, 0.1)) is None
    assert not is_featureless(None)
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)


def one_curve_at_a_time(intensity, d_intensity):
    """The flatness p-value as it was computed for one curve before the batched form (the reference)."""
    if d_intensity is None:
        return None
    i = np.asarray(intensity, dtype=np.float64).ravel()
    di = np.asarray(d_intensity, dtype=np.float64).ravel()
    if i.shape != di.shape:
        return None
    ok = np.isfinite(i) & np.isfinite(di) & (di > 0)
    n = int(ok.sum())
    if n < MIN_POINTS:
        return None
    w = 1.0 / di[ok] ** 2
    level = float(np.sum(w * i[ok]) / np.sum(w))
    return chi2_sf(float(np.sum(w * (i[ok] - level) ** 2)), n - 1)


def test_a_batch_gives_each_curve_its_own_p_value_bit_for_bit():
    rng = np.random.default_rng(3)
    curves = []
    for k in range(600):
        n = int(rng.choice([0, 3, 9, 10, 11, 60, 60, 61, 500, 9000]))
        i = rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 6) + rng.uniform(-1, 1)
        di = np.abs(rng.standard_normal(n)) * 10.0 ** rng.uniform(-6, 6)
        if k % 7 == 0 and n:
            di[rng.integers(0, n, 3)] = 0
        if k % 11 == 0 and n:
            i[rng.integers(0, n, 2)] = np.nan
        if k % 13 == 0 and n:
            di[rng.integers(0, n, 2)] = np.inf
        if k % 19 == 0 and n:
            di = di[:-1]  # not one dI per point: no test
        if k % 17 == 0:
            di = None
        curves.append((i, di))
    with np.errstate(all="ignore"):
        expected = [one_curve_at_a_time(*curve) for curve in curves]
        batched = flatness_p_values(curves)
    assert sum(p is not None for p in expected) > 300 and sum(p is None for p in expected) > 50
    assert batched == expected
    assert [flatness_p_value(*curve) for curve in curves[:50]] == expected[:50]


def test_the_classifier_marks_a_blank_novel_and_says_why_and_leaves_a_sphere_alone(model_path, sphere_curve):
    from sasview_bnn_plugin import BNNClassifier

    rng = np.random.default_rng(5)
    q = np.geomspace(3e-3, 0.3, 200)
    di = np.full(q.size, 0.02)
    blank = (q, 0.5 + di * rng.normal(size=q.size), di, None, "1/A")
    no_error_bars = (q, 0.5 + di * rng.normal(size=q.size), None, None, "1/A")
    sphere = (*sphere_curve(), None, "1/A")
    classifier = BNNClassifier(model_path, provider="cpu")
    flat, unknown, particle = classifier.classify([blank, no_error_bars, sphere])
    assert flat.ok and flat.is_novel and "NO SIGNAL" in flat.message and flat.flatness_p_value >= FLATNESS_LEVEL
    assert flat.to_dict()["flatness_p_value"] == pytest.approx(flat.flatness_p_value)
    # Without error bars there is no test (and no claim); a particle is far from flat.
    assert unknown.ok and np.isnan(unknown.flatness_p_value) and "NO SIGNAL" not in unknown.message
    assert particle.ok and particle.flatness_p_value < 1e-12 and "NO SIGNAL" not in particle.message
