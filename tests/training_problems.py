"""Small training problems with known Koopman spectra, shared by the Keras-layer tests."""

from __future__ import annotations

import keras
import numpy as np


def regression_problem(n_features=5, scales=(1.5, 1.2, 0.9, 0.6, 0.4), frac=0.5, seed=0):
    """Full-batch MSE regression whose SGD epoch map is w -> (I - ηH) w + ηb exactly.

    Returns ``X, y, eta, expected``: the data, a stable learning rate and the eigenvalues
    ``1 - η·eig(H)`` and 1 of the affine epoch map on ``[w; 1]``.
    """
    rng = np.random.default_rng(seed)
    N = max(64, 2 * n_features)
    Z = rng.standard_normal((N, n_features))
    Z -= Z.mean(0)
    Z = np.linalg.qr(Z)[0] * np.sqrt(N)
    X = (Z * np.asarray(scales)).astype(np.float32)
    y = (X @ rng.standard_normal(n_features) + 0.5 + 0.1 * rng.standard_normal(N)).astype(np.float32)[:, None]
    Xa = np.hstack([X, np.ones((N, 1))]).astype(np.float64)
    H = 2.0 / N * Xa.T @ Xa  # Hessian of the mean squared error in (kernel, bias)
    h = np.linalg.eigvalsh(H)
    eta = frac / h.max()
    return X, y, eta, np.append(1.0 - eta * h, 1.0)


def linear_model(n_features, eta, seed=1, momentum=0.0):
    model = keras.Sequential([
        keras.Input((n_features,)),
        keras.layers.Dense(1, kernel_initializer=keras.initializers.RandomNormal(stddev=3.0, seed=seed),
                           bias_initializer=keras.initializers.Constant(-3.0)),
    ])
    model.compile(keras.optimizers.SGD(learning_rate=eta, momentum=momentum), "mse")
    return model


def match_error(found, expected):
    """Largest distance from a value of either set to the nearest of the other."""
    d = np.abs(np.asarray(found)[:, None] - np.asarray(expected)[None, :])
    return max(d.min(axis=0).max(), d.min(axis=1).max())


class Interrupt(keras.callbacks.Callback):
    """Raise after ``at`` completed epochs, as a killed or pre-empted job would stop."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.at:
            raise KeyboardInterrupt(f"interrupted after epoch {self.at}")


class Logs(keras.callbacks.Callback):
    """Keep each epoch's logs as the callbacks after the monitor see them."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def on_epoch_end(self, epoch, logs=None):
        self.seen[epoch + 1] = dict(logs)
