"""SobolevHeadsModel: heads, per-head shells in training, logs, save/load and export."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_koopman import SobolevHeadsModel, SobolevLoss1, SobolevLoss2
from keras_koopman.sobolev_model import LinearHeads


def grid_data(batch=2, n=32, d=1, m=1, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / n
    x = np.broadcast_to((2 * t - 1)[None, :, None], (batch, n, 1)).astype("float32")
    if d > 1:
        x = np.concatenate([x, rng.normal(size=(batch, n, d - 1)).astype("float32")], axis=-1)
    y = (np.sin(2 * np.pi * 3 * t)[None, :, None] + 0.1 * rng.normal(size=(batch, n, m))).astype("float32")
    return x, y


def shell_oracle(y_true, f, shell, index=-0.5):
    """Σ_m Σ_{|k| = shell} |ĥ − f̂|² (1 + (2πk)²)^index with f̂ = (1/N)·DFT (1-D grids)."""
    d = np.asarray(f, np.float64) - np.asarray(y_true, np.float64)
    n = d.shape[1]
    k = np.arange(n)
    k = np.where(k <= n // 2, k, k - n)
    coeffs = np.einsum("kj,bjm->bkm", np.exp(-2j * np.pi * np.outer(k, np.arange(n)) / n) / n, d)
    weight = (1 + (2 * np.pi * k) ** 2) ** index * (np.abs(k) == shell)
    return (np.abs(coeffs) ** 2 * weight[None, :, None]).sum(axis=(1, 2))


def hidden_activations(model, x):
    z, out = x, []
    for layer in model.hidden:
        z = layer(z)
        out.append(keras.ops.convert_to_numpy(z))
    return out


def test_paper_architecture_and_shapes():
    model = SobolevHeadsModel()
    x, _ = grid_data(batch=3, n=16)
    assert model.predict(x, verbose=0).shape == (3, 16, 1)
    assert model.predict_heads(x).shape == (3, 9, 16, 1)
    assert len(model.hidden) == 9 and all(layer.units == 20 for layer in model.hidden)
    assert model.heads.kernel.shape == (9, 20, 1)


def test_heads_are_linear_maps_of_hidden_layers_with_mixed_widths():
    layers = [keras.layers.Dense(7, activation="relu"), keras.layers.Dense(4, activation="tanh"),
              keras.layers.Dense(5)]
    model = SobolevHeadsModel(output_dim=2, hidden_layers=layers, reconstruction="sum_of_heads")
    x, _ = grid_data(batch=2, n=12, d=3)
    model(x)
    heads = model.predict_heads(x)
    kernel = keras.ops.convert_to_numpy(model.heads.kernel)
    bias = keras.ops.convert_to_numpy(model.heads.bias)
    for i, z in enumerate(hidden_activations(model, x)):
        np.testing.assert_allclose(heads[:, i], z @ kernel[i, : z.shape[-1]] + bias[i], rtol=1e-5, atol=1e-6)
        # padded kernel rows start at zero
        assert np.all(kernel[i, z.shape[-1]:] == 0)
    np.testing.assert_allclose(model.predict(x, verbose=0), heads.sum(axis=1), rtol=1e-5, atol=1e-6)


def test_head_initialisation_matches_glorot_limits():
    keras.utils.set_random_seed(1)
    heads = LinearHeads(3, 1)
    heads.build([(None, 8, 400), (None, 8, 10), (None, 8, 40)])
    kernel = keras.ops.convert_to_numpy(heads.kernel)
    for i, width in enumerate((400, 10, 40)):
        limit = np.sqrt(6 / (width + 1))
        assert np.abs(kernel[i, :width]).max() <= limit
        assert np.abs(kernel[i, :width]).max() > 0.8 * limit


def test_output_reconstruction_is_separate_layer():
    model = SobolevHeadsModel(depth=3, units=6, reconstruction="output")
    x, _ = grid_data(n=10)
    model(x)
    z = hidden_activations(model, x)[-1]
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in model.output_layer.weights)
    np.testing.assert_allclose(model.predict(x, verbose=0), z @ kernel + bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("output_loss", [None, "mse", "sobolev2"])
@pytest.mark.parametrize("reconstruction", ["output", "sum_of_heads"])
def test_compiled_loss1_gives_each_head_its_own_shell(output_loss, reconstruction):
    keras.utils.set_random_seed(0)
    model = SobolevHeadsModel(depth=4, units=8, reconstruction=reconstruction)
    model.compile(keras.optimizers.Adam(1e-3), loss=SobolevLoss1(output_loss=output_loss))
    x, y = grid_data(batch=3, n=32)
    logs = model.evaluate(x, y, batch_size=3, return_dict=True, verbose=0)
    heads = model.predict_heads(x)
    recon = model.predict(x, verbose=0)
    per_head = [shell_oracle(y, heads[:, i], i).mean() for i in range(4)]
    for i, value in enumerate(per_head):
        np.testing.assert_allclose(logs[f"head_{i}_loss"], value, rtol=2e-4, atol=1e-9)
    total = sum(per_head)
    if output_loss == "mse":
        out = ((recon - y) ** 2).mean()
    elif output_loss == "sobolev2":
        out = sum(shell_oracle(y, recon, s) for s in range(4)).mean()
    else:
        out = 0.0
        assert "output_loss" not in logs
    if output_loss is not None:
        np.testing.assert_allclose(logs["output_loss"], out, rtol=2e-4)
    np.testing.assert_allclose(logs["loss"], total + out, rtol=2e-4)
    assert model.method == ("sobolev1+2" if output_loss == "sobolev2" else "sobolev1")


def test_sample_weights_weight_the_head_terms():
    model = SobolevHeadsModel(depth=2, units=5)
    model.compile("adam", loss=SobolevLoss1(output_loss=None))
    x, y = grid_data(batch=2, n=16)
    w = np.array([1.0, 3.0], dtype="float32")
    logs = model.evaluate(x, y, sample_weight=w, batch_size=2, return_dict=True, verbose=0)
    heads = model.predict_heads(x)
    terms = [shell_oracle(y, heads[:, i], i) for i in range(2)]
    np.testing.assert_allclose(logs["loss"], sum((w * t).sum() / 2 for t in terms), rtol=2e-4)
    np.testing.assert_allclose(logs["head_1_loss"], (w * terms[1]).sum() / w.sum(), rtol=2e-4)


@pytest.mark.parametrize(
    ("method", "expected"),
    [("l2", keras.losses.MeanSquaredError), ("sobolev1", SobolevLoss1),
     ("sobolev2", SobolevLoss2), ("sobolev1+2", SobolevLoss1)],
)
def test_method_loss_and_method(method, expected):
    model = SobolevHeadsModel(depth=3, units=4)
    loss = model.method_loss(method)
    assert isinstance(loss, expected)
    model.compile("adam", loss=loss)
    assert model.method == method
    if method == "sobolev2":
        assert loss.num_layers == 3
    with pytest.raises(ValueError, match="method"):
        model.method_loss("sobolev3")


@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # L2 on "output" leaves heads untrained
def test_training_logs_and_loss1_decreases_head_terms():
    keras.utils.set_random_seed(0)
    model = SobolevHeadsModel(depth=3, units=10)
    model.compile(keras.optimizers.Adam(1e-2), loss=SobolevLoss1(output_loss="mse"))
    x, _ = grid_data(batch=1, n=32)
    y = (0.5 + np.sin(np.pi * (x + 1)) + 0.2 * np.cos(2 * np.pi * (x + 1))).astype("float32")
    before = model.evaluate(x, y, return_dict=True, verbose=0)
    history = model.fit(np.repeat(x, 150, 0), np.repeat(y, 150, 0), batch_size=1, verbose=0).history
    after = model.evaluate(x, y, return_dict=True, verbose=0)
    assert {"loss", "output_loss", "head_0_loss", "head_1_loss", "head_2_loss"} <= set(history)
    for i in range(3):
        assert after[f"head_{i}_loss"] < 0.2 * before[f"head_{i}_loss"]
    l2 = SobolevHeadsModel(depth=3, units=10)
    l2.compile("adam", loss="mse")
    logs = l2.fit(x, y, epochs=1, verbose=0).history
    assert not any(key.startswith("head_") or key == "output_loss" for key in logs)


def test_grid_too_coarse_for_heads_raises_naming_layer():
    model = SobolevHeadsModel(depth=9, units=4)
    model.compile("adam", loss=SobolevLoss1())
    x, y = grid_data(n=12)
    with pytest.raises(ValueError, match=r"layer 7 .*N = 12"):
        model.fit(x, y, epochs=1, verbose=0)


def test_two_dimensional_grid():
    keras.utils.set_random_seed(2)
    model = SobolevHeadsModel(depth=3, units=6)
    model.compile("adam", loss=SobolevLoss1())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 10, 2)).astype("float32")
    y = rng.normal(size=(2, 8, 10, 1)).astype("float32")
    logs = model.evaluate(x, y, return_dict=True, verbose=0)
    heads = model.predict_heads(x)
    for i in range(3):
        expected = SobolevLoss1(layer=i, reduction=None, dtype="float64")(y, heads[:, i]).numpy().mean()
        np.testing.assert_allclose(logs[f"head_{i}_loss"], expected, rtol=2e-4)


def test_argument_validation():
    with pytest.raises(ValueError, match="reconstruction"):
        SobolevHeadsModel(reconstruction="mean_of_heads")
    with pytest.raises(ValueError, match="depth"):
        SobolevHeadsModel(depth=0)
    with pytest.raises(TypeError, match="activation"):
        SobolevHeadsModel(activation=np.tanh)
    with pytest.raises(TypeError, match="hidden_layers"):
        SobolevHeadsModel(hidden_layers=["dense"])
    with pytest.raises(ValueError, match="batch_size"):
        SobolevHeadsModel(depth=1).predict_heads(np.zeros((1, 4, 1)), batch_size=0)


@pytest.mark.parametrize(
    "kwargs",
    [dict(depth=4, units=6, reconstruction="output"),
     dict(output_dim=2, hidden_layers=[keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)],
          reconstruction="sum_of_heads")],
    ids=["built", "wrapped"],
)
def test_save_load_round_trip(tmp_path, kwargs):
    keras.utils.set_random_seed(3)
    model = SobolevHeadsModel(**kwargs)
    model.compile(keras.optimizers.Adam(1e-3), loss=SobolevLoss1(scale="linear", output_loss="mse"))
    x, y = grid_data(batch=2, n=16, m=model.output_dim)
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is SobolevHeadsModel
    assert json.dumps(restored.get_config()) == json.dumps(model.get_config())
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(restored.predict_heads(x), model.predict_heads(x))
    assert isinstance(restored.loss, SobolevLoss1)
    assert restored.loss.get_config() == model.loss.get_config()
    history = restored.fit(x, y, epochs=1, verbose=0).history
    assert "head_0_loss" in history and np.isfinite(history["loss"][0])


def test_export_serves_reconstruction(tmp_path):
    keras.utils.set_random_seed(4)
    model = SobolevHeadsModel(depth=3, units=5, reconstruction="sum_of_heads")
    x, _ = grid_data(batch=2, n=24)
    model(x)
    model.export(str(tmp_path / "export"), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    served = loaded.serve(tf.constant(x))
    np.testing.assert_allclose(served.numpy(), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # with a signature of unknown grid size, one export serves every grid
    signature = [tf.TensorSpec((None, None, 1), tf.float32)]
    model.export(str(tmp_path / "any_grid"), format="tf_saved_model", verbose=False,
                 input_signature=signature)
    loaded = tf.saved_model.load(str(tmp_path / "any_grid"))
    for n in (24, 40):
        other, _ = grid_data(batch=1, n=n)
        served = loaded.serve(tf.constant(other))
        np.testing.assert_allclose(served.numpy(), model.predict(other, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.fixture
def dtype_policy(request):
    """Set the global dtype policy for one test and restore the previous one afterwards."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


@pytest.mark.parametrize(
    "dtype_policy", ["mixed_float16", "mixed_bfloat16", "bfloat16"], indirect=True
)
@pytest.mark.parametrize("output_loss", ["mse", "sobolev2"])
def test_sobolev1_trains_under_reduced_precision_policies(dtype_policy, output_loss):
    from keras_koopman import reinitialize

    x, _ = grid_data(batch=4, n=32)
    y = np.sin(np.pi * x)  # one periodic harmonic: shell 1
    model = SobolevHeadsModel(depth=3, units=8)
    model.build(x.shape)
    reinitialize(model, seed=0)  # the same initial weights on every run
    # Adam cannot move bfloat16 variables: its β₂ = 0.999 rounds to 1 in bfloat16, so its step
    # size sqrt(1 − β₂ᵗ) is 0; plain SGD trains them.
    optimizer = (
        keras.optimizers.SGD(0.05) if dtype_policy == "bfloat16" else keras.optimizers.Adam(1e-2)
    )
    model.compile(optimizer, loss=SobolevLoss1(output_loss=output_loss))
    history = model.fit(x, y, epochs=15, verbose=0).history
    assert model.heads.compute_dtype == keras.mixed_precision.dtype_policy().compute_dtype
    assert all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert np.isfinite(history["head_2_loss"][-1]) and np.isfinite(history["output_loss"][-1])
    assert model.predict_heads(x).shape == (4, 3, 32, 1)


def test_predict_heads_on_zero_samples_gives_an_empty_array_of_the_right_shape():
    model = SobolevHeadsModel(output_dim=2, depth=4, units=8)
    empty = model.predict_heads(np.zeros((0, 16, 1), "float32"))
    assert empty.shape == (0, 4, 16, 2) and empty.dtype == np.float32
    grid_2d = model.predict_heads(np.zeros((0, 8, 6, 1), "float32"))
    assert grid_2d.shape == (0, 4, 8, 6, 2)
    with pytest.raises(ValueError, match="x must have shape"):
        model.predict_heads(np.zeros((0,), "float32"))
    with pytest.raises(ValueError, match="batch_size"):
        model.predict_heads(np.zeros((1, 16, 1), "float32"), batch_size=True)


def test_reinitialize_redraws_the_heads_for_their_own_fan_in():
    import warnings

    from keras_koopman import reinitialize

    layers = [keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(50, activation="tanh")]
    model = SobolevHeadsModel(hidden_layers=layers)
    model.build((None, 16, 1))
    before = keras.ops.convert_to_numpy(model.heads.kernel).copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every variable has an initializer
        assert reinitialize(model, seed=0) == len(model.weights)
    kernel = keras.ops.convert_to_numpy(model.heads.kernel)
    assert not np.array_equal(kernel, before)
    np.testing.assert_array_equal(kernel[0, 4:], 0.0)  # the narrow head's padding rows
    assert np.abs(kernel[0, :4]).max() > np.sqrt(6.0 / 51)  # limit of the wide head's fan-in
    assert np.abs(kernel[0, :4]).max() <= np.sqrt(6.0 / 5)
    assert np.abs(kernel[1]).max() <= np.sqrt(6.0 / 51)
