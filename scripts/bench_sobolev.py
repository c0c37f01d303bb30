"""Benchmark: train-step time of Sobolev loss 1 (9 heads) over L2 on the same network.

Network: ``SobolevHeadsModel`` with the paper's 9 hidden tanh layers × 20 units, a linear head
on every hidden layer and one output; data: one batch of noisy signals on a 4,096-point grid.
Every variant trains the same layers from the same initial weights with Adam:

* ``l2`` (the reference): the paper's plain network, ``loss="mse"`` on the final output
  (``reconstruction="output"``); the heads are pruned from the graph;
* ``sobolev1``: ``SobolevLoss1()`` with the library defaults (reconstruction = sum of the heads,
  L2 on it) -- all 9 heads, one rfft of the stacked head residuals;
* for the breakdown: ``l2+heads`` (L2 on the sum of the heads: the heads' cost without any FFT),
  ``sobolev1/output`` (Sobolev 1 with reconstruction "output"), ``sobolev1+2`` and ``sobolev2``
  (one rfft of the final output, plain network).

Timing: ``model.fit`` over a repeated in-memory batch with ``steps_per_execution`` steps per
call (so Python overhead is amortised identically for all), after a warm-up call that traces
the step. Rounds are interleaved across methods so background load hits all alike; each
variant's time per step is the median (and minimum) over rounds, and the ratios divide by the
``l2`` row's. Wall-clock and process CPU time are both reported; on a shared machine the CPU
time and the minimum wall time are the steadier ones.

Usage::

    python scripts/bench_sobolev.py --threads 1      # batch 1 and 8, graph mode and XLA
    python scripts/bench_sobolev.py --quick          # fewer steps and rounds (smoke test)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_koopman.sobolev_model import DEFAULT_RECONSTRUCTION, SobolevHeadsModel  # noqa: E402

#: variant -> (training method, reconstruction)
VARIANTS = {
    "l2": ("l2", "output"),
    "sobolev1": ("sobolev1", DEFAULT_RECONSTRUCTION),
    "l2+heads": ("l2", "sum_of_heads"),
    "sobolev1/output": ("sobolev1", "output"),
    "sobolev1+2": ("sobolev1+2", DEFAULT_RECONSTRUCTION),
    "sobolev2": ("sobolev2", "output"),
}
METHODS = tuple(VARIANTS)


def build(variant: str, jit: bool, steps_per_execution: int) -> keras.Model:
    """The paper's network compiled for ``variant``, from seed-0 initial weights."""
    method, reconstruction = VARIANTS[variant]
    keras.utils.set_random_seed(0)
    model = SobolevHeadsModel(depth=9, units=20, activation="tanh", reconstruction=reconstruction)
    loss = model.method_loss(method)
    model.compile(
        keras.optimizers.Adam(1e-3), loss=loss, jit_compile=jit,
        steps_per_execution=steps_per_execution,
    )
    return model


def data(grid: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Signals h(x) = x + sin(2πx⁴) + noise on x ∈ [0, 2), inputs scaled to [-1, 1)."""
    x = 2.0 * np.arange(grid) / grid
    rng = np.random.default_rng(0)
    y = x + np.sin(2 * np.pi * x**4) + 0.5 * rng.normal(size=(batch, grid))
    inputs = np.broadcast_to((x - 1.0)[None, :, None], (batch, grid, 1)).astype("float32")
    return inputs, y[..., None].astype("float32")


def bench(grid: int, batch: int, jit: bool, steps: int, rounds: int) -> dict[str, dict[str, float]]:
    """Per-step wall and CPU seconds (median and min over rounds) of every method."""
    x, y = data(grid, batch)

    def dataset() -> tf.data.Dataset:
        return tf.data.Dataset.from_tensors((x, y)).repeat(steps)

    models = {m: build(m, jit, steps) for m in METHODS}
    for model in models.values():
        model.fit(dataset(), epochs=1, verbose=0, shuffle=False)  # trace (and compile) once

    wall: dict[str, list[float]] = {m: [] for m in METHODS}
    cpu: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(rounds):
        for method, model in models.items():
            w, c = time.perf_counter(), time.process_time()
            model.fit(dataset(), epochs=1, verbose=0, shuffle=False)
            wall[method].append((time.perf_counter() - w) / steps)
            cpu[method].append((time.process_time() - c) / steps)
    return {
        m: {
            "wall_median": statistics.median(wall[m]),
            "wall_min": min(wall[m]),
            "cpu_median": statistics.median(cpu[m]),
        }
        for m in METHODS
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=4096)
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=200,
                        help="steps per timed fit call at batch 1 (divided by the batch size)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--jit", default="0,1", help="0 = graph mode, 1 = XLA; comma-separated")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra-/inter-op threads (0: TensorFlow's default)")
    parser.add_argument("--quick", action="store_true", help="steps=20, rounds=2, batch 1, graph")
    args = parser.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.quick:
        args.steps, args.rounds, args.batches, args.jit = 20, 2, "1", "0"
    warnings.filterwarnings("ignore", message="Gradients do not exist")
    tf.get_logger().setLevel("ERROR")
    print(f"# bench_sobolev {datetime.date.today()} | TF {tf.__version__}, Keras {keras.__version__}, "
          f"Python {platform.python_version()} | {os.cpu_count()} CPUs, "
          f"{args.threads or 'default'} TF threads, "
          f"load average at start {os.getloadavg()[0]:.1f} | grid {args.grid}, "
          f"{args.steps}/batch steps per call × {args.rounds} rounds")
    print("\n| batch | mode | variant | ms/step (median) | ms/step (min) | CPU ms/step (median) "
          "| ratio to L2: wall median | wall min | CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batches.split(",")):
        for jit in (bool(int(j)) for j in args.jit.split(",")):
            results = bench(args.grid, batch, jit, max(10, args.steps // batch), args.rounds)
            ref = results["l2"]
            for method, r in results.items():
                print(f"| {batch} | {'XLA' if jit else 'graph'} | {method} | {1e3 * r['wall_median']:.2f} | "
                      f"{1e3 * r['wall_min']:.2f} | {1e3 * r['cpu_median']:.2f} | "
                      f"{r['wall_median'] / ref['wall_median']:.3f} | {r['wall_min'] / ref['wall_min']:.3f} | "
                      f"{r['cpu_median'] / ref['cpu_median']:.3f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
