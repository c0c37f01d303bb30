"""TrajectoryStore on disk: no silent truncation, one writer, validated reads, O(1) appends,
reduced-precision weights, and records that survive ``kill -9``."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import keras_koopman._atomic as atomic
import keras_koopman._record_writer as record_writer
from keras_koopman.analysis import analyze_series
from keras_koopman.cli import main as cli_main
from keras_koopman.trajectory import (
    RecordLockedError,
    TrainingTrajectory,
    TrajectoryStore,
)

ROOT = Path(__file__).resolve().parents[1]
N = 6
ENTRY = 16  # bytes of one weights.idx entry
RECORD = ("trajectory.json", "weights.bin", "weights.idx", "scalars.jsonl", "analyses.jsonl")


def row(epoch: float, n: int = N) -> np.ndarray:
    return (np.arange(n, dtype=np.float32) + 1.0) * (1.0 + epoch) / 7.0


def analysis():
    values = 2.0 * 0.9 ** np.arange(30.0) + 0.1
    return analyze_series(values, np.arange(1.0, 31.0), observable="loss")


def make_record(folder: Path, epochs: int = 5, *, analyses: int = 1) -> Path:
    with TrajectoryStore(N, path=folder, metadata={"model": "m", "augment_constant": False}) as store:
        for e in range(epochs):
            store.append_weights(float(e), row(e))
            if e:
                store.append_scalars(float(e), {"loss": 1.0 / e, "val_loss": 2.0 / e})
        store.append_analyses([analysis() for _ in range(analyses)])
    return folder


def snapshot(folder: Path) -> dict:
    return {name: (folder / name).read_bytes() for name in RECORD if (folder / name).exists()}


def index_entry(epoch: float, data: bytes) -> bytes:
    head = struct.pack("<dI", epoch, zlib.crc32(data))
    return head + struct.pack("<I", zlib.crc32(head))


# ------------------------------------------------------------------ no silent truncation
def test_refused_reopen_changes_nothing_and_releases_the_lock(tmp_path):
    """Problem 1 (store part): a refused or abandoned resume leaves the record as it was."""
    folder = make_record(tmp_path / "rec")
    with open(folder / "weights.bin", "ab") as handle:  # a torn row left by a killed writer
        handle.write(b"\x01" * 5)
    before = snapshot(folder)
    with pytest.raises(ValueError, match=r"rec holds 6 features of float32; .* 7 of float32"):
        TrajectoryStore.reopen(folder, n_features=7)
    with pytest.raises(ValueError, match="other augment_constant"):
        TrajectoryStore.reopen(folder, n_features=N, metadata={"augment_constant": True})
    store = TrajectoryStore.reopen(folder, n_features=N, metadata={"augment_constant": False})
    assert len(store) == 5 and store.scalar_names == ["loss", "val_loss"]
    store.close()
    assert snapshot(folder) == before
    # the lock was released each time: a fresh writer gets it
    TrajectoryStore.reopen(folder, n_features=N).close()


def test_second_store_on_a_record_refuses_unless_overwrite(tmp_path):
    """Problem 2: a second ``fit`` with the same storage used to truncate the record."""
    folder = make_record(tmp_path / "rec")
    before = snapshot(folder)
    with pytest.raises(FileExistsError, match=r"rec already holds a record .*overwrite=True"):
        TrajectoryStore(N, path=folder)
    assert snapshot(folder) == before
    with pytest.raises(FileExistsError, match="overwrite=True"):
        TrajectoryStore(N, path=tmp_path / "other").save(folder)
    assert snapshot(folder) == before
    TrajectoryStore(3, path=folder, overwrite=True).close()
    fresh = TrainingTrajectory.load(folder)
    assert fresh.weights.shape == (3, 0) and fresh.scalars == {} and fresh.analyses == ()


def test_unrelated_file_named_like_a_record_file_is_not_replaced(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="weights.bin"):
        TrajectoryStore(N, path=tmp_path)
    assert (tmp_path / "weights.bin").read_bytes() == b"mine"


# ------------------------------------------------------------------ one writer
HOLD = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    from keras_koopman.trajectory import TrajectoryStore
    store = TrajectoryStore.reopen({folder!r}, n_features={n})
    store.append_weights(9.0, np.zeros({n}))
    print("holding", flush=True)
    sys.stdin.readline()
""")


def test_second_process_is_refused_with_the_holder_named(tmp_path):
    """Problem 3: two processes used to splice their rows into one record."""
    folder = make_record(tmp_path / "rec")
    script = HOLD.format(root=str(ROOT), folder=str(folder), n=N)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        with pytest.raises(RecordLockedError, match=rf"rec is being written by another process "
                                                    rf"\(pid {proc.pid} on host .*, writing since"):
            TrajectoryStore.reopen(folder, n_features=N)
        with pytest.raises(RecordLockedError, match=f"pid {proc.pid}"):
            TrajectoryStore(N, path=folder, overwrite=True)
        # a reader is never blocked, and sees the holder's acknowledged row
        assert TrainingTrajectory.load(folder).weight_epochs[-1] == 9.0
    finally:
        proc.kill()  # kill -9: the kernel drops the lock with the process
        proc.wait()
    store = TrajectoryStore.reopen(folder, n_features=N)
    store.append_weights(10.0, row(10))
    store.close()
    assert TrainingTrajectory.load(folder).weight_epochs.tolist() == [0, 1, 2, 3, 4, 9, 10]


def test_newer_store_of_the_same_process_supersedes_an_unclosed_one(tmp_path):
    folder = make_record(tmp_path / "rec")
    abandoned = TrajectoryStore.reopen(folder, n_features=N)  # e.g. fit interrupted by an exception
    newer = TrajectoryStore.reopen(folder, n_features=N)
    with pytest.raises(RuntimeError, match="opened by a newer TrajectoryStore"):
        abandoned.append_weights(5.0, row(5))
    newer.append_weights(5.0, row(5))
    newer.close()
    with pytest.raises(ValueError, match="closed"):
        newer.append_scalars(6.0, {"loss": 1.0})
    assert TrainingTrajectory.load(folder).weight_epochs.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(newer.weights()[:, -1], row(5))  # readable after close


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("text", ["|O", "<U1", "<V2", ">f8", "<i4", "<c16", "float32", 7])
def test_header_dtype_outside_the_three_floats_is_refused(tmp_path, text, capsys):
    """Problem 4: "|O" crashed ``analyze`` with a segmentation fault, "<U1" a SystemError."""
    folder = make_record(tmp_path / "rec")
    manifest = json.loads((folder / "trajectory.json").read_text())
    manifest["dtype"] = text
    (folder / "trajectory.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"trajectory.json: dtype .* is not one of"):
        TrainingTrajectory.load(folder)
    assert cli_main(["analyze", str(folder)]) == 2
    assert "is not one of ['<f2', '<f4', '<f8']" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, "bfloat16", np.float16, ml_dtypes.float8_e4m3fn])
def test_reduced_precision_weights_are_stored_as_float32(tmp_path, dtype):
    """Problem 10: bfloat16 weights were saved as "<V2", which nothing could read back."""
    vector = np.linspace(-3, 3, N).astype(dtype)
    with TrajectoryStore(N, path=tmp_path / "rec", dtype=dtype) as store:
        assert store.dtype == np.float32
        store.append_weights(0.0, vector)
        store.append_weights(1.0, vector)
    assert json.loads((tmp_path / "rec" / "trajectory.json").read_text())["dtype"] == "<f4"
    loaded = TrainingTrajectory.load(tmp_path / "rec")
    np.testing.assert_array_equal(loaded.weights[:, 1], vector.astype(np.float32))
    TrajectoryStore.reopen(tmp_path / "rec", n_features=N, dtype=dtype).close()


@pytest.mark.parametrize("dtype, stored", [(np.float64, "<f8"), ("float64", "<f8"), (">f8", "<f8"),
                                           (np.float32, "<f4"), ("float16", "<f4")])
def test_full_precision_is_kept(tmp_path, dtype, stored):
    with TrajectoryStore(N, path=tmp_path / "rec", dtype=dtype) as store:
        assert store.dtype.str == stored
        store.append_weights(0.0, np.full(N, 1 / 3))
    assert json.loads((tmp_path / "rec" / "trajectory.json").read_text())["dtype"] == stored
    loaded = TrainingTrajectory.load(tmp_path / "rec").weights
    np.testing.assert_array_equal(loaded[:, 0], np.full(N, 1 / 3).astype(stored))


@pytest.mark.parametrize("dtype", [np.int32, np.complex64, object, "U1", np.bool_])
def test_store_refuses_a_non_float_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        TrajectoryStore(N, dtype=dtype)


# ------------------------------------------------------------------ corruption
def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _set_manifest(key, value):
    def change(folder: Path) -> None:
        manifest = json.loads((folder / "trajectory.json").read_text())
        manifest[key] = value
        (folder / "trajectory.json").write_text(json.dumps(manifest))
    return change


def _write_entry(k: int, epoch: float):
    """Entry ``k`` rewritten with a valid checksum but the given epoch."""
    def change(folder: Path) -> None:
        data = (folder / "weights.bin").read_bytes()[k * 4 * N:(k + 1) * 4 * N]
        index = bytearray((folder / "weights.idx").read_bytes())
        index[k * ENTRY:(k + 1) * ENTRY] = index_entry(epoch, data)
        (folder / "weights.idx").write_bytes(bytes(index))
    return change


def _append(name: str, data: bytes):
    def change(folder: Path) -> None:
        with open(folder / name, "ab") as handle:
            handle.write(data)
    return change


def _truncate(name: str, size):
    def change(folder: Path) -> None:
        with open(folder / name, "r+b") as handle:
            handle.truncate(size(folder / name))
    return change


CORRUPTIONS = {
    "weights truncated to half": (_truncate("weights.bin", lambda p: p.stat().st_size // 2),
                                  r"weights.bin holds 60 bytes, 2 whole rows .* from epoch 2 on"),
    "n_features one more": (_set_manifest("n_features", N + 1),
                            r"weights.bin holds 120 bytes, 4 whole rows of 7 .* from epoch 4 on"),
    "n_features one less": (_set_manifest("n_features", N - 1),
                            r"weights.bin: the row of epoch 0 \(row 0\) is corrupt"),
    "n_features huge": (_set_manifest("n_features", 10**30), r"trajectory.json: n_features must"),
    "n_features not an integer": (_set_manifest("n_features", 6.5), r"trajectory.json: n_features"),
    "flipped byte in the rows": (lambda f: _flip(f / "weights.bin", 3 * 4 * N + 5),
                                 r"weights.bin: the row of epoch 3 \(row 3\) is corrupt"),
    "flipped byte in the index": (lambda f: _flip(f / "weights.idx", 2 * ENTRY + 1),
                                  r"weights.idx: entry 2 \(row 2, after epoch 1\) is corrupt"),
    "garbage index entry appended": (_append("weights.idx", b"\x07" * ENTRY),
                                     r"weights.idx: entry 5 .* is corrupt"),
    "entry without its row": (_append("weights.idx", index_entry(5.0, row(5).tobytes())),
                              r"weights.bin holds 120 bytes, 5 whole rows .* from epoch 5 on"),
    "negative epoch": (_write_entry(0, -1.0), r"weights.idx: entry 0: epoch must be finite and at least 0"),
    "NaN epoch": (_write_entry(1, float("nan")), r"weights.idx: entry 1: epoch must be finite"),
    "decreasing epochs": (_write_entry(3, 1.5), r"weights.idx: entry 3: epoch 1.5 comes before"),
    "rows missing": (lambda f: (f / "weights.bin").unlink(), r"weights.bin is missing"),
    "index missing": (lambda f: (f / "weights.idx").unlink(), r"weights.idx is missing"),
    "scalars missing": (lambda f: (f / "scalars.jsonl").unlink(), r"scalars.jsonl is missing"),
    "analyses missing": (lambda f: (f / "analyses.jsonl").unlink(), r"analyses.jsonl is missing"),
    "malformed scalar line": (lambda f: _flip(f / "scalars.jsonl", 0),
                              r"scalars.jsonl, line 1: not valid JSON"),
    "scalar not a number": (_append("scalars.jsonl", b'{"epoch":5,"values":{"loss":"x"}}\n'),
                            r"scalars.jsonl, line 5: value of 'loss' is not a number"),
    "scalar epoch decreasing": (_append("scalars.jsonl", b'{"epoch":2,"values":{"loss":1}}\n'),
                                r"scalars.jsonl, line 5: epoch 2 comes before"),
    "analysis line not an analysis": (_append("analyses.jsonl", b'{"observable":"loss"}\n'),
                                      r"analyses.jsonl, line 2: not an analysis"),
    "manifest not JSON": (lambda f: (f / "trajectory.json").write_text("{"),
                          r"trajectory.json is not valid JSON"),
    "manifest of a newer version": (_set_manifest("version", 3), r"format version 3 is not one"),
    "metadata not an object": (_set_manifest("metadata", [1]), r"metadata must be an object"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corruption_is_detected_naming_the_file(tmp_path, kind):
    """Problem 5: a half-truncated weights.bin, an n_features off by one or a flipped byte
    loaded silently and gave a wrong spectrum."""
    folder = make_record(tmp_path / "rec")
    corrupt, message = CORRUPTIONS[kind]
    corrupt(folder)
    with pytest.raises(ValueError, match=message):
        TrainingTrajectory.load(folder)
    with pytest.raises(ValueError, match=message):  # and nothing is continued on top of it
        TrajectoryStore.reopen(folder, n_features=N)


def test_torn_tails_are_ignored_on_read_and_cut_by_the_next_append(tmp_path):
    folder = make_record(tmp_path / "rec")
    tails = {"weights.bin": row(5).tobytes()[:7], "weights.idx": b"\x01" * 9,
             "scalars.jsonl": b'{"epoch":5,"val', "analyses.jsonl": b'{"obs'}
    for name, tail in tails.items():
        _append(name, tail)(folder)
    before = snapshot(folder)
    loaded = TrainingTrajectory.load(folder)
    assert loaded.weights.shape == (N, 5) and len(loaded.scalars["loss"][0]) == 4
    assert len(loaded.analyses) == 1
    store = TrajectoryStore.reopen(folder, n_features=N)
    assert snapshot(folder) == before  # reopening cut nothing
    store.append_weights(5.0, row(5))
    store.append_scalars(5.0, {"loss": 0.2})
    store.append_analyses([analysis()])
    store.close()
    loaded = TrainingTrajectory.load(folder)
    np.testing.assert_array_equal(loaded.weights, np.stack([row(e) for e in range(6)], axis=1))
    assert loaded.scalars["loss"][0].tolist() == [1, 2, 3, 4, 5]
    assert len(loaded.analyses) == 2
    assert (folder / "weights.idx").stat().st_size == 6 * ENTRY


def test_a_failed_append_leaves_the_record_valid_and_the_store_usable(tmp_path, monkeypatch):
    """An I/O error (e.g. a full disk) while writing a row's index entry or a scalar line."""
    folder = make_record(tmp_path / "rec")
    store = TrajectoryStore.reopen(folder, n_features=N)
    real_fsync, calls = os.fsync, []

    def failing(fd):
        calls.append(fd)
        if len(calls) in (2, 3):  # the index entry of the row, then the scalar line
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="No space"):
        store.append_weights(5.0, row(5))
    with pytest.raises(OSError, match="No space"):
        store.append_scalars(5.0, {"loss": 0.2})
    assert len(store) == 5 and store.scalar("loss")[0].tolist() == [1, 2, 3, 4]
    store.append_weights(5.0, row(5))
    store.append_scalars(5.0, {"loss": 0.2})
    store.close()
    loaded = TrainingTrajectory.load(folder)
    np.testing.assert_array_equal(loaded.weights, np.stack([row(e) for e in range(6)], axis=1))
    assert loaded.scalars["loss"][0].tolist() == [1, 2, 3, 4, 5]


def test_truncate_cuts_the_index_and_never_shrinks_the_mapped_rows(tmp_path):
    """A view of the rows taken before a cut stays readable (a shrunk file would raise SIGBUS)."""
    folder = make_record(tmp_path / "rec")
    store = TrajectoryStore.reopen(folder, n_features=N)
    view = store.weights()
    size = (folder / "weights.bin").stat().st_size
    store.truncate(2.0)
    assert (folder / "weights.idx").stat().st_size == 3 * ENTRY
    assert (folder / "weights.bin").stat().st_size == size
    assert TrainingTrajectory.load(folder).weight_epochs.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(view[:, 4], row(4))
    store.append_weights(3.0, row(30))
    store.close()
    np.testing.assert_array_equal(view[:, 3], row(30))  # overwritten in place
    loaded = TrainingTrajectory.load(folder)
    assert loaded.weight_epochs.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(loaded.weights[:, 3], row(30))


def test_truncate_is_explicit_and_cuts_every_series(tmp_path):
    folder = make_record(tmp_path / "rec", analyses=2)
    store = TrajectoryStore.reopen(folder, n_features=N)
    store.truncate(2.0)
    assert len(store) == 3 and store.scalar("loss")[0].tolist() == [1, 2]
    assert store.prior_analyses == ()  # they ended at epoch 30
    store.append_weights(3.0, row(3))
    store.close()
    loaded = TrainingTrajectory.load(folder)
    assert loaded.weight_epochs.tolist() == [0, 1, 2, 3] and loaded.analyses == ()
    with pytest.raises(ValueError, match="epoch must be finite"):
        store.truncate(float("nan"))


# ------------------------------------------------------------------ bad input to the store
def test_store_arguments_are_checked():
    store = TrajectoryStore(N)
    store.append_weights(1.0, row(1))
    with pytest.raises(ValueError, match=r"epoch 0.5 comes before the last one recorded \(1\)"):
        store.append_weights(0.5, row(0))
    with pytest.raises(ValueError, match="epoch must be finite"):
        store.append_weights(float("inf"), row(0))
    with pytest.raises(TypeError, match="epoch must be a number"):
        store.append_scalars("3", {"loss": 1.0})
    with pytest.raises(ValueError, match="vector must have 6 entries"):
        store.append_weights(2.0, np.zeros(5))
    with pytest.raises(TypeError, match=r"values\['loss'\] must be a number"):
        store.append_scalars(2.0, {"loss": "low"})
    with pytest.raises(TypeError, match="analyses must hold KoopmanAnalysis"):
        store.append_analyses([{"observable": "loss"}])
    with pytest.raises(TypeError, match="n_features must be an integer"):
        TrajectoryStore(True)
    with pytest.raises(ValueError, match="n_features must be at least 1"):
        TrajectoryStore(0)
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        TrajectoryStore(N, metadata={"f": object()})
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        TrajectoryStore(N, overwrite="yes")
    with pytest.raises(TypeError, match="writable must be True or False"):
        TrajectoryStore.reopen("anywhere", n_features=N, writable="no")
    assert len(store) == 1


def test_metadata_is_read_only_and_set_metadata_rewrites_the_manifest(tmp_path):
    folder = make_record(tmp_path / "rec")
    store = TrajectoryStore.reopen(folder, n_features=N)
    with pytest.raises(TypeError):
        store.metadata["restart_epochs"] = [1.0]
    store.set_metadata("restart_epochs", [1.0])
    store.close()
    assert TrainingTrajectory.load(folder).metadata == {"model": "m", "augment_constant": False,
                                                     "restart_epochs": [1.0]}


def test_set_analyses_appends_what_extends_the_last_list_and_replaces_otherwise(tmp_path):
    first, second = analysis(), analysis()
    with TrajectoryStore(N, path=tmp_path / "rec") as store:
        store.set_analyses([first])
        store.set_analyses([first, second])
        assert len((tmp_path / "rec" / "analyses.jsonl").read_text().splitlines()) == 2
        store.set_analyses([second])
    assert len(TrainingTrajectory.load(tmp_path / "rec").analyses) == 1


# ------------------------------------------------------------------ cost
def test_each_epoch_writes_a_constant_number_of_bytes(tmp_path, monkeypatch):
    """The old store rewrote the whole JSON header (twice) every epoch: quadratic I/O."""
    written, rewrites = [], []
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, at: written.append(len(data)) or real_pwrite(fd, data, at))
    monkeypatch.setattr(record_writer, "write_json_atomic", lambda *a: rewrites.append(a))
    monkeypatch.setattr(record_writer, "atomic_write", lambda *a: rewrites.append(a))
    store = TrajectoryStore(N, path=tmp_path / "rec")
    assert len(rewrites) == 2  # the manifest and writer.json, once
    rewrites.clear()
    per_epoch = []
    for e in range(400):
        written.clear()
        store.append_weights(float(e), row(e))
        store.append_scalars(float(e), {"loss": 0.5})
        per_epoch.append(sum(written))
    store.close()
    # the row, its index entry, the scalar line (whose epoch has 3 digits from epoch 100 on)
    line = len(b'{"epoch":100.0,"values":{"loss":0.5}}\n')
    assert per_epoch[100] == per_epoch[399] == 4 * N + ENTRY + line
    assert rewrites == []  # nothing rewritten after creation


def test_atomic_write_leaves_the_umask_alone(tmp_path, monkeypatch):
    def forbidden(mask):
        raise AssertionError("os.umask called")
    monkeypatch.setattr(os, "umask", forbidden)
    atomic.write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == atomic.FILE_MODE


# ------------------------------------------------------------------ format version 1
def write_version1(folder: Path, *, count: int = 3, rows_on_disk: int = 3, dtype: str = "<f4") -> Path:
    folder.mkdir()
    (folder / "weights.bin").write_bytes(
        np.stack([row(e) for e in range(rows_on_disk)]).astype(dtype).tobytes())
    (folder / "trajectory.json").write_text(json.dumps({
        "format": "keras-koopman-trajectory", "version": 1, "n_features": N, "dtype": dtype,
        "count": count, "weight_epochs": list(range(count)),
        "scalars": {"loss": {"epochs": [1, 2], "values": [0.5, 0.25]}}, "metadata": {"m": 1}}))
    (folder / "analyses.json").write_text(json.dumps([analysis().to_dict()]))
    return folder


def test_version_1_records_are_read_validated_and_copied_not_continued(tmp_path):
    folder = write_version1(tmp_path / "v1", dtype="<f2")
    loaded = TrainingTrajectory.load(folder)
    assert loaded.weights.shape == (N, 3) and loaded.scalars["loss"][1].tolist() == [0.5, 0.25]
    assert len(loaded.analyses) == 1
    with pytest.raises(ValueError, match="format version 1 record, which can be read and copied"):
        TrajectoryStore.reopen(folder, n_features=N, dtype=np.float16)
    copy = TrajectoryStore.reopen(folder, n_features=N, dtype=np.float16, writable=False)
    copy.save(tmp_path / "v2")
    again = TrainingTrajectory.load(tmp_path / "v2")
    np.testing.assert_array_equal(again.weights, loaded.weights.astype(np.float32))
    assert len(again.analyses) == 1 and again.metadata == {"m": 1}
    with pytest.raises(ValueError, match=r"weights.bin holds 48 bytes, 2 whole rows .* epoch 2 on"):
        TrainingTrajectory.load(write_version1(tmp_path / "short", rows_on_disk=2, dtype="<f4"))


# ------------------------------------------------------------------ kill -9
WRITER = textwrap.dedent("""
    import dataclasses, sys, numpy as np
    sys.path.insert(0, {root!r})
    from keras_koopman.trajectory import TrajectoryStore
    from keras_koopman.analysis import analyze_series
    n, folder, seed = {n}, {folder!r}, int(sys.argv[1])
    rng = np.random.default_rng(seed)
    an = analyze_series(2.0 * 0.9 ** np.arange(30.0) + 0.1, np.arange(1.0, 31.0), observable="loss")
    def analysis(e):
        return dataclasses.replace(an, first_epoch=0.0, last_epoch=e)
    print("start", 0, flush=True)
    try:
        store = TrajectoryStore.reopen(folder, n_features=n)
    except FileNotFoundError:
        store = TrajectoryStore(n, path=folder)
    if len(store) > 3 and rng.random() < 0.3:
        cut = float(len(store) - 3)
        print("truncating", cut, flush=True)
        store.truncate(cut)
        print("truncated", cut, flush=True)
    if len(store):  # as KoopmanMonitor(resume=True) does: every series ends with the rows
        store.truncate(float(len(store) - 1))
    # what a kill between the row and its scalar or analysis left out
    done = store.scalar("loss")[0]
    for e in range(int(done[-1]) + 1 if done.size else 0, len(store)):
        store.append_scalars(float(e), {{"loss": 1.0 / (1.0 + e)}})
    last = max([a.last_epoch for a in store.prior_analyses], default=-3.0)
    store.append_analyses([analysis(float(e)) for e in range(int(last) + 3, len(store), 3)])
    while True:
        e = float(len(store))
        store.append_weights(e, (np.arange(n, dtype=np.float32) + 1.0) * (1.0 + e))
        store.append_scalars(e, {{"loss": 1.0 / (1.0 + e)}})
        if int(e) % 3 == 0:
            store.append_analyses([analysis(e)])
        print("ack", e, flush=True)
""")


def _check_after_kill(folder: Path, n: int, low: float, high: float) -> int:
    """Rows, scalars and analyses run without a gap from epoch 0 to an epoch in
    ``[low, high]`` (``low``: the last acknowledged), every row is bit-exact; returns the
    number of rows."""
    loaded = TrainingTrajectory.load(folder)
    epochs = loaded.weight_epochs
    assert epochs.tolist() == list(range(len(epochs)))
    assert low <= len(epochs) - 1 <= high, (len(epochs) - 1, low, high)
    expected = (np.arange(n, dtype=np.float32)[:, None] + 1.0) * (1.0 + epochs)
    np.testing.assert_array_equal(loaded.weights, expected)
    s_epochs, s_values = loaded.scalars.get("loss", (np.empty(0), np.empty(0)))
    assert s_epochs.tolist() == list(range(len(s_epochs)))
    assert low <= len(s_epochs) - 1 <= high
    np.testing.assert_array_equal(s_values, 1.0 / (1.0 + s_epochs))
    ends = [a.last_epoch for a in loaded.analyses]
    assert ends == list(range(0, 3 * len(ends), 3)) and (not ends or ends[-1] <= high)
    assert all(e in ends for e in range(0, int(low) + 1, 3))
    return len(epochs)


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_acknowledged(tmp_path):
    """At least 50 ``kill -9`` of a writer at seeded random moments (while it starts, cuts
    or appends), each followed by reopening and continuing: every acknowledged row, scalar
    and analysis is intact, and at most the one being written is lost."""
    folder, n, kills = tmp_path / "rec", 1_000, int(os.environ.get("KK_KILLS", "60"))
    script = WRITER.format(root=str(ROOT), n=n, folder=str(folder))
    rng = random.Random(1234)
    rows, torn, cut_short, acks, acked, in_flight = 0, 0, 0, 0, -1.0, 0
    for k in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", script, str(k)], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().split()[0] == "start"  # imports done
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        out = proc.stdout.read().split()
        proc.wait()
        found = rows - 1.0  # the last row the killed writer found
        low = acked  # every append acknowledged so far must be there
        words = dict(zip(out[::2], map(float, out[1::2])))
        if "truncating" in out:  # the rows after the cut may be gone, even if it did not finish
            low = acked = min(acked, words["truncating"])
            cut_short += "truncated" not in out
        if "ack" in out:
            done = [float(v) for w, v in zip(out[::2], out[1::2]) if w == "ack"]
            acks += len(done)
            low = acked = done[-1]
        if not (folder / "trajectory.json").exists():  # killed while creating the record
            assert rows == 0 and "ack" not in out
            continue
        rows = _check_after_kill(folder, n, low, max(found, acked) + 1)
        in_flight += rows - 1 > max(found, acked)  # the row being written when killed survived
        sizes = [(folder / name).stat().st_size for name in ("weights.bin", "weights.idx")]
        torn += sizes[0] % (4 * n) != 0 or sizes[1] % ENTRY != 0 or any(
            not (folder / name).read_bytes().endswith(b"\n") for name in ("scalars.jsonl",
                                                                          "analyses.jsonl")
            if (folder / name).stat().st_size)
    print(f"{kills} kills, {acks} acknowledged appends, {rows} rows at the end, {in_flight} kills "
          f"after a row was indexed but not acknowledged, {torn} kills left a torn row, entry or line, {cut_short} interrupted a truncate")
    assert kills >= 50 and rows > 0
