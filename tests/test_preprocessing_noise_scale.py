"""``noise_scale="scatter"``: each curve's dI rescaled by one factor to its own point-to-point scatter.

Files often state dI off by a large factor for the whole curve; then a spike of
8 sigma reads as 0.3 sigma in the outlier channel. With the scatter scale the
features no longer depend on that factor, while honest error bars are kept as
they are.
"""

import json

import numpy as np
import pytest

from sasview_bnn_plugin.core.preprocessing import (
    CHANNELS,
    PreprocessingConfig,
    prepare_curve,
    prepare_many,
    scatter_factors,
)

SIX = CHANNELS + ("density", "noise")
STATED = PreprocessingConfig(channels=SIX)
SCATTER = PreprocessingConfig(channels=SIX, noise_scale="scatter")


def sphere_curve(rng: np.random.Generator, n: int = 200, noise: float = 0.01, radius: float = 60.0, spacing: str = "log"):
    """A polydisperse sphere on a flat background with counting noise: (q [1/Å], I, true sigma)."""
    q = np.geomspace(3e-3, 0.4, n) if spacing == "log" else np.linspace(3e-3, 0.4, n)
    radii = radius * (1 + 0.1 * rng.standard_normal(30))
    x = q[:, None] * radii[None, :]
    form = (3 * (np.sin(x) - x * np.cos(x)) / x**3) ** 2 * radii[None, :] ** 6
    clean = form.mean(axis=1) / form.mean(axis=1)[0] + 1e-4
    sigma = noise * clean[0] * np.sqrt(clean / clean[0])
    return q, clean + sigma * rng.standard_normal(n), sigma


def test_the_default_settings_read_and_write_as_before():
    assert "noise_scale" not in json.loads(STATED.to_json())
    assert json.loads(SCATTER.to_json())["noise_scale"] == "scatter"
    assert PreprocessingConfig.from_json(SCATTER.to_json()) == SCATTER
    assert PreprocessingConfig.from_json(STATED.to_json()) == STATED
    with pytest.raises(ValueError, match="noise_scale"):
        PreprocessingConfig(noise_scale="guess")


@pytest.mark.parametrize("spacing", ["log", "linear"])
def test_honest_error_bars_are_kept(spacing):
    rng = np.random.default_rng(1)
    factors = []
    for k in range(200):
        q, i, sigma = sphere_curve(rng, n=int(rng.integers(40, 600)), noise=10 ** rng.uniform(-3, -1.3),
                                   radius=rng.uniform(20, 200), spacing=spacing)
        factors.append(scatter_factors(q, i, sigma, np.array([q.size]))[0])
    factors = np.array(factors)
    assert np.mean(factors == 1.0) >= 0.9, np.percentile(factors, [5, 50, 95])


@pytest.mark.parametrize("off_by", [0.03, 0.3, 10.0, 30.0])
def test_error_bars_off_by_a_factor_are_brought_to_the_scatter(off_by):
    rng = np.random.default_rng(2)
    found = []
    for _ in range(50):
        q, i, sigma = sphere_curve(rng, n=int(rng.integers(100, 400)), noise=10 ** rng.uniform(-2.5, -1.5))
        found.append(scatter_factors(q, i, sigma * off_by, np.array([q.size]))[0] * off_by)
    # the rescaled dI are the true noise within the estimate's spread
    assert 0.8 < np.median(found) < 1.25 and np.all((np.array(found) > 0.5) & (np.array(found) < 2.0)), found


def test_a_spike_stands_out_whatever_the_stated_error_bars():
    rng = np.random.default_rng(3)
    q, i, sigma = sphere_curve(rng, n=300, noise=0.01)
    i = i.copy()
    i[150] += 10 * sigma[150]  # a 10-sigma spike
    strongest = {}
    for name, cfg in (("stated", STATED), ("scatter", SCATTER)):
        for off_by in (1.0, 30.0):
            features = prepare_curve(q, i, sigma * off_by, "1/A", config=cfg).features
            strongest[name, off_by] = float(np.max(np.abs(features[2])))
    # stated: dI 30x too large hide the spike; scatter: the same outlier channel either way
    assert strongest["stated", 30.0] < 0.2 * strongest["stated", 1.0]
    assert strongest["scatter", 30.0] == pytest.approx(strongest["scatter", 1.0], rel=0.25)
    assert strongest["scatter", 1.0] == strongest["stated", 1.0]


def test_without_error_bars_nothing_changes_and_a_batch_is_each_curve_alone():
    rng = np.random.default_rng(4)
    curves = []
    for k in range(60):
        q, i, sigma = sphere_curve(rng, n=int(rng.integers(20, 300)), noise=10 ** rng.uniform(-3, -1.3))
        di = None if k % 5 == 0 else sigma * 10 ** rng.uniform(-1.5, 1.5)
        curves.append((q, i, di, "1/A"))
    batched = prepare_many(curves, SCATTER)
    for curve, outcome in zip(curves, batched):
        try:
            alone = prepare_curve(*curve, config=SCATTER)
        except ValueError as err:
            assert isinstance(outcome, ValueError) and str(outcome) == str(err)
            continue
        assert outcome.features.tobytes() == alone.features.tobytes()
        if curve[2] is None:
            assert outcome.features.tobytes() == prepare_curve(*curve, config=STATED).features.tobytes()


def test_training_names_its_features_file_and_passes_the_setting():
    pytest.importorskip("torch")
    from sasview_bnn_trainer.features import default_features_path
    from sasview_bnn_trainer.fit import FitConfig

    config = FitConfig(method="vi", extra_channels=("density", "noise"), noise_scale="scatter")
    assert config.preprocessing == SCATTER
    assert default_features_path("d.h5", config.preprocessing).name == "d.features+density+noise+dI-scatter.h5"
    assert default_features_path("d.h5", STATED).name == "d.features+density+noise.h5"
    assert FitConfig.from_dict(config.to_dict()).noise_scale == "scatter"
    with pytest.raises(ValueError, match="noise_scale"):
        FitConfig(method="vi", noise_scale="guess")
