"""Tests for keras_koopman.models.paper_cnn (the paper's MNIST CNN)."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_koopman.datasets import load_mnist
from keras_koopman.models import NORMAL_STDDEV, paper_cnn

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

# HeNormal draws from a normal truncated at two standard deviations, scaled so that the variance
# is 2 / fan_in; its largest magnitude is therefore 2 * sqrt(2 / fan_in) / 0.87962566.
_TRUNCATED_STD_FACTOR = 0.87962566103423978


def _kernels(model: keras.Model) -> dict[str, np.ndarray]:
    return {
        layer.name: keras.ops.convert_to_numpy(layer.kernel)
        for layer in model.layers
        if hasattr(layer, "kernel")
    }


def _fans(kernel: np.ndarray) -> tuple[int, int]:
    receptive = int(np.prod(kernel.shape[:-2]))
    return kernel.shape[-2] * receptive, kernel.shape[-1] * receptive


def test_layers_and_parameter_count_match_the_paper():
    model = paper_cnn("xavier", compile=False)
    shapes = [tuple(w.shape) for w in model.trainable_weights]
    assert shapes == [
        (5, 5, 1, 16), (16,), (5, 5, 16, 32), (32,), (512, 100), (100,), (100, 10), (10,)
    ]
    assert model.count_params() == 65_558
    assert sum(int(np.prod(s)) for s in shapes) == 65_558
    assert model.output_shape == (None, 10)
    probabilities = model(np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probabilities).sum(axis=1), 1.0,
                               rtol=1e-5)


@pytest.mark.parametrize("initializer", ["xavier", "he", "normal"])
def test_initial_weights_follow_their_definition(initializer):
    model = paper_cnn(initializer, seed=7, compile=False)
    for name, kernel in _kernels(model).items():
        fan_in, fan_out = _fans(kernel)
        if initializer == "xavier":  # uniform on [-l, l], l = sqrt(6 / (fan_in + fan_out))
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            expected_std = limit / math.sqrt(3.0)
            assert np.abs(kernel).max() <= limit
        elif initializer == "he":  # truncated normal with variance 2 / fan_in
            expected_std = math.sqrt(2.0 / fan_in)
            assert np.abs(kernel).max() <= 2.0 * expected_std / _TRUNCATED_STD_FACTOR + 1e-7
        else:  # normal with a fixed standard deviation whatever the layer's size
            expected_std = NORMAL_STDDEV
        if initializer != "xavier":
            # A (truncated) normal, not a uniform of the same spread: about 9 % of the values lie
            # beyond sqrt(3) standard deviations, where a uniform has none.
            assert np.abs(kernel).max() > math.sqrt(3.0) * expected_std, name
        # Relative standard error of a sample std is about 1 / sqrt(2 n): 3.5% for conv1's
        # 400 values, under 1% for the others; allow four of them.
        tolerance = 4.0 / math.sqrt(2.0 * kernel.size)
        assert kernel.std() == pytest.approx(expected_std, rel=tolerance), name
        assert abs(kernel.mean()) < 4.0 * expected_std / math.sqrt(kernel.size), name
    for bias in (w for w in model.trainable_weights if len(w.shape) == 1):
        assert not np.any(keras.ops.convert_to_numpy(bias))


def test_initialisers_are_distinguishable_on_the_dense_layer():
    # fan_in 512, fan_out 100: Glorot 0.0572, He 0.0625, normal 0.05 (separated by > 8%).
    stds = {
        init: _kernels(paper_cnn(init, seed=1, compile=False))["dense1"].std()
        for init in ("xavier", "he", "normal")
    }
    assert stds["normal"] < stds["xavier"] < stds["he"]


def test_seed_reproduces_weights_and_no_layers_share_draws():
    a = _kernels(paper_cnn("he", seed=3, compile=False))
    b = _kernels(paper_cnn("he", seed=3, compile=False))
    c = _kernels(paper_cnn("he", seed=4, compile=False))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    # Keras initialisers with equal seeds give proportional leading draws whatever the shape:
    # no two kernels, within a model or across the two seeds, may correlate.
    heads = [k.ravel()[:100] for k in (*a.values(), *c.values())]
    corr = np.corrcoef(np.stack(heads))
    off_diagonal = corr[~np.eye(len(heads), dtype=bool)]
    assert np.abs(off_diagonal).max() < 0.5


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"initializer": "glorot"}, "initializer"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"seed": -1}, "seed"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        paper_cnn(**kwargs)


def test_compiled_with_the_stated_optimiser_loss_and_metric():
    model = paper_cnn("normal", learning_rate=5e-4)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(5e-4)
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    sgd = paper_cnn("normal", optimizer="sgd")
    assert type(sgd.optimizer) is keras.optimizers.SGD
    assert not paper_cnn(compile=False).compiled


def test_save_and_load_round_trip(tmp_path):
    model = paper_cnn("he", seed=0)
    rng = np.random.default_rng(1)
    x = rng.random((4, 28, 28, 1), dtype=np.float32)
    model.fit(x, rng.integers(0, 10, size=4), epochs=1, verbose=0)  # builds the optimiser state
    path = tmp_path / "cnn.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
    assert isinstance(restored.loss, keras.losses.SparseCategoricalCrossentropy)


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST raw files not found in {MNIST_DIR}")
@pytest.mark.parametrize("initializer", ["xavier", "he", "normal"])
def test_a_few_steps_on_256_mnist_images_reduce_the_loss(initializer):
    x, y = load_mnist("train", as_numpy=True, manual_dir=MNIST_DIR, subset=256)
    model = paper_cnn(initializer, seed=0)
    before = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    after = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert np.isfinite(after)
    assert after < 0.8 * before


def test_export_serves_the_same_probabilities(tmp_path):
    import tensorflow as tf

    model = paper_cnn("xavier", seed=2)
    x = np.random.default_rng(3).random((2, 28, 28, 1), dtype=np.float32)
    model.export(tmp_path / "saved", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))  # keep a reference: it owns the weights
    served = loaded.serve(x)
    np.testing.assert_allclose(served.numpy(), model.predict(x, verbose=0), rtol=1e-5)
