"""Measure the poor-initialisation rules of ``PoorInitialization`` against a loss-only baseline.

Study design (see ``docs/results.md``, "Poor-initialisation rule"):

* Task: an MLP ``784 → 128 → 64 → 10`` (ReLU, softmax, 109,386 weights), sparse categorical
  cross-entropy, on the first ``--train`` MNIST training images, validated on the first ``--val``
  test images, batch 64, ``--epochs`` epochs (the budget).
* Families of initial conditions, each over ``--seeds`` seeds (biases always start at 0):
  ``glorot``      Glorot-uniform kernels, Adam 1e-3 (the Keras default: expected healthy);
  ``big``         RandomNormal(stddev=1) kernels, Adam 1e-3 (exploding activations);
  ``tiny_sgd``    RandomNormal(stddev=1e-2) kernels, plain SGD 0.1 (vanishing signal: a
                  plateau at ln 10 for a few epochs, then learning starts, or not);
  ``zeros``       all-zero kernels, Adam 1e-3 (symmetric: hidden layers never learn; 4 seeds,
                  which differ only in the data order).
* Label, by outcome: a run is *poor* when its validation accuracy after the full budget is below
  ``--cut`` (default 0.80; healthy runs reach about 0.90 on this subset).  The family is not
  the label.
* Every run carries a ``KoopmanMonitor(("weights", "loss", "val_loss"), analyze_every=1)``
  (default ``AnalysisOptions``) and no decision callback; each analysis's spectrum
  (eigenvalues, importances, residuals) is stored, so the diagnostics can be recomputed offline
  for any ``delta``/``min_importance`` and the rules evaluated for any thresholds and check
  window.
* ``PoorInitialization``'s rules with their defaults (read from its signature and from
  ``AnalysisOptions``): ``rule="spectral"`` (unit cluster of the weights >=
  ``stagnation_threshold`` while loss >= ``high_loss_fraction`` x its first value, at some
  check epoch in ``epochs``), ``rule="loss"`` (loss >= ``loss_ratio`` x its first value at
  some check epoch) and ``rule="either"``.
* Thresholds of a wider rule family (stagnation, growth and too-slow clauses, the weights or
  the loss as primary observable) are chosen on the even seeds (minimum false-alarm + miss
  rate) and the rates are reported on the odd seeds.  The baseline flags a run when
  ``loss[W] >= f · loss[1]`` (train loss after W epochs against after the first), with W and f
  chosen on the same seeds.
* ``FixedPointStopping`` (its defaults, and patience-1 variants over a threshold grid) is
  evaluated on the healthy runs: the epoch it would stop at against the epoch of minimal
  validation loss and against ``keras.callbacks.EarlyStopping`` on ``val_loss`` with patience
  5 and 10 (simulated on the recorded validation curve, which is what the callback does).

Usage::

    python scripts/measure_poor_init.py run --out /tmp/poor_init      # trains (resumable)
    python scripts/measure_poor_init.py analyze --out /tmp/poor_init  # offline, seconds
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

# The MNIST files: $KERAS_KOOPMAN_MNIST_DIR, else the shared data folder beside the checkout.
os.environ.setdefault("KERAS_KOOPMAN_MNIST_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "data", "mnist"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

FAMILIES = {
    # name: (kernel initializer factory, optimizer factory)
    "glorot": ("glorot", "adam"),
    "big": ("normal1", "adam"),
    "tiny_sgd": ("normal1e-2", "sgd"),
    "zeros": ("zeros", "adam"),
}


def build_model(family: str, seed: int):
    import keras

    init_name, opt_name = FAMILIES[family]
    seeds = np.random.SeedSequence(seed).generate_state(3)

    def kernel(i):
        s = int(seeds[i])
        if init_name == "glorot":
            return keras.initializers.GlorotUniform(seed=s)
        if init_name == "normal1":
            return keras.initializers.RandomNormal(stddev=1.0, seed=s)
        if init_name == "normal1e-2":
            return keras.initializers.RandomNormal(stddev=1e-2, seed=s)
        return keras.initializers.Zeros()

    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu", kernel_initializer=kernel(0)),
        keras.layers.Dense(64, activation="relu", kernel_initializer=kernel(1)),
        keras.layers.Dense(10, activation="softmax", kernel_initializer=kernel(2)),
    ])
    optimizer = keras.optimizers.Adam(1e-3) if opt_name == "adam" else keras.optimizers.SGD(0.1)
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def run(args) -> None:
    import keras
    import tensorflow as tf

    from keras_koopman import KoopmanMonitor, load_mnist

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = load_mnist("train", as_numpy=True, subset=args.train)
    xv, yv = load_mnist("test", as_numpy=True, subset=args.val)
    families = args.families.split(",")
    for seed, family in itertools.product(range(args.seeds), families):
        if family == "zeros" and seed >= 4:
            continue
        path = out / f"{family}_{seed:02d}.json"
        if path.exists():
            continue
        keras.utils.set_random_seed(1000 + seed)
        model = build_model(family, seed)
        monitor = KoopmanMonitor(("weights", "loss", "val_loss"), analyze_every=1)
        start = time.perf_counter()
        history = model.fit(x, y, batch_size=64, epochs=args.epochs, validation_data=(xv, yv),
                            verbose=0, callbacks=[monitor])
        seconds = time.perf_counter() - start
        record = {
            "family": family, "seed": seed, "epochs": args.epochs, "seconds": seconds,
            "history": {k: [float(v) for v in history.history[k]]
                        for k in ("loss", "val_loss", "accuracy", "val_accuracy")},
            "analyses": [a.to_dict() for a in monitor.analyses],
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
        print(f"{family:9s} seed {seed:2d}: val_acc {record['history']['val_accuracy'][-1]:.3f} "
              f"loss {record['history']['loss'][0]:.3g} -> {record['history']['loss'][-1]:.3g} "
              f"({seconds:.1f} s)", flush=True)


# ---------------------------------------------------------------------- offline analysis
def diagnostics(analysis: dict, delta: float, min_importance: float) -> dict:
    """The monitor's diagnostics recomputed from a stored spectrum (same definitions)."""
    from keras_koopman import KoopmanModes, diagnose

    lam = np.asarray(analysis["eigenvalues"], float).reshape(-1, 2) @ np.array([1, 1j])
    amp = np.asarray(analysis["amplitudes"], float).reshape(-1, 2) @ np.array([1, 1j])
    k = lam.size
    modes = KoopmanModes(eigenvalues=lam, modes=np.zeros((1, k), complex),
                         residuals=np.asarray(analysis["residuals"], float), amplitudes=amp,
                         importance=np.asarray(analysis["importance"], float),
                         rank=int(analysis["rank"]), singular_values=np.zeros(k), t_end=k,
                         real_data=True, fit_error=math.nan)  # not used by diagnose
    d = diagnose(modes, delta=delta, min_importance=min_importance)
    return {"unit_cluster": d.unit_cluster, "growing": d.growing,
            "epochs_to_converge": d.epochs_to_converge, "spectral_radius": d.spectral_radius}


def load_runs(out: Path, cut: float) -> list[dict]:
    runs = []
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text())
        r["poor"] = r["history"]["val_accuracy"][-1] < cut
        runs.append(r)
    return runs


def precompute(runs, deltas, importances, epochs):
    """For each (delta, min_importance, observable): arrays (runs, epochs + 1) of the
    diagnostics at each analysis epoch (NaN where there was no analysis)."""
    table = {}
    for delta, mi in itertools.product(deltas, importances):
        for obs in ("weights", "loss"):
            arrays = {k: np.full((len(runs), epochs + 1), np.nan)
                      for k in ("unit_cluster", "growing", "epochs_to_converge", "spectral_radius")}
            for i, r in enumerate(runs):
                for a in r["analyses"]:
                    if a["observable"] == obs:
                        for k, v in diagnostics(a, delta, mi).items():
                            arrays[k][i, int(a["last_epoch"])] = v
            table[(delta, mi, obs)] = arrays
    return table


def rule_flags(table, loss_ratio, budget, p) -> np.ndarray:
    """A spectral poor-initialisation rule for every run: fires if at any analysis epoch
    ``first <= e <= last`` (1) unit_cluster >= stagnation and loss[e] >= high_loss * loss[1]
    (``PoorInitialization(rule="spectral")``), or (2) growing >= growth, or (3) (if
    ``too_slow``) epochs_to_converge > budget - e.  ``inf`` thresholds disable a clause
    (``PoorInitialization`` has clause 1 only)."""
    d = table[(p["delta"], p["min_importance"], p["primary"])]
    e = np.arange(d["unit_cluster"].shape[1])
    with np.errstate(invalid="ignore"):
        fire = (d["unit_cluster"] >= p["stagnation"]) & (loss_ratio >= p["high_loss"])
        fire |= d["growing"] >= p["growth"]
        if p["too_slow"]:
            fire |= d["epochs_to_converge"] > budget - e
    window = (e >= p["first"]) & (e <= p["last"])
    return fire[:, window].any(axis=1)


def loss_rule_flags(loss_ratio, ratio, first, last) -> np.ndarray:
    """``PoorInitialization(rule="loss")`` for every run: fires if at any epoch
    ``first <= e <= last`` the training loss is >= ``ratio`` x its first value."""
    window = loss_ratio[:, first:last + 1]
    with np.errstate(invalid="ignore"):
        return (window >= ratio).any(axis=1)


def poor_init_defaults() -> dict:
    """``PoorInitialization``'s defaults and the analysis options' ``delta`` and
    ``min_importance`` (read from the library, so that they cannot drift)."""
    import inspect

    from keras_koopman import DEFAULT_OPTIONS, PoorInitialization

    parameters = inspect.signature(PoorInitialization).parameters
    first, last = parameters["epochs"].default
    return dict(delta=DEFAULT_OPTIONS.delta, min_importance=DEFAULT_OPTIONS.min_importance,
                first=int(first), last=int(last),
                stagnation=parameters["stagnation_threshold"].default,
                high_loss=parameters["high_loss_fraction"].default,
                loss_ratio=parameters["loss_ratio"].default)


def fixed_point_defaults() -> dict:
    """``FixedPointStopping``'s defaults and the analysis options' ``delta`` and
    ``min_importance``."""
    import inspect

    from keras_koopman import DEFAULT_OPTIONS, FixedPointStopping

    parameters = inspect.signature(FixedPointStopping).parameters
    return dict(delta=DEFAULT_OPTIONS.delta, min_importance=DEFAULT_OPTIONS.min_importance,
                threshold=parameters["threshold"].default,
                patience=parameters["patience"].default,
                start_from_epoch=parameters["start_from_epoch"].default)


def fixed_point_stop(cluster: np.ndarray, epochs: int, threshold: float, patience: int,
                     start: int) -> int | None:
    """Epoch at which ``FixedPointStopping`` stops on a run whose primary observable was
    analysed after every epoch (``cluster[e]``, NaN where there was no analysis): the first
    epoch ``e > start`` (``start_from_epoch``, Keras semantics) ending ``patience``
    consecutive analyses with unit cluster >= ``threshold``."""
    streak = 0
    for e in range(1, epochs + 1):
        if np.isnan(cluster[e]):
            continue  # no analysis: the streak neither grows nor breaks
        streak = streak + 1 if cluster[e] >= threshold else 0
        if e > start and streak >= patience:
            return e
    return None


def baseline_fires(run, W, f) -> bool:
    loss = run["history"]["loss"]
    return loss[W - 1] >= f * loss[0]


def rates(flags, labels):
    flags, labels = np.asarray(flags, bool), np.asarray(labels, bool)
    fa = flags[~labels].mean() if (~labels).any() else math.nan
    miss = (~flags[labels]).mean() if labels.any() else math.nan
    return fa, miss


def analyze(args) -> None:
    out = Path(args.out)
    runs = load_runs(out, args.cut)
    labels = np.array([r["poor"] for r in runs])
    train = np.array([r["seed"] % 2 == 0 for r in runs])
    test = ~train
    print(f"runs: {len(runs)} ({labels.sum()} poor by outcome: val_accuracy < {args.cut} "
          f"after {runs[0]['epochs']} epochs)")
    print("\nfamily     runs  poor  val_acc (median [min, max])  loss ep1 -> last (median)")
    for fam in FAMILIES:
        rs = [r for r in runs if r["family"] == fam]
        if not rs:
            continue
        acc = np.array([r["history"]["val_accuracy"][-1] for r in rs])
        l0 = np.median([r["history"]["loss"][0] for r in rs])
        l1 = np.median([r["history"]["loss"][-1] for r in rs])
        print(f"{fam:9s} {len(rs):5d} {sum(r['poor'] for r in rs):5d}  "
              f"{np.median(acc):.3f} [{acc.min():.3f}, {acc.max():.3f}]        {l0:.3g} -> {l1:.3g}")

    defaults = poor_init_defaults()
    stopping = fixed_point_defaults()
    deltas = tuple(sorted({0.01, 0.02, 0.05, defaults["delta"], stopping["delta"]}))
    importances = tuple(sorted({0.01, 0.05, 0.1, defaults["min_importance"],
                                stopping["min_importance"]}))
    budget = runs[0]["epochs"]
    table = precompute(runs, deltas, importances, budget)
    loss = np.array([r["history"]["loss"] for r in runs])
    loss_ratio = np.hstack([np.full((len(runs), 1), np.nan), loss / loss[:, :1]])  # column e: epoch e

    # grid over the rule's thresholds, chosen on the even seeds
    grid = []
    windows = [(a, b) for a in (2, 3, 5) for b in (3, 5, 8, 10) if a <= b]
    for delta, mi, primary, (first, last), stag, high, growth, too_slow in itertools.product(
            deltas, importances, ("weights", "loss"), windows, (0.5, 0.7, 0.8, 0.9, 0.95, math.inf),
            (0.0, 0.5, 0.7, 0.8, 0.9, 0.95), (0.05, 0.1, 0.2, 0.3, 0.5, math.inf), (True, False)):
        p = dict(delta=delta, min_importance=mi, primary=primary, first=first, last=last,
                 stagnation=stag, high_loss=high, growth=growth, too_slow=too_slow)
        grid.append((p, rule_flags(table, loss_ratio, budget, p)))

    def pick(candidates, mask):
        best = None
        for p, flags in candidates:
            fa, miss = rates(flags[mask], labels[mask])
            score = fa + miss
            if best is None or score < best[0] - 1e-12:
                best = (score, p, flags)
        return best

    def report(name, p, flags):
        fa_tr, miss_tr = rates(flags[train], labels[train])
        fa_te, miss_te = rates(flags[test], labels[test])
        print(f"{name:44s} {fa_tr:6.2f} {miss_tr:6.2f}   {fa_te:6.2f} {miss_te:6.2f}   {p}")

    print("\nrule / baseline (thresholds chosen on even seeds)  train FA  miss   test FA  miss   parameters")
    last = min(defaults["last"], budget)
    spectral = dict(delta=defaults["delta"], min_importance=defaults["min_importance"],
                    primary="weights", first=defaults["first"], last=last,
                    stagnation=defaults["stagnation"], high_loss=defaults["high_loss"],
                    growth=math.inf, too_slow=False)
    spectral_flags = rule_flags(table, loss_ratio, budget, spectral)
    report("PoorInitialization defaults, rule=spectral", spectral, spectral_flags)
    loss_rule = dict(loss_ratio=defaults["loss_ratio"], first=defaults["first"], last=last)
    loss_flags = loss_rule_flags(loss_ratio, defaults["loss_ratio"], defaults["first"], last)
    report("PoorInitialization defaults, rule=loss", loss_rule, loss_flags)
    report("PoorInitialization defaults, rule=either", dict(spectral, **loss_rule),
           spectral_flags | loss_flags)
    for primary in ("weights", "loss"):
        cands = [(p, f) for p, f in grid if p["primary"] == primary]
        _, p, flags = pick(cands, train)
        report(f"best rule, primary={primary}", p, flags)
        for clause, keep in (("stagnation only", lambda q: q["growth"] == math.inf and not q["too_slow"]),
                             ("growth only", lambda q: q["stagnation"] == math.inf and not q["too_slow"]),
                             ("too-slow only", lambda q: q["stagnation"] == math.inf and q["growth"] == math.inf)):
            sub = [(q, f) for q, f in cands if keep(q)]
            _, q, f = pick(sub, train)
            report(f"  {clause}, primary={primary}", q, f)
    base = []
    for W in range(2, min(10, budget) + 1):
        for f in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99):
            base.append((dict(W=W, f=f), np.array([baseline_fires(r, W, f) for r in runs])))
    _, p, flags = pick(base, train)
    report("baseline loss[W] >= f*loss[1]", p, flags)
    for W in (w for w in (3, 5) if w <= budget):
        _, p, flags = pick([(q, f) for q, f in base if q["W"] == W], train)
        report(f"  baseline at W={W}", p, flags)

    # per-family detection by the best rules
    print("\nflag rate per family on all seeds (best rule weights / best rule loss / baseline)")
    bw = pick([(p, f) for p, f in grid if p["primary"] == "weights"], train)[2]
    bl = pick([(p, f) for p, f in grid if p["primary"] == "loss"], train)[2]
    bb = pick(base, train)[2]
    for fam in FAMILIES:
        idx = np.array([r["family"] == fam for r in runs])
        if idx.any():
            print(f"{fam:9s} poor {labels[idx].mean():.2f}   flagged {bw[idx].mean():.2f} / "
                  f"{bl[idx].mean():.2f} / {bb[idx].mean():.2f}")

    # early-epoch diagnostics per outcome (what the thresholds act on)
    print("\nmedian diagnostics at epoch 5 (delta 0.02, min_importance 0.05): healthy | poor")
    for obs in ("weights", "loss"):
        for key in ("unit_cluster", "growing", "epochs_to_converge", "spectral_radius"):
            vals = table[(0.02, 0.05, obs)][key][:, 5]
            print(f"  {obs:8s} {key:20s} {np.nanmedian(vals[~labels]):10.3g} | "
                  f"{np.nanmedian(vals[labels]):10.3g}")
    ratio5 = np.array([r["history"]["loss"][4] / r["history"]["loss"][0] for r in runs])
    print(f"  loss[5]/loss[1]               {np.median(ratio5[~labels]):10.3g} | "
          f"{np.median(ratio5[labels]):10.3g}")

    fixed_point(runs, labels, table, stopping)


def fixed_point(runs, labels, table, stopping) -> None:
    """FixedPointStopping vs min val_loss and EarlyStopping(patience 5/10) on healthy runs."""
    print(f"\nFixedPointStopping on healthy runs (analysis every epoch): its defaults "
          f"(delta {stopping['delta']}, min_importance {stopping['min_importance']}), then "
          f"patience 1 with delta 0.02, min_importance 0.05")
    print(f"{'criterion':64s} stops (of n)  median stop  median |stop - argmin val_loss|  median val_loss excess")
    healthy = [i for i in range(len(runs)) if not labels[i]]
    rows = []
    for obs in ("weights", "loss"):
        cluster = table[(stopping["delta"], stopping["min_importance"], obs)]["unit_cluster"]
        stops = [fixed_point_stop(cluster[i], runs[i]["epochs"], stopping["threshold"],
                                  stopping["patience"], stopping["start_from_epoch"])
                 for i in healthy]
        rows.append((f"defaults, primary={obs} (thr {stopping['threshold']}, patience "
                     f"{stopping['patience']}, from epoch {stopping['start_from_epoch']})", stops))
    for obs, thr, warm in itertools.product(("weights", "loss"), (0.5, 0.7, 0.9), (5, 10)):
        cluster = table[(0.02, 0.05, obs)]["unit_cluster"]
        stops = []
        for i in healthy:
            hits = [e for e in range(warm, runs[i]["epochs"] + 1) if cluster[i, e] >= thr]
            stops.append(hits[0] if hits else None)
        rows.append((f"fixed point {obs} thr {thr} from epoch {warm}", stops))
    for patience in (5, 10):
        stops = []
        for i in healthy:
            v = runs[i]["history"]["val_loss"]
            best, wait, e_stop = math.inf, 0, None
            for e, value in enumerate(v, start=1):
                if value < best:
                    best, wait = value, 0
                else:
                    wait += 1
                    if wait >= patience:
                        e_stop = e
                        break
            stops.append(e_stop)
        rows.append((f"EarlyStopping patience {patience}", stops))
    for name, stops in rows:
        n = sum(s is not None for s in stops)
        dist, excess, when = [], [], []
        for i, s in zip(healthy, stops):
            v = np.asarray(runs[i]["history"]["val_loss"])
            s = runs[i]["epochs"] if s is None else s
            when.append(s)
            dist.append(abs(s - (int(np.argmin(v)) + 1)))
            excess.append(v[s - 1] / v.min() - 1)
        print(f"{name:64s} {n:3d}/{len(stops):<3d}  {np.median(when):11.1f}  {np.median(dist):31.1f}  "
              f"{np.median(excess):22.3f}")
    best = [int(np.argmin(runs[i]["history"]["val_loss"])) + 1 for i in healthy]
    print(f"epoch of minimal val_loss: median {np.median(best):.1f}, range {min(best)}–{max(best)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("run", "analyze"))
    parser.add_argument("--out", default="/tmp/poor_init")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--cut", type=float, default=0.80)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    run(args) if args.command == "run" else analyze(args)


if __name__ == "__main__":
    main(sys.argv[1:])
