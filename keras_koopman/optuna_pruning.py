"""Optuna pruner driven by the Koopman forecast of a trial's learning curve.

:class:`KoopmanPruner` prunes a trial when even the optimistic end of the 80 % interval of its
forecast final value (:func:`keras_koopman.forecast.forecast_curve` on the trial's intermediate
values, the KMD of the paper's Eq. (2) continued to the end of the budget) is worse than the
reference value of the completed trials::

    import optuna
    from keras_koopman.optuna_pruning import KoopmanPruner

    study = optuna.create_study(direction="minimize", pruner=KoopmanPruner(n_steps=20))
    # objective: trial.report(val_loss, epoch) each epoch (e.g. optuna_integration.
    # KerasPruningCallback(trial, "val_loss")), then return the last val_loss

Optuna is an optional dependency (``pip install 'keras-koopman[optuna]'``); importing this
module without it raises an :class:`ImportError` that says so.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

try:
    import optuna
    from optuna.pruners import BasePruner
    from optuna.trial import TrialState
except ImportError as exc:  # pragma: no cover - exercised only without optuna
    raise ImportError(
        "keras_koopman.optuna_pruning needs Optuna; install it with "
        "`pip install 'keras-koopman[optuna]'` (or `pip install optuna`)"
    ) from exc

from keras_koopman.forecast import MIN_LENGTH, forecast_curve

__all__ = ["KoopmanPruner"]

_FORECAST_OPTIONS = ("delays", "window", "max_residual", "growth", "combine", "bounds",
                     "quantiles")


class KoopmanPruner(BasePruner):
    """Prune trials whose forecast final value cannot beat the k-th best completed trial.

    At every ``trial.should_prune()`` from step ``n_warmup_steps`` on, the trial's intermediate
    values (one per step, steps ``0 … n_steps − 1``, as ``KerasPruningCallback`` reports
    epochs) are forecast to the last step ``n_steps − 1``.  **Reference**: the ``k``-th best
    final value (:attr:`optuna.trial.FrozenTrial.value`) among the study's COMPLETE trials with
    a finite value (best = smallest when minimising); no pruning while fewer than
    ``max(k, n_startup_trials)`` such trials exist.  **Rule**: prune when the optimistic end of
    the forecast interval at the last step (``lower`` when minimising, ``upper`` when
    maximising) is worse than the reference by more than ``margin·|reference|``.

    Falls back to *no* pruning when the forecast is unavailable: fewer than
    ``max(n_warmup_steps, MIN_LENGTH)`` values, steps that are not consecutive (e.g. reports
    every other epoch), the last step already reached, or ``forecast_curve`` raising
    ``ValueError``.  A trial whose latest value is NaN or infinite is pruned when
    ``prune_nonfinite`` (a diverged run cannot recover its forecast).

    Parameters
    ----------
    n_steps : int
        The budget: number of steps (epochs) a complete trial reports (>= 2).
    k : int
        Rank of the completed trial used as the reference (1 = the best).  The default 5 was
        chosen by replaying the selection half of the learning-curve corpus through Optuna
        (``scripts/bench_optuna_pruner.py``, ``docs/forecasting.md``): k = 1 and 3 pruned
        about as much as ``MedianPruner`` with no lower regret; k = 5 trains more epochs but
        lost the best run least often.
    n_startup_trials : int
        Completed trials needed before any pruning (>= 1; at least ``k`` are always needed).
    n_warmup_steps : int
        First number of reported values at which the trial may be pruned (>= MIN_LENGTH = 4).
    margin : float
        Relative tolerance (>= 0) added to the reference before comparing.
    prune_nonfinite : bool
        Prune a trial whose latest intermediate value is NaN/inf.
    forecast_options : mapping, optional
        Keyword arguments of :func:`~keras_koopman.forecast.forecast_curve` (``delays``,
        ``window``, ``max_residual``, ``growth``, ``combine``, ``bounds``, ``quantiles``).

    Cost: one :func:`forecast_curve` per ``should_prune`` call after the warm-up (milliseconds)
    plus one pass over the study's trials for the reference.
    """

    def __init__(
        self,
        n_steps: int,
        *,
        k: int = 5,
        n_startup_trials: int = 3,
        n_warmup_steps: int = 5,
        margin: float = 0.0,
        prune_nonfinite: bool = True,
        forecast_options: Mapping | None = None,
    ) -> None:
        self.n_steps = _int(n_steps, "n_steps", 2)
        self.k = _int(k, "k", 1)
        self.n_startup_trials = _int(n_startup_trials, "n_startup_trials", 1)
        self.n_warmup_steps = _int(n_warmup_steps, "n_warmup_steps", MIN_LENGTH)
        if not (isinstance(margin, numbers.Real) and math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0; got {margin!r}")
        self.margin = float(margin)
        if not isinstance(prune_nonfinite, bool):
            raise TypeError(f"prune_nonfinite must be a bool; got {prune_nonfinite!r}")
        self.prune_nonfinite = prune_nonfinite
        options = dict(forecast_options or {})
        unknown = sorted(set(options) - set(_FORECAST_OPTIONS))
        if unknown:
            raise ValueError(f"forecast_options: unknown keys {unknown}; "
                             f"expected some of {_FORECAST_OPTIONS}")
        self.forecast_options = options
        #: forecast of the last trial examined: ``(trial number, step, optimistic, reference)``
        self.last_decision: tuple[int, int, float, float] | None = None

    def reference(self, study: "optuna.study.Study") -> float | None:
        """The k-th best finite final value of the COMPLETE trials, or None if too few."""
        values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.value is not None and math.isfinite(t.value)]
        if len(values) < max(self.k, self.n_startup_trials):
            return None
        values.sort(reverse=self._maximize(study))
        return float(values[self.k - 1])

    def prune(self, study: "optuna.study.Study", trial: "optuna.trial.FrozenTrial") -> bool:
        """Optuna's hook: whether ``trial`` should stop now (see the class docstring)."""
        reported = trial.intermediate_values
        if not reported:
            return False
        steps = sorted(reported)
        values = np.array([reported[s] for s in steps], dtype=np.float64)
        if not math.isfinite(values[-1]):
            return self.prune_nonfinite
        last = steps[-1]
        if (len(values) < self.n_warmup_steps or last >= self.n_steps - 1
                or steps != list(range(steps[0], last + 1))):
            return False
        reference = self.reference(study)
        if reference is None:
            return False
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:  # forecast the finite run of values after the last NaN/inf
            values = values[bad[-1] + 1:]
        try:
            forecast = forecast_curve(values, self.n_steps - 1 - last, **self.forecast_options)
        except ValueError:
            return False
        maximize = self._maximize(study)
        optimistic = float(forecast.upper[-1] if maximize else forecast.lower[-1])
        self.last_decision = (trial.number, last, optimistic, reference)
        tolerance = self.margin * abs(reference)
        if maximize:
            return optimistic < reference - tolerance
        return optimistic > reference + tolerance

    @staticmethod
    def _maximize(study) -> bool:
        if len(study.directions) != 1:
            raise ValueError("study: KoopmanPruner supports single-objective studies only")
        return study.direction == optuna.study.StudyDirection.MAXIMIZE


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)
