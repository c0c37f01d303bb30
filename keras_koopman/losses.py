"""Negative-Sobolev-norm losses on frequency shells (paper Eq. (5)-(7)).

A sample is a whole signal on a uniform periodic grid: targets and predictions have shape
``(batch, N, M)`` (1-D grid of N points, M channels) or ``(batch, N1, N2, M)`` (2-D grid).
Fourier coefficients are normalised as continuous ones on the unit torus,

    f̂(k) = (1/N) Σ_j f(x_j) exp(-2πi k·j/N),

so that Parseval gives the mean square over the grid. The shell ``‖k‖₁ = s`` is
``{-s, +s}`` in 1-D (the single point 0 for s = 0) and ``{k : |k1| + |k2| = s}`` in 2-D.
Spectra are computed with one real FFT (``tf.signal.rfft`` / ``rfft2d``) of the residual;
every rfft bin carries the multiplicity of the conjugate pair it stands for (2, or 1 for
the zero and Nyquist bins of the last axis). A shell at the Nyquist frequency N/2 of an even
grid is resolved by a single DFT coefficient (frequencies +N/2 and -N/2 alias); a shell
beyond it cannot be resolved and raises ``ValueError``.

Losses
------
* :class:`SobolevNormLoss` -- Eq. (5): the squared H^s norm of the residual, all frequencies.
* :class:`SobolevLoss1` -- the per-layer term of Eq. (6): shell s(ℓ) of layer ℓ. Compiled on a
  :class:`keras_koopman.SobolevHeadsModel` it applies shell s(ℓ) to head ℓ for every ℓ.
* :class:`SobolevLoss2` -- Eq. (7): the shells ℓ = 0 … L-1 summed, on the final output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "SobolevLoss1",
    "SobolevLoss2",
    "SobolevNormLoss",
    "resolve_scale",
    "check_index",
    "shell_weights",
    "spectral_energy",
]

#: Default Sobolev index of Eq. (6)-(7): weights (1 + (2π‖k‖₂)²)^(-1/2).
PAPER_INDEX = -0.5

#: What :class:`SobolevLoss1` puts on a SobolevHeadsModel's reconstruction besides the heads
#: (ambiguity (1) of the paper); "sobolev2" gives the paper's "Sobolev 1+2" (Figure 4).
OUTPUT_LOSSES = (None, "mse", "sobolev2")

#: Default of ``SobolevLoss1(output_loss=...)``, chosen by the study in docs/results.md: without
#: a loss on the reconstruction, nothing constrains it (RMSE 1.7-5.9 against 0.37-0.85 with "mse").
DEFAULT_OUTPUT_LOSS = "mse"

Scale = str | Callable[[int], int]


def resolve_scale(scale: Scale) -> Callable[[int], int]:
    """Return the shell function s(ℓ) named by ``scale``.

    Parameters
    ----------
    scale : {"linear", "exponential"} or callable
        ``"linear"``: s(ℓ) = ℓ (the paper's choice); ``"exponential"``: s(ℓ) = 2^ℓ;
        a callable maps a layer index ℓ ≥ 0 to a non-negative integer shell.

    Returns
    -------
    callable
        ``s(ℓ) -> int``; a callable's result is checked to be a non-negative integer.
    """
    if isinstance(scale, str):
        if scale == "linear":
            return lambda layer: int(layer)
        if scale == "exponential":
            return lambda layer: 2 ** int(layer)
        raise ValueError(
            f"scale must be 'linear', 'exponential' or a callable; got {scale!r}."
        )
    if not callable(scale):
        raise TypeError(
            f"scale must be 'linear', 'exponential' or a callable; got {type(scale).__name__}."
        )

    def checked(layer: int) -> int:
        shell = scale(layer)
        if isinstance(shell, bool) or not float(shell).is_integer() or shell < 0:
            raise ValueError(
                f"scale({layer}) must be a non-negative integer shell; got {shell!r}."
            )
        return int(shell)

    return checked


def _grid_frequencies(grid_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """‖k‖₁, ‖k‖₂ and conjugate-pair multiplicity of every rfft bin of a 1-D or 2-D grid."""
    *lead, n_last = (int(n) for n in grid_shape)
    k_last = np.arange(n_last // 2 + 1, dtype=np.float64)
    multiplicity = np.full(k_last.shape, 2.0)
    multiplicity[0] = 1.0
    if n_last % 2 == 0:
        multiplicity[-1] = 1.0
    if not lead:
        return k_last, k_last.copy(), multiplicity
    (n_first,) = lead
    k_first = np.abs(np.fft.fftfreq(n_first) * n_first)[:, None]
    l1 = k_first + k_last[None, :]
    l2 = np.sqrt(k_first**2 + k_last[None, :] ** 2)
    return l1, l2, np.broadcast_to(multiplicity, l1.shape).copy()


def _check_grid(grid_shape: Sequence[int | None], what: str) -> tuple[int, ...]:
    if len(grid_shape) not in (1, 2):
        raise ValueError(
            f"{what} must have shape (batch, N, M) or (batch, N1, N2, M); "
            f"got a grid of {len(grid_shape)} dimensions."
        )
    if any(n is None for n in grid_shape):
        raise ValueError(
            f"{what}: the grid size must be known statically; got grid shape {tuple(grid_shape)}."
        )
    if any(n < 1 for n in grid_shape):
        raise ValueError(f"{what}: grid sizes must be positive; got {tuple(grid_shape)}.")
    return tuple(int(n) for n in grid_shape)


def shell_weights(
    grid_shape: Sequence[int],
    shells: Sequence[int] | None,
    index: float = PAPER_INDEX,
    layers: Sequence[int] | None = None,
    owner: str = "shell_weights",
    dtype: str = "float32",
) -> np.ndarray:
    """Weights turning rfft power into the shell energies of Eq. (6)-(7).

    Row r of the result, contracted with the raw rfft power |F(k)|² of a real signal on the
    grid (F unnormalised), gives Σ_{‖k‖₁ = shells[r]} (1 + (2π‖k‖₂)²)^index |f̂(k)|² with
    f̂ = F/N (sum over the full Fourier lattice, conjugate pairs included).

    Parameters
    ----------
    grid_shape : sequence of int
        ``(N,)`` or ``(N1, N2)``.
    shells : sequence of int or None
        The ‖k‖₁ shells, one row each; ``None`` for one row over all frequencies (Eq. (5)).
    index : float
        Sobolev index s of the weight (1 + (2π‖k‖₂)²)^s; -1/2 in the paper.
    layers : sequence of int, optional
        Layer index of each shell, only used to name the layer in errors.
    owner : str
        Name used in error messages.
    dtype : {"float32", "float64"}
        Precision the loss is computed in; the weights must be representable in it.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(len(shells),) + rfft_bins`` (or ``(1,) + rfft_bins``).

    Raises
    ------
    ValueError
        If a shell lies beyond the Nyquist frequency of the grid, or ``index`` makes a weight
        overflow or vanish in ``dtype`` on this grid (see :func:`check_index`).

    Example
    -------
    >>> shell_weights([8], [0, 1], index=0.0) * 8**2   # shell 0: the zero bin; shell 1: ±1
    array([[1., 0., 0., 0., 0.],
           [0., 2., 0., 0., 0.]])
    """
    grid = _check_grid(list(grid_shape), owner)
    check_index(index, owner, dtype)
    l1, l2, multiplicity = _grid_frequencies(grid)
    if shells is None:
        used = np.ones(l1.shape, dtype=bool)
    else:
        nyquist = min(grid) // 2
        layers = list(range(len(shells))) if layers is None else list(layers)
        for layer, shell in zip(layers, shells, strict=True):
            if shell > nyquist:
                raise ValueError(
                    f"{owner}: layer {layer} needs shell ‖k‖₁ = {shell}, beyond the Nyquist "
                    f"frequency {nyquist} of the grid N = {grid if len(grid) > 1 else grid[0]}; "
                    f"use a grid of at least {2 * shell} points per axis or fewer layers."
                )
        used = np.isin(l1, list(shells))
    size = float(np.prod(grid))
    log_sobolev = float(index) * np.log1p((2.0 * np.pi * l2) ** 2)
    _check_weight_range(log_sobolev[used], np.log(multiplicity[used] / size**2), float(index),
                        float(l2[used].max()), grid, owner, dtype)
    base = multiplicity * np.exp(log_sobolev) / size**2
    if shells is None:
        return base[None]
    return np.stack([np.where(l1 == shell, base, 0.0) for shell in shells])


def check_index(index: Any, owner: str = "index", dtype: str = "float32") -> float:
    """Validate a Sobolev index before any grid is known; return it as a float.

    Every grid with N ≥ 2 has the frequency ‖k‖ = 1, with weight (1 + 4π²)^index. That weight
    must stay within the range that keeps a loss finite and non-zero in ``dtype``: at most
    the square root of its largest value (head-room for the signal's power) and at least its
    smallest normal value (float32: |index| up to about 12 and 23). A grid can narrow the range
    further (:func:`shell_weights` checks the largest frequency it uses).

    Raises
    ------
    ValueError
        ``index`` is not a finite real number, or lies outside that range (the message names
        ``index`` and the admissible range).
    """
    if isinstance(index, bool) or not isinstance(index, int | float | np.floating | np.integer) or (
        not np.isfinite(index)
    ):
        raise ValueError(f"{owner}: index must be a finite real number; got {index!r}.")
    low, high = _log_weight_limits(dtype)
    log_unit = np.log1p(4.0 * np.pi**2)
    if not low <= float(index) * log_unit <= high:
        raise ValueError(
            f"{owner}: index={index} makes the weight (1 + 4π²)^index of frequency 1 "
            f"{'overflow' if index > 0 else 'vanish'} in {dtype}; use an index between "
            f"{low / log_unit:.3g} and {high / log_unit:.3g}."
        )
    return float(index)


def _log_weight_limits(dtype: str) -> tuple[float, float]:
    """log of the smallest normal and of the square root of the largest value of ``dtype``."""
    info = np.finfo(dtype)
    return float(np.log(info.tiny)), 0.5 * float(np.log(info.max))


def _check_weight_range(
    log_sobolev: np.ndarray,
    log_scale: np.ndarray,
    index: float,
    max_frequency: float,
    grid: tuple[int, ...],
    owner: str,
    dtype: str,
) -> None:
    """Raise if a used weight overflows (Sobolev factor above √max) or vanishes (below tiny)."""
    low, high = _log_weight_limits(dtype)
    overflow = log_sobolev.max() > high
    if not overflow and (log_sobolev + log_scale).min() >= low:
        return
    log_top = np.log1p((2.0 * np.pi * max_frequency) ** 2)
    bound = high / log_top if overflow else (low - log_scale.min()) / log_top
    raise ValueError(
        f"{owner}: index={index} makes the Sobolev weight of frequency {max_frequency:.4g} on "
        f"the grid N = {grid if len(grid) > 1 else grid[0]} {'overflow' if overflow else 'vanish'} "
        f"in {dtype}; use an index {'at most' if overflow else 'at least'} {bound:.3g} on this grid."
    )


def spectral_energy(signal: tf.Tensor, weights: np.ndarray, paired: bool = False) -> tf.Tensor:
    """Weighted normalised spectral energy of real signals on a periodic grid.

    Parameters
    ----------
    signal : tensor
        ``(batch, *grid, M)``, or ``(batch, S, *grid, M)`` when ``paired``.
    weights : numpy.ndarray
        ``(S, *rfft_bins)`` from :func:`shell_weights`; its rank fixes the grid rank.
    paired : bool
        If True, row s of ``weights`` applies to ``signal[:, s]`` only (one FFT for all rows).

    Returns
    -------
    tensor
        ``(batch, S)``: Σ_m Σ_k weights[s, k] |F_m(k)|², F the rfft over the grid axes, in
        float64 for a float64 signal, else float32 (half-precision signals are cast first:
        the FFT has no float16/bfloat16 kernels and would lose the high-frequency bins).
    """
    signal = _to_fft_dtype(signal)
    grid_ndim = weights.ndim - 1
    rank = len(signal.shape)
    lead = rank - grid_ndim - 1
    perm = list(range(lead)) + [rank - 1] + list(range(lead, rank - 1))
    moved = tf.transpose(signal, perm)
    spectrum = tf.signal.rfft(moved) if grid_ndim == 1 else tf.signal.rfft2d(moved)
    power = tf.math.square(tf.math.real(spectrum)) + tf.math.square(tf.math.imag(spectrum))
    power = tf.reshape(power, tf.concat([tf.shape(power)[: lead + 1], [-1]], axis=0))
    w = tf.constant(weights.reshape(weights.shape[0], -1), dtype=power.dtype)
    if paired:
        return tf.einsum("bsmk,sk->bs", power, w)
    return tf.einsum("bmk,sk->bs", power, w)


def _fft_dtype(dtype: Any) -> str:
    """float64 stays float64; every other float type is computed in float32."""
    return "float64" if keras.backend.standardize_dtype(dtype) == "float64" else "float32"


def _to_fft_dtype(tensor: Any) -> tf.Tensor:
    tensor = tf.convert_to_tensor(tensor)
    return keras.ops.cast(tensor, _fft_dtype(tensor.dtype))


def _check_pair(y_true: tf.Tensor, y_pred: tf.Tensor, owner: str) -> tuple[int, ...]:
    """Validate matching (batch, *grid, M) shapes; return the grid shape."""
    if len(y_true.shape) != len(y_pred.shape) or any(
        a is not None and b is not None and a != b
        for a, b in zip(y_true.shape[1:], y_pred.shape[1:], strict=True)
    ):
        raise ValueError(
            f"{owner}: y_true and y_pred must have the same shape (batch, N, M) or "
            f"(batch, N1, N2, M); got y_true {tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)}."
        )
    grid = list(y_pred.shape[1:-1])
    for i, n in enumerate(grid):
        if n is None:
            grid[i] = y_true.shape[1 + i]
    return _check_grid(grid, owner)


def _serialize_scale(scale: Scale) -> Any:
    return scale if isinstance(scale, str) else keras.saving.serialize_keras_object(scale)


def _deserialize_scale(scale: Any) -> Scale:
    return scale if isinstance(scale, str) else keras.saving.deserialize_keras_object(scale)


class _ShellLoss(keras.losses.Loss):
    """Common arguments and config of the shell losses."""

    def __init__(
        self,
        scale: Scale = "linear",
        index: float = PAPER_INDEX,
        name: str | None = None,
        reduction: str | None = "sum_over_batch_size",
        dtype: str | None = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.scale = scale
        self.shell_of = resolve_scale(scale)
        self.index = check_index(index, self.name, _fft_dtype(self.dtype))
        self._dtype_arg = dtype

    def _cast(self, tensor: Any) -> tf.Tensor:
        """``tensor`` in the precision the loss is computed in (float32 unless float64)."""
        return keras.ops.cast(tensor, _fft_dtype(self.dtype))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(scale=_serialize_scale(self.scale), index=self.index, dtype=self._dtype_arg)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> _ShellLoss:
        config = dict(config)
        config["scale"] = _deserialize_scale(config["scale"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_koopman")
class SobolevLoss1(_ShellLoss):
    """Per-layer term of "Sobolev loss 1", Eq. (6).

    For layer ℓ with auxiliary output f_ℓ, the per-sample value is

        Σ_m Σ_{‖k‖₁ = s(ℓ)} |ĥ_m(k) − f̂_{ℓ,m}(k)|² (1 + (2π‖k‖₂)²)^index,

    index = −1/2 in the paper. Called directly, the loss uses shell s(``layer``). Compiled on a
    :class:`keras_koopman.SobolevHeadsModel` it applies shell s(ℓ) to head ℓ for every head
    (see :meth:`head_terms`) and ``output_loss`` to the model's reconstruction.

    Parameters
    ----------
    layer : int
        Layer ℓ whose shell a direct call uses.
    scale : {"linear", "exponential"} or callable
        Shell function s(ℓ): ℓ (paper), 2^ℓ, or a callable (register it with
        ``keras.saving.register_keras_serializable`` for save/load).
    index : float
        Sobolev index; −1/2 (Eq. (6)).
    output_loss : {None, "mse", "sobolev2"}
        Term a SobolevHeadsModel adds on its reconstruction (the paper's ambiguity (1)):
        nothing, the L2 loss (mean square over the grid), or Eq. (7) over the heads' shells
        ("Sobolev 1+2", Figure 4). The default was chosen by the study (docs/sobolev.md).
    name, reduction, dtype
        As for ``keras.losses.Loss``.

    Example
    -------
    A residual on shell 1 only, index 0: shell 1 sees all of it, shell 2 none.

    >>> import numpy as np
    >>> t = np.arange(16) / 16
    >>> y_pred = np.cos(2 * np.pi * t).reshape(1, 16, 1)   # energy 1/4 + 1/4 at k = ±1
    >>> round(float(SobolevLoss1(layer=1, index=0.0)(np.zeros_like(y_pred), y_pred)), 6)
    0.5
    >>> round(float(SobolevLoss1(layer=2, index=0.0)(np.zeros_like(y_pred), y_pred)), 6)
    0.0
    """

    def __init__(
        self,
        layer: int = 0,
        scale: Scale = "linear",
        index: float = PAPER_INDEX,
        output_loss: str | None = DEFAULT_OUTPUT_LOSS,
        name: str | None = "sobolev_loss_1",
        reduction: str | None = "sum_over_batch_size",
        dtype: str | None = None,
    ) -> None:
        super().__init__(scale=scale, index=index, name=name, reduction=reduction, dtype=dtype)
        if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or layer < 0:
            raise ValueError(f"layer must be a non-negative integer; got {layer!r}.")
        if output_loss not in OUTPUT_LOSSES:
            raise ValueError(f"output_loss must be one of {OUTPUT_LOSSES}; got {output_loss!r}.")
        self.layer = int(layer)
        self.output_loss = output_loss

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        grid = _check_pair(y_true, y_pred, self.name)
        weights = shell_weights(
            grid, [self.shell_of(self.layer)], self.index, [self.layer], self.name,
            _fft_dtype(self.dtype),
        )
        return spectral_energy(y_pred - y_true, weights)[:, 0]

    def head_terms(self, y_true: tf.Tensor, heads: tf.Tensor) -> tf.Tensor:
        """Per-sample, per-head terms of Eq. (6), head ℓ on shell s(ℓ), with one FFT.

        Parameters
        ----------
        y_true : tensor
            ``(batch, *grid, M)`` targets h.
        heads : tensor
            ``(batch, L, *grid, M)``: the auxiliary outputs f_0 … f_{L-1}.

        Returns
        -------
        tensor
            ``(batch, L)`` unreduced terms; their sum over heads is Eq. (6).
        """
        y_true, heads = self._cast(y_true), self._cast(heads)
        if len(heads.shape) != len(y_true.shape) + 1 or heads.shape[1] is None:
            raise ValueError(
                f"{self.name}: heads must have shape (batch, L, *grid, M) for y_true of shape "
                f"{tuple(y_true.shape)}; got {tuple(heads.shape)}."
            )
        n_heads = heads.shape[1]
        grid = _check_pair(y_true, heads[:, 0], self.name)
        layers = list(range(n_heads))
        weights = shell_weights(
            grid, [self.shell_of(layer) for layer in layers], self.index, layers, self.name,
            _fft_dtype(self.dtype),
        )
        return spectral_energy(heads - y_true[:, None], weights, paired=True)

    def output_term(self, y_true: tf.Tensor, y_pred: tf.Tensor, num_layers: int) -> tf.Tensor | None:
        """Per-sample ``output_loss`` on the reconstruction (None when there is none)."""
        if self.output_loss is None:
            return None
        y_true, y_pred = self._cast(y_true), self._cast(y_pred)
        if self.output_loss == "mse":
            _check_pair(y_true, y_pred, self.name)
            return tf.reduce_mean(
                tf.math.square(y_pred - y_true), axis=list(range(1, len(y_pred.shape)))
            )
        companion = SobolevLoss2(
            num_layers=num_layers, scale=self.scale, index=self.index, dtype=self._dtype_arg
        )
        return companion.call(y_true, y_pred)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(layer=self.layer, output_loss=self.output_loss)
        return config


@keras.saving.register_keras_serializable(package="keras_koopman")
class SobolevLoss2(_ShellLoss):
    """"Sobolev loss 2", Eq. (7): the shells of layers ℓ = 0 … L−1 on the final output.

    Per-sample value Σ_{ℓ=0}^{L-1} Σ_m Σ_{‖k‖₁ = s(ℓ)} |ĥ_m(k) − f̂_m(k)|² (1 + (2π‖k‖₂)²)^index.
    A shell listed twice by ``scale`` counts twice.

    Parameters
    ----------
    num_layers : int
        L, the number of shells summed (the paper's network: 9 hidden layers).
    scale, index, name, reduction, dtype
        As for :class:`SobolevLoss1`.

    Example
    -------
    Shells 0 … 2 with the paper's index −1/2; a residual on shell 1 is damped by
    (1 + (2π)²)^(−1/2) ≈ 0.157.

    >>> import numpy as np
    >>> t = np.arange(16) / 16
    >>> y_pred = np.cos(2 * np.pi * t).reshape(1, 16, 1)
    >>> round(float(SobolevLoss2(num_layers=3)(np.zeros_like(y_pred), y_pred)), 4)
    0.0786
    """

    def __init__(
        self,
        num_layers: int = 9,
        scale: Scale = "linear",
        index: float = PAPER_INDEX,
        name: str | None = "sobolev_loss_2",
        reduction: str | None = "sum_over_batch_size",
        dtype: str | None = None,
    ) -> None:
        super().__init__(scale=scale, index=index, name=name, reduction=reduction, dtype=dtype)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int | np.integer) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive integer; got {num_layers!r}.")
        self.num_layers = int(num_layers)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        grid = _check_pair(y_true, y_pred, self.name)
        layers = list(range(self.num_layers))
        weights = shell_weights(
            grid, [self.shell_of(layer) for layer in layers], self.index, layers, self.name,
            _fft_dtype(self.dtype),
        ).sum(axis=0, keepdims=True)
        return spectral_energy(y_pred - y_true, weights)[:, 0]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_layers=self.num_layers)
        return config


@keras.saving.register_keras_serializable(package="keras_koopman")
class SobolevNormLoss(keras.losses.Loss):
    """Squared Sobolev norm of the residual over all frequencies, Eq. (5).

    Per-sample value Σ_m Σ_k (1 + (2π‖k‖₂)²)^index |ĥ_m(k) − f̂_m(k)|² over the whole grid
    spectrum. A negative index damps high frequencies (the paper uses −1/2); index 0 is the
    mean square over the grid summed over channels (Parseval).

    Parameters
    ----------
    index : float
        Sobolev index s.
    name, reduction, dtype
        As for ``keras.losses.Loss``.

    Example
    -------
    Index 0 is the mean square of the residual (Parseval):

    >>> import numpy as np
    >>> y_true, y_pred = np.zeros((1, 8, 1)), np.ones((1, 8, 1))
    >>> float(SobolevNormLoss(index=0.0)(y_true, y_pred))
    1.0
    """

    def __init__(
        self,
        index: float = PAPER_INDEX,
        name: str | None = "sobolev_norm_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: str | None = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.index = check_index(index, self.name, _fft_dtype(self.dtype))
        self._dtype_arg = dtype

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        grid = _check_pair(y_true, y_pred, self.name)
        weights = shell_weights(grid, None, self.index, owner=self.name, dtype=_fft_dtype(self.dtype))
        return spectral_energy(y_pred - y_true, weights)[:, 0]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(index=self.index, dtype=self._dtype_arg)
        return config


class PerSampleReduction(keras.losses.Loss):
    """Apply a loss's Keras reduction (and sample weights) to precomputed per-sample values.

    Not serialised: SobolevHeadsModel builds one from its compiled loss when it needs it.
    """

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return y_pred
