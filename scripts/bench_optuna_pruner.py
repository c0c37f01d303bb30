"""Replay the corpus of learning curves through real Optuna studies to measure pruners.

Every task of the corpus (data set × model family) is one search space whose configurations are
the task's runs in one half (selection or held-out).  For each search seed the runs are shuffled
and fed, one trial per run, to ``optuna.create_study`` with the pruner under test: the objective
reports the recorded ``val_loss`` of every epoch (``trial.report(value, epoch)``), stops when
``trial.should_prune()`` says so, and otherwise returns the final ``val_loss``.  Measured per
strategy: epochs run (share of the full budget), CPU of the epochs run (the recorded
``epoch_cpu_s``), the pruner's own CPU (``process_time`` of the whole replay minus that of a
no-pruning replay), and the regret: best final ``val_loss`` among COMPLETE trials minus the best
final value of the task (0 = the task's best run was kept).

Strategies: no pruning; Optuna's ``MedianPruner(n_startup_trials=5, n_warmup_steps=5)``;
:class:`keras_koopman.optuna_pruning.KoopmanPruner` with reference rank ``k`` in ``--ks``.
Runs whose curves are not finite for the whole budget are left out (as in bench_forecast.py).

Usage::

    python scripts/bench_optuna_pruner.py --half selection      # choose k
    python scripts/bench_optuna_pruner.py --half held-out       # report
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import optuna

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_forecast import usable_runs  # noqa: E402
from make_curves import read_corpus  # noqa: E402

from keras_koopman.optuna_pruning import KoopmanPruner  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def replay(runs: list[dict], pruner, seed: int, stop_rule=None) -> dict:
    """One search over ``runs`` (shuffled by ``seed``) with ``pruner``.

    ``stop_rule(run, epoch) -> bool``, if given, also prunes (a rule outside Optuna, e.g. a
    training-loss threshold); its CPU is counted in ``replay_cpu``.
    """
    order = np.random.default_rng(seed).permutation(len(runs))
    # a fixed study name: HyperbandPruner assigns brackets by hashing it with the trial number
    study = optuna.create_study(direction="minimize", pruner=pruner, study_name=f"replay-{seed}",
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    stats = {"epochs": 0, "train_cpu": 0.0}

    def objective(trial):
        run = runs[order[trial.number]]
        curve = run["val_loss"]
        for epoch, value in enumerate(curve):
            trial.report(value, epoch)
            stats["epochs"] += 1
            stats["train_cpu"] += run["epoch_cpu_s"][epoch]
            if trial.should_prune() or (stop_rule is not None and stop_rule(run, epoch)):
                raise optuna.TrialPruned()
        return curve[-1]

    t0 = time.process_time()
    study.optimize(objective, n_trials=len(runs))
    stats["replay_cpu"] = time.process_time() - t0
    finals = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(r["val_loss"][-1] for r in runs)
    stats["regret"] = min(finals) - best
    stats["score_ratio"] = min(finals) / best
    stats["full_epochs"] = sum(len(r["val_loss"]) for r in runs)
    stats["full_cpu"] = sum(sum(r["epoch_cpu_s"]) for r in runs)
    return stats


def summarise(per_search: list[dict], monitor_s: float = 0.0) -> dict:
    """One strategy's searches (:func:`replay`'s stats) as :func:`compare` reports them, with
    ``monitor_s`` seconds of monitoring CPU charged on top of the training CPU."""
    total = {k: sum(s[k] for s in per_search)
             for k in ("epochs", "train_cpu", "full_epochs", "full_cpu")}
    regret = np.asarray([s["regret"] for s in per_search])
    return {
        "epochs": total["epochs"] / total["full_epochs"],
        "train_cpu": total["train_cpu"] / total["full_cpu"], "monitor_s": monitor_s,
        "total_cpu": (total["train_cpu"] + monitor_s) / total["full_cpu"],
        "mean_regret": float(regret.mean()), "max_regret": float(regret.max()),
        "score_ratio": float(np.mean([s["score_ratio"] for s in per_search])),
        "kept": f"{int(np.sum(regret <= 1e-12))}/{regret.size}",
    }


def compare(searches, strategies) -> dict[str, dict]:
    """Replay every search ``(runs, seed)`` with every strategy ``name: (make_pruner,
    stop_rule)``; the first strategy is the no-pruning reference for the monitoring CPU.

    Per strategy (:func:`summarise`): ``epochs`` and ``train_cpu`` as fractions of the full
    budget's, ``monitor_s`` (replay CPU minus the reference's), ``total_cpu`` ((training +
    monitoring) / full), ``mean_regret``, ``max_regret``, ``score_ratio`` (mean over searches of
    the best final value found / the best of all) and ``kept`` ("searches with regret 0 /
    searches").
    """
    stats = {name: [replay(runs, make(), seed, stop_rule=rule) for runs, seed in searches]
             for name, (make, rule) in strategies.items()}
    replay_cpu = {name: sum(s["replay_cpu"] for s in per) for name, per in stats.items()}
    reference = replay_cpu[next(iter(strategies))]
    return {name: summarise(per, max(replay_cpu[name] - reference, 0.0))
            for name, per in stats.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=REPO / "scripts/data/curves.jsonl.gz")
    parser.add_argument("--half", choices=("selection", "held-out"), default="held-out")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5])
    args = parser.parse_args(argv)

    runs, _ = usable_runs(read_corpus(args.corpus))
    tasks = defaultdict(list)
    for r in runs:
        if r["split"] == args.half:
            tasks[f"{r['dataset']}/{r['family']}"].append(r)
    n_steps = len(runs[0]["val_loss"])
    strategies = {"none": lambda: optuna.pruners.NopPruner(),
                  "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5,
                                                                n_warmup_steps=5)}
    for k in args.ks:
        strategies[f"koopman k={k}"] = (
            lambda k=k: KoopmanPruner(n_steps, k=k, n_startup_trials=max(3, k),
                                      forecast_options={"bounds": (0.0, None)}))
    results = compare([(task_runs, seed) for _, task_runs in sorted(tasks.items())
                       for seed in range(args.seeds)],
                      {name: (make, None) for name, make in strategies.items()})
    print(f"{args.half} half: {sum(map(len, tasks.values()))} runs in {len(tasks)} tasks, "
          f"{args.seeds} search seeds")
    print_table(results, "training CPU / full", "train_cpu", "pruner CPU s",
                "searches with regret 0")
    return 0


def print_table(results: dict, cpu_label: str, cpu_key: str, monitor_label: str,
                kept_label: str) -> None:
    """The Markdown table of :func:`compare`'s results (the CPU column chosen by the caller)."""
    print(f"| strategy | epochs / full | {cpu_label} | {monitor_label} | mean regret | "
          f"max regret | best / unpruned | {kept_label} |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['epochs']:.3f} | {r[cpu_key]:.3f} | {r['monitor_s']:.1f} | "
              f"{r['mean_regret']:.4f} | {r['max_regret']:.4f} | {r['score_ratio']:.4f} | "
              f"{r['kept']} |")


if __name__ == "__main__":
    sys.exit(main())
