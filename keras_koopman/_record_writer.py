"""Writing a record folder: one writer at a time (a lock), append-only files, atomic manifest.

A writer holds ``fcntl.flock`` on ``<folder>/lock`` for its whole life; the kernel releases
it when the process dies, however it dies.  The holder's pid, host and start time are written
(atomically) to ``<folder>/writer.json`` so that a refused writer can name it.  Within one
process a newer writer of a folder supersedes an older one that was never closed (a ``fit``
interrupted by an exception leaves its store open): the older one's files are closed and its
next write raises ``RuntimeError``.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from keras_koopman._atomic import (
    FILE_MODE,
    atomic_write,
    fsync_folder,
    write_json_atomic,
)
from keras_koopman._record_format import (
    ANALYSES,
    ENTRY,
    INDEX,
    MANIFEST,
    RECORD_FILES,
    SCALARS,
    WEIGHTS,
    RecordContents,
    encode_entry,
    read_record,
)

__all__ = ["RecordLockedError", "RecordWriter", "existing_record_files"]

LOCK = "lock"
HOLDER = "writer.json"
_APPEND_ONLY = (WEIGHTS, INDEX, SCALARS, ANALYSES)
#: live writers of this process, by the real path of their folder
_WRITERS: dict[str, weakref.ref] = {}


class RecordLockedError(RuntimeError):
    """Another process is writing the record folder."""


def existing_record_files(folder: Path) -> list[str]:
    """The record files in ``folder``; empty data files without a manifest (a writer killed
    while creating the record) hold nothing and are left out."""
    found = [name for name in RECORD_FILES if (folder / name).exists()]
    if MANIFEST in found or any((folder / name).stat().st_size for name in found):
        return found
    return []


def _lock(folder: Path) -> int:
    """Take the folder's lock (superseding a writer of this process); its file descriptor."""
    key = os.path.realpath(folder)
    older = _WRITERS.pop(key, lambda: None)()
    if older is not None:
        older.supersede()
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RecordLockedError(
            f"storage: {folder} is being written by another process ({_holder(folder)}); wait "
            "for it to finish, stop it, or use another folder") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _holder(folder: Path) -> str:
    try:
        info = json.loads((folder / HOLDER).read_text())
        return f"pid {info['pid']} on host {info['host']}, writing since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


class _AppendFile:
    """One append-only file.  Writes go at ``end``.  Bytes past it (the torn tail of a killed
    write, a failed write, rows dropped by a cut) are ignored by readers and dealt with by the
    next append, never before: cut, or for ``weights.bin`` (``shrink=False``) overwritten, so
    that the file never shrinks under a memory-mapped view of its rows."""

    def __init__(self, path: Path, end: int, *, create: bool, shrink: bool) -> None:
        self.path, self.end, self.shrink = path, end, shrink
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        self.fd = os.open(path, flags, FILE_MODE)
        self._tail_checked = create or not shrink

    def append(self, data: bytes) -> None:
        if not self._tail_checked:
            if os.fstat(self.fd).st_size != self.end:
                os.ftruncate(self.fd, self.end)
            self._tail_checked = True
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, self.end)
            self.end += written
            view = view[written:]

    def rollback(self, end: int) -> None:
        """Forget what was written past ``end`` (a failed write)."""
        self.end, self._tail_checked = end, not self.shrink

    def sync(self) -> None:
        os.fsync(self.fd)

    def cut(self, end: int) -> None:
        if self.shrink:
            os.ftruncate(self.fd, end)
            os.fsync(self.fd)
        self.end, self._tail_checked = end, True

    def replace(self, data: bytes) -> None:
        """Atomically replace the whole file with ``data``."""
        atomic_write(self.path, lambda handle: handle.write(data))
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDWR)
        self.end, self._tail_checked = len(data), True

    def close(self) -> None:
        os.close(self.fd)


class RecordWriter:
    """The writing side of a disk record (see :mod:`keras_koopman.trajectory`)."""

    def __init__(self, folder: Path, lock_fd: int, files: dict[str, _AppendFile]) -> None:
        self.folder, self._lock_fd, self._files = folder, lock_fd, files
        self.superseded = False
        write_json_atomic(folder / HOLDER, {"pid": os.getpid(), "host": socket.gethostname(),
                                            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        _WRITERS[os.path.realpath(folder)] = weakref.ref(self)
        self._finalizer = weakref.finalize(self, _release, lock_fd, list(files.values()))

    @classmethod
    def create(cls, folder: Path, manifest: dict, *, overwrite: bool) -> RecordWriter:
        """A new record in ``folder``; an existing one raises unless ``overwrite``."""
        folder.mkdir(parents=True, exist_ok=True)
        _refuse_existing(folder, overwrite)  # before taking the lock: a refusal supersedes nothing
        lock_fd = _lock(folder)
        files: list[_AppendFile] = []
        try:
            _refuse_existing(folder, overwrite)
            for name in RECORD_FILES:  # the manifest first: no half record remains
                if (folder / name).exists():
                    (folder / name).unlink()
            fsync_folder(folder)
            for name in _APPEND_ONLY:
                files.append(_AppendFile(folder / name, 0, create=True, shrink=name != WEIGHTS))
            fsync_folder(folder)
            write_json_atomic(folder / MANIFEST, manifest)
        except BaseException:
            _release(lock_fd, files)
            raise
        return cls(folder, lock_fd, dict(zip(_APPEND_ONLY, files)))

    @classmethod
    def continue_record(cls, folder: Path,
                        check: Callable[[RecordContents], None]) -> tuple[RecordWriter, RecordContents]:
        """Lock ``folder``, read and validate its record, ``check(record)`` (raise to refuse),
        and return a writer that appends after the record's valid part.  No file of the record
        changes until the first write (only ``writer.json``); a refusal releases the lock."""
        lock_fd = _lock(folder)
        files: list[_AppendFile] = []
        try:
            record = read_record(folder)
            check(record)
            for name in _APPEND_ONLY:
                files.append(_AppendFile(folder / name, record.ends[name], create=False,
                                         shrink=name != WEIGHTS))
        except BaseException:
            _release(lock_fd, files)
            raise
        return cls(folder, lock_fd, dict(zip(_APPEND_ONLY, files))), record

    # ------------------------------------------------------------------ writes
    def append_rows(self, epochs: Iterable[float], rows: Iterable[np.ndarray]) -> None:
        """Rows, then (after their bytes are on disk) their index entries."""
        self._check()
        weights, index = self._files[WEIGHTS], self._files[INDEX]
        starts = weights.end, index.end
        try:
            entries = []
            for epoch, row in zip(epochs, rows):
                data = np.ascontiguousarray(row).tobytes()
                weights.append(data)
                entries.append(encode_entry(epoch, data))
            weights.sync()
            index.append(b"".join(entries))
            index.sync()
        except BaseException:  # e.g. a full disk: the next append starts where this one did
            weights.rollback(starts[0])
            index.rollback(starts[1])
            raise

    def append_lines(self, name: str, lines: list[bytes]) -> None:
        self._check()
        handle = self._files[name]
        start = handle.end
        try:
            handle.append(b"".join(lines))
            handle.sync()
        except BaseException:
            handle.rollback(start)
            raise

    def replace_lines(self, name: str, lines: list[bytes]) -> None:
        self._check()
        self._files[name].replace(b"".join(lines))

    def cut_rows(self, rows: int, row_bytes: int) -> None:
        """Keep the first ``rows`` rows: only the index is cut (the rows' bytes past it are
        overwritten by the next rows), so no entry is left without its row."""
        self._check()
        self._files[INDEX].cut(rows * ENTRY.size)
        self._files[WEIGHTS].cut(rows * row_bytes)

    def write_manifest(self, manifest: dict) -> None:
        self._check()
        write_json_atomic(self.folder / MANIFEST, manifest)

    # ------------------------------------------------------------------ life
    def _check(self) -> None:
        if self.superseded:
            raise RuntimeError(f"storage: the record in {self.folder} was opened by a newer "
                               "TrajectoryStore of this process; this one can no longer write")
        if not self._finalizer.alive:
            raise ValueError(f"storage: the record in {self.folder} is closed")

    def supersede(self) -> None:
        self.superseded = True
        self._finalizer()

    def close(self) -> None:
        if self._finalizer.alive:
            self._finalizer()
            key = os.path.realpath(self.folder)
            if _WRITERS.get(key, lambda: None)() is self:
                del _WRITERS[key]


def _refuse_existing(folder: Path, overwrite: bool) -> None:
    found = existing_record_files(folder)
    if found and not overwrite:
        raise FileExistsError(
            f"storage: {folder} already holds a record ({', '.join(found)}); pass overwrite=True "
            "to replace it, or continue it (TrajectoryStore.reopen, KoopmanMonitor(resume=True))")


def _release(lock_fd: int, files: list[_AppendFile]) -> None:
    for handle in files:
        handle.close()
    os.close(lock_fd)  # closing the descriptor releases the flock
