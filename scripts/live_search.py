"""What the live-search benchmarks share: their command line, the loop over seeds and strategies
(one JSON line per search), and the table of ratios to the no-pruning search.

Used by ``bench_hpo_live.py`` (Optuna's TPE sampler) and ``bench_tuner_live.py`` (keras-tuner
oracles).  A search is paired with the no-pruning search that has the same seed and the same
values of the ``group`` keys (e.g. the oracle and the training-set size).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_curves

REPO = Path(__file__).resolve().parents[1]
#: CPU seconds spent in the pruning callbacks' ``on_epoch_end`` since the search began
PRUNER_CPU = [0.0]


def timed(callback_class: type) -> type:
    """``callback_class`` with the CPU of its ``on_epoch_end`` added to :data:`PRUNER_CPU` (a
    module-level sum, since keras-tuner deep-copies callbacks)."""
    class Timed(callback_class):
        def on_epoch_end(self, epoch, logs=None):
            started = time.process_time()
            try:
                return super().on_epoch_end(epoch, logs)
            finally:
                PRUNER_CPU[0] += time.process_time() - started

    Timed.__name__ = Timed.__qualname__ = f"Timed{callback_class.__name__}"
    return Timed


def parser(description: str, strategies: Sequence[str]) -> argparse.ArgumentParser:
    """The options every live search takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--trials", type=int, default=60)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--strategies", nargs="+", choices=strategies, default=list(strategies))
    p.add_argument("--train-images", type=int, default=1500,
                   help="Fashion-MNIST training images (validation: 500)")
    p.add_argument("--out", type=Path, help="append one JSON line per search here")
    p.add_argument("--summarise", type=Path, metavar="JSONL",
                   help="print the table of the searches in this file and exit")
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/keras_koopman_tfds"))
    return p


def read(path: Path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def ratio_table(results: list[dict], strategies: Sequence[str], columns: Sequence[tuple[str, str]],
                group: Sequence[str] = ()) -> None:
    """Print, per group, one row per strategy: the mean [per seed] ratio of each column's key to
    the no-pruning search (strategy ``"none"``) with the same seed and group, and the trials
    pruned per search."""
    def key_of(r: dict) -> tuple:
        return tuple(r.get(k, 1500 if k == "n_train" else None) for k in group)

    for values in sorted({key_of(r) for r in results}, key=str):
        rows = [r for r in results if key_of(r) == values]
        by_seed = {r["seed"]: r for r in rows if r["strategy"] == "none"}
        if group:
            print("\n" + ", ".join(f"{k} {v}" for k, v in zip(group, values)))
        print("| strategy | " + " | ".join(f"{header} / unpruned" for _, header in columns)
              + " | trials pruned |")
        print("|---" * (len(columns) + 2) + "|")
        for strategy in strategies:
            runs = sorted((r for r in rows if r["strategy"] == strategy and r["seed"] in by_seed),
                          key=lambda r: r["seed"])
            if not runs:
                continue
            cells = []
            for key, _ in columns:
                ratios = [r[key] / by_seed[r["seed"]][key] for r in runs]
                cells.append(f"{np.mean(ratios):.3f} [{', '.join(f'{x:.3f}' for x in ratios)}]")
            pruned = "/".join(str(r["pruned"]) for r in runs)
            print(f"| {strategy} | {' | '.join(cells)} | {pruned} |")


def run(args: argparse.Namespace, search: Callable[[str, int, object], dict],
        describe: Callable[[dict], str], **fields) -> list[dict]:
    """Run ``search(strategy, seed, data)`` for every seed and strategy of ``args`` (TensorFlow
    on one thread), adding ``seed``, ``strategy``, ``trials``, ``n_train`` and ``fields`` to each
    result; print ``describe(result)`` and append the result to ``args.out``."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    data = make_curves.load_data("fashion_mnist", args.data_dir, args.cache_dir,
                                 args.train_images, 500)
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for strategy in args.strategies:
            r = dict(search(strategy, seed, data), seed=seed, strategy=strategy,
                     trials=args.trials, n_train=args.train_images, **fields)
            results.append(r)
            print(describe(r), flush=True)
            if args.out is not None:
                with open(args.out, "a") as handle:
                    handle.write(json.dumps(r) + "\n")
    return results
