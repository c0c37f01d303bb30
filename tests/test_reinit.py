"""Tests for keras_koopman.reinit: re-drawing weights and resetting optimizer state."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from keras_koopman.reinit import reinitialize, reset_optimizer_state


class Scaled(keras.layers.Layer):
    """Custom layer following Keras's convention: ``add_weight`` plus ``<name>_initializer``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.scale_initializer = keras.initializers.RandomNormal(1.0, 0.3)

    def build(self, input_shape):
        self.scale = self.add_weight(
            shape=(input_shape[-1],), initializer=self.scale_initializer, name="scale"
        )

    def call(self, x):
        return x * self.scale


class Hidden(keras.layers.Layer):
    """Custom layer that keeps no initializer: its weight cannot be re-drawn."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

    def call(self, x):
        return x * self.w


def _composite_model() -> keras.Model:
    inputs = keras.Input((4, 8))
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(inputs, inputs)
    block = keras.Sequential(
        [keras.Input((4, 8)), keras.layers.Dense(8, name="inner"), keras.layers.BatchNormalization()],
        name="block",
    )
    outputs = keras.layers.Dense(1, name="out")(Scaled(name="scaled")(block(attended)))
    return keras.Model(inputs, outputs)


def _values(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v).copy() for v in model.weights]


def _trained(model: keras.Model, optimizer, epochs: int = 2) -> keras.Model:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, *model.input_shape[1:])).astype("float32")
    y = rng.normal(size=(16, *model.output_shape[1:])).astype("float32")
    model.compile(optimizer, loss="mse")
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0)
    return model


def test_every_trainable_variable_at_any_depth_is_redrawn():
    model = _trained(_composite_model(), keras.optimizers.Adam(1e-2))
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no variable left behind
        count = reinitialize(model, seed=3)
    assert count == len(model.weights)
    for variable in model.trainable_variables:
        assert not np.array_equal(keras.ops.convert_to_numpy(variable), before[variable.path]), (
            variable.path
        )
    batch_norm = model.get_layer("block").layers[1]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(batch_norm.moving_mean), 0.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(batch_norm.moving_variance), 1.0)
    scale = keras.ops.convert_to_numpy(model.get_layer("scaled").scale)
    assert abs(scale.mean() - 1.0) < 0.5  # drawn from the layer's own RandomNormal(1, 0.3)


def test_einsum_kernels_are_redrawn_with_the_fans_the_layer_built_them_with():
    model = _composite_model()
    reinitialize(model, seed=0)
    for name in ("query", "key", "value"):
        kernel = keras.ops.convert_to_numpy(
            next(v for v in model.weights if v.path == f"mha/{name}/kernel")
        )
        assert kernel.shape == (8, 2, 4)
        right = np.sqrt(6.0 / (8 + 2 * 4))  # Glorot: fan_in 8 (model dim), fan_out 2 heads × 4
        wrong = np.sqrt(6.0 / (2 * 8 + 4 * 8))  # fans of a convolution-shaped kernel
        assert np.abs(kernel).max() <= right
        assert np.abs(kernel).max() > wrong


@pytest.mark.parametrize("forget_bias", [True, False])
def test_an_lstm_is_redrawn_as_the_cell_builds_it(forget_bias):
    units = 3
    model = keras.Sequential([keras.Input((4, 2)), keras.layers.LSTM(
        units, unit_forget_bias=forget_bias, bias_initializer=keras.initializers.RandomNormal(
            5.0, 0.1))])
    bias = next(v for v in model.weights if v.name == "bias")
    bias.assign(np.full(4 * units, -3.0, dtype="float32"))
    recurrent = next(v for v in model.weights if v.name == "recurrent_kernel")
    recurrent.assign(np.zeros(recurrent.shape, dtype="float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every variable's initializer is found
        reinitialize(model, seed=0)
    # the recurrent kernel is re-drawn from recurrent_initializer (orthogonal)
    r = keras.ops.convert_to_numpy(recurrent)
    np.testing.assert_allclose(r @ r.T, np.eye(units), atol=1e-5)
    value = keras.ops.convert_to_numpy(bias)
    forget = value[units : 2 * units]
    others = np.concatenate([value[:units], value[2 * units :]])
    assert np.all(np.abs(others - 5.0) < 1.0)  # from bias_initializer
    if forget_bias:
        np.testing.assert_array_equal(forget, np.ones(units))
    else:
        assert np.all(np.abs(forget - 5.0) < 1.0)


def test_equal_seeds_reproduce_and_different_seeds_differ():
    model = _composite_model()
    reinitialize(model, seed=7)
    first = _values(model)
    reinitialize(model, seed=8)
    other = _values(model)
    reinitialize(model, seed=7)
    for a, b in zip(first, _values(model), strict=True):
        np.testing.assert_array_equal(a, b)
    kernels = [i for i, v in enumerate(model.weights) if v.name == "kernel"]
    assert all(not np.array_equal(first[i], other[i]) for i in kernels)
    # no two kernels of equal shape share draws
    query, key = (first[i] for i in kernels[:2])
    assert not np.allclose(query / np.abs(query).max(), key / np.abs(key).max())


def test_a_variable_without_initializer_is_named_in_a_warning():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3), Hidden(name="hidden")])
    with pytest.warns(RuntimeWarning, match="hidden/w"):
        assert reinitialize(model, seed=0) == 2


def test_sgd_keeps_its_learning_rate_while_momentum_and_iterations_reset():
    model = _trained(_composite_model(), keras.optimizers.SGD(0.1, momentum=0.9))
    optimizer = model.optimizer
    momentums = [v for v in optimizer.variables if v.name.endswith("momentum")]
    assert int(optimizer.iterations) > 0
    assert any(np.abs(keras.ops.convert_to_numpy(m)).max() > 0 for m in momentums)
    reinitialize(model, seed=0)
    assert float(optimizer.learning_rate) == pytest.approx(0.1)
    assert int(optimizer.iterations) == 0
    assert all(np.abs(keras.ops.convert_to_numpy(m)).max() == 0 for m in momentums)


def test_a_schedule_is_kept_and_restarts_from_step_zero():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    model = _trained(_composite_model(), keras.optimizers.SGD(schedule))
    optimizer = model.optimizer
    assert float(optimizer.learning_rate) < 0.05  # decayed over the training steps
    reinitialize(model, seed=0)
    assert optimizer._learning_rate is schedule
    assert float(optimizer.learning_rate) == pytest.approx(0.1)


def test_adam_moments_reset_and_learning_rate_kept():
    model = _trained(_composite_model(), keras.optimizers.Adam(0.02))
    optimizer = model.optimizer
    slots = [v for v in optimizer.variables if v.name.endswith(("momentum", "velocity"))]
    assert len(slots) == 2 * len(model.trainable_variables)
    reinitialize(model, seed=0)
    assert float(optimizer.learning_rate) == pytest.approx(0.02)
    assert all(np.abs(keras.ops.convert_to_numpy(s)).max() == 0 for s in slots)


def test_slots_return_to_their_initial_values_not_to_zero():
    # Adagrad's accumulators start at initial_accumulator_value: zeroing them would divide by ~0.
    model = _trained(_composite_model(), keras.optimizers.Adagrad(0.1, initial_accumulator_value=0.25))
    optimizer = model.optimizer
    accumulators = [v for v in optimizer.variables if v.name.endswith("accumulator")]
    assert any(keras.ops.convert_to_numpy(a).max() > 0.25 for a in accumulators)
    assert reset_optimizer_state(optimizer, iterations=False) == len(accumulators)
    assert int(optimizer.iterations) > 0
    for accumulator in accumulators:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(accumulator), 0.25)


def test_a_restarted_healthy_model_keeps_learning():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 5)).astype("float32")
    y = np.tanh(x @ rng.normal(size=(5, 1))).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.SGD(0.1, momentum=0.5), loss="mse")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    reinitialize(model, seed=5)
    after_restart = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, epochs=10, batch_size=32, verbose=0).history["loss"]
    assert history[-1] < 0.5 * after_restart
    assert history[-1] < history[0]


def test_a_model_with_nothing_to_redraw_is_rejected():
    model = keras.Sequential([keras.Input((2, 3)), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="no variable"):
        reinitialize(model, seed=0)


@pytest.mark.parametrize(
    ("seed", "error"), [("1", TypeError), (1.5, TypeError), (True, TypeError), (-1, ValueError)]
)
def test_bad_seeds_are_rejected(seed, error):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(error, match="seed"):
        reinitialize(model, seed=seed)


def test_reset_optimizer_state_rejects_a_non_optimizer_and_ignores_an_unbuilt_one():
    with pytest.raises(TypeError, match="optimizer"):
        reset_optimizer_state("adam")
    assert reset_optimizer_state(keras.optimizers.Adam()) == 0
