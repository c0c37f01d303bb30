"""Benchmark: spectral pruning of a keras-tuner search against the usual alternatives.

Search space: an MLP on a 14x14 MNIST subset with an initialiser scale, a learning rate and a
depth, where some settings train well and others stagnate (tiny initialisation in a deep tanh
net, tiny learning rate), saturate (huge initialisation) or diverge (huge learning rate).  Every
search seed shuffles the order in which the values are tried; every configuration gets the same
initial weights in every strategy (its seed is a hash of its values and the search seed).

Strategies, in one run, with the same seeds and the same grid of configurations:

(a) ``none``       GridSearch over the whole grid, every trial trained for the full budget;
(b) ``spectral``   SpectralGridSearch: KoopmanPruning's Koopman forecast of val_loss against
                   the best completed trial (its loss rule off), and in every trial's callbacks
                   a KoopmanMonitor with PoorInitialization(rule="spectral", action="stop"):
                   the weights' important eigenvalues at 1 (unit cluster >= 0.9) while the
                   loss is >= 0.9 x its first value, checked from epoch ``--warmup`` on;
(c) ``hyperband``  keras-tuner Hyperband with ``max_epochs`` = the budget (its own trial count);
(d) ``median``     Optuna, the grid enqueued in the same order, MedianPruner via
                   optuna_integration.KerasPruningCallback;
(e) ``threshold``  GridSearch with the simplest baseline: stop when, after W epochs, the loss is
                   still >= f x its first-epoch value (or non-finite);
(f) ``default``    SpectralGridSearch with ``KoopmanPruning()`` (its defaults: the loss rule,
                   loss still >= loss_ratio x its first value, after ``start_from_epoch``
                   epochs; the forecast rule is off);
(g) ``threshold2`` the baseline (e) from the epoch on which (f)'s loss rule starts;
and, on request (``--strategies``), (f) with its forecast rule on from epoch 4:
``default-interval`` (``forecast="interval"``, the default until the live searches of
``bench_tuner_live.py`` and ``bench_hpo_live.py``) and ``default-mean`` (``forecast="mean"``);
with ``--ablations``, two variants of (b): ``spectral-init`` (the spectral
poor-initialisation rule only) and ``forecast`` (forecast rule only).  In (b) and its
ablations a trial stopped by ``PoorInitialization`` is counted under the poor-initialisation
rule (its ``koopman_poor_init`` log); KoopmanPruning's own metrics do not see it.

A configuration is *poor* when its full-budget best val_loss in (a), same seed, exceeds
``--poor-factor`` x the best of the grid; a strategy *caught* it when it stopped it before the
budget (Hyperband: never trained it to the full budget).  A good configuration stopped early is
a false prune.  Prints a table per seed and the totals; ``--json`` writes all records.

    python scripts/bench_pruning.py            # 3 seeds: 11 min of CPU (44 min wall on 2 busy cores)
    python scripts/bench_pruning.py --quick    # smoke test: 1 seed, 9 configurations (Hyperband
                                               # then stops after its first round)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

# The MNIST files: $KERAS_KOOPMAN_MNIST_DIR, else the shared data folder beside the checkout.
os.environ.setdefault("KERAS_KOOPMAN_MNIST_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "data", "mnist"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import optuna  # noqa: E402
from optuna_integration import KerasPruningCallback  # noqa: E402

from keras_koopman import (  # noqa: E402
    AnalysisOptions,
    KoopmanMonitor,
    KoopmanPruning,
    PoorInitialization,
    PruningRule,
    SpectralGridSearch,
    load_mnist,
)

GRID = {"scale": [0.01, 1.0, 10.0], "lr": [1e-3, 0.1, 3.0], "depth": [1, 3]}
QUICK_GRID = {"scale": [0.01, 1.0, 10.0], "lr": [1e-3, 0.1, 3.0], "depth": [3]}
WIDTH = 32
# strategy (b)'s spectral poor-initialisation rule (PoorInitialization's stagnation test):
# important eigenvalues at 1 (unit cluster >= 0.9) while the loss is >= 0.9 x its first value
SPECTRAL_RULE = {"stagnation_threshold": 0.9, "high_loss_fraction": 0.9}
# its analysis settings (and those of its forecast), as the monitor computed spectra before
# the 2026-11-30 recalibration
SPECTRAL_OPTIONS = AnalysisOptions(delta=0.02, min_importance=0.05, refine=0.05)


# ------------------------------------------------------------------------------ data and model
def mnist_subset(n_train: int, n_val: int):
    x, y = load_mnist("train", as_numpy=True, subset=n_train + n_val)
    x = x.reshape(-1, 14, 2, 14, 2, 1).mean(axis=(2, 4)).reshape(len(x), -1)  # 2x2 average pool
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def config_key(values: dict) -> tuple:
    return tuple((name, values[name]) for name in GRID)


def make_model(values: dict, search_seed: int, n_inputs: int) -> keras.Model:
    keras.utils.set_random_seed(zlib.crc32(repr((config_key(values), search_seed)).encode()))
    init = keras.initializers.VarianceScaling(scale=values["scale"] ** 2, mode="fan_in",
                                              distribution="truncated_normal")
    model = keras.Sequential([keras.Input((n_inputs,))])
    for _ in range(int(values["depth"])):
        model.add(keras.layers.Dense(WIDTH, activation="tanh", kernel_initializer=init))
    model.add(keras.layers.Dense(10))
    model.compile(keras.optimizers.SGD(float(values["lr"]), momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class Runs:
    """Log of every fit: configuration, epochs run, best val_loss, budget."""

    def __init__(self):
        self.rows = []

    def add(self, values, history_or_epochs, budget, initial_epoch=0):
        rule = 0
        if isinstance(history_or_epochs, keras.callbacks.History):
            logged = history_or_epochs.history
            val = np.asarray(logged.get("val_loss", [np.nan]), dtype=float)
            epochs = len(history_or_epochs.epoch)
            rule = int(logged.get("pruned_rule", [0])[-1])
            if not rule and logged.get("koopman_poor_init", [0.0])[-1] == 1.0:
                # stopped by PoorInitialization(action="stop") in the trial's callbacks
                rule = int(PruningRule.POOR_INITIALIZATION)
        else:
            val, epochs = np.asarray(history_or_epochs[1], dtype=float), history_or_epochs[0]
        finite = val[np.isfinite(val)]
        self.rows.append({"config": config_key(values), "epochs": int(epochs),
                          "reached": int(initial_epoch + epochs), "budget": int(budget),
                          "best": float(finite.min()) if finite.size else float("nan"),
                          "rule": rule})


class GridModel(keras_tuner.HyperModel):
    def __init__(self, grid, search_seed, n_inputs, runs: Runs):
        super().__init__()
        rng = np.random.default_rng(search_seed)
        self.order = {name: [values[i] for i in rng.permutation(len(values))]
                      for name, values in grid.items()}
        self.search_seed, self.n_inputs, self.runs = search_seed, n_inputs, runs

    def build(self, hp):
        values = {name: hp.Choice(name, vals) for name, vals in self.order.items()}
        return make_model(values, self.search_seed, self.n_inputs)

    def fit(self, hp, model, *args, **kwargs):
        history = model.fit(*args, **kwargs)
        self.runs.add(hp.values, history, kwargs["epochs"], kwargs.get("initial_epoch", 0))
        return history


class LossThreshold(keras.callbacks.Callback):
    """Baseline (e): stop when, after `after` epochs, loss >= fraction x first-epoch loss."""

    def __init__(self, after: int, fraction: float):
        super().__init__()
        self.after, self.fraction = after, fraction

    def on_train_begin(self, logs=None):
        self.first = None

    def on_epoch_end(self, epoch, logs=None):
        loss = float((logs or {}).get("loss", np.nan))
        if self.first is None:
            self.first = loss
        if not np.isfinite(loss) or (epoch + 1 >= self.after and loss >= self.fraction * self.first):
            self.model.stop_training = True


# ------------------------------------------------------------------------------ strategies
def keras_tuner_search(kind, args, seed, data, grid, workdir):
    (x, y), (xv, yv) = data
    runs = Runs()
    hypermodel = GridModel(grid, seed, x.shape[1], runs)
    # NaN trials count as failures; a diverging grid row must not abort the baselines
    common = dict(objective="val_loss", directory=str(workdir), project_name=f"{kind}-{seed}",
                  overwrite=True, max_consecutive_failed_trials=10**6)
    callbacks = []
    if kind == "none":
        tuner = keras_tuner.GridSearch(hypermodel, **common)
    elif kind == "threshold":
        tuner = keras_tuner.GridSearch(hypermodel, **common)
        callbacks = [LossThreshold(args.warmup, args.threshold_fraction)]
    elif kind == "threshold2":
        tuner = keras_tuner.GridSearch(hypermodel, **common)
        # from the first epoch on which (f)'s loss rule may prune (done > start_from_epoch)
        callbacks = [LossThreshold(default_pruning(args).start_from_epoch + 1,
                                   args.threshold_fraction)]
    elif kind == "default":
        tuner = SpectralGridSearch(hypermodel, pruning=default_pruning(args), **common)
    elif kind in ("default-interval", "default-mean"):  # the defaults plus the forecast rule
        config = {**default_pruning(args).get_config(), "forecast": kind.split("-")[1]}
        tuner = SpectralGridSearch(hypermodel, pruning=KoopmanPruning(**config), **common)
    elif kind == "hyperband":
        tuner = keras_tuner.Hyperband(hypermodel, max_epochs=args.epochs, factor=3,
                                      hyperband_iterations=1, seed=seed, **common)
    else:
        # KoopmanPruning's rules from epoch --warmup on (done > start_from_epoch)
        pruning = KoopmanPruning(start_from_epoch=args.warmup - 1, margin=args.margin,
                                 loss_ratio=None,
                                 forecast="interval" if kind in ("spectral", "forecast") else None)
        tuner = SpectralGridSearch(hypermodel, pruning=pruning, **common)
        if kind in ("spectral", "spectral-init"):
            # keras-tuner deep-copies the pair per trial (the copy keeps the link)
            monitor = KoopmanMonitor(("weights", "loss"), options=SPECTRAL_OPTIONS)
            callbacks = [monitor, PoorInitialization(
                monitor, action="stop", rule="spectral", epochs=(args.warmup, args.epochs),
                **SPECTRAL_RULE)]
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuner.search(x, y, validation_data=(xv, yv), epochs=args.epochs, batch_size=args.batch,
                     verbose=0, callbacks=callbacks)
    return runs, (time.perf_counter() - start, time.process_time() - cpu)


def optuna_search(args, seed, data, sequence):
    (x, y), (xv, yv) = data
    runs = Runs()
    sampler = optuna.samplers.RandomSampler(seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=args.warmup - 1)
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    for values in sequence:
        study.enqueue_trial(dict(values))

    def objective(trial):
        values = {name: trial.suggest_categorical(name, GRID_IN_USE[name]) for name in GRID}
        model = make_model(values, seed, x.shape[1])
        seen = []
        record = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: seen.append(float(logs["val_loss"])))
        try:
            model.fit(x, y, validation_data=(xv, yv), epochs=args.epochs, batch_size=args.batch,
                      verbose=0, callbacks=[record, KerasPruningCallback(trial, "val_loss")])
        finally:
            runs.add(values, (len(seen), seen), args.epochs)
        finite = [v for v in seen if np.isfinite(v)]
        return min(finite) if finite else float("nan")

    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=len(sequence))
    return runs, (time.perf_counter() - start, time.process_time() - cpu)


GRID_IN_USE = GRID


def default_pruning(args) -> KoopmanPruning:
    """Strategy (f): ``KoopmanPruning()``, with only the overrides given on the command line."""
    overrides = {}
    if args.loss_ratio is not None:
        overrides["loss_ratio"] = args.loss_ratio
    if args.default_start_from_epoch is not None:
        overrides["start_from_epoch"] = args.default_start_from_epoch
    if args.default_margin is not None:
        overrides["margin"] = args.default_margin
    return KoopmanPruning(**overrides)


# ------------------------------------------------------------------------------ analysis
def summarise(runs: Runs, poor: set, budget: int, seconds: tuple) -> dict:
    configs = {}
    for row in runs.rows:
        entry = configs.setdefault(row["config"], {"reached": 0, "best": np.inf})
        entry["reached"] = max(entry["reached"], row["reached"])
        if np.isfinite(row["best"]):
            entry["best"] = min(entry["best"], row["best"])
    stopped = {c for c, e in configs.items() if e["reached"] < budget}
    bests = [e["best"] for e in configs.values() if np.isfinite(e["best"])]
    return {
        "trials": len(runs.rows), "configs": len(configs),
        "epochs": int(sum(r["epochs"] for r in runs.rows)), "seconds": seconds[0],
        "cpu": seconds[1],
        "best": float(min(bests)) if bests else float("nan"),
        "poor_seen": len(poor & set(configs)), "caught": len(poor & stopped),
        "false": len(stopped - poor), "caught_set": sorted(map(str, poor & stopped)),
        "stop_epochs": {str(c): configs[c]["reached"] for c in stopped},
        "by_rule": {str(r["config"]): r["rule"] for r in runs.rows if r["rule"]},
    }


def main(argv=None):
    global GRID_IN_USE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 9-configuration grid")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=12, help="epoch budget per trial")
    parser.add_argument("--warmup", type=int, default=4,
                        help="first epoch on which (b), (e) and (d) may stop a trial")
    parser.add_argument("--margin", type=float, default=0.1, help="forecast margin of (b)")
    parser.add_argument("--default-start-from-epoch", type=int, default=None,
                        help="start_from_epoch of the 'default' strategy (and so of "
                             "'threshold2'); default: KoopmanPruning's")
    parser.add_argument("--default-margin", type=float, default=None,
                        help="margin of the forecast rule of 'default-interval' and "
                             "'default-mean' (default: KoopmanPruning's)")
    parser.add_argument("--loss-ratio", type=float, default=None,
                        help="loss_ratio of the 'default' strategy's rule (default: KoopmanPruning's)")
    parser.add_argument("--strategies", nargs="+",
                        help="run only these (and 'none', the reference), e.g. default hyperband")
    parser.add_argument("--threshold-fraction", type=float, default=0.9)
    parser.add_argument("--poor-factor", type=float, default=1.5)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--val", type=int, default=300)
    parser.add_argument("--batch", type=int, default=60)
    parser.add_argument("--ablations", action="store_true",
                        help="also run the spectral-init and forecast-only variants of (b)")
    parser.add_argument("--json", type=Path, default=None, help="write all records here")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    GRID_IN_USE = QUICK_GRID if args.quick else GRID
    strategies = ["none", "spectral", "hyperband", "median", "threshold", "default", "threshold2"]
    if args.strategies:
        unknown = set(args.strategies) - set(strategies) - {
            "spectral-init", "forecast", "default-interval", "default-mean"}
        if unknown:
            parser.error(f"--strategies: unknown {sorted(unknown)}")
        strategies = ["none"] + [k for k in args.strategies if k != "none"]
    if args.ablations:
        strategies += ["spectral-init", "forecast"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = mnist_subset(args.train, args.val)
    workdir = Path(tempfile.mkdtemp(prefix="bench_pruning_"))
    results = {}
    try:
        for seed in seeds:
            runs, seconds = keras_tuner_search("none", args, seed, data, GRID_IN_USE, workdir)
            truth = {r["config"]: r["best"] for r in runs.rows}
            best = min(v for v in truth.values() if np.isfinite(v))
            poor = {c for c, v in truth.items() if not np.isfinite(v) or v > args.poor_factor * best}
            sequence = [dict(r["config"]) for r in runs.rows]
            results[seed] = {"none": summarise(runs, poor, args.epochs, seconds),
                             "truth": {str(c): v for c, v in truth.items()},
                             "poor": sorted(map(str, poor))}
            for kind in strategies[1:]:
                if kind == "median":
                    runs, seconds = optuna_search(args, seed, data, sequence)
                else:
                    runs, seconds = keras_tuner_search(kind, args, seed, data, GRID_IN_USE, workdir)
                results[seed][kind] = summarise(runs, poor, args.epochs, seconds)
            print_table(f"seed {seed}", {k: results[seed][k] for k in strategies}, len(poor))
            print(f"  poor configurations ({len(poor)}/{len(truth)}): "
                  + ", ".join(short(c) for c in sorted(poor)), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    totals = {}
    for kind in strategies:
        rows = [results[s][kind] for s in seeds]
        totals[kind] = {
            "epochs": sum(r["epochs"] for r in rows), "seconds": sum(r["seconds"] for r in rows),
            "cpu": sum(r["cpu"] for r in rows),
            "best": float(np.mean([r["best"] / results[s]["none"]["best"]
                                   for r, s in zip(rows, seeds)])),
            "trials": sum(r["trials"] for r in rows), "poor_seen": sum(r["poor_seen"] for r in rows),
            "caught": sum(r["caught"] for r in rows), "false": sum(r["false"] for r in rows),
        }
    print_table(f"all seeds {seeds} (best = mean ratio to (a)'s best)", totals,
                sum(len(results[s]["poor"]) for s in seeds), ratio_best=True)
    spectral_vs_threshold(results, seeds, strategies)
    if args.json is not None:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                   "results": {str(k): v for k, v in results.items()}},
                                  indent=1, default=str))
        os.replace(tmp, args.json)


def short(config: tuple) -> str:
    c = dict(config)
    return f"s{c['scale']:g}/lr{c['lr']:g}/d{c['depth']}"


def print_table(title, rows, n_poor, ratio_best=False):
    """One line per strategy; with ratio_best, rows' "best" already is a ratio to (a)'s."""
    base = rows["none"]
    print(f"\n{title}; {n_poor} poor configurations")
    print(f"{'strategy':10s} {'trials':>6s} {'epochs':>7s} {'/ (a)':>6s} {'wall s':>7s} {'cpu s':>7s} "
          f"{'/ (a)':>6s} {'best val_loss':>13s} {'/ (a)':>6s} {'poor caught':>11s} {'false prunes':>12s}")
    for kind, r in rows.items():
        best = "" if ratio_best else f"{r['best']:.4f}"
        best_ratio = r["best"] if ratio_best else r["best"] / base["best"]
        print(f"{kind:10s} {r['trials']:6d} {r['epochs']:7d} {r['epochs'] / base['epochs']:6.2f} "
              f"{r['seconds']:7.1f} {r['cpu']:7.1f} {r['cpu'] / base['cpu']:6.2f} "
              f"{best:>13s} {best_ratio:6.3f} {r['caught']:>5d}/{r['poor_seen']:<5d} {r['false']:12d}")


def spectral_vs_threshold(results, seeds, strategies):
    """Overlap of the poor configurations caught by the spectral strategy and the threshold
    baseline, and the prunes of every KoopmanPruning strategy by rule."""
    if "spectral" in strategies and "threshold" in strategies:
        both = only_spectral = only_threshold = 0
        for s in seeds:
            spectral = set(results[s]["spectral"]["caught_set"])
            threshold = set(results[s]["threshold"]["caught_set"])
            both += len(spectral & threshold)
            only_spectral += len(spectral - threshold)
            only_threshold += len(threshold - spectral)
        print(f"\npoor configurations caught by both spectral and threshold: {both}; "
              f"spectral only: {only_spectral}; threshold only: {only_threshold}")
    for kind in strategies:
        if kind not in ("spectral", "default", "default-interval", "default-mean",
                        "spectral-init", "forecast"):
            continue
        rules = {1: 0, 2: 0, 3: 0}
        poor_rules = {1: 0, 2: 0, 3: 0}
        for s in seeds:
            poor = set(results[s]["poor"])
            for config, rule in results[s][kind]["by_rule"].items():
                rules[rule] += 1
                poor_rules[rule] += config in poor
        print(f"{kind} prunes by rule (poor among them): "
              f"poor-initialisation {rules[1]} ({poor_rules[1]}), forecast {rules[2]} "
              f"({poor_rules[2]}), non-finite {rules[3]} ({poor_rules[3]})")


if __name__ == "__main__":
    main()
