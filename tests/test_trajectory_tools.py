"""IncrementalQR, SparseSignSketch, the analysis helpers and the trajectory store."""

import json

import numpy as np
import pytest

from keras_koopman import (
    IncrementalQR,
    KoopmanAnalysis,
    SparseSignSketch,
    TrainingTrajectory,
    analyze_series,
    analyze_weights,
    dmd_rrr,
)
from keras_koopman.trajectory import TrajectoryStore


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_incremental_qr_reproduces_the_trajectory(rng):
    F = np.cumsum(rng.standard_normal((500, 40)), axis=1)
    F[:, 20] = 2 * F[:, 3] - F[:, 7]  # a snapshot inside the span adds no basis vector
    qr = IncrementalQR(500, capacity=2)
    for column in F.T:
        qr.append(column)
    assert len(qr) == 40
    assert qr.Q.shape == (500, 39)
    np.testing.assert_allclose(qr.Q @ qr.R, F, atol=1e-12 * np.abs(F).max())
    np.testing.assert_allclose(qr.Q.T @ qr.Q, np.eye(39), atol=1e-13)


def test_compressed_trajectory_has_the_same_spectrum(rng):
    F = np.cumsum(rng.standard_normal((300, 30)), axis=1)
    qr = IncrementalQR(300)
    for column in F.T:
        qr.append(column)
    full, compressed = dmd_rrr(F), dmd_rrr(qr.R, tol=1e-13)
    np.testing.assert_allclose(np.sort_complex(full.eigenvalues), np.sort_complex(compressed.eigenvalues),
                               atol=1e-9)
    np.testing.assert_allclose(np.sort(full.residuals), np.sort(compressed.residuals), atol=1e-9)


def test_incremental_qr_rejects_bad_snapshots():
    qr = IncrementalQR(3)
    with pytest.raises(ValueError, match="snapshot"):
        qr.append([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="3 entries"):
        qr.append([1.0, 2.0])
    with pytest.raises(ValueError, match="n_features"):
        IncrementalQR(0)


def test_sketch_is_linear_seeded_and_norm_preserving_on_average(rng):
    sketch = SparseSignSketch(20_000, 500, seed=3)
    x, y = rng.standard_normal(20_000), rng.standard_normal(20_000)
    np.testing.assert_allclose(sketch(2 * x - y), 2 * sketch(x) - sketch(y), atol=1e-9)
    np.testing.assert_array_equal(sketch(x), SparseSignSketch(20_000, 500, seed=3)(x))
    assert not np.allclose(sketch(x), SparseSignSketch(20_000, 500, seed=4)(x))
    ratios = [np.linalg.norm(sketch(v)) / np.linalg.norm(v) for v in rng.standard_normal((20, 20_000))]
    assert abs(np.mean(ratios) - 1) < 0.05


def test_sketch_preserves_exact_linear_spectrum(rng):
    """Injective on the trajectory's span => identical DMD eigenvalues (exact data)."""
    lam = np.array([0.95, 0.8, 0.5, -0.3])
    basis = rng.standard_normal((5_000, 4))
    F = basis @ (lam[:, None] ** np.arange(25)[None, :])
    sketch = SparseSignSketch(5_000, 60, seed=0)
    S = np.stack([sketch(col) for col in F.T], axis=1)
    np.testing.assert_allclose(np.sort(dmd_rrr(S).eigenvalues.real), np.sort(lam), atol=1e-10)


def test_sketch_validates_arguments():
    with pytest.raises(ValueError, match="dim"):
        SparseSignSketch(10, 20)
    with pytest.raises(ValueError, match="nnz"):
        SparseSignSketch(10, 5, nnz=0)


def decaying_loss(T=40):
    t = np.arange(1, T + 1)
    return 0.3 + 2.0 * 0.8 ** t + 0.5 * 0.5 ** t, t.astype(float)


def test_analyze_series_recovers_loss_exponentials():
    values, epochs = decaying_loss()
    analysis = analyze_series(values, epochs, observable="loss")
    assert analysis.delays == 13
    top = np.sort(analysis.eigenvalues[analysis.importance > 1e-3].real)
    np.testing.assert_allclose(top, [0.5, 0.8, 1.0], atol=1e-6)
    assert analysis.diagnostics.epochs_to_converge == pytest.approx(np.log(100) / -np.log(0.8), rel=1e-4)


def test_analyze_series_drops_leading_nan_and_rejects_inner_nan():
    values, epochs = decaying_loss()
    padded = np.concatenate([[np.nan], values])
    assert analyze_series(padded, np.arange(41.0), observable="val_loss").first_epoch == 1.0
    values[5] = np.nan
    with pytest.raises(ValueError, match="val_loss"):
        analyze_series(values, epochs, observable="val_loss")
    with pytest.raises(ValueError, match="at least 4"):
        analyze_series([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], observable="loss")
    with pytest.raises(ValueError, match="delays"):
        analyze_series(*decaying_loss(), observable="loss", options={"delays": 39})


def test_analysis_dict_roundtrip_through_json():
    analysis = analyze_series(*decaying_loss(), observable="loss")
    back = KoopmanAnalysis.from_dict(json.loads(json.dumps(analysis.to_dict())))
    np.testing.assert_array_equal(back.eigenvalues, analysis.eigenvalues)
    np.testing.assert_array_equal(back.importance, analysis.importance)
    assert back.diagnostics == analysis.diagnostics
    assert back.fit_error == analysis.fit_error == analysis.modes.fit_error
    assert back.modes is None and analysis.modes is not None
    old = analysis.to_dict()
    del old["fit_error"]  # a record written before the field existed
    assert KoopmanAnalysis.from_dict(old).fit_error is None
    for bad in ("0.1", -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="fit_error"):
            KoopmanAnalysis.from_dict({**analysis.to_dict(), "fit_error": bad})


def test_analysis_fit_error_tells_a_noisy_curve_from_an_exact_one(rng):
    """A Hankel matrix of a curve spans its space, so residuals stay tiny under noise; the
    analysis's fit error is round-off for an exact sum of exponentials and about the noise's
    relative level for a noisy one."""
    values, epochs = decaying_loss()
    exact = analyze_series(values, epochs, observable="loss")
    noisy = analyze_series(values * (1 + 0.01 * rng.standard_normal(values.size)), epochs,
                           observable="loss")
    assert exact.fit_error < 1e-6
    assert 3e-4 < noisy.fit_error < 0.05
    # at the default depth (13 rows, 28 columns) the residuals see nothing of the noise; with
    # more rows than columns they do, and then the fit error is the one that sees nothing
    assert noisy.delays == 13 and noisy.residuals.max() < 1e-12
    tall = analyze_series(values * (1 + 0.01 * rng.standard_normal(values.size)), epochs,
                          observable="loss", options={"delays": 27})
    assert tall.residuals[np.argmax(tall.importance)] > 1e-4 and tall.fit_error < 1e-12


def test_analyze_weights_checks_epoch_count(rng):
    with pytest.raises(ValueError, match="snapshots"):
        analyze_weights(rng.standard_normal((10, 5)), np.arange(4.0))


def test_too_few_snapshots_is_the_one_condition_a_monitor_waits_out(rng):
    from keras_koopman.analysis import NotEnoughSnapshots

    with pytest.raises(NotEnoughSnapshots):
        analyze_weights(rng.standard_normal((10, 2)), np.arange(2.0))
    with pytest.raises(NotEnoughSnapshots):
        analyze_series([1.0, 0.5, 0.25], [1.0, 2.0, 3.0], observable="loss")
    with pytest.raises(ValueError) as caught:  # NaN inside a series is not "too few"
        analyze_series([1.0, np.nan, 0.5, 0.25, 0.1], np.arange(1.0, 6.0), observable="loss")
    assert not isinstance(caught.value, NotEnoughSnapshots)


def test_memory_store_matches_disk_store(tmp_path, rng):
    rows = rng.standard_normal((6, 9)).astype(np.float32)
    memory, disk = TrajectoryStore(9), TrajectoryStore(9, path=tmp_path / "d")
    for i, row in enumerate(rows):
        for store in (memory, disk):
            store.append_weights(float(i), row)
            store.append_scalars(float(i), {"loss": float(i) / 2})
    np.testing.assert_array_equal(memory.weights(), disk.weights())
    memory.save(tmp_path / "m")
    disk.close()
    a, b = TrainingTrajectory.load(tmp_path / "m"), TrainingTrajectory.load(tmp_path / "d")
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.weights, rows.T)
    np.testing.assert_array_equal(a.scalars["loss"][1], np.arange(6) / 2)
    assert not list((tmp_path / "m").glob("*.tmp"))


def test_loading_something_else_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="trajectory.json"):
        TrainingTrajectory.load(tmp_path)
    (tmp_path / "trajectory.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a keras-koopman-trajectory"):
        TrainingTrajectory.load(tmp_path)


def test_refine_threshold_refines_only_important_pairs(rng):
    s = np.cumsum(rng.standard_normal((200, 41)), axis=1)
    plain, partial, full = (dmd_rrr(s, refine=r) for r in (False, 0.2, True))

    def matches(lam, res, other):
        j = np.argmin(np.abs(other.eigenvalues - lam))
        return abs(other.eigenvalues[j] - lam) < 1e-12 and abs(other.residuals[j] - res) < 1e-12

    refined = [matches(l, r, full) and not matches(l, r, plain)
               for l, r in zip(partial.eigenvalues, partial.residuals)]
    untouched = [matches(l, r, plain) for l, r in zip(partial.eigenvalues, partial.residuals)]
    assert all(a or b for a, b in zip(refined, untouched))
    assert 0 < sum(refined) < len(partial) // 2  # only the few important pairs
    assert refined[0]  # the most important pair is among them
    with pytest.raises(ValueError, match="refine"):
        dmd_rrr(s, refine=1.5)
