"""The flatness test: blanks are featureless, every scattering curve of the simulator is not."""

import numpy as np
import pytest

from sasview_bnn_plugin.core.flatness import FLATNESS_LEVEL, chi2_sf, flatness_p_value, is_featureless


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
