"""Decision callbacks on a KoopmanMonitor: fixed-point stopping and poor initialisation."""

import warnings

import keras
import numpy as np
import pytest
from training_problems import Interrupt, Logs, linear_model, regression_problem

from keras_koopman import (FixedPointStopping, KoopmanMonitor, PoorInitialization,
                           TrainingTrajectory)


def frozen_model(n_features=5):
    """A model that cannot learn (learning rate 0): its trajectory sits at a fixed point."""
    X, y, _, _ = regression_problem()
    return X, y, linear_model(n_features, 0.0)


@pytest.mark.parametrize("start, patience, stop", [(5, 3, 6), (1, 3, 6), (1, 1, 2)])
def test_fixed_point_stop_after_start_from_epoch(start, patience, stop):
    """Analyses at epochs 2, 4, 6, ... all see the fixed point: training stops at the first
    analysis epoch after ``start_from_epoch`` that completes ``patience`` of them."""
    X, y, model = frozen_model()
    monitor = KoopmanMonitor(("weights", "loss"), analyze_every=2)
    stopper = FixedPointStopping(monitor, threshold=0.9, patience=patience, start_from_epoch=start)
    history = model.fit(X, y, batch_size=len(X), epochs=30, verbose=0, callbacks=[monitor, stopper])
    assert len(history.history["loss"]) == stop
    assert stopper.stopped_epoch == stop - 1
    assert "fixed point" in stopper.stop_reason


FLICKER = {3: 0.95, 4: 0.2, 5: 0.95, 6: 0.3, 7: 0.95, 8: 0.95, 9: 0.95, 10: 0.95}


@pytest.mark.parametrize("patience, stop", [(1, 3), (2, 8), (3, 9)])
def test_patience_counts_consecutive_analyses(script_unit_cluster, patience, stop):
    """A spike of the unit cluster stops training only with ``patience=1``; a reading below
    the threshold restarts the count."""
    X, y, model = frozen_model()
    calls = script_unit_cluster(FLICKER)
    monitor = KoopmanMonitor(("weights",), analyze_every=1)
    stopper = FixedPointStopping(monitor, patience=patience, start_from_epoch=0)
    history = model.fit(X, y, batch_size=len(X), epochs=30, verbose=0, callbacks=[monitor, stopper])
    assert len(history.history["loss"]) == stop
    assert history.history["koopman_unit_cluster"][-len(calls):] == pytest.approx(calls)
    assert ("consecutive" in stopper.stop_reason) == (patience > 1)


def test_a_converging_run_is_not_stopped():
    """The same rule leaves a still-converging run alone (its transients are important)."""
    X, y, eta, _ = regression_problem()
    monitor = KoopmanMonitor(("weights", "loss"), analyze_every=2)
    stopper = FixedPointStopping(monitor, start_from_epoch=0)
    history = linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=30, verbose=0,
                                       shuffle=False, callbacks=[monitor, stopper])
    assert len(history.history["loss"]) == 30 and stopper.stopped_epoch is None
    assert max(history.history["koopman_unit_cluster"]) < 0.9


def test_resumed_patience_counts_the_analyses_before_the_interruption(tmp_path, script_unit_cluster):
    """Interrupted at epoch 6 and resumed from epoch 5: the analyses of epochs 3-5 in the
    record count towards ``patience``, so the stop falls on the uninterrupted run's epoch."""
    X, y, eta, _ = regression_problem()
    fit = dict(batch_size=len(X), epochs=12, shuffle=False, verbose=0)
    script_unit_cluster({3: 0.2, 4: 0.95, 5: 0.95, 6: 0.95, 7: 0.95})

    def callbacks(**storage):
        monitor = KoopmanMonitor(("weights", "loss"), analyze_every=1, **storage)
        return monitor, FixedPointStopping(monitor, start_from_epoch=0, patience=3)

    straight = linear_model(5, eta, momentum=0.5).fit(X, y, callbacks=list(callbacks()), **fit)
    assert len(straight.history["loss"]) == 6
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(KeyboardInterrupt):
        linear_model(5, eta, momentum=0.5).fit(
            X, y, callbacks=[*callbacks(storage=tmp_path / "rec", resume=True), Interrupt(6), backup], **fit)
    monitor, stopper = callbacks(storage=tmp_path / "rec", resume=True)
    logs = Logs()
    linear_model(5, eta, seed=99, momentum=0.5).fit(X, y, callbacks=[monitor, stopper, logs, backup], **fit)
    assert sorted(logs.seen) == [6]
    assert "3 consecutive" in stopper.stop_reason


@pytest.mark.parametrize("rule, reason", [("loss", "still 100%"), ("spectral", "stagnation"),
                                          ("either", "still 100%")])
def test_poor_initialization_stop(rule, reason):
    X, y, model = frozen_model()
    monitor = KoopmanMonitor(("weights", "loss"))
    check = PoorInitialization(monitor, action="stop", rule=rule, epochs=(5, 10))
    with pytest.warns(RuntimeWarning, match="poor initialisation"):
        history = model.fit(X, y, batch_size=len(X), epochs=30, verbose=0, callbacks=[monitor, check])
    assert len(history.history["loss"]) == 5
    assert history.history["koopman_poor_init"] == [0.0] * 4 + [1.0]
    assert reason in check.stop_reason
    # the spectral rule asked the monitor for the analyses it needs (no schedule was given)
    assert bool(monitor.analyses) == (rule != "loss")


def test_poor_initialization_warns_and_lets_training_go_on():
    X, y, model = frozen_model()
    monitor = KoopmanMonitor(("weights", "loss"))
    check = PoorInitialization(monitor, action="warn", epochs=(2, 3))
    with pytest.warns(RuntimeWarning, match="poor initialisation"):
        history = model.fit(X, y, batch_size=len(X), epochs=6, verbose=0, callbacks=[monitor, check])
    assert len(history.history["loss"]) == 6 and check.stopped_epoch is None
    assert history.history["koopman_poor_init"] == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def dead_start_model(x, y, lr=0.1):
    """A healthy network (ReLU MLP, SGD 0.1) started from all-zero weights: the hidden units
    are dead, only the output bias moves, and the loss on zero-mean targets stays flat."""
    model = keras.Sequential([keras.Input((x.shape[1],)),
                              keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(lr, momentum=0.9), "mse")
    for variable in model.trainable_variables:
        variable.assign(np.zeros(variable.shape, dtype="float32"))
    return model


def test_restart_redraws_the_weights_and_training_then_learns():
    """After the restart the learning rate is intact and the loss falls (the old restart
    zeroed every optimizer variable, learning rate included, and froze training)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (np.sin(x[:, :1]) + x[:, 1:2] * x[:, 2:3]).astype("float32")
    y -= y.mean()
    model = dead_start_model(x, y)
    monitor = KoopmanMonitor(("weights", "loss"))
    check = PoorInitialization(monitor, action="restart", epochs=(2, 2), loss_ratio=0.9, seed=5)
    with pytest.warns(RuntimeWarning, match="restart 1"):
        history = model.fit(x, y, batch_size=32, epochs=12, verbose=0, callbacks=[monitor, check])
    loss = history.history["loss"]
    assert monitor.restarts == 1 and check.stopped_epoch is None
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.1)
    assert loss[1] >= 0.99 * loss[0]           # stuck before the restart
    assert loss[-1] < 0.5 * loss[2]            # learning after it
    assert all(np.any(v.numpy() != 0) for v in model.trainable_variables)


def test_restarts_are_bounded_then_training_stops():
    X, y, model = frozen_model()
    monitor = KoopmanMonitor(("weights", "loss"), analyze_every=1)
    check = PoorInitialization(monitor, action="restart", epochs=(5, 30), max_restarts=2)
    with pytest.warns(RuntimeWarning):
        history = model.fit(X, y, batch_size=len(X), epochs=40, verbose=0, callbacks=[monitor, check])
    assert monitor.restarts == 2
    assert "poor initialisation" in check.stop_reason
    assert len(history.history["loss"]) == 15  # fired at 5, 10 (restarts) and 15 (stop)


def test_resume_after_a_restart_analyses_from_the_reinitialised_weights(tmp_path):
    """A restart at epoch 2 leaves two snapshots at epoch 2; a run resumed there analyses from
    the second one (the re-drawn weights), as the uninterrupted run does."""
    X, y, eta, _ = regression_problem()
    fit = dict(batch_size=len(X), epochs=4, shuffle=False, verbose=0)

    def callbacks(**storage):
        monitor = KoopmanMonitor(("weights", "loss"), analyze_at=(4,), **storage)
        return [monitor, PoorInitialization(monitor, action="restart", epochs=(2, 2))]

    def stagnating(seed=1):  # a learning rate so small that the loss rule fires at epoch 2
        return linear_model(5, eta * 1e-3, seed=seed)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        straight = callbacks(storage=tmp_path / "straight")
        stagnating().fit(X, y, callbacks=straight, **fit)
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        with pytest.raises(KeyboardInterrupt):
            stagnating().fit(X, y, callbacks=[*callbacks(storage=tmp_path / "resumed", resume=True),
                                              Interrupt(3), backup], **fit)
        second = callbacks(storage=tmp_path / "resumed", resume=True)
        stagnating(seed=99).fit(X, y, callbacks=[*second, backup], **fit)
    straight, second = straight[0], second[0]
    assert straight.restarts >= 1 and second.restarts == straight.restarts
    a = straight.analyses[0]
    b = [x for x in second.analyses if x.observable == "weights"][0]
    assert a.observable == "weights"
    assert (b.first_epoch, b.n_snapshots) == (a.first_epoch, a.n_snapshots) == (2.0, 3)
    np.testing.assert_allclose(TrainingTrajectory.load(tmp_path / "resumed").weights,
                               TrainingTrajectory.load(tmp_path / "straight").weights, atol=1e-6)


def test_a_decision_listed_before_its_monitor_says_so():
    X, y, model = frozen_model()
    monitor = KoopmanMonitor(("weights", "loss"))
    with pytest.raises(RuntimeError, match="list the monitor before FixedPointStopping"):
        model.fit(X, y, epochs=2, verbose=0, callbacks=[FixedPointStopping(monitor), monitor])


@pytest.mark.parametrize("cls, kwargs, error, name", [
    (FixedPointStopping, dict(threshold=1.5), ValueError, "threshold"),
    (FixedPointStopping, dict(patience=0), ValueError, "patience"),
    (FixedPointStopping, dict(patience=1.5), TypeError, "patience"),
    (FixedPointStopping, dict(start_from_epoch=-1), ValueError, "start_from_epoch"),
    (PoorInitialization, dict(action="panic"), ValueError, "action"),
    (PoorInitialization, dict(rule="vibes"), ValueError, "rule"),
    (PoorInitialization, dict(epochs=(5, 2)), ValueError, "epochs"),
    (PoorInitialization, dict(epochs=(0, 2)), ValueError, "epochs"),
    (PoorInitialization, dict(loss_ratio=-0.1), ValueError, "loss_ratio"),
    (PoorInitialization, dict(stagnation_threshold=2), ValueError, "stagnation_threshold"),
    (PoorInitialization, dict(high_loss_fraction="x"), ValueError, "high_loss_fraction"),
    (PoorInitialization, dict(max_restarts=-1), ValueError, "max_restarts"),
    (PoorInitialization, dict(seed=1.5), TypeError, "seed"),
])
def test_bad_arguments_name_the_parameter(cls, kwargs, error, name):
    with pytest.raises(error, match=name):
        cls(KoopmanMonitor(("weights", "loss")), **kwargs)


def test_decisions_need_a_monitor_that_records_what_they_read():
    with pytest.raises(TypeError, match="monitor"):
        FixedPointStopping("monitor")
    with pytest.raises(ValueError, match="'loss'"):
        PoorInitialization(KoopmanMonitor(("weights",)))
    with pytest.raises(ValueError, match="primary"):
        PoorInitialization(KoopmanMonitor(("loss", "weights"), primary="loss"), rule="spectral")


def test_configs_round_trip():
    monitor = KoopmanMonitor(("weights", "loss"))
    for callback in (FixedPointStopping(monitor, threshold=0.8, patience=2),
                     PoorInitialization(monitor, action="stop", rule="either", epochs=(3, 4))):
        config = callback.get_config()
        assert type(callback)(monitor, **config).get_config() == config
