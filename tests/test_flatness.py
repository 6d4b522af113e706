"""The flatness test: blanks are featureless, scattering curves are not, even with error bars 30x too large."""

import numpy as np
import pytest

from sasview_bnn_plugin.core.flatness import FLATNESS_LEVEL, MIN_POINTS, chi2_sf, f_sf, flatness_p_value, flatness_p_values, is_featureless


@pytest.mark.parametrize("dof", [9, 30, 100, 400])
def test_chi2_tail_matches_scipy(dof):
    stats = pytest.importorskip("scipy.stats")
    for x in stats.chi2.ppf([1e-4, 0.01, 0.3, 0.7, 0.99, 0.999], dof):
        assert chi2_sf(float(x), dof) == pytest.approx(float(stats.chi2.sf(x, dof)), abs=2e-3)


@pytest.mark.parametrize("dfn", [4, 30, 100, 4500])
def test_f_tail_matches_scipy(dfn):
    stats = pytest.importorskip("scipy.stats")
    dfd = dfn + 1
    for x in stats.f.ppf([1e-9, 1e-4, 0.01, 0.3, 0.7, 0.99, 0.999, 1 - 1e-9], dfn, dfd):
        assert f_sf(float(x), dfn, dfd) == pytest.approx(float(stats.f.sf(x, dfn, dfd)), rel=1e-9, abs=1e-300)
    assert f_sf(0.0, dfn, dfd) == 1.0 and f_sf(float("inf"), dfn, dfd) == 0.0


def test_blank_measurements_are_featureless_at_about_the_level():
    rng = np.random.default_rng(3)
    p = []
    for _ in range(2000):
        n = int(rng.integers(30, 400))
        level, rel = 10 ** rng.uniform(-3, 1), 10 ** rng.uniform(-2, -0.5)
        di = level * rel * np.geomspace(1.0, 3.0, n)  # counting noise that grows along the curve
        p.append(flatness_p_value(level + di * rng.normal(size=n), di))
    p = np.array(p)
    # Under H0 each test's p-value is uniform: the miss rate is at most twice the level.
    assert np.mean(p < FLATNESS_LEVEL) < 0.005 and 0.2 < np.median(p) < 0.45


@pytest.mark.parametrize("stated_over_true", [1.0, 30.0])
def test_a_weak_form_factor_with_counting_noise_is_not_featureless(stated_over_true):
    """Error bars 30x too large make it flat within them; the scatter between neighbours still sees the particle."""
    q = np.geomspace(1e-2, 0.5, 200)
    r = 30.0
    x = q * r
    form = (3 * (np.sin(x) - x * np.cos(x)) / x**3) ** 2
    signal = 1.0 + 0.2 * form  # a particle 20 % above a flat background
    di = 0.02 * signal
    i = signal + di * np.random.default_rng(0).normal(size=q.size)
    p = flatness_p_value(i, di * stated_over_true)
    assert p is not None and p < 1e-12 and not is_featureless(p)
    if stated_over_true > 1:
        assert chi2_sf(float(np.sum((i - np.average(i, weights=1 / (30 * di) ** 2)) ** 2 / (30 * di) ** 2)), q.size - 1) > 0.5


def test_points_are_taken_in_q_order():
    rng = np.random.default_rng(4)
    q = np.geomspace(1e-2, 0.5, 200)
    i = 1.0 + 0.3 * np.exp(-((q * 30.0) ** 2) / 3) + 0.01 * rng.normal(size=q.size)
    di = np.full(q.size, 0.3)  # 30x too large: only the scatter test sees the Guinier decay
    shuffled = rng.permutation(q.size)
    in_order = flatness_p_value(i, di)
    assert in_order < 1e-12
    assert flatness_p_value(i[shuffled], di[shuffled], q[shuffled]) == in_order
    # shuffled without q, neighbours are unrelated points: their differences hold the signal's spread
    assert flatness_p_value(i[shuffled], di[shuffled]) > 1e-6


def test_no_verdict_without_error_bars():
    i = np.ones(50)
    assert flatness_p_value(i, None) is None
    assert flatness_p_value(i, np.zeros(50)) is None
    assert flatness_p_value(i, np.full(50, np.nan)) is None  # a file without uncertainties
    assert flatness_p_value(i, np.full(5, 0.1)) is None
    assert flatness_p_value(i, np.full(50, 0.1)) == 1.0  # flat, no scatter at all: the stated error bars judge
    assert not is_featureless(None)
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)
    with pytest.raises(ValueError):
        f_sf(1.0, 0, 3)


def one_curve_at_a_time(intensity, d_intensity):
    """The flatness p-value of one curve, written out plainly (the reference for the batched form)."""
    if d_intensity is None:
        return None
    i = np.asarray(intensity, dtype=np.float64).ravel()
    di = np.asarray(d_intensity, dtype=np.float64).ravel()
    if i.shape != di.shape:
        return None
    ok = np.isfinite(i) & np.isfinite(di) & (di > 0)
    i, di = i[ok], di[ok]
    n = i.size
    if n < MIN_POINTS:
        return None
    w = 1.0 / di**2
    level = float(np.sum(w * i) / np.sum(w))
    p_stated = chi2_sf(float(np.sum(w * (i - level) ** 2)), n - 1)
    m = n // 2
    first, second = i[0:2 * m:2], i[1:2 * m:2]
    w1, w2 = w[0:2 * m:2], w[1:2 * m:2]
    mean = (w1 * first + w2 * second) / (w1 + w2)
    pair_level = np.sum((w1 + w2) * mean) / np.sum(w1 + w2)
    between = np.sum((w1 + w2) * (mean - pair_level) ** 2) / (m - 1)
    within = np.sum((second - first) ** 2 / (di[0:2 * m:2] ** 2 + di[1:2 * m:2] ** 2)) / m
    ratio = between / within
    return min(p_stated, 1.0 if np.isnan(ratio) else f_sf(float(ratio), m - 1, m))


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
        if k % 23 == 0:
            di = np.full(n, np.nan)  # a file without uncertainties: no test
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


def test_a_curve_with_a_signal_gets_the_smaller_of_both_tests_p_values():
    """The scatter test is skipped when the stated-error test's p-value is already 0: the result is still the
    minimum of both tests' p-values, computed here in full for curves with and without a signal."""
    rng = np.random.default_rng(11)
    curves = []
    for _ in range(600):
        n = int(rng.integers(MIN_POINTS, 300))
        q = np.sort(rng.uniform(0.001, 0.5, n))
        base = 1 + rng.uniform(0, 3) * np.exp(-q * rng.uniform(1, 100)) * (rng.random() < 0.7)
        sigma = base * 10 ** rng.uniform(-3, -0.5)
        curves.append((base + sigma * rng.normal(size=n), sigma * 10 ** rng.uniform(-1, 1), q))
    got = flatness_p_values(curves)
    for (intensity, d_intensity, _), p in zip(curves, got):
        n = intensity.size
        w = 1 / d_intensity**2
        level = np.sum(w * intensity) / np.sum(w)
        p_stated = chi2_sf(float(np.sum(w * (intensity - level) ** 2)), n - 1)
        m = n // 2
        i, di = intensity[: 2 * m].reshape(m, 2), d_intensity[: 2 * m].reshape(m, 2)
        pw = w[: 2 * m].reshape(m, 2)
        pair_weight = pw.sum(axis=1)
        pair_mean = (pw * i).sum(axis=1) / pair_weight
        pair_level = np.sum(pair_weight * pair_mean) / np.sum(pair_weight)
        between = np.sum(pair_weight * (pair_mean - pair_level) ** 2) / (m - 1)
        within = np.sum((i[:, 1] - i[:, 0]) ** 2 / (di**2).sum(axis=1)) / m
        assert p == pytest.approx(min(p_stated, f_sf(float(between / within), m - 1, m)), rel=1e-9, abs=1e-300)
    assert sum(p == 0.0 for p in got) > 100  # the skipped case is exercised
