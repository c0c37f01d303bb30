"""Noisy multi-scale signal study of the paper (Figures 3-4, Eq. (5)-(7)).

Signal h(x) = x + sin(2πx⁴) on [0, 2), mapped to the unit torus t = x/2; noise
η = ε (max h − min h) N(0, 1), ε ∈ {0.05, 0.5, 1.0}. The 4n grid samples are split 75/25 into
two uniform periodic grids: n_train = 3n points t_j = j/(3n) for training and n_test = n points
t_i = (i + 1/2)/n (between training points) held out; both stay uniform so every FFT is exact.

For every method and ε, over several seeds (noise realisation and weight initialisation), a
SobolevHeadsModel (9 hidden tanh layers × 20 units, one output) is trained full-batch with Adam
on the noisy training grid, and the reconstruction is scored against the clean h on the test grid:
RMSE and its split over frequency bands (Parseval on the test grid). The baseline is a plain FFT
low-pass of the noisy training data whose cut-off is chosen by exact leave-one-out
cross-validation on the training points (the clean signal is never used).

Usage::

    python scripts/reproduce_sobolev.py                     # the full study (docs/results.md)
    python scripts/reproduce_sobolev.py --seeds 1 --steps 300 --no-figures   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

#: Study variants: name -> (training method, reconstruction, SobolevLoss1 output_loss).
#: The four "s1/..." variants are the readings of the paper's two ambiguities.
AMBIGUITY_VARIANTS = {
    "s1/output/none": ("sobolev1", "output", None),
    "s1/output/mse": ("sobolev1", "output", "mse"),
    "s1/sum_of_heads/none": ("sobolev1", "sum_of_heads", None),
    "s1/sum_of_heads/mse": ("sobolev1", "sum_of_heads", "mse"),
}
METHOD_NAMES = ("l2", "sobolev1", "sobolev2", "sobolev1+2")
EPSILONS = (0.05, 0.5, 1.0)
BAND_EDGES = (0, 8, 32, 64)  # bands [0, 8], (8, 32], (32, 64], (64, Nyquist] in torus frequency


@dataclass(frozen=True)
class StudyConfig:
    """Settings of one study run (all recorded with the results)."""

    n_test: int = 256
    steps: int = 3000
    learning_rate: float = 1e-2
    steps_per_execution: int = 500
    seeds: int = 5
    depth: int = 9
    units: int = 20
    activation: str = "tanh"
    workers: int = 2


@dataclass(frozen=True)
class RunResult:
    """Clean-signal error of one trained reconstruction."""

    variant: str
    epsilon: float
    seed: int
    rmse: float
    band_rms: tuple[float, ...]
    seconds: float


def clean_signal(x: np.ndarray) -> np.ndarray:
    """h(x) = x + sin(2πx⁴), the paper's multi-scale signal."""
    return x + np.sin(2.0 * np.pi * x**4)


def make_data(n_test: int, epsilon: float, seed: int) -> dict[str, np.ndarray]:
    """Noisy training grid and clean test grid (t in [0, 1), x = 2t)."""
    n_train = 3 * n_test
    t_train = np.arange(n_train) / n_train
    t_test = (np.arange(n_test) + 0.5) / n_test
    h_train, h_test = clean_signal(2 * t_train), clean_signal(2 * t_test)
    amplitude = np.ptp(np.concatenate([h_train, h_test]))
    rng = np.random.default_rng(seed)
    return {
        "t_train": t_train,
        "t_test": t_test,
        "h_train": h_train,
        "h_test": h_test,
        "y_train": h_train + epsilon * amplitude * rng.normal(size=n_train),
    }


def band_rms(error: np.ndarray) -> tuple[float, ...]:
    """RMS of a uniform-grid error in each band of BAND_EDGES; their squares sum to the MSE."""
    n = len(error)
    power = np.abs(np.fft.rfft(error) / n) ** 2
    power[1 : (n + 1) // 2] *= 2.0  # conjugate pairs
    k = np.arange(len(power))
    edges = [*BAND_EDGES[1:], n // 2]
    lower = [-1, *BAND_EDGES[1:]]
    return tuple(float(np.sqrt(power[(k > lo) & (k <= hi)].sum())) for lo, hi in zip(lower, edges, strict=True))


def lowpass_baseline(y: np.ndarray, t_eval: np.ndarray) -> tuple[np.ndarray, int]:
    """FFT low-pass of uniform-grid data, cut-off K by exact leave-one-out cross-validation.

    Keeping |k| ≤ K is a least-squares projection whose hat matrix has the constant diagonal
    (2K + 1)/n on a uniform grid, so the leave-one-out residual is r/(1 − (2K + 1)/n).
    """
    n = len(y)
    coeffs = np.fft.rfft(y) / n
    scores = []
    for cutoff in range((n - 1) // 2):
        kept = coeffs.copy()
        kept[cutoff + 1 :] = 0.0
        fit = np.fft.irfft(kept * n, n)
        scores.append(np.mean((y - fit) ** 2) / (1.0 - (2 * cutoff + 1) / n) ** 2)
    cutoff = int(np.argmin(scores))
    k = np.arange(1, cutoff + 1)
    phase = np.exp(2j * np.pi * np.outer(t_eval, k))
    values = coeffs[0].real + 2.0 * (phase @ coeffs[1 : cutoff + 1]).real
    return values, cutoff


def variant_spec(name: str) -> tuple[str, str, str | None]:
    """(method, reconstruction, output_loss) of a variant name."""
    from keras_koopman.losses import DEFAULT_OUTPUT_LOSS
    from keras_koopman.sobolev_model import DEFAULT_RECONSTRUCTION

    if name in AMBIGUITY_VARIANTS:
        return AMBIGUITY_VARIANTS[name]
    if name in METHOD_NAMES:
        return name, DEFAULT_RECONSTRUCTION, DEFAULT_OUTPUT_LOSS
    raise ValueError(f"unknown variant {name!r}")


def _init_worker() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def train_model(variant: str, data: dict[str, np.ndarray], config: StudyConfig, seed: int):
    """Train one network on the noisy training grid; return the fitted model."""
    import keras
    import tensorflow as tf

    from keras_koopman.sobolev_model import SobolevHeadsModel

    method, reconstruction, output_loss = variant_spec(variant)
    keras.utils.set_random_seed(seed)
    model = SobolevHeadsModel(
        depth=config.depth,
        units=config.units,
        activation=config.activation,
        reconstruction=reconstruction,
    )
    kwargs = {"output_loss": output_loss} if method == "sobolev1" else {}
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, config.steps)
    model.compile(
        keras.optimizers.Adam(schedule),
        loss=model.method_loss(method, **kwargs),
        steps_per_execution=config.steps_per_execution,
    )
    x = (2.0 * data["t_train"] - 1.0)[None, :, None].astype("float32")
    y = data["y_train"][None, :, None].astype("float32")
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat(config.steps)
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return model


def predict_at(model, t: np.ndarray) -> np.ndarray:
    """Reconstruction at torus points t (one signal)."""
    return model.predict((2.0 * t - 1.0)[None, :, None].astype("float32"), verbose=0)[0, :, 0]


def run_one(task: tuple[str, float, int, StudyConfig]) -> RunResult:
    """Train and score one (variant, ε, seed)."""
    import warnings

    warnings.filterwarnings("ignore", message="Gradients do not exist")
    variant, epsilon, seed, config = task
    start = time.perf_counter()
    data = make_data(config.n_test, epsilon, seed)
    model = train_model(variant, data, config, seed)
    error = predict_at(model, data["t_test"]) - data["h_test"]
    if not np.all(np.isfinite(error)):
        raise FloatingPointError(f"{variant} eps={epsilon} seed={seed}: non-finite reconstruction")
    return RunResult(
        variant, epsilon, seed, float(np.sqrt(np.mean(error**2))), band_rms(error),
        time.perf_counter() - start,
    )


def baseline_results(config: StudyConfig) -> list[RunResult]:
    """The FFT low-pass baseline for every ε and seed."""
    results = []
    for epsilon in EPSILONS:
        for seed in range(config.seeds):
            data = make_data(config.n_test, epsilon, seed)
            values, _ = lowpass_baseline(data["y_train"], data["t_test"])
            error = values - data["h_test"]
            results.append(
                RunResult("fft_lowpass", epsilon, seed, float(np.sqrt(np.mean(error**2))),
                          band_rms(error), 0.0)
            )
    return results


def summarise(results: list[RunResult]) -> dict[str, dict[float, dict[str, list[float]]]]:
    """variant -> ε -> mean/std of RMSE and of each band RMS."""
    table: dict[str, dict[float, dict[str, list[float]]]] = {}
    for variant in dict.fromkeys(r.variant for r in results):
        table[variant] = {}
        for epsilon in EPSILONS:
            rows = [r for r in results if r.variant == variant and r.epsilon == epsilon]
            if not rows:
                continue
            rmse = np.array([r.rmse for r in rows])
            bands = np.array([r.band_rms for r in rows])
            table[variant][epsilon] = {
                "rmse": [float(rmse.mean()), float(rmse.std(ddof=1)) if len(rows) > 1 else 0.0],
                "bands": bands.mean(axis=0).tolist(),
                "n": len(rows),
            }
    return table


def write_json(path: str, payload: dict) -> None:
    """Atomic JSON write."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=1)
    os.replace(tmp, path)


def print_tables(table: dict, clean_bands: dict[float, tuple[float, ...]]) -> None:
    """Markdown tables: RMSE mean ± std, then band RMS (means)."""
    print("\n| method | " + " | ".join(f"ε = {e}" for e in EPSILONS) + " |")
    print("|---|" + "---|" * len(EPSILONS))
    for variant, rows in table.items():
        cells = [
            f"{rows[e]['rmse'][0]:.4f} ± {rows[e]['rmse'][1]:.4f}" if e in rows else "–"
            for e in EPSILONS
        ]
        print(f"| {variant} | " + " | ".join(cells) + " |")
    labels = ["[0,8]", "(8,32]", "(32,64]", "(64,Nyq]"]
    print("\nBand RMS of the clean-signal error (mean over seeds); 'clean h' = the signal's own band RMS")
    print("| method | ε | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for epsilon in EPSILONS:
        print(f"| clean h | {epsilon} | " + " | ".join(f"{v:.4f}" for v in clean_bands[epsilon]) + " |")
        for variant, rows in table.items():
            if epsilon in rows:
                print(f"| {variant} | {epsilon} | " + " | ".join(f"{v:.4f}" for v in rows[epsilon]["bands"]) + " |")


def make_figures(config: StudyConfig, figdir: str, table: dict) -> list[str]:
    """Figures in the layout of the paper's Figures 3 and 4, the heads, and an RMSE summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(figdir, exist_ok=True)
    written = []
    seed = 0
    fits: dict[tuple[str, float], np.ndarray] = {}
    heads = None
    for epsilon in EPSILONS:
        data = make_data(config.n_test, epsilon, seed)
        for method in METHOD_NAMES:
            model = train_model(method, data, config, seed)
            fits[method, epsilon] = predict_at(model, data["t_test"])
            if method == "sobolev1" and epsilon == EPSILONS[0]:
                t_fine = np.arange(1024) / 1024
                heads = model.predict_heads((2 * t_fine - 1)[None, :, None].astype("float32"))[0, :, :, 0]
        fits["fft_lowpass", epsilon] = lowpass_baseline(data["y_train"], data["t_test"])[0]

    def panel_figure(methods: tuple[str, ...], filename: str, title: str) -> None:
        fig, axes = plt.subplots(len(EPSILONS), len(methods), figsize=(4.2 * len(methods), 2.6 * len(EPSILONS)),
                                 sharex=True, squeeze=False)
        for row, epsilon in enumerate(EPSILONS):
            data = make_data(config.n_test, epsilon, seed)
            for col, method in enumerate(methods):
                ax = axes[row, col]
                ax.plot(2 * data["t_train"], data["y_train"], ".", ms=1.5, color="0.7", label="noisy data")
                ax.plot(2 * data["t_test"], data["h_test"], "-", lw=1.0, color="k", label="clean h")
                ax.plot(2 * data["t_test"], fits[method, epsilon], "-", lw=1.2, color="C3", label="reconstruction")
                rmse = np.sqrt(np.mean((fits[method, epsilon] - data["h_test"]) ** 2))
                ax.set_title(f"{method}, ε = {epsilon}: RMSE {rmse:.3f}", fontsize=9)
                spread = np.ptp(data["h_test"])
                ax.set_ylim(data["h_test"].min() - 0.6 * spread, data["h_test"].max() + 0.6 * spread)
                if row == len(EPSILONS) - 1:
                    ax.set_xlabel("x")
        axes[0, 0].legend(loc="upper left", fontsize=7, markerscale=4)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        path = os.path.join(figdir, filename)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    panel_figure(("l2", "sobolev1", "fft_lowpass"), "sobolev_fig3.png",
                 "Figure 3 layout: L2 vs Sobolev 1 (and the FFT low-pass baseline), seed 0")
    panel_figure(("sobolev2", "sobolev1+2"), "sobolev_fig4.png",
                 "Figure 4 layout: Sobolev 2 and Sobolev 1+2, seed 0")

    fig, axes = plt.subplots(3, 3, figsize=(11, 6.5), sharex=True)
    for layer, ax in enumerate(axes.ravel()):
        ax.plot(2 * np.arange(1024) / 1024, heads[layer], color="C0", lw=1.0)
        ax.set_title(f"head {layer} (shell {layer})", fontsize=9)
    fig.suptitle(f"Sobolev 1 heads f_ℓ = C_ℓ z_ℓ after training (ε = {EPSILONS[0]}, seed 0)", fontsize=10)
    fig.tight_layout()
    path = os.path.join(figdir, "sobolev_heads.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    variants = [v for v in ("fft_lowpass", *METHOD_NAMES) if v in table]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        means = [table[variant][e]["rmse"][0] for e in EPSILONS]
        stds = [table[variant][e]["rmse"][1] for e in EPSILONS]
        ax.bar(np.arange(len(EPSILONS)) + i * width, means, width, yerr=stds, capsize=3, label=variant)
    ax.set_xticks(np.arange(len(EPSILONS)) + 0.4 - width / 2, [f"ε = {e}" for e in EPSILONS])
    ax.set_ylabel("clean-signal RMSE (test grid)")
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(f"mean ± std over {config.seeds} seeds", fontsize=9)
    fig.tight_layout()
    path = os.path.join(figdir, "sobolev_rmse.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=StudyConfig.n_test, help="test points (train = 3×)")
    parser.add_argument("--steps", type=int, default=StudyConfig.steps)
    parser.add_argument("--lr", type=float, default=StudyConfig.learning_rate)
    parser.add_argument("--seeds", type=int, default=StudyConfig.seeds)
    parser.add_argument("--workers", type=int, default=StudyConfig.workers)
    parser.add_argument("--variants", default=",".join([*AMBIGUITY_VARIANTS, *METHOD_NAMES]),
                        help="comma-separated variants (methods and s1/<reconstruction>/<output_loss>)")
    parser.add_argument("--json", default=os.path.join(tempfile.gettempdir(), "sobolev_study.json"))
    parser.add_argument("--figdir", default=os.path.join(os.path.dirname(__file__), "..", "docs", "figures"))
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    config = StudyConfig(n_test=args.n_test, steps=args.steps, learning_rate=args.lr,
                         seeds=args.seeds, workers=args.workers)
    variants = [v for v in args.variants.split(",") if v]
    for variant in variants:
        variant_spec(variant)
    tasks = [(v, e, s, config) for v in variants for e in EPSILONS for s in range(config.seeds)]
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(config.workers, initializer=_init_worker) as pool:
        results = []
        for result in pool.imap_unordered(run_one, tasks):
            results.append(result)
            print(f"[{time.perf_counter() - start:6.0f}s] {result.variant:22s} ε={result.epsilon:<5} "
                  f"seed={result.seed} RMSE={result.rmse:.4f} ({result.seconds:.1f}s)", flush=True)
    results = baseline_results(config) + sorted(results, key=lambda r: (variants.index(r.variant), r.epsilon, r.seed))
    table = summarise(results)
    clean_bands = {e: band_rms(make_data(config.n_test, e, 0)["h_test"]) for e in EPSILONS}
    print_tables(table, clean_bands)
    write_json(args.json, {
        "config": dataclasses.asdict(config),
        "results": [dataclasses.asdict(r) for r in results],
        "summary": {v: {str(e): s for e, s in rows.items()} for v, rows in table.items()},
        "clean_band_rms": {str(e): b for e, b in clean_bands.items()},
    })
    print(f"\nresults: {args.json}; training wall time {time.perf_counter() - start:.0f}s")
    if not args.no_figures:
        _init_worker()
        for path in make_figures(config, args.figdir, table):
            print("figure:", os.path.relpath(path))
    print(f"total wall time {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
