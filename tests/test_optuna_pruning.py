"""Tests of keras_koopman.optuna_pruning in real Optuna studies (no network, no TensorFlow)."""

from __future__ import annotations

import math

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from keras_koopman.optuna_pruning import KoopmanPruner  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

N_STEPS = 30


def _curve(floor: float, rate: float, noise: float, seed: int) -> np.ndarray:
    t = np.arange(N_STEPS, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return floor + 2.0 * np.exp(-rate * t) + noise * rng.standard_normal(N_STEPS)


def _run(pruner, curves, direction="minimize"):
    """One trial per curve, in order; returns the study and the steps each trial ran."""
    study = optuna.create_study(direction=direction, pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    ran = {}

    def objective(trial):
        curve = curves[trial.number]
        for step, value in enumerate(curve):
            trial.report(float(value), step)
            ran[trial.number] = step + 1
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(curve[-1])

    study.optimize(objective, n_trials=len(curves))
    return study, ran


def test_prunes_a_clearly_bad_curve_and_keeps_a_good_one():
    good = [_curve(0.2 + 0.02 * i, 0.2, 0.005, i) for i in range(5)]   # k = 5 by default
    bad = _curve(1.5, 0.2, 0.005, 10)          # levels off far above the good ones
    better = _curve(0.1, 0.2, 0.005, 11)        # a new best
    study, ran = _run(KoopmanPruner(N_STEPS), good + [bad, better])
    states = [t.state for t in study.trials]
    assert states[5] == optuna.trial.TrialState.PRUNED
    assert ran[5] <= 10
    assert states[6] == optuna.trial.TrialState.COMPLETE
    assert all(s == optuna.trial.TrialState.COMPLETE for s in states[:5])


def test_maximize_direction():
    good = [1.0 - _curve(0.1 + 0.01 * i, 0.2, 0.003, i) / 3 for i in range(3)]
    bad = 1.0 - _curve(1.8, 0.2, 0.003, 7) / 3
    study, _ = _run(KoopmanPruner(N_STEPS, k=3), good + [bad], direction="maximize")
    assert study.trials[3].state == optuna.trial.TrialState.PRUNED


def test_slow_but_promising_curve_is_not_pruned():
    good = [_curve(0.5 + 0.02 * i, 0.3, 0.003, i) for i in range(3)]
    t = np.arange(N_STEPS, dtype=np.float64)
    slow = 0.1 + 2.5 * np.exp(-0.08 * t)        # high early, ends better than the others
    study, ran = _run(KoopmanPruner(N_STEPS, k=3), good + [slow])
    assert study.trials[3].state == optuna.trial.TrialState.COMPLETE
    assert ran[3] == N_STEPS


def test_no_pruning_before_startup_trials_or_warmup():
    curves = [_curve(0.2, 0.2, 0.005, 0), _curve(1.5, 0.2, 0.005, 1)]
    study, _ = _run(KoopmanPruner(N_STEPS, k=1, n_startup_trials=2), curves)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    pruner = KoopmanPruner(N_STEPS, k=1, n_startup_trials=1, n_warmup_steps=N_STEPS)
    study, _ = _run(pruner, curves)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_nonfinite_value_prunes_and_can_be_turned_off():
    curves = [_curve(0.2 + 0.01 * i, 0.2, 0.005, i) for i in range(3)]
    diverged = _curve(0.2, 0.2, 0.005, 5)
    diverged[3:] = np.nan
    study, ran = _run(KoopmanPruner(N_STEPS, k=3), curves + [diverged])
    assert study.trials[3].state == optuna.trial.TrialState.PRUNED and ran[3] == 4
    study, _ = _run(KoopmanPruner(N_STEPS, k=3, prune_nonfinite=False), curves + [diverged])
    assert study.trials[3].state != optuna.trial.TrialState.PRUNED


def test_reference_is_the_kth_best_completed_value():
    curves = [_curve(f, 0.2, 0.0, 0) for f in (0.5, 0.2, 0.9)]
    study, _ = _run(KoopmanPruner(N_STEPS, n_startup_trials=10), curves)  # never prunes
    finals = sorted(c[-1] for c in curves)
    assert math.isclose(KoopmanPruner(N_STEPS, k=2).reference(study), finals[1])
    assert math.isclose(KoopmanPruner(N_STEPS, k=1, n_startup_trials=1).reference(study),
                        finals[0])
    assert KoopmanPruner(N_STEPS, k=4).reference(study) is None


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [({"n_steps": 1}, ValueError, "n_steps"), ({"n_steps": 2.5}, TypeError, "n_steps"),
     ({"k": 0}, ValueError, "k"), ({"n_startup_trials": 0}, ValueError, "n_startup_trials"),
     ({"n_warmup_steps": 2}, ValueError, "n_warmup_steps"),
     ({"margin": -0.1}, ValueError, "margin"), ({"margin": math.nan}, ValueError, "margin"),
     ({"prune_nonfinite": 1}, TypeError, "prune_nonfinite"),
     ({"forecast_options": {"delay": 2}}, ValueError, "forecast_options")],
)
def test_invalid_arguments_name_the_parameter(kwargs, error, name):
    args = {"n_steps": N_STEPS, **kwargs}
    with pytest.raises(error, match=name):
        KoopmanPruner(args.pop("n_steps"), **args)
