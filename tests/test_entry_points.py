"""One set of defaults: the same recorded trajectory gets the same diagnostics through every
entry point (monitor logs, the engine's diagnose, the analysis helpers, the tuner's callback
and the command line)."""

import dataclasses
import json

import keras
import numpy as np
import pytest
from training_problems import regression_problem

from keras_koopman import (DEFAULT_OPTIONS, KoopmanMonitor, KoopmanPruning, TrainingTrajectory,
                           analyze_series, analyze_weights, delay_embed, diagnose, dmd_rrr,
                           forecast_curve)
from keras_koopman.cli import main
from keras_koopman.koopman import default_tol

EPOCHS = 30


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Minibatch SGD on a noisy regression (a noisy trajectory, where the settings matter)."""
    X, y, eta, _ = regression_problem(n_features=8, scales=np.linspace(1.5, 0.3, 8), seed=2)
    y = y + np.random.default_rng(5).normal(scale=0.3, size=y.shape).astype("float32")
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.3 * eta), "mse")
    folder = tmp_path_factory.mktemp("entry") / "record"
    monitor = KoopmanMonitor(("weights", "loss", "val_loss"), analyze_at=(EPOCHS,), storage=folder)
    history = model.fit(X, y, batch_size=8, epochs=EPOCHS, validation_data=(X[:32], y[:32]),
                        verbose=0, callbacks=[monitor])
    # the tuner's callback fed the same epochs: with a reference no trial reaches (a loss of 0)
    # it forecasts the objective at epoch EPOCHS - 1, its first chance to prune
    pruning = KoopmanPruning("val_loss", loss_ratio=None, reference=0.0, forecast="interval",
                             start_from_epoch=EPOCHS - 2)
    pruning.set_model(model)
    pruning.set_params({"epochs": EPOCHS})
    pruning.on_train_begin()
    for epoch in range(EPOCHS):
        pruning.on_epoch_end(epoch, {key: history.history[key][epoch]
                                     for key in ("loss", "val_loss")})
        if pruning.pruned:
            break
    model.stop_training = False
    return folder, monitor, pruning, history


def _same(a, b):
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        assert x == pytest.approx(y, rel=1e-7, abs=1e-9), field.name


def test_weights_diagnostics_agree_everywhere(recorded, tmp_path):
    folder, monitor, _, history = recorded
    live = [a for a in monitor.analyses if a.observable == "weights"][-1]
    assert history.history["koopman_unit_cluster"][-1] == live.diagnostics.unit_cluster
    record = TrainingTrajectory.load(folder)
    weights = np.asarray(record.weights, dtype=np.float64)
    # the analysis helper on the raw snapshots (no QR compression)
    helper = analyze_weights(weights, record.weight_epochs).diagnostics
    # the engine directly, with the one default's settings
    kwargs = {**DEFAULT_OPTIONS.dmd_kwargs(), "tol": default_tol(weights.shape[0], np.float32)}
    engine = diagnose(dmd_rrr(weights, **kwargs), **DEFAULT_OPTIONS.diagnose_kwargs())
    # the command line's analyze --json
    out = tmp_path / "analyses.json"
    assert main(["analyze", str(folder), "--observable", "weights",
                 "--snapshots", str(EPOCHS + 1), "--json", str(out)]) == 0
    cli = json.loads(out.read_text())["analyses"][0]["diagnostics"]
    for other in (helper, engine):
        _same(live.diagnostics, other)
    for key, value in live.diagnostics.as_logs("").items():
        assert float(cli[key]) == pytest.approx(value, rel=1e-7, abs=1e-9), key


@pytest.mark.parametrize("name", ["loss", "val_loss"])
def test_curve_diagnostics_agree_everywhere(recorded, tmp_path, name):
    folder, monitor, pruning, _ = recorded
    live = [a for a in monitor.analyses if a.observable == name][-1]
    epochs, values = TrainingTrajectory.load(folder).scalars[name]
    helper = analyze_series(values, epochs, observable=name).diagnostics
    delays = live.delays
    kwargs = {**DEFAULT_OPTIONS.dmd_kwargs(), "tol": default_tol(delays, np.float32)}
    engine = diagnose(dmd_rrr(delay_embed(values, delays), **kwargs),
                      **DEFAULT_OPTIONS.diagnose_kwargs())
    out = tmp_path / "analyses.json"
    assert main(["analyze", str(folder), "--observable", name, "--snapshots", str(EPOCHS),
                 "--json", str(out)]) == 0
    cli = json.loads(out.read_text())["analyses"][0]["diagnostics"]
    for other in (helper, engine):
        _same(live.diagnostics, other)
    if name == "val_loss":  # the tuner's callback forecast its objective before the last epoch
        tuner = pruning.forecast_result
        expected = forecast_curve(values[:EPOCHS - 1], 1)
        np.testing.assert_array_equal(tuner.mean, expected.mean)
        np.testing.assert_array_equal(tuner.lower, expected.lower)
        np.testing.assert_array_equal(tuner.upper, expected.upper)
    for key, value in live.diagnostics.as_logs("").items():
        assert float(cli[key]) == pytest.approx(value, rel=1e-7, abs=1e-9), key


def test_the_settings_matter_on_this_trajectory(recorded):
    """The agreement above is not vacuous: other settings give other diagnostics here."""
    folder, monitor, _, _ = recorded
    record = TrainingTrajectory.load(folder)
    live = [a for a in monitor.analyses if a.observable == "weights"][-1].diagnostics
    plain = analyze_weights(record.weights, record.weight_epochs,
                            options=DEFAULT_OPTIONS.replace(refine=False, delta=0.02,
                                                            min_importance=0.05)).diagnostics
    assert (plain.unit_cluster, plain.n_important) != (live.unit_cluster, live.n_important)
