"""DMD_RRR engine: cases with known answers, residual selection, amplitudes, bad input."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_koopman import (
    KoopmanModes,
    delay_embed,
    diagnose,
    dmd_rrr,
    dmd_rrr_series,
    epochs_to_shrink,
    growing_importance,
    slowest_decay,
    spectral_radius,
    unit_cluster,
)


def match_error(found, expected):
    """Largest distance from an expected eigenvalue to the nearest found one (and back)."""
    found, expected = np.asarray(found), np.asarray(expected)
    d = np.abs(found[:, None] - expected[None, :])
    return max(d.min(axis=0).max(), d.min(axis=1).max())


def real_block_diagonal(real_eigs, complex_eigs):
    """Real matrix with the given real eigenvalues and conjugate pairs (positive Im given)."""
    size = len(real_eigs) + 2 * len(complex_eigs)
    D = np.zeros((size, size))
    D[range(len(real_eigs)), range(len(real_eigs))] = real_eigs
    for i, lam in enumerate(complex_eigs):
        j = len(real_eigs) + 2 * i
        D[j:j + 2, j:j + 2] = [[lam.real, lam.imag], [-lam.imag, lam.real]]
    expected = np.concatenate([real_eigs, complex_eigs, np.conj(complex_eigs)])
    return D, expected


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def planted_system(rng, dim, n, spread=False):
    """A real dim×dim map, seen through a random n×dim basis, and its eigenvalues.

    ``spread=True`` places the eigenvalues near the unit circle at well-separated angles: a
    single trajectory (a Krylov sequence) is only as well conditioned as its Vandermonde
    matrix, and random clustered eigenvalues make that exponentially ill-conditioned.
    """
    if spread:
        pairs = (dim - 2) // 2
        real_eigs = np.array([0.93, -0.91])[: dim - 2 * pairs]
        angles = np.pi * (np.arange(pairs) + 0.5) / pairs
        complex_eigs = rng.uniform(0.9, 0.99, pairs) * np.exp(1j * angles)
    else:
        real_eigs = rng.uniform(-0.9, 0.95, dim - 2 * (dim // 3))
        complex_eigs = rng.uniform(0.3, 0.98, dim // 3) * np.exp(1j * rng.uniform(0.1, 3.0, dim // 3))
    D, expected = real_block_diagonal(real_eigs, complex_eigs)
    basis = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim))
    return D, basis, expected


def test_planted_spectrum_general_pairs_full_rank(rng):
    n, m = 50, 30
    D, basis, expected = planted_system(rng, 30, n)
    C = rng.standard_normal((30, m))
    X, Y = basis @ C, basis @ D @ C
    km = dmd_rrr(X, Y)
    assert km.rank == 30
    assert match_error(km.eigenvalues, expected) < 1e-10
    assert km.residuals.max() < 1e-10


@pytest.mark.parametrize("dim", [10, 30])
def test_planted_spectrum_single_trajectory(rng, dim):
    """n = 50, m = 30 pairs; dim 10 is rank-deficient (needs truncation)."""
    n, m = 50, 30
    D, basis, expected = planted_system(rng, dim, n, spread=True)
    state = rng.standard_normal(dim)
    states = [state]
    for _ in range(m):
        states.append(D @ states[-1])
    F = basis @ np.array(states).T
    km = dmd_rrr(F)
    assert km.rank == dim
    assert match_error(km.eigenvalues, expected) < 1e-10
    assert km.residuals.max() < 1e-10
    # exact data are reconstructed and continued exactly
    assert np.allclose(km.reconstruct(np.arange(m + 1)), F, rtol=0, atol=1e-9 * np.abs(F).max())


def gradient_descent(rng, n=100, steps=20, eta=0.45, excited=(3, 20, 40, 60, 80, 99)):
    h = np.linspace(0.05, 1.9, n)
    Qh = np.linalg.qr(rng.standard_normal((n, n)))[0]
    H = Qh @ np.diag(h) @ Qh.T
    b = rng.standard_normal(n)
    w_star = np.linalg.solve(H, b)
    w = w_star + Qh[:, list(excited)] @ rng.standard_normal(len(excited))
    traj = [w]
    for _ in range(steps):
        traj.append(traj[-1] - eta * (H @ traj[-1] - b))
    return np.array(traj).T, 1 - eta * h[list(excited)], w_star


def test_gradient_descent_eigenvalues_and_fixed_point(rng):
    F, expected, w_star = gradient_descent(rng)
    km = dmd_rrr(F)
    assert km.rank == 7
    assert match_error(km.eigenvalues, np.append(expected, 1.0)) < 1e-9
    one = np.argmin(np.abs(km.eigenvalues - 1.0))
    fixed_point = (km.modes[:, one] * km.amplitudes[one]).real
    assert np.linalg.norm(fixed_point - w_star) / np.linalg.norm(w_star) < 1e-8
    # the fixed point is the most important mode here, and the unit cluster sees it
    assert unit_cluster(km, delta=1e-6, min_importance=0.0) > 0


def damped_oscillator(steps, dt=0.1, omega=2.0, zeta=0.1):
    A = np.array([[0.0, 1.0], [-omega**2, -2 * zeta * omega]])
    from scipy.linalg import expm
    step = expm(A * dt)
    x = [np.array([1.0, 0.0])]
    for _ in range(steps):
        x.append(step @ x[-1])
    return np.array(x)


OSC = 0.9608547013 + 0.1937722431j


def test_hankel_dmd_of_damped_oscillator():
    x = damped_oscillator(60)[:, 0]
    km = dmd_rrr_series(x, 20)
    assert km.rank == 2
    assert match_error(km.eigenvalues, [OSC, np.conj(OSC)]) < 1e-9
    # the first row of the reconstruction is the series itself
    assert np.allclose(km.reconstruct(np.arange(41))[0], x[:41], atol=1e-10)


def test_koopman_products_of_oscillator():
    """Observables (x, v, x², xv, v²) span eigenfunctions λ, λ̄, λ², |λ|², λ̄²."""
    s = damped_oscillator(40)
    obs = np.stack([s[:, 0], s[:, 1], s[:, 0] ** 2, s[:, 0] * s[:, 1], s[:, 1] ** 2])
    lift = np.random.default_rng(0).standard_normal((40, 5))
    km = dmd_rrr(lift @ obs)
    lam = OSC
    expected = [lam, np.conj(lam), lam**2, abs(lam) ** 2, np.conj(lam) ** 2]
    assert match_error(km.eigenvalues, expected) < 1e-9


def test_noise_gives_spurious_pairs_that_select_removes(rng):
    n, m = 200, 60
    s = damped_oscillator(m)
    signal = rng.standard_normal((n, 2)) @ s.T
    noisy = signal + 1e-3 * rng.standard_normal((n, m + 1))
    km = dmd_rrr(noisy)
    assert len(km) > 10  # noise makes the data full rank
    good = km.select(max_residual=1e-3)
    assert match_error(good.eigenvalues, [OSC, np.conj(OSC)]) < 1e-4
    assert len(good) == 2
    spurious = km.residuals[np.abs(km.eigenvalues - OSC) > 1e-3]
    spurious = spurious[np.abs(km.eigenvalues[np.abs(km.eigenvalues - OSC) > 1e-3] - np.conj(OSC)) > 1e-3]
    assert spurious.min() > 1e-2


def test_pure_noise_has_only_large_residuals(rng):
    km = dmd_rrr(rng.standard_normal((2000, 51)))
    assert km.residuals.min() > 0.05
    assert len(km.select(max_residual=1e-3)) == 0


def _two_mode_trajectory(rng, steps=10):
    V = rng.standard_normal((2, 2))
    A = V @ np.diag([0.5, 0.9]) @ np.linalg.inv(V)
    x = [rng.standard_normal(2)]
    for _ in range(steps - 1):
        x.append(A @ x[-1])
    return np.array(x).T


def test_fit_error_sees_what_the_residuals_cannot(rng):
    """A 2-dimensional linear trajectory spans its space, so every residual is ~0 even for
    data no linear map explains (two zeroed snapshots inside it: wrong eigenvalues) or noisy
    data; the one-step fit error tells them apart from exact data, and recomputing it from
    the fitted modes by brute force gives the same number."""
    X = _two_mode_trajectory(rng)
    zeroed = X.copy()
    zeroed[:, 3:5] = 0.0
    noisy = X + 1e-3 * rng.standard_normal(X.shape)
    lift = rng.standard_normal((50, 2))
    results = {name: dmd_rrr(data) for name, data in
               [("exact", X), ("zeroed", zeroed), ("noisy", noisy), ("lifted", lift @ zeroed)]}
    for km in results.values():
        assert km.residuals.max() < 1e-12
    assert results["exact"].fit_error < 1e-13
    assert match_error(results["exact"].eigenvalues, [0.5, 0.9]) < 1e-12
    assert match_error(results["zeroed"].eigenvalues, [0.5, 0.9]) > 0.05
    assert results["zeroed"].fit_error > 0.1
    assert results["lifted"].fit_error == pytest.approx(results["zeroed"].fit_error, rel=1e-2)
    assert 1e-4 < results["noisy"].fit_error < 1e-2
    # brute force: A_k = Y X^+ on the fitted rank, applied to every pair
    km = results["zeroed"]
    A = km.modes @ np.diag(km.eigenvalues) @ np.linalg.pinv(km.modes)
    Y, Xp = zeroed[:, 1:], zeroed[:, :-1]
    assert np.linalg.norm(Y - A @ Xp) / np.linalg.norm(Y) == pytest.approx(km.fit_error, rel=1e-8)
    # scale invariance, and survival through select()
    assert dmd_rrr(1e-200 * zeroed).fit_error == pytest.approx(km.fit_error, rel=1e-10)
    assert km.select(min_importance=0.5).fit_error == km.fit_error


def test_fit_error_is_zero_when_the_snapshots_are_independent(rng):
    """Full column rank (more dimensions than snapshots): any Y is fitted exactly, so the fit
    error is 0 even for pure noise, whose residuals are large instead."""
    km = dmd_rrr(rng.standard_normal((200, 21)))
    assert km.rank == 20 and km.fit_error < 1e-12
    assert km.residuals.min() > 0.05


def test_refinement_never_increases_residuals(rng):
    n, m = 300, 80
    F = np.cumsum(rng.standard_normal((n, m + 1)), axis=1)
    plain = dmd_rrr(F, refine=False)
    refined = dmd_rrr(F, refine=True)
    # compare as sorted multisets: refinement changes the pairs slightly
    assert np.sort(refined.residuals).sum() <= np.sort(plain.residuals).sum() * (1 + 1e-12)
    assert np.mean(refined.residuals) < np.mean(plain.residuals)


def test_forecast_of_decaying_linear_system(rng):
    D, basis, _ = planted_system(rng, 9, 40)
    D = D * 0.9
    state = rng.standard_normal(9)
    states = [state]
    for _ in range(30 + 15):
        states.append(D @ states[-1])
    F = basis @ np.array(states).T
    km = dmd_rrr(F[:, :31])
    future = km.forecast(15)
    assert future.shape == (40, 15)
    assert np.isrealobj(future)
    assert np.abs(future - F[:, 31:]).max() < 1e-8 * np.abs(F).max()


def test_float32_input_is_computed_in_float64(rng):
    F, expected, _ = gradient_descent(rng)
    km = dmd_rrr(F.astype(np.float32))
    assert km.modes.dtype == np.complex128
    assert km.eigenvalues.dtype == np.complex128
    # float32 rounding (~6e-8 relative) limits accuracy; the default tol drops the noise
    # directions, and the fast modes (|λ|^20 ~ 1e-7) are the least accurate
    assert km.rank == 7
    assert match_error(km.eigenvalues, np.append(expected, 1.0)) < 1e-3


def test_complex_data(rng):
    lam = np.array([0.9 * np.exp(0.4j), 0.5 + 0.2j, -0.3j])
    basis = rng.standard_normal((20, 3)) + 1j * rng.standard_normal((20, 3))
    F = basis @ (lam[:, None] ** np.arange(12)[None, :])
    km = dmd_rrr(F)
    assert not km.real_data
    assert match_error(km.eigenvalues, lam) < 1e-10
    assert np.allclose(km.reconstruct(np.arange(12)), F, atol=1e-10)


def test_modes_unit_norm_and_sorted_by_importance(rng):
    F, _, _ = gradient_descent(rng)
    km = dmd_rrr(F)
    assert np.allclose(np.linalg.norm(km.modes, axis=0), 1.0, atol=1e-12)
    assert np.all(np.diff(km.importance) <= 0)
    assert km.importance[0] == 1.0
    assert km.modes.flags.writeable is False


def test_rank_caps_the_subspace(rng):
    F, _, _ = gradient_descent(rng)
    assert dmd_rrr(F, rank=3).rank == 3
    assert dmd_rrr(F, tol=0.5).rank < 7


def test_select_by_importance_keeps_fields_consistent(rng):
    F, _, _ = gradient_descent(rng)
    km = dmd_rrr(F)
    top = km.select(min_importance=0.5)
    assert 1 <= len(top) < len(km)
    assert np.all(top.importance >= 0.5)
    assert top.modes.shape == (F.shape[0], len(top))
    idx = [int(np.argmin(np.abs(km.eigenvalues - lam))) for lam in top.eigenvalues]
    assert np.array_equal(km.amplitudes[idx], top.amplitudes)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(X=np.array([[1.0, np.nan], [0.0, 1.0]])), ValueError, "X"),
        (dict(X=np.array([[1.0, np.inf, 2.0]])), ValueError, "X"),
        (dict(X=np.ones((3, 1))), ValueError, "X"),
        (dict(X=np.ones((3, 4)), Y=np.ones((3, 5))), ValueError, "Y"),
        (dict(X=np.ones((3, 4)), Y=np.array([[np.nan] * 4] * 3)), ValueError, "Y"),
        (dict(X=np.zeros((5, 4))), ValueError, "rank 0"),
        (dict(X=np.arange(5.0)), ValueError, "X"),
        (dict(X=np.array([["a", "b"], ["c", "d"]])), TypeError, "X"),
        (dict(X=np.ones((3, 4), dtype=bool)), TypeError, "X"),
        (dict(X=np.ones((3, 4)), tol=1.5), ValueError, "tol"),
        (dict(X=np.ones((3, 4)), rank=0), ValueError, "rank"),
        (dict(X=np.ones((3, 4)), rank=2.5), TypeError, "rank"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, name):
    X = kwargs.pop("X")
    with pytest.raises(error, match=name):
        dmd_rrr(X, **kwargs)


def test_select_and_forecast_validate_arguments(rng):
    km = dmd_rrr(rng.standard_normal((10, 6)))
    with pytest.raises(ValueError, match="max_residual"):
        km.select(max_residual=-1)
    with pytest.raises(ValueError, match="steps"):
        km.forecast(0)
    with pytest.raises(TypeError, match="t must"):
        km.reconstruct(1.5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 40),
    m=st.integers(2, 25),
    true_rank=st.integers(1, 8),
    log_scale=st.floats(-150, 150),
    refine=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_shapes_ranks_scales_never_crash_or_nan(n, m, true_rank, log_scale, refine, seed):
    r = np.random.default_rng(seed)
    F = r.standard_normal((n, true_rank)) @ r.standard_normal((true_rank, m)) * 10.0 ** (log_scale / 10)
    km = dmd_rrr(F, refine=refine)
    assert 1 <= km.rank <= min(true_rank, n, m - 1)
    for field in (km.eigenvalues, km.modes, km.residuals, km.amplitudes, km.importance):
        assert np.all(np.isfinite(field))
    assert np.allclose(np.linalg.norm(km.modes, axis=0), 1.0)


# ----------------------------------------------------------------------------- embedding

def test_delay_embed_layout():
    series = np.arange(6.0)
    H = delay_embed(series, 3)
    assert H.shape == (3, 4)
    assert np.array_equal(H[:, 0], [0, 1, 2]) and np.array_equal(H[:, 3], [3, 4, 5])
    two = np.stack([np.arange(5.0), 10 + np.arange(5.0)], axis=1)
    H2 = delay_embed(two, 2)
    assert H2.shape == (4, 4)
    assert np.array_equal(H2[:, 1], [1, 11, 2, 12])


@pytest.mark.parametrize("delays, error", [(0, ValueError), (7, ValueError), (2.0, TypeError)])
def test_delay_embed_rejects_bad_delays(delays, error):
    with pytest.raises(error, match="delays"):
        delay_embed(np.arange(6.0), delays)


def test_delay_embed_rejects_nan():
    with pytest.raises(ValueError, match="series"):
        delay_embed(np.array([1.0, np.nan, 2.0]), 2)


# ----------------------------------------------------------------------------- diagnostics

def modes_with(eigenvalues, importance, residuals=None):
    k = len(eigenvalues)
    return KoopmanModes(
        eigenvalues=np.asarray(eigenvalues, dtype=complex),
        modes=np.eye(max(k, 1), k, dtype=complex),
        residuals=np.zeros(k) if residuals is None else np.asarray(residuals, dtype=float),
        amplitudes=np.asarray(importance, dtype=complex),
        importance=np.asarray(importance, dtype=float),
        rank=k, singular_values=np.ones(k), t_end=10, real_data=True, fit_error=0.0,
    )


def test_diagnostics_known_values():
    km = modes_with([1.0, 0.995, 0.9, 1.2, 0.1], [1.0, 0.5, 0.25, 0.25, 0.01])
    important_total = 1.0 + 0.5 + 0.25 + 0.25
    cut = dict(delta=0.01, min_importance=0.05)  # leaves out the 0.01-important mode
    assert spectral_radius(km) == pytest.approx(1.2)
    assert unit_cluster(km, **cut) == pytest.approx(1.5 / important_total)
    assert growing_importance(km, **cut) == pytest.approx(0.25 / important_total)
    assert slowest_decay(km, **cut) == pytest.approx(-np.log(0.9))
    assert epochs_to_shrink(km, 100.0, **cut) == pytest.approx(np.log(100) / -np.log(0.9))
    diag = diagnose(km, **cut)
    assert diag.n_important == 4
    logs = diag.as_logs()
    assert logs["koopman_unit_cluster"] == pytest.approx(1.5 / important_total)
    # the unimportant mode counts once its threshold is lowered
    assert diagnose(km, delta=0.01, min_importance=0.0).n_important == 5


def test_diagnostics_use_residual_filter():
    km = modes_with([1.0, 0.5], [1.0, 1.0], residuals=[0.5, 1e-8])
    assert unit_cluster(km, max_residual=1e-3) == 0.0
    assert spectral_radius(km, max_residual=1e-3) == pytest.approx(0.5)


def test_converged_spectrum_needs_no_epochs():
    km = modes_with([1.0], [1.0])
    assert epochs_to_shrink(km) == 0.0
    with pytest.raises(ValueError, match="factor"):
        epochs_to_shrink(km, 0.5)
    with pytest.raises(TypeError, match="modes"):
        unit_cluster(np.ones(3))


def test_diagnose_reads_analysis_options():
    from keras_koopman.koopman import AnalysisOptions

    km = modes_with([1.0, 0.995, 0.9, 1.2, 0.1], [1.0, 0.5, 0.25, 0.25, 0.01],
                    residuals=[0.0, 0.0, 0.5, 0.0, 0.0])
    options = AnalysisOptions(delta=0.001, min_importance=0.2, max_residual=0.1)
    assert diagnose(km, options=options) == diagnose(km, **options.diagnose_kwargs())
    assert diagnose(km, options=options).n_important == 3  # 0.9 fails the residual
    # an explicit keyword overrides the option; omitted ones come from DEFAULT_OPTIONS
    assert diagnose(km, options, min_importance=0.0).n_important == 4
    assert diagnose(km) == diagnose(km, AnalysisOptions())
    assert diagnose(km, delta=0.01).unit_cluster > diagnose(km, options).unit_cluster
    with pytest.raises(TypeError, match="options"):
        diagnose(km, {"delta": 0.1})


def test_diagnostics_reject_non_finite_modes():
    km = modes_with([np.nan, 0.5], [1.0, 1.0])
    with pytest.raises(ValueError, match="modes"):
        diagnose(km)


# ----------------------------------------------------------------------------- magnitudes

def two_mode_trajectory(rng, n=20, steps=12):
    basis = rng.standard_normal((n, 2))
    return basis @ np.array([0.9 ** np.arange(steps), 0.5 ** np.arange(steps)])


@pytest.mark.parametrize("s", [1e-300, 1e-200, 1e-155, 1e-100, 1e100, 1e154, 1e155, 1e200, 1e300])
@pytest.mark.parametrize("scale", [True, False])
def test_magnitude_does_not_change_the_decomposition(rng, s, scale):
    F = two_mode_trajectory(rng)
    ref = dmd_rrr(F, scale=scale)
    km = dmd_rrr(s * F, scale=scale)
    assert match_error(km.eigenvalues, [0.9, 0.5]) < 1e-12
    assert match_error(km.eigenvalues, ref.eigenvalues) < 1e-12
    assert np.allclose(km.importance, ref.importance, rtol=1e-10, atol=1e-12)
    assert np.all(np.isfinite(km.residuals)) and km.residuals.max() < 1e-12
    assert np.allclose(km.amplitudes / s, ref.amplitudes, rtol=1e-9)
    assert np.allclose(km.reconstruct(np.arange(12)), s * F, rtol=0, atol=1e-10 * s)


def test_one_huge_snapshot_gives_finite_residuals_and_importance(rng):
    F = two_mode_trajectory(rng)
    F[:, 5] *= 1e200
    km = dmd_rrr(F)
    assert np.all(np.isfinite(km.residuals)) and np.all(np.isfinite(km.importance))
    assert km.importance.max() == 1.0
    assert km.residuals.max() > 1e100  # not a linear trajectory: the residuals say so


def test_snapshots_spanning_300_orders_are_rejected_by_name(rng):
    F = rng.standard_normal((10, 6))
    F[:, 2] *= 1e-300
    F[:, 4] *= 1e5
    with pytest.raises(ValueError, match="span more than float64"):
        dmd_rrr(F)
    with pytest.raises(ValueError, match="X, Y"):
        dmd_rrr(F[:, :3], F[:, 3:])


def test_exact_decay_over_280_orders_is_decomposed(rng):
    """λ = 1e-40 over 8 steps: the snapshots span 280 orders of magnitude."""
    basis = rng.standard_normal((15, 2))
    F = basis @ np.array([1e-40 ** np.arange(8.0), 0.5 ** np.arange(8.0)])
    km = dmd_rrr(F)
    assert match_error(km.eigenvalues, [1e-40, 0.5]) < 1e-12


def test_norm_beyond_float64_is_a_value_error():
    F = np.full((1000, 5), 1.7e308) * np.array([1.0, 0.9, 0.8, 0.7, 0.6])
    with pytest.raises(ValueError, match="overflow"):
        dmd_rrr(F)


@pytest.mark.parametrize("s", [1e-300, 1e300])
def test_incremental_qr_at_extreme_magnitudes(rng, s):
    from keras_koopman import IncrementalQR

    F = two_mode_trajectory(rng, n=30)
    qr = IncrementalQR(30)
    for column in (s * F).T:
        qr.append(column)
    assert qr.R.shape[0] == 2  # exactly rank 2 at any magnitude
    assert np.allclose(qr.Q @ qr.R, s * F, rtol=0, atol=1e-12 * s)
    assert np.allclose(qr.Q.T @ qr.Q, np.eye(2), atol=1e-12)
    assert match_error(dmd_rrr(qr.R).eigenvalues, [0.9, 0.5]) < 1e-12


def test_incremental_qr_rejects_norm_overflow():
    from keras_koopman import IncrementalQR

    qr = IncrementalQR(100)
    with pytest.raises(ValueError, match="snapshot"):
        qr.append(np.full(100, 1e308))


def test_check_finite_is_exact_for_huge_finite_data():
    from keras_koopman.koopman._validation import check_finite

    big = np.full((50, 3), 1e308)
    check_finite(big, "X")  # sums overflow, entries are finite
    big[7, 2] = np.inf
    with pytest.raises(ValueError, match="X contains inf .*column 2"):
        check_finite(big, "X")
    with pytest.raises(ValueError, match="series contains NaN"):
        check_finite(np.array([[1e308 + 0j, complex(1.0, np.nan)]]), "series")


@pytest.mark.parametrize("s", [1e-300, 1e300])
def test_series_at_extreme_magnitudes(s):
    x = damped_oscillator(60)[:, 0]
    km = dmd_rrr_series(s * x, 20)
    assert match_error(km.eigenvalues, [OSC, np.conj(OSC)]) < 1e-9
    assert np.allclose(km.reconstruct(np.arange(41))[0], s * x[:41], rtol=0, atol=1e-10 * s)


def _rank_one(rate, steps=8, n=10):
    return np.outer(np.random.default_rng(5).standard_normal(n), rate ** np.arange(steps))


@pytest.mark.parametrize("name, data, expected, tol", [
    ("rank one", _rank_one(0.7), [0.7], 1e-12),
    ("constant", np.ones((5, 6)), [1.0], 1e-12),
    ("one row", 0.8 ** np.arange(10.0)[None, :], [0.8], 1e-12),
    ("integers", np.array([[1, 2, 4, 8, 16]]), [2.0], 1e-12),
    ("float16", two_mode_trajectory(np.random.default_rng(0)).astype(np.float16), [0.9, 0.5], 1e-3),
    ("complex at 1e300", 1e300 * (np.array([[1.0, 2j], [1j, 1.0], [0.5, -1.0]])
                                  @ (np.array([0.9 * np.exp(0.4j), 0.5 + 0.2j])[:, None]
                                     ** np.arange(10))), [0.9 * np.exp(0.4j), 0.5 + 0.2j], 1e-10),
    ("growing from 1e-250", _rank_one(1.5, steps=1500, n=3) * 1e-250, [1.5], 1e-10),
])
def test_edge_cases_recover_the_planted_spectrum(name, data, expected, tol):
    km = dmd_rrr(data)
    important = km.select(min_importance=1e-6)
    assert match_error(important.eigenvalues, expected) < tol, name
    assert np.all(np.isfinite(km.residuals)) and np.all(np.isfinite(km.importance))


def test_subnormal_input_finds_true_pairs_and_flags_rounding_noise(rng):
    km = dmd_rrr(two_mode_trajectory(rng) * 1e-310)
    trusted = km.select(max_residual=1e-10)
    assert match_error(trusted.eigenvalues, [0.9, 0.5]) < 1e-12
    spurious = km.residuals > 1e-10  # the input's own subnormal rounding acts as noise
    assert np.all(km.importance[spurious] < 1e-10)


def test_consecutive_snapshots_300_orders_apart_are_rejected():
    with pytest.raises(ValueError, match="X: snapshot norms span"):
        dmd_rrr(np.array([[1e-150, 1e150, 1.0], [1e-150, 2e150, 1.0]]), tol=0.0)


@pytest.mark.slow
def test_two_million_rows():
    rng = np.random.default_rng(3)
    n = 2_000_000
    F = (np.outer(rng.standard_normal(n), 0.9 ** np.arange(6))
         + np.outer(rng.standard_normal(n), 0.5 ** np.arange(6)))
    km = dmd_rrr(F)
    assert match_error(km.eigenvalues, [0.9, 0.5]) < 1e-12
