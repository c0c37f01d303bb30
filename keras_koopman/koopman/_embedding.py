"""Delay (Hankel) embedding of scalar or low-dimensional series, e.g. the loss curve.

A scalar observable ``f(w_t)`` (the training loss) does not span a Koopman-invariant
subspace by itself; stacking ``L`` consecutive values, ``h_t = (f_t, …, f_{t+L−1})``, turns a
sum of up to ``L`` exponentials ``Σ_j c_j λ_jᵗ`` into a linear recurrence ``h_{t+1} = A h_t``
whose eigenvalues are the λ_j (Hankel DMD, Arbabi & Mezić 2017; the paper's loss-observable
spectra in Figure 2 are of this kind).
"""

from __future__ import annotations

import numpy as np

from keras_koopman.koopman._dmd import KoopmanModes, dmd_rrr
from keras_koopman.koopman._validation import check_finite, check_positive_int

__all__ = ["delay_embed", "dmd_rrr_series"]


def delay_embed(series, delays: int) -> np.ndarray:
    """Hankel (time-delay) matrix of a series.

    Parameters
    ----------
    series : array_like, shape (T,) or (T, d)
        Values over time (time along axis 0).
    delays : int
        Embedding depth L (number of consecutive values per column), ``1 <= L <= T``.

    Returns
    -------
    ndarray, shape (L·d, T − L + 1), float64 (complex128 for complex input)
        Column ``t`` is ``(f_t, f_{t+1}, …, f_{t+L−1})`` with the d coordinates of each time
        kept together (row ``i·d + c`` holds coordinate ``c`` at lag ``i``).  Cost ``O(L d T)``.

    Notes
    -----
    For a meaningful DMD residual the fit should be overdetermined: choose ``L`` so that
    the Hankel matrix has fewer rows than pairs, e.g. ``L ≈ T/3``; with a square full-rank
    Hankel matrix every Ritz pair has residual ~0 whatever the dynamics.
    """
    values = np.asarray(series)
    if values.dtype.kind not in "iufc":
        raise TypeError(f"series must hold real or complex numbers; got dtype {values.dtype}")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"series must be 1-D (T,) or 2-D (T, d); got shape {np.shape(series)}")
    delays = check_positive_int(delays, "delays")
    T = values.shape[0]
    if delays > T:
        raise ValueError(f"delays must be at most the series length {T}; got {delays}")
    check_finite(values.T, "series")
    dtype = np.complex128 if values.dtype.kind == "c" else np.float64
    values = values.astype(dtype, copy=False)
    windows = np.lib.stride_tricks.sliding_window_view(values, delays, axis=0)
    # windows: (T − L + 1, d, L) -> rows ordered lag-major, then coordinate
    return np.ascontiguousarray(windows.transpose(2, 1, 0).reshape(delays * values.shape[1], -1))


def dmd_rrr_series(series, delays: int, **kwargs) -> KoopmanModes:
    """:func:`dmd_rrr` of the delay embedding of ``series`` (Hankel DMD).

    ``kwargs`` go to :func:`dmd_rrr` (``tol``, ``rank``, ``scale``, ``refine``).  The modes
    live in the embedded space; the first ``d`` rows of ``reconstruct(t)`` are the series
    itself at time ``t``.
    """
    return dmd_rrr(delay_embed(series, delays), **kwargs)
