"""Tests of keras_koopman.forecast (numpy only; no network, no TensorFlow)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from keras_koopman.forecast import MIN_LENGTH, CurveForecast, forecast_curve


def _curve(n: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    return 0.3 + 2.0 * np.exp(-0.2 * t) + 0.5 * np.exp(-0.05 * t)


def test_sum_of_exponentials_is_forecast_exactly():
    y = _curve(40)
    fc = forecast_curve(y[:15], 25)
    assert fc.method == "koopman"
    assert fc.mean.shape == fc.lower.shape == fc.upper.shape == (25,)
    np.testing.assert_allclose(fc.mean, y[15:], rtol=0, atol=1e-8)
    # the decay rates are among the eigenvalues of every member deep enough for 3 exponentials
    for (_, delays), lam in zip(fc.members, fc.eigenvalues):
        if delays < 3:
            continue
        assert np.min(np.abs(lam - np.exp(-0.2))) < 1e-6
        assert np.min(np.abs(lam - np.exp(-0.05))) < 1e-6


def test_damped_oscillation_is_forecast_exactly():
    t = np.arange(60, dtype=np.float64)
    y = 1.0 + np.exp(-0.05 * t) * np.cos(0.4 * t)
    fc = forecast_curve(y[:30], 30)
    np.testing.assert_allclose(fc.mean, y[30:], atol=1e-7)


def test_interval_widens_with_noise_and_is_ordered():
    rng = np.random.default_rng(0)
    y = _curve(30)
    widths = []
    for sigma in (0.0, 0.01, 0.1):
        fc = forecast_curve(y[:15] + sigma * rng.standard_normal(15), 15)
        assert np.all(fc.lower <= fc.mean) and np.all(fc.mean <= fc.upper)
        widths.append(float(fc.upper[-1] - fc.lower[-1]))
    assert widths[0] < 1e-6 < widths[1] < widths[2]


def test_members_residuals_of_a_noisy_curve_are_round_off():
    """The members' Hankel matrices have more columns than rows, so a noisy curve's residuals
    are ~0 and ``max_residual`` cannot drop a pair (docs/forecasting.md, "Method"); what the
    noise changes is the members' fit error."""
    rng = np.random.default_rng(2)
    y = _curve(30)[:20] + 0.02 * rng.standard_normal(20)
    fc = forecast_curve(y, 10)
    assert len(fc.residuals) >= 4
    assert max(float(np.max(r, initial=0.0)) for r in fc.residuals) < 1e-10
    assert fc.fit_rms > 1e-3


def test_interval_covers_noisy_truth_about_80_percent():
    rng = np.random.default_rng(1)
    t = np.arange(50, dtype=np.float64)
    hits = []
    for _ in range(200):
        a, c = rng.uniform(0.5, 2.0), rng.uniform(0.05, 0.3)
        y = 0.2 + a * np.exp(-c * t) + 0.02 * rng.standard_normal(50)
        fc = forecast_curve(y[:15], 35)
        hits.append(fc.lower[-1] <= y[-1] <= fc.upper[-1])
    assert 0.5 <= np.mean(hits) <= 1.0


@pytest.mark.parametrize("growth", ["drop", "clip"])
def test_growing_mode_is_not_extrapolated(growth):
    y = 1.05 ** np.arange(20.0)
    bounded = forecast_curve(y, 50, growth=growth, transform="none")
    kept = forecast_curve(y, 50, growth="keep", transform="none")
    assert np.all(np.isfinite(bounded.mean))
    assert kept.final > 5 * bounded.final
    for lam in bounded.eigenvalues:
        assert np.all(np.abs(lam) <= 1 + 1e-12)


def test_growing_oscillation_is_dropped_by_default_and_clipped_on_request():
    t = np.arange(24, dtype=np.float64)
    y = 2.0 + 0.05 * 1.03 ** t * np.cos(0.9 * t)
    dropped = forecast_curve(y, 10, transform="none")
    clipped = forecast_curve(y, 10, growth="clip", transform="none")
    assert all(np.all((np.abs(lam) < 1 - 1e-9) | (np.abs(lam - 1) < 1e-12))
               for lam in dropped.eigenvalues)
    assert any(np.any((np.abs(np.abs(lam) - 1) < 1e-9) & (np.abs(lam.imag) > 1e-6))
               for lam in clipped.eigenvalues)


def test_constant_curve_falls_back_to_constant():
    fc = forecast_curve(np.full(10, 2.5), 5)
    assert fc.method == "constant"
    np.testing.assert_array_equal(fc.mean, 2.5)
    np.testing.assert_array_equal(fc.upper - fc.lower, 0.0)


def test_bounds_clip_mean_and_interval():
    y = 1.0 - 0.9 * np.exp(-0.3 * np.arange(12.0)) + 0.03 * np.sin(np.arange(12.0) * 2.5)
    fc = forecast_curve(y, 30, bounds=(0.0, 1.0))
    assert fc.upper.max() <= 1.0 and fc.lower.min() >= 0.0


def test_result_is_frozen_and_never_nan():
    fc = forecast_curve(np.array([3.0, 2.0, 1.9, 1.85, 1.84]), 10)
    assert isinstance(fc, CurveForecast)
    with pytest.raises(AttributeError):
        fc.method = "x"
    with pytest.raises(ValueError):
        fc.mean[0] = 1.0
    assert np.all(np.isfinite(fc.mean)) and np.all(np.isfinite(fc.lower))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"values": [1.0, np.nan, 2.0, 3.0, 4.0]}, "values"),
        ({"values": [1.0, 2.0, np.inf, 3.0, 4.0]}, "values"),
        ({"values": [1.0, 2.0, 3.0]}, "values"),
        ({"values": np.ones((5, 2))}, "values"),
        ({"horizon": 0}, "horizon"),
        ({"delays": 0}, "delays"),
        ({"window": 3}, "window"),
        ({"window": 100}, "window"),
        ({"max_residual": -1.0}, "max_residual"),
        ({"growth": "grow"}, "growth"),
        ({"combine": "mode"}, "combine"),
        ({"bounds": (1.0, 0.0)}, "bounds"),
        ({"quantiles": (0.5, 1.0)}, "quantiles"),
    ],
)
def test_invalid_arguments_name_the_parameter(kwargs, name):
    args = {"values": _curve(20), "horizon": 5, **kwargs}
    with pytest.raises(ValueError, match=name):
        forecast_curve(args.pop("values"), args.pop("horizon"), **args)


@pytest.mark.parametrize(("kwargs", "name"), [({"horizon": 2.5}, "horizon"),
                                              ({"values": ["a"] * 6}, "values"),
                                              ({"delays": 2.0}, "delays")])
def test_type_errors_name_the_parameter(kwargs, name):
    args = {"values": _curve(20), "horizon": 5, **kwargs}
    with pytest.raises(TypeError, match=name):
        forecast_curve(args.pop("values"), args.pop("horizon"), **args)


def test_shortest_curve_is_accepted():
    fc = forecast_curve(_curve(MIN_LENGTH), 3)
    assert fc.mean.shape == (3,) and np.all(np.isfinite(fc.mean))


def test_module_does_not_import_tensorflow():
    code = ("import sys, keras_koopman.forecast as f; f.forecast_curve([3., 2., 1.5, 1.2, 1.1], 3);"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_log_transform_and_value_dmd_are_exact_on_their_models():
    t = np.arange(30, dtype=np.float64)
    y = np.exp(0.5 + 0.8 * np.exp(-0.2 * t))      # its log is a level plus one decaying mode
    fc = forecast_curve(y[:10], 20, transform="log")
    np.testing.assert_allclose(fc.mean, y[10:], rtol=1e-9)
    z = _curve(30)
    values_dmd = forecast_curve(z[:15], 15, increments=False, delays=(3, 4))
    np.testing.assert_allclose(values_dmd.mean, z[15:], atol=1e-7)
    with pytest.raises(ValueError, match="values"):
        forecast_curve(np.array([1.0, 0.5, 0.0, -0.1, -0.2]), 3, transform="log")
    with pytest.raises(ValueError, match="transform"):
        forecast_curve(y[:10], 3, transform="sqrt")


def test_linear_trend_is_not_extrapolated():
    fc = forecast_curve(5.0 - 0.1 * np.arange(10.0), 20)
    np.testing.assert_allclose(fc.mean, fc.mean[0])   # flat: λ = 1 of the increments is the level


def test_auto_transform_picks_the_space_whose_model_fits():
    t = np.arange(30, dtype=np.float64)
    y = np.exp(0.5 + 0.8 * np.exp(-0.2 * t))      # a sum of exponentials in log space
    fc = forecast_curve(y[:10], 20)
    assert fc.transform == "log"
    np.testing.assert_allclose(fc.mean, y[10:], rtol=1e-9)
    z = _curve(30)                                 # a sum of exponentials in value space
    fc = forecast_curve(z[:15], 15)
    assert fc.transform == "none"
    np.testing.assert_allclose(fc.mean, z[15:], atol=1e-8)
    assert forecast_curve(z[:15], 15, transform="none").transform == "none"


def test_auto_transform_uses_values_when_not_positive_or_too_short():
    y = 1.0 - 0.3 * np.arange(8.0) + 0.01 * np.arange(8.0) ** 2   # crosses zero
    fc = forecast_curve(y, 5)
    assert fc.transform == "none" and np.all(np.isfinite(fc.mean))
    assert forecast_curve(_curve(MIN_LENGTH), 3).transform == "none"  # no room to backtest
    # backtests that fall back (no member fits 4 values; a constant head) never pick the log
    assert forecast_curve(np.array([3.0, 2.0, 1.9, 1.85, 1.84]), 10).transform == "none"
    assert forecast_curve(np.r_[np.full(8, 2.3), 2.2, 2.0], 10).transform == "none"
    assert forecast_curve(np.full(10, 2.5), 5).method == "constant"


def test_log_interval_scale_is_in_the_units_of_the_values():
    t = np.arange(40, dtype=np.float64)
    rng = np.random.default_rng(3)
    y = np.exp(0.5 + 0.8 * np.exp(-0.2 * t) + 0.02 * rng.standard_normal(40))
    unit = forecast_curve(y[:12], 28, transform="log", quantiles=(-1.0, 1.0))
    wide = forecast_curve(y[:12], 28, transform="log", quantiles=(-3.0, 2.0))
    scale = unit.upper - unit.mean
    assert np.all(scale > 0)
    np.testing.assert_allclose(unit.mean - unit.lower, scale)      # symmetric: mean ± s_k
    np.testing.assert_allclose(wide.upper - wide.mean, 2.0 * scale)
    np.testing.assert_allclose(wide.mean - wide.lower, 3.0 * scale)
    assert unit.fit_rms > 0 and np.all(np.isfinite(unit.spread))
