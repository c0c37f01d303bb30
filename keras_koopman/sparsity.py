"""Koopman magnitude sparsification (Redman et al., "An operator theoretic view on pruning deep neural
networks", ICLR 2022).

Magnitude sparsification removes the weights of smallest absolute value from a trained network.
Koopman magnitude sparsification ranks the weights instead by the magnitude of the fixed point that the
Koopman spectrum of the weight trajectory predicts (the ``λ ≈ 1`` modes,
:meth:`KoopmanMonitor.fixed_point_estimate <keras_koopman.KoopmanMonitor.fixed_point_estimate>`),
so it can be applied before training has converged; at convergence the fixed point is the
current weights and the two coincide.

Cost: one sort of the candidate weights, ``O(n log n)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

__all__ = ["apply_masks", "koopman_magnitude_masks", "magnitude_masks"]

_SCOPES = ("global", "layer")


def magnitude_masks(model: keras.Model, sparsity: float, *, weights: np.ndarray | None = None,
                    scope: str = "global", include_bias: bool = False) -> list[np.ndarray | None]:
    """Keep-masks that remove the fraction ``sparsity`` of smallest-magnitude weights.

    Parameters
    ----------
    model : keras.Model
        A built model; its ``trainable_variables`` define the order of ``weights``.
    sparsity : float
        Fraction of the candidate weights to remove, in ``[0, 1)``.
    weights : ndarray, shape (n_weights,), optional
        Flattened values to rank by (default: the model's current weights).
    scope : {"global", "layer"}
        Rank all candidates together, or remove ``sparsity`` of each variable separately.
    include_bias : bool
        Also prune one-dimensional variables (biases, scales); by default only kernels
        (variables of rank ≥ 2) are candidates.

    Returns
    -------
    list
        One boolean array per trainable variable, shaped like it (``True`` = keep), or
        ``None`` for a variable that is not a candidate.  Ties at the threshold are kept.
    """
    if not isinstance(sparsity, (int, float)) or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be a fraction in [0, 1); got {sparsity!r}")
    if scope not in _SCOPES:
        raise ValueError(f"scope must be one of {_SCOPES}; got {scope!r}")
    variables = list(model.trainable_variables)
    if not variables:
        raise ValueError("model has no trainable weights to prune")
    sizes = [int(np.prod(v.shape)) for v in variables]
    if weights is None:
        flat = np.concatenate([keras.ops.convert_to_numpy(v).reshape(-1) for v in variables])
    else:
        flat = np.asarray(weights, dtype=np.float64).reshape(-1)
        if flat.shape[0] != sum(sizes):
            raise ValueError(f"weights must have {sum(sizes)} entries (the model's trainable "
                             f"weights); got {flat.shape[0]}")
    if not np.all(np.isfinite(flat)):
        raise ValueError("weights contain NaN or inf")
    magnitude = np.abs(flat.astype(np.float64))
    bounds = np.cumsum([0] + sizes)
    candidate = [include_bias or len(v.shape) >= 2 for v in variables]
    if not any(candidate):
        raise ValueError("model has no kernels to prune (pass include_bias=True)")

    def threshold(values: np.ndarray) -> float:
        drop = int(np.floor(float(sparsity) * values.size))
        return -np.inf if drop == 0 else float(np.partition(values, drop - 1)[drop - 1])

    if scope == "global":
        pooled = np.concatenate([magnitude[bounds[i]:bounds[i + 1]]
                                 for i, c in enumerate(candidate) if c])
        cut = threshold(pooled)
    masks: list[np.ndarray | None] = []
    for i, variable in enumerate(variables):
        if not candidate[i]:
            masks.append(None)
            continue
        values = magnitude[bounds[i]:bounds[i + 1]]
        limit = cut if scope == "global" else threshold(values)
        masks.append((values > limit).reshape(tuple(variable.shape)))
    return masks


def koopman_magnitude_masks(model: keras.Model, monitor, sparsity: float, *,
                            analysis=None, delta: float | None = None, scope: str = "global",
                            include_bias: bool = False) -> list[np.ndarray | None]:
    """Magnitude masks ranked by the monitor's Koopman fixed-point estimate.

    Equivalent to ``magnitude_masks(model, sparsity,
    weights=monitor.fixed_point_estimate(analysis, delta=delta), ...)``; see
    :func:`magnitude_masks` for the arguments and the result.
    """
    estimate = monitor.fixed_point_estimate(analysis, delta=delta)
    return magnitude_masks(model, sparsity, weights=estimate, scope=scope,
                           include_bias=include_bias)


def apply_masks(model: keras.Model, masks: Sequence[np.ndarray | None]) -> int:
    """Set the pruned weights (``False`` in a mask) to zero; returns how many were zeroed.

    Only the values change: keep the masks and re-apply them after further training (or
    multiply the gradients) to keep the network sparse.
    """
    variables = list(model.trainable_variables)
    if len(masks) != len(variables):
        raise ValueError(f"masks must have one entry per trainable variable ({len(variables)}); "
                         f"got {len(masks)}")
    zeroed = 0
    for variable, mask in zip(variables, masks):
        if mask is None:
            continue
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != tuple(variable.shape):
            raise ValueError(f"mask for {variable.path} has shape {mask.shape}; expected "
                             f"{tuple(variable.shape)}")
        values = keras.ops.convert_to_numpy(variable)
        zeroed += int(np.count_nonzero(values[~mask]))
        variable.assign(np.where(mask, values, 0).astype(values.dtype))
    return zeroed
