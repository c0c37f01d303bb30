"""Benchmark: ``KoopmanAccelerator`` (Koopman weight extrapolation) against plain training.

For each setting and seed, in one process and interleaved:

1. **Plain** training for a fixed budget of ``B`` epochs.  The seed's *target* is the best
   validation loss plain training reaches within the budget; plain's cost is the wall-clock
   (and process CPU) time from the start of ``fit`` and the number of epochs at which it first
   reaches it.
2. **A/A control**: plain training again, stopped at the target.  It repeats run 1 exactly
   (same seed, same data order), so its time ratio to run 1 is pure timing noise of the
   (shared) machine; it is reported next to the accelerated ratios.
3. **Accelerated** training from the same initial weights and data order
   (``keras.utils.set_random_seed(seed)`` before every run), with ``KoopmanAccelerator`` in the
   callbacks, stopped as soon as ``val_loss <= target``, for at most ``max_factor · B`` epochs.
   Its time includes everything the callback does (weight copies, DMD_RRR, guard passes).

The ratios accelerated/plain of time-to-target and of epochs-to-target are reported per
setting as median [min–max] and mean ± std over seeds; a run that never reaches the target
within the cap counts as ``cap / plain`` and is flagged.  Epoch ratios are exact (training is
deterministic); time ratios carry the machine's noise, shown by the A/A column.

Settings:

* ``mlp-sgd``, ``mlp-adam``: an MLP (8 → 64 → 64 → 1, tanh) regressing a random teacher
  network plus noise (4,096 train / 1,024 validation samples, batch 128); SGD lr 0.05 or Adam
  lr 1e-3; MSE.  Snapshots once per epoch.
* ``cnn-sgd``, ``cnn-adam``: the paper's CNN (:func:`keras_koopman.paper_cnn`, Xavier init) on
  an MNIST subset (``--cnn-train`` training images, 1,000 test images for validation, batch
  64); SGD lr 0.05 or Adam lr 1e-3 (the paper's); cross-entropy.  Snapshots every 4 steps
  (``batch_interval=4``), since these runs last only a few epochs.

The guard (``held_data``) is ``--held`` extra samples that are neither trained on nor part of
the validation set (``--guard train`` uses a slice of the training data instead, as the first
sweeps did).  The accelerator's options default to the library defaults and can be overridden
on the command line; ``--sweep NAME`` compares the configurations of ``SWEEPS[NAME]``
(docs/accelerator.md).

Usage::

    python scripts/bench_accelerate.py                # 4 settings x 5 seeds (~20 min on 2 cores)
    python scripts/bench_accelerate.py --quick        # smoke run (2 seeds, short budgets)
    python scripts/bench_accelerate.py --settings mlp-sgd mlp-adam --seeds 3 \
        --sweep round2 --guard train                  # a sweep of docs/accelerator.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

# The MNIST files: $KERAS_KOOPMAN_MNIST_DIR, else the shared data folder beside the checkout.
os.environ.setdefault("KERAS_KOOPMAN_MNIST_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "data", "mnist"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_koopman import DEFAULT_OPTIONS  # noqa: E402
from keras_koopman.accelerator import ACCELERATOR_MAX_RESIDUAL, KoopmanAccelerator  # noqa: E402

SETTINGS = ("mlp-sgd", "mlp-adam", "cnn-sgd", "cnn-adam")
BUDGETS = {"mlp-sgd": 60, "mlp-adam": 60, "cnn-sgd": 8, "cnn-adam": 8}
QUICK_BUDGETS = {"mlp-sgd": 20, "mlp-adam": 20, "cnn-sgd": 4, "cnn-adam": 4}


# ---------------------------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------------------------

def mlp_data(n_guard: int, seed: int = 1234):
    """Teacher–student regression, y = teacher(x) + 0.05·noise, x ~ N(0, I_8).

    Returns ``(train, validation, guard)``; the guard samples are drawn like the others and
    used neither for training nor for the validation loss.
    """
    rng = np.random.default_rng(seed)
    n_train, n_val, d, hidden = 4096, 1024, 8, 32
    W1 = rng.normal(size=(d, hidden)) / np.sqrt(d)
    W2 = rng.normal(size=(hidden, 1)) / np.sqrt(hidden)
    total = n_train + n_val + n_guard
    x = rng.normal(size=(total, d))
    y = np.tanh(x @ W1 + 0.1) @ W2 + 0.05 * rng.normal(size=(total, 1))
    x, y = x.astype("float32"), y.astype("float32")
    cut = n_train + n_val
    return (x[:n_train], y[:n_train]), (x[n_train:cut], y[n_train:cut]), (x[cut:], y[cut:])


def mlp_model(optimizer: str, seed: int) -> keras.Model:
    init = keras.initializers.GlorotUniform
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(64, activation="tanh", kernel_initializer=init(seed), name="h1"),
        keras.layers.Dense(64, activation="tanh", kernel_initializer=init(seed + 1), name="h2"),
        keras.layers.Dense(1, kernel_initializer=init(seed + 2), name="out"),
    ])
    opt = keras.optimizers.SGD(0.05) if optimizer == "sgd" else keras.optimizers.Adam(1e-3)
    model.compile(optimizer=opt, loss="mse")
    return model


def cnn_data(n_train: int, n_guard: int):
    """MNIST: the first ``n_train`` training images, 1,000 test images for validation, and
    the next ``n_guard`` training images (not trained on) for the guard."""
    from keras_koopman.datasets import load_mnist
    x, y = load_mnist("train", as_numpy=True, subset=n_train + n_guard)
    xv, yv = load_mnist("test", as_numpy=True, subset=1000)
    return (x[:n_train], y[:n_train]), (xv, yv), (x[n_train:], y[n_train:])


def cnn_model(optimizer: str, seed: int) -> keras.Model:
    from keras_koopman.models import paper_cnn
    lr = 0.05 if optimizer == "sgd" else 1e-3
    return paper_cnn("xavier", seed=seed, optimizer=optimizer, learning_rate=lr)


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------

class Clock(keras.callbacks.Callback):
    """Wall-clock and process CPU time and val_loss at every epoch end; stops at the target."""

    def __init__(self, target: float | None = None) -> None:
        super().__init__()
        self.target = target
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.val: list[float] = []

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)
        self.cpu.append(time.process_time() - self._cpu_start)
        self.val.append(float(logs["val_loss"]))
        if self.target is not None and self.val[-1] <= self.target:
            self.model.stop_training = True


def train(setting: str, seed: int, data, epochs: int, *, accelerator=None, target=None):
    family, optimizer = setting.split("-")
    (x, y), (xv, yv), _ = data
    keras.utils.set_random_seed(seed)
    model = (mlp_model if family == "mlp" else cnn_model)(optimizer, seed)
    clock = Clock(target)
    callbacks = ([accelerator] if accelerator is not None else []) + [clock]
    batch = 128 if family == "mlp" else 64
    model.fit(x, y, batch_size=batch, epochs=epochs, validation_data=(xv, yv),
              callbacks=callbacks, verbose=0)
    return clock


OPTION_NAMES = ("analyze_every", "window", "batch_interval", "target", "horizon", "granularity",
                "pod_rank", "max_residual", "delta", "anchored", "backtrack", "backoff",
                "optimizer_state")
#: options that the accelerator takes inside its ``AnalysisOptions`` (``options=``)
ANALYSIS_OPTION_NAMES = ("max_residual", "delta")

#: configurations compared by ``--sweep NAME``.  Each is complete relative to the defaults of
#: the version that ran it (rounds 1 and 2 ran before back-off and ``min_improvement`` existed,
#: and with ``--guard train``), so the rows in docs/accelerator.md can be rerun as they were.
_ROUND1 = {"target": "forecast", "horizon": 10, "backoff": False, "min_improvement": 0.0}
_ROUND2 = {"min_improvement": 0.0}
SWEEPS = {
    # round 1: one factor at a time around forecast / horizon 10 / analyze_every = window = 10
    "round1": tuple({**_ROUND1, **c} for c in (
        {}, {"target": "fixed_point"}, {"horizon": 5}, {"horizon": 20}, {"horizon": 40},
        {"analyze_every": 5, "window": 5}, {"analyze_every": 20, "window": 20},
        {"analyze_every": 5, "window": 10},
        {"granularity": "layer"}, {"pod_rank": 3}, {"anchored": False}, {"backtrack": 0},
        {"max_residual": 0.01}, {"max_residual": 0.2}, {"optimizer_state": "reset"},
    )),
    # round 2: around the fixed-point target that won round 1
    "round2": tuple({**_ROUND2, **c} for c in (
        {"target": "fixed_point"},
        {"target": "fixed_point", "optimizer_state": "reset"},
        {"target": "fixed_point", "analyze_every": 5, "window": 10},
        {"target": "fixed_point", "granularity": "layer"},
        {"target": "fixed_point", "max_residual": 0.2},
        {"target": "forecast", "horizon": 20},
    )),
    # the CNN (snapshots every 4 steps)
    "cnn": tuple({**_ROUND2, **c} for c in (
        {"target": "forecast", "horizon": 10},
        {"target": "fixed_point"},
        {"target": "fixed_point", "optimizer_state": "reset"},
    )),
}


#: per-setting options: the CNN runs few epochs (32 steps each), so it snapshots every 4 steps
SETTING_OPTIONS = {"cnn-sgd": {"batch_interval": 4}, "cnn-adam": {"batch_interval": 4}}


def cli_options(args) -> dict:
    options = {k: getattr(args, k) for k in OPTION_NAMES
               if k not in ("anchored", "backoff") and getattr(args, k) is not None}
    if args.no_backoff:
        options["backoff"] = False
    if args.no_anchor:
        options["anchored"] = False
    return options


def accelerator_for(args, data, overrides=None, setting=None) -> KoopmanAccelerator:
    (x, y), _, guard = data
    held = guard if args.guard == "heldout" else (x[: args.held], y[: args.held])
    options = {**SETTING_OPTIONS.get(setting, {}), **cli_options(args), **(overrides or {})}
    analysis = {k: options.pop(k) for k in ANALYSIS_OPTION_NAMES if k in options}
    return KoopmanAccelerator(held, options=DEFAULT_OPTIONS.replace(**analysis), **options)


class _NoOpBatchHook(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        pass


def batch_hook_cost(args, repeats: int = 3, epochs: int = 3) -> None:
    """A/B of the batch hook on the CNN (SGD): no callback, a no-op batch hook, and the
    accelerator taking snapshots every 4 steps but never jumping; interleaved, per epoch."""
    data = cnn_data(args.cnn_train, args.held)
    (x, y), _, guard = data
    model = cnn_model("sgd", 0)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)  # build and trace first
    variants = {
        "no callback": lambda: [],
        "no-op batch hook": lambda: [_NoOpBatchHook()],
        "accelerator, batch_interval=4, no jumps":
            lambda: [KoopmanAccelerator(guard, batch_interval=4, start_from_epoch=10**6)],
    }
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, callbacks in variants.items():
            wall, cpu = time.perf_counter(), time.process_time()
            model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks())
            times[name].append(((time.perf_counter() - wall) / epochs,
                                (time.process_time() - cpu) / epochs))
    base = np.median([c for _, c in times["no callback"]])
    print("| variant | wall s/epoch per repeat | CPU s/epoch per repeat | CPU median / no callback |")
    print("|---|---|---|---|")
    for name, values in times.items():
        walls = ", ".join(f"{w:.2f}" for w, _ in values)
        cpus = ", ".join(f"{c:.2f}" for _, c in values)
        ratio = np.median([c for _, c in values]) / base
        print(f"| {name} | {walls} | {cpus} | {ratio:.3f} |")


def summarise(values: np.ndarray) -> str:
    return (f"{np.median(values):.2f} [{values.min():.2f}-{values.max():.2f}]  "
            f"{values.mean():.2f}±{values.std(ddof=1) if values.size > 1 else 0.0:.2f}")


def run_setting(setting: str, args, data, budget: int, configs=({},)) -> list[dict]:
    """Plain once per seed, then each accelerator configuration; one result per configuration."""
    results = [{"setting": setting, "budget": budget, "config": c, "rows": []} for c in configs]
    for seed in range(args.seed0, args.seed0 + args.seeds):
        plain = train(setting, seed, data, budget)
        val = np.asarray(plain.val)
        target = float(val.min())
        first = int(np.flatnonzero(val <= target)[0])
        plain_time, plain_cpu, plain_epochs = plain.times[first], plain.cpu[first], first + 1
        # A/A control: plain training again, stopped at the target, to show the timing noise
        rerun = train(setting, seed, data, budget, target=target)
        control = rerun.times[-1] / plain_time, rerun.cpu[-1] / plain_cpu
        for config, result in zip(configs, results):
            accelerator = accelerator_for(args, data, config, setting)
            cap = int(np.ceil(args.max_factor * budget))
            accel = train(setting, seed, data, cap, accelerator=accelerator, target=target)
            reached = accel.val[-1] <= target
            jumps = accelerator.jumps
            row = dict(seed=seed, target=target, plain_time=plain_time, plain_epochs=plain_epochs,
                       accel_time=accel.times[-1], accel_epochs=len(accel.val), reached=reached,
                       time_ratio=accel.times[-1] / plain_time,
                       cpu_ratio=accel.cpu[-1] / plain_cpu,
                       epoch_ratio=len(accel.val) / plain_epochs,
                       attempted=len(jumps), accepted=sum(j.accepted for j in jumps),
                       cost=accelerator.seconds, control_time=control[0],
                       control_cpu=control[1],
                       per_epoch_plain=plain.times[-1] / len(plain.times))
            result["rows"].append(row)
            print(f"  {setting} {config or 'defaults'} seed {seed}: target {target:.4g}; plain "
                  f"{plain_epochs} ep {plain_time:.1f}s; accel {row['accel_epochs']} ep "
                  f"{row['accel_time']:.1f}s ({'reached' if reached else 'NOT reached'}); "
                  f"jumps {row['accepted']}/{row['attempted']} accepted; callback "
                  f"{row['cost']:.2f}s -> time {row['time_ratio']:.2f}, cpu "
                  f"{row['cpu_ratio']:.2f}, epochs {row['epoch_ratio']:.2f} (plain rerun: time "
                  f"{control[0]:.2f}, cpu {control[1]:.2f}); guard loss "
                  f"after/before of accepted jumps "
                  f"{[round(j.loss_after / j.loss_before, 3) for j in jumps if j.accepted]}",
                  flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed0", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 seeds, short budgets")
    parser.add_argument("--budget", type=int, help="override every setting's epoch budget")
    parser.add_argument("--max-factor", type=float, default=1.5,
                        help="accelerated runs stop after max_factor x budget epochs")
    parser.add_argument("--cnn-train", type=int, default=2000)
    parser.add_argument("--held", type=int, default=512, help="guard samples")
    parser.add_argument("--guard", choices=("heldout", "train"), default="heldout",
                        help="guard data: samples held out from training, or a training slice")
    parser.add_argument("--threads", type=int, default=2)
    for name, kind in (("analyze-every", int), ("window", int), ("batch-interval", int),
                       ("target", str), ("horizon", int),
                       ("granularity", str), ("max-residual", float), ("backtrack", int),
                       ("optimizer-state", str), ("pod-rank", int), ("delta", float)):
        parser.add_argument(f"--{name}", type=kind, default=None)
    parser.add_argument("--no-anchor", action="store_true")
    parser.add_argument("--no-backoff", action="store_true")
    parser.add_argument("--batch-hook-cost", action="store_true",
                        help="only measure the cost of batch-level snapshots on the CNN")
    parser.add_argument("--sweep", choices=sorted(SWEEPS),
                        help="compare the configurations SWEEPS[name] instead of the defaults")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = min(args.seeds, 2)

    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    started = time.perf_counter()
    print(f"# bench_accelerate  {datetime.date.today()}  {platform.node()}  "
          f"keras {keras.__version__}  backend {keras.backend.backend()}")
    print("# command: python " + " ".join(sys.argv))
    if args.batch_hook_cost:
        batch_hook_cost(args)
        return 0
    print("# accelerator:", _options(args))
    results = []
    mlp = cnn = None
    for setting in args.settings:
        if setting.startswith("mlp"):
            mlp = mlp or mlp_data(args.held)
            data = mlp
        else:
            cnn = cnn or cnn_data(args.cnn_train, args.held)
            data = cnn
        budget = args.budget or (QUICK_BUDGETS if args.quick else BUDGETS)[setting]
        configs = SWEEPS[args.sweep] if args.sweep else ({},)
        results.extend(run_setting(setting, args, data, budget, configs))

    print()
    print("| setting | config | B | plain s/epoch | wall-clock ratio median [min-max] mean±std "
          "| CPU-time ratio median [min-max] | epoch ratio median [min-max] mean±std | reached "
          "| jumps accepted/attempted | callback share | A/A control: plain rerun wall-clock "
          "[min-max], CPU [min-max] |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        rows = result["rows"]
        t = np.array([r["time_ratio"] for r in rows])
        c = np.array([r["cpu_ratio"] for r in rows])
        e = np.array([r["epoch_ratio"] for r in rows])
        share = np.array([r["cost"] / r["accel_time"] for r in rows])
        config = ", ".join(f"{k}={v}" for k, v in result["config"].items()) or "defaults"
        print(f"| {result['setting']} | {config} | {result['budget']} "
              f"| {np.mean([r['per_epoch_plain'] for r in rows]):.2f} | {summarise(t)} "
              f"| {_spread(c)} "
              f"| {summarise(e)} | {sum(r['reached'] for r in rows)}/{len(rows)} "
              f"| {sum(r['accepted'] for r in rows)}/{sum(r['attempted'] for r in rows)} "
              f"| {100 * np.median(share):.1f}% | {_spread([r['control_time'] for r in rows])}, "
              f"{_spread([r['control_cpu'] for r in rows])} |")
    print(f"\n# total {time.perf_counter() - started:.0f} s")
    return 0


def _spread(values) -> str:
    values = np.asarray(values)
    return f"{np.median(values):.2f} [{values.min():.2f}-{values.max():.2f}]"


def _options(args) -> str:
    dummy = (np.zeros((1, 1)), np.zeros((1, 1)))
    acc = accelerator_for(args, (dummy, dummy, dummy))
    names = [n for n in OPTION_NAMES if n not in ANALYSIS_OPTION_NAMES]
    max_residual = acc.options.max_residual
    resolved = {"max_residual": ACCELERATOR_MAX_RESIDUAL if max_residual is None else max_residual}
    return (", ".join(f"{n}={getattr(acc, n)!r}" for n in names)
            + f"; options: {acc.options!r} (max_residual used: {resolved['max_residual']!r})"
            + f"; guard: {args.held} samples, {args.guard}")


if __name__ == "__main__":
    raise SystemExit(main())
