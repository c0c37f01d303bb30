"""Figures of docs/forecasting.md, written by ``scripts/bench_forecast.py --figures DIR``.

* ``forecast_fan.png``: Koopman forecasts (mean and 80 % band) of four held-out ``val_loss``
  curves observed for 30 % of the budget (a typical, a slow, a noisy and a diverging one, picked
  by the rules in :func:`pick_examples`) against the truth, with the Domhan ensemble's forecast.
* ``forecast_error.png``: MAE of the predicted final ``val_loss`` and ``val_accuracy`` against
  the observed fraction, every method, held-out half.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from curve_baselines import domhan  # noqa: E402

from keras_koopman.forecast import forecast_curve  # noqa: E402

OBSERVED = 0.3


def pick_examples(runs: list[dict]) -> dict[str, dict]:
    """Typical, slow, noisy and diverging held-out ``val_loss`` curves.

    diverging: largest ``final / min`` ratio; noisy: largest median |second difference| over the
    range among curves with a range of at least 0.3; slow: largest share of the total decrease that comes after 30 % of the budget (among
    curves that decrease by at least 0.5); typical: the curve closest to the median of that
    share among the curves that decrease by at least 0.5.
    """
    held = [r for r in runs if r["split"] == "held-out"]
    curves = {r["run_id"]: np.asarray(r["val_loss"]) for r in held}
    by_id = {r["run_id"]: r for r in held}
    picked: dict[str, dict] = {}

    def take(name, score, pool):
        pool = [i for i in pool if i not in {p["run_id"] for p in picked.values()}]
        picked[name] = by_id[max(pool, key=score)]

    ids = list(curves)
    take("diverging", lambda i: curves[i][-1] / curves[i].min(), ids)
    moving = [i for i in ids if np.ptp(curves[i]) >= 0.3]
    take("noisy", lambda i: np.median(np.abs(np.diff(curves[i], 2))) / np.ptp(curves[i]), moving)

    def late_share(i):
        y = curves[i]
        n = round(OBSERVED * y.size)
        return (y[n] - y[-1]) / (y[0] - y[-1])

    learners = [i for i in ids if curves[i][0] - curves[i][-1] >= 0.5]
    take("slow", late_share, learners)
    median = float(np.median([late_share(i) for i in learners]))
    take("typical", lambda i: -abs(late_share(i) - median), learners)
    return {k: picked[k] for k in ("typical", "slow", "noisy", "diverging")}


def fan_chart(runs: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (name, run) in zip(axes, pick_examples(runs).items()):
        y = np.asarray(run["val_loss"], dtype=np.float64)
        n = round(OBSERVED * y.size)
        fc = forecast_curve(y[:n], y.size - n, bounds=(0.0, None))
        future = np.arange(n, y.size)
        ax.fill_between(future, fc.lower, fc.upper, color="tab:blue", alpha=0.25,
                        label="Koopman 80 %")
        ax.plot(future, fc.mean, color="tab:blue", label="Koopman mean")
        ax.plot(np.arange(n), y[:n], "k.", label="observed")
        ax.plot(future, y[n:], color="0.5", lw=1, label="truth")
        d_final, _ = domhan(y[:n], y.size - n, False)
        ax.plot([y.size - 1], [max(d_final, 0.0)], "r^", label="Domhan final")
        ax.set_title(f"{name}: {run['run_id']}\n{run['optimizer']} lr={run['learning_rate']:.1e}",
                     fontsize=9)
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("val_loss")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def error_chart(summary: dict, methods, fractions, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, ("val_loss", "val_accuracy")):
        for m in methods:
            ax.plot([100 * f for f in fractions], [summary[(m, metric, f)]["mae"] for f in fractions],
                    marker="o", label=m, lw=2.5 if m == "koopman" else 1.2)
        ax.set_xlabel("observed % of the budget")
        ax.set_ylabel(f"MAE of final {metric}")
        ax.set_title(f"held-out half: final {metric}", fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_figures(runs, summary, folder: Path, methods, fractions) -> None:
    """The fan chart and the error-against-fraction chart of ``bench_forecast.py``."""
    folder.mkdir(parents=True, exist_ok=True)
    fan_chart(runs, folder / "forecast_fan.png")
    error_chart(summary, methods, fractions, folder / "forecast_error.png")
