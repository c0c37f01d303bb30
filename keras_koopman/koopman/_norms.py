"""Overflow- and underflow-safe norms and exact power-of-two scaling for the Koopman engine.

``sqrt(Σ|x_i|²)`` overflows for entries above ``≈1.3e154`` and underflows to 0 below
``≈1.5e-154``, although the norm itself is representable.  LAPACK's ``dnrm2``/``dlassq`` avoid
this by scaling; here every column is divided by the power of two nearest its largest entry
(an exact operation in binary floating point, so no accuracy is lost), the 2-norm is taken
at unit scale and the power of two is put back.  DMD_RRR's column scaling (step 1,
``D_x = diag(‖X(:,i)‖₂)``, Drmač–Mezić–Mohr 2018) uses these norms.
"""

from __future__ import annotations

import numpy as np

__all__ = ["column_norms", "magnitude_exponent", "max_abs", "scale_by_power_of_two", "vector_norm"]


def max_abs(array: np.ndarray) -> np.ndarray | np.float64:
    """Largest ``|a|`` per column of a 2-D array, or over a vector (complex: of the real and
    imaginary parts, within a factor ``√2`` of ``|a|``, which is all a scaling needs).

    Two passes (max and min) per real part and no temporary of the array's size.
    """
    parts = (array.real, array.imag) if array.dtype.kind == "c" else (array,)
    axis = 0 if array.ndim == 2 else None
    largest = np.zeros(array.shape[1]) if axis == 0 else np.float64(0.0)
    for part in parts:
        high = np.asarray(part.max(axis=axis), dtype=np.float64)
        low = np.asarray(part.min(axis=axis), dtype=np.float64)
        largest = np.maximum(largest, np.maximum(high, -low))
    return largest


def magnitude_exponent(array: np.ndarray) -> np.ndarray | int:
    """Exponents ``e`` with ``max_abs · 2^-e`` in ``[0.5, 1)`` per column (2-D) or for a
    vector; zero columns get 0.  Cost: :func:`max_abs`."""
    exponents = np.frexp(max_abs(array))[1]
    return exponents if array.ndim == 2 else int(exponents)


def scale_by_power_of_two(array: np.ndarray, exponent) -> np.ndarray:
    """``array · 2^exponent`` (exact unless the result leaves the normal range); ``exponent`` is
    an int or one per column.  Uses ``ldexp`` so that ``2^exponent`` itself cannot overflow."""
    if array.dtype.kind != "c":
        return np.ldexp(array, exponent)
    out = np.empty_like(array)
    out.real = np.ldexp(array.real, exponent)
    out.imag = np.ldexp(array.imag, exponent)
    return out


def column_norms(M: np.ndarray) -> np.ndarray:
    """2-norms of the columns of a 2-D array, without overflow or underflow.

    Each column is scaled by the power of two of its largest entry, normed at unit scale
    and scaled back: finite whenever the norm is below the float64 maximum, and nonzero for
    every nonzero column.  Cost ``≈ 4`` passes over ``M`` (one temporary of its size).
    """
    exponents = magnitude_exponent(M)
    unit = scale_by_power_of_two(M, -exponents)
    return np.ldexp(np.linalg.norm(unit, axis=0), exponents)


def vector_norm(x: np.ndarray) -> float:
    """2-norm of a vector without overflow or underflow (see :func:`column_norms`)."""
    return float(column_norms(np.reshape(x, (-1, 1)))[0])
