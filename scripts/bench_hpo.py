"""Pruning strategies for a Fashion-MNIST hyperparameter search, replayed on recorded training.

Design (cheap and honest): every configuration of the search space is trained **once per search
seed for the full 20-epoch budget** (``scripts/make_curves.py``'s models and training: 14×14
Fashion-MNIST, 1,500 training / 500 validation images, MLPs and small CNNs, four optimisers,
learning rate and initialiser scale over several orders of magnitude; the configuration is
``make_curves.run_config(index, seed=HPO_SEED)`` with the data set forced to Fashion-MNIST, and
the training seed differs per search seed), recording per epoch the validation loss, the training
loss and the CPU time.  Then each strategy is replayed on those curves in a real Optuna study
(one trial per configuration, in a shuffled order per search seed; ``trial.report(val_loss,
epoch)`` every epoch, ``TrialPruned`` when the strategy says so): the CPU charged is the recorded
CPU of the epochs each strategy actually ran plus its measured monitoring cost (``process_time``
of the replay minus that of the no-pruning replay).  Objective: final ``val_loss`` (epoch 20).

Strategies: no pruning; keras-tuner's own ``Hyperband`` (``HyperbandOracle(max_epochs=20,
factor=3)``, one and three iterations, replayed by :func:`keras_tuner_hyperband`); Optuna
``MedianPruner(n_startup_trials=5, n_warmup_steps=5)``,
``SuccessiveHalvingPruner()``, ``HyperbandPruner(min_resource=1, max_resource=20)``; the
loss-threshold baseline (stop from epoch 2 when the training loss is still ≥ 0.9 × its
first-epoch value, or non-finite: ``KoopmanPruning()``'s default rule);
:class:`~keras_koopman.optuna_pruning.KoopmanPruner` (``n_steps=20``, defaults); and the rule of
``KoopmanPruning(forecast="interval")`` (its loss rule plus its forecast rule, reading the 80 %
interval) and of ``forecast="mean"``.  Search seeds 0–2 chose the forecast rule's reading; seeds
3–5 (``--first-seed 3``) are the held-out searches.

Usage::

    nohup nice -n 10 python scripts/bench_hpo.py --configs 60 --seeds 3 > /tmp/hpo.log 2>&1 &
    python scripts/bench_hpo.py --configs 60 --seeds 3 --first-seed 3    # held-out searches

Recorded runs go to ``--out`` (JSON lines, resumable like make_curves.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_curves  # noqa: E402

HPO_SEED = 777
EPOCHS = 20
#: keras-tuner Hyperband searches (oracle seeds) per recorded search
HYPERBAND_DRAWS = 10


def record_runs(args) -> list[dict]:
    """Train (or read back) every configuration for every search seed."""
    done = {}
    if args.out.exists():
        done = {r["run_id"]: r for r in make_curves.read_corpus(args.out)}
    seeds = search_seeds(args)
    todo = [(s, i) for s in seeds for i in range(args.configs)
            if f"hpo-s{s}-{i:03d}" not in done]
    if todo:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        data = make_curves.load_data("fashion_mnist", args.data_dir, args.cache_dir, 1500, 500)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for s, i in todo:
            config = make_curves.run_config(i, HPO_SEED, EPOCHS)
            config.update(dataset="fashion_mnist", run_id=f"hpo-s{s}-{i:03d}", search_seed=s,
                          config_index=i, seed=config["seed"] + 1_000_003 * s)
            record = make_curves.train_run(config, data)
            with open(args.out, "a") as handle:
                handle.write(json.dumps(record, separators=(",", ":")) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            done[config["run_id"]] = record
            print(config["run_id"], record["val_loss"][-1], record["run_cpu_s"], flush=True)
    return [done[f"hpo-s{s}-{i:03d}"] for s in seeds for i in range(args.configs)]


def search_seeds(args) -> range:
    """The search seeds of this run: ``--seeds`` of them from ``--first-seed`` (seeds 0–2 chose
    the keras-tuner rule's reading; 3–5 are the held-out searches)."""
    return range(args.first_seed, args.first_seed + args.seeds)


def _threshold_rule(run: dict, epoch: int) -> bool:
    loss = run["loss"]
    if loss[epoch] is None or not math.isfinite(loss[epoch]):
        return True
    return epoch >= 1 and loss[epoch] >= 0.9 * loss[0]


def keras_tuner_rule(optuna, reading: str = "interval", margin: float | None = None):
    """``KoopmanPruning``'s forecast rule, replayed as an Optuna pruner with the callback's
    own functions and defaults (its loss rule is the ``loss threshold 0.9`` stop rule, which is
    the same rule); the reference is the best COMPLETE trial, as in a keras-tuner search.
    ``reading``: what the rule reads (``forecast="interval"`` or ``"mean"``), ``margin``
    overrides the default margin."""
    from keras_koopman.forecast import forecast_curve
    from keras_koopman.tuner import (FORECAST_FROM, KoopmanPruning, falls_short,
                                     forecast_condemns, forecast_promise)

    defaults = KoopmanPruning()

    class Rule(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            values = [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)]
            done = len(values)
            if done <= defaults.start_from_epoch or done < FORECAST_FROM or done >= EPOCHS:
                return False
            finals = [t.value for t in study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
            tolerance = defaults.margin if margin is None else margin
            if not finals or not falls_short(values, min(finals), tolerance, "min"):
                return False  # no forecast could condemn it: the callback computes none
            try:
                result = forecast_curve(values, EPOCHS - done, **defaults.forecast_options)
            except ValueError:
                return False
            promise = forecast_promise(result, "min", reading)
            return forecast_condemns(promise, values, min(finals), tolerance, "min")

    return Rule()


def keras_tuner_hyperband(runs: list[dict], seed: int, iterations: int, directory: Path) -> dict:
    """keras-tuner's own Hyperband (``HyperbandOracle(max_epochs=20, factor=3)``) over the
    recorded configurations: its search space is one ``Choice`` of configuration indices, and
    ``run_trial`` reads the recorded curve instead of training.  A trial asked for epochs
    ``[initial_epoch, epochs)`` is charged those epochs' recorded CPU; a continued trial
    (``tuner/trial_id``) rebuilds and re-traces its model, so it is also charged the first
    epoch's extra CPU (``epoch_cpu_s[0]`` minus the median later epoch).  Its score is the best
    ``val_loss`` of the epochs it ran, as keras-tuner reads a History.  The regret is computed
    on the configurations trained to the full budget, like the Optuna strategies' COMPLETE
    trials.  keras-tuner's own bookkeeping (trial files) is not charged."""
    import keras_tuner as kt
    import numpy as np

    by_index = {r["config_index"]: r for r in runs}
    stats = {"epochs": 0, "train_cpu": 0.0}
    finished: dict[int, float] = {}

    class Replay(kt.engine.base_tuner.BaseTuner):
        def run_trial(self, trial, *args, **kwargs):
            values = trial.hyperparameters.values
            run = by_index[values["config"]]
            start, stop = values["tuner/initial_epoch"], values["tuner/epochs"]
            cpu = run["epoch_cpu_s"]
            stats["epochs"] += stop - start
            stats["train_cpu"] += sum(cpu[start:stop])
            if start > 0:
                stats["train_cpu"] += max(cpu[0] - float(np.median(cpu[1:])), 0.0)
            if stop >= EPOCHS:
                finished[values["config"]] = run["val_loss"][EPOCHS - 1]
            return {"val_loss": min(run["val_loss"][start:stop])}

    def space(hp):
        hp.Choice("config", sorted(by_index))

    oracle = kt.oracles.HyperbandOracle(objective=kt.Objective("val_loss", "min"),
                                        max_epochs=EPOCHS, factor=3,
                                        hyperband_iterations=iterations, seed=seed)
    tuner = Replay(oracle=oracle, hypermodel=space, directory=str(directory),
                   project_name=f"hyperband-{iterations}-{seed}", overwrite=True)
    tuner.search(verbose=0)
    best = min(r["val_loss"][-1] for r in runs)
    stats["regret"] = (min(finished.values()) - best) if finished else math.inf
    stats["score_ratio"] = (min(finished.values()) / best) if finished else math.inf
    stats["full_epochs"] = sum(len(r["val_loss"]) for r in runs)
    stats["full_cpu"] = sum(sum(r["epoch_cpu_s"]) for r in runs)
    stats["trials"] = len(tuner.oracle.trials)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3, help="number of search seeds")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="first search seed (0: the selection searches, 3: held out)")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/keras_koopman_tfds"))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "hpo_curves.jsonl")
    args = parser.parse_args(argv)
    runs = record_runs(args)

    import optuna
    from bench_optuna_pruner import compare, print_table, summarise

    from keras_koopman.optuna_pruning import KoopmanPruner

    for run in runs:  # a diverged epoch: the pruners see +inf, the objective too
        run["val_loss"] = [math.inf if v is None else v for v in run["val_loss"]]
    strategies = {
        "no pruning": (lambda: optuna.pruners.NopPruner(), None),
        "MedianPruner": (lambda: optuna.pruners.MedianPruner(n_startup_trials=5,
                                                             n_warmup_steps=5), None),
        "SuccessiveHalving": (lambda: optuna.pruners.SuccessiveHalvingPruner(), None),
        "Hyperband": (lambda: optuna.pruners.HyperbandPruner(min_resource=1,
                                                             max_resource=EPOCHS), None),
        "loss threshold 0.9": (lambda: optuna.pruners.NopPruner(), _threshold_rule),
        "KoopmanPruner": (lambda: KoopmanPruner(EPOCHS, forecast_options={"bounds": (0.0, None)}),
                          None),
        "KoopmanPruning(forecast=\"interval\") rule": (lambda: keras_tuner_rule(optuna),
                                                       _threshold_rule),
        "same, forecast=\"mean\"": (lambda: keras_tuner_rule(optuna, "mean"),
                                    _threshold_rule),
    }
    searches = [([r for r in runs if r["search_seed"] == s], 100 + s) for s in search_seeds(args)]
    results = compare(searches, strategies)
    import tempfile

    # keras-tuner's oracle draws with random.Random(seed + a counter that grows per trial), so
    # nearby seeds replay shifted copies of one stream: the oracle seeds are spaced far apart,
    # HYPERBAND_DRAWS of them per recorded search (its result varies most with its own draws)
    with tempfile.TemporaryDirectory() as folder:
        for iterations in (1, 3):
            per_search = [keras_tuner_hyperband(search, 100_003 * (HYPERBAND_DRAWS * seed + j),
                                                iterations, Path(folder))
                          for search, seed in searches for j in range(HYPERBAND_DRAWS)]
            trials = sum(s["trials"] for s in per_search) / len(per_search)
            results[f"keras-tuner Hyperband, {iterations} iteration(s) ({trials:.0f} trials "
                    f"per search, {HYPERBAND_DRAWS} oracle seeds per recorded search)"] = \
                summarise(per_search)
    print(f"Fashion-MNIST search: {args.configs} configurations × {args.seeds} search seeds, "
          f"{EPOCHS}-epoch budget")
    print_table(results, "CPU / full (training + monitoring)", "total_cpu", "monitoring CPU s",
                "searches keeping the best")
    return 0


if __name__ == "__main__":
    sys.exit(main())
