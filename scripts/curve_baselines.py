"""Baseline learning-curve extrapolators for scripts/bench_forecast.py.

Every method takes the observed curve ``y`` (epochs ``x = 1 … n``), the horizon ``h`` and the
metric's orientation and returns ``(final, scale)``: the predicted value at epoch ``n + h`` and a
scale of its uncertainty (the benchmark turns it into an 80 % interval ``final + q · scale`` with
quantiles ``q`` calibrated on the selection half, the same way for every method).

* ``last_value``: ``y[-1]``; scale: random walk with the curve's step RMS, ``rms · sqrt(h)``.
* ``best_so_far``: the best observed value (min for a loss, max for an accuracy); same scale.
* ``power_law``: least squares ``a + b·x^(−c)``, ``c > 0``; scale: fit RMS · sqrt(h).
* ``exponential``: least squares ``a + b·exp(−c·x)``, ``c > 0``; scale: fit RMS · sqrt(h).
* ``domhan``: the parametric ensemble of Domhan, Springenberg and Hutter (IJCAI 2015): the
  families pow3, pow4, log_power, exp4, Janoschek, Weibull, MMF, ilog2, vap and loglog_linear,
  written as increasing saturating curves and fitted (least squares, ``scipy.optimize.
  least_squares``) to ``z = y`` for an accuracy and ``z = max(y) − y`` for a loss.
  **Combination rule** (replacing the paper's MCMC, which costs minutes per curve): every family
  is fitted to the curve without its last ``k = max(1, round(0.2 n))`` values and scored by the
  RMSE on those ``k`` values; it is refitted on the whole curve; families whose fit failed or
  whose prediction leaves the plausible range (an accuracy outside [0, 1], a negative loss or
  one above ``10·max(y) + 1``) are dropped; the others are averaged with weights
  ``∝ 1 / (tail RMSE² + 1e-12)``.  Scale: the weighted standard deviation of the families'
  predictions plus the weighted fit RMS · sqrt(h).  Falls back to the last value if no family
  survives.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.optimize import least_squares


def _step_rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.diff(y) ** 2))) if y.size > 1 else 0.0


def last_value(y: np.ndarray, h: int, increasing: bool) -> tuple[float, float]:
    return float(y[-1]), _step_rms(y) * math.sqrt(h)


def best_so_far(y: np.ndarray, h: int, increasing: bool) -> tuple[float, float]:
    return float(y.max() if increasing else y.min()), _step_rms(y) * math.sqrt(h)


def _fit(f, p0, x, y, bounds=(-np.inf, np.inf)):
    """Least-squares fit of ``f(x, *p)``; returns the parameters or None."""
    def resid(p):
        with np.errstate(all="ignore"):
            r = f(x, *p) - y
        return np.where(np.isfinite(r), r, 1e6)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sol = least_squares(resid, p0, bounds=bounds, max_nfev=100, method="trf")
    except (ValueError, np.linalg.LinAlgError):
        return None
    return sol.x if np.all(np.isfinite(sol.x)) else None


def _eval(f, p, x):
    with np.errstate(all="ignore"):
        return np.asarray(f(x, *p), dtype=np.float64)


def _power(x, a, b, c):
    return a + b * x ** (-c)


def _exp(x, a, b, c):
    return a + b * np.exp(-c * x)


def _simple(f, p0_fn, bounds):
    def method(y: np.ndarray, h: int, increasing: bool) -> tuple[float, float]:
        x = np.arange(1, y.size + 1, dtype=np.float64)
        p = _fit(f, p0_fn(y), x, y, bounds)
        if p is None:
            return last_value(y, h, increasing)
        pred = float(_eval(f, p, np.array([y.size + h], dtype=np.float64))[0])
        rms = float(np.sqrt(np.mean((_eval(f, p, x) - y) ** 2)))
        if not math.isfinite(pred):
            return last_value(y, h, increasing)
        return pred, rms * math.sqrt(h)
    return method


power_law = _simple(_power, lambda y: [y[-1], y[0] - y[-1], 0.5],
                    ([-np.inf, -np.inf, 1e-3], [np.inf, np.inf, 10.0]))
exponential = _simple(_exp, lambda y: [y[-1], (y[0] - y[-1]) * math.e ** 0.1, 0.1],
                      ([-np.inf, -np.inf, 1e-4], [np.inf, np.inf, 5.0]))

# Domhan et al. (2015) families, increasing saturating forms of x >= 1:
# name -> (function, initial guess from z, lower bounds, upper bounds)
_INF = np.inf


def _families(z: np.ndarray):
    z0, zl = float(z[0]), float(z[-1])
    n = z.size
    gap = max(zl - z0, 1e-3)
    return {
        "pow3": (lambda x, c, a, al: c - a * x ** (-al), [zl, gap, 0.5],
                 [-_INF, 0, 0], [_INF, _INF, 10]),
        "pow4": (lambda x, c, a, b, al: c - (a * x + b) ** (-al), [zl, 1.0, 1.0, 0.5],
                 [-_INF, 0, 0, 0], [_INF, _INF, _INF, 10]),
        "log_power": (lambda x, a, b, c: a / (1 + (x / np.exp(b)) ** c),
                      [max(zl, 1e-3) * 1.1, math.log(n), -1.0], [-_INF, -10, -10], [_INF, 20, 0]),
        "exp4": (lambda x, c, a, b, al: c - np.exp(-a * x ** al + b), [zl, 0.5, math.log(gap), 1.0],
                 [-_INF, 0, -_INF, 0], [_INF, _INF, _INF, 5]),
        "janoschek": (lambda x, a, b, k, d: a - (a - b) * np.exp(-k * x ** d), [zl, z0, 0.1, 1.0],
                      [-_INF, -_INF, 0, 0], [_INF, _INF, _INF, 5]),
        "weibull": (lambda x, a, b, k, d: a - (a - b) * np.exp(-(k * x) ** d), [zl, z0, 0.1, 1.0],
                    [-_INF, -_INF, 0, 0], [_INF, _INF, _INF, 5]),
        "mmf": (lambda x, a, b, k, d: a - (a - b) / (1 + (k * x) ** d), [zl, z0, 0.2, 1.0],
                [-_INF, -_INF, 0, 0], [_INF, _INF, _INF, 5]),
        "ilog2": (lambda x, c, a: c - a / np.log(x + 1), [zl, gap], [-_INF, -_INF], [_INF, _INF]),
        "vap": (lambda x, a, b, c: np.exp(a + b / x + c * np.log(x)),
                [math.log(max(zl, 1e-3)), -0.1, 0.0], [-_INF, -_INF, -_INF], [_INF, _INF, _INF]),
        "loglog_linear": (lambda x, a, b: np.log(a * np.log(x) + b),
                          [0.1, math.exp(min(max(z0, -5), 5))], [-_INF, -_INF], [_INF, _INF]),
    }


def domhan(y: np.ndarray, h: int, increasing: bool) -> tuple[float, float]:
    n = y.size
    offset = 0.0 if increasing else float(y.max())
    z = y if increasing else offset - y
    x = np.arange(1, n + 1, dtype=np.float64)
    k = max(1, round(0.2 * n))
    target = np.array([n + h], dtype=np.float64)
    preds, weights, rmss = [], [], []
    for f, p0, lo, hi in _families(z).values():
        p0 = np.clip(p0, np.asarray(lo) + 1e-9, np.asarray(hi) - 1e-9)
        p_tail = _fit(f, p0, x[:-k], z[:-k], (lo, hi)) if n - k >= len(p0) else None
        if p_tail is None:
            continue
        tail_err = float(np.sqrt(np.mean((_eval(f, p_tail, x[-k:]) - z[-k:]) ** 2)))
        p = _fit(f, p_tail, x, z, (lo, hi))
        if p is None or not math.isfinite(tail_err):
            continue
        zf = float(_eval(f, p, target)[0])
        value = zf if increasing else offset - zf
        plausible = (0.0 <= value <= 1.0) if increasing else (0.0 <= value <= 10 * y.max() + 1)
        if not (math.isfinite(value) and plausible):
            continue
        preds.append(value)
        weights.append(1.0 / (tail_err**2 + 1e-12))
        rmss.append(float(np.sqrt(np.mean((_eval(f, p, x) - z) ** 2))))
    if not preds:
        return last_value(y, h, increasing)
    w = np.asarray(weights) / np.sum(weights)
    preds_a = np.asarray(preds)
    mean = float(w @ preds_a)
    std = float(np.sqrt(w @ (preds_a - mean) ** 2))
    return mean, std + float(w @ np.asarray(rmss)) * math.sqrt(h)


BASELINES = {
    "last_value": last_value,
    "best_so_far": best_so_far,
    "power_law": power_law,
    "exponential": exponential,
    "domhan": domhan,
}
