"""Tests of KoopmanAccelerator on models whose epoch map is known exactly.

A linear model trained by full-batch gradient descent on the mean squared error has the affine
epoch map ``w ↦ (I − ηH) w + ηb`` (H = 2AᵀA/n); on ``[w; 1]`` it is linear, its λ = 1 mode is
the least-squares solution and its forecast ``h`` epochs ahead is ``h`` more steps of that map.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_koopman import AnalysisOptions
from keras_koopman.accelerator import (ACCELERATOR_MAX_RESIDUAL, LOG_KEYS, JumpRecord,
                                       KoopmanAccelerator)

N, D, LR = 64, 5, 0.25
#: trust only Ritz pairs with residual <= 1e-3 (exact affine maps fit far better)
TIGHT = AnalysisOptions(max_residual=1e-3)


def regression_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(N, D)) * np.linspace(0.6, 1.4, D)).astype("float32")
    y = (x @ rng.normal(size=D) + 0.3 + 0.1 * rng.normal(size=N)).astype("float32")[:, None]
    return x, y


def design(x):
    return np.c_[x.astype(np.float64), np.ones(len(x))]


def lstsq(x, y):
    return np.linalg.lstsq(design(x), y[:, 0].astype(np.float64), rcond=None)[0]


def linear_model(seed: int = 0, optimizer=None) -> keras.Model:
    model = keras.Sequential([
        keras.Input((D,)),
        keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed)),
    ])
    model.compile(optimizer=optimizer or keras.optimizers.SGD(LR), loss="mse")
    return model


def flat(model) -> np.ndarray:
    return np.concatenate([keras.ops.convert_to_numpy(v).ravel()
                           for v in model.trainable_variables])


class WeightRecorder(keras.callbacks.Callback):
    """Copies the weights at every epoch end (list it before the accelerator)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(keras.ops.convert_to_numpy(v))
                             for v in self.model.trainable_variables])


def fit(model, x, y, epochs, callbacks):
    return model.fit(x, y, batch_size=N, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=callbacks)


@pytest.mark.parametrize("anchored", [True, False])
def test_fixed_point_jump_is_the_least_squares_solution(anchored):
    x, y = regression_data()
    solution = lstsq(x, y)
    model = linear_model()
    accelerator = KoopmanAccelerator((x, y), analyze_every=12, window=12, target="fixed_point",
                                     anchored=anchored, options=TIGHT, backtrack=0)
    recorder = WeightRecorder()
    fit(model, x, y, 12, [recorder, accelerator])
    before = np.concatenate([w.ravel() for w in recorder.weights[-1]])
    # 12 epochs of gradient descent are far from converged; the jump is not
    assert np.abs(before - solution).max() > 1e-2 * np.abs(solution).max()
    assert len(accelerator.jumps) == 1 and accelerator.jumps[0].accepted
    error = np.abs(flat(model) - solution).max() / np.abs(solution).max()
    assert error < 2e-5


def test_forecast_jump_equals_more_epochs_of_gradient_descent():
    x, y = regression_data(1)
    model = linear_model(1)
    horizon = 6
    accelerator = KoopmanAccelerator((x, y), analyze_every=10, window=10, target="forecast",
                                     horizon=horizon, options=TIGHT, backtrack=0)
    recorder = WeightRecorder()
    fit(model, x, y, 10, [recorder, accelerator])
    assert accelerator.jumps[-1].accepted
    w = np.concatenate([v.ravel() for v in recorder.weights[-1]]).astype(np.float64)
    A, target = design(x), y[:, 0].astype(np.float64)
    for _ in range(horizon):  # w <- w - lr * grad of mean((A w - y)^2)
        w = w - LR * 2.0 / len(x) * A.T @ (A @ w - target)
    assert np.abs(flat(model) - w).max() / np.abs(w).max() < 1e-4


def test_layer_granularity_solves_each_layer():
    """Two independent linear regressions in one model: one decomposition per layer."""
    (x1, y1), (x2, y2) = regression_data(2), regression_data(3)
    in1, in2 = keras.Input((D,)), keras.Input((D,))
    init = keras.initializers.GlorotUniform
    out1 = keras.layers.Dense(1, kernel_initializer=init(4), name="first")(in1)
    out2 = keras.layers.Dense(1, kernel_initializer=init(5), name="second")(in2)
    model = keras.Model([in1, in2], [out1, out2])
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=["mse", "mse"])
    accelerator = KoopmanAccelerator(([x1, x2], [y1, y2]), analyze_every=12, window=12,
                                     target="fixed_point", granularity="layer",
                                     options=TIGHT, backtrack=0)
    fit(model, [x1, x2], [y1, y2], 12, [accelerator])
    assert accelerator.jumps[0].accepted
    assert accelerator.jumps[0].n_used == 2 * (D + 2)  # D + 1 weights + constant, per layer
    for layer, (x, y) in zip(("first", "second"), ((x1, y1), (x2, y2))):
        weights = np.concatenate([v.ravel() for v in model.get_layer(layer).get_weights()])
        solution = lstsq(x, y)
        assert np.abs(weights - solution).max() / np.abs(solution).max() < 2e-5


def test_batch_interval_snapshots_inside_epochs():
    """Full batch, snapshots every 3 steps: the map is three GD steps, same fixed point."""
    x, y = regression_data()
    model = linear_model()
    accelerator = KoopmanAccelerator((x, y), analyze_every=12, window=12, batch_interval=3,
                                     target="fixed_point", options=TIGHT, backtrack=0)
    history = fit(model, x, y, 36, [accelerator])
    (record,) = accelerator.jumps
    assert record.accepted and record.step == 36 and record.epoch == 35
    assert history.history["koopman_jump_attempted"] == [0.0] * 35 + [1.0]
    solution = lstsq(x, y)
    assert np.abs(flat(model) - solution).max() / np.abs(solution).max() < 2e-5


def test_jump_that_raises_the_held_loss_is_rolled_back_exactly():
    x, y = regression_data()
    model = linear_model()
    # held targets = the initial model's predictions: the held loss is smallest at the initial
    # weights, and gradient descent (and its extrapolation) moves away from them
    held = (x, keras.ops.convert_to_numpy(model(x)))
    accelerator = KoopmanAccelerator(held, analyze_every=8, window=8, target="fixed_point",
                                     options=TIGHT, backtrack=3)
    recorder = WeightRecorder()
    history = fit(model, x, y, 8, [recorder, accelerator])
    (record,) = accelerator.jumps
    assert not record.accepted and record.reason == "loss did not decrease"
    assert record.loss_after > record.loss_before
    assert record.step_fraction == pytest.approx(0.5 ** 3)
    for saved, variable in zip(recorder.weights[-1], model.trainable_variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), saved)
    assert history.history["koopman_jump_accepted"][-1] == 0.0
    assert history.history["koopman_jump_loss_ratio"][-1] > 1.0


@pytest.mark.parametrize("backoff, expected", [(True, [6, 10, 18]),
                                               (False, [6, 8, 10, 12, 14, 16, 18])])
def test_backoff_doubles_the_wait_after_rejections(backoff, expected):
    x, y = regression_data()
    model = linear_model()
    held = (x, keras.ops.convert_to_numpy(model(x)))  # every jump is rejected (see above)
    # first attempt after 7 epochs (8 snapshots), then every 2 epochs, or 4, 8 with back-off
    accelerator = KoopmanAccelerator(held, analyze_every=2, window=8, target="fixed_point",
                                     options=TIGHT, backtrack=0, backoff=backoff)
    fit(model, x, y, 20, [accelerator])
    assert [j.epoch for j in accelerator.jumps] == expected
    assert not any(j.accepted for j in accelerator.jumps)


def test_logs_every_epoch_follow_the_schedule():
    x, y = regression_data()
    model = linear_model()
    accelerator = KoopmanAccelerator((x, y), analyze_every=3, window=3, target="fixed_point",
                                     options=AnalysisOptions(max_residual=1.0), backoff=False)
    history = fit(model, x, y, 7, [accelerator])
    for key in LOG_KEYS:
        assert len(history.history[key]) == 7, key
    attempted = history.history["koopman_jump_attempted"]
    accepted = history.history["koopman_jump_accepted"]
    # every 3 epochs once 3 snapshots exist (after an accepted jump the window restarts)
    assert attempted == [0, 0, 1, 0, 0, 1, 0]
    assert len(accelerator.jumps) == 2
    assert all(isinstance(j, JumpRecord) for j in accelerator.jumps)
    assert [j.epoch for j in accelerator.jumps] == [2, 5]
    assert [accepted[j.epoch] for j in accelerator.jumps] == [float(j.accepted)
                                                             for j in accelerator.jumps]
    assert accepted[0] == accepted[1] == accepted[3] == accepted[4] == accepted[6] == 0.0
    assert history.history["koopman_jumps_accepted"] == list(np.cumsum(accepted))
    ratio = history.history["koopman_jump_loss_ratio"]
    assert np.isnan([ratio[i] for i in (0, 1, 3, 4, 6)]).all()
    assert accelerator.seconds > 0


@pytest.mark.parametrize("batch_interval", [None, 1])
def test_start_from_epoch_waits_as_early_stopping_does(batch_interval):
    """Keras semantics: the first attempt can come at the end of 0-based epoch
    ``start_from_epoch`` (the old ``start_epoch=5`` is ``start_from_epoch=4``); full batch, so
    a snapshot every step is a snapshot every epoch."""
    x, y = regression_data()
    model = linear_model()
    held = (x, keras.ops.convert_to_numpy(model(x)))  # every jump is rejected (see above)
    accelerator = KoopmanAccelerator(held, analyze_every=1, window=3, options=TIGHT,
                                     backtrack=0, backoff=False, start_from_epoch=4,
                                     batch_interval=batch_interval)
    history = fit(model, x, y, 7, [accelerator])
    assert [j.epoch for j in accelerator.jumps] == [4, 5, 6]
    assert history.history["koopman_jump_attempted"] == [0.0] * 4 + [1.0] * 3
    eager = KoopmanAccelerator(held, analyze_every=1, window=3, options=TIGHT, backtrack=0,
                               backoff=False, batch_interval=batch_interval)
    fit(linear_model(), x, y, 4, [eager])
    assert [j.epoch for j in eager.jumps] == [1, 2, 3]  # from the third snapshot on


def test_default_options_trust_pairs_up_to_the_accelerator_residual_bound():
    """``options=None``: ``max_residual`` None means ACCELERATOR_MAX_RESIDUAL (0.05), and the
    default ``delta``; the exact affine map of the linear problem passes it."""
    x, y = regression_data()
    model = linear_model()
    accelerator = KoopmanAccelerator((x, y), analyze_every=12, window=12, backtrack=0)
    assert accelerator.options == AnalysisOptions() and ACCELERATOR_MAX_RESIDUAL == 0.05
    fit(model, x, y, 12, [accelerator])
    (record,) = accelerator.jumps
    assert record.accepted and record.n_used >= 2
    solution = lstsq(x, y)
    assert np.abs(flat(model) - solution).max() / np.abs(solution).max() < 2e-5
    # a bound below every residual trusts nothing: no jump
    strict = KoopmanAccelerator((x, y), analyze_every=12, window=12, backtrack=0,
                                options=AnalysisOptions(max_residual=0.0))
    fit(linear_model(), x, y, 12, [strict])
    assert strict.jumps[0].reason == "no trusted modes" and not strict.jumps[0].accepted


@pytest.mark.parametrize("state", ["keep", "reset"])
def test_optimizer_state_after_an_accepted_jump(state):
    """``optimizer_state="reset"``: after an accepted jump the momentum slots are zero (they
    pointed along the old trajectory); the iteration counter and the learning rate are kept,
    so schedules continue.  ``"keep"`` leaves them as they were."""
    x, y = regression_data()
    model = linear_model(optimizer=keras.optimizers.SGD(LR / 4, momentum=0.5))
    # heavy ball is not an affine map of the weights alone: jump late, past the transient
    accelerator = KoopmanAccelerator((x, y), analyze_every=24, window=12,
                                     options=AnalysisOptions(max_residual=0.5), backtrack=3,
                                     optimizer_state=state)
    fit(model, x, y, 24, [accelerator])
    (record,) = accelerator.jumps
    assert record.accepted, record.reason
    optimizer = model.optimizer
    momenta = [v for v in optimizer.variables
               if v is not optimizer.iterations and v is not optimizer.learning_rate]
    assert momenta
    largest = max(np.abs(keras.ops.convert_to_numpy(v)).max() for v in momenta)
    assert (largest == 0) if state == "reset" else (largest > 0)
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 24
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(LR / 4)


@pytest.mark.parametrize("name, value", [
    ("analyze_every", 0), ("window", 2), ("batch_interval", 0), ("target", "minimum"),
    ("horizon", 0), ("granularity", "neuron"), ("pod_rank", 0),
    ("options", AnalysisOptions(delta=1.0)),  # delta: |λ - 1| <= delta must exclude λ = 0
    ("backtrack", -1), ("min_improvement", 1.0), ("optimizer_state", "drop"),
    ("start_from_epoch", -1), ("held_batch_size", 0), ("anchored", "yes"), ("backoff", 1),
])
def test_bad_arguments_name_the_parameter(name, value):
    x, y = regression_data()
    with pytest.raises(ValueError, match=name if name != "options" else "delta"):
        KoopmanAccelerator((x, y), **{name: value})


def test_options_must_be_analysis_options_and_the_old_names_are_gone():
    x, y = regression_data()
    with pytest.raises(TypeError, match="options"):
        KoopmanAccelerator((x, y), options=0.05)
    with pytest.raises(ValueError, match="max_residual"):
        KoopmanAccelerator((x, y), options={"max_residual": -1.0})
    for old in ({"every": 5}, {"start_epoch": 1}, {"max_residual": 0.1}, {"delta": 0.1}):
        with pytest.raises(TypeError):
            KoopmanAccelerator((x, y), **old)


@pytest.mark.parametrize("held", [None, (np.zeros((4, D)),), (np.zeros((4, D)), np.zeros((3, 1))),
                                  (np.full((4, D), np.nan), np.zeros((4, 1)))])
def test_bad_held_data(held):
    with pytest.raises(ValueError, match="held_data"):
        KoopmanAccelerator(held)
