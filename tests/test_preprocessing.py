"""The shared preprocessing: units, cleaning, refusals, and what the channels keep."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sasview_bnn_plugin.core.preprocessing import (
    CHANNELS,
    CurveError,
    ModelInput,
    PreprocessingConfig,
    prepare_batch,
    prepare_curve,
    q_unit_factor,
)

CFG = PreprocessingConfig()
OUTLIER, JUMP = CHANNELS.index("outlier"), CHANNELS.index("jump")


def sphere_curve(n: int = 400, q_lo: float = 0.005, q_hi: float = 0.4, radius: float = 40.0, noise: float = 0.01, seed: int = 0):
    """A polydisperse-looking sphere curve in 1/Å with 1 % Gaussian noise and reported dI."""
    rng = np.random.default_rng(seed)
    q = np.geomspace(q_lo, q_hi, n)
    qr = q * radius
    form = (3 * (np.sin(qr) - qr * np.cos(qr)) / qr**3) ** 2
    smooth = 1e3 * (0.7 * form + 0.3 / (1 + (qr / 2) ** 4)) + 0.05
    di = noise * smooth
    return q, smooth + rng.normal(0, 1, n) * di, di


def bin_of(q: float) -> int:
    return int(np.searchsorted(CFG.bin_edges, q, side="right") - 1)


def test_output_shape_dtype_and_coverage():
    q, i, di = sphere_curve()
    m = prepare_curve(q, i, di, "1/A")
    assert isinstance(m, ModelInput)
    assert m.features.shape == CFG.input_shape == (4, 256)
    assert m.features.dtype == np.float32 and m.features.flags.c_contiguous
    expected = math.log10(0.4 / 0.005) / math.log10(CFG.q_max / CFG.q_min)
    assert m.coverage == pytest.approx(expected, rel=1e-9)
    covered = m.features[CHANNELS.index("coverage")] > 0
    assert covered.sum() == bin_of(0.4) - bin_of(0.005) + 1
    assert np.all(m.features[:, ~covered] == 0)
    assert m.notes == []


def test_nanometre_input_gives_the_same_model_input_as_angstrom():
    q, i, di = sphere_curve()
    in_angstrom = prepare_curve(q, i, di, "A^{-1}")
    for unit in ("1/nm", "nm^{-1}", "NM-1", "1/nanometre"):
        in_nm = prepare_curve(q * 10.0, i, di, unit)
        np.testing.assert_allclose(in_nm.features, in_angstrom.features, atol=1e-6)
        assert in_nm.q_window == pytest.approx(in_angstrom.q_window)


@pytest.mark.parametrize("unit", ["1/A", "1/Å", "A^{-1}", "Å^-1", "1/angstrom", "a-1", " 1 / A "])
def test_inverse_angstrom_spellings(unit):
    assert q_unit_factor(unit) == (1.0, None)


def test_missing_unit_is_assumed_angstrom_and_reported():
    q, i, di = sphere_curve()
    m = prepare_curve(q, i, di, None)
    assert any("assumed to be in 1/Å" in n for n in m.notes)


def test_unknown_unit_is_refused_by_name():
    q, i, di = sphere_curve()
    with pytest.raises(CurveError, match="'1/m' is not understood"):
        prepare_curve(q, i, di, "1/m")


def test_scale_invariance():
    q, i, di = sphere_curve()
    a = prepare_curve(q, i, di, "1/A").features
    b = prepare_curve(q, i * 3.7e5, di * 3.7e5, "1/A").features
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_unsorted_duplicated_and_nonfinite_points_are_cleaned_with_notes():
    q, i, di = sphere_curve()
    ref = prepare_curve(q, i, di, "1/A")
    rng = np.random.default_rng(1)
    perm = rng.permutation(q.size)
    q2 = np.r_[q[perm], q[5], np.nan, 0.02]
    i2 = np.r_[i[perm], i[5] * 10, 1.0, np.inf]
    di2 = np.r_[di[perm], di[5], 1.0, 1.0]
    m = prepare_curve(q2, i2, di2, "1/A")
    np.testing.assert_allclose(m.features, ref.features, atol=1e-6)
    text = " ".join(m.notes)
    assert "2 point(s) with non-finite" in text and "1 point(s) with duplicate q" in text


def test_negative_intensities_are_kept_and_signed():
    q, i, di = sphere_curve(noise=0.001)
    i = i - 1.5 * i[-1]  # over-subtract: the high-q end goes negative
    m = prepare_curve(q, i, di, "1/A")
    y = m.features[CHANNELS.index("intensity")]
    assert y[bin_of(0.39)] < 0 < y[bin_of(0.01)]
    assert np.isfinite(m.features).all()


def test_isolated_spike_survives_in_the_outlier_channel():
    q, i, di = sphere_curve(n=1000)
    base = prepare_curve(q, i, di, "1/A").features
    k = 700
    spiked = i.copy()
    spiked[k] += 10 * di[k]
    feat = prepare_curve(q, spiked, di, "1/A").features
    b = bin_of(q[k])
    assert feat[OUTLIER, b] > 1.2  # asinh(~10/5)
    assert np.abs(base[OUTLIER]).max() < 1.0  # 1 % Gaussian noise alone stays well below
    # The bin average barely moves: the spike would be invisible in the intensity channel alone.
    assert abs(feat[0, b] - base[0, b]) < 0.01


def test_detector_step_survives_in_the_jump_channel():
    q, i, di = sphere_curve(n=600)
    base = prepare_curve(q, i, di, "1/A").features
    k = 350
    stepped = i.copy()
    stepped[k:] *= 1.3
    feat = prepare_curve(q, stepped, di * np.where(np.arange(q.size) >= k, 1.3, 1.0), "1/A").features
    b = bin_of(q[k])
    assert abs(feat[JUMP, b]) > 1.5
    assert np.abs(base[JUMP]).max() < abs(feat[JUMP, b]) - 0.5


def test_missing_uncertainties_are_estimated():
    q, i, di = sphere_curve(n=1000)
    spiked = i.copy()
    spiked[500] += 12 * di[500]
    feat = prepare_curve(q, spiked, None, "1/A").features
    assert feat[OUTLIER, bin_of(q[500])] == pytest.approx(np.abs(feat[OUTLIER]).max())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda q, i, di: (q[::13][:29], i[::13][:29], di[::13][:29]), "only 29 valid point"),
        (lambda q, i, di: (q[:20], i[:20], di[:20]), "only 20 valid point\\(s\\); at least 30"),
        (lambda q, i, di: (q * 100, i, di), "overlaps the model's q-domain"),
        (lambda q, i, di: (np.geomspace(0.5, 1.5, 100), np.ones(100), None), "by 0.30 decades"),
        (lambda q, i, di: (q, np.full(q.size, np.nan), di), "all intensities are NaN or infinite"),
        (lambda q, i, di: (q, -np.abs(i), di), "all intensities are zero or negative"),
        (lambda q, i, di: (q, np.tile(i, (5, 1)), di), "looks like 2D data"),
        (lambda q, i, di: (q, i[:-3], di), "has 397 values but q has 400"),
        (lambda q, i, di: ([], [], None), "no points"),
    ],
)
def test_refused_inputs_say_why(make, message):
    q, i, di = make(*sphere_curve())
    with pytest.raises(CurveError, match=message):
        prepare_curve(q, i, di, "1/A")


def test_batch_keeps_good_curves_when_one_is_refused():
    good = sphere_curve()
    batch, outcomes = prepare_batch([(*good, "1/A"), (good[0][:10], good[1][:10], None, "1/A"), (*good, "1/nm")])
    assert batch.shape == (2, 4, 256) and batch.dtype == np.float32
    assert isinstance(outcomes[0], ModelInput) and isinstance(outcomes[1], CurveError)
    assert isinstance(outcomes[2], ModelInput)


def test_config_round_trips_through_json_and_rejects_unknown_keys():
    cfg = PreprocessingConfig(n_bins=128, q_min=1e-3)
    assert PreprocessingConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        PreprocessingConfig.from_json('{"n_bins": 3, "colour": "red"}')


def test_every_real_example_file_is_accepted_or_refused_with_a_message():
    sasdata = pytest.importorskip("sasdata")
    from sasdata.dataloader.loader import Loader

    folder = Path(sasdata.__file__).parent / "example_data" / "1d_data"
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != "VTMA.h5")
    assert len(files) > 40
    accepted = 0
    loader = Loader()
    for path in files:
        try:
            datasets = loader.load(str(path))
        except Exception:  # sasdata cannot read it; that is the loader's business, not ours
            continue
        for data in datasets:
            if getattr(data, "data", None) is not None and np.ndim(data.data) == 2:
                continue
            try:
                m = prepare_curve(data.x, data.y, data.dy, getattr(data, "_xunit", None))
            except CurveError as err:
                assert str(err) and "Traceback" not in str(err)
            else:
                assert np.isfinite(m.features).all()
                accepted += 1
    assert accepted >= 30


EXTRA = PreprocessingConfig(channels=CHANNELS + ("density", "noise"))
DENSITY, NOISE = EXTRA.channels.index("density"), EXTRA.channels.index("noise")


def test_extra_channels_leave_the_default_four_unchanged_and_count_points_and_noise():
    q, i, di = sphere_curve(n=400)
    default, extra = prepare_curve(q, i, di, "1/A"), prepare_curve(q, i, di, "1/A", EXTRA)
    assert extra.features.shape == (6, 256) == EXTRA.input_shape and extra.features.dtype == np.float32
    np.testing.assert_array_equal(extra.features[:4], default.features)
    # density: log2(1 + points in the bin) / 8, from the bins the points fall in; 0 outside the data.
    counts = np.bincount(np.searchsorted(CFG.bin_edges, q, side="right") - 1, minlength=256)
    np.testing.assert_allclose(extra.features[DENSITY], np.log2(1 + counts) / 8, rtol=1e-6)
    assert extra.features[DENSITY][: bin_of(0.004)].max() == 0.0
    # The same q-range linearly spaced (dq = 0.001 1/Å): one point per bin near q = 0.006 and about 13 in a bin near
    # q = 0.35 (bins 3.7 % wide), where the log-spaced curve has about 2 in each.
    lin = prepare_curve(np.linspace(0.005, 0.4, 400), *sphere_curve(n=400)[1:], "1/A", EXTRA).features[DENSITY]
    assert lin[bin_of(0.006)] == pytest.approx(1 / 8) and lin[bin_of(0.35)] == pytest.approx(np.log2(14) / 8, abs=0.05)
    assert extra.features[DENSITY][bin_of(0.35)] <= np.log2(4) / 8
    # noise: 1 % relative uncertainty everywhere is (log10(0.01) + 4) / 5 = 0.4 in every bin holding a point.
    filled = counts > 0
    np.testing.assert_allclose(extra.features[NOISE][filled], 0.4, atol=0.02)
    assert np.all(extra.features[NOISE][~filled] == 0.0)
    tenfold = prepare_curve(q, i, 10 * di, "1/A", EXTRA).features[NOISE]
    np.testing.assert_allclose(tenfold[filled], 0.6, atol=0.02)  # 10 %: one decade = 0.2 up


def test_extra_channels_are_checked_and_travel_in_the_json():
    assert PreprocessingConfig.from_json(EXTRA.to_json()) == EXTRA
    assert PreprocessingConfig.from_json(CFG.to_json()).channels == CHANNELS
    for bad in [("intensity", "coverage"), CHANNELS + ("density", "density"), CHANNELS + ("colour",), ("density",) + CHANNELS]:
        with pytest.raises(ValueError, match="channels must be intensity, coverage, outlier, jump, then any of density, noise"):
            PreprocessingConfig(channels=bad)
