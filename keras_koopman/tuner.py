"""Pruning of keras-tuner searches: stop trials that are not worth finishing.

keras-tuner (1.4) trains every trial for its whole epoch budget: ``Tuner.on_epoch_end`` reports
nothing to the oracle and ``Oracle.update_trial`` only carries a TODO for early stopping.  This
module adds pruning to any tuner with one line::

    SpectralRandomSearch = with_koopman_pruning(keras_tuner.RandomSearch)
    tuner = SpectralRandomSearch(build_model, objective="val_loss", max_trials=20,
                                 pruning=KoopmanPruning())

Every trial's ``fit`` gets a :class:`KoopmanPruning` callback, which records the loss and
the objective (scalars only) and stops the trial after a warm-up when

1. **loss rule** (default): the training loss has hardly moved from its first value (or is
   NaN/inf); or
2. **forecast** (``KoopmanPruning(forecast="interval")``): the Koopman forecast of the objective
   (Hankel DMD of its curve, the KMD of the paper's Eq. (2) continued in time) promises nothing
   within ``margin`` of the best completed trial.  It trains 20–40 % fewer epochs than the loss
   rule alone and, in live searches, costs about 0.7 % of the best score (``docs/tuner.md``),
   hence off by default.

The paper's spectral poor-initialisation rule on the weights is available as
:class:`~keras_koopman.PoorInitialization` (with a :class:`~keras_koopman.KoopmanMonitor`) in a
trial's callbacks; in the pruning benchmark it did no better than the loss rule.

A pruned trial is *completed*, never failed: raising ``FailedTrialError`` would abort the search
after three consecutive prunes and hide the trial from the Bayesian oracle.  Its score is what
was observed before pruning (or, with ``pruned_score="forecast"``, the forecast clipped to be no
better than the last observed value), and its metrics carry ``pruned``, ``pruned_epoch``,
``pruned_rule``, ``pruning_forecast`` and ``pruning_restarts`` (metrics reach the chief in
distributed mode; ``trial.message``, also set, does not).  See ``docs/tuner.md``.
"""

from __future__ import annotations

import enum
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass

import keras
import keras_tuner
import numpy as np

from keras_koopman._messages import say
from keras_koopman._threads import one_blas_thread
from keras_koopman.decisions import loss_ratio_reason
from keras_koopman.forecast import CurveForecast, forecast_curve
from keras_koopman.recorder import TrajectoryRecorder
from keras_koopman.reinit import reinitialize

__all__ = [
    "KoopmanPruning",
    "KoopmanPruningMixin",
    "PRUNING_KEYS",
    "PruningRule",
    "SpectralBayesianOptimization",
    "SpectralGridSearch",
    "SpectralHyperband",
    "SpectralRandomSearch",
    "TrialPruning",
    "falls_short",
    "forecast_condemns",
    "forecast_promise",
    "with_koopman_pruning",
]

#: ``logs`` keys (and trial metrics) written by :class:`KoopmanPruning` every epoch
PRUNING_KEYS = ("pruned", "pruned_epoch", "pruned_rule", "pruning_forecast", "pruning_restarts")

_COMPLETED = keras_tuner.engine.trial.TrialStatus.COMPLETED

# trials asked from the oracle when looking for the best completed one
_REFERENCE_POOL = 100_000


class PruningRule(enum.IntEnum):
    """Why a trial was pruned; the value is the ``pruned_rule`` metric."""

    NONE = 0
    POOR_INITIALIZATION = 1
    FORECAST = 2
    NONFINITE = 3


_RULE_TEXT = {
    PruningRule.POOR_INITIALIZATION: "loss rule (poor start)",
    PruningRule.FORECAST: "Koopman forecast of the objective",
    PruningRule.NONFINITE: "non-finite loss or weights",
}


#: First completed epoch at which the forecast rule may prune (a Hankel analysis needs 4 values).
FORECAST_FROM = 4

_FORECAST_READINGS = (None, "interval", "mean")
#: keyword arguments of forecast_curve that ``forecast_options`` may set
_FORECAST_OPTIONS = frozenset(inspect.signature(forecast_curve).parameters) - {"values", "horizon"}


def forecast_promise(result: CurveForecast, direction: str, reading: str) -> float:
    """The best value a forecast promises over its horizon: of the point forecast
    (``reading="mean"``) or of the optimistic end of its 80 % interval (``"interval"``)."""
    if reading == "mean":
        low, high = result.mean, result.mean
    else:
        low, high = result.lower, result.upper
    return float(low.min() if direction == "min" else high.max())


def falls_short(values, reference: float, margin: float, direction: str) -> bool:
    """``True`` when the best finite value of ``values`` is worse than
    ``reference ± margin·|reference|`` (also when none is finite): only then can
    :func:`forecast_condemns` condemn a trial with these observed values, so only then does
    :class:`KoopmanPruning` compute a forecast for its rule."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return True
    tolerance = margin * abs(reference)
    if direction == "min":
        return float(values.min()) > reference + tolerance
    return float(values.max()) < reference - tolerance


def forecast_condemns(promise: float, observed, reference: float, margin: float,
                      direction: str) -> bool:
    """KoopmanPruning's forecast rule: ``True`` when even the best of the observed values and
    the forecast's ``promise`` is worse than ``reference ± margin·|reference|`` (never with a
    non-finite promise).  Shared with the pruning benchmarks so that a replay applies the
    callback's rule exactly."""
    if not math.isfinite(promise):
        return False
    return falls_short(np.append(np.asarray(observed, dtype=np.float64), promise),
                       reference, margin, direction)


class KoopmanPruning(keras.callbacks.Callback):
    """Stop a training run (a tuner trial) that is not worth finishing.

    Records the training loss and the objective every epoch with a
    :class:`~keras_koopman.TrajectoryRecorder` (scalars only: the per-epoch cost is a few
    floats, plus one :func:`~keras_koopman.forecast_curve`, about 15 ms, on the epochs where
    the forecast rule, if on, could prune and at the epoch of a prune) and prunes, after
    ``start_from_epoch`` epochs, when

    1. **loss rule**: the training loss is still at least ``loss_ratio`` times its first value
       (:func:`~keras_koopman.decisions.loss_ratio_reason`; 0.9 was chosen by
       ``scripts/bench_pruning.py``), or a value is NaN/inf; or
    2. **forecast**: the Koopman forecast of the objective (:func:`~keras_koopman.forecast_curve`:
       Hankel DMD_RRR of its curve, the KMD of the paper's Eq. (2) continued in time) promises
       nothing within ``margin`` of the best completed trial (``reference``) before the end of
       the budget.  Off by default (``forecast=None``): in live keras-tuner and Optuna searches
       it trained 20–40 % fewer epochs than the loss rule alone but reached a best score about
       0.7 % worse (``scripts/bench_tuner_live.py``, ``scripts/bench_hpo_live.py``,
       ``docs/benchmarks.md``).  ``forecast="interval"`` reads the promise as the optimistic
       end of the forecast's 80 % interval, ``"mean"`` as the point forecast, which prunes
       earlier and lost the best configuration in a realistic search
       (``scripts/bench_hpo.py``).

    With ``restarts``, the loss rule re-draws the weights (:func:`~keras_koopman.reinitialize`,
    seeds ``restart_seed, restart_seed + 1, …``) that many times before it prunes.  Every epoch
    it writes :data:`PRUNING_KEYS` into ``logs``: ``pruned`` (1.0 once pruned),
    ``pruned_epoch``, ``pruned_rule`` (a :class:`PruningRule`), ``pruning_forecast`` (the
    point forecast of the objective at the end of the budget; it is computed only where it
    can decide, i.e. on epochs where the forecast rule could prune (:func:`falls_short`: the
    observed best is still short of the reference), and at the epoch the trial is pruned, by
    either rule, for the log and ``pruned_score="forecast"``; NaN on the other epochs),
    ``pruning_restarts``.

    Args:
        objective: ``logs`` key to forecast (default ``"val_loss"``; in a tuner, its objective).
        direction: ``"min"`` or ``"max"``: whether smaller or larger values are better.
        start_from_epoch: Epochs to wait before a rule may prune (as in Keras's
            ``EarlyStopping``: the first prune can come at the end of epoch
            ``start_from_epoch``, 0-based; at least 1, since the loss rule compares with the
            first epoch); the forecast rule waits for 4 values.
        margin: Relative margin of the forecast rule: prune when the best of the observed
            values and the forecast's promise is worse than ``reference ± margin·|reference|``.
        reference: Objective of the best completed trial, read only by the forecast rule;
            ``None`` turns that rule off (a tuner fills it in for every trial).
        loss_ratio: Threshold of the loss rule in (0, 1]; ``None`` turns it off.
        forecast: ``None`` (default: the forecast rule is off), ``"interval"`` or ``"mean"``
            (what the forecast rule reads, see above).
        restarts: Re-draws of the weights before the loss rule prunes.
        restart_seed: Seed of the first re-draw.
        forecast_options: Keyword arguments of :func:`~keras_koopman.forecast_curve`
            (``delays``, ``window``, ``max_residual``, ``quantiles``, ...; default its own).
        verbose: 1 prints a line when the run is pruned.

    Example:

    >>> import keras, numpy as np, keras_koopman as kk
    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> y = x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(1e-6), loss="mse")  # hardly learns
    >>> pruning = kk.KoopmanPruning("loss")
    >>> history = model.fit(x, y, epochs=20, verbose=0, callbacks=[pruning])
    >>> pruning.pruned, pruning.pruned_epoch, pruning.rule.name
    (True, 2, 'POOR_INITIALIZATION')
    """

    def __init__(self, objective: str | None = None, *, direction: str = "min",
                 start_from_epoch: int = 1,
                 margin: float = 0.1, reference: float | None = None,
                 loss_ratio: float | None = 0.9, forecast: str | None = None,
                 restarts: int = 0, restart_seed: int = 1, forecast_options: Mapping | None = None,
                 verbose: int = 0) -> None:
        super().__init__()
        if objective is not None and (not isinstance(objective, str) or not objective):
            raise TypeError(f"objective must be a logs key (str); got {objective!r}")
        if direction not in ("min", "max"):
            raise ValueError(f"direction must be 'min' or 'max'; got {direction!r}")
        if isinstance(start_from_epoch, bool) or not isinstance(start_from_epoch, int) \
                or start_from_epoch < 1:
            raise ValueError(f"start_from_epoch must be an integer >= 1; got {start_from_epoch!r}")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) \
                or not math.isfinite(margin) or margin < 0:
            raise ValueError(f"margin must be a finite number >= 0; got {margin!r}")
        if reference is not None and (isinstance(reference, bool)
                                      or not isinstance(reference, (int, float))
                                      or not math.isfinite(reference)):
            raise ValueError(f"reference must be a finite number or None; got {reference!r}")
        if loss_ratio is not None and (isinstance(loss_ratio, bool)
                                       or not isinstance(loss_ratio, (int, float))
                                       or not 0 < loss_ratio <= 1):
            raise ValueError(f"loss_ratio must be a number in (0, 1] or None; got {loss_ratio!r}")
        if forecast not in _FORECAST_READINGS:
            raise ValueError(f"forecast must be one of {_FORECAST_READINGS}; got {forecast!r}")
        forecast_options = dict(forecast_options or {})
        unknown = sorted(set(forecast_options) - _FORECAST_OPTIONS)
        if unknown:
            raise ValueError(f"forecast_options: unknown keys {unknown}; expected some of "
                             f"{sorted(_FORECAST_OPTIONS)}")
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
            raise ValueError(f"restarts must be an integer >= 0; got {restarts!r}")
        if isinstance(restart_seed, bool) or not isinstance(restart_seed, int):
            raise TypeError(f"restart_seed must be an integer; got {restart_seed!r}")
        self.objective = objective
        self.direction = direction
        self.start_from_epoch = start_from_epoch
        self.margin = float(margin)
        self.reference = None if reference is None else float(reference)
        self.loss_ratio = None if loss_ratio is None else float(loss_ratio)
        self.forecast = forecast
        self.restarts = restarts
        self.restart_seed = restart_seed
        self.forecast_options = forecast_options
        self.verbose = int(verbose)
        self.recorder = TrajectoryRecorder(("loss", self.objective_name), weights=False)
        self._clear()

    @property
    def objective_name(self) -> str:
        return "val_loss" if self.objective is None else self.objective

    def get_config(self) -> dict:
        """Every constructor argument (build a copy with ``KoopmanPruning(**config)``)."""
        return {"objective": self.objective, "direction": self.direction,
                "start_from_epoch": self.start_from_epoch,
                "margin": self.margin, "reference": self.reference,
                "loss_ratio": self.loss_ratio, "forecast": self.forecast,
                "restarts": self.restarts, "restart_seed": self.restart_seed,
                "forecast_options": dict(self.forecast_options), "verbose": self.verbose}

    def _clear(self) -> None:
        self.pruned = False
        self.pruned_epoch: int | None = None
        self.rule = PruningRule.NONE
        self.reason: str | None = None
        self.forecast_value = math.nan
        self.forecast_result: CurveForecast | None = None  # the objective's latest forecast

    def on_train_begin(self, logs=None):
        self._clear()
        self.recorder.start(self.model, writable=False)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        done = int(epoch) + 1
        bad = self.recorder.record_epoch(done, logs)
        budget = (self.params or {}).get("epochs")
        self.forecast_value = math.nan
        if not self.pruned:
            if bad:
                self._prune(done, PruningRule.NONFINITE, f"non-finite {', '.join(bad)}")
            elif self._loss_rule(done):
                pass
            elif self._forecast_may_prune(done, budget):
                self.forecast_value, best_ahead = self._forecast(done, budget)
                _, observed = self.recorder.scalar(self.objective_name)
                if forecast_condemns(best_ahead, observed, self.reference, self.margin,
                                     self.direction):
                    self._prune(done, PruningRule.FORECAST,
                                f"{self.objective_name} forecast to reach at best "
                                f"{best_ahead:.4g} within the budget; best completed trial "
                                f"{self.reference:.4g} (margin {self.margin:.0%})")
            if self.pruned and not bad and math.isnan(self.forecast_value) \
                    and budget is not None and done < budget:
                self.forecast_value, _ = self._forecast(done, budget)  # for the log and score
        logs.update({"pruned": float(self.pruned), "pruned_epoch": float(self.pruned_epoch or 0),
                     "pruned_rule": float(self.rule),
                     "pruning_forecast": float(self.forecast_value),
                     "pruning_restarts": float(self.recorder.restarts)})

    def _loss_rule(self, done: int) -> bool:
        """Apply the loss rule; ``True`` if it acted (restart or prune)."""
        if self.loss_ratio is None or done - self.recorder.segment_epoch <= self.start_from_epoch:
            return False
        _, loss = self.recorder.scalar("loss")
        reason = loss_ratio_reason(loss, self.loss_ratio)
        if reason is None:
            return False
        if self.recorder.restarts < self.restarts:
            reinitialize(self.model, seed=self.restart_seed + self.recorder.restarts)
            self.recorder.new_segment(float(done))
        else:
            self._prune(done, PruningRule.POOR_INITIALIZATION, reason)
        return True

    def _forecast(self, done: int, budget: int) -> tuple[float, float]:
        """(point forecast at the budget's end, the promise over the epochs left)."""
        _, values = self.recorder.scalar(self.objective_name)
        if values.size < FORECAST_FROM:
            return math.nan, math.nan
        try:
            with one_blas_thread():
                result = forecast_curve(values, budget - done, **self.forecast_options)
        except ValueError:  # too short, or no usable decomposition
            return math.nan, math.nan
        self.forecast_result = result
        promise = math.nan if self.forecast is None else \
            forecast_promise(result, self.direction, self.forecast)
        return float(result.mean[-1]), promise

    def _forecast_may_prune(self, done: int, budget: int | None) -> bool:
        """Whether the forecast rule could prune now: it is on, has a reference, the warm-up is
        over, epochs are left and the observed values fall short of the reference (otherwise
        no forecast can condemn the trial, and none is computed)."""
        if self.forecast is None or self.reference is None or done <= self.start_from_epoch \
                or done < FORECAST_FROM or budget is None or done >= budget:
            return False
        _, observed = self.recorder.scalar(self.objective_name)
        return falls_short(observed, self.reference, self.margin, self.direction)

    def _prune(self, done: int, rule: PruningRule, reason: str) -> None:
        self.pruned = True
        self.pruned_epoch = done
        self.rule = rule
        self.reason = reason
        self.model.stop_training = True
        if self.verbose:
            say(f"KoopmanPruning: pruned after {done} epochs by the {_RULE_TEXT[rule]}: {reason}")


@dataclass(frozen=True)
class TrialPruning:
    """Pruning outcome of one trial, read from its metrics (so also on a distributed chief).

    Attributes
    ----------
    trial_id : str
    status : str
        keras-tuner's trial status (pruned trials are ``"COMPLETED"``).
    score : float or None
        The score the oracle holds.
    pruned : bool
    epoch : int
        Completed epochs when pruned (0 if not pruned).
    rule : PruningRule
    forecast : float
        Forecast of the objective at the end of the budget when pruned (NaN if none).
    restarts : int
        Re-initialisations before pruning.
    """

    trial_id: str
    status: str
    score: float | None
    pruned: bool
    epoch: int
    rule: PruningRule
    forecast: float
    restarts: int

    @classmethod
    def from_trial(cls, trial) -> "TrialPruning":
        def last(name: str, default: float = 0.0) -> float:
            if not trial.metrics.exists(name):
                return default
            value = trial.metrics.get_last_value(name)
            return default if value is None else float(value)

        return cls(trial_id=str(trial.trial_id), status=str(trial.status),
                   score=None if trial.score is None else float(trial.score),
                   pruned=bool(last("pruned")), epoch=int(last("pruned_epoch")),
                   rule=PruningRule(int(last("pruned_rule"))),
                   forecast=last("pruning_forecast", math.nan),
                   restarts=int(last("pruning_restarts")))

    def describe(self, objective: str = "objective") -> str:
        """One line for summaries, e.g. ``"pruned after 4 epochs by ..."``."""
        if not self.pruned:
            return "not pruned"
        text = f"pruned after {self.epoch} epochs by the {_RULE_TEXT[self.rule]}"
        if math.isfinite(self.forecast):
            text += f" (forecast {objective} at the end of the budget: {self.forecast:.4g})"
        if self.restarts:
            text += f" after {self.restarts} re-initialisation(s)"
        return text


class KoopmanPruningMixin:
    """Adds spectral pruning to a keras-tuner ``Tuner``: put it first among the bases.

    ``class MyTuner(KoopmanPruningMixin, keras_tuner.RandomSearch)`` (or
    :func:`with_koopman_pruning`) accepts three more keyword arguments:

    Parameters
    ----------
    pruning : KoopmanPruning, optional
        Template of the callback given to every trial's ``fit`` (default ``KoopmanPruning()``);
        each trial gets ``type(pruning)(**pruning.get_config())`` (so a subclass is kept, if
        its ``get_config`` returns its constructor's arguments) with ``objective``,
        ``direction`` and ``reference`` replaced by the tuner's objective and the best score
        of the completed trials (for Hyperband: with the same ``tuner/epochs``).
    pruned_score : {"observed", "forecast"}
        Score reported for a pruned trial.  ``"observed"`` (default): keras-tuner's usual score
        of the epochs that ran (the best epoch so far), a pessimistic value that never makes a
        stopped trial look better than it was.  ``"forecast"``: the Koopman forecast of the
        objective at the end of the budget, clipped to be no better than the last observed
        value (falls back to ``"observed"`` without a forecast).
    nonfinite_score : float, optional
        Score for a pruned trial whose objective was never finite (e.g. NaN from the first
        epoch).  Default: the worst score of the completed trials so far; with none, the trial
        keeps a NaN score and keras-tuner marks it failed.

    Notes
    -----
    The override point is ``run_trial`` (keras-tuner's documented one): the callback is put
    first in ``fit``'s callbacks, keras-tuner deep-copies it per execution, and the returned
    histories get the final :data:`PRUNING_KEYS` values on every epoch so that whichever epoch
    keras-tuner picks as the best carries them into ``trial.metrics``.  Histories from a
    ``HyperModel.fit`` that returns a dict or a float are passed through unchanged.
    """

    def __init__(self, *args, pruning: KoopmanPruning | None = None,
                 pruned_score: str = "observed", nonfinite_score: float | None = None,
                 **kwargs) -> None:
        if pruning is None:
            pruning = KoopmanPruning()
        if not isinstance(pruning, KoopmanPruning):
            raise TypeError(f"pruning must be a KoopmanPruning callback; got {type(pruning).__name__}")
        if pruned_score not in ("observed", "forecast"):
            raise ValueError(f"pruned_score must be 'observed' or 'forecast'; got {pruned_score!r}")
        if nonfinite_score is not None and not math.isfinite(nonfinite_score):
            raise ValueError(f"nonfinite_score must be a finite number or None; got {nonfinite_score!r}")
        super().__init__(*args, **kwargs)
        objective = self.oracle.objective
        if type(objective) is not keras_tuner.Objective:  # not a MultiObjective/DefaultObjective
            raise ValueError("objective: spectral pruning needs a single keras_tuner.Objective "
                             f"(a logs key and a direction); got {objective!r}")
        self.pruning = pruning
        self.pruned_score = pruned_score
        self.nonfinite_score = None if nonfinite_score is None else float(nonfinite_score)

    # ------------------------------------------------------------------ trials
    def run_trial(self, trial, *args, **kwargs):
        objective = self.oracle.objective
        budget = trial.hyperparameters.values.get("tuner/epochs")
        config = self.pruning.get_config()
        config.update(objective=objective.name, direction=objective.direction,
                      reference=self._reference(budget))
        kwargs = dict(kwargs)
        kwargs["callbacks"] = [type(self.pruning)(**config), *(kwargs.get("callbacks") or [])]
        results = super().run_trial(trial, *args, **kwargs)
        single = not isinstance(results, list)
        results = [self._finish(r, objective) for r in ([results] if single else results)]
        outcomes = [_outcome(r) for r in results]
        lines = [o.describe(objective.name) for o in outcomes if o is not None and o.pruned]
        if lines:
            trial.message = "; ".join(lines)
        return results[0] if single else results

    def _finish(self, result, objective):
        """Broadcast the final pruning state over a History and apply the score choice."""
        if not isinstance(result, keras.callbacks.History) or "pruned" not in result.history:
            return result
        history = result.history
        for key in PRUNING_KEYS:
            history[key] = [history[key][-1]] * len(history[key])
        if not history["pruned"][-1]:
            return result
        values = np.asarray(history.get(objective.name, []), dtype=np.float64)
        finite = values[np.isfinite(values)]
        last_epoch = {k: v[-1] for k, v in history.items()}
        if finite.size == 0:
            penalty = self._nonfinite_penalty(objective)
            return result if penalty is None else {**last_epoch, objective.name: penalty}
        forecast = history["pruning_forecast"][-1]
        if self.pruned_score == "forecast" and math.isfinite(forecast):
            worse = max if objective.direction == "min" else min
            return {**last_epoch, objective.name: float(worse(forecast, float(finite[-1])))}
        return result

    def _completed(self):
        return [t for t in self.oracle.get_best_trials(_REFERENCE_POOL)
                if t.status == _COMPLETED
                and t.score is not None and math.isfinite(t.score)]

    def _reference(self, budget) -> float | None:
        """Best score of the completed trials (for Hyperband: with this ``tuner/epochs``).

        Pruned trials count: their score is a value they really reached (``"observed"``) or
        one no better than that (``"forecast"``), so it can only make the reference laxer.
        """
        for trial in self._completed():  # best first
            if budget is None or trial.hyperparameters.values.get("tuner/epochs") == budget:
                return float(trial.score)
        return None

    def _nonfinite_penalty(self, objective) -> float | None:
        if self.nonfinite_score is not None:
            return self.nonfinite_score
        scores = [t.score for t in self._completed()]
        if not scores:
            return None
        return float(max(scores) if objective.direction == "min" else min(scores))

    # ------------------------------------------------------------------ reporting
    def pruning_records(self) -> list[TrialPruning]:
        """Pruning outcome of every trial the oracle knows, best first (works on a distributed
        chief and on workers: it reads trial metrics)."""
        return [TrialPruning.from_trial(t) for t in self.oracle.get_best_trials(_REFERENCE_POOL)]

    def results_summary(self, num_trials: int = 10) -> None:
        """keras-tuner's summary followed by the pruning outcome of the trials shown."""
        super().results_summary(num_trials)
        records = self.pruning_records()
        shown = records[:num_trials]
        pruned = [r for r in records if r.pruned]
        counts = {rule: sum(r.rule == rule for r in pruned) for rule in _RULE_TEXT}
        print()
        print(f"KoopmanPruning: {len(pruned)} of {len(records)} trials pruned ("
              + ", ".join(f"{_RULE_TEXT[rule]}: {n}" for rule, n in counts.items()) + ")")
        for record in shown:
            if record.pruned:
                print(f"Trial {record.trial_id}: {record.describe(self.oracle.objective.name)}; "
                      f"score {record.score}")


def _outcome(result) -> TrialPruning | None:
    """Pruning outcome carried by a finished History or metrics dict (``None`` if none)."""
    if isinstance(result, keras.callbacks.History):
        values = {k: v[-1] for k, v in result.history.items() if v}
    elif isinstance(result, dict):
        values = result
    else:
        return None
    if "pruned" not in values:
        return None
    return TrialPruning(trial_id="", status="", score=None, pruned=bool(values["pruned"]),
                        epoch=int(values["pruned_epoch"]), rule=PruningRule(int(values["pruned_rule"])),
                        forecast=float(values["pruning_forecast"]),
                        restarts=int(values["pruning_restarts"]))


def with_koopman_pruning(tuner_class: type) -> type:
    """Return ``tuner_class`` with spectral pruning: ``(KoopmanPruningMixin, tuner_class)``.

    ``SpectralRandomSearch = with_koopman_pruning(keras_tuner.RandomSearch)``; the new class
    takes the tuner's arguments plus ``pruning``, ``pruned_score`` and ``nonfinite_score``
    (see :class:`KoopmanPruningMixin`).
    """
    if not isinstance(tuner_class, type) or not issubclass(tuner_class, keras_tuner.Tuner):
        raise TypeError(f"tuner_class must be a keras_tuner.Tuner subclass; got {tuner_class!r}")
    if issubclass(tuner_class, KoopmanPruningMixin):
        return tuner_class
    return type(f"Spectral{tuner_class.__name__}", (KoopmanPruningMixin, tuner_class),
                {"__module__": tuner_class.__module__,
                 "__doc__": f"{tuner_class.__name__} with Koopman spectral pruning "
                            f"(see keras_koopman.KoopmanPruningMixin)."})


class SpectralRandomSearch(KoopmanPruningMixin, keras_tuner.RandomSearch):
    """``keras_tuner.RandomSearch`` with spectral pruning (see :class:`KoopmanPruningMixin`)."""


class SpectralBayesianOptimization(KoopmanPruningMixin, keras_tuner.BayesianOptimization):
    """``keras_tuner.BayesianOptimization`` with spectral pruning; pruned trials are completed
    with a score, so the Gaussian process learns from them."""


class SpectralGridSearch(KoopmanPruningMixin, keras_tuner.GridSearch):
    """``keras_tuner.GridSearch`` with spectral pruning (see :class:`KoopmanPruningMixin`)."""


class SpectralHyperband(KoopmanPruningMixin, keras_tuner.Hyperband):
    """``keras_tuner.Hyperband`` with spectral pruning inside each round: the forecast rule
    compares with the best completed trial of the same ``tuner/epochs``; a pruned trial's
    checkpoint is the best epoch it reached, which is what a promotion would continue."""
