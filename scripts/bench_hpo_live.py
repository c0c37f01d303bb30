"""A live Fashion-MNIST search with a learning sampler, once per pruning strategy.

``scripts/bench_hpo.py`` replays recorded curves, which is exact for a sampler that does not
learn.  This script runs the search itself: Optuna's ``TPESampler`` (seeded per search) proposes
each configuration from the trials so far, pruned ones included, and every trial is trained
(``make_curves.py``'s models and data: 14×14 Fashion-MNIST, 1,500 training / 500 validation
images; MLP or small CNN, SGD / momentum / Adam / RMSprop, learning rate and initialiser scale
over several orders of magnitude, batch size, activation, width, depth, filters), 20 epochs
at most.  So each strategy sees different configurations, as in practice.

Strategies: no pruning; Optuna ``MedianPruner(n_startup_trials=5, n_warmup_steps=5)`` and
:class:`~keras_koopman.optuna_pruning.KoopmanPruner` (``n_steps=20``), both through
``optuna_integration.KerasPruningCallback``; the loss threshold (training loss still ≥ 0.9 × its
first-epoch value from epoch 2, or non-finite: ``KoopmanPruning(forecast=None)``, the callback's
loss rule alone and its default since these runs); and strategy ``KoopmanPruning``: the callback
with its forecast rule, ``KoopmanPruning(forecast="interval")`` (the default when these runs were
made; ``reference`` = the best completed trial's final ``val_loss``), a pruned trial reported to
Optuna as PRUNED.

Per search: epochs trained, CPU of the whole study (``process_time``: training, tracing, the
sampler and the pruner), and the best final ``val_loss`` among completed trials; each as a ratio
to the no-pruning search with the same sampler seed.

Usage (each search in a process of its own: in one long process the CPU per trial grows from
trial to trial, which would bias the later strategies' CPU)::

    for seed in 0 1 2; do for s in none median KoopmanPruner "loss threshold" KoopmanPruning; do
        python scripts/bench_hpo_live.py --first-seed $seed --strategies "$s" \
            --out runs/hpo_live.jsonl; done; done
    python scripts/bench_hpo_live.py --summarise runs/hpo_live.jsonl
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import live_search
import make_curves

EPOCHS = 20
STRATEGIES = ("none", "median", "KoopmanPruner", "loss threshold", "KoopmanPruning")


def suggest(trial, seed: int) -> dict:
    """A configuration of ``make_curves.py``'s space, proposed by the sampler."""
    optimizer = trial.suggest_categorical("optimizer", list(make_curves.OPTIMIZERS))
    lo, hi = make_curves.LR_RANGE[optimizer]
    family = trial.suggest_categorical("family", list(make_curves.FAMILIES))
    config = {
        "family": family, "optimizer": optimizer,
        "learning_rate": 10 ** trial.suggest_float(f"log10_lr_{optimizer}", lo, hi),
        "init_scale": 10 ** trial.suggest_float("log10_init_scale", *make_curves.INIT_RANGE),
        "batch_size": trial.suggest_categorical("batch_size", [128, 256, 512]),
        "activation": trial.suggest_categorical("activation", ["relu", "tanh"]),
        "epochs": EPOCHS, "seed": 1_000_003 * seed + trial.number,
    }
    if family == "cnn":
        config["filters"] = trial.suggest_categorical("filters", [4, 8])
    else:
        config["width"] = trial.suggest_categorical("width", [32, 64, 128])
        config["depth"] = trial.suggest_int("depth", 1, 2)
    return config


def search(strategy: str, seed: int, trials: int, data) -> dict:
    import keras
    import optuna
    from optuna_integration import KerasPruningCallback

    from keras_koopman.optuna_pruning import KoopmanPruner
    from keras_koopman.tuner import KoopmanPruning

    x_tr = data[0]
    pruning_callback = live_search.timed(KerasPruningCallback)
    koopman_pruning = live_search.timed(KoopmanPruning)
    pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5,
                                                              n_warmup_steps=5),
              "KoopmanPruner": lambda: KoopmanPruner(EPOCHS,
                                                     forecast_options={"bounds": (0.0, None)})
              }.get(strategy, optuna.pruners.NopPruner)()
    study = optuna.create_study(direction="minimize", pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=seed))
    counts = {"epochs": 0}

    class Count(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            counts["epochs"] += 1

    class Report(keras.callbacks.Callback):
        """Report val_loss to the study (for the sampler) without pruning."""

        def __init__(self, trial):
            super().__init__()
            self.trial = trial

        def on_epoch_end(self, epoch, logs=None):
            value = float((logs or {}).get("val_loss", math.nan))
            self.trial.report(value if math.isfinite(value) else math.inf, epoch)

    def objective(trial):
        config = suggest(trial, seed)
        model = make_curves.build_model(config, x_tr.shape[1:])
        train, val = make_curves.pipelines(config, data)
        callbacks = [Count(), keras.callbacks.TerminateOnNaN()]
        stopper = None
        if strategy in ("median", "KoopmanPruner"):
            callbacks.append(pruning_callback(trial, "val_loss"))
        else:
            callbacks.append(Report(trial))
        if strategy == "loss threshold":  # KoopmanPruning's loss (and non-finite) rule alone
            stopper = koopman_pruning("val_loss", forecast=None)
        elif strategy == "KoopmanPruning":
            finals = [t.value for t in study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
            stopper = koopman_pruning("val_loss", forecast="interval",
                                      reference=min(finals) if finals else None)
        if stopper is not None:
            callbacks.append(stopper)
        try:
            history = model.fit(train, epochs=EPOCHS, validation_data=val, verbose=0,
                                callbacks=callbacks)
        finally:
            keras.backend.clear_session()
        if stopper is not None and stopper.pruned:
            raise optuna.TrialPruned()
        values = history.history.get("val_loss", [])
        if len(values) < EPOCHS or not math.isfinite(values[-1]):
            return math.inf  # stopped by TerminateOnNaN: a diverged run
        return float(values[-1])

    live_search.PRUNER_CPU[0] = 0.0
    started = time.process_time()
    study.optimize(objective, n_trials=trials)
    cpu = time.process_time() - started
    finals = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return {"epochs": counts["epochs"], "cpu": cpu, "best": min(finals) if finals else math.inf,
            "pruned": pruned, "pruner_cpu": live_search.PRUNER_CPU[0]}


def summarise(results: list[dict]) -> None:
    """Print the ratios of every strategy's searches to the no-pruning search of the same seed."""
    print(f"live Fashion-MNIST search, TPE sampler, {EPOCHS}-epoch budget; ratios to the "
          "no-pruning search of the same seed, mean over seeds [per seed]")
    live_search.ratio_table(results, STRATEGIES, [("epochs", "epochs"), ("cpu", "CPU"),
                                                  ("best", "best val_loss")], group=("n_train",))


def main(argv: list[str] | None = None) -> int:
    args = live_search.parser(__doc__.split("\n\n")[0], STRATEGIES).parse_args(argv)
    if args.summarise is not None:
        summarise(live_search.read(args.summarise))
        return 0

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = live_search.run(
        args, lambda strategy, seed, data: search(strategy, seed, args.trials, data),
        lambda r: (f"seed {r['seed']} {r['strategy']}: {r['epochs']} epochs, {r['cpu']:.1f} s "
                   f"CPU (pruner {r['pruner_cpu']:.1f} s), best {r['best']:.4f}, "
                   f"{r['pruned']} pruned"))
    summarise(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
