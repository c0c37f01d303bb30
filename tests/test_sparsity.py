"""Koopman magnitude sparsification: the fixed-point estimate, masks, and their equivalence to magnitude
pruning at convergence."""

import keras
import numpy as np
import pytest

from keras_koopman import (AnalysisOptions, KoopmanMonitor, apply_masks, koopman_magnitude_masks,
                           magnitude_masks)
from training_problems import linear_model, regression_problem


def _trained(epochs, **monitor_options):
    """Full-batch gradient descent on a 5-feature regression (the monitor tests' problem)."""
    X, y, eta, _ = regression_problem(seed=2)
    model = linear_model(5, eta)
    monitor = KoopmanMonitor(observables=("weights",), analyze_at=(epochs,), **monitor_options)
    model.fit(X, y, batch_size=len(X), epochs=epochs, shuffle=False, verbose=0, callbacks=[monitor])
    Xa = np.hstack([X, np.ones((len(X), 1))]).astype(np.float64)
    solution = np.linalg.lstsq(Xa, y.astype(np.float64), rcond=None)[0].ravel()
    return model, monitor, solution


def _current(model):
    return np.concatenate([np.asarray(v.numpy()).ravel() for v in model.trainable_variables])


def _same(a, b):
    return all((x is None and y is None) or np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def early():
    """20 epochs of gradient descent: the slowest direction has shrunk only to about half."""
    return _trained(20)


def test_fixed_point_estimate_is_the_minimiser_long_before_convergence(early):
    model, monitor, solution = early
    estimate = monitor.fixed_point_estimate()
    np.testing.assert_allclose(estimate, solution, atol=1e-3)
    assert np.max(np.abs(_current(model) - solution)) > 0.5  # training is far from it


def test_koopman_masks_prune_the_converged_network_early(early):
    """KMP at epoch 20 gives the masks that magnitude sparsification of the minimiser gives; magnitude
    pruning of the current weights does not."""
    model, monitor, solution = early
    for sparsity in (0.2, 0.4, 0.6):
        kmp = koopman_magnitude_masks(model, monitor, sparsity)
        assert _same(kmp, magnitude_masks(model, sparsity, weights=solution))
    assert not _same(koopman_magnitude_masks(model, monitor, 0.4), magnitude_masks(model, 0.4))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_koopman_magnitude_pruning_equals_magnitude_pruning_at_convergence(scope):
    model, monitor, _ = _trained(400)
    for sparsity in (0.2, 0.4, 0.6, 0.8):
        assert _same(koopman_magnitude_masks(model, monitor, sparsity, scope=scope),
                     magnitude_masks(model, sparsity, scope=scope))


def test_magnitude_masks_counts_scopes_and_bias():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    for v in model.trainable_variables:
        v.assign(rng.permutation(np.arange(1, int(np.prod(v.shape)) + 1)).reshape(v.shape) * 0.1)
    masks = magnitude_masks(model, 0.4)
    assert masks[1] is None and masks[3] is None  # biases are not candidates by default
    assert sum(int((~m).sum()) for m in masks if m is not None) == int(0.4 * (30 + 15))
    # global: the pruned are the 18 smallest of all 45 kernel entries
    kernels = np.concatenate([np.abs(model.trainable_variables[i].numpy()).ravel() for i in (0, 2)])
    pruned = np.concatenate([model.trainable_variables[i].numpy()[~masks[i]] for i in (0, 2)])
    assert np.abs(pruned).max() < np.sort(kernels)[18]
    layer = magnitude_masks(model, 0.4, scope="layer")
    assert [int((~m).sum()) for m in layer if m is not None] == [12, 6]
    with_bias = magnitude_masks(model, 0.4, include_bias=True)
    assert all(m is not None for m in with_bias)
    assert all(m.all() for m in magnitude_masks(model, 0.0) if m is not None)


def test_apply_masks_zeroes_exactly_the_pruned_weights():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)])
    masks = magnitude_masks(model, 0.5)
    before = model.trainable_variables[0].numpy().copy()
    assert apply_masks(model, masks) == 15
    after = model.trainable_variables[0].numpy()
    np.testing.assert_array_equal(after[masks[0]], before[masks[0]])
    assert not after[~masks[0]].any()


@pytest.mark.parametrize("call, error, match", [
    (lambda m: magnitude_masks(m, 1.0), ValueError, "sparsity"),
    (lambda m: magnitude_masks(m, "half"), ValueError, "sparsity"),
    (lambda m: magnitude_masks(m, 0.5, scope="tensor"), ValueError, "scope"),
    (lambda m: magnitude_masks(m, 0.5, weights=np.ones(3)), ValueError, "weights must have 35"),
    (lambda m: magnitude_masks(m, 0.5, weights=np.full(35, np.nan)), ValueError, "NaN"),
    (lambda m: apply_masks(m, [None]), ValueError, "one entry per trainable variable"),
    (lambda m: apply_masks(m, [np.ones((2, 2), bool), None]), ValueError, "shape"),
])
def test_bad_arguments_name_the_parameter(call, error, match):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)])
    with pytest.raises(error, match=match):
        call(model)


def test_fixed_point_estimate_refuses_sketches_and_decays_to_zero_without_the_constant(early):
    _, monitor, _ = early
    with pytest.raises(RuntimeError, match="no fixed point"):
        monitor.fixed_point_estimate(delta=-1.0)  # no mode counts as persistent
    _, sketched, _ = _trained(8, max_dim=3)
    with pytest.raises(RuntimeError, match="max_dim=3 sketch"):
        sketched.fixed_point_estimate()
    # no bias, target 0: gradient descent decays to w* = 0, a trajectory with no mode at 1
    X, _, eta, _ = regression_problem(seed=2)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(keras.optimizers.SGD(learning_rate=eta), "mse")
    plain = KoopmanMonitor(observables=("weights",), analyze_at=(15,),
                           options=AnalysisOptions(augment_constant=False))
    model.fit(X, np.zeros((len(X), 1)), batch_size=len(X), epochs=15, shuffle=False, verbose=0,
              callbacks=[plain])
    assert np.abs(_current(model)).max() > 0.01
    assert np.abs(plain.fixed_point_estimate()).max() < 1e-4
