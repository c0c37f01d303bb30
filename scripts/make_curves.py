"""Generate a corpus of real learning curves for the curve-forecast benchmark.

Each run trains one small Keras model (an MLP or a small CNN) on a subset of MNIST or
Fashion-MNIST (first ``--n-train`` training and ``--n-val`` test images, 2×2 average-pooled to
14×14) or of scikit-learn's 8x8 digits (1,200 to train, 597 to validate), with one of SGD / SGD+momentum / Adam / RMSprop,
a learning rate and an initialiser scale drawn log-uniformly over several orders of magnitude
(so the corpus holds diverging, stuck and slow runs as well as good ones), for ``--epochs``
epochs, and records per epoch the training and validation loss and accuracy and the CPU time
of the epoch (``time.process_time``, training plus validation, one intra-op thread).

Runs are drawn from ``numpy.random.default_rng([seed, index])`` so run ``index`` always has the
same configuration; its id is ``"{dataset}-{family}-{index:04d}"``.  Every finished run is
appended (one JSON object per line, flushed and fsynced) to ``--out``; a restart skips the ids
already there, so the script is resumable.  ``--gzip`` writes the finished corpus compressed
(``scripts/data/curves.jsonl.gz`` is the committed corpus).  The selection / held-out split is
fixed by the run id: :func:`split_of` (SHA-256 of the id, even first byte = "selection").

Usage (from the repository root)::

    nohup nice -n 10 python scripts/make_curves.py --runs 360 --out runs/curves.jsonl \\
        > /tmp/curves.log 2>&1 &
    python scripts/make_curves.py --runs 360 --out runs/curves.jsonl \\
        --gzip scripts/data/curves.jsonl.gz          # compress once all runs are done

``--data-dir`` is the folder holding ``mnist/`` and ``fashion_mnist/`` with the raw
``*-ubyte.gz`` files (default ``../shared/data`` relative to the repository root).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("mnist", "fashion_mnist", "digits")
FAMILIES = ("mlp", "cnn")
OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
#: log10 learning-rate range per optimiser (several orders of magnitude, bad ends included)
LR_RANGE = {"sgd": (-4.0, 0.5), "momentum": (-5.0, 0.0), "adam": (-5.0, -0.5),
            "rmsprop": (-5.0, -0.5)}
#: log10 range of the VarianceScaling ``scale`` (1 = LeCun, 2 = He; tiny = stuck, huge = chaotic)
INIT_RANGE = (-4.0, 2.0)


def split_of(run_id: str) -> str:
    """The fixed half of a run: "selection" or "held-out", from the SHA-256 of its id."""
    return "selection" if hashlib.sha256(run_id.encode()).digest()[0] % 2 == 0 else "held-out"


def run_config(index: int, seed: int, epochs: int) -> dict:
    """The configuration of run ``index`` (deterministic in ``seed`` and ``index``)."""
    rng = np.random.default_rng([seed, index])
    dataset = DATASETS[index % len(DATASETS)]
    family = FAMILIES[(index // len(DATASETS)) % len(FAMILIES)]
    optimizer = OPTIMIZERS[int(rng.integers(len(OPTIMIZERS)))]
    lo, hi = LR_RANGE[optimizer]
    config = {
        "run_id": f"{dataset}-{family}-{index:04d}",
        "index": index,
        "dataset": dataset,
        "family": family,
        "optimizer": optimizer,
        "learning_rate": float(10 ** rng.uniform(lo, hi)),
        "init_scale": float(10 ** rng.uniform(*INIT_RANGE)),
        "batch_size": int(rng.choice([128, 256, 512])),
        "activation": str(rng.choice(["relu", "tanh"])),
        "width": int(rng.choice([32, 64, 128])),
        "depth": int(rng.choice([1, 2])),
        "filters": int(rng.choice([4, 8])),
        "epochs": epochs,
        "seed": int(rng.integers(2**31 - 1)),
    }
    config["split"] = split_of(config["run_id"])
    return config


def load_data(name: str, data_dir: Path, cache_dir: Path, n_train: int, n_val: int):
    """``(x_train, y_train, x_val, y_val)`` float32 images in [0, 1] and int labels."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[..., None]
        y = digits.target.astype(np.int64)
        order = np.random.default_rng(0).permutation(len(y))
        x, y = x[order], y[order]
        n_tr = min(n_train, 1200)
        return x[:n_tr], y[:n_tr], x[n_tr:], y[n_tr:]
    from keras_koopman import datasets

    loader = datasets.load_mnist if name == "mnist" else datasets.load_fashion_mnist
    x_tr, y_tr = loader("train", as_numpy=True, manual_dir=data_dir / name, data_dir=cache_dir,
                        subset=n_train)
    x_va, y_va = loader("test", as_numpy=True, manual_dir=data_dir / name, data_dir=cache_dir,
                        subset=n_val)
    return _pool(x_tr), y_tr, _pool(x_va), y_va


def _pool(images: np.ndarray) -> np.ndarray:
    """2×2 average pooling, 28×28 → 14×14 (keeps every run cheap)."""
    n, h, w, c = images.shape
    return images.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)).astype(np.float32)


def build_model(config: dict, input_shape: tuple[int, ...]):
    import keras

    keras.utils.set_random_seed(config["seed"])
    act = config["activation"]

    def init():
        return keras.initializers.VarianceScaling(scale=config["init_scale"], mode="fan_in",
                                                  distribution="truncated_normal")

    layers = [keras.Input(input_shape)]
    if config["family"] == "cnn":
        pool = 2 if input_shape[0] >= 12 else 1
        layers += [keras.layers.Conv2D(config["filters"], 3, activation=act,
                                       kernel_initializer=init()),
                   keras.layers.MaxPooling2D(pool),
                   keras.layers.Conv2D(2 * config["filters"], 3, activation=act,
                                       kernel_initializer=init()),
                   keras.layers.MaxPooling2D(2),
                   keras.layers.Flatten()]
    else:
        layers.append(keras.layers.Flatten())
        for _ in range(config["depth"]):
            layers.append(keras.layers.Dense(config["width"], activation=act,
                                             kernel_initializer=init()))
    layers.append(keras.layers.Dense(10, activation="softmax", kernel_initializer=init()))
    model = keras.Sequential(layers)
    lr = config["learning_rate"]
    opt = {"sgd": lambda: keras.optimizers.SGD(lr),
           "momentum": lambda: keras.optimizers.SGD(lr, momentum=0.9),
           "adam": lambda: keras.optimizers.Adam(lr),
           "rmsprop": lambda: keras.optimizers.RMSprop(lr)}[config["optimizer"]]()
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=64)
    return model


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def pipelines(config: dict, data):
    """``(train, val)`` tf.data pipelines of one run, built once per run (half the per-epoch
    overhead of numpy inputs): the training set shuffled each epoch with the run's seed and
    batched, the validation set in one cached batch."""
    import tensorflow as tf

    x_tr, y_tr, x_va, y_va = data
    train = (tf.data.Dataset.from_tensor_slices((x_tr, y_tr))
             .shuffle(len(y_tr), seed=config["seed"], reshuffle_each_iteration=True)
             .batch(config["batch_size"]))
    val = tf.data.Dataset.from_tensor_slices((x_va, y_va)).batch(len(y_va)).cache()
    return train, val


def train_run(config: dict, data) -> dict:
    """Train one configuration; return the config with its per-epoch curves."""
    import keras

    x_tr, y_tr, x_va, y_va = data
    cpu_start = time.process_time()
    model = build_model(config, x_tr.shape[1:])
    epoch_cpu: list[float] = []

    class _Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            epoch_cpu.append(time.process_time() - self._t)

    train, val = pipelines(config, data)
    history = model.fit(train, epochs=config["epochs"], validation_data=val, verbose=0,
                        callbacks=[_Clock(), keras.callbacks.TerminateOnNaN()])
    record = dict(config)
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        record[key] = [_finite_or_none(v) for v in history.history.get(key, [])]
    record["epoch_cpu_s"] = [round(t, 5) for t in epoch_cpu]
    record["run_cpu_s"] = round(time.process_time() - cpu_start, 4)
    record["n_train"], record["n_val"] = int(len(y_tr)), int(len(y_va))
    record["completed_epochs"] = len(record["val_loss"])
    keras.backend.clear_session()
    return record


def read_corpus(path: str | os.PathLike) -> list[dict]:
    """Read a corpus file (``.jsonl`` or ``.jsonl.gz``)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=360, help="number of runs (indices 0..runs-1)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--n-val", type=int, default=500)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/keras_koopman_tfds"),
                        help="writable tfds cache")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "curves.jsonl")
    parser.add_argument("--only", type=int, nargs="*", help="train only these run indices")
    parser.add_argument("--gzip", type=Path, help="write the finished corpus compressed here and exit")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.epochs < 2:
        parser.error("--runs must be >= 1 and --epochs >= 2")

    if args.gzip is not None:
        records = sorted(read_corpus(args.out), key=lambda r: r["index"])
        with gzip.open(args.gzip, "wt", compresslevel=9) as handle:
            for record in records:
                handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        print(f"wrote {len(records)} runs to {args.gzip}")
        return 0

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = {r["run_id"] for r in read_corpus(args.out)} if args.out.exists() else set()
    indices = args.only if args.only else range(args.runs)
    cache: dict[str, tuple] = {}
    for index in indices:
        config = run_config(index, args.seed, args.epochs)
        if config["run_id"] in done:
            continue
        if config["dataset"] not in cache:
            cache[config["dataset"]] = load_data(config["dataset"], args.data_dir,
                                                 args.cache_dir, args.n_train, args.n_val)
        record = train_run(config, cache[config["dataset"]])
        with open(args.out, "a") as handle:
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        vl = record["val_loss"]
        print(f"{config['run_id']} {config['optimizer']} lr={config['learning_rate']:.2e} "
              f"init={config['init_scale']:.2e} epochs={len(vl)} "
              f"val_loss {vl[0]} -> {vl[-1]} cpu={record['run_cpu_s']:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
