"""The on-disk format of a recorded trajectory, and its validating reader.

The layout itself is described in :mod:`keras_koopman.trajectory`.  Nothing read from a file
decides how memory is interpreted beyond the three accepted dtypes (``<f2``, ``<f4``, ``<f8``),
and every size is checked against the files before anything is mapped.
"""

from __future__ import annotations

import json
import math
import numbers
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_koopman.analysis import KoopmanAnalysis

__all__ = ["ANALYSES", "ENTRY", "FORMAT", "INDEX", "MANIFEST", "MAX_FEATURES", "RECORD_FILES", "SCALARS",
           "VERSION", "WEIGHTS", "RecordContents", "check_epoch", "encode_entry", "encode_line",
           "read_record", "storage_dtype"]

FORMAT = "keras-koopman-trajectory"
VERSION = 2
MANIFEST = "trajectory.json"
WEIGHTS = "weights.bin"
INDEX = "weights.idx"
SCALARS = "scalars.jsonl"
ANALYSES = "analyses.jsonl"
V1_ANALYSES = "analyses.json"
#: every file name that belongs to a record (version 1 or 2)
RECORD_FILES = (MANIFEST, WEIGHTS, INDEX, SCALARS, ANALYSES, V1_ANALYSES)
#: one index entry per row: epoch, CRC32 of the row's bytes, CRC32 of the entry's first 12 bytes
ENTRY = struct.Struct("<dII")
#: the most features a record may claim (2**40: 4 TiB per float32 row), checked before mapping
MAX_FEATURES = 2**40
_HEADER_DTYPES = {"<f2": np.dtype("<f2"), "<f4": np.dtype("<f4"), "<f8": np.dtype("<f8")}
_REDUCED_FLOATS = ("bfloat16", "float8_", "float6_", "float4_")  # ml_dtypes' names


def storage_dtype(dtype) -> np.dtype:
    """The dtype a store keeps snapshots in: float32 or float64, little-endian.

    float16, bfloat16 and the float8 types are stored as float32 (exact); anything that is not
    a real floating-point type raises ``TypeError`` naming ``dtype``.
    """
    name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None) or str(dtype)
    if any(str(name).startswith(prefix) for prefix in _REDUCED_FLOATS):
        return np.dtype("<f4")
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be a floating-point dtype; got {dtype!r}") from exc
    if resolved.kind == "f" and resolved.itemsize in (4, 8):
        return resolved.newbyteorder("<")
    if resolved.kind == "f" and resolved.itemsize == 2:
        return np.dtype("<f4")
    raise TypeError(f"dtype must be float16, bfloat16, float32 or float64; got {resolved}")


def check_epoch(epoch, previous: float | None, name: str = "epoch") -> float:
    """``epoch`` as a float: finite, at least 0 and not below ``previous``; else ``ValueError``."""
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Real):
        raise TypeError(f"{name} must be a number; got {epoch!r}")
    value = float(epoch)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and at least 0; got {epoch!r}")
    if previous is not None and value < previous:
        raise ValueError(f"{name} {value:g} comes before the last one recorded ({previous:g}); "
                         "epochs never decrease (truncate first to rewrite the end)")
    return value


def encode_entry(epoch: float, row: bytes) -> bytes:
    head = struct.pack("<dI", epoch, zlib.crc32(row))
    return head + struct.pack("<I", zlib.crc32(head))


def encode_line(payload) -> bytes:
    """One JSON line (``json.dumps`` escapes newlines inside strings)."""
    return (json.dumps(payload, separators=(",", ":")) + "\n").encode()


@dataclass(frozen=True, eq=False)
class RecordContents:
    """A validated record.  ``ends`` holds, for a version-2 record, the length in bytes of the
    valid part of each append-only file (a torn tail past it is ignored)."""

    version: int
    n_features: int
    dtype: np.dtype
    metadata: dict
    weights: np.ndarray  # (n, T), memory-mapped read-only
    epochs: np.ndarray
    scalar_rows: tuple  # ((epoch, {name: value}), ...)
    analyses: tuple  # dicts accepted by KoopmanAnalysis.from_dict
    ends: dict


def read_record(path) -> RecordContents:
    """Read and validate the record in folder ``path`` (format version 1 or 2)."""
    folder = Path(path)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"path: no {MANIFEST} in {folder} (not a keras-koopman trajectory)")
    try:
        meta = json.loads(manifest.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"path: {manifest} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"path: {manifest} is not a {FORMAT} file")
    version = meta.get("version")
    if version not in (1, 2) or isinstance(version, bool):
        raise ValueError(f"path: {manifest}: format version {version!r} is not one this reader "
                         f"knows (1 or {VERSION})")
    n = meta.get("n_features")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_FEATURES:
        raise ValueError(f"path: {manifest}: n_features must be an integer from 1 to "
                         f"{MAX_FEATURES}; got {n!r}")
    text = meta.get("dtype")
    if not isinstance(text, str) or text not in _HEADER_DTYPES:
        raise ValueError(f"path: {manifest}: dtype {text!r} is not one of "
                         f"{sorted(_HEADER_DTYPES)} (little-endian float16/32/64)")
    metadata = meta.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"path: {manifest}: metadata must be an object")  # noqa: TRY004 - a corrupt file
    reader = _read_version2 if version == 2 else _read_version1
    return reader(folder, meta, n, _HEADER_DTYPES[text], metadata)


def _read_version2(folder: Path, meta: dict, n: int, dtype: np.dtype, metadata: dict) -> RecordContents:
    for name in (WEIGHTS, INDEX, SCALARS, ANALYSES):
        if not (folder / name).is_file():
            raise ValueError(f"path: {folder / name} is missing (the record in {folder} is incomplete)")
    index = (folder / INDEX).read_bytes()
    count = len(index) // ENTRY.size  # a torn last entry (a killed append) is ignored
    epochs = np.empty(count)
    crcs = []
    previous = None
    for k in range(count):
        entry = index[k * ENTRY.size:(k + 1) * ENTRY.size]
        epoch, crc, check = ENTRY.unpack(entry)
        if zlib.crc32(entry[:12]) != check:
            after = "" if previous is None else f", after epoch {previous:g}"
            raise ValueError(f"path: {folder / INDEX}: entry {k} (row {k}{after}) is corrupt "
                             "(checksum mismatch)")
        try:
            previous = check_epoch(epoch, previous)
        except ValueError as exc:
            raise ValueError(f"path: {folder / INDEX}: entry {k}: {exc}") from exc
        epochs[k] = previous
        crcs.append(crc)
    weights = _map_rows(folder / WEIGHTS, n, dtype, count, epochs)
    for k, crc in enumerate(crcs):
        if zlib.crc32(weights[k]) != crc:
            raise ValueError(f"path: {folder / WEIGHTS}: the row of epoch {epochs[k]:g} (row {k}) "
                             "is corrupt (checksum mismatch)")
    scalar_rows, scalars_end = _read_scalar_lines(folder / SCALARS)
    analyses, analyses_end = _read_analysis_lines(folder / ANALYSES)
    ends = {INDEX: count * ENTRY.size, WEIGHTS: count * n * dtype.itemsize,
            SCALARS: scalars_end, ANALYSES: analyses_end}
    return RecordContents(2, n, dtype, metadata, weights.T, epochs, scalar_rows, analyses, ends)


def _map_rows(path: Path, n: int, dtype: np.dtype, count: int, epochs: np.ndarray) -> np.ndarray:
    """The first ``count`` rows of ``path``, memory-mapped read-only, shape (count, n)."""
    if not path.is_file():
        raise ValueError(f"path: {path} is missing")
    size = path.stat().st_size
    row_bytes = n * dtype.itemsize
    if size < count * row_bytes:
        first = size // row_bytes
        raise ValueError(f"path: {path} holds {size} bytes, {first} whole rows of {n} {dtype.name}; "
                         f"the rows from epoch {epochs[first]:g} on ({count - first} of {count}) "
                         "are missing (truncated file, or a wrong n_features)")
    if count == 0:
        return np.empty((0, n), dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count, n))


def _lines(path: Path):
    """``(line number, parsed JSON)`` of each complete line, and the bytes they span; an
    unterminated last line (a killed append) is left out."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    parsed = []
    for number, raw in enumerate(data[:end].split(b"\n")[:-1], start=1):
        try:
            parsed.append((number, json.loads(raw)))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"path: {path}, line {number}: not valid JSON ({exc})") from exc
    return parsed, end


def _read_scalar_lines(path: Path) -> tuple[tuple, int]:
    rows, previous = [], None
    parsed, end = _lines(path)
    for number, line in parsed:
        try:
            if not isinstance(line, dict) or set(line) != {"epoch", "values"}:
                raise ValueError('expected {"epoch": ..., "values": {...}}')
            previous = check_epoch(line["epoch"], previous)
            rows.append((previous, _scalar_values(line["values"])))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"path: {path}, line {number}: {exc}") from exc
    return tuple(rows), end


def _scalar_values(values) -> dict:
    if not isinstance(values, dict):
        raise ValueError("values must be an object of name: number")  # noqa: TRY004 - a corrupt file
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"value of {name!r} is not a number: {value!r}")  # noqa: TRY004 - a corrupt file
    return {name: float(value) for name, value in values.items()}


def _read_analysis_lines(path: Path) -> tuple[tuple, int]:
    parsed, end = _lines(path)
    return tuple(_analysis(line, f"{path}, line {number}") for number, line in parsed), end


def _analysis(data, where: str) -> dict:
    try:
        analysis = KoopmanAnalysis.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"path: {where}: not an analysis ({type(exc).__name__}: {exc})") from exc
    if not (math.isfinite(analysis.first_epoch) and math.isfinite(analysis.last_epoch)):
        raise ValueError(f"path: {where}: epochs of the analysis are not finite")
    return analysis.to_dict()


def _read_version1(folder: Path, meta: dict, n: int, dtype: np.dtype, metadata: dict) -> RecordContents:
    """Version 1: rows counted in ``trajectory.json``, no checksums; the same checks otherwise."""
    manifest = folder / MANIFEST
    count, epochs = meta.get("count"), meta.get("weight_epochs")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"path: {manifest}: count must be a non-negative integer; got {count!r}")
    if not isinstance(epochs, list) or len(epochs) < count:
        raise ValueError(f"path: {manifest}: weight_epochs must list the epoch of each of the "
                         f"{count} rows")
    checked, previous = np.empty(count), None
    for k, epoch in enumerate(epochs[:count]):
        try:
            checked[k] = previous = check_epoch(epoch, previous)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"path: {manifest}: weight_epochs[{k}]: {exc}") from exc
    weights = _map_rows(folder / WEIGHTS, n, dtype, count, checked)
    rows = []
    scalars = meta.get("scalars", {})
    if not isinstance(scalars, dict):
        raise ValueError(f"path: {manifest}: scalars must be an object")  # noqa: TRY004 - a corrupt file
    for name, series in scalars.items():
        try:
            if not isinstance(series, dict) or len(series.get("epochs", ())) != len(series.get("values", ())):
                raise ValueError("epochs and values must be lists of the same length")
            previous = None
            for epoch, value in zip(series["epochs"], series["values"]):
                previous = check_epoch(epoch, previous)
                rows.append((previous, _scalar_values({name: value})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"path: {manifest}: scalar {name!r}: {exc}") from exc
    rows.sort(key=lambda row: row[0])  # one epoch order across names, as version 2 keeps it
    analyses: tuple = ()
    listing = folder / V1_ANALYSES
    if listing.is_file():
        try:
            items = json.loads(listing.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"path: {listing} is not valid JSON ({exc})") from exc
        if not isinstance(items, list):
            raise ValueError(f"path: {listing} must hold a list of analyses")
        analyses = tuple(_analysis(item, f"{listing}, item {k}") for k, item in enumerate(items))
    return RecordContents(1, n, dtype, metadata, weights.T, checked, tuple(rows), analyses, {})
