"""Input checks shared by the Koopman engine (one place for the error messages)."""

from __future__ import annotations

import numbers

import numpy as np


def as_snapshot_matrix(value, name: str, *, min_columns: int = 1) -> np.ndarray:
    """Return ``value`` as a 2-D numeric array after checking it.

    Raises ``TypeError`` for non-numeric data and ``ValueError`` for a wrong
    number of dimensions, too few columns or non-finite entries; every message
    names ``name``.  The array is not copied when it is already numeric.
    Cost: :func:`check_finite` (column minima and maxima, no n-by-m temporary).
    """
    try:
        array = np.asarray(value)
    except Exception as exc:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be a numeric array; could not convert: {exc}") from exc
    if array.dtype.kind not in "iufc":
        raise TypeError(
            f"{name} must hold real or complex numbers; got dtype {array.dtype!s}"
        )
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with snapshots as columns (n_features, n_snapshots); "
            f"got shape {array.shape}. For a scalar series use delay_embed(series, delays)."
        )
    n, m = array.shape
    if n == 0:
        raise ValueError(f"{name} must have at least one row (feature); got shape {array.shape}")
    if m < min_columns:
        raise ValueError(
            f"{name} must have at least {min_columns} snapshots (columns); got {m}"
        )
    check_finite(array, name)
    return array


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` and the first bad column if ``array`` has NaN/inf.

    Column minima and maxima (of the real and imaginary parts) are finite exactly when every
    entry is: no sums, so no overflow for large finite data, and no temporary of the array's
    size.  Cost: two (four for complex) passes over the data.
    """
    if array.dtype.kind in "iu":
        return
    parts = (array.real, array.imag) if array.dtype.kind == "c" else (array,)
    finite = np.ones(array.shape[1:], dtype=bool)
    for part in parts:
        finite &= np.isfinite(part.min(axis=0)) & np.isfinite(part.max(axis=0))
    suspicious = np.flatnonzero(~finite)
    if suspicious.size:
        column = suspicious[0]
        entries = array[:, column]
        bad = ~np.isfinite(entries)
        kind = "NaN" if np.isnan(entries[bad]).any() else "inf"
        raise ValueError(
            f"{name} contains {kind} (first in snapshot/column {int(column)}, "
            f"{int(bad.sum())} non-finite entries there); remove or repair the data"
        )


def check_tol(tol) -> float | None:
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a real number in [0, 1) or None; got {tol!r}")
    if not 0.0 <= float(tol) < 1.0:
        raise ValueError(f"tol must be in [0, 1); got {tol!r}")
    return float(tol)


def check_positive_int(value, name: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer; got {value!r}")
    if int(value) < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def check_nonnegative(value, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a non-negative number or None; got {value!r}")
    if not float(value) >= 0.0:
        raise ValueError(f"{name} must be a non-negative number or None; got {value!r}")
    return float(value)
