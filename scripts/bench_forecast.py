"""Benchmark the Koopman forecast of learning curves against parametric baselines.

On the corpus of real learning curves written by ``scripts/make_curves.py`` (committed as
``scripts/data/curves.jsonl.gz``), for observed fractions 10/20/30/50 % of the epoch budget,
every method predicts the final ``val_loss`` and the final ``val_accuracy`` from the observed
prefix.  Reported per method, metric and fraction: the absolute error of the predicted final value
(mean and median), the Spearman rank correlation between predicted and true final values across
the runs of one task (data set × model family; mean over the tasks: what pruning needs), the
coverage of the 80 % interval and the CPU time per forecast.

Methods (all in the same run, on the same curves): ``koopman`` (:func:`keras_koopman.forecast.
forecast_curve` with its defaults) and the baselines of ``scripts/curve_baselines.py`` (last
value, best so far, power law, exponential, the Domhan et al. 2015 parametric ensemble).  Every
method gives a point forecast and a scale; its interval is ``final + [q10, q90]·scale`` with the
quantiles of the normalised errors measured on the **selection** half (pooled over metrics and
fractions; for ``koopman`` these are the library's ``INTERVAL_QUANTILES``); all forecasts are
clipped to [0, ∞) for a loss and [0, 1] for an accuracy.  Tables are for the **held-out** half.

Usage (from the repository root)::

    python scripts/bench_forecast.py                       # held-out tables to stdout
    python scripts/bench_forecast.py --select              # settings grid, selection half
    python scripts/bench_forecast.py --doc docs/benchmarks.md --figures docs/figures

Baseline forecasts are cached in ``--cache`` (JSON, keyed by run, metric, fraction and method) so
that reruns do not refit them; delete the file to recompute.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from curve_baselines import BASELINES  # noqa: E402
from make_curves import read_corpus  # noqa: E402

from keras_koopman.forecast import (  # noqa: E402
    INTERVAL_QUANTILES,
    MIN_LENGTH,
    RATIO_EDGES,
    forecast_curve,
)

FRACTIONS = (0.1, 0.2, 0.3, 0.5)
METRICS = {"val_loss": False, "val_accuracy": True}  # name -> larger is better
BOUNDS = {"val_loss": (0.0, None), "val_accuracy": (0.0, 1.0)}
METHODS = ("koopman", *BASELINES)

#: Koopman settings compared by --select (forecast_curve keyword arguments; windows as fractions)
SELECT_GRID = {
    "default": {},
    "delays 2,3": {"delays": (2, 3)},
    "delays 2..8": {"delays": (2, 3, 4, 6, 8)},
    "window 1.0": {"windows": (1.0,)},
    "window 1.0,0.7,0.4": {"windows": (1.0, 0.7, 0.4)},
    "max_residual 0.1": {"max_residual": 0.1},
    "max_residual inf": {"max_residual": 1e9},
    "growth drop": {"growth": "drop"},
    "growth keep": {"growth": "keep"},
    "combine mean": {"combine": "mean"},
    "real modes": {"oscillations": False},
    "increments": {"increments": True},
    "increments, real": {"increments": True, "oscillations": False},
    "log (loss only)": {"transform": "log"},
    "increments, log (loss only)": {"increments": True, "transform": "log"},
    "incr, delays 2,3": {"increments": True, "delays": (2, 3)},
    "incr, delays 2..8": {"increments": True, "delays": (2, 3, 4, 6, 8)},
    "incr, window 1.0": {"increments": True, "windows": (1.0,)},
    "incr, window 1.0,0.7,0.4": {"increments": True, "windows": (1.0, 0.7, 0.4)},
    "incr, combine mean": {"increments": True, "combine": "mean"},
    "incr, growth drop": {"increments": True, "growth": "drop"},
    "incr, max_residual 0.01": {"increments": True, "max_residual": 0.01},
    # stage 5 (whole selection half; defaults since: transform "auto", growth "drop")
    "previous default (none, clip)": {"transform": "none", "growth": "clip"},
    "none, drop": {"transform": "none"},
    "log, clip": {"transform": "log", "growth": "clip"},
    "log, drop": {"transform": "log"},
    "auto, clip": {"growth": "clip"},
    "auto, real modes": {"growth": "clip", "oscillations": False},
    "auto, median": {"growth": "clip", "combine": "median"},
    "auto, delays 2,3": {"growth": "clip", "delays": (2, 3)},
}


def usable_runs(corpus: list[dict]) -> tuple[list[dict], dict[str, int]]:
    """Runs with every epoch completed and finite validation curves; counts of the others."""
    keep, dropped = [], defaultdict(int)
    for run in corpus:
        if run["completed_epochs"] < run["epochs"]:
            dropped["stopped on NaN"] += 1
        elif any(v is None for k in METRICS for v in run[k]):
            dropped["non-finite value"] += 1
        else:
            keep.append(run)
    return keep, dict(dropped)


def koopman_method(settings: dict):
    """A method ``(y, h, increasing) -> (final, scale)`` from forecast_curve settings."""
    settings = dict(settings)
    fractions = settings.pop("windows", None)

    def method(y, h, increasing):
        kwargs = dict(settings)
        if increasing and kwargs.get("transform") == "log":
            kwargs["transform"] = "none"  # log applies to losses only
        if fractions is not None:
            kwargs["window"] = tuple(sorted({max(MIN_LENGTH, math.ceil(f * y.size))
                                             for f in fractions}))
        fc = forecast_curve(y, h, quantiles=(-1.0, 1.0), **kwargs)
        return fc.final, float(fc.upper[-1] - fc.mean[-1])
    return method


def predict_all(runs, methods: dict, cache: dict | None = None) -> list[dict]:
    """One row per run, metric, fraction and method: prediction, scale, truth, CPU seconds."""
    rows = []
    for run in runs:
        budget = run["epochs"]
        for metric, increasing in METRICS.items():
            curve = np.asarray(run[metric], dtype=np.float64)
            for frac in FRACTIONS:
                n_obs = max(MIN_LENGTH, round(frac * budget))
                for name, method in methods.items():
                    key = f"{run['run_id']}|{metric}|{frac}|{name}"
                    if cache is not None and key in cache:
                        pred, scale, cpu = cache[key]
                    else:
                        t0 = time.process_time()
                        pred, scale = method(curve[:n_obs], budget - n_obs, increasing)
                        cpu = time.process_time() - t0
                        if cache is not None:
                            cache[key] = (pred, scale, cpu)
                    rows.append({"run_id": run["run_id"], "split": run["split"],
                                 "task": f"{run['dataset']}/{run['family']}", "metric": metric,
                                 "fraction": frac, "method": name, "pred": pred,
                                 "scale": scale, "truth": float(curve[-1]), "cpu": cpu,
                                 "bin": int(np.searchsorted(RATIO_EDGES,
                                                            (budget - n_obs) / n_obs))})
    return rows


def calibrate(rows) -> dict[str, tuple[tuple[float, float], ...]]:
    """Per method and horizon-ratio bin (``RATIO_EDGES``): the 10 % and 90 % quantiles of
    ``(truth − pred) / scale`` on the given rows (a bin without rows gets (0, 0))."""
    errors = defaultdict(lambda: defaultdict(list))
    for r in rows:
        diff = r["truth"] - r["pred"]
        errors[r["method"]][r["bin"]].append(
            diff / r["scale"] if r["scale"] > 0
            else (0.0 if diff == 0 else math.copysign(1e9, diff)))
    return {m: tuple((float(np.quantile(e[b], 0.1)), float(np.quantile(e[b], 0.9)))
                     if e[b] else (0.0, 0.0) for b in range(len(RATIO_EDGES)))
            for m, e in errors.items()}


def summarise(rows, quantiles) -> dict:
    """(method, metric, fraction) -> MAE, median AE, Spearman (mean over tasks), coverage, ms."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["metric"], r["fraction"])].append(r)
    out = {}
    for (method, metric, frac), group in groups.items():
        lo_b, hi_b = BOUNDS[metric]
        q = np.asarray(quantiles[method])[[r["bin"] for r in group]]
        q_lo, q_hi = q[:, 0], q[:, 1]
        pred = np.clip([r["pred"] for r in group], lo_b, hi_b)
        scale = np.array([r["scale"] for r in group])
        truth = np.array([r["truth"] for r in group])
        lower = np.clip(pred + q_lo * scale, lo_b, hi_b)
        upper = np.clip(pred + q_hi * scale, lo_b, hi_b)
        err = np.abs(pred - truth)
        tasks = defaultdict(list)
        for i, r in enumerate(group):
            tasks[r["task"]].append(i)
        rhos = []
        for idx in tasks.values():
            if len(idx) > 2 and np.ptp(pred[idx]) > 0:
                rhos.append(spearmanr(pred[idx], truth[idx]).statistic)
        out[(method, metric, frac)] = {
            "n": len(group), "mae": float(err.mean()), "medae": float(np.median(err)),
            "spearman": float(np.nanmean(rhos)) if rhos else float("nan"),
            "coverage": float(np.mean((truth >= lower) & (truth <= upper))),
            "ms": 1e3 * float(np.mean([r["cpu"] for r in group])),
        }
    return out


def table(summary, metric: str, methods, fractions=FRACTIONS) -> str:
    lines = ["| method | " + " | ".join(f"{int(100 * f)} %: MAE / med / ρ / cov" for f in fractions)
             + " | ms |", "|---|" + "---|" * (len(fractions) + 1)]
    for m in methods:
        cells = []
        for f in fractions:
            s = summary[(m, metric, f)]
            cells.append(f"{s['mae']:.3f} / {s['medae']:.3f} / {s['spearman']:.2f} / "
                         f"{s['coverage']:.2f}")
        ms = np.mean([summary[(m, metric, f)]["ms"] for f in fractions])
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {ms:.1f} |")
    return "\n".join(lines)


def run_select(runs, cache: dict, grid: list[str]) -> None:
    """Print the Koopman settings grid and the baselines on the selection half."""
    sel = [r for r in runs if r["split"] == "selection"]
    methods = {name: koopman_method(SELECT_GRID[name]) for name in grid}
    rows = predict_all(sel, methods) + predict_all(sel, BASELINES, cache)
    quantiles = calibrate(rows)
    summary = summarise(rows, quantiles)
    for metric in METRICS:
        print(f"\n{metric} (selection half, {len(sel)} runs)")
        print(table(summary, metric, [*grid, *BASELINES]))
    print("\nquantiles per ratio bin:",
          {m: [tuple(round(v, 3) for v in pair) for pair in q] for m, q in quantiles.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=REPO / "scripts/data/curves.jsonl.gz")
    parser.add_argument("--select", nargs="*", metavar="SETTING",
                        help="selection half only: these SELECT_GRID settings (default all) "
                             "and the baselines")
    parser.add_argument("--cache", type=Path, default=REPO / "runs/bench_forecast_cache.json")
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--doc", type=Path, help="append the results section to this file")
    parser.add_argument("--figures", type=Path, help="write the figures to this folder")
    args = parser.parse_args(argv)

    runs, dropped = usable_runs(read_corpus(args.corpus))
    cache = json.loads(args.cache.read_text()) if args.cache.exists() else {}
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    if args.select is not None:
        run_select(runs, cache, args.select or list(SELECT_GRID))
        args.cache.write_text(json.dumps(cache))
        return 0
    baselines = predict_all(runs, BASELINES, cache)
    args.cache.write_text(json.dumps(cache))
    koop = predict_all(runs, {"koopman": koopman_method({})})
    rows = baselines + koop
    quantiles = calibrate([r for r in rows if r["split"] == "selection"])
    quantiles["koopman"] = INTERVAL_QUANTILES  # the library's constants (from the same rule)
    held = [r for r in rows if r["split"] == "held-out"]
    summary = summarise(held, quantiles)
    n_held = len({r["run_id"] for r in held})
    text = report(summary, quantiles, n_held, len(runs), dropped)
    print(text)
    print("\nselection-half quantiles (koopman computed, not used):",
          calibrate([r for r in koop if r["split"] == "selection"])["koopman"])
    if args.json:
        args.json.write_text(json.dumps({f"{k[0]}|{k[1]}|{k[2]}": v for k, v in summary.items()},
                                        indent=1))
    if args.figures:
        import forecast_figures

        forecast_figures.make_figures(runs, summary, args.figures, METHODS, FRACTIONS)
    if args.doc:
        with open(args.doc, "a") as handle:
            handle.write("\n" + text + "\n")
    return 0


def report(summary, quantiles, n_held, n_runs, dropped) -> str:
    cmd = "python scripts/bench_forecast.py " + " ".join(sys.argv[1:])
    parts = [
        "## Learning-curve forecasts: Koopman against parametric baselines",
        "",
        f"Command (run {datetime.date(2026, 11, 30).isoformat()} on the shared 2-core machine; "
        "CPU ms = `process_time` per forecast, under load from other jobs):",
        "",
        f"    {cmd.strip()}",
        "",
        f"Corpus `scripts/data/curves.jsonl.gz` (`scripts/make_curves.py`): {n_runs} usable runs "
        f"(dropped: {dropped or 'none'}); tables for the **held-out** half ({n_held} runs). "
        "Cells: MAE / median AE of the predicted final value / Spearman ρ between predicted and "
        "true final values within a task (data set × model family, mean over 6 tasks) / "
        "coverage of the 80 % interval (quantiles calibrated on the selection half: "
        "per horizon/observed ratio bin ≤1.5, ≤3, ≤6, >6, i.e. 50/30/20/10 % observed: "
        + "; ".join(f"{m} " + ", ".join(f"({a:.2f}, {b:.2f})" for a, b in q)
                    for m, q in quantiles.items()) + ").",
        "",
    ]
    for metric in METRICS:
        parts += [f"**Final `{metric}`**", "", table(summary, metric, METHODS), ""]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
