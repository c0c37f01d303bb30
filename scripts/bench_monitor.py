"""Benchmark ``KoopmanMonitor``: training overhead, memory with ``max_dim``, sketch spectral error.

Four parts, each printing a table (recorded in ``docs/benchmarks.md``):

``overhead``
    The paper's MNIST CNN (``paper_cnn``, 65,558 weights), Adam 1e-3, on the first ``--images``
    MNIST training images, batch 64.  One model is trained one epoch per ``fit`` call, alternating
    an epoch *with* the monitor (``observables=("weights", "loss")``, ``analyze_every=10``, all
    snapshots) and an epoch *without* it (order swapped every pair, to cancel drift in machine
    load).  The monitor is one object that persists across the ``fit`` calls: after its first
    ``on_train_begin`` its reset is switched off and each call passes ``initial_epoch``, so its
    trajectory keeps growing exactly as in one long ``fit``.  The monitor's ``on_epoch_end`` is
    wrapped in a timer, so besides the wall-clock ratio (with / without) the exact callback
    time per epoch is known.  *Early*: monitor epochs 1 … ``--pairs`` (analysis at epoch 10,
    11 snapshots).  *Late*: the trajectory is then pre-filled to 500 stored snapshots by driving
    the monitor's own ``on_epoch_end`` on perturbed weights (each snapshot = the current weights
    plus N(0, 1e-3²) noise, so the trajectory has full rank 500: the worst case for the QR
    update and the analysis; analyses switched off while filling), and ``--pairs`` more pairs
    are timed (monitor epochs 501 … 510, analysis at 510 over all 511 snapshots).  For
    comparison the same 511-snapshot trajectory is analysed from scratch with
    ``analyze_weights`` (DMD_RRR on the 65,559 × 511 matrix).
``memory``
    A ``Dense(3162)`` layer on 3,162 inputs (10,001,406 float32 weights, 40 MB; its raw
    trajectory over 1,000 epochs would be 40 GB).  The monitor (``observables=("weights",
    "loss")``, ``max_dim=--max-dim``, one analysis at epoch ``--epochs``) is driven through its
    Keras hooks (``set_model``, ``on_train_begin``, ``on_epoch_end``) for ``--epochs`` epochs
    without training: before each epoch, 10,000 random weights get a N(0, 1e-3²) kick (cheap, and
    every snapshot adds a new direction, the worst case for memory).  Reported per ``max_dim``
    (each in its own process): peak resident memory above the level before
    ``on_train_begin`` (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``), the peak of
    numpy/Python allocations traced by ``tracemalloc`` (the monitor's own arrays; TensorFlow's
    buffers are not traced), and the time of the monitor's hook per epoch, of the sketch alone
    and of the final analysis.
``refine``
    Cost of refinement in one analysis, the step the monitor repeats every ``analyze_every``
    epochs: DMD_RRR of the ``k x k`` factor ``R`` of a random-walk weight trajectory (20,000
    weights + the constant 1, float32; every snapshot a new direction, as in minibatch
    training) and its diagnostics, with plain Ritz pairs (``refine=False``, the reference), the
    default ``AnalysisOptions`` (pairs with importance >= ``min_importance``) and every pair
    refined, diagnostics with the default ``AnalysisOptions``; CPU time (median of 3) as a ratio to the reference, and the unit cluster each
    reading reports.
``sketch``
    Spectral error of ``max_dim``: a synthetic trajectory with a known spectrum,
    ``w_t = w* + Σ_j c_j Re(λ_j^t v_j)`` (t = 0 … 59, n = 200,256 weights, rounded to float32
    like TensorFlow weights) with λ = 0.97, 0.9, 0.8, 0.6, 0.95·e^{±0.2i}, 0.7·e^{±0.9i} and the
    fixed point w* (λ = 1), is fed through the monitor's hooks (weights assigned to a Dense
    layer) with and without ``max_dim``; reported: the largest distance from a planted
    eigenvalue to the nearest computed one with importance ≥ 1e-3, the largest distance from such
    a computed eigenvalue to the nearest planted one (spurious modes), and the diagnostics.

Usage::

    python scripts/bench_monitor.py overhead --images 10000 --pairs 10 --late 500
    python scripts/bench_monitor.py memory --max-dim 16384 --epochs 1000
    python scripts/bench_monitor.py sketch
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import tracemalloc

# The MNIST files: $KERAS_KOOPMAN_MNIST_DIR, else the shared data folder beside the checkout.
os.environ.setdefault("KERAS_KOOPMAN_MNIST_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "data", "mnist"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def _header(name: str) -> None:
    print(f"# bench_monitor {name}: {datetime.date.today()} {platform.node()} "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")


def _persistent(monitor):
    """Time the monitor's ``on_epoch_end`` and make it persist across ``fit`` calls."""
    times = {}
    epoch_end = monitor.on_epoch_end
    train_begin = monitor.on_train_begin

    def timed_epoch_end(epoch, logs=None):
        start, cpu = time.perf_counter(), time.process_time()
        epoch_end(epoch, logs)
        times[epoch + 1] = (time.perf_counter() - start, time.process_time() - cpu)

    def begin_once(logs=None):
        train_begin(logs)
        monitor.on_train_begin = lambda logs=None: None

    monitor.on_epoch_end = timed_epoch_end
    monitor.on_train_begin = begin_once
    return times


# ---------------------------------------------------------------------- overhead
def overhead(args) -> None:
    from keras_koopman import KoopmanMonitor, analyze_weights, load_mnist, paper_cnn

    _header("overhead")
    x, y = load_mnist("train", as_numpy=True, subset=args.images)
    model = paper_cnn("xavier", seed=0)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)  # trace the train step
    monitor = KoopmanMonitor(observables=("weights", "loss"), analyze_every=10)
    hook = _persistent(monitor)
    state = {"done": 0}
    rows = []

    def timed(fn):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        return np.array([time.perf_counter() - start, time.process_time() - cpu])

    def epoch_with():
        t = timed(lambda: model.fit(x, y, batch_size=64, epochs=state["done"] + 1,
                                    initial_epoch=state["done"], verbose=0, callbacks=[monitor]))
        state["done"] += 1
        return t

    def epoch_without():
        return timed(lambda: model.fit(x, y, batch_size=64, epochs=1, verbose=0))

    def phase(name):
        pairs = args.early_pairs if name == "early" and args.early_pairs else args.pairs
        with_t, without_t = [], []
        for i in range(pairs):
            if i % 2 == 0:
                with_t.append(epoch_with())
                without_t.append(epoch_without())
            else:
                without_t.append(epoch_without())
                with_t.append(epoch_with())
        with_t, without_t = np.array(with_t), np.array(without_t)  # (pairs, [wall, cpu])
        epochs = range(state["done"] - pairs + 1, state["done"] + 1)
        hooks = np.array([hook[e] for e in epochs])
        record = np.median([hook[e] for e in epochs if e % 10 != 0], axis=0)
        analysis = [hook[e] for e in epochs if e % 10 == 0]
        rows.append(dict(
            phase=name, snapshots=len(monitor.weight_epochs),
            epoch=np.median(without_t, axis=0), wall_ratio=with_t.sum(0) / without_t.sum(0),
            paired_ratio=np.median(with_t / without_t, axis=0), hook=hooks.mean(0),
            hook_ratio=1 + hooks.mean(0) / without_t.mean(0), record=record,
            analysis=np.mean(analysis, axis=0) - record if analysis else np.full(2, np.nan)))

    phase("early")
    # pre-fill to 500 stored snapshots through the monitor's own hook, analyses off
    every, monitor.analyze_every = monitor.analyze_every, None
    saved = [v.numpy() for v in model.trainable_variables]
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    epoch_end = monitor.on_epoch_end
    fill_times = []
    while len(monitor.weight_epochs) < args.late:
        for v, w in zip(model.trainable_variables, saved):
            v.assign(w + rng.normal(0.0, 1e-3, w.shape).astype(w.dtype))
        t = time.process_time()
        epoch_end(state["done"], {"loss": 0.05 + 0.5 * 0.99 ** state["done"]})
        fill_times.append(time.process_time() - t)
        state["done"] += 1
    for v, w in zip(model.trainable_variables, saved):
        v.assign(w)
    fill = time.perf_counter() - start
    monitor.analyze_every = every
    phase("late")

    # from-scratch analysis of the same trajectory for comparison
    streamed = [a for a in monitor.analyses if a.observable == "weights"][-1]
    count = streamed.n_snapshots
    traj, epochs = monitor.trajectory()[:, :count], monitor.weight_epochs[:count]
    start, cpu = time.perf_counter(), time.process_time()
    # the monitor's AnalysisOptions, refinement included
    scratch = analyze_weights(traj, epochs, options=monitor.options)
    scratch_s, scratch_cpu = time.perf_counter() - start, time.process_time() - cpu

    print(f"\npaper CNN (65,558 weights), {args.images} MNIST images, batch 64, Adam; "
          f"{args.early_pairs or args.pairs} (early) and {args.pairs} (late) interleaved epoch pairs; "
          "each cell wall / CPU (process time)")
    print("phase  snapshots  epoch w/o (s)    fit ratio w/ ÷ w/o  paired median    hook/epoch (s)"
          "   1 + hook/epoch   record (s)      analysis (s)")
    for r in rows:
        pair = lambda v, f: f"{v[0]:{f}} / {v[1]:{f}}"
        print(f"{r['phase']:6s} {r['snapshots']:9d}  {pair(r['epoch'], '6.2f')}  "
              f"{pair(r['wall_ratio'], '7.3f')}  {pair(r['paired_ratio'], '6.3f')}  "
              f"{pair(r['hook'], '6.3f')}  {pair(r['hook_ratio'], '7.4f')}  "
              f"{pair(r['record'], '6.3f')}  {pair(r['analysis'], '6.2f')}")
    print(f"\npre-fill of {len(fill_times)} snapshots: {fill:.1f} s; recording CPU time per epoch at "
          f"100/300/490 stored snapshots: "
          + ", ".join(f"{fill_times[i]:.3f} s" for i in (89, 289, 479) if i < len(fill_times)))
    late = rows[-1]["analysis"]
    print(f"analysis of {count} snapshots (wall / CPU): streamed, inside the hook, weights + loss "
          f"{late[0]:.2f} / {late[1]:.2f} s; from scratch, analyze_weights on the "
          f"{traj.shape[0]}x{traj.shape[1]} trajectory {scratch_s:.2f} / {scratch_cpu:.2f} s "
          f"(CPU ratio {scratch_cpu / max(late[1], 1e-9):.1f}x); "
          f"rank {streamed.rank} vs {scratch.rank}")
    lam_s = np.sort_complex(streamed.eigenvalues[streamed.importance >= 0.05])
    lam_f = np.sort_complex(scratch.eigenvalues[scratch.importance >= 0.05])
    if lam_s.size and lam_f.size:
        d = np.abs(lam_s[:, None] - lam_f[None, :])
        print(f"important eigenvalues streamed vs from scratch: {lam_s.size} vs {lam_f.size}, "
              f"largest nearest distance {max(d.min(0).max(), d.min(1).max()):.2e}")


# ---------------------------------------------------------------------- memory
def _vm(key: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def memory_one(args) -> None:
    import keras

    from keras_koopman import KoopmanMonitor, SparseSignSketch

    width = args.width
    model = keras.Sequential([keras.Input((width,)), keras.layers.Dense(width)])
    n = model.count_params()
    monitor = KoopmanMonitor(observables=("weights", "loss"), max_dim=args.max_dim,
                             analyze_at=(args.epochs,))
    monitor.set_model(model)
    monitor.set_params({"epochs": args.epochs, "steps": 1, "verbose": 0})
    rng = np.random.default_rng(0)
    variables = model.trainable_variables
    kernel = variables[0]
    kick_idx = [rng.integers(0, width, size=(args.epochs, 10_000, 2))]

    def kick(e):
        kicks = keras.ops.scatter(kick_idx[0][e], rng.normal(0, 1e-3, 10_000).astype("float32"),
                                  (width, width))
        kernel.assign(kernel + kicks)

    kick(0)
    baseline_rss = _vm("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    tracemalloc.start()
    start = time.perf_counter()
    monitor.on_train_begin()
    begin_s = time.perf_counter() - start
    hook, hook_cpu = [], []
    for e in range(args.epochs):
        kick(e)
        t, c = time.perf_counter(), time.process_time()
        monitor.on_epoch_end(e, {"loss": 1.0 / (1 + e)})
        hook.append(time.perf_counter() - t)
        hook_cpu.append(time.process_time() - c)
    monitor.on_train_end()
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = _vm("VmHWM") - baseline_rss
    sketch = SparseSignSketch(n, args.max_dim, seed=1)
    vec = np.concatenate([np.asarray(v.numpy()).reshape(-1) for v in variables])
    t, c = time.perf_counter(), time.process_time()
    for _ in range(3):
        sketch(vec)
    sketch_s, sketch_cpu = (time.perf_counter() - t) / 3, (time.process_time() - c) / 3
    out = dict(n=n, max_dim=args.max_dim, epochs=args.epochs, peak_rss_mb=peak / 2**20,
               traced_peak_mb=traced_peak / 2**20, begin_s=begin_s,
               hook_median_s=float(np.median(hook[:-1])), hook_last_s=hook[-1],
               hook_cpu_s=float(np.median(hook_cpu[:-1])), hook_last_cpu_s=hook_cpu[-1],
               sketch_s=sketch_s, sketch_cpu_s=sketch_cpu, snapshots=len(monitor.weight_epochs),
               analyses=len(monitor.analyses), raw_gb=4 * n * (args.epochs + 1) / 1e9)
    print("RESULT " + json.dumps(out), flush=True)


def memory(args) -> None:
    _header("memory")
    rows = []
    for dim in args.max_dim:
        cmd = [sys.executable, __file__, "memory-one", "--max-dim", str(dim),
               "--epochs", str(args.epochs), "--width", str(args.width)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if not line:
            print(proc.stderr[-3000:])
            raise SystemExit(f"memory run for max_dim={dim} failed")
        rows.append(json.loads(line[0][7:]))
    print(f"\n{rows[0]['n']:,}-weight Dense model, {args.epochs} epochs driven through the monitor's "
          f"hooks (raw float32 trajectory {rows[0]['raw_gb']:.1f} GB); times wall / CPU")
    print("max_dim  peak RSS (MB)  traced peak (MB)  on_train_begin (s)  hook/epoch (s)  "
          "sketch alone (s)  final hook incl. analysis (s)")
    for r in rows:
        print(f"{r['max_dim']:7d}  {r['peak_rss_mb']:13.0f}  {r['traced_peak_mb']:16.0f}  "
              f"{r['begin_s']:18.2f}  {r['hook_median_s']:6.3f} / {r['hook_cpu_s']:5.3f}  "
              f"{r['sketch_s']:6.3f} / {r['sketch_cpu_s']:5.3f}  "
              f"{r['hook_last_s']:10.2f} / {r['hook_last_cpu_s']:5.2f}")


# ---------------------------------------------------------------------- sketch error
PLANTED = (0.97, 0.9, 0.8, 0.6, 0.95 * np.exp(0.2j), 0.7 * np.exp(0.9j))


def synthetic_trajectory(n: int, steps: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """``w_t = w* + Σ_j c_j Re(λ_j^t v_j) + noise·ξ_t`` in float32, shape (steps, n)."""
    rng = np.random.default_rng(seed)
    w_star = rng.standard_normal(n)
    t = np.arange(steps)[:, None]
    out = np.tile(w_star, (steps, 1))
    for j, lam in enumerate(PLANTED):
        v = rng.standard_normal(n) + (1j * rng.standard_normal(n) if np.iscomplex(lam) else 0)
        out += (0.5 / (1 + j)) * np.real(lam ** t * v[None, :])
    if noise:
        out += noise * rng.standard_normal(out.shape)
    return out.astype(np.float32)


def sketch_error(args) -> None:
    import keras

    _header("sketch")
    width, steps = 447, 60
    model = keras.Sequential([keras.Input((width,)), keras.layers.Dense(width)])
    n = model.count_params()
    kernel, bias = model.trainable_variables
    truth = np.array(list(PLANTED) + [np.conj(z) for z in PLANTED if np.iscomplex(z)] + [1.0])
    print(f"\nsynthetic trajectory: n = {n}, {steps} snapshots, float32, planted |λ| from 0.6 to 1 "
          f"(9 eigenvalues incl. conjugates and λ = 1); noise: i.i.d. N(0, σ²) per weight and epoch")
    print("noise σ  max_dim   rank  planted→computed  computed→planted  vs no sketch  unit_cluster  "
          "spectral_radius  hook/epoch (ms)")
    for noise in args.noise:
        traj = synthetic_trajectory(n, steps, noise)
        reference = None
        for dim in [None] + list(args.dims):
            reference = _sketch_row(model, kernel, bias, width, steps, traj, truth, dim, noise, reference)


def _sketch_row(model, kernel, bias, width, steps, traj, truth, dim, noise, reference):
    """One row of the sketch table: run the monitor on ``traj`` with ``max_dim=dim``."""
    from keras_koopman import KoopmanMonitor

    monitor = KoopmanMonitor(observables=("weights",), max_dim=dim, analyze_at=(steps - 1,))
    monitor.set_model(model)
    monitor.set_params({"epochs": steps - 1, "steps": 1, "verbose": 0})

    def assign(t):
        kernel.assign(traj[t, : width * width].reshape(width, width))
        bias.assign(traj[t, width * width:])

    assign(0)
    monitor.on_train_begin()
    hook = []
    for t in range(1, steps):
        assign(t)
        start = time.perf_counter()
        monitor.on_epoch_end(t - 1, {})
        hook.append(time.perf_counter() - start)
    a = monitor.analyses[-1]
    lam = a.eigenvalues[a.importance >= 1e-3]
    d = np.abs(truth[:, None] - lam[None, :])
    if reference is None:
        gap, reference = 0.0, lam
    else:
        e = np.abs(reference[:, None] - lam[None, :])
        gap = max(e.min(1).max(), e.min(0).max())
    print(f"{noise:7.0e}  {str(dim):7s} {a.rank:6d}  {d.min(1).max():16.2e}  {d.min(0).max():16.2e}  "
          f"{gap:12.2e}  {a.diagnostics.unit_cluster:12.3f}  {a.diagnostics.spectral_radius:15.4f}  "
          f"{1e3 * np.median(hook[:-1]):15.1f}")
    return reference


def refine_cost(args) -> None:
    from keras_koopman import DEFAULT_OPTIONS, diagnose, dmd_rrr
    from keras_koopman.koopman import default_tol

    _header("refine")
    rng = np.random.default_rng(0)
    n = 20_000
    readings = {"plain Ritz": False,
                f"monitor default ({DEFAULT_OPTIONS.refine_level:g})": DEFAULT_OPTIONS.refine_level,
                "all pairs": True}
    print("\nsnapshots  reading                  CPU s   ratio  unit cluster  median residual")
    for k in args.snapshots:
        walk = np.cumsum(rng.standard_normal((n, k)), axis=1) + 30 * rng.standard_normal((n, 1))
        snapshots = np.vstack([walk, np.ones((1, k))]).astype(np.float32).astype(np.float64)
        factor = np.linalg.qr(snapshots, mode="r")
        reference = None
        for name, refine in readings.items():
            times = []
            for _ in range(3):
                start = time.process_time()
                modes = dmd_rrr(factor, tol=default_tol(n + 1, np.float32), refine=refine)
                diagnostics = diagnose(modes, DEFAULT_OPTIONS)
                times.append(time.process_time() - start)
            cpu = float(np.median(times))
            reference = cpu if reference is None else reference
            print(f"{k:9d}  {name:<23}{cpu:7.2f}{cpu / reference:8.2f}"
                  f"{diagnostics.unit_cluster:14.2f}{np.median(modes.residuals):17.1e}",
                  flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("overhead", "memory", "memory-one", "sketch", "refine"))
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--early-pairs", type=int, default=None,
                        help="overhead: epoch pairs of the early phase (default: --pairs)")
    parser.add_argument("--late", type=int, default=500, help="overhead: snapshots stored before the late phase")
    parser.add_argument("--max-dim", type=int, nargs="+", default=[16_384])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--width", type=int, default=3162, help="memory: Dense(width) on width inputs")
    parser.add_argument("--dims", type=int, nargs="+", default=[4096, 1024, 256, 64])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 1e-3])
    parser.add_argument("--snapshots", type=int, nargs="+", default=[100, 200, 500],
                        help="refine: trajectory lengths")
    args = parser.parse_args(argv)
    if args.part == "memory-one":
        args.max_dim = args.max_dim[0]
        memory_one(args)
    else:
        {"overhead": overhead, "memory": memory, "sketch": sketch_error,
         "refine": refine_cost}[args.part](args)


if __name__ == "__main__":
    main(sys.argv[1:])
