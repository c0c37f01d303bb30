"""Tests of ``scripts/reproduce_mnist.py``: the offline termination rules and the reading of
finished and still-training runs of ``keras-koopman mnist``."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_koopman import FixedPointStopping, KoopmanMonitor
from keras_koopman.cli import main

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
EPOCHS = 4


def _script():
    spec = importlib.util.spec_from_file_location("reproduce_mnist",
                                                  ROOT / "scripts" / "reproduce_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


repro = _script()


def _keras_stop_epoch(val_loss, patience: int) -> int | None:
    """The epoch (1-based) at which Keras's own EarlyStopping stops on this val_loss curve."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    callback = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience)
    callback.set_model(model)
    model.stop_training = False
    callback.on_train_begin()
    for epoch, value in enumerate(val_loss):
        callback.on_epoch_end(epoch, {"val_loss": float(value)})
        if model.stop_training:
            return epoch + 1
    return None


@pytest.mark.parametrize("patience", [1, 2, 5, 10])
def test_early_stopping_epoch_matches_keras_early_stopping(patience):
    rng = np.random.default_rng(patience)
    curves = [np.linspace(1.0, 0.1, 30),  # always improving: never stops
              np.full(30, 0.5),  # flat: ties are not improvements
              np.r_[np.linspace(1.0, 0.2, 8), np.linspace(0.2, 0.9, 22)]]  # minimum, then rise
    # noisy descents with plateaus (values rounded so that ties occur)
    curves += [np.round(np.exp(-np.arange(40) / 8) + 0.05 * rng.standard_normal(40), 2)
               for _ in range(20)]
    for curve in curves:
        assert repro.early_stopping_epoch(curve, patience) == _keras_stop_epoch(curve, patience)


@pytest.mark.parametrize("patience", [1, 2, 3])
@pytest.mark.parametrize("start_from_epoch", [0, 1, 6, 12])
def test_offline_spectral_stop_matches_fixed_point_stopping(script_unit_cluster, patience,
                                                            start_from_epoch):
    """``fixed_point_stop_epoch`` on a unit-cluster curve stops where ``FixedPointStopping``
    after a ``KoopmanMonitor`` analysing every epoch stops on the same curve."""
    rng = np.random.default_rng(patience * 100 + start_from_epoch)
    curve = {e: float(v) for e, v in enumerate(rng.choice([0.3, 0.95], size=40, p=[0.4, 0.6]), 1)}
    calls = script_unit_cluster(curve)
    x = rng.standard_normal((32, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    monitor = KoopmanMonitor(("weights",), analyze_every=1)
    stopper = FixedPointStopping(monitor, threshold=0.9, patience=patience,
                                 start_from_epoch=start_from_epoch)
    history = model.fit(x, x[:, :1], batch_size=32, epochs=40, verbose=0,
                        callbacks=[monitor, stopper])
    first = len(history.history["loss"]) - len(calls) + 1  # the first epoch analysed
    epochs = np.arange(first, 41)
    expected = repro.fixed_point_stop_epoch(epochs, np.array([curve[e] for e in epochs]),
                                            patience, start_from_epoch=start_from_epoch,
                                            threshold=0.9)
    stopped = stopper.stopped_epoch is not None
    assert (len(history.history["loss"]) if stopped else None) == expected
    if stopped:
        assert stopper.stopped_epoch + 1 == expected


def test_stop_rule_reads_fixed_point_stopping_defaults():
    stopper = FixedPointStopping(KoopmanMonitor())
    assert repro.stop_rule() == {"start_from_epoch": stopper.start_from_epoch,
                                 "threshold": stopper.threshold}


def test_paper_counts_keep_the_windows_that_fit_and_add_all_snapshots():
    assert repro.paper_counts((40, 100, 500), 74) == [40, 74]
    assert repro.paper_counts((50, 100, 500), 201) == [50, 100, 201]
    assert repro.paper_counts((50, 100, 500), 30) == [30]
    assert repro.paper_counts((40, 100, 500), 500) == [40, 100, 500]
    assert repro.paper_counts((40, 100, 500), 800) == [40, 100, 500]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    if not MNIST_DIR.is_dir():
        pytest.skip(f"no MNIST files in {MNIST_DIR}")
    out = tmp_path_factory.mktemp("repro") / "he"
    status = main(["mnist", "--init", "he", "--epochs", str(EPOCHS), "--subset", "128",
                   "--test-subset", "200", "--data-dir", str(MNIST_DIR), "--out", str(out),
                   "--quiet"])
    assert status == 0
    return out


def test_a_run_still_training_is_read_over_its_finished_epochs(run_dir, tmp_path):
    finished = repro.load_run(run_dir)
    assert finished["config"]["epochs_run"] == EPOCHS
    assert "in_progress" not in finished["config"]

    # the same run as it looked during epoch 4: no summary yet, three epochs in history.csv,
    # and the trajectory already holding the fourth epoch's snapshot
    live = tmp_path / "he"
    shutil.copytree(run_dir, live)
    (live / "summary.json").unlink()
    lines = (live / "history.csv").read_text().splitlines(keepends=True)
    (live / "history.csv").write_text("".join(lines[:1 + EPOCHS - 1]))
    partial = repro.load_run(live)
    assert partial["config"]["in_progress"] is True
    assert partial["config"]["epochs_run"] == EPOCHS - 1
    assert partial["config"]["train_examples"] == 128
    for name, values in finished["history"].items():
        np.testing.assert_allclose(partial["history"][name], values[:EPOCHS - 1], rtol=1e-6)
    trajectory = partial["trajectory"]
    assert trajectory.weights.shape == (EPOCHS, EPOCHS)  # R of the snapshots at epochs 0..3
    np.testing.assert_array_equal(trajectory.weight_epochs, np.arange(EPOCHS))
    assert trajectory.scalars["loss"][1].size == EPOCHS - 1
    # the R factor of the first snapshots is the leading block of the full R (up to signs)
    np.testing.assert_allclose(np.abs(trajectory.weights),
                               np.abs(finished["trajectory"].weights[:EPOCHS, :EPOCHS]),
                               rtol=1e-8, atol=1e-8)


def test_analyse_reports_every_rule_on_the_run(run_dir, tmp_path, capsys):
    target = tmp_path / "results.json"
    assert repro.main(["analyse", str(run_dir), "--counts", "paper", "--prefix", "t",
                       "--figdir", str(tmp_path), "--json", str(target)]) == 0
    (result,) = json.loads(target.read_text())
    val = np.asarray(result["history_val_loss"])
    assert result["stops"]["min_test_ce"]["epoch"] == int(np.argmin(val)) + 1
    accuracy = json.loads((run_dir / "summary.json").read_text())["history"]["val_accuracy"]
    assert result["stops"]["max_test_accuracy"]["epoch"] == int(np.argmax(accuracy)) + 1
    for patience in repro.PATIENCES:
        stop = result["stops"][f"early_stopping_{patience}"]
        assert (None if stop is None else stop["epoch"]) == _keras_stop_epoch(val, patience)
    # with the paper's counts a 4-epoch run has one window per observable: all its snapshots
    windows = [(s["observable"], s["n_snapshots"]) for s in result["spectra"]]
    assert windows == [("loss", EPOCHS), ("weights", EPOCHS + 1)]
    assert (tmp_path / "t_he.png").is_file() and (tmp_path / "t_termination.png").is_file()
    assert "Termination" in capsys.readouterr().out


def test_null_window_covering_every_snapshot_reads_as_the_whole_record(capsys):
    """With fewer than 50 snapshots the windowed column analyses all of them, so it equals the
    monitor column; the stop table has one cell per seed for every stop_patience."""
    assert repro.main(["null", "--seeds", "2", "--features", "60", "--epochs", "14",
                       "--stops"]) == 0
    out = capsys.readouterr().out
    assert "monitor, last 15" in out
    rows = [line for line in out.splitlines()
            if line.startswith(("random walk", "converging", "at a fixed point"))]
    assert len(rows) == 6
    for row in rows[:3]:
        cells = row[32:].split()
        assert cells[1] == cells[3]  # monitor (refine=0.01) == monitor, last 15
    for row in rows[3:]:
        assert all(len(cell.split("/")) == 2 for cell in row[32:].split()[:3])
