"""DMD_RRR: Koopman eigenvalues, modes, data-driven residuals and amplitudes.

Implements the refined Rayleigh–Ritz data-driven modal decomposition of Drmač, Mezić and
Mohr (SIAM J. Sci. Comput. 40(4), 2018), the algorithm behind the Koopman mode
decompositions (KMD) of Mohr et al., *Applications of Koopman Mode Analysis to Neural
Networks* (the KMD of Eq. (2)–(4) there).  Notation: the data are snapshot pairs
``y_i ≈ A x_i`` stacked as columns of ``X, Y ∈ R^{n×m}``; ``A`` (the compression of the
Koopman operator onto the observables) is never formed, and no n×n matrix is ever built.

Costs below are for real data, ``n`` rows, ``p`` columns of the compressed data
(``p = m + 1`` for a trajectory, ``p = 2m`` for general pairs) and ``k`` the numerical rank.
The only work proportional to ``n`` is one Householder QR of the data (``≈ 2 n p²`` flops)
and applying its reflectors to lift the modes (``4 n p k``); everything else
works on ``p×m`` matrices — the approach of LAPACK's ``xGEDMDQ``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from keras_koopman.koopman._norms import (
    column_norms,
    max_abs,
    scale_by_power_of_two,
    vector_norm,
)
from keras_koopman.koopman._validation import (
    as_snapshot_matrix,
    check_nonnegative,
    check_positive_int,
    check_tol,
)

__all__ = ["KoopmanModes", "dmd_rrr", "default_tol"]

_EPS = np.finfo(np.float64).eps
_DENSE_REFINE_MAX = 8  # refine up to this many pairs by dense QR, more through a Schur form
# A nonzero snapshot whose largest entry is below 2^-960 times the data's largest entry would
# have subnormal (imprecise) entries after the power-of-two pre-scaling: such data are rejected.
_MIN_RELATIVE_EXPONENT = -960


@dataclass(frozen=True, eq=False)
class KoopmanModes:
    """Result of :func:`dmd_rrr`: Koopman (Ritz) eigenvalues, modes, residuals, amplitudes.

    The Koopman mode decomposition (paper, Eq. (2)) of the data is

    ``X[:, t] ≈ Σ_j modes[:, j] · eigenvalues[j] ** t · amplitudes[j]``

    with ``t = 0`` the first snapshot.  Pairs are sorted by decreasing ``importance``;
    for real data, complex-conjugate pairs are adjacent (positive imaginary part first)
    and have conjugate modes and amplitudes.

    Attributes
    ----------
    eigenvalues : ndarray, shape (k,), complex
        Ritz values λ_j (refined Rayleigh quotients when ``refine=True``).
    modes : ndarray, shape (n, k), complex
        Koopman modes (refined Ritz vectors) with unit 2-norm columns.
    residuals : ndarray, shape (k,), float
        Data-driven residuals ``‖A z_j − λ_j z_j‖₂`` of each unit pair, computed from the
        data without forming ``A``.  A residual is a backward error: ``(λ_j, z_j)`` is an
        exact eigenpair of ``A + E`` with ``‖E‖ = residual``.  Small residuals certify
        "consistent with a linear operator", not "the dynamics are linear".
    amplitudes : ndarray, shape (k,), complex
        Reconstruction coefficients α_j fitted by structured least squares over all
        snapshots (Jovanović–Schmid–Nichols normal equations in the k-dimensional POD basis).
    importance : ndarray, shape (k,), float
        ``|α_j| / max_i |α_i|`` over the full decomposition (the paper ranks modes by the
        modulus of the reconstruction coefficient; with unit-norm modes ``|α_j|`` is the norm
        of mode j's contribution to the first snapshot).  Kept unchanged by :meth:`select`,
        so thresholds mean the same before and after selection.
    rank : int
        Numerical rank k of the (scaled) snapshot matrix used for the Rayleigh–Ritz step.
    singular_values : ndarray, shape (m,), float
        Singular values of the column-scaled ``X`` (before truncation).
    t_end : int
        Time index of the last snapshot in the data (``m`` for a trajectory of ``m + 1``
        snapshots); :meth:`forecast` starts at ``t_end + 1``.
    real_data : bool
        True if the data were real; then :meth:`reconstruct` returns real arrays.
    fit_error : float
        Relative one-step error of the fitted rank-k operator ``A_k`` on the snapshot pairs,
        ``‖Y − A_k X‖_F / ‖Y‖_F`` (0 when ``Y = 0``), pairs with a zero ``x_i`` included (the
        model maps them to 0).  It complements the residuals, which see only the part of
        ``Y`` outside the span of ``X``: when the snapshots span their whole space (e.g. a
        2-dimensional state over 10 steps, or a Hankel matrix with more columns than rows)
        every residual is ~0 whatever the data, while ``fit_error`` shows noise (about its
        relative level) or pairs that no linear map explains (a zero snapshot followed by a
        nonzero one: O(0.1–1)).  Conversely it is 0 by construction when ``X`` has full
        column rank ``k = m`` (weights × few epochs), where the residuals carry the
        information.  Exact linear data give round-off (~1e-15); truncation by ``tol`` adds
        the truncated part.
    """

    eigenvalues: np.ndarray
    modes: np.ndarray
    residuals: np.ndarray
    amplitudes: np.ndarray
    importance: np.ndarray
    rank: int
    singular_values: np.ndarray
    t_end: int
    real_data: bool
    fit_error: float

    def __post_init__(self) -> None:
        for field in ("eigenvalues", "modes", "residuals", "amplitudes", "importance",
                      "singular_values"):
            getattr(self, field).setflags(write=False)

    def __len__(self) -> int:
        return int(self.eigenvalues.shape[0])

    def __repr__(self) -> str:
        return (f"KoopmanModes(n_modes={len(self)}, n_features={self.modes.shape[0]}, "
                f"rank={self.rank}, t_end={self.t_end})")

    def reconstruct(self, t) -> np.ndarray:
        """Snapshots of the decomposition at integer times ``t`` (Eq. (2) of the paper).

        Parameters
        ----------
        t : int or array_like of int
            Time indices (0 is the first snapshot).

        Returns
        -------
        ndarray
            Shape ``(n,)`` for a scalar ``t``, ``(n, len(t))`` otherwise; real if the data
            were real.  Cost: ``O(n k len(t))``.
        """
        times = np.asarray(t)
        if times.dtype.kind not in "iu":
            raise TypeError(f"t must be an integer or an array of integers; got dtype {times.dtype}")
        scalar = times.ndim == 0
        times = np.atleast_1d(times)
        if times.ndim != 1:
            raise ValueError(f"t must be a scalar or 1-D; got shape {times.shape}")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            powers = _powers(self.eigenvalues, times)
            coeffs = powers * self.amplitudes[:, None]
        if not np.all(np.isfinite(coeffs)):
            raise ValueError(
                "t: the reconstruction overflows at these times (a mode with |λ| > 1 grows "
                "without bound); select() the stable modes or use smaller t"
            )
        out = self.modes @ coeffs
        if self.real_data:
            out = out.real
        return out[:, 0] if scalar else out

    def forecast(self, steps: int) -> np.ndarray:
        """Continue the decomposition beyond the data: times ``t_end + 1 … t_end + steps``.

        Returns an array of shape ``(n, steps)``.  Cost: ``O(n k steps)``.
        """
        steps = check_positive_int(steps, "steps")
        return self.reconstruct(np.arange(self.t_end + 1, self.t_end + 1 + steps))

    def select(self, max_residual: float | None = None,
               min_importance: float | None = None) -> "KoopmanModes":
        """Keep only the pairs with ``residual <= max_residual`` and ``importance >= min_importance``.

        Residual selection is how DMD_RRR discards spurious Ritz pairs (Drmač–Mezić–Mohr 2018,
        §3 of ``docs/koopman.md``).  Amplitudes and importances are kept as fitted on the full
        decomposition.  Returns a new :class:`KoopmanModes`.
        """
        max_residual = check_nonnegative(max_residual, "max_residual")
        min_importance = check_nonnegative(min_importance, "min_importance")
        keep = np.ones(len(self), dtype=bool)
        if max_residual is not None:
            keep &= self.residuals <= max_residual
        if min_importance is not None:
            keep &= self.importance >= min_importance
        return self._subset(keep)

    def _subset(self, keep: np.ndarray) -> "KoopmanModes":
        return dataclasses.replace(
            self,
            eigenvalues=self.eigenvalues[keep].copy(),
            modes=self.modes[:, keep].copy(),
            residuals=self.residuals[keep].copy(),
            amplitudes=self.amplitudes[keep].copy(),
            importance=self.importance[keep].copy(),
        )


def default_tol(n_rows: int, dtype: np.dtype) -> float:
    """Default relative truncation tolerance of :func:`dmd_rrr`.

    ``max(n_rows · eps64, 10 · eps(dtype))``: Drmač's recommended ``n·eps`` for float64 data,
    raised to the rounding level of lower-precision input (``≈1.2e-6`` for float32 weights),
    below which singular values of the scaled snapshots are noise.
    """
    dtype = np.dtype(dtype)
    floor = 10.0 * np.finfo(dtype).eps if dtype.kind in "fc" else 0.0
    return float(max(n_rows * _EPS, floor))


def dmd_rrr(X, Y=None, *, tol: float | None = None, rank: int | None = None,
            scale: bool = True, refine: bool | float = True) -> KoopmanModes:
    """Refined Rayleigh–Ritz DMD (DMD_RRR) of snapshot data.

    Parameters
    ----------
    X : array_like, shape (n, m)
        Snapshots as columns.  With ``Y=None`` they form one trajectory and the pairs are
        ``X[:, :-1] -> X[:, 1:]``.  Any real or complex dtype; computations run in float64
        (complex128).  ``n`` may be much larger than ``m`` (weights × epochs).
    Y : array_like, shape (n, m), optional
        Images of the columns of ``X`` under the dynamics (``Y[:, i] ≈ A X[:, i]``).
    tol : float in [0, 1), optional
        Relative truncation: keep singular values ``σ_i > tol · σ_1`` of the column-scaled
        ``X`` (LAPACK ``NRNK = -1``).  Default :func:`default_tol`.
    rank : int, optional
        Use at most this many singular vectors (LAPACK ``NRNK = rank``), after ``tol``.
    scale : bool
        Scale the columns of ``X`` (and ``Y`` by the same factors) to unit norm before the
        SVD (step 1, ``X₁ = X D_x⁻¹``).  For data that an exact linear map explains this does
        not change ``A``; for noisy data it makes the least-squares fit a weighted one in which
        every snapshot pair counts equally whatever its size (more accurate for Hankel
        matrices of decaying loss curves, less accurate for state trajectories whose snapshots
        have comparable sizes: ``docs/koopman.md``, "Column scaling").
    refine : bool or float
        ``True``: replace each Ritz vector by the refined Ritz vector that minimises the
        data-driven residual for its Ritz value, and the value by the refined Rayleigh
        quotient (steps 9–14); residuals never increase.  A float ``q`` in (0, 1]: refine only
        the pairs whose importance before refinement is at least ``q`` (refinement costs
        ``O(k³)`` per pair, so this bounds the cost for large ``k``).  ``False``: plain Ritz
        pairs.

    Returns
    -------
    KoopmanModes

    Notes
    -----
    Steps and costs (``p``: compressed width, ``k``: rank):

    0. Magnitude: the data are multiplied by the power of two ``2^-e`` that brings the
       largest entry into ``[0.5, 1)`` (exact; one pass, ``O(np)``), so that no step can
       overflow or underflow because of the data's overall size; amplitudes (and, without
       scaling, singular values) are multiplied back by ``2^e`` at the end.
       Householder QR of the data, ``[x_0 … x_m] = Q R`` (``p = m + 1``) or ``[X Y] = Q R``
       (``p = 2m``): ``≈ 2np²`` flops; ``Q`` stays as reflectors and all later steps use the
       p×p ``R`` (norm-preserving).
    1. Column scaling ``X₁ = X D⁻¹``, ``D = diag(‖X(:,i)‖₂)`` with overflow/underflow-free
       norms (each column scaled by a power of two before summing squares, as LAPACK's
       ``dnrm2`` scales): ``O(pm)``.
    2. SVD ``X₁ = U Σ Vᴴ``: ``O(pm²)``; rank ``k`` by ``tol``/``rank``.
    3. ``B = A U_k = Y₁ V_k Σ_k⁻¹`` (data-driven, no rank assumption): ``O(pmk)``.
    4. Rayleigh quotient ``S = U_kᴴ B`` and ``R₂₂ = qr(B − U_k S)``: ``O(pk²)``.
    5. Ritz pairs ``eig(S)``: ``O(k³)``.
    6. Refinement: ``σ_min`` of ``[S − λI; R₂₂]`` for each λ, via one complex Schur form
       and one triangular–pentagonal QR per λ (``(2/3)k³`` complex each, ``O(k⁴)`` in all);
       conjugate pairs of real data are refined once.
    7. Residuals ``‖[(S − λI)w; R₂₂w]‖``: ``O(k²)`` per pair.
    8. Amplitudes: structured least squares in k dimensions, ``O(k² m + k³)``; the fit
       error ``‖Y − A_k X‖_F / ‖Y‖_F`` from ``B`` and ``U_kᴴ X``: ``O(pmk)``.
    9. Modes ``Q U_k W`` by applying the reflectors: ``4npk`` flops (real data: ``k`` real columns).

    Memory: one float64 copy of the data (overwritten by the reflectors), the modes, and
    ``O(p²)`` small matrices; never an n×n matrix.

    Raises
    ------
    TypeError
        Non-numeric ``X``/``Y`` or a badly typed option.
    ValueError
        Non-finite data, not 2-D, too few snapshots, shape mismatch, all-zero data (rank 0);
        nonzero snapshots more than ``2^960`` (≈ 290 orders of magnitude) smaller than the
        largest, which float64 cannot hold accurately beside it; results that overflow float64
        (a snapshot norm above ``1.8e308``, or consecutive snapshots whose size ratio makes the
        Rayleigh quotient overflow).  Every other finite input gives finite eigenvalues,
        residuals, amplitudes and importances, and ``dmd_rrr(s * X)`` has the eigenvalues,
        residuals and importances of ``dmd_rrr(X)`` for every ``s`` with ``s * X`` finite.
    """
    tol = check_tol(tol)
    rank = check_positive_int(rank, "rank", allow_none=True)
    refine = _check_refine(refine)
    trajectory = Y is None
    X = as_snapshot_matrix(X, "X", min_columns=2 if trajectory else 1)
    if not trajectory:
        Y = as_snapshot_matrix(Y, "Y")
        if Y.shape != X.shape:
            raise ValueError(f"Y must have the same shape as X {X.shape}; got {Y.shape}")
    real = X.dtype.kind != "c" and (trajectory or Y.dtype.kind != "c")
    work_dtype = np.float64 if real else np.complex128
    n = X.shape[0]
    if tol is None:
        in_dtype = X.dtype if trajectory else np.result_type(X.dtype, Y.dtype)
        tol = default_tol(n, in_dtype if in_dtype.kind in "fc" else np.float64)

    if trajectory:
        data = X
        m = X.shape[1] - 1
    else:
        data = np.concatenate([X, Y], axis=1)
        m = X.shape[1]
    exponent = _magnitude(data, "X" if trajectory else "X, Y")
    Q, R = _compress(data, work_dtype, exponent)
    del data
    if trajectory:
        Xc, Yc, Fc, t_end = R[:, :m], R[:, 1:], R, m
    else:
        Xc, Yc, Fc, t_end = R[:, :m], R[:, m:], R[:, :m], m

    core = _rayleigh_ritz(Xc, Yc, tol=tol, rank=rank, scale=scale, real=real)
    G = core.Uk.conj().T @ Fc
    fit_error = _fit_error(Yc, core.B, G[:, :m])  # G[:, :m] = U_kᴴ X in both layouts
    W, eigenvalues, residuals = core.W, core.eigenvalues, core.residuals
    if refine is False:
        amplitudes, importance = _amplitudes(G, W, eigenvalues, real, core.pair_first)
    else:
        chosen = np.ones(len(eigenvalues), dtype=bool)
        if refine is not True:  # only pairs important before refinement
            chosen = _amplitudes(G, W, eigenvalues, real, core.pair_first)[1] >= refine
        eigenvalues, W, residuals = _refine(core, chosen, real)
        amplitudes, importance = _amplitudes(G, W, eigenvalues, real, core.pair_first)
    modes = _lift(Q, core.Uk @ W, real, core.pair_first)

    # undo the power-of-two pre-scaling (exact): amplitudes and, without column scaling,
    # singular values carry the data's magnitude; eigenvalues, residuals and modes do not
    with np.errstate(over="ignore", under="ignore"):  # overflow is reported just below
        amplitudes = scale_by_power_of_two(amplitudes, exponent)
        singular_values = (core.singular_values if scale
                           else np.ldexp(core.singular_values, exponent))
    _check_outputs(eigenvalues=eigenvalues, residuals=residuals, modes=modes,
                   importance=importance, amplitudes=amplitudes,
                   singular_values=singular_values, fit_error=np.float64(fit_error))
    order = np.lexsort((-eigenvalues.imag, -importance))
    return KoopmanModes(
        eigenvalues=eigenvalues[order],
        modes=np.ascontiguousarray(modes[:, order]),
        residuals=residuals[order],
        amplitudes=amplitudes[order],
        importance=importance[order],
        rank=int(core.Uk.shape[1]),
        singular_values=singular_values,
        t_end=int(t_end),
        real_data=bool(real),
        fit_error=fit_error,
    )


def _magnitude(data: np.ndarray, name: str) -> int:
    """Power-of-two exponent of the data's largest entry (checking the smallest columns).

    Scaling by ``2^-exponent`` (exact) brings the largest entry into ``[0.5, 1)``, so that no
    later sum of squares, product or norm can overflow or underflow on account of the data's
    overall size: ``dmd_rrr(s·X)`` then computes what ``dmd_rrr(X)`` does.  Nonzero columns
    more than ``2^960`` (≈ 290 orders of magnitude) below the largest cannot be held accurately
    next to it in float64 and raise ``ValueError``.  Cost: two passes over the data.
    """
    largest = max_abs(data)
    columns = np.frexp(largest)[1]
    nonzero = np.flatnonzero(largest > 0)
    if nonzero.size == 0:
        raise ValueError(f"{name} has rank 0: every snapshot is zero, there is nothing to "
                         "decompose")
    exponent = int(columns[nonzero].max())
    relative = columns - exponent
    tiny = nonzero[relative[nonzero] < _MIN_RELATIVE_EXPONENT]
    if tiny.size:
        raise ValueError(
            f"{name}: snapshot norms span more than float64 can hold together (column "
            f"{int(tiny[0])} is about 2^{int(relative[tiny[0]])} times the largest snapshot, "
            f"below 2^{_MIN_RELATIVE_EXPONENT}); drop or rescale the tiny snapshots")
    return exponent


def _check_outputs(**fields: np.ndarray) -> None:
    """Raise ``ValueError`` if a result overflowed; every input that reaches here is finite,
    so a non-finite result means the data's magnitudes exceed float64 (e.g. one snapshot
    ``2^900`` times its predecessor, or a norm above the float64 maximum)."""
    for name, value in fields.items():
        if not np.all(np.isfinite(value)):
            raise ValueError(
                f"X: the decomposition's {name} overflow float64 (the snapshots' norms, or "
                "the ratios between consecutive snapshots, are too large); rescale the data "
                "or drop the outlying snapshots")


class _Basis:
    """Orthonormal basis ``Q`` of the data's column space, kept as Householder reflectors.

    ``Q`` is never formed: :meth:`apply` multiplies by it with LAPACK ``xORMQR``/``xUNMQR``
    (``4 n p c`` flops for ``c`` columns), which is cheaper than forming ``Q`` (``2np²``)
    whenever the number of modes is below ``p/2``.
    """

    def __init__(self, reflectors: np.ndarray, tau: np.ndarray) -> None:
        self.reflectors = reflectors
        self.tau = tau

    def apply(self, C: np.ndarray) -> np.ndarray:
        n, p = self.reflectors.shape
        out = np.zeros((n, C.shape[1]), dtype=self.reflectors.dtype, order="F")
        out[: C.shape[0]] = C
        routine = sla.lapack.dormqr if out.dtype == np.float64 else sla.lapack.zunmqr
        # workspace query: too small a workspace silently selects the unblocked (3x slower) path
        _, work, _ = routine("L", "N", self.reflectors, self.tau, out, -1)
        lwork = int(work[0].real)
        result, _, info = routine("L", "N", self.reflectors, self.tau, out, lwork, overwrite_c=1)
        if info != 0:
            raise RuntimeError(f"LAPACK ormqr failed with info={info}")
        return result


def _check_refine(refine) -> bool | float:
    if isinstance(refine, (bool, np.bool_)):
        return bool(refine)
    if isinstance(refine, (int, float)) and 0 < float(refine) <= 1:
        return float(refine)
    raise ValueError(f"refine must be True, False or an importance threshold in (0, 1]; got {refine!r}")


def _compress(data: np.ndarray, dtype, exponent: int) -> tuple[_Basis | None, np.ndarray]:
    """Householder QR ``data · 2^-exponent = Q R`` when it pays (n > p); else
    ``(None, data · 2^-exponent)``, in ``dtype``.

    The working copy (Fortran order, float64/complex128) is scaled in place by the power of
    two (exact; one pass) and then overwritten by the reflectors.  Cost ``≈ 2np²`` flops
    (``xGEQRF``, whose Householder vectors use LAPACK's scaled norms).
    """
    n, p = data.shape
    work = np.array(data, dtype=dtype, order="F", copy=True)
    shift = -exponent
    if not -1021 <= shift <= 1023:  # 2^shift itself is not a normal float64: two steps
        work *= np.ldexp(1.0, shift // 2)
        shift -= shift // 2
    work *= np.ldexp(1.0, shift)
    if n <= p:
        return None, work
    (reflectors, tau), R = sla.qr(work, mode="raw", overwrite_a=True, check_finite=False)
    return _Basis(reflectors, tau), np.triu(R)


@dataclass(frozen=True, eq=False)
class _Core:
    Uk: np.ndarray            # (p, k) orthonormal POD basis (compressed coordinates)
    S: np.ndarray             # (k, k) Rayleigh quotient U_kᴴ A U_k
    R22: np.ndarray           # (≤k, k) triangular factor of the part of A U_k outside span U_k
    W: np.ndarray             # (k, k) unit Ritz vectors in the POD basis
    eigenvalues: np.ndarray   # (k,)
    residuals: np.ndarray     # (k,)
    singular_values: np.ndarray
    pair_first: np.ndarray    # bool (k,): first member of a conjugate pair (real data)
    B: np.ndarray             # (p, k) A U_k, so that A_k x = B U_kᴴ x


def _rayleigh_ritz(Xc, Yc, *, tol, rank, scale, real) -> _Core:
    """DMD_RRR steps 1–8 on the compressed ``p×m`` data (costs in :func:`dmd_rrr`).

    Column norms (step 1) are computed without overflow or underflow
    (:func:`~keras_koopman.koopman._norms.column_norms`); a Rayleigh quotient that overflows
    (``‖y_i‖/‖x_i‖`` beyond float64) raises ``ValueError`` before any LAPACK call sees it.
    """
    norms = column_norms(Xc)
    nonzero = norms > 0
    if not nonzero.any():
        raise ValueError("X has rank 0: every snapshot is zero, there is nothing to decompose")
    weights = norms[nonzero] if scale else np.ones(int(nonzero.sum()))
    X1 = Xc[:, nonzero] / weights
    Y1 = Yc[:, nonzero] / weights
    U, sigma, Vh = sla.svd(X1, full_matrices=False, lapack_driver="gesvd", check_finite=False)
    k = int(np.count_nonzero(sigma > tol * sigma[0]))
    if rank is not None:
        k = min(k, rank)
    if k == 0:
        raise ValueError("X has numerical rank 0 at this tol; lower tol")
    Uk = U[:, :k]
    B = Y1 @ (Vh[:k].conj().T / sigma[:k])
    S = Uk.conj().T @ B
    E = B - Uk @ S
    correction = Uk.conj().T @ E          # one re-orthogonalisation pass
    S = S + correction
    E = E - Uk @ correction
    _check_outputs(**{"Rayleigh quotient": S, "residual block": E})
    R22 = sla.qr(E, mode="r", check_finite=False)[0][: min(E.shape)]
    eigenvalues, W = sla.eig(S, check_finite=False)
    pair_first = np.zeros(k, dtype=bool)
    if real:
        pair_first = eigenvalues.imag > 0
    return _Core(Uk=Uk, S=S, R22=R22, W=W, eigenvalues=eigenvalues,
                 residuals=_residuals(S, R22, eigenvalues, W),
                 singular_values=sigma, pair_first=pair_first, B=B)


def _fit_error(Yc, B, UkX) -> float:
    """``‖Y − A_k X‖_F / ‖Y‖_F`` with ``A_k X = B (U_kᴴ X)`` (``B = A U_k``), every pair
    included (a zero ``x_i`` maps to 0); overflow-free norms.  Cost ``O(pmk)``."""
    size = vector_norm(column_norms(Yc))
    misfit = vector_norm(column_norms(Yc - B @ UkX))
    return float(misfit / size) if size > 0 else 0.0


def _residuals(S, R22, eigenvalues, W) -> np.ndarray:
    """``‖[(S − λ_j I) w_j; R₂₂ w_j]‖`` for every column (``‖A z − λ z‖`` of the unit pair)."""
    top = S @ W - W * eigenvalues
    return np.hypot(column_norms(top), column_norms(R22 @ W))


def _refine(core: _Core, chosen: np.ndarray, real: bool):
    """Refined Ritz vectors and Rayleigh quotients (DMD_RRR steps 9–14).

    For each λ the refined vector is the right singular vector of ``σ_min`` of
    ``M(λ) = [S − λI; R₂₂]``, found by inverse iteration on the triangular factor of
    ``M(λ)``, started from the unrefined Ritz vector.  For many pairs the factor comes from
    the complex Schur form ``S = Q_s T Q_sᴴ`` and ``R₂₂ Q_s = Q_g R_g``: ``[T − λI; R_g]`` is two
    stacked triangles and one LAPACK ``ztpqrt`` factors it (``(2/3)k³`` per pair after a
    ``25k³`` Schur form); for a few pairs a dense QR of ``M(λ)`` (``≈3.3k³`` each) is cheaper.
    A refined vector is accepted only if it does not increase the residual.  Conjugate
    pairs of real data: refine the first, conjugate.  Only the pairs in ``chosen`` are refined.
    """
    S, R22, eigenvalues, W, residuals = core.S, core.R22, core.eigenvalues, core.W, core.residuals
    pair_first = core.pair_first
    k = S.shape[0]
    todo = np.flatnonzero(chosen & (eigenvalues.imag >= 0)) if real else np.flatnonzero(chosen)
    W_new = np.array(W, dtype=np.complex128)
    lam_new = np.array(eigenvalues, dtype=np.complex128)
    res_new = residuals.copy()
    if todo.size == 0:
        return lam_new, W_new, res_new
    diag = np.arange(k)
    if todo.size > _DENSE_REFINE_MAX:
        T, Qs = sla.schur(S.astype(np.complex128), output="complex", check_finite=False)
        Rg = np.zeros((k, k), dtype=np.complex128)
        factor = sla.qr(R22 @ Qs, mode="r", check_finite=False)[0]
        Rg[: min(factor.shape[0], k)] = factor[:k]

        def triangular_factor(lam):
            A = T.copy()
            A[diag, diag] -= lam
            return np.triu(sla.lapack.ztpqrt(k, min(k, 32), A, Rg.copy())[0])
    else:
        Qs = None
        stacked = np.concatenate([S, R22], axis=0).astype(np.complex128)

        def triangular_factor(lam):
            M = stacked.copy()
            M[diag, diag] -= lam
            return sla.qr(M, mode="r", check_finite=False)[0][:k]

    for j in todo:
        Rj = triangular_factor(eigenvalues[j])
        size = np.abs(Rj).max()
        if size > 0:  # inverse iteration is scale-free: work with entries of size <= 1
            Rj = Rj / size
        tiny = np.abs(Rj[diag, diag]) < _EPS
        Rj[diag[tiny], diag[tiny]] = _EPS
        x = W[:, j] if Qs is None else Qs.conj().T @ W[:, j]
        # a nearly singular factor can overflow x: that ends the iteration (pair unrefined)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            converged = _inverse_iteration(Rj, x)
        if converged is not None:
            w = converged if Qs is None else Qs @ converged
            on_axis = real and eigenvalues[j].imag == 0
            if on_axis:
                w = _real_vector(w)
            rho = np.vdot(w, S @ w)
            if on_axis:
                rho = rho.real
            r = _residuals(S, R22, np.array([rho]), w[:, None])[0]
            if r <= residuals[j]:
                W_new[:, j], lam_new[j], res_new[j] = w, rho, r
        if real and pair_first[j]:
            W_new[:, j + 1] = W_new[:, j].conj()
            lam_new[j + 1] = np.conj(lam_new[j])
            res_new[j + 1] = res_new[j]
    return lam_new, W_new, res_new


def _inverse_iteration(R: np.ndarray, x: np.ndarray, steps: int = 3) -> np.ndarray | None:
    """``steps`` passes of ``x ← (RᴴR)⁻¹x / ‖·‖`` (two triangular solves, ``2k²`` each): the
    right singular vector of ``σ_min(R)``; ``None`` if ``x`` overflows or vanishes."""
    for _ in range(steps):
        y = sla.solve_triangular(R, x, trans="C", check_finite=False)
        x = sla.solve_triangular(R, y, check_finite=False)
        norm = vector_norm(x)
        if not np.isfinite(norm) or norm == 0:
            return None
        x = x / norm
    return x


def _real_vector(w: np.ndarray) -> np.ndarray:
    """Rotate a (numerically) real vector's arbitrary phase away and return its real part."""
    phase = w[np.argmax(np.abs(w))]
    real = (w * (np.abs(phase) / phase)).real
    return real / np.linalg.norm(real)


def _powers(eigenvalues: np.ndarray, times: np.ndarray) -> np.ndarray:
    """``eigenvalues[:, None] ** times`` with ``0 ** 0 = 1``."""
    return np.power(eigenvalues[:, None].astype(np.complex128), times[None, :])


def _amplitudes(G: np.ndarray, W: np.ndarray, eigenvalues: np.ndarray, real: bool,
                pair_first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Structured least squares ``min_α ‖G − W diag(α) V_λ‖_F`` (amplitudes) and importances.

    ``G`` (k×T) holds the snapshots in the POD basis, ``V_λ(j, t) = λ_jᵗ``.  Rows of the
    Vandermonde matrix are scaled by ``max(1, |λ_j|^{T-1})`` (computed through logarithms,
    so growing modes cannot overflow), and the normal equations
    ``P = (WᴴW) ∘ conj(V Vᴴ)``, ``q_j = Σ_t conj(V_jt) (WᴴG)_jt`` are solved by Cholesky,
    or by SVD-based least squares when they are ill-conditioned.  For real data the amplitudes of a conjugate pair are made exact
    conjugates and those of real eigenvalues real.  Cost ``O(k²T + k³)``.

    Returns ``(α, importance)`` with ``importance_j = |α_j| / max_i |α_i|`` evaluated from
    ``log|α_j|``, so that it stays right (and one pair has importance 1) when a fast-growing
    mode's ``α_j`` underflows.
    """
    k, T = W.shape[1], G.shape[1]
    times = np.arange(T)
    lam = eigenvalues.astype(np.complex128)
    zero = lam == 0
    with np.errstate(divide="ignore"):
        log_lam = np.log(np.where(zero, 1.0, lam))
    log_scale = np.maximum(0.0, (T - 1) * log_lam.real)
    V = np.exp(log_lam[:, None] * times[None, :] - log_scale[:, None])
    V[zero] = 0.0
    V[zero, 0] = 1.0
    P = (W.conj().T @ W) * (V.conj() @ V.T)
    q = np.sum(V.conj() * (W.conj().T @ G), axis=1)
    beta = _solve_hermitian(P, q)
    if real:  # conjugate pairs share log_scale, so symmetrising β symmetrises α
        first = np.flatnonzero(pair_first)
        mean = 0.5 * (beta[first] + np.conj(beta[first + 1]))
        beta[first], beta[first + 1] = mean, np.conj(mean)
        on_axis = eigenvalues.imag == 0
        beta[on_axis] = beta[on_axis].real  # real eigenvalue of real data: real amplitude
    with np.errstate(divide="ignore"):
        log_magnitude = np.log(np.abs(beta)) - log_scale
    top = log_magnitude.max() if k else -np.inf
    if np.isfinite(top):
        importance = np.exp(log_magnitude - top)
    else:
        importance = np.zeros(k)
    with np.errstate(under="ignore"):
        return beta * np.exp(-log_scale), importance


def _solve_hermitian(P: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Solve the positive semi-definite normal equations: Cholesky (``k³/3``) when ``P`` is
    well conditioned, SVD-based least squares when it is (nearly) singular."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", sla.LinAlgWarning)
        try:
            return sla.solve(P, q, assume_a="pos", check_finite=False)
        except (sla.LinAlgError, sla.LinAlgWarning, ValueError):
            pass
    return sla.lstsq(P, q, check_finite=False, lapack_driver="gelsd")[0]


def _lift(Q, Zc, real, pair_first) -> np.ndarray:
    """Modes in the original coordinates, ``Q Zc``, in real arithmetic for real data (``4npk`` flops).

    For real data only one member of each conjugate pair is lifted and the other conjugated.
    """
    if Q is None:
        return Zc.astype(np.complex128)
    if not real:
        return Q.apply(Zc)
    k = Zc.shape[1]
    second = np.zeros(k, dtype=bool)
    second[np.flatnonzero(pair_first) + 1] = True
    own = np.flatnonzero(~second)
    complex_cols = np.flatnonzero(pair_first[own])
    blocks = np.concatenate([Zc[:, own].real, Zc[:, own[complex_cols]].imag], axis=1)
    lifted = Q.apply(blocks)
    modes = np.empty((lifted.shape[0], k), dtype=np.complex128)
    modes[:, own] = lifted[:, : own.size]
    modes[:, own[complex_cols]] += 1j * lifted[:, own.size:]
    pairs = np.flatnonzero(pair_first)
    modes[:, pairs + 1] = modes[:, pairs].conj()
    return modes
