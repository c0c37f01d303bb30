"""Recorded training trajectories: in memory, or on disk written incrementally.

On-disk layout (a directory; no pickle anywhere):

- ``weights.bin`` — raw little-endian rows, one snapshot of the weight observable per row,
  appended and flushed every epoch;
- ``trajectory.json`` — format name and version, number of features, dtype, the number of
  complete rows, the epoch of every row, the scalar observables (``loss``, ``val_loss``, …)
  with their epochs, and metadata; rewritten atomically (temp file + rename) after each row;
- ``analyses.json`` — the spectra and diagnostics of every analysis, rewritten atomically.

A killed process loses at most the epoch being written: the JSON is only updated after the
row it counts is on disk, and a reader ignores bytes past the counted rows.  A store can be
reopened for appending (:meth:`TrajectoryStore.reopen`) and cut back to an epoch
(:meth:`TrajectoryStore.truncate`), which is how ``KoopmanMonitor(resume=True)`` continues
an interrupted run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_koopman._atomic import atomic_write, write_json_atomic
from keras_koopman.analysis import KoopmanAnalysis

__all__ = ["TrainingTrajectory", "TrajectoryStore"]

FORMAT = "keras-koopman-trajectory"
VERSION = 1


class TrajectoryStore:
    """Append-only store of weight snapshots and scalar observables.

    Parameters
    ----------
    n_features : int
        Length of a weight snapshot (after augmentation and sketching).
    path : str or Path, optional
        Directory for the disk-backed store; ``None`` keeps everything in memory.
    dtype : numpy dtype
        Storage dtype of the snapshots (the weights' own dtype, float32 for most models).
    metadata : dict
        JSON-serialisable description of the observable (layers, augmentation, sketch).
    """

    def __init__(self, n_features: int, *, path=None, dtype=np.float32, metadata=None) -> None:
        self.n_features = int(n_features)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.metadata = dict(metadata or {})
        self.path = None if path is None else Path(path)
        self._epochs: list[float] = []
        self._scalars: dict[str, list[tuple[float, float]]] = {}
        self._analyses: list[dict] = []
        self._prior_analyses: list[dict] = []  # analyses of a reopened store, before resuming
        self._rows = np.empty((0, self.n_features), dtype=self.dtype)
        self._count = 0
        self._file = None
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path / "weights.bin", "wb")
            self._write_meta()
            write_json_atomic(self.path / "analyses.json", [])

    @classmethod
    def reopen(cls, path, *, n_features: int, dtype=np.float32, metadata=None,
               writable: bool = True) -> "TrajectoryStore":
        """Open an existing disk store to continue it.

        The observable must match: ``n_features``, ``dtype``, the variables' shapes and the
        ``augment_constant`` and ``sketch`` entries of ``metadata`` are compared with the
        stored ones, and a mismatch raises ``ValueError`` naming the folder.  Bytes past the
        last counted row (a torn write) are dropped.  ``writable=False`` copies the record
        into memory and never writes (non-chief workers).  Cost: reads the record once,
        ``O(n T)``.
        """
        record = TrainingTrajectory.load(path)
        dtype = np.dtype(dtype).newbyteorder("<")
        stored_dtype = np.dtype(record.weights.dtype).newbyteorder("<")
        if record.weights.shape[0] != int(n_features) or stored_dtype != dtype:
            raise ValueError(
                f"storage: {path} holds {record.weights.shape[0]} features of {stored_dtype.name}; "
                f"this model's observable has {int(n_features)} of {dtype.name}")
        metadata = dict(metadata or {})

        def layout(meta: dict) -> dict:
            # variable shapes (not their auto-generated names), augmentation and sketch
            view = {k: meta[k] for k in ("augment_constant", "sketch") if k in meta}
            if "variables" in meta:
                view["variable shapes"] = [shape for _, shape in meta["variables"]]
            return json.loads(json.dumps(view))

        old, new = layout(record.metadata), layout(metadata)
        for key in new:
            if key in old and old[key] != new[key]:
                raise ValueError(f"storage: {path} was recorded with other {key} "
                                 f"({old[key]!r}, now {new[key]!r})")
        store = cls(n_features, dtype=dtype, metadata={**record.metadata, **metadata})
        store._epochs = [float(e) for e in record.weight_epochs]
        store._scalars = {name: [(float(e), float(v)) for e, v in zip(*pair)]
                          for name, pair in record.scalars.items()}
        store._prior_analyses = [a.to_dict() for a in record.analyses]
        store._count = record.weights.shape[1]
        if writable:
            store.path = Path(path)
            store._file = open(store.path / "weights.bin", "r+b")
            store._file.truncate(store._count * store.n_features * store.dtype.itemsize)
            store._file.seek(0, os.SEEK_END)
            store._write_meta()
        else:
            store._rows = np.array(record.weights.T, dtype=store.dtype)
        return store

    @property
    def prior_analyses(self) -> tuple[KoopmanAnalysis, ...]:
        """The analyses a reopened record held (after :meth:`truncate`), oldest first."""
        return tuple(KoopmanAnalysis.from_dict(a) for a in self._prior_analyses)

    def truncate(self, epoch: float) -> None:
        """Drop every weight snapshot, scalar value and analysis after ``epoch``."""
        keep = sum(1 for e in self._epochs if e <= epoch)
        if keep < self._count:
            self._count = keep
            self._epochs = self._epochs[:keep]
            if self._file is not None:
                self._file.truncate(keep * self.n_features * self.dtype.itemsize)
                self._file.seek(0, os.SEEK_END)
        self._scalars = {name: [(e, v) for e, v in pairs if e <= epoch]
                         for name, pairs in self._scalars.items()}
        self._prior_analyses = [a for a in self._prior_analyses if a["last_epoch"] <= epoch]
        self._write_meta()
        if self.path is not None:
            write_json_atomic(self.path / "analyses.json", self._prior_analyses)

    def __len__(self) -> int:
        return self._count

    def append_weights(self, epoch: float, vector: np.ndarray) -> None:
        row = np.asarray(vector, dtype=self.dtype).reshape(-1)
        if row.shape[0] != self.n_features:
            raise ValueError(f"vector must have {self.n_features} entries; got {row.shape[0]}")
        if self._file is not None:
            self._file.write(row.tobytes())
            self._file.flush()
            os.fsync(self._file.fileno())
        else:
            if self._count == self._rows.shape[0]:
                bigger = np.empty((max(8, 2 * self._count), self.n_features), dtype=self.dtype)
                bigger[: self._count] = self._rows[: self._count]
                self._rows = bigger
            self._rows[self._count] = row
        self._count += 1
        self._epochs.append(float(epoch))
        self._write_meta()

    def append_scalars(self, epoch: float, values: dict) -> None:
        for name, value in values.items():
            self._scalars.setdefault(name, []).append((float(epoch), float(value)))
        self._write_meta()

    def set_analyses(self, analyses: list[KoopmanAnalysis]) -> None:
        self._analyses = self._prior_analyses + [a.to_dict() for a in analyses]
        if self.path is not None:
            write_json_atomic(self.path / "analyses.json", self._analyses)

    def weights(self) -> np.ndarray:
        """Snapshots as columns, shape (n, T) (a view; memory-mapped for a disk store)."""
        if self.path is None:
            return self._rows[: self._count].T
        if self._count == 0:
            return np.empty((self.n_features, 0), dtype=self.dtype)
        return np.memmap(self.path / "weights.bin", dtype=self.dtype, mode="r",
                         shape=(self._count, self.n_features)).T

    @property
    def weight_epochs(self) -> np.ndarray:
        return np.asarray(self._epochs, dtype=np.float64)

    def scalar(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(epochs, values)`` of a scalar observable."""
        pairs = np.asarray(self._scalars.get(name, []), dtype=np.float64).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]

    @property
    def scalar_names(self) -> list[str]:
        return list(self._scalars)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def save(self, path) -> Path:
        """Write the whole record to a directory in the on-disk layout; returns the path."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.path is not None and path.resolve() == self.path.resolve():
            self._write_meta()
            return path
        rows = self.weights().T
        atomic_write(path / "weights.bin", lambda handle: handle.write(np.ascontiguousarray(rows).tobytes()))
        write_json_atomic(path / "trajectory.json", self._meta())
        write_json_atomic(path / "analyses.json", self._analyses)
        return path

    def _meta(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "n_features": self.n_features,
            "dtype": self.dtype.str,
            "count": self._count,
            "weight_epochs": self._epochs,
            "scalars": {name: {"epochs": [e for e, _ in pairs], "values": [v for _, v in pairs]}
                        for name, pairs in self._scalars.items()},
            "metadata": self.metadata,
        }

    def _write_meta(self) -> None:
        if self.path is not None:
            write_json_atomic(self.path / "trajectory.json", self._meta())


@dataclass(frozen=True, eq=False)
class TrainingTrajectory:
    """A recorded trajectory read back from disk (see the module docstring for the layout).

    Attributes
    ----------
    weights : ndarray, shape (n, T)
        Weight snapshots as columns, memory-mapped read-only.
    weight_epochs : ndarray, shape (T,)
        Epoch of each snapshot (0 = before training).
    scalars : dict
        ``name -> (epochs, values)`` for each scalar observable.
    analyses : tuple of KoopmanAnalysis
        The analyses saved with the trajectory (spectra and diagnostics, no modes).
    metadata : dict
        Description of the weight observable (layers, augmentation, sketch, model name).
    """

    weights: np.ndarray
    weight_epochs: np.ndarray
    scalars: dict = field(default_factory=dict)
    analyses: tuple = ()
    metadata: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path) -> "TrainingTrajectory":
        """Open a trajectory directory written by ``KoopmanMonitor`` (live or saved)."""
        path = Path(path)
        meta_file = path / "trajectory.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"path: no trajectory.json in {path} (not a keras-koopman trajectory)")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"path: {meta_file} is not a {FORMAT} file")
        if int(meta.get("version", 0)) > VERSION:
            raise ValueError(f"path: format version {meta['version']} is newer than this reader ({VERSION})")
        dtype = np.dtype(meta["dtype"])
        n = int(meta["n_features"])
        data_file = path / "weights.bin"
        rows_on_disk = data_file.stat().st_size // (n * dtype.itemsize) if data_file.exists() else 0
        count = min(int(meta["count"]), rows_on_disk)
        if count:
            weights = np.memmap(data_file, dtype=dtype, mode="r", shape=(count, n)).T
        else:
            weights = np.empty((n, 0), dtype=dtype)
        scalars = {name: (np.asarray(v["epochs"], dtype=float), np.asarray(v["values"], dtype=float))
                   for name, v in meta.get("scalars", {}).items()}
        analyses_file = path / "analyses.json"
        analyses = ()
        if analyses_file.is_file():
            analyses = tuple(KoopmanAnalysis.from_dict(d) for d in json.loads(analyses_file.read_text()))
        return cls(weights=weights, weight_epochs=np.asarray(meta["weight_epochs"][:count], dtype=float),
                   scalars=scalars, analyses=analyses, metadata=meta.get("metadata", {}))
