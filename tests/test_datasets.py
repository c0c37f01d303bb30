"""Tests for keras_koopman.datasets (MNIST through tensorflow-datasets, offline).

The real files come from the ``mnist_dir`` fixture (tests/conftest.py); the tfds records are prepared once
in the default cache (``$KERAS_KOOPMAN_TFDS_DIR`` or ``~/.cache/keras_koopman/tfds``).
"""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from keras_koopman.datasets import RAW_FILES, load_fashion_mnist, load_mnist

# Class counts of the original MNIST distribution (LeCun, Cortes and Burges).
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]



def _raw_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


@pytest.fixture(scope="module")
def mnist_test(mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    return load_mnist("test", as_numpy=True, manual_dir=mnist_dir)


def test_numpy_test_split_shapes_dtypes_and_range(mnist_test):
    images, labels = mnist_test
    assert images.shape == (10_000, 28, 28, 1)
    assert images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert np.issubdtype(labels.dtype, np.integer) and labels.shape == (10_000,)
    assert np.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_numpy_images_are_the_raw_bytes_over_255_with_their_labels(mnist_test, mnist_dir):
    # Decode the original idx files independently; tfds reorders examples, so compare as a multiset
    # of (label, image bytes) pairs. This checks the scaling and that images keep their labels.
    raw_images = _raw_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784)
    raw_labels = _raw_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", 8)
    images, labels = mnist_test
    as_bytes = np.rint(images.reshape(-1, 784) * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(as_bytes.astype(np.float32) / 255.0, images.reshape(-1, 784))

    def keyed(imgs, labs):
        return sorted(bytes([lab]) + img.tobytes() for img, lab in zip(imgs, labs))

    assert keyed(as_bytes, labels) == keyed(raw_images, raw_labels)


def test_subset_is_the_deterministic_head_of_the_split(mnist_dir):
    head5 = load_mnist("train", as_numpy=True, manual_dir=mnist_dir, subset=5)
    head256 = load_mnist("train", as_numpy=True, manual_dir=mnist_dir, subset=256)
    assert head5[0].shape == (5, 28, 28, 1) and head256[0].shape == (256, 28, 28, 1)
    np.testing.assert_array_equal(head5[0], head256[0][:5])
    np.testing.assert_array_equal(head5[1], head256[1][:5])
    # The dataset form holds the same examples in the same order.
    ds = load_mnist("train", manual_dir=mnist_dir, subset=256, batch_size=256)
    x, y = next(iter(ds))
    np.testing.assert_array_equal(x.numpy(), head256[0])
    np.testing.assert_array_equal(y.numpy(), head256[1])


def test_dataset_batches_and_seeded_shuffle(mnist_dir):
    def epoch_labels(ds):
        return np.concatenate([y.numpy() for _, y in ds])

    def load():
        return load_mnist("train", manual_dir=mnist_dir, subset=200, batch_size=64, shuffle_seed=3)

    ds = load()
    first, second = epoch_labels(ds), epoch_labels(ds)
    assert not np.array_equal(first, second)  # reshuffled each epoch
    np.testing.assert_array_equal(np.sort(first), np.sort(second))  # same examples
    again = load()
    # The seed fixes the sequence of epoch orders.
    np.testing.assert_array_equal(epoch_labels(again), first)
    np.testing.assert_array_equal(epoch_labels(again), second)
    batches = list(again)
    assert [int(y.shape[0]) for _, y in batches] == [64, 64, 64, 8]
    x = batches[0][0].numpy()
    assert x.shape == (64, 28, 28, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    _, unshuffled = load_mnist("train", as_numpy=True, manual_dir=mnist_dir, subset=200)
    assert not np.array_equal(first, unshuffled)
    np.testing.assert_array_equal(np.sort(first), np.sort(unshuffled))


@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
def test_folder_lacking_a_file_fails_at_once_naming_folder_and_file(loader, tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    for name in RAW_FILES[:2] + RAW_FILES[3:]:
        (folder / name).write_bytes(b"")
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        loader("train", manual_dir=folder, data_dir=tmp_path / "cache")
    assert time.perf_counter() - start < 2.0
    message = str(err.value)
    assert str(folder) in message
    assert f"lacks {RAW_FILES[2]} (" in message  # only the missing file is named as missing


def test_environment_variable_names_the_raw_folder(tmp_path, monkeypatch):
    folder = tmp_path / "from_env"
    folder.mkdir()
    (folder / RAW_FILES[0]).write_bytes(b"")
    monkeypatch.setenv("KERAS_KOOPMAN_MNIST_DIR", str(folder))
    with pytest.raises(FileNotFoundError, match="from_env") as err:
        load_mnist("test", data_dir=tmp_path / "cache")
    assert RAW_FILES[1] in str(err.value)
    assert "$KERAS_KOOPMAN_MNIST_DIR" in str(err.value)  # where the folder came from
    monkeypatch.setenv("KERAS_KOOPMAN_MNIST_DIR", str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match=r"gone.*KERAS_KOOPMAN_MNIST_DIR.*not a folder"):
        load_mnist("test", data_dir=tmp_path / "cache")


@pytest.mark.parametrize(("loader", "name"), [(load_mnist, "mnist"), (load_fashion_mnist, "fashion_mnist")])
def test_tfds_manual_folder_in_the_cache_is_used(loader, name, tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_KOOPMAN_MNIST_DIR", raising=False)
    monkeypatch.delenv("KERAS_KOOPMAN_FASHION_MNIST_DIR", raising=False)
    folder = tmp_path / "cache" / "downloads" / "manual" / name
    folder.mkdir(parents=True)
    (folder / RAW_FILES[0]).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=f"manual/{name}.*tfds's manual-download folder"):
        loader("test", data_dir=tmp_path / "cache")


def test_no_folder_and_unprepared_cache_fails_at_once(tmp_path, monkeypatch):
    # The library knows no project layout: from the repository root, a ../shared/data/mnist
    # beside the checkout is not used.
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    monkeypatch.delenv("KERAS_KOOPMAN_MNIST_DIR", raising=False)
    monkeypatch.setenv("KERAS_KOOPMAN_TFDS_DIR", str(tmp_path / "env_cache"))
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="KERAS_KOOPMAN_MNIST_DIR") as err:
        load_mnist("train")
    assert time.perf_counter() - start < 2.0
    assert "env_cache" in str(err.value)  # the cache folder came from KERAS_KOOPMAN_TFDS_DIR


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"nowhere.*manual_dir argument.*not a folder.*KERAS_KOOPMAN_MNIST_DIR"
    ):
        load_mnist("train", manual_dir=tmp_path / "nowhere", data_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"split": "validation"}, "split"),
        ({"subset": 0}, "subset"),
        ({"subset": 2.5}, "subset"),
        ({"batch_size": -1}, "batch_size"),
        ({"as_numpy": True, "batch_size": 8}, "batch_size"),
        ({"shuffle_seed": -2}, "shuffle_seed"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, name, tmp_path):
    with pytest.raises(ValueError, match=name):
        load_mnist(manual_dir=tmp_path, data_dir=tmp_path / "cache", **kwargs)


def test_subset_larger_than_split_is_rejected(mnist_dir):
    with pytest.raises(ValueError, match="subset.*10000"):
        load_mnist("test", as_numpy=True, manual_dir=mnist_dir, subset=10_001)


@pytest.mark.slow
def test_fresh_preparation_leaves_source_and_cache_clean(tmp_path, mnist_dir):
    # Preparation in a fresh cache from a copy of the raw folder leaves that folder unchanged.
    folder = tmp_path / "raw"
    shutil.copytree(mnist_dir, folder)
    before = sorted(p.name for p in folder.iterdir())
    images, _ = load_mnist("test", as_numpy=True, manual_dir=folder, data_dir=tmp_path / "cache",
                           subset=3)
    assert images.shape == (3, 28, 28, 1)
    assert sorted(p.name for p in folder.iterdir()) == before
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("downloads-")]
    assert leftovers == []
