"""Resume survives ``kill -9`` at any moment of a real ``fit`` with a monitor and a backup.

A child process trains with ``KoopmanMonitor(storage=..., resume=True)`` and
``AtomicBackup``; the parent kills it at seeded random moments (epochs are short, so most
kills land inside the record's or the backup's writes) and starts it again. Every restart
must resume at or after the last epoch whose backup was announced, the monitor must accept
the record (it refuses a record that disagrees with the model's weights), and at the end the
record is complete, contiguous and equal to the model's weights.
"""

import os
import random
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from keras_koopman import TrainingTrajectory
from keras_koopman.checkpoint import AtomicBackup

CHILD = textwrap.dedent("""
    import os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, keras
    from keras_koopman import KoopmanMonitor
    from keras_koopman.checkpoint import AtomicBackup
    folder, epochs = sys.argv[1], int(sys.argv[2])
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((64, 8)).astype("float32")
    y = np.tanh(x @ np.linspace(-1, 1, 8)[:, None]).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.01), "mse")

    class Announce(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if not getattr(self, "started", False):
                self.started = True
                print("start", epoch, flush=True)
        def on_epoch_end(self, epoch, logs=None):
            print("done", epoch + 1, flush=True)

    monitor = KoopmanMonitor(("weights", "loss"), analyze_every=7,
                             storage=os.path.join(folder, "record"), resume=True)
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[monitor, AtomicBackup(os.path.join(folder, "backup")), Announce()])
    record = monitor.trajectory()
    weights = np.concatenate([np.ravel(v.numpy()) for v in model.trainable_variables])
    print("final", float(np.max(np.abs(record[:-1, -1] - weights))), flush=True)
""")


def _spawn(folder, epochs):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(epochs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_fifty_kills_lose_nothing_but_the_running_epoch(tmp_path):
    rng = random.Random(2026)
    kills, announced, lost = 0, 0, []
    while kills < 50:
        child = _spawn(tmp_path, 10**6)
        first = child.stdout.readline().split()
        assert first and first[0] == "start", child.stderr.read()[-3000:]
        start = int(first[1])
        assert start >= announced, f"restart at epoch {start}; epoch {announced} was backed up"
        lost.append(announced - start)
        deadline = time.monotonic() + rng.uniform(0.05, 1.5)
        while time.monotonic() < deadline:
            line = child.stdout.readline().split()
            if line and line[0] == "done":
                announced = int(line[1])
        child.kill()
        child.wait()
        assert child.returncode == -9, child.stderr.read()[-3000:]
        kills += 1
        record = TrainingTrajectory.load(tmp_path / "record")  # validated: checksums, sizes
        assert np.all(np.isfinite(record.weights))
    # one more clean run ends the training: record and model agree, nothing is missing
    final = _spawn(tmp_path, announced + 3)
    out, err = final.communicate(timeout=600)
    assert final.returncode == 0, err[-3000:]
    assert float(out.split("final")[-1]) < 1e-6
    record = TrainingTrajectory.load(tmp_path / "record")
    assert record.weight_epochs.tolist() == list(range(announced + 4))
    assert record.scalars["loss"][0].tolist() == list(range(1, announced + 4))
    assert kills == 50 and max(lost) <= 0  # no backed-up epoch was ever trained again


def test_a_torn_pointer_falls_back_to_the_newest_backup(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = np.ones((4, 3), dtype="float32")
    backup = AtomicBackup(tmp_path)
    model.fit(x, x[:, :1], epochs=2, verbose=0, callbacks=[backup])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-2.weights.h5", "latest.json"]
    (tmp_path / "latest.json").write_text("")  # torn
    (tmp_path / ".partial-1.weights.h5").write_bytes(b"\x89HDF")  # a write that never finished
    assert backup.latest() == (2, tmp_path / "epoch-2.weights.h5")
    (tmp_path / "latest.json").write_text('{"epoch": 9, "file": "../../etc/passwd"}')
    assert backup.latest() == (2, tmp_path / "epoch-2.weights.h5")
    history = model.fit(x, x[:, :1], epochs=3, verbose=0, callbacks=[AtomicBackup(tmp_path)])
    assert history.epoch == [2]
    with pytest.raises(TypeError, match="backup_dir"):
        AtomicBackup(3)
    os.remove(tmp_path / "epoch-3.weights.h5")
    os.remove(tmp_path / "latest.json")
    assert AtomicBackup(tmp_path).latest() is None
