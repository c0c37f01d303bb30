"""Koopman forecast of a scalar training curve (loss or accuracy) with an 80 % interval.

:func:`forecast_curve` continues a learning curve ``f_0 … f_{n-1}`` for ``horizon`` epochs by
the Koopman mode decomposition of its delay embedding (Hankel DMD_RRR; the paper's Eq. (2),
``f_t ≈ Σ_j φ_j λ_jᵗ α_j``, evaluated beyond the data):

0. **Space.**  The observable is the curve itself or its logarithm (``transform``; a loss that
   decays multiplicatively is a short sum of modes in log space).  With ``"auto"`` (default)
   both are backtested on the curve, forecasting its last ``round(BACKTEST_FRACTION·n)``
   values from the ones before, and the one with the smaller squared error is used (the values
   when any is ``<= 0``).  Steps 1–4 run in that space; a log forecast ``m`` is mapped back as
   ``exp(m)`` with the interval scale ``exp(m)·s_k``.
1. **Members.**  For every window ``W`` (the last ``W`` values) and delay depth ``L`` of a small
   grid (:data:`DEFAULT_WINDOWS`, :data:`DEFAULT_DELAYS`, only pairs whose Hankel fit is
   overdetermined), :func:`~keras_koopman.koopman.dmd_rrr_series` of the window's increments
   ``f_{t+1} − f_t`` (``increments=True``; the values themselves, centred, with ``False``)
   gives Ritz values λ_j with data-driven residuals.  Increments have the eigenvalues of the
   values except λ = 1, which step 3 adds, so no delay dimension is spent on the level.
2. **Modes trusted.**  Pairs with residual above ``max_residual`` are dropped (spurious; the
   members' Hankel matrices have more columns than rows, so for a noisy curve the residuals
   are round-off and this rarely acts: noise shows in the fit error), and so
   are ``Re λ <= 0`` (sign-alternating noise); a growing mode ``|λ| > 1`` is handled by
   ``growth``: ``"drop"`` (default) removes it, ``"clip"`` puts it on the unit circle (a
   trend that stops growing; the same as dropping for a real λ, an undamped oscillation for a
   complex pair), ``"keep"`` keeps it.
3. **Amplitudes.**  A constant mode λ = 1 is added (learning curves level off), the amplitudes
   ``φ_j α_j`` of ``1, λ_jᵗ`` (a real basis for conjugate pairs) are refitted by least squares
   on the window's values, and the sum is evaluated at the next ``horizon`` epochs.  No linear
   trend is fitted: a λ = 1 of the increments coincides with the constant mode, so a curve
   with constant increments is forecast flat (no linear extrapolation of real curves).
4. **Combination.**  The members' forecasts are averaged (``combine="mean"``; ``"median"``);
   their spread (MAD × 1.4826) and the median residual standard error σ of their fits give a
   scale ``s_k = sqrt(spread_k² + σ² · k)`` at step ``k``, and the 80 % interval is
   ``mean + [q_lo, q_hi] · s_k`` with the quantile pair of :data:`INTERVAL_QUANTILES` for the
   bin of :data:`RATIO_EDGES` that holds ``k / n``, calibrated once on the selection half of the
   corpus of real learning curves (``scripts/bench_forecast.py``; ``docs/forecasting.md``).

The defaults were chosen by measurement on the selection half of that corpus
(``docs/forecasting.md``).

Fallbacks (``CurveForecast.method``): a constant curve (peak-to-peak below ``1e-12`` of its
level) is forecast as constant with a zero-width interval (``"constant"``); when no member can be
fitted the last value is used with the interval of a random walk with the curve's step RMS
(``"last_value"``).  Non-finite values, too short curves and bad options raise ``ValueError`` or
``TypeError`` naming the parameter; the result never holds NaN.

Cost per call: one DMD_RRR of an ``L × (W − L)`` Hankel matrix per member (at most
``len(DEFAULT_WINDOWS) · len(DEFAULT_DELAYS)`` = 8 members) plus a ``W × (k + 1)`` least-squares
fit each, ``O(W·L² + W·k²)`` per member; ``transform="auto"`` adds the two backtests (about
2.5× the cost of one space): about 15 ms per call for curves of 5–25 epochs on a shared 2-core
machine (``docs/forecasting.md``).  numpy/scipy only: no TensorFlow import.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from keras_koopman.koopman import dmd_rrr_series

__all__ = [
    "BACKTEST_FRACTION",
    "CurveForecast",
    "DEFAULT_DELAYS",
    "DEFAULT_WINDOWS",
    "INTERVAL_QUANTILES",
    "MIN_LENGTH",
    "RATIO_EDGES",
    "forecast_curve",
]

#: Fewest values :func:`forecast_curve` accepts (a window of 4 with delay depth 2).
MIN_LENGTH = 4
#: Delay depths L of the ensemble (each used where the window allows ``W >= 2L``).
DEFAULT_DELAYS: tuple[int, ...] = (2, 3, 4, 6)
#: Windows of the ensemble as fractions of the curve (the last ``ceil(f·n)`` values).
DEFAULT_WINDOWS: tuple[float, ...] = (1.0, 0.5)
#: Upper edges of the horizon-to-length ratio bins ``k / n`` of :data:`INTERVAL_QUANTILES`.
RATIO_EDGES: tuple[float, ...] = (1.5, 3.0, 6.0, math.inf)
#: Normalised-error quantiles (10 %, 90 %) per ratio bin: at step ``k`` of a forecast from ``n``
#: values the 80 % interval is ``mean + [q_lo, q_hi]·s_k`` with the pair of the bin holding
#: ``k / n``.  Calibrated on the selection half of the corpus by scripts/bench_forecast.py.
INTERVAL_QUANTILES: tuple[tuple[float, float], ...] = (
    (-2.558, 1.161), (-5.870, 2.148), (-11.380, 2.842), (-420.423, 15.638))
_GROWTH = ("clip", "drop", "keep")
_TRANSFORMS = ("auto", "none", "log")
#: Fraction of the curve that ``transform="auto"`` holds back to compare the two transforms.
BACKTEST_FRACTION = 0.2


@dataclass(frozen=True)
class CurveForecast:
    """Forecast of a scalar curve for the next ``horizon`` epochs.

    Attributes
    ----------
    mean : ndarray, shape (horizon,)
        Point forecast at epochs ``n, n+1, …, n+horizon-1`` (0-based, ``n`` observed values).
    lower, upper : ndarray, shape (horizon,)
        Central 80 % prediction interval (``lower <= mean <= upper``).
    method : str
        ``"koopman"``, or the fallback used: ``"constant"`` or ``"last_value"``.
    eigenvalues : tuple of ndarray
        The Koopman eigenvalues each member used (after selection; the added λ = 1 included).
    residuals : tuple of ndarray
        Their DMD_RRR residuals (0 for the added constant mode).
    members : tuple of (int, int)
        ``(window, delays)`` of each member that was fitted.
    fit_rms : float
        Median residual standard error of the members' in-sample fits (the noise level σ the
        interval uses).
    spread : ndarray, shape (horizon,)
        Spread (median absolute deviation × 1.4826) of the members' forecasts.
    transform : str
        The space the modes were fitted in: ``"none"`` (the values) or ``"log"`` (their
        logarithm; ``fit_rms`` is then in log units and ``spread`` in the units of the values).

    The interval is calibrated on held-apart data, not a Bayesian posterior: see
    ``docs/forecasting.md`` for its measured coverage.
    """

    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    method: str
    eigenvalues: tuple[np.ndarray, ...]
    residuals: tuple[np.ndarray, ...]
    members: tuple[tuple[int, int], ...]
    fit_rms: float
    spread: np.ndarray
    transform: str = "none"

    def __post_init__(self) -> None:
        for name in ("mean", "lower", "upper", "spread"):
            getattr(self, name).setflags(write=False)

    @property
    def final(self) -> float:
        """The point forecast at the last epoch of the horizon."""
        return float(self.mean[-1])

    @property
    def horizon(self) -> int:
        return int(self.mean.shape[0])


def forecast_curve(
    values,
    horizon: int,
    *,
    delays: int | Sequence[int] | None = None,
    window: int | Sequence[int] | None = None,
    max_residual: float = 0.5,
    growth: str = "drop",
    combine: str = "mean",
    oscillations: bool = True,
    increments: bool = True,
    transform: str = "auto",
    bounds: tuple[float | None, float | None] | None = None,
    quantiles: tuple[float, float] | None = None,
) -> CurveForecast:
    """Forecast the next ``horizon`` values of a learning curve by Hankel DMD_RRR.

    The forecast continues the Koopman mode decomposition of the curve's delay embedding
    (paper, Eq. (2): ``f_t ≈ Σ_j φ_j λ_jᵗ α_j``) with the modes selected and combined as in the
    module docstring.

    Parameters
    ----------
    values : array_like, shape (n,)
        The curve so far (one value per epoch), finite, ``n >= MIN_LENGTH``.
    horizon : int
        Number of future epochs to forecast (>= 1).
    delays : int or sequence of int, optional
        Delay depths L of the ensemble (default :data:`DEFAULT_DELAYS`); each >= 1.
    window : int or sequence of int, optional
        Window lengths (the last ``W`` values) of the ensemble (default: the fractions
        :data:`DEFAULT_WINDOWS` of ``n``); each in ``[MIN_LENGTH, n]``.
    max_residual : float
        Drop Ritz pairs with a larger DMD_RRR residual (> 0).
    growth : {"clip", "drop", "keep"}
        What to do with a growing mode ``|λ| > 1``.
    combine : {"median", "mean"}
        How the members' forecasts are combined.
    oscillations : bool
        Keep complex-conjugate pairs (damped oscillations); ``False`` keeps real λ only.
    increments : bool
        Take the eigenvalues from the Hankel DMD of the increments ``f_{t+1} − f_t`` (the same
        λ except the constant, which is added anyway) instead of the values.
    transform : {"auto", "none", "log"}
        ``"log"`` forecasts ``log(values)`` (multiplicative decay; needs positive values, e.g. a
        loss): the point forecast is ``exp`` of the log-space forecast ``m`` and the interval
        scale is ``exp(m)·s_k`` (first order), so the quantiles are in the units of the values
        as for ``"none"``.  ``"auto"`` (default) backtests both on the curve: each forecasts the
        last ``k = max(1, round(BACKTEST_FRACTION·n))`` values from the ones before, and the
        one with the smaller mean squared error is used (``"none"`` on a tie, when a value is
        ``<= 0``, when fewer than ``MIN_LENGTH`` values would remain, or when a backtest falls
        back to the constant or last-value forecast).
    bounds : (lower, upper), optional
        Clip the forecast and its interval into this range (``None`` for an open side), e.g.
        ``(0, None)`` for a loss and ``(0, 1)`` for an accuracy.
    quantiles : (q_lo, q_hi), optional
        Normalised-error quantiles of the interval at every step (default: the pair of
        :data:`INTERVAL_QUANTILES` for the bin of :data:`RATIO_EDGES` holding ``k / n``).

    Returns
    -------
    CurveForecast

    Raises
    ------
    TypeError
        Non-numeric ``values`` or a non-integer ``horizon``, ``delays`` or ``window``.
    ValueError
        ``values`` not 1-D, shorter than :data:`MIN_LENGTH` or holding NaN/inf; a bad
        ``horizon``, ``delays``, ``window``, ``max_residual``, ``growth``, ``combine``,
        ``bounds`` or ``quantiles``.
    """
    y = _check_values(values)
    horizon = _check_int(horizon, "horizon", 1)
    n = y.shape[0]
    delay_grid = DEFAULT_DELAYS if delays is None else _check_grid(delays, "delays", 1, None)
    if window is None:
        window_grid = tuple(sorted({max(MIN_LENGTH, math.ceil(f * n)) for f in DEFAULT_WINDOWS}))
    else:
        window_grid = _check_grid(window, "window", MIN_LENGTH, n)
    if not (isinstance(max_residual, numbers.Real) and max_residual > 0):
        raise ValueError(f"max_residual must be a positive number; got {max_residual!r}")
    if growth not in _GROWTH:
        raise ValueError(f"growth must be one of {_GROWTH}; got {growth!r}")
    if combine not in ("median", "mean"):
        raise ValueError(f"combine must be 'median' or 'mean'; got {combine!r}")
    for flag, flag_name in ((oscillations, "oscillations"), (increments, "increments")):
        if not isinstance(flag, bool):
            raise TypeError(f"{flag_name} must be a bool; got {flag!r}")
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {_TRANSFORMS}; got {transform!r}")
    if transform == "log" and np.any(y <= 0):
        raise ValueError("values must be positive with transform='log'")
    options = {"delays": delays, "window": window, "max_residual": max_residual,
               "growth": growth, "combine": combine, "oscillations": oscillations,
               "increments": increments}
    if transform == "auto":
        transform = _choose_transform(y, options)
    q_lo, q_hi = _interval_quantiles(quantiles, horizon, n)
    if transform == "log":
        fc = forecast_curve(np.log(y), horizon, transform="none",
                            quantiles=(-1.0, 1.0), **options)
        with np.errstate(over="ignore"):
            mean = np.exp(fc.mean)
        if np.all(np.isfinite(mean)) and np.all(np.isfinite(mean * (fc.upper - fc.mean))):
            scale = mean * (fc.upper - fc.mean)  # first-order scale in the units of the values
            return _result(mean, mean + q_lo * scale, mean + q_hi * scale, fc.method,
                           list(zip(fc.eigenvalues, fc.residuals)), fc.fit_rms,
                           mean * fc.spread, *_check_bounds(bounds), fc.members,
                           transform="log")
        transform = "none"  # exp overflowed: forecast the values themselves
    lo_bound, hi_bound = _check_bounds(bounds)
    steps = np.arange(1, horizon + 1, dtype=np.float64)

    level = max(1.0, float(np.max(np.abs(y))))
    if float(np.ptp(y)) <= 1e-12 * level:
        flat = np.full(horizon, y[-1])
        return _result(flat, flat, flat, "constant", [], 0.0, np.zeros(horizon),
                       lo_bound, hi_bound)

    forecasts, eigs, members, rms = [], [], [], []
    for w in window_grid:
        tail = y[n - w:]
        for L in delay_grid:
            if w - int(increments) < 2 * L:
                continue
            member = _member(tail, L, horizon, max_residual, growth, oscillations, increments)
            if member is None:
                continue
            forecasts.append(member[0])
            eigs.append(member[1])
            rms.append(member[2])
            members.append((w, L))
    if not forecasts:
        step_rms = float(np.sqrt(np.mean(np.diff(y) ** 2)))
        scale = step_rms * np.sqrt(steps)
        last = np.full(horizon, y[-1])
        return _result(last, last + q_lo * scale, last + q_hi * scale, "last_value", [],
                       step_rms, np.zeros(horizon), lo_bound, hi_bound)
    stack = np.asarray(forecasts)
    mean = np.median(stack, axis=0) if combine == "median" else stack.mean(axis=0)
    spread = 1.4826 * np.median(np.abs(stack - np.median(stack, axis=0)), axis=0)
    fit_rms = float(np.median(rms))
    scale = np.sqrt(spread**2 + fit_rms**2 * steps)
    return _result(mean, mean + q_lo * scale, mean + q_hi * scale, "koopman", eigs, fit_rms,
                   spread, lo_bound, hi_bound, members)


def _member(tail: np.ndarray, delays: int, horizon: int, max_residual: float, growth: str,
            oscillations: bool, increments: bool):
    """One ensemble member: ``(forecast, (eigenvalues, residuals), fit_rms)`` or None."""
    series = np.diff(tail) if increments else tail - float(np.mean(tail))
    try:
        modes = dmd_rrr_series(series, delays)
    except ValueError:  # rank 0 (a flat window) and the like
        return None
    lam = modes.eigenvalues
    res = modes.residuals
    keep = (res <= max_residual) & (lam.real > 0)
    if not oscillations:
        keep &= np.abs(lam.imag) <= 1e-12
    lam, res = lam[keep], res[keep]
    radius = np.abs(lam)
    growing = radius > 1.0
    if growth == "drop":
        lam, res = lam[~growing], res[~growing]
    elif growth == "clip":
        lam = np.where(growing, lam / np.where(growing, radius, 1.0), lam)
    # real basis: 1, λᵗ for real λ, Re/Im λᵗ for each conjugate pair (positive Im first)
    basis_lam = [1.0 + 0j] + [z for z in lam if z.imag >= 0 and abs(z - 1.0) > 1e-9]
    times = np.arange(tail.shape[0] + horizon, dtype=np.float64)
    columns = []
    for z in basis_lam:
        power = np.exp(times * np.log(z)) if z != 0 else np.zeros_like(times, dtype=complex)
        columns.append(power.real)
        if abs(z.imag) > 1e-12:
            columns.append(power.imag)
    basis = np.column_stack(columns)
    w = tail.shape[0]
    coef, *_ = np.linalg.lstsq(basis[:w], tail, rcond=1e-10)
    fitted = basis @ coef
    if not np.all(np.isfinite(fitted)):
        return None
    # residual standard error: degrees of freedom w − (number of basis functions), at least 1
    fit_rms = float(np.sqrt(np.sum((fitted[:w] - tail) ** 2) / max(w - basis.shape[1], 1)))
    kept = np.asarray(basis_lam, dtype=np.complex128)
    kept_res = np.concatenate([[0.0], [r for z, r in zip(lam, res)
                                        if z.imag >= 0 and abs(z - 1.0) > 1e-9]])
    return fitted[w:], (kept, kept_res.astype(np.float64)), fit_rms


def _result(mean, lower, upper, method, eigs, fit_rms, spread, lo_bound, hi_bound,
            members=(), transform="none") -> CurveForecast:
    mean = np.asarray(mean, dtype=np.float64)
    lower = np.minimum(np.asarray(lower, dtype=np.float64), mean)
    upper = np.maximum(np.asarray(upper, dtype=np.float64), mean)
    if lo_bound is not None or hi_bound is not None:
        mean, lower, upper = (np.clip(a, lo_bound, hi_bound) for a in (mean, lower, upper))
    return CurveForecast(
        mean=mean, lower=lower, upper=upper, method=method,
        eigenvalues=tuple(e[0] for e in eigs), residuals=tuple(e[1] for e in eigs),
        members=tuple(members), fit_rms=float(fit_rms),
        spread=np.asarray(spread, dtype=np.float64), transform=transform,
    )


def _interval_quantiles(quantiles, horizon: int, n: int):
    """``(q_lo, q_hi)`` of the interval: the given pair, or per step the calibrated pair of the
    :data:`RATIO_EDGES` bin holding ``k / n``."""
    if quantiles is not None:
        return _check_quantiles(quantiles)
    table = np.asarray(INTERVAL_QUANTILES, dtype=np.float64)[
        np.searchsorted(RATIO_EDGES, np.arange(1, horizon + 1) / n)]
    return table[:, 0], table[:, 1]


def _choose_transform(y: np.ndarray, options: dict) -> str:
    """``"log"`` or ``"none"``: the one whose forecast of the curve's last ``k`` values from
    the values before them has the smaller mean squared error (see ``transform="auto"``)."""
    n = y.shape[0]
    k = max(1, round(BACKTEST_FRACTION * n))
    if np.any(y <= 0) or n - k < MIN_LENGTH:
        return "none"
    head, truth = y[:n - k], y[n - k:]
    if options.get("window") is not None:  # explicit windows may exceed the shorter head
        options = dict(options, window=tuple(min(w, n - k) for w in
                                             _check_grid(options["window"], "window",
                                                         MIN_LENGTH, n)))
    errors = {}
    for name in ("none", "log"):
        fc = forecast_curve(head, k, transform=name, quantiles=(-1.0, 1.0), **options)
        if fc.method != "koopman":  # constant or last-value fallback: equal up to rounding
            return "none"
        errors[name] = float(np.mean((fc.mean - truth) ** 2))
    return "log" if errors["log"] < errors["none"] else "none"


def _check_values(values) -> np.ndarray:
    try:
        y = np.asarray(values)
    except Exception as exc:  # ragged input
        raise TypeError(f"values must be a 1-D array of numbers; could not convert: {exc}") from exc
    if y.dtype.kind not in "iuf":
        raise TypeError(f"values must hold real numbers; got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"values must be 1-D (one value per epoch); got shape {y.shape}")
    if y.shape[0] < MIN_LENGTH:
        raise ValueError(f"values must hold at least {MIN_LENGTH} epochs to forecast; "
                         f"got {y.shape[0]}")
    y = y.astype(np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        raise ValueError(f"values must be finite; epoch {int(np.argmax(bad))} is {y[bad][0]}")
    return y


def _check_int(value, name: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be >= {minimum}{upper}; got {value}")
    return int(value)


def _check_grid(value, name: str, minimum: int, maximum: int | None) -> tuple[int, ...]:
    if isinstance(value, numbers.Integral):
        items = (value,)
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be an integer or a sequence of integers; "
                            f"got {value!r}") from None
    if not items:
        raise ValueError(f"{name} must not be empty")
    return tuple(_check_int(v, name, minimum, maximum) for v in items)


def _check_bounds(bounds) -> tuple[float | None, float | None]:
    if bounds is None:
        return None, None
    if len(bounds) != 2:
        raise ValueError(f"bounds must be (lower, upper); got {bounds!r}")
    lo, hi = bounds
    for side in (lo, hi):
        if side is not None and not (isinstance(side, numbers.Real) and math.isfinite(side)):
            raise ValueError(f"bounds must hold finite numbers or None; got {bounds!r}")
    if lo is not None and hi is not None and lo >= hi:
        raise ValueError(f"bounds must have lower < upper; got {bounds!r}")
    return lo, hi


def _check_quantiles(quantiles) -> tuple[float, float]:
    if len(quantiles) != 2:
        raise ValueError(f"quantiles must be (q_lo, q_hi); got {quantiles!r}")
    q_lo, q_hi = (float(q) for q in quantiles)
    if not (math.isfinite(q_lo) and math.isfinite(q_hi) and q_lo <= 0 <= q_hi):
        raise ValueError(f"quantiles must be finite with q_lo <= 0 <= q_hi; got {quantiles!r}")
    return q_lo, q_hi
