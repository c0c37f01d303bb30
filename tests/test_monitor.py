"""KoopmanMonitor inside model.fit: truth test, logs, decisions, storage, sketching."""

import copy
import csv
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_koopman import KoopmanMonitor, TrainingTrajectory
from keras_koopman.monitor import DIAGNOSTIC_KEYS

ROOT = Path(__file__).resolve().parents[1]


def regression_problem(n_features=5, scales=(1.5, 1.2, 0.9, 0.6, 0.4), frac=0.5, seed=0):
    """Full-batch MSE regression whose SGD epoch map is w -> (I - ηH) w + ηb exactly."""
    rng = np.random.default_rng(seed)
    N = max(64, 2 * n_features)
    Z = rng.standard_normal((N, n_features))
    Z -= Z.mean(0)
    Z = np.linalg.qr(Z)[0] * np.sqrt(N)
    X = (Z * np.asarray(scales)).astype(np.float32)
    y = (X @ rng.standard_normal(n_features) + 0.5 + 0.1 * rng.standard_normal(N)).astype(np.float32)[:, None]
    Xa = np.hstack([X, np.ones((N, 1))]).astype(np.float64)
    H = 2.0 / N * Xa.T @ Xa  # Hessian of the mean squared error in (kernel, bias)
    h = np.linalg.eigvalsh(H)
    eta = frac / h.max()
    return X, y, eta, np.append(1.0 - eta * h, 1.0)


def linear_model(n_features, eta, seed=1):
    model = keras.Sequential([
        keras.Input((n_features,)),
        keras.layers.Dense(1, kernel_initializer=keras.initializers.RandomNormal(stddev=3.0, seed=seed),
                           bias_initializer=keras.initializers.Constant(-3.0)),
    ])
    model.compile(keras.optimizers.SGD(learning_rate=eta), "mse")
    return model


def match_error(found, expected):
    d = np.abs(np.asarray(found)[:, None] - np.asarray(expected)[None, :])
    return max(d.min(axis=0).max(), d.min(axis=1).max())


@pytest.fixture(scope="module")
def regression_run():
    X, y, eta, expected = regression_problem()
    model = linear_model(5, eta)
    monitor = KoopmanMonitor(observables=("weights", "loss"), analyze_at=(40,), analyze_every=10)
    history = model.fit(X, y, batch_size=len(X), epochs=40, shuffle=False, verbose=0,
                        callbacks=[monitor])
    return monitor, history, expected


def test_truth_linear_regression_spectrum(regression_run):
    """Eigenvalues 1 - η·eig(H) and 1 of the exact affine epoch map, float32 weights, 40 epochs."""
    monitor, _, expected = regression_run
    analysis = [a for a in monitor.analyses if a.observable == "weights" and a.last_epoch == 40][0]
    assert analysis.n_snapshots == 41  # the epoch-0 snapshot is included
    assert analysis.rank == 7
    assert match_error(analysis.eigenvalues, expected) < 1e-4


def test_without_constant_observable_the_affine_spectrum_is_incomplete():
    """Why augment_constant defaults to True: 6 weights cannot show 6 decays and the fixed point."""
    X, y, eta, expected = regression_problem()
    monitor = KoopmanMonitor(observables=("weights",), analyze_at=(40,), augment_constant=False)
    linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=40, shuffle=False, verbose=0,
                             callbacks=[monitor])
    analysis = monitor.analyses[0]
    assert analysis.rank <= 6
    assert match_error(analysis.eigenvalues, expected) > 1e-3


def test_logs_carry_diagnostics_every_epoch(regression_run, tmp_path):
    monitor, history, _ = regression_run
    for key in DIAGNOSTIC_KEYS:
        assert len(history.history[key]) == 40
    cluster = np.asarray(history.history["koopman_unit_cluster"])
    assert np.all(np.isnan(cluster[:9]))  # before the first analysis (epoch 10)
    assert np.all(np.isfinite(cluster[9:]))
    last = [a for a in monitor.analyses if a.observable == "weights"][-1]
    assert cluster[-1] == pytest.approx(last.diagnostics.unit_cluster)
    assert history.history["koopman_nonfinite"][-1] == 0.0


def test_csv_logger_sees_the_diagnostics(tmp_path):
    X, y, eta, _ = regression_problem()
    log = tmp_path / "log.csv"
    monitor = KoopmanMonitor(observables=("weights", "loss"), analyze_every=5)
    linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=10, verbose=0, shuffle=False,
                             callbacks=[monitor, keras.callbacks.CSVLogger(str(log))])
    rows = list(csv.DictReader(log.open()))
    assert len(rows) == 10
    assert rows[4]["koopman_spectral_radius"] not in ("", "nan", "NA")
    assert float(rows[9]["koopman_spectral_radius"]) == pytest.approx(
        monitor.analyses[-2].diagnostics.spectral_radius)


def test_analyses_schedule_and_windows():
    X, y, eta, _ = regression_problem()
    monitor = KoopmanMonitor(observables=("weights", "loss"), analyze_at=(12,), analyze_every=8,
                             window=6)
    linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=16, verbose=0, shuffle=False,
                             callbacks=[monitor])
    got = [(a.observable, a.last_epoch, a.n_snapshots) for a in monitor.analyses]
    assert got == [("weights", 8, 6), ("loss", 8, 6), ("weights", 12, 6), ("loss", 12, 6),
                   ("weights", 16, 6), ("loss", 16, 6)]
    loss_analysis = monitor.analyses[1]
    assert loss_analysis.delays == 2 and loss_analysis.first_epoch == 3


def test_nonfinite_loss_stops_training_and_is_logged():
    X, y, _, _ = regression_problem()
    model = linear_model(5, 1e6)  # diverges to inf/NaN within a few epochs
    monitor = KoopmanMonitor(observables=("weights", "loss"), analyze_every=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(X, y, batch_size=len(X), epochs=50, verbose=0, callbacks=[monitor])
    assert len(history.history["loss"]) < 50
    assert history.history["koopman_nonfinite"][-1] == 1.0
    assert "non-finite" in monitor.stop_reason
    assert any("non-finite" in str(w.message) for w in caught)
    # nothing non-finite was recorded
    assert np.all(np.isfinite(monitor.trajectory()))


def frozen_model(n_features=5):
    """A model that cannot learn (learning rate 0): its trajectory sits at a fixed point."""
    X, y, _, _ = regression_problem()
    return X, y, linear_model(n_features, 0.0)


@pytest.mark.parametrize("warmup, patience, stop", [(6, {}, 6), (2, {}, 6),
                                                     (2, {"stop_patience": 1}, 2)])
def test_stop_at_fixed_point_after_warmup(warmup, patience, stop):
    """Analyses at epochs 2, 4, 6, ... all see the fixed point: training stops at the first
    analysis epoch after the warm-up that completes ``stop_patience`` (default 3) of them."""
    X, y, model = frozen_model()
    monitor = KoopmanMonitor(observables=("weights", "loss"), analyze_every=2, primary="weights",
                             stop_at_fixed_point=True, warmup=warmup, fixed_point_threshold=0.9,
                             **patience)
    history = model.fit(X, y, batch_size=len(X), epochs=30, verbose=0, callbacks=[monitor])
    assert len(history.history["loss"]) == stop
    assert "fixed point" in monitor.stop_reason


FLICKER = {3: 0.95, 4: 0.2, 5: 0.95, 6: 0.3, 7: 0.95, 8: 0.95, 9: 0.95, 10: 0.95}


@pytest.mark.parametrize("patience, stop", [(1, 3), (2, 8), (3, 9)])
def test_stop_patience_counts_consecutive_analyses(script_unit_cluster, patience, stop):
    """A spike of the unit cluster stops training only with ``stop_patience=1``; a reading
    below the threshold restarts the count."""
    X, y, model = frozen_model()
    calls = script_unit_cluster(FLICKER)
    monitor = KoopmanMonitor(observables=("weights",), analyze_every=1, stop_at_fixed_point=True,
                             warmup=1, stop_patience=patience)
    history = model.fit(X, y, batch_size=len(X), epochs=30, verbose=0, callbacks=[monitor])
    assert len(history.history["loss"]) == stop
    assert history.history["koopman_unit_cluster"][-len(calls):] == pytest.approx(calls)
    assert "fixed point" in monitor.stop_reason
    assert ("consecutive" in monitor.stop_reason) == (patience > 1)


@pytest.mark.parametrize("value", [0, -1, 1.5, "2"])
def test_stop_patience_must_be_a_positive_integer(value):
    with pytest.raises((ValueError, TypeError), match="stop_patience"):
        KoopmanMonitor(stop_patience=value)


def test_learning_model_is_not_stopped_early(regression_run):
    """The same rule leaves a still-converging run alone (its transients are important)."""
    monitor, history, _ = regression_run
    cluster = np.asarray(history.history["koopman_unit_cluster"])
    assert np.nanmax(cluster[:20]) < 0.9


@pytest.mark.parametrize("rule, reason", [("loss", "still 100%"), ("spectral", "stagnation")])
def test_poor_initialization_stop_and_warn(rule, reason):
    X, y, model = frozen_model()
    monitor = KoopmanMonitor(observables=("weights", "loss"), on_poor_initialization="stop",
                             poor_init_rule=rule, poor_init_epochs=(5, 10))
    with pytest.warns(RuntimeWarning, match="poor initialisation"):
        history = model.fit(X, y, batch_size=len(X), epochs=30, verbose=0, callbacks=[monitor])
    assert len(history.history["loss"]) == 5
    assert history.history["koopman_poor_init"][-1] == 1.0
    assert reason in monitor.stop_reason
    # the spectral rule analysed the window by itself (no analyze_every given)
    assert bool(monitor.analyses) == (rule == "spectral")


def test_poor_initialization_restart_reinitializes_weights():
    X, y, model = frozen_model()
    before = [v.numpy().copy() for v in model.trainable_variables]
    monitor = KoopmanMonitor(observables=("weights", "loss"), analyze_every=1,
                             on_poor_initialization="restart", poor_init_epochs=(5, 30),
                             max_restarts=2)
    with pytest.warns(RuntimeWarning):
        history = model.fit(X, y, batch_size=len(X), epochs=40, verbose=0, callbacks=[monitor])
    after = [v.numpy() for v in model.trainable_variables]
    assert monitor.restarts == 2
    assert not np.allclose(before[0], after[0])
    # after two restarts the third detection stops training (lr 0 never learns)
    assert "2 restarts" in monitor.stop_reason
    assert len(history.history["loss"]) == 15


@pytest.mark.parametrize("budget, flagged", [(80, False), (12, True)])
def test_converging_run_is_flagged_only_if_it_cannot_finish_in_the_budget(budget, flagged):
    """A healthy run whose slowest mode needs ~50 epochs: fine with 80 epochs, too slow for 12."""
    X, y, eta, _ = regression_problem()
    check = KoopmanMonitor(observables=("weights", "loss"), analyze_every=1,
                           on_poor_initialization="stop", poor_init_epochs=(5, 10),
                           poor_init_rule="spectral", check_budget=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=budget, verbose=0,
                                           shuffle=False, callbacks=[check])
    assert (len(history.history["loss"]) < budget) == flagged
    assert (max(history.history["koopman_poor_init"]) == 1.0) == flagged
    if flagged:
        assert "epochs to converge" in check.stop_reason


def test_disk_storage_roundtrip_and_partial_row(tmp_path):
    X, y, eta, _ = regression_problem()
    store = tmp_path / "run"
    monitor = KoopmanMonitor(observables=("weights", "loss"), analyze_at=(10,), storage=store)
    linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=10, verbose=0, shuffle=False,
                             callbacks=[monitor])
    loaded = KoopmanMonitor.load(store)
    assert loaded.weights.shape == (7, 11)
    np.testing.assert_array_equal(loaded.weights, monitor.trajectory())
    assert list(loaded.weight_epochs) == list(range(11))
    np.testing.assert_allclose(loaded.scalars["loss"][1], monitor.scalars["loss"][1])
    assert [a.observable for a in loaded.analyses] == ["weights", "loss"]
    np.testing.assert_allclose(loaded.analyses[0].eigenvalues, monitor.analyses[0].eigenvalues)
    # a torn last row (process killed mid-write) is ignored
    with open(store / "weights.bin", "ab") as handle:
        handle.write(b"\x00" * 9)
    assert TrainingTrajectory.load(store).weights.shape == (7, 11)


def test_save_to_directory_and_load(regression_run, tmp_path):
    monitor, _, _ = regression_run
    monitor.save(tmp_path / "saved")
    loaded = KoopmanMonitor.load(tmp_path / "saved")
    np.testing.assert_array_equal(loaded.weights, monitor.trajectory())
    assert len(loaded.analyses) == len(monitor.analyses)
    for a, b in zip(loaded.analyses, monitor.analyses):
        np.testing.assert_allclose(a.eigenvalues, b.eigenvalues)
        assert a.diagnostics.n_important == b.diagnostics.n_important
    text = (tmp_path / "saved" / "trajectory.json").read_text()
    assert json.loads(text)["format"] == "keras-koopman-trajectory"


def test_killed_process_loses_at_most_the_last_epoch(tmp_path):
    store = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, sys, time
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        sys.path.insert(0, {str(ROOT)!r})
        import numpy as np, keras
        from keras_koopman import KoopmanMonitor
        x = np.random.default_rng(0).standard_normal((32, 4)).astype("float32")
        y = x.sum(1, keepdims=True)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.01), "mse")
        class Announce(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                print(epoch + 1, flush=True)
                time.sleep(0.05)
        model.fit(x, y, epochs=100000, verbose=0,
                  callbacks=[KoopmanMonitor(observables=("weights", "loss"), storage={str(store)!r}),
                             Announce()])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    done = 0
    for line in proc.stdout:
        done = int(line)
        if done >= 8:
            break
    proc.kill()
    proc.wait()
    loaded = TrainingTrajectory.load(store)
    recorded = loaded.weights.shape[1] - 1  # minus the epoch-0 snapshot
    assert done - 1 <= recorded
    assert np.all(np.isfinite(loaded.weights))
    assert list(loaded.weight_epochs) == list(range(recorded + 1))


def test_sketch_preserves_the_spectrum():
    """With max_dim below the number of weights but above the trajectory's span.

    In exact arithmetic the eigenvalues are unchanged; with float32 weights the numerical
    rank is 9 here, and the truncated Ritz values move by a few 1e-3 because the sketch
    changes which 9-dimensional subspace the truncation keeps.
    """
    X, y, eta, _ = regression_problem(n_features=120, scales=np.linspace(1.5, 0.4, 120), seed=3)
    runs = {}
    for max_dim in (None, 60):
        monitor = KoopmanMonitor(observables=("weights",), analyze_at=(30,), max_dim=max_dim)
        linear_model(120, eta).fit(X, y, batch_size=len(X), epochs=30, verbose=0, shuffle=False,
                                   callbacks=[monitor])
        runs[max_dim] = monitor
    assert runs[60].trajectory().shape[0] == 61
    full, sketched = (runs[k].analyses[0] for k in (None, 60))
    top = full.eigenvalues[full.importance > 0.01]
    assert full.rank == sketched.rank
    assert match_error(top, sketched.eigenvalues[sketched.importance > 0.01]) < 1e-2


def test_batch_interval_records_every_k_steps():
    X, y, eta, _ = regression_problem()
    monitor = KoopmanMonitor(observables=("weights",), batch_interval=2)
    linear_model(5, eta).fit(X, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
                             callbacks=[monitor])
    # 4 steps per epoch, 12 steps: snapshots at steps 2,4,...,12 plus the initial one
    assert monitor.trajectory().shape[1] == 7
    np.testing.assert_allclose(monitor.weight_epochs, [0, 0.5, 1, 1.5, 2, 2.5, 3])


def test_no_batch_hook_when_batch_recording_is_off():
    from keras.src.utils.python_utils import is_default  # the check Keras uses for async dispatch
    assert is_default(KoopmanMonitor().on_train_batch_end)
    assert not is_default(KoopmanMonitor(batch_interval=3).on_train_batch_end)


def test_deepcopy_before_fit_gives_independent_monitor(regression_run):
    monitor, _, _ = regression_run
    clone = copy.deepcopy(KoopmanMonitor(analyze_every=3, window=5))
    assert clone.analyze_every == 3 and clone.window == 5
    assert clone.analyses == []


def test_weight_modes_fixed_point_is_least_squares_solution(regression_run):
    monitor, _, _ = regression_run
    X, y, _, _ = regression_problem()
    modes = monitor.weight_modes()
    one = int(np.argmin(np.abs(modes.eigenvalues - 1.0)))
    fixed = (modes.modes[:, one] * modes.amplitudes[one]).real
    fixed = fixed / fixed[-1]  # the constant observable's coordinate is 1
    Xa = np.hstack([X, np.ones((len(X), 1))]).astype(np.float64)
    solution = np.linalg.lstsq(Xa, y.astype(np.float64), rcond=None)[0].ravel()
    np.testing.assert_allclose(fixed[:-1], solution, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(observables="weights"), TypeError, "observables"),
    (dict(observables=()), ValueError, "observables"),
    (dict(analyze_every=0), ValueError, "analyze_every"),
    (dict(window=2), ValueError, "window"),
    (dict(primary="val_loss", observables=("weights",)), ValueError, "primary"),
    (dict(on_poor_initialization="panic"), ValueError, "on_poor_initialization"),
    (dict(poor_init_rule="vibes"), ValueError, "poor_init_rule"),
    (dict(poor_init_epochs=(5, 2)), ValueError, "poor_init_epochs"),
    (dict(max_dim=-3), ValueError, "max_dim"),
])
def test_bad_arguments_name_the_parameter(kwargs, error, name):
    with pytest.raises(error, match=name):
        KoopmanMonitor(**kwargs)


def test_tensorboard_image_logging(tmp_path):
    X, y, eta, _ = regression_problem()
    monitor = KoopmanMonitor(observables=("weights", "loss"), analyze_at=(8,),
                             tensorboard_dir=tmp_path / "tb")
    linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=8, verbose=0, callbacks=[monitor])
    import tensorflow as tf
    tags = set()
    for event_file in (tmp_path / "tb").glob("events.*"):
        for record in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(v.tag for v in record.summary.value)
    assert {"koopman/weights", "koopman/loss"} <= tags


MIRRORED = textwrap.dedent("""
    import os, sys, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, ROOT)
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import numpy as np, keras
    from keras_koopman import KoopmanMonitor
    data = np.load(DATA)
    x, y, eta = data["x"], data["y"], float(data["eta"])
    out = {}
    for name, strategy in [("single", tf.distribute.get_strategy()),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
        with strategy.scope():
            model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1,
                kernel_initializer=keras.initializers.RandomNormal(stddev=3.0, seed=1),
                bias_initializer=keras.initializers.Constant(-3.0))])
            model.compile(keras.optimizers.SGD(eta), "mse")
        monitor = KoopmanMonitor(observables=("weights", "loss"), analyze_at=(25,),
                                 storage=os.path.join(OUT, name))
        model.fit(x, y, batch_size=len(x), epochs=25, shuffle=False, verbose=0, callbacks=[monitor])
        out[name] = {"replicas": strategy.num_replicas_in_sync,
                     "eigs": [[complex(z).real, complex(z).imag] for z in monitor.analyses[0].eigenvalues],
                     "cluster": monitor.analyses[0].diagnostics.unit_cluster}
    print("RESULT" + json.dumps(out))
""")


def test_mirrored_strategy_matches_single_device(tmp_path):
    """Two logical CPUs: the all-reduced float32 gradients change only the summation order."""
    X, y, eta, _ = regression_problem()
    np.savez(tmp_path / "data.npz", x=X, y=y, eta=eta)
    script = (MIRRORED.replace("ROOT", repr(str(ROOT))).replace("OUT", repr(str(tmp_path)))
              .replace("DATA", repr(str(tmp_path / "data.npz"))))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    line = [l for l in result.stdout.splitlines() if l.startswith("RESULT")]
    assert line, result.stderr[-3000:]
    out = json.loads(line[0][len("RESULT"):])
    assert out["mirrored"]["replicas"] == 2
    single = np.array(out["single"]["eigs"]) @ [1, 1j]
    mirrored = np.array(out["mirrored"]["eigs"]) @ [1, 1j]
    assert match_error(single, mirrored) < 1e-5
    assert (tmp_path / "mirrored" / "trajectory.json").is_file()  # the chief wrote its record


# ---------------------------------------------------------------------- resuming a record
class _Interrupt(keras.callbacks.Callback):
    """Raise after ``at`` completed epochs, as a killed or pre-empted job would stop."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.at:
            raise KeyboardInterrupt(f"interrupted after epoch {self.at}")


def _momentum_model(eta, seed=1):
    model = linear_model(5, eta, seed=seed)
    # momentum: the optimizer has state, which BackupAndRestore must bring back
    model.compile(keras.optimizers.SGD(learning_rate=eta, momentum=0.5), "mse")
    return model


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path):
    """Killed after epoch 4's snapshot but before its checkpoint: the record is cut back to
    epoch 3, training resumes there, and record and spectra equal an uninterrupted run's."""
    X, y, eta, _ = regression_problem()
    fit = dict(batch_size=len(X), epochs=8, shuffle=False, verbose=0)
    options = dict(observables=("weights", "loss"), analyze_at=(6, 8))
    straight = KoopmanMonitor(storage=tmp_path / "straight", **options)
    _momentum_model(eta).fit(X, y, callbacks=[straight], **fit)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    first = KoopmanMonitor(storage=tmp_path / "resumed", resume=True, **options)
    with pytest.raises(KeyboardInterrupt):
        # monitor, then the interruption, then the checkpoint: epoch 4 is recorded, not saved
        _momentum_model(eta).fit(X, y, callbacks=[first, _Interrupt(4), backup], **fit)
    assert TrainingTrajectory.load(tmp_path / "resumed").weight_epochs.tolist() == [0, 1, 2, 3, 4]

    second = KoopmanMonitor(storage=tmp_path / "resumed", resume=True, **options)
    _momentum_model(eta, seed=99).fit(X, y, callbacks=[second, backup], **fit)
    a, b = TrainingTrajectory.load(tmp_path / "straight"), TrainingTrajectory.load(tmp_path / "resumed")
    assert b.weight_epochs.tolist() == list(range(9))
    np.testing.assert_allclose(b.weights, a.weights, atol=1e-6)
    np.testing.assert_allclose(b.scalars["loss"][0], a.scalars["loss"][0])
    np.testing.assert_allclose(b.scalars["loss"][1], a.scalars["loss"][1], rtol=1e-5)
    assert [x.last_epoch for x in second.analyses if x.observable == "weights"] == [6, 8]
    last = [x for x in second.analyses if x.observable == "weights"][-1]
    ref = [x for x in straight.analyses if x.observable == "weights"][-1]
    assert match_error(last.eigenvalues, ref.eigenvalues) < 1e-4


class _Logs(keras.callbacks.Callback):
    """Keep each epoch's logs as the callbacks after the monitor see them."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def on_epoch_end(self, epoch, logs=None):
        self.seen[epoch + 1] = dict(logs)


def test_resumed_logs_carry_the_diagnostics_of_the_last_analysis(tmp_path):
    """Between analyses the logs repeat the latest diagnostics; after a resume they still do,
    from the analysis saved in the record before the interruption."""
    X, y, eta, _ = regression_problem()
    fit = dict(batch_size=len(X), epochs=8, shuffle=False, verbose=0)
    options = dict(observables=("weights", "loss"), analyze_at=(3, 8))
    straight_logs = _Logs()
    straight = KoopmanMonitor(storage=tmp_path / "straight", **options)
    _momentum_model(eta).fit(X, y, callbacks=[straight, straight_logs], **fit)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    first = KoopmanMonitor(storage=tmp_path / "resumed", resume=True, **options)
    with pytest.raises(KeyboardInterrupt):
        _momentum_model(eta).fit(X, y, callbacks=[first, _Interrupt(5), backup], **fit)
    resumed_logs = _Logs()
    second = KoopmanMonitor(storage=tmp_path / "resumed", resume=True, **options)
    _momentum_model(eta, seed=99).fit(X, y, callbacks=[second, resumed_logs, backup], **fit)
    assert sorted(resumed_logs.seen) == [5, 6, 7, 8]
    for epoch in (5, 8):
        for key in ("koopman_unit_cluster", "koopman_spectral_radius"):
            expected = straight_logs.seen[epoch][key]
            assert np.isfinite(expected)
            assert resumed_logs.seen[epoch][key] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_resumed_stop_patience_counts_the_analyses_before_the_interruption(tmp_path, script_unit_cluster):
    """Interrupted at epoch 6 and resumed from epoch 5: the analyses of epochs 3-5 in the record
    count towards ``stop_patience``, so the stop falls on the uninterrupted run's epoch."""
    X, y, eta, _ = regression_problem()
    fit = dict(batch_size=len(X), epochs=12, shuffle=False, verbose=0)
    options = dict(observables=("weights", "loss"), analyze_every=1, stop_at_fixed_point=True,
                   warmup=1, stop_patience=3)
    script_unit_cluster({3: 0.2, 4: 0.95, 5: 0.95, 6: 0.95, 7: 0.95})
    straight = _momentum_model(eta).fit(X, y, callbacks=[KoopmanMonitor(**options)], **fit)
    assert len(straight.history["loss"]) == 6

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    first = KoopmanMonitor(storage=tmp_path / "rec", resume=True, **options)
    with pytest.raises(KeyboardInterrupt):
        _momentum_model(eta).fit(X, y, callbacks=[first, _Interrupt(6), backup], **fit)
    second = KoopmanMonitor(storage=tmp_path / "rec", resume=True, **options)
    logs = _Logs()
    _momentum_model(eta, seed=99).fit(X, y, callbacks=[second, logs, backup], **fit)
    assert sorted(logs.seen) == [6]
    assert "3 consecutive" in second.stop_reason


def test_resume_rejects_a_record_of_another_run(tmp_path):
    X, y, eta, _ = regression_problem()
    KoopmanMonitor(storage=tmp_path / "rec", observables=("weights", "loss"))
    linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=3, shuffle=False, verbose=0,
                             callbacks=[KoopmanMonitor(storage=tmp_path / "rec", observables=("weights", "loss"))])
    other = linear_model(5, eta, seed=7)  # different weights at the resume epoch
    monitor = KoopmanMonitor(storage=tmp_path / "rec", resume=True, observables=("weights", "loss"))
    with pytest.raises(ValueError, match="storage: the snapshot of epoch 3"):
        other.fit(X, y, batch_size=len(X), epochs=5, initial_epoch=3, verbose=0, callbacks=[monitor])
    wider = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    wider.compile("sgd", "mse")
    monitor = KoopmanMonitor(storage=tmp_path / "rec", resume=True, observables=("weights", "loss"))
    with pytest.raises(ValueError, match="storage: .* holds 7 features"):
        wider.fit(X, np.hstack([y, y]), epochs=1, verbose=0, callbacks=[monitor])


def test_resume_from_epoch_zero_or_an_empty_folder_starts_afresh(tmp_path):
    X, y, eta, _ = regression_problem()
    fit = dict(batch_size=len(X), epochs=3, shuffle=False, verbose=0)
    for _ in range(2):  # the second run starts at epoch 0: the old record is cut to nothing
        monitor = KoopmanMonitor(storage=tmp_path / "rec", resume=True, observables=("weights", "loss"))
        linear_model(5, eta).fit(X, y, callbacks=[monitor], **fit)
        record = TrainingTrajectory.load(tmp_path / "rec")
        assert record.weight_epochs.tolist() == [0, 1, 2, 3]
        assert record.scalars["loss"][0].tolist() == [1, 2, 3]


def test_resume_arguments_are_checked():
    with pytest.raises(ValueError, match="resume=True needs storage"):
        KoopmanMonitor(resume=True)
    with pytest.raises(TypeError, match="resume must be True or False"):
        KoopmanMonitor(storage="x", resume="yes")


def test_resume_after_a_restart_analyses_from_the_reinitialised_weights(tmp_path):
    """A poor-initialisation restart at epoch 2 leaves two snapshots at epoch 2; a run resumed
    there analyses from the second one (the re-drawn weights), as the uninterrupted run does."""
    X, y, eta, _ = regression_problem()
    fit = dict(batch_size=len(X), epochs=4, shuffle=False, verbose=0)
    options = dict(observables=("weights", "loss"), analyze_at=(4,), on_poor_initialization="restart",
                   poor_init_epochs=(2, 2), max_restarts=3)

    def stagnating(seed=1):  # a learning rate so small that the loss rule fires at epoch 2
        model = linear_model(5, eta, seed=seed)
        model.compile(keras.optimizers.SGD(learning_rate=eta * 1e-3), "mse")
        return model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        straight = KoopmanMonitor(storage=tmp_path / "straight", **options)
        stagnating().fit(X, y, callbacks=[straight], **fit)
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        first = KoopmanMonitor(storage=tmp_path / "resumed", resume=True, **options)
        with pytest.raises(KeyboardInterrupt):
            stagnating().fit(X, y, callbacks=[first, _Interrupt(3), backup], **fit)
        second = KoopmanMonitor(storage=tmp_path / "resumed", resume=True, **options)
        stagnating(seed=99).fit(X, y, callbacks=[second, backup], **fit)
    assert straight.restarts >= 1 and second.restarts == straight.restarts
    a, b = straight.analyses[0], [x for x in second.analyses if x.observable == "weights"][0]
    assert straight.analyses[0].observable == "weights"
    assert (b.first_epoch, b.n_snapshots) == (a.first_epoch, a.n_snapshots) == (2.0, 3)
    np.testing.assert_allclose(TrainingTrajectory.load(tmp_path / "resumed").weights,
                               TrainingTrajectory.load(tmp_path / "straight").weights, atol=1e-6)
