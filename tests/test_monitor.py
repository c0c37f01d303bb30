"""KoopmanMonitor inside model.fit: truth test, logs, storage, resume, sketching, precision."""

import copy
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from training_problems import Interrupt, Logs, linear_model, match_error, regression_problem

from keras_koopman import AnalysisOptions, KoopmanMonitor, TrainingTrajectory
from keras_koopman.monitor import DIAGNOSTIC_KEYS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def regression_run():
    X, y, eta, expected = regression_problem()
    model = linear_model(5, eta)
    monitor = KoopmanMonitor(("weights", "loss"), analyze_at=(40,), analyze_every=10)
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
    monitor = KoopmanMonitor(("weights",), analyze_at=(40,),
                             options=AnalysisOptions(augment_constant=False))
    linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=40, shuffle=False, verbose=0,
                             callbacks=[monitor])
    analysis = monitor.analyses[0]
    assert analysis.rank <= 6
    assert match_error(analysis.eigenvalues, expected) > 1e-3


def test_logs_carry_diagnostics_from_the_first_analysis_on(regression_run):
    monitor, history, _ = regression_run
    for key in DIAGNOSTIC_KEYS:
        assert len(history.history[key]) == 31  # epochs 10..40: nothing before the first analysis
    cluster = np.asarray(history.history["koopman_unit_cluster"])
    assert np.all(np.isfinite(cluster))
    last = [a for a in monitor.analyses if a.observable == "weights"][-1]
    assert cluster[-1] == pytest.approx(last.diagnostics.unit_cluster)
    assert "koopman_nonfinite" not in history.history


def test_early_stopping_on_a_diagnostic_waits_for_the_first_analysis():
    """With analyses every 5 epochs, EarlyStopping on koopman_unit_cluster sees no value (and
    warns, as for any missing metric) until epoch 5, instead of stopping on placeholders."""
    X, y, eta, _ = regression_problem()
    monitor = KoopmanMonitor(("weights", "loss"), analyze_every=5)
    stopper = keras.callbacks.EarlyStopping("koopman_unit_cluster", mode="max", patience=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=12, verbose=0,
                                           shuffle=False, callbacks=[monitor, stopper])
    # the first value is at epoch 5; two epochs without improvement after it: epoch 7 (the
    # old NaN placeholders stopped it at epoch 3, before any analysis)
    assert len(history.history["loss"]) == 7
    assert len(history.history["koopman_unit_cluster"]) == 3


def test_analyses_schedule_and_windows():
    X, y, eta, _ = regression_problem()
    monitor = KoopmanMonitor(("weights", "loss"), analyze_at=(12,), analyze_every=8, window=6)
    linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=16, verbose=0, shuffle=False,
                             callbacks=[monitor])
    got = [(a.observable, a.last_epoch, a.n_snapshots) for a in monitor.analyses]
    assert got == [("weights", 8, 6), ("loss", 8, 6), ("weights", 12, 6), ("loss", 12, 6),
                   ("weights", 16, 6), ("loss", 16, 6)]
    loss_analysis = monitor.analyses[1]
    assert loss_analysis.delays == 2 and loss_analysis.first_epoch == 3


def test_analysis_at_makes_a_missing_analysis_once():
    X, y, eta, _ = regression_problem()
    monitor = KoopmanMonitor(("weights", "loss"))
    linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=6, verbose=0, callbacks=[monitor])
    assert monitor.analyses == []
    first = monitor.analysis_at(6, "loss")
    assert first is monitor.analysis_at(6, "loss") and len(monitor.analyses) == 1
    assert monitor.analysis_at(6).observable == "weights"


def test_nonfinite_loss_stops_training_and_is_logged():
    X, y, _, _ = regression_problem()
    model = linear_model(5, 1e6)  # diverges to inf/NaN within a few epochs
    monitor = KoopmanMonitor(("weights", "loss"), analyze_every=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(X, y, batch_size=len(X), epochs=50, verbose=0, callbacks=[monitor])
    assert len(history.history["loss"]) < 50
    assert history.history["koopman_nonfinite"][-1] == 1.0
    assert "non-finite" in monitor.stop_reason
    assert any("non-finite" in str(w.message) for w in caught)
    assert np.all(np.isfinite(monitor.trajectory()))  # nothing non-finite was recorded


def test_disk_storage_roundtrip(tmp_path):
    X, y, eta, _ = regression_problem()
    store = tmp_path / "run"
    monitor = KoopmanMonitor(("weights", "loss"), analyze_at=(10,), storage=store)
    linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=10, verbose=0, shuffle=False,
                             callbacks=[monitor])
    loaded = KoopmanMonitor.load(store)
    assert loaded.weights.shape == (7, 11)
    np.testing.assert_array_equal(loaded.weights, monitor.trajectory())
    assert list(loaded.weight_epochs) == list(range(11))
    np.testing.assert_allclose(loaded.scalars["loss"][1], monitor.scalars["loss"][1])
    assert [a.observable for a in loaded.analyses] == ["weights", "loss"]
    np.testing.assert_allclose(loaded.analyses[0].eigenvalues, monitor.analyses[0].eigenvalues)


def test_a_second_fit_never_replaces_a_record_silently(tmp_path):
    X, y, eta, _ = regression_problem()
    fit = dict(batch_size=len(X), epochs=4, verbose=0, shuffle=False)
    linear_model(5, eta).fit(X, y, callbacks=[KoopmanMonitor(("weights", "loss"), storage=tmp_path / "r")], **fit)
    before = TrainingTrajectory.load(tmp_path / "r")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        linear_model(5, eta, seed=3).fit(
            X, y, callbacks=[KoopmanMonitor(("weights", "loss"), storage=tmp_path / "r")], **fit)
    after = TrainingTrajectory.load(tmp_path / "r")
    np.testing.assert_array_equal(after.weights, before.weights)
    replaced = KoopmanMonitor(("weights", "loss"), storage=tmp_path / "r", overwrite=True)
    linear_model(5, eta, seed=3).fit(X, y, callbacks=[replaced], **fit)
    assert not np.allclose(TrainingTrajectory.load(tmp_path / "r").weights, before.weights)


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
                  callbacks=[KoopmanMonitor(("weights", "loss"), storage={str(store)!r}),
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
        monitor = KoopmanMonitor(("weights",), analyze_at=(30,), max_dim=max_dim)
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
    monitor = KoopmanMonitor(("weights",), batch_interval=2)
    linear_model(5, eta).fit(X, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
                             callbacks=[monitor])
    # 4 steps per epoch, 12 steps: snapshots at steps 2,4,...,12 plus the initial one
    assert monitor.trajectory().shape[1] == 7
    np.testing.assert_allclose(monitor.weight_epochs, [0, 0.5, 1, 1.5, 2, 2.5, 3])


def test_no_batch_hook_when_batch_recording_is_off():
    from keras.src.utils.python_utils import is_default  # the check Keras uses for async dispatch
    assert is_default(KoopmanMonitor().on_train_batch_end)
    assert not is_default(KoopmanMonitor(batch_interval=3).on_train_batch_end)


def test_deepcopy_and_config_give_an_independent_equal_monitor():
    monitor = KoopmanMonitor(("weights", "loss"), analyze_every=3, window=5,
                             options=AnalysisOptions(delta=0.05))
    clone = copy.deepcopy(monitor)
    assert clone.analyze_every == 3 and clone.window == 5 and clone.analyses == []
    config = monitor.get_config()
    rebuilt = KoopmanMonitor(**{**config, "options": AnalysisOptions(**config["options"])})
    assert rebuilt.get_config() == config
    assert json.loads(json.dumps(config)) == config


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
    (dict(analyze_every=2.5), TypeError, "analyze_every"),
    (dict(analyze_at=(0, 5)), ValueError, "analyze_at"),
    (dict(analyze_at=5), TypeError, "analyze_at"),
    (dict(window=2), ValueError, "window"),
    (dict(primary="val_loss", observables=("weights",)), ValueError, "primary"),
    (dict(max_dim=-3), ValueError, "max_dim"),
    (dict(batch_interval=0), ValueError, "batch_interval"),
    (dict(verbose=5), ValueError, "verbose"),
    (dict(options={"delta": -1}), ValueError, "delta"),
    (dict(options={"tol": 5}), ValueError, "tol"),
    (dict(options={"min_importance": 2}), ValueError, "min_importance"),
    (dict(options={"refine": 3}), ValueError, "refine"),
    (dict(options={"max_residual": -0.1}), ValueError, "max_residual"),
    (dict(options={"delays": 0}), ValueError, "delays"),
    (dict(options={"scale": "yes"}), TypeError, "scale"),
    (dict(options={"speed": 1}), TypeError, "speed"),
    (dict(options=0.5), TypeError, "options"),
    (dict(storage=3), TypeError, "storage"),
    (dict(resume=True), ValueError, "resume=True needs storage"),
    (dict(storage="x", resume="yes"), TypeError, "resume"),
    (dict(storage="x", overwrite=1), TypeError, "overwrite"),
    (dict(storage="x", resume=True, overwrite=True), ValueError, "contradict"),
])
def test_bad_arguments_name_the_parameter(kwargs, error, name):
    """Every argument is checked at construction (KoopmanMonitor(delta=-1, tol=5) used to
    train with zero analyses and NaN logs)."""
    with pytest.raises(error, match=name):
        KoopmanMonitor(**kwargs)


def test_a_changed_trainable_set_is_refused_with_what_happened():
    X, y, eta, _ = regression_problem()
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.layers[0].trainable = False
    model.compile(keras.optimizers.SGD(0.01), "mse")

    class Unfreeze(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.layers[0].trainable = True

    monitor = KoopmanMonitor(("weights", "loss"))
    with pytest.raises(RuntimeError, match="trainable variables changed during fit"):
        model.fit(X, y, epochs=5, verbose=0, callbacks=[Unfreeze(), monitor])


@pytest.mark.parametrize("policy", ["bfloat16", "mixed_bfloat16", "mixed_float16"])
def test_reduced_precision_weights_are_recorded_as_float32(policy, tmp_path):
    X, y, _, _ = regression_problem()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.01), "mse")
        monitor = KoopmanMonitor(("weights", "loss"), analyze_at=(6,), storage=tmp_path / "rec")
        model.fit(X, y, epochs=6, verbose=0, callbacks=[monitor])
    finally:
        keras.config.set_dtype_policy(previous)
    record = TrainingTrajectory.load(tmp_path / "rec")
    assert record.weights.dtype == np.float32 and record.weights.shape[1] == 7
    assert np.all(np.isfinite(record.weights))
    assert monitor.analyses[0].rank >= 1


MIRRORED = textwrap.dedent("""
    import os, sys, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
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
        monitor = KoopmanMonitor(("weights", "loss"), analyze_at=(25,),
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
    script = (MIRRORED.replace("OUT", repr(str(tmp_path)))
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
def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path):
    """Killed after epoch 4's snapshot but before its checkpoint: the record is cut back to
    epoch 3, training resumes there, and record and spectra equal an uninterrupted run's."""
    X, y, eta, _ = regression_problem()
    fit = dict(batch_size=len(X), epochs=8, shuffle=False, verbose=0)
    options = dict(observables=("weights", "loss"), analyze_at=(6, 8))
    straight = KoopmanMonitor(storage=tmp_path / "straight", **options)
    linear_model(5, eta, momentum=0.5).fit(X, y, callbacks=[straight], **fit)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    first = KoopmanMonitor(storage=tmp_path / "resumed", resume=True, **options)
    with pytest.raises(KeyboardInterrupt):
        # monitor, then the interruption, then the checkpoint: epoch 4 is recorded, not saved
        linear_model(5, eta, momentum=0.5).fit(X, y, callbacks=[first, Interrupt(4), backup], **fit)
    assert TrainingTrajectory.load(tmp_path / "resumed").weight_epochs.tolist() == [0, 1, 2, 3, 4]

    second = KoopmanMonitor(storage=tmp_path / "resumed", resume=True, **options)
    linear_model(5, eta, seed=99, momentum=0.5).fit(X, y, callbacks=[second, backup], **fit)
    a, b = TrainingTrajectory.load(tmp_path / "straight"), TrainingTrajectory.load(tmp_path / "resumed")
    assert b.weight_epochs.tolist() == list(range(9))
    np.testing.assert_allclose(b.weights, a.weights, atol=1e-6)
    np.testing.assert_allclose(b.scalars["loss"][0], a.scalars["loss"][0])
    np.testing.assert_allclose(b.scalars["loss"][1], a.scalars["loss"][1], rtol=1e-5)
    assert [x.last_epoch for x in second.analyses if x.observable == "weights"] == [6, 8]
    last = [x for x in second.analyses if x.observable == "weights"][-1]
    ref = [x for x in straight.analyses if x.observable == "weights"][-1]
    assert match_error(last.eigenvalues, ref.eigenvalues) < 1e-4


def test_resumed_logs_carry_the_diagnostics_of_the_last_analysis(tmp_path):
    """Between analyses the logs repeat the latest diagnostics; after a resume they still do,
    from the analysis saved in the record before the interruption."""
    X, y, eta, _ = regression_problem()
    fit = dict(batch_size=len(X), epochs=8, shuffle=False, verbose=0)
    options = dict(observables=("weights", "loss"), analyze_at=(3, 8))
    straight_logs = Logs()
    straight = KoopmanMonitor(storage=tmp_path / "straight", **options)
    linear_model(5, eta, momentum=0.5).fit(X, y, callbacks=[straight, straight_logs], **fit)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    first = KoopmanMonitor(storage=tmp_path / "resumed", resume=True, **options)
    with pytest.raises(KeyboardInterrupt):
        linear_model(5, eta, momentum=0.5).fit(X, y, callbacks=[first, Interrupt(5), backup], **fit)
    resumed_logs = Logs()
    second = KoopmanMonitor(storage=tmp_path / "resumed", resume=True, **options)
    linear_model(5, eta, seed=99, momentum=0.5).fit(X, y, callbacks=[second, resumed_logs, backup], **fit)
    assert sorted(resumed_logs.seen) == [5, 6, 7, 8]
    for epoch in (5, 8):
        for key in ("koopman_unit_cluster", "koopman_spectral_radius"):
            expected = straight_logs.seen[epoch][key]
            assert np.isfinite(expected)
            assert resumed_logs.seen[epoch][key] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_a_refused_resume_leaves_the_record_untouched(tmp_path):
    X, y, eta, _ = regression_problem()
    linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=3, shuffle=False, verbose=0,
                             callbacks=[KoopmanMonitor(("weights", "loss"), storage=tmp_path / "rec",
                                                       analyze_at=(3,))])
    files = {p.name: p.read_bytes() for p in (tmp_path / "rec").iterdir() if p.is_file()}
    other = linear_model(5, eta, seed=7)  # different weights at the resume epoch
    monitor = KoopmanMonitor(("weights", "loss"), storage=tmp_path / "rec", resume=True)
    with pytest.raises(ValueError, match="storage: the snapshot of epoch 3"):
        other.fit(X, y, batch_size=len(X), epochs=5, initial_epoch=3, verbose=0, callbacks=[monitor])
    early = KoopmanMonitor(("weights", "loss"), storage=tmp_path / "rec", resume=True)
    with pytest.raises(ValueError, match="storage: the snapshot of epoch 1"):
        other.fit(X, y, batch_size=len(X), epochs=5, initial_epoch=1, verbose=0, callbacks=[early])
    for name, content in files.items():
        if name not in ("lock", "writer.json"):
            assert (tmp_path / "rec" / name).read_bytes() == content, name
    record = TrainingTrajectory.load(tmp_path / "rec")
    assert record.weight_epochs.tolist() == [0, 1, 2, 3] and len(record.analyses) == 1
    wider = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    wider.compile("sgd", "mse")
    monitor = KoopmanMonitor(("weights", "loss"), storage=tmp_path / "rec", resume=True)
    with pytest.raises(ValueError, match="storage: .* 7 features"):
        wider.fit(X, np.hstack([y, y]), epochs=1, verbose=0, callbacks=[monitor])


def test_resume_from_epoch_zero_or_an_empty_folder_starts_afresh(tmp_path):
    X, y, eta, _ = regression_problem()
    fit = dict(batch_size=len(X), epochs=3, shuffle=False, verbose=0)
    for _ in range(2):  # the second run starts at epoch 0 from the same weights: a new record
        monitor = KoopmanMonitor(("weights", "loss"), storage=tmp_path / "rec", resume=True)
        linear_model(5, eta).fit(X, y, callbacks=[monitor], **fit)
        record = TrainingTrajectory.load(tmp_path / "rec")
        assert record.weight_epochs.tolist() == [0, 1, 2, 3]
        assert record.scalars["loss"][0].tolist() == [1, 2, 3]


def test_spectrum_images_log_each_new_analysis(tmp_path):
    from keras_koopman import SpectrumImages

    X, y, eta, _ = regression_problem()
    monitor = KoopmanMonitor(("weights", "loss"), analyze_at=(8,))
    images = SpectrumImages(monitor, tmp_path / "tb")
    linear_model(5, eta).fit(X, y, batch_size=len(X), epochs=8, verbose=0, callbacks=[monitor, images])
    import tensorflow as tf
    tags = set()
    for event_file in (tmp_path / "tb").glob("events.*"):
        for record in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(v.tag for v in record.summary.value)
    assert {"koopman/weights", "koopman/loss"} <= tags and images.logged == 2
