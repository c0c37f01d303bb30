"""LAPACK's DGEDMD/DGEDMDQ (Drmač's reference implementation) as an oracle for ``dmd_rrr``.

First the ctypes binding is checked on its own against a planted spectrum and an independent
numpy transcription of the DGEDMD steps; then ``dmd_rrr`` is compared with it on trajectories
with known spectra (below).  Everything is skipped where ``scipy-openblas32`` cannot be loaded.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
import scipy.linalg as sla
from scipy.optimize import linear_sum_assignment

from keras_koopman import dmd_rrr

# the oracle lives beside the benchmarks, outside the installed package
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
import lapack_oracle as _lapack  # noqa: E402

pytestmark = pytest.mark.skipif(not _lapack.available(),
                                reason="LAPACK DGEDMD (scipy-openblas32) cannot be loaded")

TOL = 1e-10  # agreement required by the issue


# ---------------------------------------------------------------------------------------------
# Cases with known spectra
# ---------------------------------------------------------------------------------------------

def _real_block(eigenvalues) -> np.ndarray:
    """Real block-diagonal matrix with the given eigenvalues (one entry per conjugate pair)."""
    blocks = [np.array([[lam.real]]) if lam.imag == 0 else
              np.array([[lam.real, lam.imag], [-lam.imag, lam.real]]) for lam in eigenvalues]
    return sla.block_diag(*blocks)


def _full_spectrum(eigenvalues) -> np.ndarray:
    eigenvalues = np.asarray(eigenvalues, dtype=complex)
    return np.concatenate([eigenvalues, eigenvalues[eigenvalues.imag != 0].conj()])


def _invariant_trajectory(rng, n, eigenvalues, snapshots):
    """A trajectory of x_{t+1} = A x_t confined to the invariant subspace of ``eigenvalues``."""
    M = _real_block(eigenvalues)
    V = rng.standard_normal((n, M.shape[0]))
    state = rng.standard_normal(M.shape[0])
    columns = []
    for _ in range(snapshots):
        columns.append(V @ state)
        state = M @ state
    return np.column_stack(columns)


# 5 real eigenvalues and 5 complex pairs: a 15-dimensional invariant subspace.
_PAIRS_LAMBDA = [0.95, 0.6, -0.4, 0.2, -0.85] + [r * np.exp(1j * a) for r, a in
                                                  [(0.9, 0.3), (0.7, 1.1), (0.5, 2.0),
                                                   (0.98, 2.7), (0.3, 0.6)]]
# 10-dimensional subspace for the rank-deficient trajectory: 4 real, 3 pairs.
_RANK10_LAMBDA = [0.97, 0.8, -0.6, 0.5] + [0.9 * np.exp(0.5j), 0.75 * np.exp(1.6j),
                                            0.85 * np.exp(2.6j)]
# 30-dimensional subspace, |λ| in [0.9, 1] with spread angles (a well-conditioned Krylov basis).
_FULL30_LAMBDA = [0.99, -0.93] + [(0.9 + 0.1 * (j % 3) / 2) * np.exp(2j * np.pi * (j + 0.5) / 30)
                                  for j in range(14)]

_OMEGA, _ZETA, _DT = 2.0, 0.1, 0.1
_OSC_LAMBDA = np.exp(_DT * (-_ZETA * _OMEGA + 1j * _OMEGA * np.sqrt(1 - _ZETA ** 2)))


def case_pairs_full_rank():
    """n = 50, m = 30 general pairs Y = A X spanning a 30-dim invariant subspace (rank 30)."""
    rng = np.random.default_rng(1)
    lam = _PAIRS_LAMBDA + [0.88 * np.exp(1j * a) for a in (0.9, 1.5, 2.3)] + [
        0.45, 0.33, 0.7 * np.exp(2.9j), 0.62 * np.exp(0.15j), 0.55 * np.exp(2.45j), -0.72]
    M = _real_block(lam)
    assert M.shape == (30, 30)
    V = rng.standard_normal((50, 30))
    C = rng.standard_normal((30, 30))
    return dict(X=V @ C, Y=V @ M @ C, truth=_full_spectrum(lam), trajectory=False, tol=1e-10)


def case_trajectory_rank10():
    """n = 50, 31 snapshots (m = 30 pairs) in a 10-dim invariant subspace: rank-deficient."""
    F = _invariant_trajectory(np.random.default_rng(2), 50, _RANK10_LAMBDA, 31)
    return dict(X=F, Y=None, truth=_full_spectrum(_RANK10_LAMBDA), trajectory=True, tol=1e-10)


def case_trajectory_full30():
    """n = 50, 31 snapshots in a 30-dim invariant subspace: X = F[:, :30] has full rank 30."""
    F = _invariant_trajectory(np.random.default_rng(3), 50, _FULL30_LAMBDA, 31)
    return dict(X=F, Y=None, truth=_full_spectrum(_FULL30_LAMBDA), trajectory=True, tol=1e-12)


def case_gradient_descent():
    """w_{t+1} = w_t − η(H w_t − b), n = 100, 6 excited directions, 21 iterates (raw weights)."""
    rng = np.random.default_rng(4)
    n, eta = 100, 0.45
    h = np.linspace(0.05, 1.9, n)
    basis = np.linalg.qr(rng.standard_normal((n, n)))[0]
    H = basis @ np.diag(h) @ basis.T
    w_star = rng.standard_normal(n)
    b = H @ w_star
    excited = [0, 17, 40, 63, 85, 99]
    w = w_star + basis[:, excited] @ rng.uniform(0.5, 2.0, len(excited))
    columns = []
    for _ in range(21):
        columns.append(w)
        w = w - eta * (H @ w - b)
    truth = np.concatenate([1 - eta * h[excited], [1.0]]).astype(complex)
    return dict(X=np.column_stack(columns), Y=None, truth=truth, trajectory=True, tol=1e-10)


def case_damped_oscillator():
    """x'' + 2ζωx' + ω²x = 0 sampled at Δt; observables (x, v, x², xv, v²) lifted to n = 40."""
    rng = np.random.default_rng(5)
    A = np.array([[0.0, 1.0], [-_OMEGA ** 2, -2 * _ZETA * _OMEGA]])
    step = sla.expm(A * _DT)
    state = np.array([1.0, 0.3])
    observables = []
    for _ in range(31):
        x, v = state
        observables.append([x, v, x * x, x * v, v * v])
        state = step @ state
    lift = rng.standard_normal((40, 5))
    lam = _OSC_LAMBDA
    truth = np.array([lam, lam.conjugate(), lam ** 2, abs(lam) ** 2, lam.conjugate() ** 2])
    return dict(X=lift @ np.array(observables).T, Y=None, truth=truth, trajectory=True,
                tol=1e-10)


CASES = {f.__name__[5:]: f for f in (case_pairs_full_rank, case_trajectory_rank10,
                                     case_trajectory_full30, case_gradient_descent,
                                     case_damped_oscillator)}


def _pairs_of(case):
    if case["trajectory"]:
        return case["X"][:, :-1], case["X"][:, 1:]
    return case["X"], case["Y"]


def _match(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays pairing ``a`` with ``b`` (same length) by minimal total distance."""
    assert a.shape == b.shape, (a.shape, b.shape)
    rows, cols = linear_sum_assignment(np.abs(a[:, None] - b[None, :]))
    return rows, cols


def _max_distance_to(truth, values) -> float:
    rows, cols = _match(truth, values)
    return float(np.max(np.abs(truth[rows] - values[cols])))


# ---------------------------------------------------------------------------------------------
# The binding on its own
# ---------------------------------------------------------------------------------------------

def _numpy_dgedmd(X, Y, tol):
    """Independent transcription of DGEDMD (JOBS='S', NRNK=-1): Ritz values and residuals."""
    d = np.linalg.norm(X, axis=0)
    U, s, Vt = np.linalg.svd(X / d, full_matrices=False)
    k = int(np.count_nonzero(s > tol * s[0]))
    B = (Y / d) @ (Vt[:k].T / s[:k])          # A U_k from the data
    S = U[:, :k].T @ B                        # Rayleigh quotient
    lam, W = np.linalg.eig(S)
    W = W / np.linalg.norm(W, axis=0)
    residuals = np.linalg.norm(B @ W - (U[:, :k] @ W) * lam, axis=0)
    return lam, residuals


def test_dgedmd_recovers_planted_spectrum_and_eigenvectors():
    case = case_pairs_full_rank()
    X, Y = case["X"], case["Y"]
    result = _lapack.dgedmd(X, Y, tol=1e-10)
    assert result.rank == 30
    assert _max_distance_to(case["truth"], result.eigenvalues) < 1e-12
    assert np.max(result.residuals) < 1e-12
    # Modes are unit eigenvectors of the operator: A Z = Z Λ with A = Y X⁺ on range(X).
    A_on_range = Y @ np.linalg.pinv(X)
    assert np.allclose(np.linalg.norm(result.modes, axis=0), 1.0, atol=1e-14)
    explicit = np.linalg.norm(A_on_range @ result.modes - result.modes * result.eigenvalues, axis=0)
    assert np.max(explicit) < 1e-11
    # Conjugate pairs come adjacent, positive imaginary part first, with conjugate modes.
    first = np.flatnonzero(result.eigenvalues.imag > 0)
    assert first.size == 11
    np.testing.assert_array_equal(result.eigenvalues[first + 1], result.eigenvalues[first].conj())
    np.testing.assert_array_equal(result.modes[:, first + 1], result.modes[:, first].conj())


def test_dgedmd_residuals_match_numpy_transcription_on_noisy_data():
    """Non-trivial residuals (noisy data): the binding returns what the algorithm defines."""
    case = case_pairs_full_rank()
    rng = np.random.default_rng(10)
    X = case["X"] + 1e-3 * rng.standard_normal(case["X"].shape)
    Y = case["Y"] + 1e-3 * rng.standard_normal(case["Y"].shape)
    lam_ref, res_ref = _numpy_dgedmd(X, Y, tol=1e-10)
    result = _lapack.dgedmd(X, Y, tol=1e-10)
    rows, cols = _match(lam_ref, result.eigenvalues)
    assert np.max(np.abs(lam_ref[rows] - result.eigenvalues[cols])) < 1e-12
    assert np.min(res_ref) > 1e-4            # really non-trivial
    np.testing.assert_allclose(result.residuals[cols], res_ref[rows], rtol=1e-10)


@pytest.mark.parametrize("whtsvd", [1, 2, 3, 4])
def test_dgedmdq_agrees_with_dgedmd_for_every_svd_driver(whtsvd):
    case = case_trajectory_rank10()
    F = case["X"]
    pairs = _lapack.dgedmd(F[:, :-1], F[:, 1:], tol=1e-10, whtsvd=whtsvd)
    compressed = _lapack.dgedmdq(F, tol=1e-10, whtsvd=whtsvd)
    assert pairs.rank == compressed.rank == 10
    assert _max_distance_to(case["truth"], pairs.eigenvalues) < 1e-11
    assert _max_distance_to(pairs.eigenvalues, compressed.eigenvalues) < 1e-12
    assert np.max(np.abs(pairs.residuals - compressed.residuals)) < 1e-12


def test_nrnk_caps_the_rank_and_tol_truncates():
    F = case_trajectory_rank10()["X"]
    assert _lapack.dgedmd(F[:, :-1], F[:, 1:], nrnk=4).rank == 4
    assert _lapack.dgedmdq(F, nrnk=4).rank == 4
    assert _lapack.dgedmdq(F, tol=0.0).rank > 10  # keeps the rounding-level directions


def test_jobr_false_skips_residuals_only():
    F = case_trajectory_rank10()["X"]
    with_res = _lapack.dgedmdq(F, tol=1e-10)
    without = _lapack.dgedmdq(F, tol=1e-10, jobr=False)
    np.testing.assert_allclose(without.eigenvalues, with_res.eigenvalues, atol=1e-14)
    assert np.all(np.isnan(without.residuals)) and not np.any(np.isnan(with_res.residuals))


def test_bad_input_and_illegal_arguments_raise_naming_them():
    F = case_trajectory_rank10()["X"]
    X, Y = F[:, :-1], F[:, 1:]
    with pytest.raises(ValueError, match="NRNK"):
        _lapack.dgedmd(X, Y, nrnk=31)        # LAPACK's INFO = -12, reported by name
    with pytest.raises(ValueError, match="JOBS"):
        _lapack.dgedmd(X, Y, jobs="Q")
    with pytest.raises(ValueError, match="nrnk"):
        _lapack.dgedmdq(F, nrnk=31)
    with pytest.raises(ValueError, match="tol"):
        _lapack.dgedmd(X, Y, tol=1.0)
    bad = X.copy()
    bad[3, 7] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        _lapack.dgedmd(bad, Y)
    with pytest.raises(ValueError, match="m <= n"):
        _lapack.dgedmd(X[:20], Y[:20])
    with pytest.raises(ValueError, match="Y must have the same shape"):
        _lapack.dgedmd(X, Y[:, :-1])
    with pytest.raises(TypeError, match="real"):
        _lapack.dgedmd(X + 0j, Y)
    inconsistent = X.copy()
    inconsistent[:, 4] = 0.0                 # zero snapshot whose image is not zero
    with pytest.warns(RuntimeWarning, match="INFO=4"):
        _lapack.dgedmd(inconsistent, Y, jobs="C", tol=1e-10)


def test_missing_package_is_an_import_error(monkeypatch):
    """What the module-level skip relies on: no package -> ImportError subclass, not a crash."""
    monkeypatch.setattr(_lapack.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="scipy-openblas32"):
        _lapack.library_path()


# ---------------------------------------------------------------------------------------------
# dmd_rrr against the oracle
# ---------------------------------------------------------------------------------------------

def _compare(ours, oracle, *, eig_tol=TOL, res_tol=TOL):
    assert ours.rank == oracle.rank
    assert ours.eigenvalues.shape == oracle.eigenvalues.shape
    rows, cols = _match(ours.eigenvalues, oracle.eigenvalues)
    assert np.max(np.abs(ours.eigenvalues[rows] - oracle.eigenvalues[cols])) <= eig_tol
    assert np.max(np.abs(ours.residuals[rows] - oracle.residuals[cols])) <= res_tol


@pytest.mark.parametrize("refine", [True, False], ids=["refined", "plain"])
@pytest.mark.parametrize("name", list(CASES))
def test_dmd_rrr_agrees_with_dgedmd(name, refine):
    case = CASES[name]()
    X, Y = _pairs_of(case)
    oracle = _lapack.dgedmd(X, Y, tol=case["tol"])
    assert _max_distance_to(case["truth"], oracle.eigenvalues) < 1e-10  # the case is sound
    ours = dmd_rrr(case["X"], case["Y"], tol=case["tol"], refine=refine)
    _compare(ours, oracle)
    assert np.max(ours.residuals) < TOL and np.max(oracle.residuals) < TOL


@pytest.mark.parametrize("name", [n for n in CASES if n != "pairs_full_rank"])
def test_dmd_rrr_agrees_with_dgedmdq_on_trajectories(name):
    case = CASES[name]()
    oracle = _lapack.dgedmdq(case["X"], tol=case["tol"])
    _compare(dmd_rrr(case["X"], tol=case["tol"]), oracle)


def test_rank_argument_matches_nrnk():
    """``rank=r`` selects the same r-dimensional POD subspace (same Rayleigh quotient)."""
    F = case_trajectory_rank10()["X"]
    for r in (3, 6):
        oracle = _lapack.dgedmdq(F, nrnk=r)
        _compare(dmd_rrr(F, rank=r, refine=False), oracle, eig_tol=1e-10, res_tol=1e-10)


def test_unrefined_residuals_match_and_refinement_never_increases_them():
    """Noisy pairs: residuals are O(1e-3), a sharp test of the data-driven residual formula."""
    case = case_pairs_full_rank()
    rng = np.random.default_rng(11)
    X = case["X"] + 1e-3 * rng.standard_normal(case["X"].shape)
    Y = case["Y"] + 1e-3 * rng.standard_normal(case["Y"].shape)
    oracle = _lapack.dgedmd(X, Y, tol=1e-10)
    plain = dmd_rrr(X, Y, tol=1e-10, refine=False)
    assert np.min(oracle.residuals) > 1e-4
    rows, cols = _match(plain.eigenvalues, oracle.eigenvalues)
    assert np.max(np.abs(plain.eigenvalues[rows] - oracle.eigenvalues[cols])) < 1e-10
    np.testing.assert_allclose(plain.residuals[rows], oracle.residuals[cols], rtol=1e-8)
    refined = dmd_rrr(X, Y, tol=1e-10, refine=True)
    rows, cols = _match(refined.eigenvalues, oracle.eigenvalues)
    assert np.all(refined.residuals[rows] <= oracle.residuals[cols] * (1 + 1e-8))
    assert np.any(refined.residuals[rows] < oracle.residuals[cols] * (1 - 1e-4))
