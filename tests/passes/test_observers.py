"""Calibration observers: bounded histograms, ranges against numpy, scales against the formulas."""
from __future__ import annotations

import numpy as np
import pytest

from tensorsmith.passes.observers import (BINS, SAMPLE_ROWS, EntropyObserver, MSEObserver,
                                          Observer, PercentileObserver, fake_quant_np,
                                          make_observer, params_for_range, weight_params)

RNG = np.random.default_rng(0)


def _fq(x, scale, zp, lo, hi):
    """float64 fake-quant of x with an integer grid."""
    z = 0.0 if zp is None else float(zp)
    return (np.clip(np.round(x / scale) + z, lo, hi) - z) * scale


def test_minmax_sees_the_exact_range_across_batches_in_bounded_memory():
    obs = Observer()
    batches = [RNG.normal(size=1000) * (1 + i) for i in range(20)]  # the range keeps growing
    for b in batches:
        obs.update(b)
    every = np.concatenate(batches)
    assert (obs.lo, obs.hi) == (pytest.approx(every.min()), pytest.approx(every.max()))
    assert obs.hist.shape == (BINS,) and obs.hist.sum() == every.size  # rebinning keeps mass
    scale, zp = obs.scale_zero_point("i8", "symmetric")
    assert float(scale) == pytest.approx(np.abs(every).max() / 127, rel=1e-6)
    assert int(zp) == 0


def test_percentile_matches_numpy_within_a_bin():
    x = np.concatenate([RNG.normal(size=50_000), [40.0, -35.0]])  # two far outliers
    obs = PercentileObserver(99.0)
    for chunk in np.array_split(x, 7):
        obs.update(chunk)
    lo, hi = obs.clip_range("i8", "symmetric")
    want = np.percentile(np.abs(x), 99.0)
    bin_width = 2 * 40.0 / BINS * 2  # the range grew up to 2x
    assert hi == pytest.approx(want, abs=bin_width) and lo == -hi
    lo_a, hi_a = obs.clip_range("u8", "affine")  # affine: each tail on its own
    assert lo_a == pytest.approx(np.percentile(x, 1.0), abs=bin_width)
    assert hi_a == pytest.approx(np.percentile(x, 99.0), abs=bin_width)


def _errors(obs, x):
    mm = Observer()
    mm.update(x)
    s_obs, _ = obs.scale_zero_point("i8", "symmetric")
    s_mm, _ = mm.scale_zero_point("i8", "symmetric")
    return (np.mean((_fq(x, float(s_obs), 0, -128, 127) - x) ** 2),
            np.mean((_fq(x, float(s_mm), 0, -128, 127) - x) ** 2))


def test_mse_observer_clips_where_the_squared_error_is_least():
    x = np.concatenate([RNG.laplace(size=100_000), [60.0]])  # one outlier stretches minmax
    obs = MSEObserver()
    obs.update(x)
    lo, hi = obs.clip_range("i8", "symmetric")
    # the optimum of N*step^2/12 + (60 - t)^2 with step = t/127 is near t = 39.8
    assert 35 < hi < 45 and lo == pytest.approx(max(x.min(), -hi))  # never past what was seen
    err, err_mm = _errors(obs, x)
    assert err < 0.8 * err_mm
    y = RNG.normal(size=100_000)  # no outlier: little to gain, never worse than minmax
    obs2 = MSEObserver()
    obs2.update(y)
    err2, err2_mm = _errors(obs2, y)
    assert err2 <= err2_mm * 1.001


def test_entropy_observer_clips_the_tail_of_a_heavy_distribution():
    x = np.concatenate([RNG.laplace(size=100_000), [60.0, -55.0]])
    obs = EntropyObserver()
    obs.update(x)
    lo, hi = obs.clip_range("i8", "symmetric")
    assert 3.0 < hi < 30.0 and lo == pytest.approx(max(x.min(), -hi))
    assert np.mean(np.abs(x) > hi) < 0.01  # the tail it gives up is small
    # a relu's zeros do not drag the threshold down: half zeros, half |laplace|
    r = np.concatenate([np.zeros(50_000), np.abs(RNG.laplace(size=50_000))])
    obs_r = EntropyObserver()
    obs_r.update(r)
    assert np.mean(r > obs_r.clip_range("i8", "symmetric")[1]) < 0.01


def test_affine_range_represents_zero_exactly():
    scale, zp = params_for_range(-1.0, 3.0, "u8", "affine")
    assert float(scale) == pytest.approx(4 / 255)
    assert int(zp) == 64 and zp.dtype == np.uint8
    # a range that does not contain 0 is widened to it
    scale2, zp2 = params_for_range(0.5, 2.0, "u8", "affine")
    assert int(zp2) == 0 and float(scale2) == pytest.approx(2.0 / 255)


def test_float8_scale_maps_the_range_to_the_largest_finite_value():
    scale, zp = params_for_range(-2.0, 896.0, "f8e4m3fn", "symmetric")
    assert zp is None and float(scale) == pytest.approx(896.0 / 448.0)
    scale5, _ = params_for_range(-1.0, 1.0, "f8e5m2", "affine")
    assert float(scale5) == pytest.approx(1.0 / 57344.0)


def test_weight_params_per_channel_and_per_group():
    w = RNG.normal(size=(64, 5)).astype(np.float32)
    s, zp = weight_params(w, "i8", "symmetric", axis=1)
    np.testing.assert_allclose(s, np.abs(w).max(axis=0) / 127, rtol=1e-6)
    assert zp.shape == (5,) and not zp.any()
    sg, _ = weight_params(w, "i4", "symmetric", axis=None, group=(0, 16))
    assert sg.shape == (4, 5)
    np.testing.assert_allclose(sg, np.abs(w.reshape(4, 16, 5)).max(axis=1) / 7, rtol=1e-6)
    # mse per channel never does worse than the plain range on any channel
    sm, _ = weight_params(w, "i4", "symmetric", axis=1, observer="mse")
    for c in range(5):
        e_mse = np.mean((_fq(w[:, c], sm[c], 0, -8, 7) - w[:, c]) ** 2)
        e_mm = np.mean((_fq(w[:, c], np.abs(w[:, c]).max() / 7, 0, -8, 7) - w[:, c]) ** 2)
        assert e_mse <= e_mm + 1e-12


def test_clipped_fraction_and_unknown_state():
    obs = make_observer("minmax")
    with pytest.raises(ValueError, match="seen no data"):
        obs.scale_zero_point("i8", "symmetric")
    x = np.linspace(-1, 1, 10_001)
    obs.update(x)
    assert obs.clipped_fraction(-0.5, 0.5) == pytest.approx(0.5, abs=0.01)
    assert obs.clipped_fraction(-1, 1) == 0.0


def test_fake_quant_np_matches_the_formula_and_float8_rounding():
    import ml_dtypes
    x = RNG.normal(size=500) * 3
    np.testing.assert_array_equal(fake_quant_np(x, 0.05, np.int8(3), "i8"),
                                  _fq(x, 0.05, 3, -128, 127))
    want = (x / 0.01).clip(-448, 448).astype(np.float32).astype(ml_dtypes.float8_e4m3fn)
    np.testing.assert_array_equal(fake_quant_np(x, 0.01, None, "f8e4m3fn"),
                                  want.astype(np.float64) * 0.01)


def test_auto_observer_keeps_the_candidate_with_the_least_reader_error():
    """Every candidate range scored by an independent float64 computation of the readers'
    output error: the observer keeps the argmin, and the sample it scored spans the batches."""
    w = RNG.normal(size=(16, 8))
    w[3] *= 30  # the reader amplifies channel 3: clipping its outliers costs a lot
    batches = []
    for i in range(6):
        x = RNG.laplace(size=(40, 16))
        x[i, (3 + i) % 16] = 25.0  # outliers, one in channel 3
        batches.append(x)
    obs = make_observer("auto", batches=len(batches))
    for b in batches:
        obs.update(b)
    assert 0 < sum(len(s) for s in obs.sample) <= SAMPLE_ROWS
    assert len(obs.sample) == len(batches)  # rows from every batch, not the first only
    x = np.concatenate(obs.sample).astype(np.float64)
    cands = obs.candidates("i8", "symmetric")
    assert set(cands) >= {"minmax", "mse", "entropy", "percentile 99.99"}
    want = {}
    for name, (lo, hi) in cands.items():
        s = float(np.float32(max(-lo, hi) / 127))  # scales are stored as float32
        want[name] = np.sum(((np.clip(np.round(x / s), -128, 127) * s - x) @ w) ** 2)
    costs = obs.choose("i8", "symmetric", lambda x, xq: np.sum(((xq - x) @ w) ** 2))
    for k in want:
        assert costs[k] == pytest.approx(want[k], rel=1e-9)
    best = min(want, key=want.get)
    assert obs.chosen[0] == best and obs.clip_range("i8", "symmetric") == cands[best]
    # one far outlier among 100k values: scored by the tensor's own error, clipping wins
    own = make_observer("auto")
    own.update(np.concatenate([RNG.laplace(size=100_000), [60.0]]))
    own.choose("i8", "symmetric", lambda x, xq: np.sum((xq - x) ** 2))
    assert own.chosen[0] != "minmax" and own.chosen[2] < 59


def test_weight_params_mse_per_group_is_the_best_grid_ratio():
    """observer=mse with groups: each group's scale is the 0.5..1 ratio of its range whose
    int4 rounding error is least (brute force in float64), and never worse than the range."""
    w = RNG.standard_t(3, size=(64, 5))
    sm, _ = weight_params(w, "i4", "symmetric", axis=None, group=(0, 16), observer="mse")
    assert sm.shape == (4, 5)
    for g in range(4):
        for c in range(5):
            blk = w[16 * g:16 * g + 16, c]
            amax = np.abs(blk).max()
            errs = {float(np.float32(r * amax / 7)):
                    np.sum((_fq(blk, np.float32(r * amax / 7), 0, -8, 7) - blk) ** 2)
                    for r in np.linspace(0.5, 1.0, 21)}
            assert sm[g, c] == pytest.approx(min(errs, key=errs.get), rel=1e-6)
    assert (sm < np.abs(w.reshape(4, 16, 5)).max(axis=1) / 7 * (1 - 1e-6)).any()
