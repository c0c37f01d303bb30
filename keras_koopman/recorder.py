"""The one recorder of training trajectories, shared by every Keras callback of the package.

Training is a dynamical system ``w_{t+1} = T(w_t)``; the Koopman analyses of the paper (its
Eq. (2), the KMD of an observable along the trajectory) need the values of observables at
successive epochs.  Two pieces record them:

- :class:`WeightVector` reads a model's trainable weights as one float64 vector (any
  variable dtype: float16, bfloat16 and float32 are widened exactly), optionally sketched
  to fewer coordinates and augmented with the constant observable 1, and writes a flat vector
  back.  It refuses to go on when the set of trainable variables changes during ``fit``.
- :class:`TrajectoryRecorder` keeps the weight snapshots (an incremental QR factor for the
  analyses, and a :class:`~keras_koopman.trajectory.TrajectoryStore`, in memory or on disk)
  and the scalar observables from ``logs``; it resumes an interrupted record and starts a new
  segment after a restart.

Costs per recorded epoch: reading the weights ``O(n)``, the optional sketch ``O(n)``, one
column of the QR factor ``O(n·r)`` for ``r <= T`` basis vectors, and one appended row on disk
(``O(n)`` bytes, fsynced).  A resume reads the record once and rebuilds the QR factor,
``O(n·T²)``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np

from keras_koopman.analysis import KoopmanAnalysis
from keras_koopman.koopman import IncrementalQR
from keras_koopman.koopman._validation import check_positive_int
from keras_koopman.sketch import SparseSignSketch
from keras_koopman.trajectory import TrajectoryStore

__all__ = ["TrajectoryRecorder", "WeightVector"]


class WeightVector:
    """The trainable weights of a model as one flat float64 vector, and back.

    Args:
        model: A built Keras model.
        augment_constant: Append the constant observable 1 (last coordinate).
        max_dim: If the model has more weights than this, read a seeded
            :class:`~keras_koopman.SparseSignSketch` of them (seed 0) instead.

    Raises:
        ValueError: The model has no trainable weights.
    """

    def __init__(self, model: keras.Model, *, augment_constant: bool = True,
                 max_dim: int | None = None) -> None:
        self.model = model
        self.augment_constant = bool(augment_constant)
        self._layout = self._current_layout()
        self.n_weights = int(sum(int(np.prod(shape)) for _, shape in self._layout))
        if self.n_weights == 0:
            raise ValueError("model has no trainable weights to record")
        self.sketch = None
        if max_dim is not None and self.n_weights > max_dim:
            self.sketch = SparseSignSketch(self.n_weights, max_dim, seed=0)
        self.n_features = (self.n_weights if self.sketch is None else max_dim) + int(augment_constant)
        widths = {np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
                  for v in model.trainable_variables}
        #: storage dtype: float64 for float64 models, float32 otherwise (exact for 16-bit types)
        self.storage_dtype = np.dtype(np.float64 if max(widths) >= 8 else np.float32)

    def _current_layout(self) -> tuple:
        return tuple((v.path, tuple(int(d) for d in v.shape)) for v in self.model.trainable_variables)

    def check_unchanged(self) -> None:
        """Raise ``RuntimeError`` if the trainable variables differ from those at the start."""
        now = self._current_layout()
        if now != self._layout:
            before = {p for p, _ in self._layout}
            after = {p for p, _ in now}
            raise RuntimeError(
                "the model's trainable variables changed during fit (now "
                f"{sum(int(np.prod(s)) for _, s in now)} weights in {len(now)} variables, "
                f"{self.n_weights} in {len(self._layout)} when recording started; added: "
                f"{sorted(after - before)[:3]}, removed: {sorted(before - after)[:3]}). A "
                "trajectory has one state space: freeze or unfreeze layers between fit calls, "
                "with a new record")

    def raw(self) -> np.ndarray:
        """The flat trainable weights in ``model.trainable_variables`` order, float64."""
        self.check_unchanged()
        parts = [np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(v, "float32"))
                            if _is_reduced(v) else keras.ops.convert_to_numpy(v),
                            dtype=np.float64).reshape(-1)
                 for v in self.model.trainable_variables]
        return np.concatenate(parts)

    def observe(self) -> np.ndarray:
        """The weight observable: the (sketched) weights, then 1 if augmented. ``O(n)``."""
        vector = self.raw()
        if self.sketch is not None:
            vector = self.sketch(vector)
        if self.augment_constant:
            vector = np.append(vector, 1.0)
        return vector

    def assign(self, vector: np.ndarray) -> None:
        """Write a flat weight vector (as returned by :meth:`raw`) into the model."""
        vector = np.asarray(vector, dtype=np.float64).reshape(-1)
        if vector.shape[0] != self.n_weights:
            raise ValueError(f"vector must have {self.n_weights} entries; got {vector.shape[0]}")
        offset = 0
        for variable in self.model.trainable_variables:
            size = int(np.prod(variable.shape))
            value = vector[offset:offset + size].reshape(tuple(variable.shape))
            variable.assign(keras.ops.cast(value, variable.dtype))
            offset += size

    def metadata(self) -> dict:
        return {"model": self.model.name, "n_weights": self.n_weights,
                "augment_constant": self.augment_constant,
                "sketch": None if self.sketch is None else self.sketch.get_config(),
                "variables": [[path, list(shape)] for path, shape in self._layout]}


def _is_reduced(variable) -> bool:
    return keras.backend.standardize_dtype(variable.dtype) in ("float16", "bfloat16")


class TrajectoryRecorder:
    """Records the weight observable and scalar observables of one training run.

    Args:
        scalars: ``logs`` keys to record every epoch (e.g. ``("loss", "val_loss")``); a key
            absent from ``logs`` is skipped.
        weights: Record the weight observable too.
        augment_constant: Append the constant 1 to the weight observable.
        max_dim: Sketch the weights to this many coordinates when the model has more.
        storage: Folder for a disk record (append-only, checksummed; see
            :mod:`keras_koopman.trajectory`), or ``None`` for memory.
        resume: Continue the record in ``storage`` (checked against the model first).
        overwrite: Replace a record already in ``storage`` (never done without it).
    """

    def __init__(self, scalars=("loss",), *, weights: bool = True, augment_constant: bool = True,
                 max_dim: int | None = None, storage=None, resume: bool = False,
                 overwrite: bool = False) -> None:
        if isinstance(scalars, str) or not all(isinstance(s, str) and s for s in scalars):
            raise TypeError(f"scalars must be a sequence of logs keys; got {scalars!r}")
        self.scalar_names = tuple(dict.fromkeys(scalars))
        self.weights = bool(weights)
        self.augment_constant = bool(augment_constant)
        self.max_dim = check_positive_int(max_dim, "max_dim", allow_none=True)
        if storage is not None and not isinstance(storage, (str, Path)):
            raise TypeError(f"storage must be a folder path or None; got {type(storage).__name__}")
        self.storage = None if storage is None else Path(storage)
        for name, flag in (("resume", resume), ("overwrite", overwrite)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False; got {flag!r}")
        if resume and storage is None:
            raise ValueError("resume=True needs storage= (the folder of the record to continue)")
        if resume and overwrite:
            raise ValueError("resume=True and overwrite=True contradict each other: choose one")
        self.resume = resume
        self.overwrite = overwrite
        self.vector: WeightVector | None = None
        self.store: TrajectoryStore | None = None
        self.qr: IncrementalQR | None = None
        self.segment_epoch = 0.0
        self.segment_start = 0
        self.pending_resume = False

    # ------------------------------------------------------------------ lifecycle
    def start(self, model: keras.Model, *, writable: bool = True) -> None:
        """Open the record for a ``fit`` (``on_train_begin``); records epoch 0 unless resuming.

        ``writable=False`` (a non-chief worker under ``tf.distribute``) keeps the record in
        memory.  With ``resume``, nothing on disk changes until :meth:`continue_at`.
        """
        self.vector = WeightVector(model, augment_constant=self.augment_constant,
                                   max_dim=self.max_dim)
        n, dtype = self.vector.n_features, self.vector.storage_dtype
        metadata = self.vector.metadata()
        self.segment_epoch, self.segment_start = 0.0, 0
        self.qr = IncrementalQR(n) if self.weights else None
        path = self.storage if writable else None
        if self.resume and (self.storage / "trajectory.json").is_file():
            self.store = TrajectoryStore.reopen(self.storage, n_features=n, dtype=dtype,
                                                metadata=metadata, writable=writable)
            self.pending_resume = True
            return
        self.store = TrajectoryStore(n, path=path, dtype=dtype, metadata=metadata,
                                     overwrite=self.overwrite)
        self.pending_resume = False
        if self.weights:
            self._append_weights(0.0, self.vector.observe())

    def continue_at(self, epoch: int) -> None:
        """Line a reopened record up with a model that resumes at ``epoch`` (first
        ``on_epoch_begin``).  Every check happens before the record is touched: the snapshot
        at ``epoch`` must equal the model's weights (else ``ValueError``, record unchanged);
        then what was recorded after ``epoch`` is dropped and the QR factor rebuilt."""
        self.pending_resume = False
        store = self.store
        current = self.vector.observe() if self.weights else None
        epochs = store.weight_epochs
        at = np.flatnonzero(epochs == epoch)
        if self.weights and at.size:
            stored = np.asarray(store.weights()[:, at[-1]], dtype=np.float64)
            scale = 1.0 + float(np.max(np.abs(stored)))
            if not np.allclose(stored, current, rtol=0.0, atol=1e-5 * scale):
                raise ValueError(
                    f"storage: the snapshot of epoch {epoch} in {self.storage} differs from the "
                    f"model's weights (max difference {np.max(np.abs(stored - current)):.3g}); "
                    "the record belongs to another run: pass a fresh storage folder, or "
                    "overwrite=True to replace it")
        store.truncate(float(epoch))
        restarts = [float(e) for e in store.metadata.get("restart_epochs", []) if e <= epoch]
        if restarts != list(store.metadata.get("restart_epochs", [])):
            store.set_metadata("restart_epochs", restarts)
        self.segment_epoch = restarts[-1] if restarts else 0.0
        if not self.weights:
            return
        epochs = store.weight_epochs
        if not (epochs.size and epochs[-1] == epoch):
            if epochs.size and epoch - epochs[-1] > 1:
                warnings.warn(f"KoopmanMonitor: the record in {self.storage} ends at epoch "
                              f"{epochs[-1]:g} but training resumes at epoch {epoch}; the "
                              "snapshots in between are missing", RuntimeWarning, stacklevel=2)
            store.append_weights(float(epoch), current)
        for column in np.asarray(store.weights()).T:
            self.qr.append(column)
        # after a restart at epoch e the record holds two snapshots at e; the segment starts
        # at the second (the re-initialised weights)
        self.segment_start = (int(np.searchsorted(store.weight_epochs, self.segment_epoch,
                                                  side="right")) - 1 if restarts else 0)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    # ------------------------------------------------------------------ recording
    def record_epoch(self, done: int, logs: dict, *, weights: bool = True) -> list[str]:
        """Record the observables after ``done`` completed epochs (the weights too unless
        ``weights=False``, for a batch schedule); returns the names of non-finite ones
        (nothing is recorded then: the trajectory stays analysable)."""
        names = [k for k in self.scalar_names if k in logs]
        values = {k: float(logs[k]) for k in names}
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        vector = self.vector.observe() if self.weights and weights else None
        if vector is not None and not np.all(np.isfinite(vector)):
            bad.append("weights")
        if bad:
            return bad
        if vector is not None:
            self._append_weights(float(done), vector)
        if values:
            self.store.append_scalars(float(done), values)
        return []

    def record_weights(self, epoch: float) -> bool:
        """Record a weight snapshot at a fractional epoch (batch schedule); ``False`` if it
        was not finite (not recorded)."""
        vector = self.vector.observe()
        if not np.all(np.isfinite(vector)):
            return False
        self._append_weights(epoch, vector)
        return True

    def _append_weights(self, epoch: float, vector: np.ndarray) -> None:
        self.store.append_weights(epoch, vector)
        # the QR factor gets the snapshot as stored (rounded to the store's dtype), without
        # reading it back from the record
        self.qr.append(np.asarray(vector, dtype=self.store.dtype).astype(np.float64))

    def new_segment(self, epoch: float) -> None:
        """Start a new segment after the weights were re-drawn at ``epoch`` (a restart)."""
        self.segment_epoch = float(epoch)
        restarts = list(self.store.metadata.get("restart_epochs", [])) + [float(epoch)]
        self.store.set_metadata("restart_epochs", restarts)
        if self.weights:
            self.segment_start = len(self.qr)
            self._append_weights(float(epoch), self.vector.observe())

    # ------------------------------------------------------------------ reading
    @property
    def restarts(self) -> int:
        return 0 if self.store is None else len(self.store.metadata.get("restart_epochs", []))

    def weight_window(self, window: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``(R, epochs)`` of the current segment's last ``window`` snapshots: the
        compressed trajectory (``F = Q R``, same spectrum as ``F``) and its epochs."""
        count = len(self.qr)
        start = self.segment_start if window is None else max(self.segment_start, count - window)
        return self.qr.R[:, start:count], self.store.weight_epochs[start:count]

    def scalar(self, name: str, window: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(epochs, values)`` of a scalar observable in the current segment."""
        epochs, values = self.store.scalar(name)
        keep = epochs > self.segment_epoch
        epochs, values = epochs[keep], values[keep]
        if window is not None:
            epochs, values = epochs[-window:], values[-window:]
        return epochs, values

    @property
    def prior_analyses(self) -> tuple[KoopmanAnalysis, ...]:
        return () if self.store is None else self.store.prior_analyses
