"""Reproduce the paper's MNIST experiment (Figure 2) and measure its claims.

Mohr et al. train a small CNN on MNIST for 500 epochs with Xavier, He and random-normal
initialisations and show Koopman spectra of the training cross-entropy (first 40/100/500 values,
delay-embedded) and of the weights (first 50/100/500 snapshots). They claim that (1) the
eigenvalues start clustered near 0, (2) the important ones move to 1 as training nears a fixed
point, (3) He and Xavier over-memorise (the test cross-entropy rises), and that the clustering at
1 can serve to terminate training. This script runs the protocol and prints the numbers behind
each claim, including where a spectral stop (``FixedPointStopping`` after a ``KoopmanMonitor``
analysing every epoch, ``patience`` 1, 2 and 3) would end training, against the epoch of
minimal test cross-entropy and against ``keras.callbacks.EarlyStopping(monitor="val_loss")``
with patience 5 and 10, all computed offline from the same runs.

Commands::

    # the full protocol (3 initialisations x 500 epochs on all 60,000 images; 22 s/epoch on an
    # idle 2-core machine, so about 3 h per initialisation; rerun the same command after an
    # interruption: it continues each run from its last finished epoch), then the analysis
    python scripts/reproduce_mnist.py train --epochs 500 --out runs/mnist_full

    # shortened: 40 epochs on 10,000 images
    python scripts/reproduce_mnist.py train --epochs 40 --subset 10000 --out runs/mnist_short

    # analysis only, of run folders written by `keras-koopman mnist` or of records (below);
    # a run still training is analysed over the epochs it has finished
    python scripts/reproduce_mnist.py analyse runs/mnist_short/he runs/mnist_short/xavier ...

    # the full-set runs at the paper's own windows (40/100/500 loss values, 50/100/500 weight
    # snapshots, those that fit plus all), figures docs/figures/mnist_full_<init>.png
    python scripts/reproduce_mnist.py analyse runs/mnist_full/{xavier,he,normal} \
        --counts paper --prefix mnist_full --json runs/mnist_full/results.json

    # TensorFlow-free recording with any Keras backend (e.g. JAX on a GPU machine): trains the
    # same network on the raw MNIST files and saves the weight trajectory compressed to its QR
    # factor R (exact for every analysis: X = QR has the spectra of R) with the loss history
    KERAS_BACKEND=jax python scripts/reproduce_mnist.py record --init he --epochs 500 \\
        --raw-dir ../shared/data/mnist --out runs/gpu/he.npz

``train`` runs ``keras-koopman mnist`` once per initialisation (run folders ``OUT/<init>``; a
folder that already holds a run of at least ``--epochs`` epochs is reused, an interrupted or
shorter one is continued with ``--resume``, so the command can be rerun until it finishes) and
then ``analyse``. ``analyse`` writes the
report figure of each run to ``FIGDIR/PREFIX_<init>.png``, a termination figure to
``FIGDIR/PREFIX_termination.png`` (``--prefix``, default ``mnist``), and every number to
``--json`` (default ``OUT/results.json`` or ``runs/mnist_results.json``).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
INITS = ("xavier", "he", "normal")
PATIENCES = (5, 10)  # of EarlyStopping
STOP_PATIENCES = (1, 2, 3)  # of the spectral stop (FixedPointStopping's patience)
#: |λ| below this counts as "near 0" in the first claim's measure.
NEAR_ZERO = 0.5


# ------------------------------------------------------------------------------- recording
def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: magic, dimensions, then unsigned bytes)."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    n_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(n_dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def _raw_split(raw_dir: Path, prefix: str, subset: int | None):
    images = _read_idx(raw_dir / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(raw_dir / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    if subset is not None:
        images, labels = images[:subset], labels[:subset]
    return (images[..., None].astype(np.float32) / np.float32(255.0)), labels


def _paper_cnn_module():
    """``keras_koopman/models.py`` loaded by path: it needs only Keras and numpy, whereas
    importing the package imports TensorFlow."""
    spec = importlib.util.spec_from_file_location("_paper_models",
                                                  ROOT / "keras_koopman" / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cmd_record(args) -> int:
    import keras

    models = _paper_cnn_module()
    raw = Path(args.raw_dir)
    x_train, y_train = _raw_split(raw, "train", args.subset)
    x_test, y_test = _raw_split(raw, "t10k", None)
    keras.utils.set_random_seed(args.seed)
    model = models.paper_cnn(args.init, seed=args.seed, compile=False)
    # the compilation of paper_cnn, plus several steps per compiled call (same arithmetic)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=args.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  steps_per_execution=args.steps_per_execution)

    snapshots: list[np.ndarray] = []

    def observe() -> np.ndarray:
        # KoopmanMonitor's weight observable: trainable variables in order, then the constant 1
        parts = [keras.ops.convert_to_numpy(v).reshape(-1) for v in model.trainable_variables]
        return np.append(np.concatenate(parts), np.float32(1.0)).astype(np.float32)

    class Recorder(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()
            snapshots.append(observe())

        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(observe())
            elapsed = time.perf_counter() - self.start
            if args.time_limit and elapsed * (epoch + 2) / (epoch + 1) > args.time_limit:
                self.model.stop_training = True

    started = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                        validation_data=(x_test, y_test), validation_batch_size=1000,
                        callbacks=[Recorder()], verbose=args.verbose, shuffle=True)
    wall = time.perf_counter() - started
    weights = np.stack(snapshots, axis=1)  # (n, T), float32 as the monitor stores it
    factor = np.linalg.qr(weights.astype(np.float64), mode="r")
    config = {"init": args.init, "epochs": args.epochs, "subset": args.subset,
              "train_examples": int(len(y_train)), "test_examples": int(len(y_test)),
              "batch_size": args.batch_size, "seed": args.seed, "optimizer": "adam",
              "learning_rate": args.learning_rate, "backend": keras.backend.backend(),
              "keras_version": keras.__version__, "wall_seconds": wall,
              "epochs_run": len(history.history["loss"]),
              "steps_per_execution": args.steps_per_execution}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, R=factor, n_features=weights.shape[0],
                        weight_epochs=np.arange(weights.shape[1], dtype=float),
                        config=json.dumps(config),
                        **{f"history_{k}": np.asarray(v, dtype=float)
                           for k, v in history.history.items()})
    print(f"{out}: {config['epochs_run']} epochs in {wall:.0f} s")
    return 0


# ------------------------------------------------------------------------------- analysis
def load_run(path: Path) -> dict:
    """A run: a `keras-koopman mnist` folder or a `record` .npz, as one dictionary."""
    from keras_koopman.trajectory import TrainingTrajectory

    if path.suffix == ".npz":
        with np.load(path) as data:
            config = json.loads(str(data["config"]))
            history = {k[len("history_"):]: data[k] for k in data.files if k.startswith("history_")}
            factor, n_features = data["R"], int(data["n_features"])
            weight_epochs = data["weight_epochs"]
        scalars = {name: (np.arange(1, len(history[name]) + 1, dtype=float), history[name])
                   for name in ("loss", "val_loss")}
        trajectory = TrainingTrajectory(weights=factor, weight_epochs=weight_epochs,
                                        scalars=scalars)
        source = f"record {path.name} ({config['backend']} backend)"
    else:
        full = TrainingTrajectory.load(path / "trajectory")
        summary_file = path / "summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            config = dict(summary["config"], wall_seconds=summary["wall_seconds"],
                          epochs_run=summary["epochs_run"])
            history = {k: np.asarray(v, dtype=float) for k, v in summary["history"].items()}
            source = f"keras-koopman mnist run {path}"
        else:
            # A run still training (or interrupted): its settings, CSVLogger's history and the
            # trajectory so far, cut to the epochs present in both.
            from keras_koopman.cli import _read_history

            config = json.loads((path / "run.json").read_text())
            logged = _read_history(path / "history.csv")
            epochs = min(int(full.scalars["loss"][0].size), full.weights.shape[1] - 1,
                         len(logged["loss"]))
            history = {k: np.asarray(v[:epochs], dtype=float) for k, v in logged.items()}
            config.update(train_examples=config.get("subset") or 60_000,
                          test_examples=config.get("test_subset") or 10_000,
                          epochs_run=epochs, in_progress=True)
            full = TrainingTrajectory(
                weights=full.weights[:, :epochs + 1], weight_epochs=full.weight_epochs[:epochs + 1],
                scalars={k: (e[:epochs], v[:epochs]) for k, (e, v) in full.scalars.items()})
            source = f"keras-koopman mnist run {path} (in progress, first {epochs} epochs)"
        n_features = full.weights.shape[0]
        factor = np.linalg.qr(np.asarray(full.weights, dtype=np.float64), mode="r")
        trajectory = TrainingTrajectory(weights=factor, weight_epochs=full.weight_epochs,
                                        scalars=full.scalars)
    return {"path": str(path), "source": source, "config": config, "history": history,
            "trajectory": trajectory, "n_features": n_features}


def early_stopping_epoch(val_loss: np.ndarray, patience: int) -> int | None:
    """Epoch (1-based) at which ``keras.callbacks.EarlyStopping(monitor="val_loss",
    patience=patience)`` stops training: ``patience`` epochs without a strict improvement."""
    best, wait = np.inf, 0
    for epoch, value in enumerate(val_loss, start=1):
        wait += 1
        if value < best:
            best, wait = value, 0
        if wait >= patience and epoch > 1:
            return epoch
    return None


def stop_settings() -> dict:
    """The readings of the spectral stop rule (:class:`~keras_koopman.FixedPointStopping`):
    the product's default :class:`~keras_koopman.AnalysisOptions` (the pairs with importance
    >= ``min_importance`` refined), as every ``KoopmanMonitor`` uses unless told otherwise,
    and the same with plain Ritz pairs (``refine=False``)."""
    from keras_koopman import DEFAULT_OPTIONS

    return {"monitor": DEFAULT_OPTIONS, "plain": DEFAULT_OPTIONS.replace(refine=False)}


def stop_rule() -> dict:
    """``FixedPointStopping``'s default ``start_from_epoch`` and ``threshold``, read from its
    signature so that they cannot drift."""
    import inspect

    from keras_koopman import FixedPointStopping

    parameters = inspect.signature(FixedPointStopping).parameters
    return {"start_from_epoch": parameters["start_from_epoch"].default,
            "threshold": parameters["threshold"].default}


def fixed_point_stop_epoch(epochs: np.ndarray, cluster: np.ndarray, patience: int,
                           start_from_epoch: int, threshold: float) -> int | None:
    """Epoch at which ``FixedPointStopping(monitor, patience=patience,
    start_from_epoch=start_from_epoch, threshold=threshold)`` stops, with a
    ``KoopmanMonitor`` analysing after every epoch: the first epoch (completed epochs) past
    ``start_from_epoch`` (Keras ``EarlyStopping`` semantics) that ends ``patience``
    consecutive analyses with unit cluster >= ``threshold``."""
    streak = 0
    for epoch, value in zip(epochs, cluster):
        streak = streak + 1 if np.isfinite(value) and value >= threshold else 0
        if epoch > start_from_epoch and streak >= patience:
            return int(epoch)
    return None


def spectral_stop_curve(run: dict, observable: str,
                        options) -> tuple[np.ndarray, np.ndarray]:
    """Unit cluster of ``observable`` analysed after each epoch over all snapshots so far
    (what ``KoopmanMonitor(analyze_every=1, options=options)`` logs as
    ``koopman_unit_cluster``; ``options`` an ``AnalysisOptions``).
    Cost: one ``O(k³)`` analysis per epoch ``k``, plus ``O(k³)`` per refined pair."""
    from keras_koopman.analysis import analyze_series, analyze_weights

    trajectory = run["trajectory"]
    epochs, cluster = [], []
    if observable == "weights":
        factor = trajectory.weights
        for count in range(4, factor.shape[1] + 1):
            analysis = analyze_weights(factor[:count, :count], trajectory.weight_epochs[:count],
                                       n_features=run["n_features"], keep_modes=False,
                                       options=options)
            epochs.append(trajectory.weight_epochs[count - 1])
            cluster.append(analysis.diagnostics.unit_cluster)
    else:
        loss_epochs, values = trajectory.scalars[observable]
        for count in range(6, values.size + 1):
            analysis = analyze_series(values[:count], loss_epochs[:count], observable=observable,
                                      keep_modes=False, options=options)
            epochs.append(loss_epochs[count - 1])
            cluster.append(analysis.diagnostics.unit_cluster)
    return np.asarray(epochs), np.asarray(cluster)


def _near_zero_share(analysis) -> float:
    """Importance-weighted share of the important eigenvalues (importance >= 5 %) with
    ``|λ| <= NEAR_ZERO``."""
    keep = analysis.importance >= 0.05
    weight = analysis.importance[keep]
    near = np.abs(analysis.eigenvalues[keep]) <= NEAR_ZERO
    return float(weight[near].sum() / weight.sum()) if weight.sum() else 0.0


def weight_steps(trajectory) -> dict:
    """The plain baseline for a fixed-point verdict: how far the weights move per epoch,
    ``‖w_t − w_{t−1}‖`` and ``‖w_t‖`` (from the QR factor ``R``: ``Q`` keeps norms; the constant
    1 of the observable cancels in the steps and adds 1 to ``‖w_t‖²``)."""
    factor = np.asarray(trajectory.weights, dtype=np.float64)
    steps = np.linalg.norm(np.diff(factor, axis=1), axis=0)
    norms = np.sqrt(np.maximum(np.linalg.norm(factor, axis=0) ** 2 - 1.0, 0.0))
    return {"epochs": trajectory.weight_epochs[1:].tolist(), "step": steps.tolist(),
            "norm": norms[1:].tolist()}


def _spectrum_summary(analysis) -> dict:
    order = np.argsort(-analysis.importance)[:5]
    return {"observable": analysis.observable, "first_epoch": analysis.first_epoch,
            "last_epoch": analysis.last_epoch, "n_snapshots": analysis.n_snapshots,
            "rank": analysis.rank, "near_zero_share": _near_zero_share(analysis),
            "median_residual": float(np.median(analysis.residuals)),
            **{k: float(v) for k, v in analysis.diagnostics.as_logs("").items()},
            "leading": [[float(analysis.eigenvalues[j].real), float(analysis.eigenvalues[j].imag),
                         float(analysis.importance[j]), float(analysis.residuals[j])]
                        for j in order]}


def paper_counts(paper: tuple[int, ...], available: int) -> list[int]:
    """The paper's snapshot counts that fit in ``available`` snapshots, then all of them if
    the run is shorter than the paper's longest window."""
    counts = [k for k in paper if k <= available]
    return counts if available >= paper[-1] else counts + [available]


def analyse_run(run: dict, figdir: Path | None, counts: str = "scaled",
                prefix: str = "mnist") -> dict:
    from keras_koopman import DEFAULT_OPTIONS
    from keras_koopman.cli import (
        PAPER_LOSS_SNAPSHOTS,
        PAPER_WEIGHT_SNAPSHOTS,
        draw_report,
        report_analyses,
    )

    trajectory, history, config = run["trajectory"], run["history"], run["config"]
    windows = {}
    if counts == "paper":
        windows = {"loss_counts": paper_counts(PAPER_LOSS_SNAPSHOTS,
                                               trajectory.scalars["loss"][1].size),
                   "weight_counts": paper_counts(PAPER_WEIGHT_SNAPSHOTS,
                                                 trajectory.weights.shape[1])}
    # the paper's DMD_RRR (every Ritz pair refined) for the figure and the claims; plain Ritz
    # pairs beside it; thresholds (delta, min_importance) the product's defaults
    analyses, counts = report_analyses(trajectory, n_features=run["n_features"],
                                       options=DEFAULT_OPTIONS.replace(refine=True), **windows)
    plain, _ = report_analyses(trajectory, n_features=run["n_features"],
                               options=DEFAULT_OPTIONS.replace(refine=False), **windows)
    val = history["val_loss"]
    best = int(np.argmin(val)) + 1
    result = {
        "source": run["source"], "config": config, "snapshot_counts": counts,
        "epochs_run": int(val.size),
        "test_ce": {"min": float(val.min()), "min_epoch": best, "final": float(val[-1]),
                    "first": float(val[0]),
                    "rise_after_min": float(val[-1] / val.min())},
        "train_ce": {"first": float(history["loss"][0]), "final": float(history["loss"][-1]),
                     "min": float(history["loss"].min())},
        "test_accuracy": {"final": float(history["val_accuracy"][-1]),
                          "at_min_ce": float(history["val_accuracy"][best - 1]),
                          "max": float(history["val_accuracy"].max())},
        "weight_steps": weight_steps(trajectory),
        "spectra": [_spectrum_summary(a) for a in analyses],
        "spectra_plain_ritz": [_spectrum_summary(a) for a in plain],
    }
    stops, rule = {}, stop_rule()
    for reading, options in stop_settings().items():
        for observable in ("weights", "loss"):
            epochs, cluster = spectral_stop_curve(run, observable, options)
            name = f"{observable}_{reading}"
            for patience in STOP_PATIENCES:
                suffix = "" if patience == 1 else f"_p{patience}"
                stops[f"spectral_{name}{suffix}"] = fixed_point_stop_epoch(
                    epochs, cluster, patience, **rule)
            result[f"unit_cluster_{name}"] = {"epochs": epochs.tolist(),
                                              "values": cluster.tolist()}
    for patience in PATIENCES:
        stops[f"early_stopping_{patience}"] = early_stopping_epoch(val, patience)
    stops["min_test_ce"] = best
    stops["max_test_accuracy"] = int(np.argmax(history["val_accuracy"])) + 1
    result["stops"] = {
        name: None if epoch is None else {
            "epoch": epoch, "test_ce": float(val[epoch - 1]),
            "test_accuracy": float(history["val_accuracy"][epoch - 1]),
            "excess_test_ce": float(val[epoch - 1] - val.min())}
        for name, epoch in stops.items()}
    if figdir is not None:
        title = (f"MNIST, {config['init']} initialisation: {val.size} epochs on "
                 f"{config['train_examples']:,} images")
        draw_report(trajectory, analyses, figdir / f"{prefix}_{config['init']}.png", title)
    return result


STOP_RULES = {  # name -> (marker, label) in the termination figure and table
    "spectral_weights_monitor": ("v", "spectral stop, weights (refined), patience=1"),
    "spectral_weights_monitor_p2": ("X", "same, patience=2"),
    "spectral_weights_monitor_p3": ("h", "same, patience=3"),
    "spectral_weights_plain": ("<", "spectral stop, weights (plain Ritz pairs), 1"),
    "spectral_loss_monitor": ("^", "spectral stop, loss (refined), 1"),
    "spectral_loss_plain": (">", "spectral stop, loss (plain Ritz pairs), 1"),
    "early_stopping_5": ("s", "EarlyStopping, patience 5"),
    "early_stopping_10": ("D", "EarlyStopping, patience 10"),
    "min_test_ce": ("*", "minimal test cross-entropy"),
    "max_test_accuracy": ("P", "maximal test accuracy"),
}


def termination_figure(results: list[dict], path: Path) -> None:
    """Test cross-entropy with each rule's stop epoch (top) and the unit cluster the spectral
    rule reads, of the weights (middle) and of the training loss (bottom), per
    initialisation: the monitor's default (refined pairs) solid, plain Ritz pairs dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11.5, 8.4), layout="constrained")
    FigureCanvasAgg(figure)
    top, middle, bottom = figure.subplots(3, 1, sharex=True,
                                          gridspec_kw={"height_ratios": [1.3, 1, 1]})
    lows, highs = [], []
    for index, result in enumerate(results):
        colour = f"C{index}"
        init = result["config"]["init"]
        val = np.asarray(result["history_val_loss"])
        lows.append(val.min())
        highs.append(val[val.size // 4:].max())
        top.plot(np.arange(1, val.size + 1), val, color=colour, lw=1.4, label=init)
        for name, (marker, _) in STOP_RULES.items():
            stop = result["stops"].get(name)
            if stop is not None:
                top.plot(stop["epoch"], stop["test_ce"], marker=marker, color=colour, ms=10,
                         mec="black", ls="none", zorder=5)
        for axis, observable in ((middle, "weights"), (bottom, "loss")):
            for reading, style in (("monitor", "-"), ("plain", "--")):
                curve = result[f"unit_cluster_{observable}_{reading}"]
                axis.plot(curve["epochs"], curve["values"], color=colour, lw=1.2, ls=style,
                          label=f"{init}, {'refined' if reading == 'monitor' else 'plain Ritz'}")
    for name, (marker, label) in STOP_RULES.items():
        top.plot([], [], marker=marker, color="0.6", mec="black", ls="none", ms=9, label=label)
    top.set_ylim(0.95 * min(lows), 1.1 * max(highs))
    top.set_ylabel("test cross-entropy")
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    top.set_title("Where training would stop: spectral criterion vs EarlyStopping vs "
                  "minimal test cross-entropy", fontsize=11)
    rule = stop_rule()
    for axis, observable in ((middle, "weights"), (bottom, "training loss")):
        axis.axhline(rule["threshold"], color="0.4", ls=":", lw=0.9,
                     label=f"stop threshold {rule['threshold']}")
        axis.axvline(rule["start_from_epoch"], color="0.6", ls="-.", lw=0.8,
                     label=f"start_from_epoch {rule['start_from_epoch']}")
        axis.set_ylim(-0.03, 1.03)
        axis.set_ylabel(f"unit cluster\n({observable})")
        axis.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    for axis in (top, middle, bottom):
        axis.grid(True, color="0.92")
    bottom.set_xlabel("epoch (analysis over all snapshots so far)")
    figure.savefig(path, dpi=110)


def print_tables(results: list[dict]) -> None:
    print("\nTest cross-entropy (claim 3: He and Xavier over-memorise)")
    print(f"{'init':<8}{'epochs':>7}{'min':>9}{'at ep.':>8}{'final':>9}{'final/min':>11}"
          f"{'train final':>13}{'test acc.':>11}")
    for r in results:
        t = r["test_ce"]
        print(f"{r['config']['init']:<8}{r['epochs_run']:>7}{t['min']:>9.4f}{t['min_epoch']:>8}"
              f"{t['final']:>9.4f}{t['rise_after_min']:>11.2f}{r['train_ce']['final']:>13.2e}"
              f"{r['test_accuracy']['final']:>11.4f}")
    for key, reading in (("spectra", "refined DMD_RRR"), ("spectra_plain_ritz", "plain Ritz")):
        print(f"\nSpectra, {reading} (claims 1-2: near 0 early, important eigenvalues move to 1)")
        print(f"{'init':<8}{'observable':<10}{'epochs':>9}{'rank':>6}{'radius':>9}{'near 0':>8}"
              f"{'near 1':>8}{'imp.':>6}{'med.res':>9}  most important (λ, importance)")
        for r in results:
            for s in r[key]:
                lead = ", ".join(f"{complex(z[0], z[1]):.3f}".strip("()") + f" ({z[2]:.2f})"
                                 for z in s["leading"][:3])
                window = f"{s['first_epoch']:g}-{s['last_epoch']:g}"
                print(f"{r['config']['init']:<8}{s['observable']:<10}{window:>9}{s['rank']:>6}"
                      f"{s['spectral_radius']:>9.4f}{s['near_zero_share']:>8.3f}"
                      f"{s['unit_cluster']:>8.3f}{int(s['n_important']):>6}"
                      f"{s['median_residual']:>9.1e}  {lead}")
    print("\nWeight steps ‖w_t − w_(t−1)‖ (a fixed point needs them to shrink) and ‖w_t‖")
    for r in results:
        steps = r["weight_steps"]
        picks = [e for e in (1, 2, 5, 10, 20, 50, 100, 200, 500) if e <= len(steps["step"])]
        picks += [] if len(steps["step"]) in picks else [len(steps["step"])]
        print(f"{r['config']['init']:<8}" + "  ".join(
            f"{e}: {steps['step'][e - 1]:.2f} / {steps['norm'][e - 1]:.1f}" for e in picks))
    print("\nTermination (epoch; test cross-entropy and accuracy there; excess over the minimum)")
    print(f"{'init':<8}{'rule':<31}{'epoch':>7}{'test CE':>10}{'excess':>9}{'test acc.':>11}")
    for r in results:
        for name in STOP_RULES:
            stop = r["stops"][name]
            cells = ("never",) if stop is None else (
                f"{stop['epoch']:>7}{stop['test_ce']:>10.4f}{stop['excess_test_ce']:>+9.4f}"
                f"{stop['test_accuracy']:>11.4f}",)
            print(f"{r['config']['init']:<8}{name:<31}" + (f"{cells[0]:>7}"))


def cmd_analyse(args) -> int:
    figdir = None if args.no_figures else Path(args.figdir)
    if figdir is not None:
        figdir.mkdir(parents=True, exist_ok=True)
    results = []
    for path in args.runs:
        started = time.perf_counter()
        run = load_run(Path(path))
        result = analyse_run(run, figdir, counts=args.counts, prefix=args.prefix)
        result["history_val_loss"] = run["history"]["val_loss"].tolist()
        result["history_loss"] = run["history"]["loss"].tolist()
        results.append(result)
        print(f"analysed {path} ({time.perf_counter() - started:.0f} s)", flush=True)
    print_tables(results)
    if figdir is not None:
        termination_figure(results, figdir / f"{args.prefix}_termination.png")
    target = Path(args.json)
    target.parent.mkdir(parents=True, exist_ok=True)
    from keras_koopman._atomic import write_json_atomic

    write_json_atomic(target, results)
    print(f"\nresults: {target}" + ("" if figdir is None else f"; figures in {figdir}"))
    return 0


def cmd_train(args) -> int:
    from keras_koopman.cli import main as cli

    out = Path(args.out)
    runs = []
    for init in args.inits:
        run_dir = out / init
        summary = run_dir / "summary.json"
        done = json.loads(summary.read_text())["epochs_run"] if summary.is_file() else 0
        if done >= args.epochs:
            print(f"{run_dir}: finished run of {done} epochs found, reused")
        else:
            argv = ["mnist", "--init", init, "--epochs", str(args.epochs), "--out", str(run_dir),
                    "--batch-size", str(args.batch_size), "--seed", str(args.seed),
                    "--verbose", str(args.verbose)]
            # an interrupted or shorter run is continued from its last checkpoint
            argv.append("--resume" if (run_dir / "run.json").is_file() else "--overwrite")
            if args.subset:
                argv += ["--subset", str(args.subset)]
            if args.data_dir:
                argv += ["--data-dir", args.data_dir]
            print("keras-koopman", " ".join(argv), flush=True)
            status = cli(argv)
            if status:
                return status
        runs.append(str(run_dir))
    args.runs = runs
    if args.json is None:
        args.json = str(out / "results.json")
    return cmd_analyse(args)


def null_trajectories(n: int, epochs: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Synthetic weight trajectories ``(n + 1, epochs + 1)`` (the last row the constant 1, as
    in the monitor's observable) whose long-run behaviour is known."""
    steps = np.arange(epochs + 1)
    start = rng.standard_normal((n, 1))
    target = rng.standard_normal((n, 1))
    noise = 0.05 * rng.standard_normal((n, epochs + 1))
    walk = start + 0.05 * np.cumsum(rng.standard_normal((n, epochs + 1)), axis=1)
    converge = target + (start - target) * 0.9 ** steps
    cases = {"random walk (no fixed point)": walk,
             "converging, plus noise": converge + noise,
             "at a fixed point, plus noise": target + noise}
    return {name: np.vstack([x, np.ones((1, epochs + 1))]).astype(np.float32)
            for name, x in cases.items()}


def cmd_null(args) -> int:
    """The spectral stop rule on trajectories with a known answer: the unit cluster of all
    snapshots under three readings, then where ``FixedPointStopping`` with its defaults,
    after a monitor analysing every epoch, stops with each ``patience``."""
    from keras_koopman.analysis import analyze_weights
    from keras_koopman.trajectory import TrainingTrajectory

    settings, rule = stop_settings(), stop_rule()
    latest = min(50, args.epochs + 1)  # snapshots that KoopmanMonitor(window=50) analyses
    readings = [settings["plain"], settings["monitor"], settings["monitor"].replace(refine=True)]
    print(f"unit cluster of {args.epochs + 1} snapshots of {args.features:,} weights "
          f"(+ constant 1), mean over seeds {list(range(args.seeds))}; stop threshold "
          f"{rule['threshold']}")
    print(f"{'trajectory':<32}{'plain Ritz':>12}{f'monitor (refine={readings[1].refine_level})':>24}"
          f"{'all refined':>13}{f'monitor, last {latest}':>18}"
          f"{'median residual, plain / all refined':>40}")
    rows, stops = {}, {}
    for seed in range(args.seeds):
        cases = null_trajectories(args.features, args.epochs, np.random.default_rng(seed))
        for name, snapshots in cases.items():
            values, residuals = [], []
            for options in readings:
                analysis = analyze_weights(snapshots.astype(np.float64),
                                           np.arange(args.epochs + 1), keep_modes=False,
                                           options=options)
                values.append(analysis.diagnostics.unit_cluster)
                residuals.append(float(np.median(analysis.residuals)))
            windowed = analyze_weights(snapshots[:, -latest:].astype(np.float64),
                                       np.arange(args.epochs + 1)[-latest:],
                                       keep_modes=False, options=settings["monitor"])
            values.append(windowed.diagnostics.unit_cluster)
            rows.setdefault(name, []).append(values + [residuals[0], residuals[-1]])
            if args.stops:
                epochs = np.arange(args.epochs + 1, dtype=float)
                run = {"n_features": args.features, "trajectory": TrainingTrajectory(
                    weights=np.linalg.qr(snapshots.astype(np.float64), mode="r"),
                    weight_epochs=epochs, scalars={})}
                curve = spectral_stop_curve(run, "weights", settings["monitor"])
                stops.setdefault(name, []).append(
                    [fixed_point_stop_epoch(*curve, patience, **rule)
                     for patience in STOP_PATIENCES]
                    + [float(np.mean(curve[1][curve[0] >= rule["start_from_epoch"]] >= rule["threshold"]))])
    for name, values in rows.items():
        plain, monitor, refined, windowed, res_plain, res_refined = np.mean(values, axis=0)
        print(f"{name:<32}{plain:>12.2f}{monitor:>24.2f}{refined:>13.2f}{windowed:>18.2f}"
              f"{f'{res_plain:.1e} / {res_refined:.1e}':>40}")
    if not stops:
        return 0
    print(f"\nFixedPointStopping (defaults, start_from_epoch {rule['start_from_epoch']}), monitor "
          f"analysing after every epoch up to {args.epochs}: stop epoch per seed ('-' never), and "
          f"the share of analyses from start_from_epoch on at or above the threshold")
    print(f"{'trajectory':<32}" + "".join(f"{f'patience={k}':>20}" for k in STOP_PATIENCES)
          + f"{'share >= threshold':>20}")
    for name, per_seed in stops.items():
        cells = ["/".join("-" if s[j] is None else str(s[j]) for s in per_seed)
                 for j in range(len(STOP_PATIENCES))]
        share = np.mean([s[-1] for s in per_seed])
        print(f"{name:<32}" + "".join(f"{c:>20}" for c in cells) + f"{share:>20.2f}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def analysis_options(p):
        p.add_argument("--figdir", default=str(ROOT / "docs" / "figures"),
                       help="folder for PREFIX_<init>.png and PREFIX_termination.png")
        p.add_argument("--prefix", default="mnist", help="figure file names' start")
        p.add_argument("--no-figures", action="store_true")
        p.add_argument("--counts", choices=("scaled", "paper"), default="scaled",
                       help="spectra windows: the paper's snapshot counts (loss 40/100/500, "
                            "weights 50/100/500) scaled to the run length, or those of them "
                            "that fit plus all snapshots (default: scaled)")

    train = commands.add_parser("train", help="run `keras-koopman mnist` per initialisation, "
                                              "then analyse")
    train.add_argument("--epochs", type=int, default=500, help="epochs (the paper: 500)")
    train.add_argument("--subset", type=int, help="training images (default: all 60,000)")
    train.add_argument("--inits", nargs="+", choices=INITS, default=list(INITS))
    train.add_argument("--out", default="runs/mnist", help="folder of the run folders")
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data-dir", help="raw MNIST files (default as in keras-koopman mnist)")
    train.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    train.add_argument("--json", help="results file (default OUT/results.json)")
    analysis_options(train)
    train.set_defaults(handler=cmd_train)

    analyse = commands.add_parser("analyse", help="analyse finished runs or records")
    analyse.add_argument("runs", nargs="+", help="run folders or record .npz files")
    analyse.add_argument("--json", default="runs/mnist_results.json")
    analysis_options(analyse)
    analyse.set_defaults(handler=cmd_analyse)

    record = commands.add_parser("record", help="TensorFlow-free training and recording "
                                                "(any Keras backend)")
    record.add_argument("--init", required=True, choices=INITS)
    record.add_argument("--epochs", type=int, default=500)
    record.add_argument("--subset", type=int)
    record.add_argument("--raw-dir", required=True, help="folder of the four raw MNIST files")
    record.add_argument("--out", required=True, help=".npz file to write")
    record.add_argument("--batch-size", type=int, default=32)
    record.add_argument("--learning-rate", type=float, default=1e-3)
    record.add_argument("--seed", type=int, default=0)
    record.add_argument("--steps-per-execution", type=int, default=1,
                        help="training steps per compiled call (speed only)")
    record.add_argument("--time-limit", type=float,
                        help="stop after the last epoch that fits in this many seconds")
    record.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    record.set_defaults(handler=cmd_record)

    null = commands.add_parser("null", help="the spectral stop rule on synthetic trajectories "
                                            "with a known answer (no training)")
    null.add_argument("--features", type=int, default=5000, help="weights per snapshot")
    null.add_argument("--epochs", type=int, default=100)
    null.add_argument("--seeds", type=int, default=3)
    null.add_argument("--stops", action="store_true",
                      help="also run the stop rule after every epoch, patience 1, 2, 3")
    null.set_defaults(handler=cmd_null)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
