"""Thin QR of a growing trajectory, updated one snapshot at a time.

While training runs, snapshots arrive one per epoch.  Re-running DMD_RRR from scratch at
epoch m costs ``O(n m²)``; keeping ``F = [x_0 … x_m] = Q R`` up to date costs ``O(n m)`` per
new snapshot (two passes of classical Gram–Schmidt, "CGS2", which keeps ``Q`` orthonormal
to working precision), after which any window of the trajectory is available in
compressed form ``R[:, a:b]`` and an analysis only touches ``(m+1)×(m+1)`` matrices — the
idea behind LAPACK's ``xGEDMDQ``.  Modes are lifted to the original coordinates with ``Q``
only when asked for.
"""

from __future__ import annotations

import numpy as np

from keras_koopman.koopman._norms import magnitude_exponent, vector_norm
from keras_koopman.koopman._validation import check_finite

__all__ = ["IncrementalQR"]


class IncrementalQR:
    """``F = Q R`` for snapshots appended one at a time (float64).

    Parameters
    ----------
    n_features : int
        Length of each snapshot.
    capacity : int
        Initial number of columns reserved for ``Q`` (grows by doubling).

    Notes
    -----
    A snapshot that lies in the span of the earlier ones to within ``n·eps`` of its norm adds
    no basis vector, so ``R`` has ``r <= T`` rows for ``T`` snapshots.  Memory: ``8 n r``
    bytes for ``Q`` plus ``8 r T`` for ``R``.  Cost per append: ``≈ 8 n r`` flops, plus
    ``O(n)`` for the finiteness check and the exact power-of-two scaling that keeps the
    Gram–Schmidt sums and norms free of overflow and underflow at any magnitude (a snapshot
    of size ``1e-300`` or ``1e300`` is factored like one of size 1; ``R`` carries the size).
    """

    def __init__(self, n_features: int, capacity: int = 64) -> None:
        if int(n_features) < 1:
            raise ValueError(f"n_features must be a positive integer; got {n_features!r}")
        self.n_features = int(n_features)
        self._Q = np.empty((self.n_features, max(int(capacity), 1)), order="F")
        self._R = np.zeros((0, 0))
        self._columns = 0
        self._basis = 0

    def __len__(self) -> int:
        return self._columns

    @property
    def Q(self) -> np.ndarray:
        """Orthonormal basis, shape (n, r) (a view; do not modify)."""
        return self._Q[:, : self._basis]

    @property
    def R(self) -> np.ndarray:
        """Coefficients, shape (r, T): ``F[:, t] = Q @ R[:, t]``."""
        return self._R[: self._basis, : self._columns]

    def append(self, snapshot) -> None:
        """Add one snapshot (length ``n``); raises ``ValueError`` on NaN/inf."""
        x = np.asarray(snapshot, dtype=np.float64).reshape(-1)
        if x.shape[0] != self.n_features:
            raise ValueError(f"snapshot must have {self.n_features} entries; got {x.shape[0]}")
        check_finite(x[:, None], "snapshot")
        exponent = magnitude_exponent(x)
        unit = np.ldexp(x, -exponent)  # largest entry in [0.5, 1): exact
        r = self._basis
        Q = self._Q[:, :r]
        coeffs = np.zeros(r)
        residual = unit
        for _ in range(2):  # CGS2: the second pass restores orthogonality
            if r == 0:
                break
            h = Q.T @ residual
            residual = residual - Q @ h
            coeffs += h
        norm = vector_norm(residual)
        grows = norm > self.n_features * np.finfo(np.float64).eps * vector_norm(unit)
        with np.errstate(over="ignore"):
            column = np.ldexp(np.append(coeffs, norm), exponent)
        if not np.all(np.isfinite(column)):
            raise ValueError("snapshot: its norm exceeds the float64 range; rescale the "
                             "snapshots (e.g. divide them all by a power of two)")
        self._grow(r + int(grows), self._columns + 1)
        if grows:
            self._Q[:, r] = residual / norm
            self._R[r, self._columns] = column[r]
            self._basis += 1
        self._R[:r, self._columns] = column[:r]
        self._columns += 1

    def _grow(self, rows: int, cols: int) -> None:
        if rows > self._Q.shape[1]:
            bigger = np.empty((self.n_features, 2 * self._Q.shape[1]), order="F")
            bigger[:, : self._basis] = self._Q[:, : self._basis]
            self._Q = bigger
        if rows > self._R.shape[0] or cols > self._R.shape[1]:
            size = max(2 * self._R.shape[1], rows, cols, 8)
            bigger = np.zeros((size, size))
            bigger[: self._R.shape[0], : self._R.shape[1]] = self._R
            self._R = bigger
