"""Seeded sparse random projection of weight vectors (``KoopmanMonitor(max_dim=...)``).

A model with 10⁷ weights trained for 10³ epochs has a 40 GB trajectory.  DMD only needs the
trajectory's span, which has dimension at most the number of snapshots, so a linear map
``P: R^n → R^d`` that is injective on that span leaves the DMD eigenvalues unchanged in exact
arithmetic (``P F_{t+1} = (P A P⁺) P F_t`` on the span); it changes residual norms and the
conditioning a little.  The sketch is a sparse sign embedding (each input coordinate is sent,
with a random sign, to ``nnz`` random output coordinates, scaled by ``1/√nnz``), which costs
``O(nnz · n)`` per snapshot and stores ``5·nnz·n`` bytes of hashing state, instead of a dense
``d × n`` Gaussian matrix.
"""

from __future__ import annotations

import numpy as np

from keras_koopman.koopman._validation import check_positive_int

__all__ = ["SparseSignSketch"]

_CHUNK = 1 << 20


class SparseSignSketch:
    """Linear map ``x ↦ P x`` from ``n_features`` to ``dim`` coordinates.

    Parameters
    ----------
    n_features : int
        Input length n.
    dim : int
        Output length d (``d < n``).
    seed : int
        Seed of the hashing; the same seed gives the same ``P``.
    nnz : int
        Non-zeros per input coordinate (1 is CountSketch).
    """

    def __init__(self, n_features: int, dim: int, *, seed: int = 0, nnz: int = 2) -> None:
        self.n_features = check_positive_int(n_features, "n_features")
        self.dim = check_positive_int(dim, "dim")
        self.nnz = check_positive_int(nnz, "nnz")
        if self.dim >= self.n_features:
            raise ValueError(f"dim must be smaller than n_features={n_features}; got {dim}")
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        self._rows = rng.integers(0, self.dim, size=(self.nnz, self.n_features), dtype=np.int32)
        self._signs = rng.choice(np.array([-1, 1], dtype=np.int8), size=(self.nnz, self.n_features))

    def __call__(self, x) -> np.ndarray:
        """Project one vector of length ``n_features``; returns float64 of length ``dim``."""
        x = np.asarray(x).reshape(-1)
        if x.shape[0] != self.n_features:
            raise ValueError(f"x must have {self.n_features} entries; got {x.shape[0]}")
        out = np.zeros(self.dim)
        for start in range(0, self.n_features, _CHUNK):
            part = x[start:start + _CHUNK].astype(np.float64)
            for j in range(self.nnz):
                out += np.bincount(self._rows[j, start:start + _CHUNK],
                                   weights=part * self._signs[j, start:start + _CHUNK],
                                   minlength=self.dim)
        return out / np.sqrt(self.nnz)

    def get_config(self) -> dict:
        return {"n_features": self.n_features, "dim": self.dim, "seed": self.seed, "nnz": self.nnz}
