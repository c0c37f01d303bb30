"""Trial pruning of keras-tuner searches: rules, forecast, scores, tuners, distributed mode."""

import contextlib
import copy
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pytest

from keras_koopman import (
    KoopmanMonitor,
    KoopmanPruning,
    PoorInitialization,
    PruningRule,
    SpectralGridSearch,
    forecast_curve,
    with_koopman_pruning,
)
from keras_koopman.tuner import TrialPruning

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 10


def regression_data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((128, 4)).astype("float32")
    y = (X @ rng.standard_normal((4, 1)) + 0.1 * rng.standard_normal((128, 1))).astype("float32")
    return X[:96], y[:96], X[96:], y[96:]


def small_model(lr, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(lr), "mse")
    return model


def fit(lr, callback, epochs=EPOCHS):
    x, y, xv, yv = regression_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PoorInitialization warns when it stops a run
        return small_model(lr).fit(x, y, validation_data=(xv, yv), epochs=epochs, batch_size=32,
                                   verbose=0, callbacks=[callback])


# ---------------------------------------------------------------------------- the callback
def test_stagnating_run_is_pruned_by_the_loss_rule_after_start_from_epoch():
    callback = KoopmanPruning(start_from_epoch=3)
    history = fit(1e-5, callback)
    assert len(history.epoch) == 4
    assert callback.pruned and callback.pruned_epoch == 4
    assert callback.rule is PruningRule.POOR_INITIALIZATION
    assert "loss" in callback.reason and "of its first value" in callback.reason
    assert history.history["pruned"] == [0.0, 0.0, 0.0, 1.0]
    assert history.history["pruned_rule"][-1] == float(PruningRule.POOR_INITIALIZATION)

    healthy = KoopmanPruning(start_from_epoch=3)  # a rate that trains
    history = fit(0.05, healthy)
    assert len(history.epoch) == EPOCHS and not healthy.pruned
    assert history.history["pruned_epoch"] == [0.0] * EPOCHS


def test_forecast_rule_prunes_only_against_a_better_reference():
    slow = KoopmanPruning(start_from_epoch=3, reference=0.2, loss_ratio=None, forecast="mean")
    history = fit(0.01, slow)
    assert slow.rule is PruningRule.FORECAST and slow.pruned_epoch == 4
    assert len(history.epoch) == 4
    # the logged forecast is forecast_curve of the recorded val_loss, to the end of the budget;
    # the rule read its point forecast
    _, values = slow.recorder.scalar("val_loss")
    np.testing.assert_array_equal(values, history.history["val_loss"])
    expected = forecast_curve(values, EPOCHS - len(values))
    assert history.history["pruning_forecast"][-1] == pytest.approx(expected.mean[-1])
    assert min(expected.mean.min(), values.min()) > 0.2 * 1.1

    # the interval's optimistic end prunes no earlier than the point forecast
    interval = KoopmanPruning(start_from_epoch=3, reference=0.2, loss_ratio=None,
                              forecast="interval")
    fit(0.01, interval)
    assert not interval.pruned or interval.pruned_epoch >= slow.pruned_epoch

    # a reference the trial reaches at its 7th epoch: it is forecast (and could be pruned) only
    # while its best is short of the reference plus the margin, from epoch 4; never afterwards
    curve = np.asarray(fit(0.01, KoopmanPruning(loss_ratio=None)).history["val_loss"])
    reached = KoopmanPruning(start_from_epoch=3, reference=float(curve[6]) / 1.1 * 1.0001,
                             loss_ratio=None, forecast="interval")
    history = fit(0.01, reached)
    assert not reached.pruned and len(history.epoch) == EPOCHS
    forecasts = np.asarray(history.history["pruning_forecast"])
    short = np.minimum.accumulate(curve) > reached.reference * 1.1
    done = np.arange(1, EPOCHS + 1)
    np.testing.assert_array_equal(np.isfinite(forecasts), short & (done >= 4) & (done < EPOCHS))
    assert np.isfinite(forecasts).sum() == 3  # epochs 4, 5 and 6


def test_early_start_prunes_by_the_loss_rule_but_forecasts_only_from_epoch_4():
    """start_from_epoch=1 (the default): the loss rule may prune a stagnating run at epoch 2;
    the forecast rule, which needs 4 values, never prunes before epoch 4."""
    stagnating = KoopmanPruning(start_from_epoch=1)
    history = fit(1e-5, stagnating)
    assert stagnating.rule is PruningRule.POOR_INITIALIZATION and stagnating.pruned_epoch == 2
    assert "loss" in stagnating.reason and len(history.epoch) == 2
    slow = KoopmanPruning(start_from_epoch=1, reference=0.2, loss_ratio=None, forecast="interval")
    history = fit(0.01, slow)
    assert slow.rule is PruningRule.FORECAST and slow.pruned_epoch == 4


def test_defaults_prune_a_flat_loss_at_epoch_2_but_keep_a_slower_learner():
    """KoopmanPruning's defaults (loss rule, ratio 0.9, first prune at epoch 2, chosen by
    bench_pruning.py): a learning rate whose loss is still 97 % of its first value at epoch 2
    is pruned there; one at 83 % trains on, which PoorInitialization's ratio 0.5 would prune.
    The forecast rule is off by default (bench_tuner_live.py, bench_hpo_live.py): that slower
    learner, which the forecast condemns at epoch 5 against a better reference, trains on."""
    default = KoopmanPruning()
    assert default.start_from_epoch == 1 and default.loss_ratio == 0.9
    assert PoorInitialization.__init__.__kwdefaults__["loss_ratio"] == 0.5
    history = fit(0.003, default)
    assert default.pruned and default.pruned_epoch == 2 and len(history.epoch) == 2
    slower = KoopmanPruning()
    history = fit(0.02, slower)
    assert not slower.pruned and len(history.epoch) == EPOCHS
    strict = KoopmanPruning(loss_ratio=0.5)
    fit(0.02, strict)
    assert strict.pruned and strict.pruned_epoch == 2
    off = KoopmanPruning(loss_ratio=None)  # the loss rule turned off
    history = fit(1e-5, off)
    assert not off.pruned and len(history.epoch) == EPOCHS
    behind = KoopmanPruning(reference=0.2)
    history = fit(0.02, behind)
    assert not behind.pruned and len(history.epoch) == EPOCHS
    assert np.isnan(history.history["pruning_forecast"]).all()  # no rule needed one
    condemned = KoopmanPruning(reference=0.2, forecast="interval")
    fit(0.02, condemned)
    assert condemned.rule is PruningRule.FORECAST and condemned.pruned_epoch == 5


def test_forecast_rule_off_still_logs_the_forecast_of_a_pruned_run():
    """With the forecast rule off, a run the loss rule prunes after 4 epochs still gets the
    point forecast of its objective at that epoch (for the log and ``pruned_score``)."""
    stagnating = KoopmanPruning(start_from_epoch=3)
    history = fit(1e-5, stagnating)
    assert stagnating.rule is PruningRule.POOR_INITIALIZATION and stagnating.pruned_epoch == 4
    logged = history.history["pruning_forecast"]
    assert np.isnan(logged[:-1]).all()
    expected = forecast_curve(history.history["val_loss"], EPOCHS - 4)
    assert logged[-1] == pytest.approx(expected.mean[-1])


def test_divergence_is_pruned_at_once_even_before_start_from_epoch():
    callback = KoopmanPruning(start_from_epoch=5)
    history = fit(1e4, callback)  # the loss overflows within a few epochs
    assert callback.rule is PruningRule.NONFINITE
    assert callback.pruned_epoch == len(history.epoch) < 6
    assert "non-finite" in callback.reason


def relu_model(lr, *, dead_bias=False, seed=0):
    """A ReLU network; ``dead_bias``: the hidden layer's bias initializer is -10, so every
    hidden unit starts (and, re-drawn, restarts) dead."""
    keras.utils.set_random_seed(seed)
    bias = keras.initializers.Constant(-10.0) if dead_bias else "zeros"
    model = keras.Sequential([keras.Input((4,)),
                              keras.layers.Dense(8, activation="relu", bias_initializer=bias),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(lr), "mse")
    return model


def fit_model(model, callback, epochs):
    x, y, xv, yv = regression_data()
    return model.fit(x, y, validation_data=(xv, yv), epochs=epochs, batch_size=32, verbose=0,
                     callbacks=[callback])


def test_restart_redraws_a_dead_start_and_training_recovers():
    """A healthy learning rate on an unlucky draw (every ReLU unit dead: only the output bias
    learns): the loss rule re-draws the weights after epoch 4, and with the learning rate
    intact the new segment trains, so the run is not pruned."""
    model = relu_model(0.05)
    model.layers[0].bias.assign(np.full((8,), -10.0, dtype="float32"))  # the unlucky draw
    callback = KoopmanPruning(start_from_epoch=3, restarts=1, restart_seed=7, forecast=None)
    history = fit_model(model, callback, epochs=12)
    assert callback.recorder.restarts == 1 and not callback.pruned
    assert len(history.epoch) == 12
    assert history.history["pruning_restarts"] == [0.0] * 3 + [1.0] * 9
    loss = np.asarray(history.history["loss"])
    assert loss[3] > 0.9 * loss[0]  # stuck before the restart
    assert loss[-1] < 0.3 * loss[4]  # the re-drawn weights train
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.05)
    assert np.all(keras.ops.convert_to_numpy(model.layers[0].bias) > -10.0)


def test_restarts_used_up_then_pruned():
    """A bad initializer (every re-draw is dead too) at a healthy learning rate: one restart,
    then the next segment is judged afresh and pruned."""
    model = relu_model(0.05, dead_bias=True)
    callback = KoopmanPruning(start_from_epoch=3, restarts=1, restart_seed=7, forecast=None)
    history = fit_model(model, callback, epochs=12)
    assert callback.recorder.restarts == 1
    assert callback.pruned_epoch == 8  # 4 epochs, restart, 4 more epochs judged afresh
    assert callback.rule is PruningRule.POOR_INITIALIZATION and len(history.epoch) == 8
    assert history.history["pruning_restarts"][-1] == 1.0
    record = TrialPruning(trial_id="", status="", score=None, pruned=True, epoch=8,
                          rule=PruningRule.POOR_INITIALIZATION, forecast=float("nan"),
                          restarts=1)
    assert record.describe().endswith("after 1 re-initialisation(s)")  # the summary's line
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.05)


def test_callback_configuration_and_errors():
    options = {"delays": (2, 3), "max_residual": 0.3}
    callback = KoopmanPruning("val_mae", direction="min", start_from_epoch=4, margin=0.2,
                              loss_ratio=0.8, restarts=2, forecast="mean",
                              forecast_options=options)
    config = callback.get_config()
    assert KoopmanPruning(**config).get_config() == config
    assert KoopmanPruning(**config).forecast_options == options
    assert callback.start_from_epoch == 4 and callback.loss_ratio == 0.8
    assert "val_mae" in callback.recorder.scalar_names and not callback.recorder.weights
    clone = copy.deepcopy(callback)  # keras-tuner deep-copies callbacks for every trial
    assert clone.recorder is not callback.recorder and clone.get_config() == config
    for kwargs, name in [({"start_from_epoch": 0}, "start_from_epoch"),
                         ({"direction": "up"}, "direction"),
                         ({"margin": -0.1}, "margin"), ({"restarts": -1}, "restarts"),
                         ({"reference": float("nan")}, "reference"),
                         ({"loss_ratio": 0.0}, "loss_ratio"), ({"loss_ratio": 1.5}, "loss_ratio")]:
        with pytest.raises(ValueError, match=name):
            KoopmanPruning(**kwargs)
    with pytest.raises(TypeError, match="objective"):
        KoopmanPruning(3)
    with pytest.raises(ValueError, match="forecast_options"):
        KoopmanPruning(forecast_options={"speed": 2})
    with pytest.raises(ValueError, match="forecast"):
        KoopmanPruning(forecast=True)
    with pytest.raises(TypeError):
        KoopmanPruning(warmup=2)  # the old name is gone: start_from_epoch=1 is warmup=2


def test_factory_and_tuner_arguments(tmp_path):
    spectral = with_koopman_pruning(keras_tuner.RandomSearch)
    assert issubclass(spectral, keras_tuner.RandomSearch) and spectral.__name__ == "SpectralRandomSearch"
    assert with_koopman_pruning(spectral) is spectral
    with pytest.raises(TypeError, match="tuner_class"):
        with_koopman_pruning(dict)
    build = lambda hp: small_model(hp.Choice("lr", [0.01]))  # noqa: E731
    common = dict(max_trials=1, directory=str(tmp_path), overwrite=True)
    with pytest.raises(ValueError, match="objective"):
        spectral(build, objective=["val_loss", "loss"], **common)
    with pytest.raises(ValueError, match="pruned_score"):
        spectral(build, objective="val_loss", pruned_score="best", **common)
    with pytest.raises(TypeError, match="pruning"):
        spectral(build, objective="val_loss", pruning=keras.callbacks.EarlyStopping(), **common)


# ---------------------------------------------------------------------------- a search
def test_search_completes_pruned_trials_with_a_score(tmp_path):
    """Four stagnating trials in a row would abort a search that raised FailedTrialError."""
    rates = [1e-5, 2e-5, 3e-5, 4e-5, 0.05, 0.005]

    def build(hp):
        return small_model(hp.Choice("lr", rates))

    tuner = SpectralGridSearch(build, objective="val_loss", directory=str(tmp_path),
                               project_name="grid",
                               pruning=KoopmanPruning(start_from_epoch=3, forecast="interval"),
                               pruned_score="forecast")
    x, y, xv, yv = regression_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuner.search(x, y, validation_data=(xv, yv), epochs=EPOCHS, batch_size=32, verbose=0)
    trials = {t.hyperparameters["lr"]: t for t in tuner.oracle.trials.values()}
    assert sorted(trials) == sorted(rates)
    assert all(t.status == "COMPLETED" and np.isfinite(t.score) for t in trials.values())
    rules = {lr: t.metrics.get_last_value("pruned_rule") for lr, t in trials.items()}
    assert rules == {1e-5: 1.0, 2e-5: 1.0, 3e-5: 1.0, 4e-5: 1.0, 0.05: 0.0, 0.005: 2.0}
    assert tuner.get_best_hyperparameters()[0]["lr"] == 0.05
    slow = trials[0.005]
    assert slow.metrics.get_last_value("pruned_epoch") == 4.0
    # a trial pruned by the loss rule still gets the forecast of the epoch it was pruned at
    # (its score under pruned_score="forecast")
    stagnant = trials[1e-5]
    assert stagnant.metrics.get_last_value("pruned_epoch") == 4.0
    assert np.isfinite(stagnant.metrics.get_last_value("pruning_forecast"))
    # pruned_score="forecast": the forecast, clipped to be no better than the last value seen
    forecast = slow.metrics.get_last_value("pruning_forecast")
    last_seen = slow.metrics.get_last_value("val_loss")
    assert slow.score == pytest.approx(max(forecast, last_seen))
    assert slow.score > trials[0.05].score
    assert "forecast" in slow.message and "after 4 epochs" in slow.message
    # the trial's saved state carries the pruning metrics
    saved = json.loads((Path(tuner.get_trial_dir(slow.trial_id)) / "trial.json").read_text())
    assert saved["metrics"]["metrics"]["pruned"]["observations"][-1]["value"] == [1.0]
    records = {r.trial_id: r for r in tuner.pruning_records()}
    assert sum(r.pruned for r in records.values()) == 5
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tuner.results_summary(num_trials=6)
    text = out.getvalue()
    assert "KoopmanPruning: 5 of 6 trials pruned" in text
    assert "pruned after 4 epochs by the loss rule (poor start)" in text


class _CountingPruning(KoopmanPruning):
    """A user's subclass of the template: counts the trials it ran in (class attribute, since
    keras-tuner deep-copies callbacks)."""

    trials_seen: list = []

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        _CountingPruning.trials_seen.append((self.objective, self.reference))


def test_a_subclass_of_the_pruning_template_runs_in_every_trial(tmp_path):
    def build(hp):
        return small_model(hp.Choice("lr", [0.05, 1e-5]))

    _CountingPruning.trials_seen = []
    tuner = SpectralGridSearch(build, objective="val_loss", directory=str(tmp_path),
                               project_name="subclass", pruning=_CountingPruning())
    x, y, xv, yv = regression_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuner.search(x, y, validation_data=(xv, yv), epochs=EPOCHS, batch_size=32, verbose=0)
    seen = _CountingPruning.trials_seen
    assert len(seen) == 2 and all(objective == "val_loss" for objective, _ in seen)
    # the second trial's copy carries the first trial's score as its reference
    first = min(tuner.oracle.trials.values(), key=lambda t: t.trial_id)
    assert seen[0][1] is None and seen[1][1] == pytest.approx(first.score)


class EpochsPerRate(SpectralGridSearch):
    """Keeps how many epochs each learning rate's trial ran (from its History)."""

    def run_trial(self, trial, *args, **kwargs):
        results = super().run_trial(trial, *args, **kwargs)
        (history,) = results if isinstance(results, list) else [results]  # one execution
        self.epochs_run = getattr(self, "epochs_run", {})
        self.epochs_run[trial.hyperparameters["lr"]] = len(history.epoch)
        return results


def test_spectral_poor_init_rule_stops_a_trial_through_the_monitor(tmp_path):
    """The paper's spectral rule inside a search: a KoopmanMonitor and
    PoorInitialization(rule="spectral", action="stop") in the trial's callbacks (keras-tuner
    deep-copies the pair together) stop the stagnating trial at epoch 4, where its weights'
    important eigenvalues sit at 1, and let the learning ones run the whole budget.  The
    tuner's own loss rule is off, so only the spectral rule can stop a trial."""
    rates = [1e-5, 0.05, 0.005]
    tuner = EpochsPerRate(lambda hp: small_model(hp.Choice("lr", rates)), objective="val_loss",
                          directory=str(tmp_path), project_name="spectral",
                          pruning=KoopmanPruning(loss_ratio=None, forecast=None))
    monitor = KoopmanMonitor(("weights", "loss"))
    check = PoorInitialization(monitor, action="stop", rule="spectral", epochs=(4, 4))
    x, y, xv, yv = regression_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuner.search(x, y, validation_data=(xv, yv), epochs=EPOCHS, batch_size=32, verbose=0,
                     callbacks=[monitor, check])
    assert tuner.epochs_run == {1e-5: 4, 0.05: EPOCHS, 0.005: EPOCHS}
    assert monitor.recorder.store is None  # the template was copied, never run
    trials = {t.hyperparameters["lr"]: t for t in tuner.oracle.trials.values()}
    assert all(t.status == "COMPLETED" and np.isfinite(t.score) for t in trials.values())
    assert trials[1e-5].metrics.get_last_value("koopman_poor_init") == 1.0
    assert trials[0.05].metrics.get_last_value("koopman_poor_init") == 0.0
    assert not any(t.metrics.get_last_value("pruned") for t in trials.values())
    assert tuner.get_best_hyperparameters()[0]["lr"] == 0.05


# ---------------------------------------------------------------------------- distributed
DISTRIBUTED = textwrap.dedent("""
    import contextlib, io, json, os, sys, warnings
    sys.path.insert(0, ROOT)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    import keras, numpy as np
    from keras_koopman import KoopmanPruning, SpectralRandomSearch

    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, 4)).astype("float32")
    Y = (X @ rng.standard_normal((4, 1)) + 0.1 * rng.standard_normal((128, 1))).astype("float32")

    def build(hp):
        lr = hp.Choice("lr", [1e-5, 0.05, 2e-5, 0.005, 3e-5, 0.02])
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="tanh"),
                                  keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(lr), "mse")
        return model

    ran = []
    class Recording(SpectralRandomSearch):
        def on_trial_end(self, trial):
            ran.append({"id": trial.trial_id, "message": trial.message})
            super().on_trial_end(trial)

    tuner = Recording(build, objective="val_loss", max_trials=5, seed=1, directory=OUT,
                      project_name="dist",
                      pruning=KoopmanPruning(start_from_epoch=3, forecast="interval"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuner.search(X[:96], Y[:96], validation_data=(X[96:], Y[96:]), epochs=8,
                     batch_size=32, verbose=0)
    me = os.environ["KERASTUNER_TUNER_ID"]
    result = {"ran": ran}
    if me == "chief":
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            tuner.results_summary(num_trials=10)
        result["summary"] = out.getvalue()
        result["records"] = [dict(id=r.trial_id, status=r.status, score=r.score,
                                  pruned=r.pruned, epoch=r.epoch, rule=int(r.rule))
                             for r in tuner.pruning_records()]
    with open(os.path.join(OUT, me + ".json"), "w") as f:
        json.dump(result, f)
""")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # three TensorFlow processes: about 60 s of CPU, minutes on a loaded machine
def test_distributed_chief_and_two_workers(tmp_path):
    script = DISTRIBUTED.replace("ROOT", repr(str(ROOT))).replace("OUT", repr(str(tmp_path)))
    port = str(free_port())
    procs = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = dict(os.environ, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
                   KERASTUNER_ORACLE_PORT=port)
        procs[tuner_id] = subprocess.Popen([sys.executable, "-c", script], env=env,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True)
    try:
        outputs = {k: p.communicate(timeout=240)[0] for k, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for tuner_id, p in procs.items():
        assert p.returncode == 0, f"{tuner_id} failed:\n{outputs[tuner_id][-3000:]}"
    chief = json.loads((tmp_path / "chief.json").read_text())
    workers = [json.loads((tmp_path / f"tuner{i}.json").read_text()) for i in (0, 1)]
    assert chief["ran"] == []  # the chief only serves the oracle
    records = {r["id"]: r for r in chief["records"]}
    assert len(records) == 5 and all(r["status"] == "COMPLETED" for r in records.values())
    ran = [t for w in workers for t in w["ran"]]
    assert sorted(t["id"] for t in ran) == sorted(records)  # every trial ran exactly once
    pruned_on_chief = {i for i, r in records.items() if r["pruned"]}
    pruned_on_workers = {t["id"] for t in ran if t["message"] and "pruned after" in t["message"]}
    assert pruned_on_chief and pruned_on_chief == pruned_on_workers
    assert all(records[i]["epoch"] >= 4 and records[i]["score"] is not None for i in pruned_on_chief)
    # the chief never saw trial.message (not sent over gRPC) but summarises from metrics
    assert f"{len(pruned_on_chief)} of 5 trials pruned" in chief["summary"]
