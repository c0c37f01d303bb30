"""The paper's MNIST network (Section 5.1, Figure 2).

Mohr et al. train "a CNN with two convolutional layers of 16 and 32 5x5 kernels, each followed by
2x2 max-pooling, a dense layer of 100 units and a softmax layer of 10", with Xavier, He and
random-normal initialisations and learning rate 1e-3, and analyse the cross-entropy and the weights
with Koopman mode decomposition. :func:`paper_cnn` builds that network with Keras built-in layers
only, so it saves and loads with no ``custom_objects``.

Choices the paper leaves open (see ``docs/data_and_models.md``):

* ``"valid"`` padding and ReLU activations: with them the network has 65,558 trainable weights
  (416 + 12,832 + 51,300 + 1,010), the size the paper works with.
* ``"xavier"`` is :class:`keras.initializers.GlorotUniform`, the "normalized initialization" of
  Glorot and Bengio (2010) and the Keras default; ``"he"`` is :class:`keras.initializers.HeNormal`,
  the Gaussian of He et al. (2015); ``"normal"`` is :class:`keras.initializers.RandomNormal` with
  Keras's default standard deviation 0.05 for every layer. Biases start at zero.
* Adam with learning rate 1e-3: the paper gives only the learning rate, and 1e-3 is Adam's default
  in Keras and TensorFlow (plain SGD's default is 1e-2).
"""

from __future__ import annotations

from typing import Literal

import keras
import numpy as np

__all__ = ["INITIALIZERS", "NORMAL_STDDEV", "OPTIMIZERS", "paper_cnn"]

#: Initialiser names accepted by :func:`paper_cnn`.
INITIALIZERS: tuple[str, ...] = ("xavier", "he", "normal")
#: Optimiser names accepted by :func:`paper_cnn`.
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
#: Standard deviation of the ``"normal"`` initialiser (Keras's ``RandomNormal`` default).
NORMAL_STDDEV: float = 0.05

Initializer = Literal["xavier", "he", "normal"]


def paper_cnn(
    initializer: Initializer = "xavier",
    *,
    seed: int | None = None,
    learning_rate: float = 1e-3,
    optimizer: Literal["adam", "sgd"] = "adam",
    compile: bool = True,
) -> keras.Sequential:
    """Build the paper's MNIST CNN.

    Conv2D(16, 5x5) -> MaxPool(2x2) -> Conv2D(32, 5x5) -> MaxPool(2x2) -> Flatten -> Dense(100)
    -> Dense(10, softmax), on ``(28, 28, 1)`` inputs in ``[0, 1]``; ReLU on the hidden layers,
    ``"valid"`` padding; 65,558 trainable weights. Layers are named ``conv1``, ``pool1``,
    ``conv2``, ``pool2``, ``flatten``, ``dense1`` and ``dense2``.

    Parameters
    ----------
    initializer : {"xavier", "he", "normal"}
        Kernel initialisation of every layer: Glorot uniform, He normal, or a normal distribution
        with standard deviation :data:`NORMAL_STDDEV`. Biases are zero.
    seed : int, optional
        Makes the initial weights reproducible. Each layer's initialiser gets its own seed, derived
        from ``seed`` by :class:`numpy.random.SeedSequence`, so that no two layers (of this or of a
        model with another seed) share random draws. ``None`` draws fresh weights each call.
    learning_rate : float
        Optimiser step size (the paper's 1e-3).
    optimizer : {"adam", "sgd"}
        Adam (default, see the module notes) or plain SGD.
    compile : bool
        Compile with sparse categorical cross-entropy (the paper's loss observable) and accuracy.

    Returns
    -------
    keras.Sequential
        The built (and, by default, compiled) model, named ``paper_cnn_<initializer>``.

    Raises
    ------
    ValueError
        An unknown ``initializer`` or ``optimizer``, or a bad ``seed`` or ``learning_rate``.
    """
    if initializer not in INITIALIZERS:
        raise ValueError(f"initializer: expected one of {INITIALIZERS}, got {initializer!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed: expected a non-negative integer or None, got {seed!r}")
    if isinstance(learning_rate, bool) or not (
        isinstance(learning_rate, (int, float)) and 0 < learning_rate < float("inf")
    ):
        raise ValueError(f"learning_rate: expected a positive finite number, got {learning_rate!r}")

    # Keras initialisers with equal seeds give equal leading draws whatever the shape, so every
    # layer gets its own seed, derived so that nearby user seeds do not share streams either.
    layer_seeds = [None] * 4 if seed is None else np.random.SeedSequence(seed).generate_state(4)

    def kernel(layer_index: int) -> keras.initializers.Initializer:
        layer_seed = None if seed is None else int(layer_seeds[layer_index])
        if initializer == "xavier":
            return keras.initializers.GlorotUniform(seed=layer_seed)
        if initializer == "he":
            return keras.initializers.HeNormal(seed=layer_seed)
        return keras.initializers.RandomNormal(stddev=NORMAL_STDDEV, seed=layer_seed)

    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Conv2D(
                16, 5, activation="relu", kernel_initializer=kernel(0), name="conv1"
            ),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(
                32, 5, activation="relu", kernel_initializer=kernel(1), name="conv2"
            ),
            keras.layers.MaxPooling2D(2, name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(
                100, activation="relu", kernel_initializer=kernel(2), name="dense1"
            ),
            keras.layers.Dense(
                10, activation="softmax", kernel_initializer=kernel(3), name="dense2"
            ),
        ],
        name=f"paper_cnn_{initializer}",
    )
    if compile:
        optimizer_cls = keras.optimizers.Adam if optimizer == "adam" else keras.optimizers.SGD
        model.compile(
            optimizer=optimizer_cls(learning_rate=learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    return model
