"""Spectral diagnostics of a Koopman mode decomposition of training.

The paper (section "Insights into neural network training convergence via the Koopman
spectrum") reads training convergence off the KMD: early in training the important
eigenvalues sit near 0; as training approaches a fixed point they move to 1; modes with
``|λ| > 1`` grow.  Each function below turns one of these readings into a number.

"Important" modes are those with ``importance >= min_importance`` (relative modulus of the
reconstruction coefficient, see :class:`KoopmanModes`) and, if given,
``residual <= max_residual``.  Weighted quantities use the importances as weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from keras_koopman.koopman._dmd import KoopmanModes
from keras_koopman.koopman._options import DEFAULT_OPTIONS, AnalysisOptions
from keras_koopman.koopman._validation import check_nonnegative

__all__ = [
    "SpectralDiagnostics",
    "diagnose",
    "epochs_to_shrink",
    "growing_importance",
    "slowest_decay",
    "spectral_radius",
    "unit_cluster",
]

DEFAULT_DELTA = DEFAULT_OPTIONS.delta
DEFAULT_MIN_IMPORTANCE = DEFAULT_OPTIONS.min_importance


def _important(modes: KoopmanModes, min_importance, max_residual) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(modes, KoopmanModes):
        raise TypeError(f"modes must be a KoopmanModes; got {type(modes).__name__}")
    min_importance = check_nonnegative(min_importance, "min_importance") or 0.0
    max_residual = check_nonnegative(max_residual, "max_residual")
    keep = modes.importance >= min_importance
    if max_residual is not None:
        keep &= modes.residuals <= max_residual
    lam, weight = modes.eigenvalues[keep], modes.importance[keep]
    if not (np.all(np.isfinite(lam)) and np.all(np.isfinite(np.abs(lam)))
            and np.all(np.isfinite(weight))):
        raise ValueError("modes: the important modes have non-finite eigenvalues or "
                         "importances; they cannot be diagnosed")
    return lam, weight


def _check_delta(delta) -> float:
    delta = check_nonnegative(delta, "delta")
    if delta is None:
        raise TypeError("delta must be a non-negative number")
    return delta


def spectral_radius(modes: KoopmanModes, *, min_importance: float = DEFAULT_MIN_IMPORTANCE,
                    max_residual: float | None = None) -> float:
    """Largest ``|λ|`` among the important modes (0 if there are none). Cost ``O(k)``."""
    lam, _ = _important(modes, min_importance, max_residual)
    return float(np.abs(lam).max()) if lam.size else 0.0


def unit_cluster(modes: KoopmanModes, *, delta: float = DEFAULT_DELTA,
                 min_importance: float = DEFAULT_MIN_IMPORTANCE,
                 max_residual: float | None = None) -> float:
    """Importance-weighted fraction of important eigenvalues with ``|λ − 1| <= delta``.

    The paper's "clustering around 1": near a fixed point of training the dominant Koopman
    modes are the λ = 1 mode (the fixed point itself) and slow modes with λ → 1.
    Returns a number in [0, 1] (0 if no mode is important).
    """
    delta = _check_delta(delta)
    lam, weight = _important(modes, min_importance, max_residual)
    total = weight.sum()
    if total == 0:
        return 0.0
    return float(weight[np.abs(lam - 1.0) <= delta].sum() / total)


def slowest_decay(modes: KoopmanModes, *, delta: float = DEFAULT_DELTA,
                  min_importance: float = DEFAULT_MIN_IMPORTANCE,
                  max_residual: float | None = None) -> float:
    """Slowest decay rate ``−log|λ|`` (per step) among important decaying modes.

    Decaying modes are those with ``|λ| < 1`` that are not within ``delta`` of 1 (modes at 1
    are the fixed point, not a transient).  Returns ``inf`` if no important mode decays
    (nothing left to converge) and ``0`` for a mode with ``|λ|`` at 1 but away from λ = 1
    (a persistent oscillation).
    """
    delta = _check_delta(delta)
    lam, _ = _important(modes, min_importance, max_residual)
    decaying = lam[(np.abs(lam) < 1.0 + 1e-12) & (np.abs(lam - 1.0) > delta)]
    if decaying.size == 0:
        return math.inf
    largest = float(np.abs(decaying).max())
    return 0.0 if largest >= 1.0 else float(-np.log(max(largest, 1e-300)))


def epochs_to_shrink(modes: KoopmanModes, factor: float = 100.0, *, delta: float = DEFAULT_DELTA,
                     min_importance: float = DEFAULT_MIN_IMPORTANCE,
                     max_residual: float | None = None) -> float:
    """Steps for the slowest important transient to shrink by ``factor``: ``log(factor)/rate``.

    ``0`` when nothing decays (already converged), ``inf`` for a persistent oscillation.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        raise ValueError(f"factor must be a number > 1; got {factor!r}")
    rate = slowest_decay(modes, delta=delta, min_importance=min_importance,
                         max_residual=max_residual)
    if math.isinf(rate):
        return 0.0
    return math.inf if rate == 0 else float(math.log(factor) / rate)


def growing_importance(modes: KoopmanModes, *, delta: float = DEFAULT_DELTA,
                       min_importance: float = DEFAULT_MIN_IMPORTANCE,
                       max_residual: float | None = None) -> float:
    """Importance-weighted fraction of important modes with ``|λ| > 1 + delta`` (growth)."""
    delta = _check_delta(delta)
    lam, weight = _important(modes, min_importance, max_residual)
    total = weight.sum()
    if total == 0:
        return 0.0
    return float(weight[np.abs(lam) > 1.0 + delta].sum() / total)


@dataclass(frozen=True)
class SpectralDiagnostics:
    """All diagnostics of one decomposition (see the module functions for definitions)."""

    spectral_radius: float
    unit_cluster: float
    slowest_decay_rate: float
    epochs_to_converge: float
    growing: float
    n_important: int

    def as_logs(self, prefix: str = "koopman_") -> dict[str, float]:
        """The diagnostics as a flat ``{prefix + name: float}`` dict for Keras ``logs``."""
        return {prefix + name: float(value) for name, value in asdict(self).items()}


def diagnose(modes: KoopmanModes, options: AnalysisOptions | None = None, *,
             delta: float | None = None, min_importance: float | None = None,
             max_residual: float | None = None,
             shrink_factor: float = 100.0) -> SpectralDiagnostics:
    """Compute every diagnostic with one set of thresholds. Cost ``O(k)``.

    Thresholds come from ``options`` (an :class:`AnalysisOptions`; ``None`` means
    ``DEFAULT_OPTIONS``: ``delta``, ``min_importance``, ``max_residual``); a keyword given
    explicitly overrides the corresponding option.
    """
    if options is not None and not isinstance(options, AnalysisOptions):
        raise TypeError(f"options must be an AnalysisOptions or None; got "
                        f"{type(options).__name__}")
    settings = (options or DEFAULT_OPTIONS).diagnose_kwargs()
    explicit = dict(delta=delta, min_importance=min_importance, max_residual=max_residual)
    settings.update({name: value for name, value in explicit.items() if value is not None})
    delta = settings.pop("delta")
    lam, _ = _important(modes, settings["min_importance"], settings["max_residual"])
    return SpectralDiagnostics(
        spectral_radius=spectral_radius(modes, **settings),
        unit_cluster=unit_cluster(modes, delta=delta, **settings),
        slowest_decay_rate=slowest_decay(modes, delta=delta, **settings),
        epochs_to_converge=epochs_to_shrink(modes, shrink_factor, delta=delta, **settings),
        growing=growing_importance(modes, delta=delta, **settings),
        n_important=int(lam.size),
    )
