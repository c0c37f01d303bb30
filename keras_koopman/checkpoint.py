"""``AtomicBackup``: a training checkpoint that survives ``kill -9`` at any moment.

Keras's ``BackupAndRestore`` rewrites one weights file and one metadata file in place (with
``double_checkpoint=True`` it first copies them): a kill while it writes can leave a truncated
weights file or an empty metadata file (``json`` then fails and training cannot resume), or
weights of epoch ``e`` with metadata of epoch ``e − 1``, which a resumed
:class:`~keras_koopman.KoopmanMonitor` rightly refuses as another run's.  This callback never
overwrites a backup:

1. after epoch ``e`` the model (weights and optimizer state, ``model.save_weights``) is written
   to a temporary file, flushed to disk and renamed to ``epoch-<e>.weights.h5``;
2. then ``latest.json`` (``{"epoch": e, "file": ...}``) is replaced atomically;
3. only then is the previous backup deleted.

A kill at any point leaves ``latest.json`` pointing at a complete backup, so at most the epoch
that was running is lost.  On ``on_train_begin`` the latest backup is loaded and training
continues after it (the mechanism of ``BackupAndRestore``).  ``latest.json`` is validated
(nothing from it decides more than which file of this folder to load); if it is missing or
unreadable, the newest backup file is used (complete by construction: a backup gets its name
only after it was written and flushed).  Only the chief writes under
``tf.distribute``.  Cost per epoch: one ``save_weights`` and two fsyncs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import keras

from keras_koopman._atomic import write_json_atomic
from keras_koopman.monitor import is_chief

__all__ = ["AtomicBackup"]

_NAME = re.compile(r"^epoch-(\d{1,9})\.weights\.h5$")


class AtomicBackup(keras.callbacks.Callback):
    """Back up the model after every epoch; resume from the latest backup on ``fit``.

    List it after the :class:`~keras_koopman.KoopmanMonitor`, so that an epoch's snapshot is
    recorded before the epoch's backup exists.

    Args:
        backup_dir: Folder of the backups (created if missing).

    Example:

    >>> import keras, numpy as np, tempfile, keras_koopman as kk
    >>> from keras_koopman.checkpoint import AtomicBackup
    >>> x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    >>> folder = tempfile.mkdtemp()
    >>> def model():
    ...     m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    ...     m.compile(keras.optimizers.SGD(0.1), "mse")
    ...     return m
    >>> _ = model().fit(x, x[:, :1], epochs=3, verbose=0, callbacks=[AtomicBackup(folder)])
    >>> history = model().fit(x, x[:, :1], epochs=5, verbose=0, callbacks=[AtomicBackup(folder)])
    >>> history.epoch  # epochs 0-2 were restored, not retrained
    [3, 4]
    """

    def __init__(self, backup_dir) -> None:
        super().__init__()
        if not isinstance(backup_dir, (str, os.PathLike)):
            raise TypeError(f"backup_dir must be a folder path; got {type(backup_dir).__name__}")
        self.backup_dir = Path(backup_dir)
        self.restored_epoch: int | None = None

    def on_train_begin(self, logs=None):
        self.restored_epoch = None
        found = self.latest()
        if found is None:
            return
        epoch, path = found
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(path))
        self.restored_epoch = epoch
        self.model._initial_epoch = epoch  # how Keras's BackupAndRestore resumes fit

    def on_epoch_end(self, epoch, logs=None):
        if is_chief():
            self.save(int(epoch) + 1)

    def save(self, done: int) -> Path:
        """Write the backup after ``done`` completed epochs (steps 1-3 above)."""
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        target = self.backup_dir / f"epoch-{done}.weights.h5"
        temporary = self.backup_dir / f".partial-{os.getpid()}.weights.h5"
        self.model.save_weights(str(temporary), overwrite=True)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        write_json_atomic(self.backup_dir / "latest.json", {"epoch": done, "file": target.name})
        for old in self._backups():
            if old[0] != done:
                old[1].unlink(missing_ok=True)
        return target

    def latest(self) -> tuple[int, Path] | None:
        """``(epoch, file)`` of the backup to resume from, or ``None`` without one."""
        pointer = self.backup_dir / "latest.json"
        try:
            data = json.loads(pointer.read_text())
            match = _NAME.match(str(data.get("file", "")))
            if match and int(match.group(1)) == data.get("epoch") and \
                    (self.backup_dir / data["file"]).is_file():
                return int(data["epoch"]), self.backup_dir / data["file"]
        except (OSError, ValueError, AttributeError, TypeError):
            pass  # missing or torn pointer: fall back to the files themselves
        backups = self._backups()
        return backups[-1] if backups else None

    def _backups(self) -> list[tuple[int, Path]]:
        if not self.backup_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.backup_dir.iterdir()
                 if (m := _NAME.match(p.name)) and p.is_file()]
        return sorted(found)
