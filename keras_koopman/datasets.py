"""MNIST and Fashion-MNIST through tensorflow-datasets, usable offline.

The paper's Figure-2 experiment trains a small CNN on MNIST (LeCun, Cortes and Burges); this module
gives the data to it and to the command-line tool. Both loaders wrap ``tfds`` and add three things:

* **Offline preparation.** tfds looks for the four original ``*-ubyte.gz`` files in a "manual"
  folder before it downloads anything. The folder is taken, in this order, from the ``manual_dir``
  argument, the environment variable (``KERAS_KOOPMAN_MNIST_DIR`` or
  ``KERAS_KOOPMAN_FASHION_MNIST_DIR``), or tfds's manual-download convention inside the cache,
  ``<data_dir>/downloads/manual/<name>``, when that folder exists. A folder that is missing or
  lacks a file fails at once with a :class:`FileNotFoundError` naming the folder, the file and
  where the folder came from; tfds alone would retry the download for minutes.
* **A writable cache.** The prepared records go to ``data_dir``: the argument, else
  ``KERAS_KOOPMAN_TFDS_DIR``, else ``~/.cache/keras_koopman/tfds``. The source folder may be
  read-only. Preparation happens once (about 12 s on two cores); later loads read the cache.
* **The paper's input convention.** Images are float32 in ``[0, 1]`` of shape ``(28, 28, 1)``,
  labels are int64 class indices in ``0..9``.

See ``docs/data_and_models.md`` for the user guide.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import tensorflow as tf

__all__ = ["RAW_FILES", "load_fashion_mnist", "load_mnist"]

#: The four original files, shared by MNIST and Fashion-MNIST (hence one folder per data set).
RAW_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

_SPLITS = ("train", "test")
_CACHE_ENV = "KERAS_KOOPMAN_TFDS_DIR"
_DEFAULT_CACHE = Path("~/.cache/keras_koopman/tfds")
_SOURCE_ENV = {
    "mnist": "KERAS_KOOPMAN_MNIST_DIR",
    "fashion_mnist": "KERAS_KOOPMAN_FASHION_MNIST_DIR",
}

Split = Literal["train", "test"]
Loaded = tf.data.Dataset | tuple[np.ndarray, np.ndarray]


def load_mnist(
    split: Split = "train",
    *,
    as_numpy: bool = False,
    manual_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    subset: int | None = None,
    batch_size: int | None = None,
    shuffle_seed: int | None = None,
    download: bool = False,
) -> Loaded:
    """Load one split of MNIST, scaled to ``[0, 1]``.

    Parameters
    ----------
    split : {"train", "test"}
        The split: 60,000 training or 10,000 test images.
    as_numpy : bool
        Return ``(images, labels)`` numpy arrays instead of a ``tf.data.Dataset``.
    manual_dir : path, optional
        Folder holding the four raw ``*-ubyte.gz`` files (see :data:`RAW_FILES`). Defaults to
        ``$KERAS_KOOPMAN_MNIST_DIR``, then ``<data_dir>/downloads/manual/mnist`` (tfds's
        manual-download folder) when that folder exists. Needed only until the cache is prepared;
        a folder that is given is always checked.
    data_dir : path, optional
        Writable tfds cache. Defaults to ``$KERAS_KOOPMAN_TFDS_DIR``, then
        ``~/.cache/keras_koopman/tfds``.
    subset : int, optional
        Keep only the first ``subset`` examples of the split, in tfds's prepared order (fixed by
        tfds's deterministic shuffling at preparation time, so the same ``subset`` always gives the
        same examples). Taken before any shuffling.
    batch_size : int, optional
        Batch the dataset. Only for ``as_numpy=False``.
    shuffle_seed : int, optional
        Shuffle the examples with this seed: a full-size buffer reshuffled each epoch for a
        dataset (the sequence of epoch orders is fixed by the seed), one permutation for arrays.
    download : bool
        When no raw-file folder is found and the cache is not prepared, let tfds download the
        files from the Internet instead of failing at once.

    Returns
    -------
    tf.data.Dataset or tuple of numpy.ndarray
        ``(image, label)`` pairs, image float32 ``(28, 28, 1)`` in ``[0, 1]``, label int64; or
        arrays of shapes ``(N, 28, 28, 1)`` and ``(N,)``.

    Raises
    ------
    FileNotFoundError
        The raw-file folder lacks a file, or no folder is known and the cache is not prepared.
    ValueError
        A bad ``split``, ``subset``, ``batch_size`` or ``shuffle_seed``.
    """
    return _load(
        "mnist", split, as_numpy=as_numpy, manual_dir=manual_dir, data_dir=data_dir,
        subset=subset, batch_size=batch_size, shuffle_seed=shuffle_seed, download=download,
    )


def load_fashion_mnist(
    split: Split = "train",
    *,
    as_numpy: bool = False,
    manual_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    subset: int | None = None,
    batch_size: int | None = None,
    shuffle_seed: int | None = None,
    download: bool = False,
) -> Loaded:
    """Load one split of Fashion-MNIST (Zalando Research), scaled to ``[0, 1]``.

    Same parameters and results as :func:`load_mnist`; the raw-file folder defaults to
    ``$KERAS_KOOPMAN_FASHION_MNIST_DIR``, then ``<data_dir>/downloads/manual/fashion_mnist``. The
    raw files have the same names as MNIST's, so each data set needs its own folder.
    """
    return _load(
        "fashion_mnist", split, as_numpy=as_numpy, manual_dir=manual_dir, data_dir=data_dir,
        subset=subset, batch_size=batch_size, shuffle_seed=shuffle_seed, download=download,
    )


def _load(
    name: str,
    split: str,
    *,
    as_numpy: bool,
    manual_dir: str | os.PathLike | None,
    data_dir: str | os.PathLike | None,
    subset: int | None,
    batch_size: int | None,
    shuffle_seed: int | None,
    download: bool,
) -> Loaded:
    _check_arguments(split, as_numpy, subset, batch_size, shuffle_seed)
    cache = _cache_dir(data_dir)
    source = _source_dir(name, manual_dir, cache)
    if source is not None:
        _check_raw_files(name, *source)
    # Imported here: tensorflow_datasets takes seconds to import and only the loaders need it.
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=str(cache))
    if not builder.is_prepared():
        _prepare(builder, name, None if source is None else source[0], download)

    n_examples = builder.info.splits[split].num_examples
    if subset is not None and subset > n_examples:
        raise ValueError(
            f"subset: expected at most {n_examples} (the size of the {name} {split!r} split), "
            f"got {subset}"
        )
    tfds_split = split if subset is None else f"{split}[:{subset}]"
    if as_numpy:
        images, labels = tfds.as_numpy(
            builder.as_dataset(split=tfds_split, as_supervised=True, batch_size=-1)
        )
        images = images.astype(np.float32) / np.float32(255.0)
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed).permutation(len(labels))
            images, labels = images[order], labels[order]
        return images, labels

    ds = builder.as_dataset(split=tfds_split, as_supervised=True, shuffle_files=False).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(
            subset or n_examples, seed=shuffle_seed, reshuffle_each_iteration=True
        )
    ds = ds.map(_scale, num_parallel_calls=tf.data.AUTOTUNE)
    if batch_size is not None:
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def _scale(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.cast(image, tf.float32) / 255.0, label


def _check_arguments(
    split: str,
    as_numpy: bool,
    subset: int | None,
    batch_size: int | None,
    shuffle_seed: int | None,
) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split: expected one of {_SPLITS}, got {split!r}")
    for arg_name, value in (("subset", subset), ("batch_size", batch_size)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{arg_name}: expected a positive integer or None, got {value!r}")
    if as_numpy and batch_size is not None:
        raise ValueError("batch_size: expected None with as_numpy=True (arrays are not batched)")
    if shuffle_seed is not None and (
        isinstance(shuffle_seed, bool)
        or not isinstance(shuffle_seed, (int, np.integer))
        or shuffle_seed < 0
    ):
        raise ValueError(
            f"shuffle_seed: expected a non-negative integer or None, got {shuffle_seed!r}"
        )


def _cache_dir(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is None:
        data_dir = os.environ.get(_CACHE_ENV) or _DEFAULT_CACHE
    return Path(data_dir).expanduser()


def _manual_convention(name: str, cache: Path) -> Path:
    """tfds's manual-download folder (``<data_dir>/downloads/manual``), one sub-folder per data set."""
    return cache / "downloads" / "manual" / name


def _source_dir(
    name: str, manual_dir: str | os.PathLike | None, cache: Path
) -> tuple[Path, str] | None:
    """The raw-file folder and where it came from: argument, environment variable, or tfds's
    manual-download folder in the cache (only if it exists); None when there is none."""
    if manual_dir is not None:
        return Path(manual_dir).expanduser(), "the manual_dir argument"
    from_env = os.environ.get(_SOURCE_ENV[name])
    if from_env:
        return Path(from_env).expanduser(), f"${_SOURCE_ENV[name]}"
    convention = _manual_convention(name, cache)
    return (convention, "tfds's manual-download folder") if convention.is_dir() else None


def _check_raw_files(name: str, folder: Path, origin: str) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"manual_dir: {str(folder)!r} (from {origin}) is not a folder; pass manual_dir= or "
            f"set {_SOURCE_ENV[name]} to the folder holding the {name} raw files"
        )
    missing = [f for f in RAW_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"manual_dir: {str(folder)!r} (from {origin}) lacks {', '.join(missing)} "
            f"(expected the four raw files {', '.join(RAW_FILES)})"
        )


def _prepare(builder, name: str, source: Path | None, download: bool) -> None:
    """Write the tfds records from ``source`` (or the Internet when ``download``)."""
    import tensorflow_datasets as tfds

    if source is None and not download:
        raise FileNotFoundError(
            f"{name} is not prepared in {str(builder.data_dir)!r} and no folder with its raw "
            f"files was found: pass manual_dir=, set {_SOURCE_ENV[name]}, put the files in "
            f"{str(_manual_convention(name, Path(builder.data_dir_root)))!r}, or pass download=True"
        )
    cache = Path(builder.data_dir_root)
    cache.mkdir(parents=True, exist_ok=True)
    # The extracted downloads (about 55 MB) are not needed once the records exist.
    with tempfile.TemporaryDirectory(dir=cache, prefix="downloads-") as downloads:
        config = tfds.download.DownloadConfig(manual_dir=None if source is None else str(source))
        try:
            builder.download_and_prepare(download_dir=downloads, download_config=config)
        except OSError:
            # Another process may have finished the same preparation first (tfds renames its
            # temporary folder into place, which fails when the target already exists).
            if not builder.is_prepared():
                raise
