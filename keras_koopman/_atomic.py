"""Atomic file writes: a temporary file in the target folder, fsync, ``os.replace``, fsync of
the folder."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "fsync_folder", "write_json_atomic"]


def _read_umask() -> int:
    """The process's umask, read once at import.

    Linux reports it in ``/proc/self/status`` without changing it; elsewhere it is read (once)
    by setting it and restoring it at once, before any file of this package is written.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: permissions of a new file: ``0o666`` minus the umask the process had when this was imported
FILE_MODE = 0o666 & ~_read_umask()


def fsync_folder(folder) -> None:
    """Make the creation, renaming or removal of entries of ``folder`` durable (POSIX)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(handle)`` on a temporary binary file next to ``path``, then rename it.

    Readers see either the old file or the complete new one, never a partial write. The
    file gets the usual permissions (``0o666`` minus the umask), not ``mkstemp``'s ``0o600``.
    Cost: two ``fsync`` (the file, then its folder).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path {str(path)!r}: folder {str(path.parent)!r} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)
    return path


def write_json_atomic(path, payload) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(json.dumps(payload, indent=1).encode()))
