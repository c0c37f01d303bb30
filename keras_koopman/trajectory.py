"""Recorded training trajectories: in memory, or on disk written incrementally.

On-disk layout, format version 2 (a folder; no pickle anywhere):

- ``trajectory.json`` — the manifest: format name, version, ``n_features``, dtype (``<f4`` or
  ``<f8``) and metadata; written atomically (temporary file + rename) when the record is
  created and again only when the metadata change (:meth:`TrajectoryStore.set_metadata`);
- ``weights.bin`` — raw little-endian rows, one snapshot of the weight observable per row,
  append-only;
- ``weights.idx`` — one 16-byte entry per row, append-only: the row's epoch (float64), the
  CRC32 of its bytes and the CRC32 of the entry itself (uint32 each, little-endian), written
  only after the row's bytes are ``fsync``-ed;
- ``scalars.jsonl`` — one JSON line per epoch, ``{"epoch": e, "values": {"loss": …}}``;
- ``analyses.jsonl`` — one JSON line per analysis (spectrum and diagnostics, no modes);
- ``lock`` and ``writer.json`` — the writer's ``flock`` and who holds it (pid, host, start).

Cost per recorded epoch: one row (``n`` values) and one 16-byte entry written with two
``fsync``, one scalar line with one ``fsync``: ``O(n)`` bytes, independent of the number of
rows already recorded.  An analysis appends one line (one ``fsync``).  Nothing is rewritten.

Reading (:meth:`TrainingTrajectory.load`, :meth:`TrajectoryStore.reopen`) validates everything
(``O(n T)``: every row's checksum): the manifest's dtype must be little-endian float16, float32 or
float64; a row with an index entry but missing bytes or another checksum, a corrupt entry, a bad
JSON line, or epochs that are negative, not finite or decreasing raise ``ValueError`` naming the
file (and the epoch or line).  What a killed writer leaves — a torn last entry, row or line —
is ignored, and dealt with only when the next one is appended (cut; in ``weights.bin``,
overwritten): a killed process loses at most what it was writing.  ``weights.bin`` never
shrinks, so memory-mapped views of its rows (:meth:`TrajectoryStore.weights`,
:attr:`TrainingTrajectory.weights`) stay valid; bytes past the last indexed row are ignored.
Format version 1 (rows counted in ``trajectory.json``, rewritten every epoch, no checksums)
is read with the same checks and can be copied (:meth:`TrajectoryStore.save`), not continued.
float16, bfloat16 and float8 weights are stored as float32.

A record is never truncated or deleted unless asked: creating a store in a folder that holds
one raises ``FileExistsError`` unless ``overwrite=True``; :meth:`TrajectoryStore.reopen`
changes no file of the record; :meth:`TrajectoryStore.truncate` is the explicit cut that
``KoopmanMonitor(resume=True)`` uses.  One writer per folder: a second one (another process)
gets :class:`RecordLockedError` naming the holder.
"""

from __future__ import annotations

import bisect
import copy
import json
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Self

import numpy as np

from keras_koopman._record_format import (
    ANALYSES,
    FORMAT,
    SCALARS,
    VERSION,
    RecordContents,
    check_epoch,
    encode_line,
    read_record,
    storage_dtype,
)
from keras_koopman._record_writer import RecordLockedError, RecordWriter
from keras_koopman.analysis import KoopmanAnalysis

__all__ = ["RecordLockedError", "TrainingTrajectory", "TrajectoryStore"]


class TrajectoryStore:
    """Append-only store of weight snapshots, scalar observables and analyses.

    Parameters
    ----------
    n_features : int
        Length of a weight snapshot (after augmentation and sketching).
    path : str or Path, optional
        Folder of a disk-backed record (created if missing); ``None`` keeps everything in memory.
    dtype : numpy dtype
        The weights' dtype.  Snapshots are kept in float32 or float64: float16, bfloat16 and
        float8 weights are stored as float32 (exactly), so ``store.dtype`` is float32 for them.
    metadata : dict
        JSON-serialisable description of the observable (layers, augmentation, sketch).
    overwrite : bool
        Replace a record already in ``path``; without it such a folder raises ``FileExistsError``.
    """

    def __init__(self, n_features: int, *, path=None, dtype=np.float32, metadata=None,
                 overwrite: bool = False) -> None:
        if isinstance(n_features, bool) or not isinstance(n_features, numbers.Integral):
            raise TypeError(f"n_features must be an integer; got {n_features!r}")
        if n_features < 1:
            raise ValueError(f"n_features must be at least 1; got {n_features}")
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite must be True or False; got {overwrite!r}")
        self.n_features = int(n_features)
        self.dtype = storage_dtype(dtype)
        self._metadata = _checked_metadata(metadata)
        self.path = None if path is None else Path(path)
        self._epochs: list[float] = []
        self._scalar_rows: list[tuple[float, dict]] = []
        self._prior: list[dict] = []  # analyses of a reopened record (after truncate)
        self._session: list[KoopmanAnalysis] = []  # analyses added since
        self._rows = np.empty((0, self.n_features), dtype=self.dtype)
        self._count = 0
        self._writer: RecordWriter | None = None
        self._manifest_pending = False
        if self.path is not None:
            self._writer = RecordWriter.create(self.path, self._manifest(), overwrite=overwrite)

    @classmethod
    def reopen(cls, path, *, n_features: int, dtype=np.float32, metadata=None,
               writable: bool = True) -> TrajectoryStore:
        """Open an existing disk record to continue it.

        The observable must match: ``n_features``, the storage dtype, the variables' shapes and
        the ``augment_constant`` and ``sketch`` entries of ``metadata`` are compared with the
        stored ones, and a mismatch raises ``ValueError`` naming the folder.  Opening changes no
        file of the record (it takes the folder's lock); a torn tail left by a killed writer is
        cut by the first append.  ``writable=False`` copies the record into memory, takes no
        lock and never writes (non-chief workers).  Cost: reads and validates the record once,
        ``O(n T)``.
        """
        if not isinstance(writable, bool):
            raise TypeError(f"writable must be True or False; got {writable!r}")
        folder, dtype = Path(path), storage_dtype(dtype)
        metadata = _checked_metadata(metadata)

        def check(record: RecordContents) -> None:
            _check_compatible(folder, record, int(n_features), dtype, metadata)
            if writable and record.version != VERSION:
                raise ValueError(
                    f"storage: {folder} holds a format version {record.version} record, which "
                    "can be read and copied (TrajectoryStore.reopen(..., writable=False).save(new)) "
                    "but not continued")

        if writable:
            writer, record = RecordWriter.continue_record(folder, check)
        else:
            record, writer = read_record(folder), None
            check(record)
        merged = {**record.metadata, **metadata}
        store = cls(n_features, dtype=dtype, metadata=merged)
        store._epochs = [float(e) for e in record.epochs]
        store._scalar_rows = [(e, dict(values)) for e, values in record.scalar_rows]
        store._prior = list(record.analyses)
        store._count = len(store._epochs)
        if writer is None:
            store._rows = np.array(record.weights.T, dtype=dtype)
        else:
            store.path, store._writer = folder, writer
            store._manifest_pending = merged != record.metadata
        return store

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self._count

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
        pairs = [(e, values[name]) for e, values in self._scalar_rows if name in values]
        data = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
        return data[:, 0], data[:, 1]

    @property
    def scalar_names(self) -> list[str]:
        return list(dict.fromkeys(name for _, values in self._scalar_rows for name in values))

    @property
    def metadata(self) -> Mapping:
        """The metadata, read-only (a copy): change it with :meth:`set_metadata`."""
        return MappingProxyType(copy.deepcopy(self._metadata))

    @property
    def prior_analyses(self) -> tuple[KoopmanAnalysis, ...]:
        """The analyses a reopened record held (after :meth:`truncate`), oldest first."""
        return tuple(KoopmanAnalysis.from_dict(a) for a in self._prior)

    # ------------------------------------------------------------------ writing
    def append_weights(self, epoch: float, vector: np.ndarray) -> None:
        """Record the snapshot of ``epoch`` (not before the last one; equal after a restart)."""
        epoch = check_epoch(epoch, self._epochs[-1] if self._epochs else None)
        row = np.asarray(vector, dtype=self.dtype).reshape(-1)
        if row.shape[0] != self.n_features:
            raise ValueError(f"vector must have {self.n_features} entries; got {row.shape[0]}")
        if self._before_write():
            self._writer.append_rows([epoch], [row])
        else:
            if self._count == self._rows.shape[0]:
                bigger = np.empty((max(8, 2 * self._count), self.n_features), dtype=self.dtype)
                bigger[: self._count] = self._rows[: self._count]
                self._rows = bigger
            self._rows[self._count] = row
        self._count += 1
        self._epochs.append(epoch)

    def append_scalars(self, epoch: float, values: Mapping[str, float]) -> None:
        """Record scalar observables (``{"loss": 0.3, …}``) of ``epoch``: one line."""
        if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
            raise TypeError(f"values must be a mapping of names to numbers; got {values!r}")
        if not values:
            return
        epoch = check_epoch(epoch, self._scalar_rows[-1][0] if self._scalar_rows else None)
        row = {}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"values[{name!r}] must be a number; got {value!r}")
            row[name] = float(value)
        if self._before_write():
            self._writer.append_lines(SCALARS, [encode_line({"epoch": epoch, "values": row})])
        self._scalar_rows.append((epoch, row))

    def append_analyses(self, analyses: Sequence[KoopmanAnalysis]) -> None:
        """Record new analyses after the ones already held (one line each)."""
        new = list(analyses)
        for analysis in new:
            if not isinstance(analysis, KoopmanAnalysis):
                raise TypeError(f"analyses must hold KoopmanAnalysis objects; got {analysis!r}")
        if new and self._before_write():
            self._writer.append_lines(ANALYSES, [encode_line(a.to_dict()) for a in new])
        self._session.extend(new)

    def set_analyses(self, analyses: Sequence[KoopmanAnalysis]) -> None:
        """Make the record's analyses the reopened record's ones followed by ``analyses``.

        When ``analyses`` extends the list given last time (the usual case) only the new ones
        are appended; otherwise the analyses file is replaced atomically.
        """
        analyses = list(analyses)
        known = len(self._session)
        if len(analyses) >= known and all(a is b for a, b in zip(analyses, self._session)):
            self.append_analyses(analyses[known:])
            return
        for analysis in analyses:
            if not isinstance(analysis, KoopmanAnalysis):
                raise TypeError(f"analyses must hold KoopmanAnalysis objects; got {analysis!r}")
        if self._before_write():
            lines = [encode_line(a) for a in self._prior] + [encode_line(a.to_dict()) for a in analyses]
            self._writer.replace_lines(ANALYSES, lines)
        self._session = analyses

    def set_metadata(self, key: str, value) -> None:
        """Set one metadata entry (JSON-serialisable); a disk store rewrites its manifest."""
        if not isinstance(key, str):
            raise TypeError(f"key must be a string; got {key!r}")
        new = _checked_metadata({**self._metadata, key: value}, name="value")
        if new == self._metadata:
            return
        if self._before_write():
            self._writer.write_manifest({**self._manifest(), "metadata": new})
        self._metadata = new

    def truncate(self, epoch: float) -> None:
        """Drop every weight snapshot, scalar value and analysis after ``epoch``.

        On disk only the index is cut (the dropped rows' bytes stay in ``weights.bin``, ignored,
        until the next rows overwrite them; earlier views of them then show the new rows); the
        scalar and analysis files are replaced atomically, and only when they change.
        """
        epoch = check_epoch(epoch, None)
        keep = bisect.bisect_right(self._epochs, epoch)
        scalar_rows = self._scalar_rows[:bisect.bisect_right([e for e, _ in self._scalar_rows], epoch)]
        prior = [a for a in self._prior if a["last_epoch"] <= epoch]
        session = [a for a in self._session if a.last_epoch <= epoch]
        if self._before_write():  # the files first: a refused write leaves the store as it was
            if keep < self._count:
                self._writer.cut_rows(keep, self.n_features * self.dtype.itemsize)
            if len(scalar_rows) < len(self._scalar_rows):
                self._writer.replace_lines(SCALARS, [encode_line({"epoch": e, "values": v})
                                                     for e, v in scalar_rows])
            if len(prior) < len(self._prior) or len(session) < len(self._session):
                self._writer.replace_lines(ANALYSES, [encode_line(a) for a in prior]
                                           + [encode_line(a.to_dict()) for a in session])
        self._count, self._epochs = keep, self._epochs[:keep]
        self._scalar_rows, self._prior, self._session = scalar_rows, prior, session

    def close(self) -> None:
        """Release the record (a disk store keeps being readable; writing raises)."""
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write the whole record to folder ``path`` in format version 2; returns the path.

        A folder that already holds a record raises ``FileExistsError`` unless ``overwrite``;
        saving a disk store to its own folder writes nothing.  Cost ``O(n T)``, four ``fsync``.
        """
        path = Path(path)
        if self.path is not None and path.resolve() == self.path.resolve():
            return path
        with TrajectoryStore(self.n_features, path=path, dtype=self.dtype,
                             metadata=self._metadata, overwrite=overwrite) as out:
            writer = out._writer
            writer.append_rows(self._epochs, self.weights().T)
            writer.append_lines(SCALARS, [encode_line({"epoch": e, "values": v})
                                          for e, v in self._scalar_rows])
            writer.append_lines(ANALYSES, [encode_line(a) for a in self._prior]
                                + [encode_line(a.to_dict()) for a in self._session])
        return path

    # ------------------------------------------------------------------ helpers
    def _before_write(self) -> bool:
        """Whether this is a disk store; writes a pending manifest first.  A closed or
        superseded disk store raises."""
        if self._writer is None:
            return False
        if self._manifest_pending:
            self._writer.write_manifest(self._manifest())
            self._manifest_pending = False
        return True

    def _manifest(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "n_features": self.n_features,
                "dtype": self.dtype.str, "metadata": self._metadata}


def _checked_metadata(metadata, name: str = "metadata") -> dict:
    """A JSON round-trip copy of ``metadata`` (``TypeError`` naming ``name`` if it has none)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict; got {type(metadata).__name__}")
    try:
        return json.loads(json.dumps(dict(metadata)))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be JSON-serialisable ({exc})") from exc


def _check_compatible(folder: Path, record: RecordContents, n_features: int, dtype: np.dtype,
                      metadata: dict) -> None:
    """Refuse to continue a record of another observable (``ValueError`` naming the folder)."""
    stored = storage_dtype(record.dtype)
    if record.n_features != n_features or stored != dtype:
        raise ValueError(f"storage: {folder} holds {record.n_features} features of {stored.name}; "
                         f"this model's observable has {n_features} of {dtype.name}")

    def layout(meta: dict, source: str) -> dict:
        # variable shapes (not their auto-generated names), augmentation and sketch
        view = {k: meta[k] for k in ("augment_constant", "sketch") if k in meta}
        if "variables" in meta:
            try:
                view["variable shapes"] = [shape for _, shape in meta["variables"]]
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{source}: variables must be [path, shape] pairs") from exc
        return view

    old = layout(record.metadata, f"storage: {folder / 'trajectory.json'}: metadata")
    new = layout(metadata, "metadata")
    for key in new:
        if key in old and old[key] != new[key]:
            raise ValueError(f"storage: {folder} was recorded with other {key} "
                             f"({old[key]!r}, now {new[key]!r})")


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
    def load(cls, path) -> TrainingTrajectory:
        """Read and validate a record folder (format version 1 or 2; live or saved).

        A missing ``trajectory.json`` raises ``FileNotFoundError``, anything inconsistent
        ``ValueError`` naming the file (see the module docstring).  Cost ``O(n T)``.
        """
        record = read_record(path)
        series: dict[str, list[tuple[float, float]]] = {}
        for epoch, values in record.scalar_rows:
            for name, value in values.items():
                series.setdefault(name, []).append((epoch, value))
        scalars = {name: tuple(np.asarray(pairs, dtype=float).reshape(-1, 2).T)
                   for name, pairs in series.items()}
        return cls(weights=record.weights, weight_epochs=record.epochs, scalars=scalars,
                   analyses=tuple(KoopmanAnalysis.from_dict(a) for a in record.analyses),
                   metadata=record.metadata)
