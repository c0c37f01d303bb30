"""Sobolev losses against an independent numpy implementation of Eq. (5)-(7)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_koopman.losses import (
    SobolevLoss1,
    SobolevLoss2,
    SobolevNormLoss,
    resolve_scale,
    shell_weights,
)

# --- oracle: explicit DFT matrices, signed integer lattice, no FFT ------------------------


def signed(n: int) -> np.ndarray:
    """Integer frequencies of an n-point DFT, in (-n/2, n/2] up to the sign of the Nyquist one."""
    k = np.arange(n)
    return np.where(k <= n // 2, k, k - n)


def dft_coefficients(d: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """f̂(k) = (1/N) Σ_j d(x_j) e^{-2πi k·j/N} over the grid axes of (batch, *grid, M)."""
    grid = d.shape[1:-1]
    coeffs = d.astype(np.complex128)
    for axis, n in enumerate(grid, start=1):
        j = np.arange(n)
        matrix = np.exp(-2j * np.pi * np.outer(signed(n), j) / n) / n
        coeffs = np.moveaxis(np.tensordot(matrix, np.moveaxis(coeffs, axis, 0), axes=1), 0, axis)
    return coeffs, [signed(n) for n in grid]


def oracle(y_true, y_pred, shells, index):
    """Σ_m Σ_{shell} Σ_{‖k‖₁ = shell} (1 + (2π‖k‖₂)²)^index |ĥ − f̂|²; shells=None: all k."""
    coeffs, freqs = dft_coefficients(np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64))
    mesh = np.meshgrid(*freqs, indexing="ij")
    l1 = sum(np.abs(k) for k in mesh)
    l2 = np.sqrt(sum(k.astype(float) ** 2 for k in mesh))
    weight = (1.0 + (2 * np.pi * l2) ** 2) ** index
    energy = (np.abs(coeffs) ** 2).sum(axis=-1)  # (batch, *grid)
    grid_axes = tuple(range(1, energy.ndim))
    if shells is None:
        return (energy * weight).sum(axis=grid_axes)
    return sum((energy * weight * (l1 == s)).sum(axis=grid_axes) for s in shells)


def scale_fn(name):
    return {"linear": lambda l: l, "exponential": lambda l: 2**l}[name]


def random_pair(rng, shape):
    return rng.normal(size=shape), rng.normal(size=shape) + 0.3


ONE_D = [(1, 16, 1), (4, 17, 3), (2, 64, 2), (3, 33, 1)]
TWO_D = [(2, 8, 12, 1), (1, 9, 16, 2), (3, 16, 7, 1)]


@pytest.mark.parametrize("shape", ONE_D + TWO_D)
@pytest.mark.parametrize("scale", ["linear", "exponential"])
def test_loss1_matches_oracle_every_resolved_layer(shape, scale):
    rng = np.random.default_rng(sum(shape))
    y, p = random_pair(rng, shape)
    nyquist = min(shape[1:-1]) // 2
    layers = [l for l in range(8) if scale_fn(scale)(l) <= nyquist]
    for layer in layers:
        loss = SobolevLoss1(layer=layer, scale=scale, reduction=None, dtype="float64")
        got = loss(y, p).numpy()
        want = oracle(y, p, [scale_fn(scale)(layer)], -0.5)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("shape", ONE_D + TWO_D)
@pytest.mark.parametrize("scale", ["linear", "exponential"])
@pytest.mark.parametrize("index", [-0.5, -1.0])
def test_loss2_matches_oracle(shape, scale, index):
    rng = np.random.default_rng(7 + sum(shape))
    y, p = random_pair(rng, shape)
    nyquist = min(shape[1:-1]) // 2
    num_layers = max(l for l in range(1, 9) if scale_fn(scale)(l - 1) <= nyquist)
    loss = SobolevLoss2(num_layers=num_layers, scale=scale, index=index, reduction=None, dtype="float64")
    want = oracle(y, p, [scale_fn(scale)(l) for l in range(num_layers)], index)
    np.testing.assert_allclose(loss(y, p).numpy(), want, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("shape", ONE_D + TWO_D)
@pytest.mark.parametrize("index", [-0.5, -1.5, 0.0])
def test_norm_loss_matches_oracle(shape, index):
    rng = np.random.default_rng(11 + sum(shape))
    y, p = random_pair(rng, shape)
    loss = SobolevNormLoss(index=index, reduction=None, dtype="float64")
    np.testing.assert_allclose(loss(y, p).numpy(), oracle(y, p, None, index), rtol=1e-6)


def test_norm_loss_index_zero_is_mean_square_parseval():
    rng = np.random.default_rng(3)
    y, p = random_pair(rng, (3, 10, 6, 2))
    got = SobolevNormLoss(index=0.0, reduction=None, dtype="float64")(y, p).numpy()
    np.testing.assert_allclose(got, ((p - y) ** 2).mean(axis=(1, 2)).sum(-1), rtol=1e-10)


def test_conjugate_pairs_and_nyquist_counted_once():
    n = 8
    j = np.arange(n)
    # cos(2π·1·x): |f̂(±1)| = 1/2, shell 1 energy 2·(1/4) = 1/2 before weighting.
    signal = np.cos(2 * np.pi * j / n)[None, :, None]
    zero = np.zeros_like(signal)
    got = SobolevLoss1(layer=1, index=0.0, reduction=None, dtype="float64")(zero, signal).numpy()
    np.testing.assert_allclose(got, [0.5], rtol=1e-12)
    # (-1)^j at Nyquist: one DFT coefficient f̂(4) = 1, shell 4 energy 1 (not 2).
    alternating = ((-1.0) ** j)[None, :, None]
    got = SobolevLoss1(layer=4, index=0.0, reduction=None, dtype="float64")(zero, alternating).numpy()
    np.testing.assert_allclose(got, [1.0], rtol=1e-12)


def test_default_reduction_and_sample_weight():
    rng = np.random.default_rng(5)
    y, p = random_pair(rng, (4, 32, 2))
    per_sample = oracle(y, p, [3], -0.5)
    loss = SobolevLoss1(layer=3, dtype="float64")
    np.testing.assert_allclose(loss(y, p).numpy(), per_sample.mean(), rtol=1e-6)
    w = np.array([1.0, 0.0, 2.0, 0.5])
    np.testing.assert_allclose(loss(y, p, sample_weight=w).numpy(), (w * per_sample).mean(), rtol=1e-6)


def test_float32_close_to_oracle():
    rng = np.random.default_rng(8)
    y, p = random_pair(rng, (2, 4096, 1))
    got = SobolevLoss2(num_layers=9, reduction=None)(y.astype("float32"), p.astype("float32")).numpy()
    np.testing.assert_allclose(got, oracle(y, p, range(9), -0.5), rtol=1e-4)


def test_head_terms_one_shell_per_head():
    rng = np.random.default_rng(9)
    y = rng.normal(size=(3, 40, 2))
    heads = rng.normal(size=(3, 5, 40, 2))
    for scale in ("linear", "exponential"):
        loss = SobolevLoss1(scale=scale, dtype="float64")
        got = loss.head_terms(y, heads).numpy()
        want = np.stack([oracle(y, heads[:, l], [scale_fn(scale)(l)], -0.5) for l in range(5)], axis=1)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-14)


def test_output_terms():
    rng = np.random.default_rng(10)
    y, p = random_pair(rng, (2, 24, 1))
    mse = SobolevLoss1(output_loss="mse", dtype="float64").output_term(y, p, 6).numpy()
    np.testing.assert_allclose(mse, ((p - y) ** 2).mean(axis=(1, 2)), rtol=1e-12)
    s2 = SobolevLoss1(output_loss="sobolev2", dtype="float64").output_term(y, p, 6).numpy()
    np.testing.assert_allclose(s2, oracle(y, p, range(6), -0.5), rtol=1e-6)
    assert SobolevLoss1(output_loss=None).output_term(y, p, 6) is None


@pytest.mark.parametrize(
    "loss",
    [SobolevLoss1(layer=2, dtype="float64"), SobolevLoss2(num_layers=4, dtype="float64"),
     SobolevNormLoss(dtype="float64")],
    ids=["loss1", "loss2", "norm"],
)
@pytest.mark.parametrize("shape", [(2, 16, 1), (1, 8, 10, 2)])
def test_gradients_finite_and_match_finite_differences(loss, shape):
    rng = np.random.default_rng(12)
    y, p = random_pair(rng, shape)
    var = tf.Variable(p)
    with tf.GradientTape() as tape:
        value = loss(y, var)
    grad = tape.gradient(value, var).numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    step = 1e-6
    flat = [np.unravel_index(i, shape) for i in rng.choice(np.prod(shape), 5, replace=False)]
    for idx in flat:
        up, down = p.copy(), p.copy()
        up[idx] += step
        down[idx] -= step
        numeric = (loss(y, up).numpy() - loss(y, down).numpy()) / (2 * step)
        np.testing.assert_allclose(grad[idx], numeric, rtol=1e-5, atol=1e-9)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="y_true and y_pred"):
        SobolevLoss1()(np.zeros((2, 16, 1)), np.zeros((2, 15, 1)))
    with pytest.raises(ValueError, match="y_true and y_pred"):
        SobolevLoss2()(np.zeros((2, 16, 2)), np.zeros((2, 16, 3)))
    with pytest.raises(ValueError, match=r"\(batch, N, M\)"):
        SobolevNormLoss()(np.zeros((2, 4, 4, 4, 1)), np.zeros((2, 4, 4, 4, 1)))
    with pytest.raises(ValueError, match="heads"):
        SobolevLoss1().head_terms(np.zeros((2, 16, 1)), np.zeros((2, 16, 1)))


def test_grid_too_coarse_names_layer_and_n():
    with pytest.raises(ValueError, match=r"layer 5 .*shell ‖k‖₁ = 5.*N = 8"):
        SobolevLoss1(layer=5)(np.zeros((1, 8, 1)), np.zeros((1, 8, 1)))
    with pytest.raises(ValueError, match=r"layer 3 .*shell ‖k‖₁ = 8.*N = \(32, 12\)"):
        SobolevLoss2(num_layers=4, scale="exponential")(np.zeros((1, 32, 12, 1)), np.zeros((1, 32, 12, 1)))
    with pytest.raises(ValueError, match=r"layer 8 .*N = 15"):
        SobolevLoss1().head_terms(np.zeros((1, 15, 1)), np.zeros((1, 9, 15, 1)))


def test_argument_validation():
    with pytest.raises(ValueError, match="scale"):
        SobolevLoss1(scale="cubic")
    with pytest.raises(TypeError, match="scale"):
        SobolevLoss1(scale=3)
    with pytest.raises(ValueError, match="index"):
        SobolevLoss2(index=float("nan"))
    with pytest.raises(ValueError, match="output_loss"):
        SobolevLoss1(output_loss="l1")
    with pytest.raises(ValueError, match="layer"):
        SobolevLoss1(layer=-1)
    with pytest.raises(ValueError, match="num_layers"):
        SobolevLoss2(num_layers=0)
    with pytest.raises(ValueError, match=r"scale\(2\)"):
        resolve_scale(lambda l: l / 4)(2)
    with pytest.raises(ValueError, match="statically"):
        shell_weights([None], [0])


@pytest.mark.parametrize("index", [300, -300, 12.5])
@pytest.mark.parametrize("loss_class", [SobolevLoss1, SobolevLoss2, SobolevNormLoss])
def test_an_index_beyond_any_grid_is_rejected_at_construction(loss_class, index):
    with pytest.raises(ValueError, match=f"index={index}"):
        loss_class(index=index)


def test_an_index_beyond_what_the_grid_supports_is_rejected_at_call():
    # Index 5 is fine on 16 points (largest weight (1 + (16π)²)^5 ≈ 1e17) but overflows the
    # head-room of float32 on 4096 points ((1 + (4096π)²)^5 ≈ 1e41).
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=(2, 1, 16, 1)), rng.normal(size=(2, 1, 4096, 1))
    loss = SobolevNormLoss(index=5)
    assert np.isfinite(float(loss(small[0], small[1])))
    with pytest.raises(ValueError, match=r"index=5.*N = 4096.*at most 2\.\d+"):
        loss(large[0], large[1])
    # a shell whose weight vanishes in float32 on this grid
    with pytest.raises(ValueError, match=r"index=-23.*vanish"):
        SobolevLoss1(layer=8, index=-23)(np.zeros((1, 4096, 1)), np.zeros((1, 4096, 1)))
    assert np.isfinite(float(SobolevLoss1(layer=8, index=-23, dtype="float64")(
        np.zeros((1, 4096, 1)), np.ones((1, 4096, 1)))))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_inputs_are_transformed_in_float32(dtype):
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=(2, 3, 32, 1)).astype("float32")
    heads = rng.normal(size=(3, 4, 32, 1)).astype("float32")
    for loss in (SobolevLoss1(layer=2), SobolevLoss2(num_layers=4), SobolevNormLoss()):
        want = loss(y, p).numpy()
        got = loss(keras.ops.cast(y, dtype), keras.ops.cast(p, dtype)).numpy()
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=2e-2)
    loss = SobolevLoss1()
    half = loss.head_terms(keras.ops.cast(y, dtype), keras.ops.cast(heads, dtype))
    assert half.dtype == tf.float32
    np.testing.assert_allclose(half.numpy(), loss.head_terms(y, heads).numpy(), rtol=2e-2)


@keras.saving.register_keras_serializable(package="keras_koopman_tests")
def triple(layer):
    return 3 * layer


@pytest.mark.parametrize(
    "loss",
    [
        SobolevLoss1(layer=3, scale="exponential", index=-1.0, output_loss="mse", reduction="sum"),
        SobolevLoss1(scale=triple, output_loss="sobolev2", dtype="float64"),
        SobolevLoss2(num_layers=5, scale="linear", index=-0.25),
        SobolevNormLoss(index=-2.0, name="h_minus_2"),
    ],
    ids=["loss1", "loss1-callable", "loss2", "norm"],
)
def test_serialization_round_trip(loss):
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    rng = np.random.default_rng(4)
    y, p = random_pair(rng, (2, 64, 1))
    np.testing.assert_allclose(restored(y, p).numpy(), loss(y, p).numpy(), rtol=1e-12)


def test_callable_scale_used():
    rng = np.random.default_rng(6)
    y, p = random_pair(rng, (2, 40, 1))
    got = SobolevLoss1(layer=4, scale=triple, reduction=None, dtype="float64")(y, p).numpy()
    np.testing.assert_allclose(got, oracle(y, p, [12], -0.5), rtol=1e-6)
