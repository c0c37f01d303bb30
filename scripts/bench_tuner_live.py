"""A live keras-tuner search of Fashion-MNIST, once per pruning strategy.

``scripts/bench_hpo_live.py`` runs Optuna's TPE sampler; this script runs the setting
:class:`~keras_koopman.KoopmanPruning` is made for: a keras-tuner oracle (``BayesianOptimization``
by default, whose Gaussian process learns from every completed trial, pruned ones included with
the score they reached; or ``RandomSearch``) driving real trainings of ``make_curves.py``'s space
(14×14 Fashion-MNIST, MLP or small CNN, SGD / momentum / Adam / RMSprop, learning rate and
initialiser scale over several orders of magnitude, batch size, activation, width, depth,
filters) with a 20-epoch budget.

Strategies: no pruning (the plain tuner); the loss rule alone
(``SpectralX(pruning=KoopmanPruning(forecast=None))``: training loss still ≥ 0.9 × its first
value from epoch 2, or non-finite; ``KoopmanPruning()``'s default since these runs); and
strategy ``KoopmanPruning``: ``SpectralX(pruning=KoopmanPruning(forecast="interval"))`` (the loss
rule and the forecast of ``val_loss``: prune when the optimistic end of the 80 % interval
promises nothing within 10 % of the best completed trial; the default when these runs were
made).

Per search: epochs trained, CPU of the whole search (``process_time``: training, tracing, the
oracle and the pruner), the best score the oracle holds (keras-tuner's score: a trial's best
epoch of ``val_loss``, reached by a checkpoint it saved, pruned trials included) and the best
final ``val_loss`` of the trials that ran their whole budget; each as a ratio to the no-pruning
search with the same oracle seed.  Each search's JSON line also keeps every trial's
configuration, ``val_loss`` curve, and whether and by which rule it was pruned.

Usage (one process per search: the CPU per trial grows with a process's age)::

    for seed in 0 1 2; do for s in none "loss rule" KoopmanPruning; do
        python scripts/bench_tuner_live.py --first-seed $seed --strategies "$s" \\
            --out runs/tuner_live.jsonl; done; done
    python scripts/bench_tuner_live.py --summarise runs/tuner_live.jsonl
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import live_search
import make_curves

EPOCHS = 20
STRATEGIES = ("none", "loss rule", "KoopmanPruning")
#: keras-tuner seeds its oracle's stream with ``seed + counter``: nearby seeds replay shifted
#: copies of one stream, so search seeds are spaced this far apart
SEED_STRIDE = 7919


def configuration(hp, seed: int, number: int) -> dict:
    """A configuration of ``make_curves.py``'s space from keras-tuner hyperparameters (every
    parameter always defined: the learning rate as a position in its optimizer's range)."""
    optimizer = hp.Choice("optimizer", list(make_curves.OPTIMIZERS))
    lo, hi = make_curves.LR_RANGE[optimizer]
    return {
        "family": hp.Choice("family", list(make_curves.FAMILIES)), "optimizer": optimizer,
        "learning_rate": 10 ** (lo + (hi - lo) * hp.Float("lr_position", 0.0, 1.0)),
        "init_scale": 10 ** hp.Float("log10_init_scale", *make_curves.INIT_RANGE),
        "batch_size": hp.Choice("batch_size", [128, 256, 512]),
        "activation": hp.Choice("activation", ["relu", "tanh"]),
        "filters": hp.Choice("filters", [4, 8]),
        "width": hp.Choice("width", [32, 64, 128]), "depth": hp.Int("depth", 1, 2),
        "epochs": EPOCHS, "seed": 1_000_003 * seed + number,
    }


def search(strategy: str, seed: int, trials: int, data, oracle: str) -> dict:
    import keras
    import keras_tuner

    from keras_koopman.tuner import KoopmanPruning, with_koopman_pruning

    x_tr = data[0]
    runs: list[dict] = []

    class Space(keras_tuner.HyperModel):
        def __init__(self):
            super().__init__()
            self.builds = 0

        def build(self, hp):
            self.config = configuration(hp, seed, self.builds)
            self.builds += 1
            return make_curves.build_model(self.config, x_tr.shape[1:])

        def fit(self, hp, model, *args, **kwargs):
            train, val = make_curves.pipelines(self.config, data)
            callbacks = [*kwargs.get("callbacks", []), keras.callbacks.TerminateOnNaN()]
            history = model.fit(train, validation_data=val, epochs=EPOCHS, verbose=0,
                                callbacks=callbacks)
            values = history.history.get("val_loss", [])
            pruned = bool(history.history.get("pruned", [0.0])[-1])
            runs.append({"epochs": len(values), "pruned": pruned,
                         "final": float(values[-1]) if values else math.nan,
                         "val_loss": [float(v) for v in values],
                         "rule": int(history.history.get("pruned_rule", [0.0])[-1]),
                         "config": self.config})
            keras.backend.clear_session()
            return history

    tuner_class = {"bayesian": keras_tuner.BayesianOptimization,
                   "random": keras_tuner.RandomSearch}[oracle]
    kwargs = {}
    if strategy != "none":
        tuner_class = with_koopman_pruning(tuner_class)
        pruning = live_search.timed(KoopmanPruning)
        kwargs["pruning"] = pruning(forecast=None if strategy == "loss rule" else "interval")
    directory = tempfile.mkdtemp(prefix="kk_tuner_live_")
    try:
        tuner = tuner_class(Space(), objective=keras_tuner.Objective("val_loss", "min"),
                            max_trials=trials, seed=SEED_STRIDE * seed + 1,
                            directory=directory, project_name="search", overwrite=True,
                            max_consecutive_failed_trials=trials, **kwargs)
        live_search.PRUNER_CPU[0] = 0.0
        started = time.process_time()
        tuner.search(epochs=EPOCHS, verbose=0)
        cpu = time.process_time() - started
        best = tuner.oracle.get_best_trials(1)
        score = float(best[0].score) if best and best[0].score is not None else math.inf
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    finals = [r["final"] for r in runs
              if r["epochs"] == EPOCHS and not r["pruned"] and math.isfinite(r["final"])]
    return {"epochs": sum(r["epochs"] for r in runs), "cpu": cpu, "best": score,
            "best_final": min(finals) if finals else math.inf,
            "pruned": sum(r["pruned"] for r in runs), "trained": len(runs), "runs": runs,
            "pruner_cpu": live_search.PRUNER_CPU[0]}


def summarise(results: list[dict]) -> None:
    """Print the ratios of every strategy's searches to the no-pruning search of the same seed,
    oracle and training-set size."""
    print(f"live keras-tuner search, {EPOCHS}-epoch budget; ratios to the no-pruning search of "
          "the same seed, mean over seeds [per seed]")
    live_search.ratio_table(results, STRATEGIES,
                            [("epochs", "epochs"), ("cpu", "CPU"), ("best", "best score"),
                             ("best_final", "best full-budget val_loss")],
                            group=("oracle", "n_train"))


def main(argv: list[str] | None = None) -> int:
    parser = live_search.parser(__doc__.split("\n\n")[0], STRATEGIES)
    parser.add_argument("--oracle", choices=("bayesian", "random"), default="bayesian")
    args = parser.parse_args(argv)
    if args.summarise is not None:
        summarise(live_search.read(args.summarise))
        return 0
    results = live_search.run(
        args, lambda strategy, seed, data: search(strategy, seed, args.trials, data, args.oracle),
        lambda r: (f"seed {r['seed']} {r['oracle']} {r['strategy']}: {r['epochs']} epochs, "
                   f"{r['cpu']:.1f} s CPU (pruner {r['pruner_cpu']:.1f} s), best score "
                   f"{r['best']:.4f}, best full-budget {r['best_final']:.4f}, "
                   f"{r['pruned']} pruned"), oracle=args.oracle)
    summarise(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
