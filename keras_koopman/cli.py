"""The ``keras-koopman`` command-line tool.

Subcommands:

``keras-koopman mnist``
    Train the paper's CNN (:func:`~keras_koopman.paper_cnn`) on MNIST with a
    :class:`~keras_koopman.KoopmanMonitor` recording the weights, the training cross-entropy
    (``loss``) and the test cross-entropy (``val_loss``, the MNIST test split) every epoch, then
    write the paper's Figure-2 style report: the two cross-entropy curves and the Koopman spectra
    of the loss (Hankel DMD, paper Section 3) and of the weights (full-state observable) from the
    first ``K`` snapshots, with the paper's counts 40/100/500 (loss) and 50/100/500 (weights)
    scaled to the run length when it is shorter than the paper's 500 epochs.
``keras-koopman analyze``
    Re-run Koopman analyses on a saved trajectory (other windows, observables, tolerances)
    without retraining; prints a table and optionally writes JSON.
``keras-koopman plot``
    Redraw the report of a run directory or a trajectory from its saved analyses, or from
    analyses recomputed at given snapshot counts.
``keras-koopman sobolev``
    Run the noisy multi-scale signal study (:mod:`keras_koopman.sobolev_study`).

Run directory written by ``mnist --out DIR``:

- ``DIR/trajectory/`` — the monitor's trajectory (see :mod:`keras_koopman.trajectory`), written
  every epoch;
- ``DIR/run.json`` — the training settings, written before training (``--resume`` checks them);
- ``DIR/history.csv`` — the per-epoch metrics (``keras.callbacks.CSVLogger``);
- ``DIR/backup/`` — the weights and optimizer state after the last finished epoch
  (:class:`~keras_koopman.checkpoint.AtomicBackup`): ``--resume`` continues an interrupted or finished run
  from there, up to ``--epochs``;
- ``DIR/summary.json`` — the configuration, the per-epoch history, final and best metrics, the
  snapshot counts and every report analysis (:meth:`KoopmanAnalysis.to_dict`, diagnostics
  included);
- ``DIR/report.png`` — the report figure.

Bad arguments print one line ``keras-koopman <command>: error: ...`` on stderr and exit with
status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_koopman._atomic import write_json_atomic
from keras_koopman.analysis import KoopmanAnalysis, analyze_series, analyze_weights
from keras_koopman.koopman import AnalysisOptions
from keras_koopman.trajectory import TrainingTrajectory

__all__ = [
    "PAPER_EPOCHS",
    "PAPER_LOSS_SNAPSHOTS",
    "PAPER_WEIGHT_SNAPSHOTS",
    "ReportSource",
    "analyze_windows",
    "draw_report",
    "main",
    "report_analyses",
    "scaled_snapshot_counts",
]

PROG = "keras-koopman"
#: Length of the paper's MNIST runs (epochs).
PAPER_EPOCHS = 500
#: Snapshot counts of the paper's Figure 2: the loss observable (delay-embedded) ...
PAPER_LOSS_SNAPSHOTS = (40, 100, 500)
#: ... and the weights (full-state observable).
PAPER_WEIGHT_SNAPSHOTS = (50, 100, 500)
#: Fewest snapshots analysed: a Hankel analysis needs a few delays and columns, DMD three states.
MIN_SNAPSHOTS = {"loss": 6, "val_loss": 6, "weights": 4}
SUMMARY_FORMAT = "keras-koopman-mnist-run"
#: Names of the cross-entropy curves in the report (Figure 2's "train" and "test").
CURVE_LABELS = {"loss": "train cross-entropy", "val_loss": "test cross-entropy"}
OBSERVABLES = ("weights", "loss", "val_loss")


class UsageError(Exception):
    """A bad argument or input found after parsing; printed as one line, exit status 2."""


@dataclass(frozen=True)
class ReportSource:
    """What :func:`~keras_koopman.plot_training_report` draws: curves and analyses."""

    scalars: dict = field(default_factory=dict)
    analyses: tuple = ()


# ---------------------------------------------------------------------------- analyses
def scaled_snapshot_counts(paper_counts: Sequence[int], available: int, *,
                           minimum: int) -> tuple[int, ...]:
    """Snapshot counts for a run with ``available`` snapshots of one observable.

    The paper's counts refer to its 500-epoch runs. A run at least that long uses them as
    they are; a shorter one uses the same fractions of its own length (``40/500`` of the
    snapshots, ...), rounded, at least ``minimum`` and at most ``available``; duplicates are
    dropped.

    Returns
    -------
    tuple of int
        Increasing counts.
    """
    if available < minimum:
        return ()
    if available >= PAPER_EPOCHS:
        counts = [min(int(c), available) for c in paper_counts]
    else:
        counts = [round(int(c) * available / PAPER_EPOCHS) for c in paper_counts]
    return tuple(sorted({min(available, max(minimum, c)) for c in counts}))


def _windows(epochs: np.ndarray, counts, window, what: str) -> list[slice]:
    """Index slices of the analyses: the first ``K`` snapshots for each count, or an epoch range."""
    if window is not None:
        first, last = window
        inside = np.flatnonzero((epochs >= first) & (epochs <= last))
        if inside.size == 0:
            raise UsageError(f"--window: no {what} snapshot lies in epochs [{first:g}, {last:g}] "
                             f"(recorded: {epochs[0]:g} to {epochs[-1]:g})" if epochs.size
                             else f"--window: no {what} snapshots recorded")
        return [slice(int(inside[0]), int(inside[-1]) + 1)]
    slices = []
    for count in counts:
        if count > epochs.size:
            raise UsageError(f"--snapshots: {count} exceeds the {epochs.size} recorded {what} "
                             "snapshots")
        slices.append(slice(0, int(count)))
    return slices


def analyze_windows(trajectory: TrainingTrajectory, observable: str, *,
                    counts: Sequence[int] = (), window: tuple[float, float] | None = None,
                    options: AnalysisOptions | None = None,
                    n_features: int | None = None) -> list[KoopmanAnalysis]:
    """Koopman analyses of one observable of a saved trajectory.

    Parameters
    ----------
    trajectory : TrainingTrajectory
        The record (``KoopmanMonitor.load``).
    observable : str
        ``"weights"`` or a recorded scalar (``"loss"``, ``"val_loss"``).
    counts : sequence of int
        Analyse the first ``K`` snapshots for each ``K`` (the paper's Figure 2 windows).
    window : (float, float), optional
        Instead, analyse the snapshots with ``first <= epoch <= last``.
    options : AnalysisOptions, optional
        The analysis settings (default: the product's one default, as in the monitor).
    n_features : int, optional
        Length of the original weight snapshots when ``trajectory.weights`` already holds a
        compressed trajectory (a QR factor ``R``); sets the default tolerance. Default: the
        number of rows of ``trajectory.weights``.

    Returns
    -------
    list of KoopmanAnalysis
        One per window, without modes.

    Notes
    -----
    The weights are reduced once to the triangular factor ``R`` of a QR decomposition of
    their first snapshots (``X = Q R``); the analysis of snapshots ``a..b-1`` is DMD_RRR of
    ``R[:b, a:b]``, which has the spectrum, residuals and amplitudes of ``X[:, a:b]`` because
    ``Q`` has orthonormal columns (the monitor's compression). Cost ``O(n T²)`` once, then
    ``O(T³)`` per window, ``T`` the largest window end.
    """
    options = AnalysisOptions.coerce(options)
    if observable == "weights":
        epochs = np.asarray(trajectory.weight_epochs, dtype=float)
        slices = _windows(epochs, counts, window, "weight")
        if options.delays is not None:
            raise UsageError("--delays: applies to scalar observables (loss, val_loss), "
                             "not to the weights")
        stop = max(s.stop for s in slices)
        if stop - min(s.start for s in slices) < 3:
            raise UsageError("--window: the weights need at least 3 snapshots")
        snapshots = np.asarray(trajectory.weights[:, :stop], dtype=np.float64)
        factor = np.linalg.qr(snapshots, mode="r")
        n_features = snapshots.shape[0] if n_features is None else int(n_features)
        return [analyze_weights(factor[:s.stop, s], epochs[s], n_features=n_features,
                                options=options, keep_modes=False) for s in slices]
    if observable not in trajectory.scalars:
        recorded = ["weights"] if trajectory.weights.shape[1] else []
        recorded += list(trajectory.scalars)
        raise UsageError(f"--observable: {observable!r} was not recorded in this trajectory "
                         f"(recorded: {', '.join(recorded) or 'nothing'})")
    epochs, values = (np.asarray(a, dtype=float) for a in trajectory.scalars[observable])
    results = []
    for s in _windows(epochs, counts, window, observable):
        try:
            results.append(analyze_series(values[s], epochs[s], observable=observable,
                                          options=options, keep_modes=False))
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    return results


def default_counts(trajectory: TrainingTrajectory, observable: str) -> tuple[int, ...]:
    """The paper's Figure-2 snapshot counts for ``observable``, scaled to the run."""
    if observable == "weights":
        available, paper = trajectory.weights.shape[1], PAPER_WEIGHT_SNAPSHOTS
    else:
        available = trajectory.scalars.get(observable, (np.empty(0),))[0].size
        paper = PAPER_LOSS_SNAPSHOTS
    return scaled_snapshot_counts(paper, available, minimum=MIN_SNAPSHOTS.get(observable, 6))


def report_analyses(trajectory: TrainingTrajectory, *, loss_counts=None, weight_counts=None,
                    options: AnalysisOptions | None = None,
                    n_features: int | None = None) -> tuple[list[KoopmanAnalysis], dict]:
    """The report's analyses (the loss row and the weights row of Figure 2) and their counts.

    ``loss_counts``/``weight_counts`` default to the paper's, scaled to the run
    (:func:`scaled_snapshot_counts`); ``options`` and ``n_features`` are as in
    :func:`analyze_windows`.
    """
    loss_counts = default_counts(trajectory, "loss") if loss_counts is None else loss_counts
    if weight_counts is None:
        weight_counts = default_counts(trajectory, "weights")
    analyses = []
    if loss_counts:
        analyses += analyze_windows(trajectory, "loss", counts=loss_counts, options=options)
    if weight_counts:
        analyses += analyze_windows(trajectory, "weights", counts=weight_counts,
                                    options=options, n_features=n_features)
    return analyses, {"loss": list(map(int, loss_counts)), "weights": list(map(int, weight_counts))}


def _report_source(trajectory: TrainingTrajectory, analyses) -> ReportSource:
    scalars = {CURVE_LABELS.get(name, name): series
               for name, series in trajectory.scalars.items()}
    return ReportSource(scalars=scalars, analyses=tuple(analyses))


def draw_report(trajectory: TrainingTrajectory, analyses: Sequence[KoopmanAnalysis], path,
                title: str, max_columns: int = 3) -> None:
    """Draw the Figure-2 report: the trajectory's cross-entropy curves (train and test) on
    top, then a row of spectra per analysed observable (loss first, weights last)."""
    from keras_koopman.plotting import plot_training_report

    rows = [name for name in ("loss", "val_loss", "weights")
            if any(a.observable == name for a in analyses)]
    rows += [a.observable for a in analyses if a.observable not in rows]
    with _naming(path):
        plot_training_report(_report_source(trajectory, analyses), path,
                             observables=list(dict.fromkeys(rows)), max_columns=max_columns,
                             title=title)


# ---------------------------------------------------------------------------- outputs
@contextlib.contextmanager
def _naming(path):
    """Report an ``OSError`` of an atomic write as one of ``path``, the file the user named,
    not of the temporary file written beside it."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def _write_json(path: Path, payload) -> None:
    with _naming(path):
        write_json_atomic(path, payload)


# ---------------------------------------------------------------------------- inputs
def _open_trajectory(path: str) -> tuple[TrainingTrajectory, Path | None]:
    """A trajectory directory, or a run directory holding ``trajectory/``; and the run dir."""
    given = Path(path)
    if not given.exists():
        raise UsageError(f"{path}: no such file or folder")
    run_dir = None
    folder = given
    nested = given / "trajectory" / "trajectory.json"
    if not (given / "trajectory.json").is_file() and nested.is_file():
        run_dir, folder = given, given / "trajectory"
    try:
        trajectory = TrainingTrajectory.load(folder)
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: not a keras-koopman trajectory or run folder (no "
                         "trajectory.json)") from exc
    except (ValueError, KeyError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: unreadable trajectory ({exc})") from exc
    return trajectory, run_dir


def _read_summary(run_dir: Path) -> dict:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{run_dir}: cannot read summary.json ({exc})") from exc
    if summary.get("format") != SUMMARY_FORMAT:
        raise UsageError(f"{run_dir / 'summary.json'}: not a {SUMMARY_FORMAT} summary")
    return summary


def _to_jsonable(value):
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------------- commands
def _add_analysis_options(parser) -> None:
    parser.add_argument("--tol", type=_positive_float, metavar="T",
                        help="DMD_RRR truncation tolerance in (0, 1) (default: float32 rounding "
                             "level)")
    parser.add_argument("--no-refine", dest="refine", action="store_false",
                        help="plain Ritz pairs instead of refining the important ones (the "
                             "default, as in KoopmanMonitor; refinement costs O(k^3) per pair)")


def _options(args) -> AnalysisOptions:
    """The AnalysisOptions of the command line (the library's defaults unless a flag says)."""
    options = AnalysisOptions(refine=None if args.refine else False)
    for flag, name in (("--tol", "tol"), ("--delays", "delays")):
        value = getattr(args, name, None)
        if value is not None:
            try:
                options = options.replace(**{name: value})
            except (TypeError, ValueError) as exc:
                raise UsageError(f"{flag}: {exc}") from exc
    return options


def _cmd_mnist(args) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder")
    settings = {"dataset": "fashion_mnist" if args.fashion else "mnist", "init": args.init,
                "subset": args.subset, "test_subset": args.test_subset,
                "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                "seed": args.seed}
    holds_run = any((out / name).exists() for name in ("trajectory", "summary.json", "backup"))
    if args.resume:
        if not (out / "run.json").is_file():
            raise UsageError(f"--resume: {out} holds no run to continue (no run.json)")
        before = json.loads((out / "run.json").read_text())
        changed = sorted(k for k in settings if before.get(k) != settings[k])
        if changed:
            raise UsageError(f"--resume: {out} was trained with other settings: " + ", ".join(
                f"--{k.replace('_', '-')} {before.get(k)} (now {settings[k]})" for k in changed))
    elif holds_run and not args.overwrite:
        raise UsageError(f"--out: {out} already holds a run (pass --overwrite to replace it, "
                         "or --resume to continue it)")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir: {args.data_dir} is not a folder")
    options = _options(args)
    epochs = args.epochs
    for flag, counts, key in (("--loss-snapshots", args.loss_snapshots, "loss"),
                              ("--weight-snapshots", args.weight_snapshots, "weights")):
        if counts and min(counts) < MIN_SNAPSHOTS[key]:
            raise UsageError(f"{flag}: an analysis needs at least {MIN_SNAPSHOTS[key]} "
                             f"snapshots; got {min(counts)}")
    if args.resume:
        done_before = _epochs_recorded(out / "trajectory")
        if done_before > epochs:
            raise UsageError(f"--epochs: the run in {out} has already trained {done_before} "
                             f"epochs; pass --epochs {done_before} or more to resume it")

    import keras

    from keras_koopman.datasets import load_fashion_mnist, load_mnist
    from keras_koopman.models import paper_cnn
    from keras_koopman.checkpoint import AtomicBackup
    from keras_koopman.monitor import KoopmanMonitor

    loader = load_fashion_mnist if args.fashion else load_mnist
    dataset = "fashion_mnist" if args.fashion else "mnist"
    try:
        train = loader("train", subset=args.subset, batch_size=args.batch_size,
                       shuffle_seed=args.seed, manual_dir=args.data_dir)
        x_test, y_test = loader("test", as_numpy=True, subset=args.test_subset,
                                manual_dir=args.data_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    n_train = args.subset or 60_000

    loss_counts = args.loss_snapshots or scaled_snapshot_counts(
        PAPER_LOSS_SNAPSHOTS, epochs, minimum=MIN_SNAPSHOTS["loss"])
    weight_counts = args.weight_snapshots or scaled_snapshot_counts(
        PAPER_WEIGHT_SNAPSHOTS, epochs + 1, minimum=MIN_SNAPSHOTS["weights"])
    if max(loss_counts, default=0) > epochs or max(weight_counts, default=0) > epochs + 1:
        raise UsageError(f"--loss-snapshots/--weight-snapshots: a run of {epochs} epochs has "
                         f"{epochs} loss and {epochs + 1} weight snapshots")

    if holds_run and not args.resume:  # --overwrite, now that every argument was checked
        import shutil

        for name in ("trajectory", "backup"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("summary.json", "history.csv", "run.json", "report.png"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        _write_json(out / "run.json", settings)
    keras.utils.set_random_seed(args.seed)
    model = paper_cnn(args.init, seed=args.seed, learning_rate=args.learning_rate)
    # Live diagnostics (koopman_* in the logs) at the epochs the report analyses end at.
    live_epochs = sorted({k for k in loss_counts} | {k - 1 for k in weight_counts if k > 1})
    monitor = KoopmanMonitor(OBSERVABLES, analyze_at=live_epochs, options=options,
                             storage=out / "trajectory", resume=args.resume)
    # Order matters: the monitor records an epoch, CSVLogger sees its koopman_* logs, and
    # only then is the epoch checkpointed, so a resumed run never lacks a snapshot.
    callbacks = [monitor, keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
                 # never overwritten in place: a kill at any moment leaves a complete backup
                 AtomicBackup(out / "backup")]
    previous_wall = _read_wall(out) if args.resume else 0.0
    started = time.perf_counter()
    model.fit(train, validation_data=(x_test, y_test), epochs=epochs,
              callbacks=callbacks, verbose=args.verbose, shuffle=False,
              validation_batch_size=max(args.batch_size, 1000))
    wall = previous_wall + time.perf_counter() - started
    _write_json(out / "run.json", dict(settings, wall_seconds=wall))

    trajectory = TrainingTrajectory.load(out / "trajectory")
    done = int(trajectory.scalars["loss"][0].size) if "loss" in trajectory.scalars else 0
    loss_counts = [k for k in loss_counts if k <= done]
    weight_counts = [k for k in weight_counts if k <= trajectory.weights.shape[1]]
    analyses, counts = report_analyses(trajectory, loss_counts=loss_counts,
                                       weight_counts=weight_counts, options=options)
    logs = _read_history(out / "history.csv", done)
    val = np.asarray(logs.get("val_loss", []), dtype=float)
    finite_val = np.where(np.isfinite(val), val, np.inf)
    summary = {
        "format": SUMMARY_FORMAT,
        "version": 1,
        "config": {
            "dataset": dataset, "init": args.init, "epochs": epochs, "subset": args.subset,
            "train_examples": n_train, "test_examples": int(len(y_test)),
            "batch_size": args.batch_size, "seed": args.seed, "optimizer": "adam",
            "learning_rate": args.learning_rate, "options": options.get_config(),
            "data_dir": None if args.data_dir is None else str(Path(args.data_dir).resolve()),
            "keras_version": keras.__version__, "backend": keras.backend.backend(),
        },
        "epochs_run": done,
        "stop_reason": monitor.stop_reason,
        "wall_seconds": wall,
        "final": {k: v[-1] for k, v in logs.items() if v},
        "best_val_loss": ({"epoch": int(np.argmin(finite_val)) + 1,
                           "value": float(val[np.argmin(finite_val)])}
                          if np.isfinite(finite_val).any() else None),
        "history": logs,
        "snapshot_counts": counts,
        "analyses": [a.to_dict() for a in analyses],
    }
    _write_json(out / "summary.json", _to_jsonable(summary))
    title = (f"{'Fashion-' if args.fashion else ''}MNIST, {args.init} initialisation: "
             f"{done} epochs on {n_train:,} images")
    draw_report(trajectory, analyses, out / "report.png", title)
    _print_table(analyses)
    print(f"{out / 'report.png'}, {out / 'summary.json'}, {out / 'trajectory'} "
          f"({wall:.0f} s of training)")
    return 0


def _epochs_recorded(folder: Path) -> int:
    """Completed epochs of the record in ``folder`` (0 without one)."""
    if not (folder / "trajectory.json").is_file():
        return 0
    try:
        trajectory = TrainingTrajectory.load(folder)
    except (ValueError, OSError) as exc:
        raise UsageError(f"--resume: {folder}: unreadable record ({exc})") from exc
    epochs = trajectory.scalars.get("loss", (np.empty(0),))[0]
    return int(epochs.max()) if epochs.size else 0


def _read_wall(out: Path) -> float:
    """Training time of the earlier parts of a resumed run (0 if never recorded)."""
    return float(json.loads((out / "run.json").read_text()).get("wall_seconds", 0.0))


def _read_history(path: Path, epochs: int | None = None) -> dict[str, list[float]]:
    """Per-epoch metrics from CSVLogger's file, epochs ``1..epochs`` (``None``: the epochs
    logged without a gap from the first).

    A resumed run appends to the file; an epoch logged twice (logged, then interrupted before
    its checkpoint, then trained again) keeps its last row.
    """
    import csv

    rows: dict[int, dict] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows[int(row["epoch"])] = row
    if epochs is None:
        epochs = 0
        while epochs in rows:
            epochs += 1
    first = next(iter(rows.values()), {})
    names = [k for k in first if k != "epoch" and not k.startswith("koopman_")]

    def value(epoch: int, name: str) -> float:
        text = rows.get(epoch, {}).get(name)
        return math.nan if text in (None, "") else float(text)

    return {name: [value(e, name) for e in range(epochs)] for name in names}


def _cmd_analyze(args) -> int:
    trajectory, _ = _open_trajectory(args.trajectory)
    counts = args.snapshots
    if counts is None and args.window is None:
        counts = default_counts(trajectory, args.observable)
        if not counts:
            raise UsageError(f"{args.trajectory}: too few {args.observable} snapshots to analyse")
    analyses = analyze_windows(trajectory, args.observable, counts=counts or (),
                               window=args.window, options=_options(args))
    _print_table(analyses)
    if args.json is not None:
        target = Path(args.json)
        if not target.parent.is_dir():
            raise UsageError(f"--json: folder {target.parent} does not exist")
        _write_json(target, _to_jsonable({
            "trajectory": str(Path(args.trajectory).resolve()),
            "analyses": [a.to_dict() for a in analyses]}))
    return 0


def _cmd_plot(args) -> int:
    trajectory, run_dir = _open_trajectory(args.source)
    target = Path(args.out)
    if not target.parent.is_dir():
        raise UsageError(f"--out: folder {target.parent} does not exist")
    title = args.title
    if args.loss_snapshots is not None or args.weight_snapshots is not None:
        analyses = []
        if args.loss_snapshots:
            analyses += analyze_windows(trajectory, "loss", counts=args.loss_snapshots,
                                        options=_options(args))
        if args.weight_snapshots:
            analyses += analyze_windows(trajectory, "weights", counts=args.weight_snapshots,
                                        options=_options(args))
    elif run_dir is not None:
        summary = _read_summary(run_dir)
        analyses = [KoopmanAnalysis.from_dict(d) for d in summary.get("analyses", [])]
        config = summary.get("config", {})
        if title is None and config:
            data = "Fashion-MNIST" if config.get("dataset") == "fashion_mnist" else "MNIST"
            title = (f"{data}, {config.get('init')} initialisation: {summary.get('epochs_run')} "
                     f"epochs on {config.get('train_examples', 0):,} images")
    elif trajectory.analyses:
        analyses = list(trajectory.analyses)
    else:
        analyses, _ = report_analyses(trajectory, options=_options(args))
    if not analyses:
        raise UsageError(f"{args.source}: no analyses to draw (too few snapshots)")
    if args.observables:
        missing = [o for o in args.observables if o not in {a.observable for a in analyses}]
        if missing:
            raise UsageError(f"--observables: no analyses of {', '.join(missing)}")
        analyses = [a for a in analyses if a.observable in args.observables]
    draw_report(trajectory, analyses, target, title or "Koopman spectra of training",
                 max_columns=args.max_columns)
    print(target)
    return 0


def _cmd_sobolev(argv: list[str]) -> int:
    """Run the noisy multi-scale signal study (:mod:`keras_koopman.sobolev_study`)."""
    from keras_koopman import sobolev_study

    try:
        return int(sobolev_study.main(argv, prog=f"{PROG} sobolev") or 0)
    except SystemExit as exc:  # its argparse: --help (0) or a bad argument (2)
        return exc.code if isinstance(exc.code, int) else 2


def _print_table(analyses: Sequence[KoopmanAnalysis]) -> None:
    header = (f"{'observable':<11}{'epochs':>11}{'snaps':>7}{'delays':>7}{'rank':>6}"
              f"{'radius':>9}{'near 1':>8}{'growing':>9}{'decay/ep':>10}{'to conv.':>10}"
              f"{'imp.':>6}{'fit err':>9}")
    print(header)
    print("-" * len(header))
    for a in analyses:
        d = a.diagnostics
        print(f"{a.observable:<11}{f'{a.first_epoch:g}-{a.last_epoch:g}':>11}{a.n_snapshots:>7}"
              f"{'-' if a.delays is None else a.delays:>7}{a.rank:>6}{d.spectral_radius:>9.4f}"
              f"{d.unit_cluster:>8.3f}{d.growing:>9.3f}{d.slowest_decay_rate:>10.4f}"
              f"{d.epochs_to_converge:>10.1f}{int(d.n_important):>6}"
              f"{'-' if a.fit_error is None else format(a.fit_error, '.1e'):>9}")


# ---------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (``prog: error: message``) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _epoch(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an epoch number, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a non-negative epoch, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``keras-koopman`` argument parser (subcommands ``mnist``, ``analyze``, ``plot``,
    ``sobolev``)."""
    parser = _Parser(
        prog=PROG,
        description="Koopman mode analysis of neural-network training (Mohr et al., "
                    "'Applications of Koopman Mode Analysis to Neural Networks').",
        epilog=f"Run '{PROG} COMMAND --help' for the options of a command.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    mnist = commands.add_parser(
        "mnist", help="train the paper's CNN on MNIST and write the Figure-2 report",
        description="Train the paper's CNN (2 conv layers of 16 and 32 5x5 kernels, 2x2 "
                    "max-pooling, Dense 100, Dense 10 softmax; Adam, learning rate 1e-3) on "
                    "MNIST while KoopmanMonitor records the weights, the training cross-entropy "
                    "(loss) and the test cross-entropy (val_loss, the MNIST test split) every "
                    "epoch. Writes OUT/trajectory/ (written as training runs), "
                    "OUT/summary.json and OUT/report.png: the cross-entropy curves and the "
                    "Koopman spectra of the loss from its first 40/100/500 values and of the "
                    "weights from their first 50/100/500 snapshots (the paper's Figure 2), "
                    "scaled to the same fractions of the run when it is shorter than 500 epochs.",
        epilog=f"Example: {PROG} mnist --init he --epochs 30 --subset 5000 --out runs/mnist_he")
    mnist.add_argument("--init", required=True, choices=("xavier", "he", "normal"),
                       help="weight initialisation: Glorot uniform, He normal, or normal with "
                            "standard deviation 0.05")
    mnist.add_argument("--epochs", required=True, type=_positive_int, metavar="N",
                       help="epochs to train (the paper: 500)")
    mnist.add_argument("--out", required=True, metavar="DIR", help="run folder to write")
    mnist.add_argument("--subset", type=_positive_int, metavar="K",
                       help="train on the first K training images (default: all 60,000)")
    mnist.add_argument("--test-subset", type=_positive_int, metavar="K",
                       help="measure the test cross-entropy on the first K test images "
                            "(default: all 10,000)")
    mnist.add_argument("--data-dir", metavar="PATH",
                       help="folder with the four raw *-ubyte.gz files (default: "
                            "$KERAS_KOOPMAN_MNIST_DIR or $KERAS_KOOPMAN_FASHION_MNIST_DIR, then "
                            "<cache>/downloads/manual/<data set>; needed until the "
                            "tensorflow-datasets cache is prepared)")
    mnist.add_argument("--fashion", action="store_true",
                       help="use Fashion-MNIST instead (raw files from --data-dir or "
                            "$KERAS_KOOPMAN_FASHION_MNIST_DIR)")
    mnist.add_argument("--batch-size", type=_positive_int, default=32, metavar="B",
                       help="minibatch size (default 32)")
    mnist.add_argument("--learning-rate", type=_positive_float, default=1e-3, metavar="LR",
                       help="Adam's learning rate (default 1e-3, the paper's)")
    mnist.add_argument("--seed", type=_nonnegative_int, default=0, metavar="S",
                       help="seed of the initial weights and the shuffling (default 0)")
    mnist.add_argument("--loss-snapshots", type=_positive_int, nargs="+", metavar="K",
                       help="analyse the loss over its first K values for each K (default: "
                            "40 100 500, scaled to the run)")
    mnist.add_argument("--weight-snapshots", type=_positive_int, nargs="+", metavar="K",
                       help="analyse the weights over their first K snapshots, the initial "
                            "weights being the first (default: 50 100 500, scaled to the run)")
    _add_analysis_options(mnist)
    resume = mnist.add_mutually_exclusive_group()
    resume.add_argument("--overwrite", action="store_true",
                        help="replace a run already in OUT")
    resume.add_argument("--resume", action="store_true",
                        help="continue the run in OUT (interrupted, or finished with fewer "
                             "epochs) from its last finished epoch up to --epochs; the other "
                             "settings must be the same. The data order restarts from the "
                             "seed's first shuffle, so a resumed run is not bit-identical to an "
                             "uninterrupted one")
    verbosity = mnist.add_mutually_exclusive_group()
    verbosity.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                           help="Keras fit verbosity: 1 progress bar (default), 2 one line per "
                                "epoch, 0 silent")
    verbosity.add_argument("--quiet", dest="verbose", action="store_const", const=0,
                           help="no progress bar (same as --verbose 0)")
    mnist.set_defaults(handler=_cmd_mnist)

    analyze = commands.add_parser(
        "analyze", help="re-run Koopman analyses on a saved trajectory",
        description="Re-run DMD_RRR analyses on a saved trajectory (a trajectory folder, or a "
                    "run folder written by 'mnist') without retraining, and print a table of "
                    "spectral diagnostics: spectral radius, unit cluster ('near 1', the "
                    "importance-weighted share of eigenvalues within 0.01 of 1, AnalysisOptions.delta), growing "
                    "share, slowest decay rate per epoch, epochs to converge, number of "
                    "important modes, and the fit error (the linear model's relative "
                    "one-step error, which the residuals of a loss curve's Hankel analysis "
                    "cannot show). Default windows: the paper's snapshot counts scaled to "
                    "the run.")
    analyze.add_argument("trajectory", metavar="TRAJECTORY",
                         help="trajectory folder (holding trajectory.json) or run folder")
    analyze.add_argument("--observable", choices=OBSERVABLES, default="weights",
                         help="observable to analyse (default: weights)")
    windows = analyze.add_mutually_exclusive_group()
    windows.add_argument("--snapshots", type=_positive_int, nargs="+", metavar="K",
                         help="analyse the first K snapshots, for each K")
    windows.add_argument("--window", type=_epoch, nargs=2, metavar=("A", "B"),
                         help="analyse the snapshots of epochs A to B (inclusive)")
    analyze.add_argument("--delays", type=_positive_int, metavar="L",
                         help="Hankel depth for loss/val_loss (default: a third of the values)")
    _add_analysis_options(analyze)
    analyze.add_argument("--json", metavar="OUT",
                         help="also write the analyses (spectra and diagnostics) to this JSON "
                              "file")
    analyze.set_defaults(handler=_cmd_analyze)

    plot = commands.add_parser(
        "plot", help="redraw the report figure of a run or trajectory",
        description="Redraw the report (cross-entropy curves and Koopman spectra) of a run "
                    "folder from its summary.json analyses, or of a trajectory folder from its "
                    "saved analyses; with --loss-snapshots/--weight-snapshots, recompute the "
                    "analyses at those counts instead.")
    plot.add_argument("source", metavar="TRAJECTORY_OR_RUN_DIR",
                      help="run folder written by 'mnist', or a trajectory folder")
    plot.add_argument("--out", required=True, metavar="PNG", help="PNG file to write")
    plot.add_argument("--loss-snapshots", type=_positive_int, nargs="+", metavar="K",
                      help="recompute the loss spectra over its first K values")
    plot.add_argument("--weight-snapshots", type=_positive_int, nargs="+", metavar="K",
                      help="recompute the weight spectra over their first K snapshots")
    plot.add_argument("--observables", nargs="+", choices=OBSERVABLES,
                      help="rows to draw (default: every analysed observable)")
    plot.add_argument("--max-columns", type=_positive_int, default=3, metavar="C",
                      help="most spectra per row (default 3)")
    _add_analysis_options(plot)
    plot.add_argument("--title", help="figure title")
    plot.set_defaults(handler=_cmd_plot)

    commands.add_parser(
        "sobolev", add_help=False,
        help="run the noisy multi-scale signal study (keras_koopman.sobolev_study; "
             f"'{PROG} sobolev --help' lists its options)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sobolev":
        return _cmd_sobolev(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, message already printed)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder below a file, a read-only disk, a full disk, ...
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"{PROG} {args.command}: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
