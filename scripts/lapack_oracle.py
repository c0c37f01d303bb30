"""LAPACK's own DMD drivers ``DGEDMD`` / ``DGEDMDQ`` through ctypes (a test and benchmark oracle).

LAPACK ≥ 3.11 ships Drmač's implementation of the DMD of Drmač, Mezić and Mohr (SIAM J. Sci.
Comput. 40(4), 2018) — the Rayleigh–Ritz extraction with data-driven residuals on which
:func:`keras_koopman.dmd_rrr` builds (it adds the refinement of the Ritz vectors).  SciPy does not
wrap these drivers, so this script-side module (used by ``scripts/bench_dmd.py`` and
``tests/test_lapack_oracle.py``, not part of the installed package) calls the Fortran symbols ``scipy_dgedmd_`` and
``scipy_dgedmdq_`` of the OpenBLAS shipped by the PyPI package ``scipy-openblas32`` (32-bit
integers, ``scipy_`` symbol prefix).

Binding details:

* the Fortran interface, not LAPACKE (``LAPACKE_dgedmd``'s prototype was wrong in LAPACK 3.11);
  every argument by reference, arrays in column-major (Fortran) order, and the hidden ``size_t``
  lengths of the CHARACTER arguments appended after the last argument;
* a workspace query (``LWORK = LIWORK = -1``) first, then the call with the optimal workspace
  (the minimal one if the optimal length does not fit a 32-bit integer);
* the shared library is opened with ``RTLD_LOCAL`` from its path and the ``scipy_openblas32``
  package is *not* imported: importing it loads the library with ``RTLD_GLOBAL``, and its
  ``scipy_*`` symbols would then take precedence over those of the OpenBLAS bundled inside SciPy's
  own wheel;
* non-finite input is rejected before the call (some LAPACK versions call XERBLA on NaN without
  returning; Reference-LAPACK #1312); a negative ``INFO`` becomes a ``ValueError`` naming the
  Fortran argument, ``INFO = 4`` a warning, other positive values a :class:`LapackError`.

Each call runs in the library's own OpenBLAS thread pool; ``threadpoolctl`` sees it as
``libscipy_openblas`` and ``threadpool_limits`` limits it like any other BLAS.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import pathlib
import warnings
from typing import NamedTuple

import numpy as np

from keras_koopman.koopman._validation import as_snapshot_matrix, check_tol

__all__ = ["LapackDMD", "LapackError", "LapackUnavailableError", "available", "dgedmd",
           "dgedmdq", "library_path"]

_EPS = np.finfo(np.float64).eps
_INT32_MAX = np.iinfo(np.int32).max

_DGEDMD_ARGS = ("JOBS", "JOBZ", "JOBR", "JOBF", "WHTSVD", "M", "N", "X", "LDX", "Y", "LDY",
                "NRNK", "TOL", "K", "REIG", "IMEIG", "Z", "LDZ", "RES", "B", "LDB", "W", "LDW",
                "S", "LDS", "WORK", "LWORK", "IWORK", "LIWORK", "INFO")
_DGEDMDQ_ARGS = ("JOBS", "JOBZ", "JOBR", "JOBQ", "JOBT", "JOBF", "WHTSVD", "M", "N", "F", "LDF",
                 "X", "LDX", "Y", "LDY", "NRNK", "TOL", "K", "REIG", "IMEIG", "Z", "LDZ", "RES",
                 "B", "LDB", "V", "LDV", "S", "LDS", "WORK", "LWORK", "IWORK", "LIWORK", "INFO")
# What the public keyword controls, for error messages about an illegal Fortran argument.
_KEYWORD_OF = {"JOBS": "jobs", "WHTSVD": "whtsvd", "NRNK": "nrnk", "TOL": "tol"}


class LapackUnavailableError(ImportError):
    """The OpenBLAS of ``scipy-openblas32`` (with ``scipy_dgedmd_``) cannot be loaded."""


class LapackError(RuntimeError):
    """``DGEDMD``/``DGEDMDQ`` returned a positive ``INFO`` (no convergence, void input)."""


class LapackDMD(NamedTuple):
    """Ritz pairs from ``DGEDMD``/``DGEDMDQ`` (unpacks as ``eigenvalues, modes, residuals, rank``).

    Attributes
    ----------
    eigenvalues : ndarray, shape (k,), complex
        Ritz values in LAPACK's order; conjugate pairs adjacent, positive imaginary part first.
    modes : ndarray, shape (n, k), complex
        Unit 2-norm Ritz vectors ``Z(:,i) ± i·Z(:,i+1)`` built from LAPACK's real form.
    residuals : ndarray, shape (k,), float
        ``‖A z_i − λ_i z_i‖₂`` as computed by LAPACK from the data (``JOBR = 'R'``).
    rank : int
        ``K``, the dimension of the POD subspace chosen by ``NRNK``/``TOL``.
    """

    eigenvalues: np.ndarray
    modes: np.ndarray
    residuals: np.ndarray
    rank: int


def library_path() -> pathlib.Path:
    """Path of the ``scipy-openblas32`` shared library, found without importing the package.

    Raises
    ------
    LapackUnavailableError
        The package is not installed or holds no ``libscipy_openblas*`` library.
    """
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        raise LapackUnavailableError(
            "LAPACK xGEDMD needs the PyPI package scipy-openblas32 (pip install scipy-openblas32)"
        )
    lib_dir = pathlib.Path(next(iter(spec.submodule_search_locations))) / "lib"
    candidates = sorted(lib_dir.glob("libscipy_openblas*.so*")) + sorted(
        lib_dir.glob("libscipy_openblas*.dylib")
    )
    if not candidates:
        raise LapackUnavailableError(f"no libscipy_openblas shared library in {lib_dir}")
    return candidates[0]


@functools.cache
def _library() -> ctypes.CDLL:
    path = library_path()
    try:
        lib = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL)
        dgedmd_fn, dgedmdq_fn = lib.scipy_dgedmd_, lib.scipy_dgedmdq_
    except (OSError, AttributeError) as exc:
        raise LapackUnavailableError(f"cannot use DGEDMD/DGEDMDQ from {path}: {exc}") from exc
    ptr, size = ctypes.c_void_p, ctypes.c_size_t
    dgedmd_fn.argtypes = [ptr] * len(_DGEDMD_ARGS) + [size] * 4
    dgedmd_fn.restype = None
    dgedmdq_fn.argtypes = [ptr] * len(_DGEDMDQ_ARGS) + [size] * 6
    dgedmdq_fn.restype = None
    return lib


def available() -> bool:
    """True if ``scipy_dgedmd_`` and ``scipy_dgedmdq_`` can be loaded."""
    try:
        _library()
    except LapackUnavailableError:
        return False
    return True


def dgedmd(X, Y, *, jobs: str = "S", whtsvd: int = 1, nrnk: int = -1,
           tol: float | None = None, jobr: bool = True) -> LapackDMD:
    """Ritz pairs and residuals of the snapshot pairs ``Y ≈ A X`` by LAPACK ``DGEDMD``.

    Parameters
    ----------
    X, Y : array_like, shape (n, m), real, ``m <= n``
        Snapshots as columns (``Y[:, i] ≈ A X[:, i]``); copied to Fortran-order float64.
    jobs : {'S', 'C', 'Y', 'N'}
        Column scaling (``'S'``: unit columns of X, the setting of ``dmd_rrr(scale=True)``).
    whtsvd : {1, 2, 3, 4}
        SVD driver: DGESVD, DGESDD, DGESVDQ, DGEJSV.
    nrnk : int
        ``-1``: keep ``σ_i > tol·σ_1`` of the scaled X; ``-2``: ``σ_i > tol·σ_{i−1}``;
        ``1..m``: at most ``nrnk`` singular vectors.
    tol : float in [0, 1), optional
        Truncation tolerance; default ``n·eps`` (Drmač's recommendation).
    jobr : bool
        Compute the residuals (``JOBR = 'R'``); otherwise ``residuals`` is all NaN.

    Returns
    -------
    LapackDMD

    Notes
    -----
    Cost: the thin SVD of the n×m matrix (``O(nm²)``), ``Uᵀ Y`` (``2nmk``), the Ritz vectors
    and the residual vectors (``O(nmk)``).  Memory: copies of X and Y, Z (n×m), the optimal
    DGESVD workspace (up to ``2nm`` for ``n ≫ m``) and the complex modes (n×k).
    """
    X = as_snapshot_matrix(X, "X")
    Y = as_snapshot_matrix(Y, "Y")
    _check_real(X, "X")
    _check_real(Y, "Y")
    if Y.shape != X.shape:
        raise ValueError(f"Y must have the same shape as X {X.shape}; got {Y.shape}")
    n, m = X.shape
    if m > n:
        raise ValueError(f"X: DGEDMD needs at most as many snapshot pairs as rows (m <= n); "
                         f"got shape {X.shape}")
    tol = _default_tol(tol, n)
    lib = _library()
    x = np.array(X, dtype=np.float64, order="F", copy=True)
    y = np.array(Y, dtype=np.float64, order="F", copy=True)
    z = np.empty((n, m), dtype=np.float64, order="F")
    w = np.empty((m, m), dtype=np.float64, order="F")
    s = np.empty((m, m), dtype=np.float64, order="F")
    b = np.empty((1, 1), dtype=np.float64, order="F")  # JOBF = 'N': B is not referenced
    reig, imeig, res = (np.zeros(m) for _ in range(3))
    call = _FortranCall("DGEDMD", _DGEDMD_ARGS)
    call.char("JOBS", jobs).char("JOBZ", "V").char("JOBR", "R" if jobr else "N").char("JOBF", "N")
    call.int("WHTSVD", whtsvd).int("M", n).int("N", m)
    call.array("X", x).int("LDX", n).array("Y", y).int("LDY", n)
    call.int("NRNK", nrnk).real("TOL", tol).int("K", 0)
    call.array("REIG", reig).array("IMEIG", imeig).array("Z", z).int("LDZ", n).array("RES", res)
    call.array("B", b).int("LDB", 1).array("W", w).int("LDW", m).array("S", s).int("LDS", m)
    call.run_with_workspace(lib.scipy_dgedmd_)
    k = call.value("K")
    return _pairs(reig[:k], imeig[:k], z[:, :k], res[:k] if jobr else np.full(k, np.nan))


def dgedmdq(F, *, jobs: str = "S", whtsvd: int = 1, nrnk: int = -1,
            tol: float | None = None, jobr: bool = True) -> LapackDMD:
    """Ritz pairs and residuals of one trajectory ``F = [f_0 … f_m]`` by LAPACK ``DGEDMDQ``.

    The pairs are ``F[:, :-1] -> F[:, 1:]``.  DGEDMDQ first factors ``F = Q R`` (DGEQRF), runs
    DGEDMD on the ``min(n, m+1) × m`` blocks of ``R`` and lifts the Ritz vectors with ``Q``
    (DORMQR); residuals are computed in the compressed coordinates (norm-preserving).

    Parameters
    ----------
    F : array_like, shape (n, m + 1), real, ``m + 1 <= n + 1``
        The trajectory, snapshots as columns; copied to Fortran-order float64.
    jobs, whtsvd, nrnk, tol, jobr
        As in :func:`dgedmd` (``nrnk`` at most ``m``).

    Returns
    -------
    LapackDMD

    Notes
    -----
    Cost: the QR of F (``≈ 2n(m+1)²``), a DMD of (m+1)×m matrices (``O(m³)``) and applying Q
    to the Ritz vectors (``≈ 4n(m+1)k``).  Memory: a copy of F, Z (n×m), the complex modes.
    """
    F = as_snapshot_matrix(F, "F", min_columns=2)
    _check_real(F, "F")
    n, snapshots = F.shape
    if snapshots > n + 1:
        raise ValueError(f"F: DGEDMDQ needs at most n + 1 snapshots for n rows; got shape {F.shape}")
    m = snapshots - 1
    if isinstance(nrnk, (int, np.integer)) and nrnk > m:  # DGEDMDQ would blame argument X
        raise ValueError(f"nrnk must be -1, -2 or in 1..{m} (the number of pairs); got {nrnk}")
    p = min(n, snapshots)
    tol = _default_tol(tol, n)
    lib = _library()
    f = np.array(F, dtype=np.float64, order="F", copy=True)
    x = np.empty((p, m), dtype=np.float64, order="F")
    y = np.empty((p, m), dtype=np.float64, order="F")
    z = np.empty((n, m), dtype=np.float64, order="F")
    v = np.empty((m, m), dtype=np.float64, order="F")
    s = np.empty((m, m), dtype=np.float64, order="F")
    b = np.empty((1, 1), dtype=np.float64, order="F")  # JOBF = 'N': B is not referenced
    reig, imeig, res = (np.zeros(m) for _ in range(3))
    call = _FortranCall("DGEDMDQ", _DGEDMDQ_ARGS)
    call.char("JOBS", jobs).char("JOBZ", "V").char("JOBR", "R" if jobr else "N")
    call.char("JOBQ", "N").char("JOBT", "N").char("JOBF", "N")
    call.int("WHTSVD", whtsvd).int("M", n).int("N", snapshots).array("F", f).int("LDF", n)
    call.array("X", x).int("LDX", p).array("Y", y).int("LDY", p)
    call.int("NRNK", nrnk).real("TOL", tol).int("K", 0)
    call.array("REIG", reig).array("IMEIG", imeig).array("Z", z).int("LDZ", n).array("RES", res)
    call.array("B", b).int("LDB", 1).array("V", v).int("LDV", m).array("S", s).int("LDS", m)
    call.run_with_workspace(lib.scipy_dgedmdq_)
    k = call.value("K")
    return _pairs(reig[:k], imeig[:k], z[:, :k], res[:k] if jobr else np.full(k, np.nan))


def _check_real(array: np.ndarray, name: str) -> None:
    if array.dtype.kind == "c":
        raise TypeError(f"{name} must be real for DGEDMD/DGEDMDQ; got dtype {array.dtype}")


def _default_tol(tol, n_rows: int) -> float:
    tol = check_tol(tol)
    return n_rows * _EPS if tol is None else tol


def _pairs(reig: np.ndarray, imeig: np.ndarray, z: np.ndarray, res: np.ndarray) -> LapackDMD:
    """Complex eigenvalues and unit modes from LAPACK's real form (pairs: ``Z(:,i) ± i·Z(:,i+1)``)."""
    eigenvalues = reig + 1j * imeig
    modes = z.astype(np.complex128)
    first = np.flatnonzero(imeig > 0)
    modes[:, first] += 1j * z[:, first + 1]
    modes[:, first + 1] = modes[:, first].conj()
    modes /= np.linalg.norm(modes, axis=0)
    return LapackDMD(eigenvalues=eigenvalues, modes=modes, residuals=res.copy(),
                     rank=int(eigenvalues.size))


class _FortranCall:
    """Arguments of one Fortran call, in order: scalars by reference, arrays by address."""

    def __init__(self, routine: str, names: tuple[str, ...]):
        self._routine = routine
        self._names = names
        self._args: dict[str, object] = {}
        self._chars: list[int] = []

    def char(self, name: str, value) -> "_FortranCall":
        if not isinstance(value, str) or len(value) != 1:
            keyword = _KEYWORD_OF.get(name, name.lower())
            raise ValueError(f"{keyword} must be a one-letter option string; got {value!r}")
        self._args[name] = ctypes.create_string_buffer(value.upper().encode("ascii"), 1)
        self._chars.append(1)
        return self

    def int(self, name: str, value) -> "_FortranCall":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            keyword = _KEYWORD_OF.get(name, name.lower())
            raise TypeError(f"{keyword} must be an integer; got {value!r}")
        if abs(int(value)) > _INT32_MAX:
            raise ValueError(f"{self._routine}: {name} = {value} does not fit a 32-bit integer")
        self._args[name] = ctypes.c_int(int(value))
        return self

    def real(self, name: str, value: float) -> "_FortranCall":
        self._args[name] = ctypes.c_double(value)
        return self

    def array(self, name: str, value: np.ndarray) -> "_FortranCall":
        self._args[name] = value
        return self

    def value(self, name: str) -> int:
        return self._args[name].value

    def _invoke(self, function) -> int:
        self._args["INFO"] = ctypes.c_int(0)
        pointers = []
        for name in self._names:
            arg = self._args[name]
            if isinstance(arg, np.ndarray):
                pointers.append(arg.ctypes.data)
            else:
                pointers.append(ctypes.addressof(arg))
        function(*pointers, *self._chars)
        return self._args["INFO"].value

    def run_with_workspace(self, function) -> None:
        """Workspace query (``LWORK = LIWORK = -1``), then the call; check ``INFO``."""
        self.array("WORK", np.zeros(2)).int("LWORK", -1)
        self.array("IWORK", np.zeros(1, dtype=np.int32)).int("LIWORK", -1)
        self._check(self._invoke(function))
        query, iquery = self._args["WORK"], self._args["IWORK"]
        minimal, optimal = int(query[0]), int(query[1])
        lwork = optimal if optimal <= _INT32_MAX else minimal
        if lwork > _INT32_MAX:
            raise ValueError(f"{self._routine}: the workspace ({lwork} doubles) does not fit "
                             "32-bit LAPACK integers; use fewer rows or snapshots")
        liwork = max(1, int(iquery[0]))
        self.array("WORK", np.zeros(lwork)).int("LWORK", lwork)
        self.array("IWORK", np.zeros(liwork, dtype=np.int32)).int("LIWORK", liwork)
        self._check(self._invoke(function))

    def _check(self, info: int) -> None:
        if info < 0:
            name = self._names[-info - 1]
            keyword = _KEYWORD_OF.get(name)
            hint = f" (keyword {keyword!r})" if keyword else ""
            raise ValueError(f"{self._routine}: argument {-info} ({name}){hint} has an illegal "
                             f"value: {self._describe(name)}")
        if info == 4:
            warnings.warn(f"{self._routine}: INFO=4, a zero snapshot in X has a non-zero image "
                          "in Y (inconsistent data)", RuntimeWarning, stacklevel=3)
        elif info > 0:
            reasons = {1: "void input (no snapshot pairs)", 2: "the SVD did not converge",
                       3: "the eigenvalue computation (DGEEV) did not converge",
                       5: "all columns of Y are zero (JOBS='Y')"}
            raise LapackError(f"{self._routine}: INFO={info}: {reasons.get(info, 'failure')}")

    def _describe(self, name: str) -> str:
        arg = self._args.get(name)
        if isinstance(arg, np.ndarray):
            return f"array of shape {arg.shape} (e.g. an all-zero X)"
        if isinstance(arg, ctypes.Array):
            return repr(arg.raw.decode("ascii"))
        return repr(getattr(arg, "value", arg))
