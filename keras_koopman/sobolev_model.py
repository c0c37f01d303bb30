"""MLP with an auxiliary linear head on every hidden layer, for "Sobolev loss 1" (paper Eq. (6)).

Inputs are whole signals on a uniform periodic grid, ``x`` of shape ``(batch, *grid, D)``;
the dense layers act pointwise on the last axis. Hidden layer ℓ (ℓ = 0 … L−1) has output
z_ℓ and a linear head f_ℓ = C_ℓ z_ℓ + b_ℓ with M outputs. The reconstruction, returned by
``call``/``predict``/the exported serving function, is either a separate ``Dense(M)`` output on
the last hidden layer (``reconstruction="output"``) or Σ_ℓ f_ℓ (``"sum_of_heads"``).

The training method follows the compiled loss:

* ``SobolevLoss1`` -- head ℓ gets shell s(ℓ) (Eq. (6)); the loss's ``output_loss`` adds nothing,
  the L2 loss, or Eq. (7) ("Sobolev 1+2") on the reconstruction;
* any other loss (``"mse"`` = L2, ``SobolevLoss2`` = Eq. (7), ...) -- applied to the
  reconstruction as by ``keras.Model``.

:meth:`SobolevHeadsModel.method_loss` builds the loss for a method name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_koopman.losses import (
    PAPER_INDEX,
    PerSampleReduction,
    Scale,
    SobolevLoss1,
    SobolevLoss2,
)

__all__ = ["SobolevHeadsModel", "METHODS", "RECONSTRUCTIONS", "DEFAULT_RECONSTRUCTION"]

#: Training methods of the paper's study (Figures 3-4).
METHODS = ("l2", "sobolev1", "sobolev2", "sobolev1+2")

#: Readings of the paper's ambiguity (2): what the network's reconstruction is.
RECONSTRUCTIONS = ("output", "sum_of_heads")

#: Default reconstruction, chosen by the study in docs/results.md (lower clean-signal RMSE than
#: "output" averaged over the noise levels; see docs/sobolev.md for how close the two are).
DEFAULT_RECONSTRUCTION = "sum_of_heads"


@keras.saving.register_keras_serializable(package="keras_koopman")
class HeadGlorotUniform(keras.initializers.Initializer):
    """Glorot-uniform kernels of stacked heads, each for its own fan-in.

    For a ``(L, U, M)`` kernel, head ℓ's first ``widths[ℓ]`` rows are uniform on ``[-a_ℓ, a_ℓ]``
    with ``a_ℓ = sqrt(6 / (widths[ℓ] + M))``, as a ``Dense(M)`` on a ``widths[ℓ]``-wide input;
    the padding rows are zero.

    Parameters
    ----------
    widths : sequence of int
        U_ℓ, the width of the hidden layer of each head.
    seed : int, optional
        As for ``keras.initializers.RandomUniform``.
    """

    def __init__(self, widths: Sequence[int], seed: int | None = None) -> None:
        self.widths = [int(width) for width in widths]
        self._uniform = keras.initializers.RandomUniform(-1.0, 1.0, seed=seed)
        self.seed = seed

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> tf.Tensor:
        limits = np.zeros((len(self.widths), max(self.widths), 1))
        for i, width in enumerate(self.widths):
            limits[i, :width] = np.sqrt(6.0 / (width + shape[-1]))
        return self._uniform(shape, dtype) * keras.ops.cast(limits, dtype)

    def get_config(self) -> dict[str, Any]:
        return {"widths": self.widths, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_koopman")
class LinearHeads(keras.layers.Layer):
    """The auxiliary heads f_ℓ = C_ℓ z_ℓ + b_ℓ of all hidden layers, as one layer.

    All kernels live in one ``(L, U, M)`` variable (U the widest hidden layer; a narrower
    layer uses the first U_ℓ rows, the rest stay zero) and the biases in one ``(L, M)``
    variable, so the heads cost two optimizer updates instead of 2L. Each C_ℓ is initialised
    Glorot-uniform for its own fan-in, like a ``Dense(M)`` on z_ℓ.

    Parameters
    ----------
    num_heads : int
        L.
    output_dim : int
        M.
    """

    def __init__(self, num_heads: int, output_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.output_dim = int(output_dim)

    def build(self, input_shapes: Sequence[tuple[int | None, ...]]) -> None:
        widths = [int(shape[-1]) for shape in input_shapes]
        if len(widths) != self.num_heads:
            raise ValueError(
                f"LinearHeads expects {self.num_heads} hidden outputs; got {len(widths)}."
            )
        self.widths = widths
        # Kept as attributes, the Keras convention through which keras_koopman.reinitialize
        # re-draws the variables.
        self.kernel_initializer = HeadGlorotUniform(widths)
        self.bias_initializer = keras.initializers.Zeros()
        self.kernel = self.add_weight(
            shape=(self.num_heads, max(widths), self.output_dim),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=(self.num_heads, self.output_dim), initializer=self.bias_initializer, name="bias"
        )

    def call(self, hidden: Sequence[tf.Tensor]) -> tf.Tensor:
        """``(batch, L, *grid, M)`` heads from the L hidden outputs ``(batch, *grid, U_ℓ)``.

        One matmul per head on its own activations, then a stack of the M-wide results: stacking
        the U-wide activations first would copy all of them.
        """
        heads = [
            keras.ops.matmul(z, self.kernel[i, :width])
            for i, (z, width) in enumerate(zip(hidden, self.widths, strict=True))
        ]
        stacked = keras.ops.stack(heads, axis=1)
        grid_ones = (1,) * (len(stacked.shape) - 3)
        return stacked + keras.ops.reshape(self.bias, (self.num_heads, *grid_ones, self.output_dim))

    def compute_output_shape(self, input_shapes: Sequence[tuple[int | None, ...]]) -> tuple:
        first = tuple(input_shapes[0])
        return (first[0], self.num_heads, *first[1:-1], self.output_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_heads=self.num_heads, output_dim=self.output_dim)
        return config


class HeadLossMeans(keras.metrics.Metric):
    """Running (weighted) means of the per-head loss terms, logged as ``head_{ℓ}_loss``."""

    def __init__(self, num_heads: int, name: str = "head_losses", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.num_heads = int(num_heads)
        self.total = self.add_variable(shape=(self.num_heads,), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, values: tf.Tensor, sample_weight: tf.Tensor | None = None) -> None:
        """Add a ``(batch, L)`` block of per-sample head terms."""
        values = keras.ops.cast(values, self.dtype)
        if sample_weight is None:
            weights = keras.ops.ones_like(values[:, 0])
        else:
            weights = keras.ops.reshape(keras.ops.cast(sample_weight, self.dtype), (-1,))
        self.total.assign_add(keras.ops.sum(values * weights[:, None], axis=0))
        self.count.assign_add(keras.ops.sum(weights))

    def result(self) -> dict[str, tf.Tensor]:
        means = keras.ops.divide_no_nan(self.total, self.count)
        return {f"head_{i}_loss": means[i] for i in range(self.num_heads)}

    def reset_state(self) -> None:
        self.total.assign(keras.ops.zeros_like(self.total))
        self.count.assign(keras.ops.zeros_like(self.count))


@keras.saving.register_keras_serializable(package="keras_koopman")
class SobolevHeadsModel(keras.Model):
    """Stack of hidden layers with a linear head per layer, trained with Sobolev losses.

    Parameters
    ----------
    output_dim : int
        M, the channels of every head and of the reconstruction (the paper: 1).
    depth : int
        Number of hidden ``Dense`` layers built when ``hidden_layers`` is None (paper: 9).
    units : int
        Width of the built hidden layers (paper: 20).
    activation : str
        Name of the Keras activation of the built hidden layers.
    hidden_layers : sequence of keras.layers.Layer, optional
        Layers to wrap instead of building ``depth`` dense ones; each must map
        ``(..., features)`` to ``(..., features')`` pointwise on the grid.
    reconstruction : {"output", "sum_of_heads"}
        The paper's ambiguity (2): a separate ``Dense(M)`` output on the last hidden layer,
        or the sum of the heads. Default chosen by the study (docs/sobolev.md).
    **kwargs
        ``name``, ``trainable``, ``dtype`` as for ``keras.Model``.

    Notes
    -----
    Compiled with :class:`~keras_koopman.losses.SobolevLoss1`, ``compute_loss`` computes the
    heads and applies shell s(ℓ) to head ℓ with one FFT of all heads; the logs then hold
    ``head_{ℓ}_loss`` for every head and ``output_loss`` for the reconstruction term.

    Example
    -------
    >>> import keras, numpy as np
    >>> from keras_koopman import SobolevHeadsModel, SobolevLoss1
    >>> x = np.linspace(-1, 1, 32, dtype="float32").reshape(1, 32, 1)
    >>> model = SobolevHeadsModel(depth=3, units=8)
    >>> model.compile(keras.optimizers.Adam(1e-2), loss=SobolevLoss1())
    >>> model.method
    'sobolev1'
    >>> reconstruction, heads = model.call_with_heads(x)
    >>> tuple(reconstruction.shape), tuple(heads.shape)
    ((1, 32, 1), (1, 3, 32, 1))
    >>> tuple(model.loss.head_terms(np.sin(3 * x), heads).shape)   # head ℓ on shell ℓ
    (1, 3)

    ``model.fit(x, y)`` then logs ``head_0_loss`` … ``head_2_loss`` and ``output_loss``.
    """

    def __init__(
        self,
        output_dim: int = 1,
        depth: int = 9,
        units: int = 20,
        activation: str = "tanh",
        hidden_layers: Sequence[keras.layers.Layer] | None = None,
        reconstruction: str = DEFAULT_RECONSTRUCTION,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for arg, value in (("output_dim", output_dim), ("depth", depth), ("units", units)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{arg} must be a positive integer; got {value!r}.")
        if not isinstance(activation, str):
            raise TypeError(
                f"activation must be the name of a Keras activation; got {type(activation).__name__} "
                "(wrap layers with other activations through hidden_layers)."
            )
        if reconstruction not in RECONSTRUCTIONS:
            raise ValueError(
                f"reconstruction must be one of {RECONSTRUCTIONS}; got {reconstruction!r}."
            )
        self.output_dim = int(output_dim)
        self.units = int(units)
        self.activation = activation
        self.reconstruction = reconstruction
        self._wraps_layers = hidden_layers is not None
        if hidden_layers is None:
            self.hidden = [
                keras.layers.Dense(self.units, activation=activation, name=f"hidden_{i}")
                for i in range(int(depth))
            ]
        else:
            layers = list(hidden_layers)
            if not layers or not all(isinstance(layer, keras.layers.Layer) for layer in layers):
                raise TypeError("hidden_layers must be a non-empty sequence of keras.layers.Layer.")
            self.hidden = layers
        self.depth = len(self.hidden)
        self.heads = LinearHeads(self.depth, self.output_dim, name="heads")
        self.output_layer = (
            keras.layers.Dense(self.output_dim, name="output")
            if reconstruction == "output"
            else None
        )
        self.head_tracker = HeadLossMeans(self.depth, name="head_losses")
        self.output_tracker = keras.metrics.Mean(name="output_loss")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        shape = tuple(input_shape)
        shapes = []
        for layer in self.hidden:
            if not layer.built:  # wrapped or deserialised layers may come built
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
            shapes.append(shape)
        self.heads.build(shapes)
        if self.output_layer is not None:
            self.output_layer.build(shape)

    def call_with_heads(
        self, inputs: tf.Tensor, training: bool | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Reconstruction and heads in one forward pass.

        Returns
        -------
        reconstruction : tensor
            ``(batch, *grid, M)``.
        heads : tensor
            ``(batch, L, *grid, M)``: f_ℓ = C_ℓ z_ℓ for ℓ = 0 … L−1.
        """
        z = inputs
        hidden = []
        for layer in self.hidden:
            z = layer(z, training=training)
            hidden.append(z)
        heads = self.heads(hidden)
        if self.output_layer is None:
            return keras.ops.sum(heads, axis=1), heads
        return self.output_layer(z), heads

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """The reconstruction (see ``reconstruction``)."""
        return self.call_with_heads(inputs, training=training)[0]

    def predict_heads(self, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Heads f_ℓ as a numpy array of shape ``(batch, L, *grid, M)`` (per-scale outputs).

        Zero samples give an empty array of that shape.
        """
        x = np.asarray(x)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or (
            batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
        if x.ndim < 3:
            raise ValueError(
                f"x must have shape (batch, *grid, D) with a 1-D or 2-D grid; got {x.shape}."
            )
        if len(x) == 0:
            shape = (0, self.depth, *x.shape[1:-1], self.output_dim)
            return np.zeros(shape, dtype=keras.backend.standardize_dtype(self.compute_dtype))
        parts = [
            keras.ops.convert_to_numpy(self.call_with_heads(x[i : i + batch_size])[1])
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(parts)

    @property
    def method(self) -> str:
        """Training method implied by the compiled loss: one of METHODS, or "custom"."""
        loss = self.loss
        if isinstance(loss, SobolevLoss1):
            return "sobolev1+2" if loss.output_loss == "sobolev2" else "sobolev1"
        if isinstance(loss, SobolevLoss2):
            return "sobolev2"
        if loss in ("mse", "mean_squared_error") or isinstance(loss, keras.losses.MeanSquaredError):
            return "l2"
        return "custom"

    def method_loss(
        self,
        method: str,
        scale: Scale = "linear",
        index: float = PAPER_INDEX,
        **sobolev1_kwargs: Any,
    ) -> keras.losses.Loss:
        """Loss to compile with for a training method of the paper.

        Parameters
        ----------
        method : {"l2", "sobolev1", "sobolev2", "sobolev1+2"}
        scale, index
            Shell function and Sobolev index of the Sobolev losses.
        **sobolev1_kwargs
            Extra arguments of :class:`SobolevLoss1` (e.g. ``output_loss`` for "sobolev1").
        """
        if method == "l2":
            return keras.losses.MeanSquaredError()
        if method == "sobolev1":
            return SobolevLoss1(scale=scale, index=index, **sobolev1_kwargs)
        if method == "sobolev1+2":
            return SobolevLoss1(scale=scale, index=index, output_loss="sobolev2", **sobolev1_kwargs)
        if method == "sobolev2":
            return SobolevLoss2(num_layers=self.depth, scale=scale, index=index)
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> tf.Tensor:
        """Sobolev 1 (head ℓ on shell s(ℓ)) when compiled with SobolevLoss1, else Keras's loss.

        The heads and the reconstruction are recomputed from ``x`` in one pass (``y_pred``
        alone does not carry the heads); the forward pass that produced ``y_pred`` is then
        unused by the loss and is pruned from the compiled step unless compiled metrics need it.
        """
        loss = self.loss
        if not isinstance(loss, SobolevLoss1):
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if x is None:
            raise ValueError("compute_loss needs x to compute the heads of Sobolev loss 1.")
        reconstruction, heads = self.call_with_heads(x, training=training)
        terms = loss.head_terms(y, heads)
        output = loss.output_term(y, reconstruction, self.depth)
        per_sample = tf.reduce_sum(terms, axis=1)
        if output is not None:
            per_sample = per_sample + output
            self.output_tracker.update_state(output, sample_weight=sample_weight)
        self.head_tracker.update_state(terms, sample_weight=sample_weight)
        reduce = PerSampleReduction(reduction=loss.reduction, dtype=loss.dtype)
        total = reduce(per_sample, per_sample, sample_weight)
        extra = [tf.cast(value, total.dtype) for value in self.losses]
        return total + tf.add_n(extra) if extra else total

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        own = (self.output_tracker, self.head_tracker)
        metrics = [m for m in super().metrics if all(m is not t for t in own)]
        if isinstance(self.loss, SobolevLoss1):
            metrics.append(self.head_tracker)
            if self.loss.output_loss is not None:
                metrics.append(self.output_tracker)
        return metrics

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            output_dim=self.output_dim,
            depth=self.depth,
            units=self.units,
            activation=self.activation,
            hidden_layers=(
                [keras.saving.serialize_keras_object(layer) for layer in self.hidden]
                if self._wraps_layers
                else None
            ),
            reconstruction=self.reconstruction,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SobolevHeadsModel:
        config = dict(config)
        if config.get("hidden_layers") is not None:
            config["hidden_layers"] = [
                keras.saving.deserialize_keras_object(layer) for layer in config["hidden_layers"]
            ]
        return cls(**config)
