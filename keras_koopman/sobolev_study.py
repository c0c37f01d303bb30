"""Noisy multi-scale signal study of the paper (Figures 3-4, Eq. (5)-(7)).

Signal h(x) = x + sin(2πx⁴) on [0, 2), mapped to the unit torus t = x/2; noise
η = ε (max h − min h) N(0, 1), ε ∈ {0.05, 0.5, 1.0}. The 4n grid samples are split 75/25 into
two uniform periodic grids: n_train = 3n points t_j = j/(3n) for training and n_test = n points
t_i = (i + 1/2)/n (between training points) held out; both stay uniform so every FFT is exact.

For every method and ε, over several seeds (noise realisation and weight initialisation), a
SobolevHeadsModel (9 hidden tanh layers × 20 units, one output) is trained full-batch with Adam
on the noisy training grid, and the reconstruction is scored against the clean h on the test grid:
RMSE and its split over frequency bands (Parseval on the test grid). Baselines: a plain FFT
low-pass of the noisy training data whose cut-off is chosen by exact leave-one-out
cross-validation on the training points (the clean signal is never used), and the same after
removing a least-squares straight line (h is not periodic on the torus).

L2 and Sobolev 2 train the paper's plain network (loss on the final output; the heads unused);
Sobolev 1 and 1+2 use the library's default reading of the paper's two ambiguities. The
readings are measured as four variants of Sobolev 1 ("s1/<reconstruction>/<output loss>"), and
"l2/sum_of_heads" trains L2 on the sum-of-heads network to separate architecture from loss.

Usage (``scripts/reproduce_sobolev.py`` takes the same arguments and writes the figures to
``docs/figures``)::

    keras-koopman sobolev                                    # the full study (docs/results.md)
    keras-koopman sobolev --seeds 1 --ambiguity-seeds 1 --steps 200 --no-figures

Training runs in worker processes started with "spawn"; they import this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np

#: Readings of the paper's ambiguities: name -> (method, reconstruction, SobolevLoss1 output_loss).
READINGS = {
    "s1/output/none": ("sobolev1", "output", None),
    "s1/output/mse": ("sobolev1", "output", "mse"),
    "s1/sum_of_heads/none": ("sobolev1", "sum_of_heads", None),
    "s1/sum_of_heads/mse": ("sobolev1", "sum_of_heads", "mse"),
    # L2 on the sum-of-heads network: separates the architecture's effect from the loss's.
    "l2/sum_of_heads": ("l2", "sum_of_heads", None),
}
METHOD_NAMES = ("l2", "sobolev1", "sobolev2", "sobolev1+2")
#: L2 and Sobolev 2 put their loss on the final output of the paper's plain network
#: (reconstruction "output"); Sobolev 1 and 1+2 use the library defaults.
PLAIN_NETWORK_METHODS = ("l2", "sobolev2")
BASELINES = ("fft_lowpass", "fft_lowpass_detrended")
EPSILONS = (0.05, 0.5, 1.0)
BAND_EDGES = (8, 32, 64)  # bands [0, 8], (8, 32], (32, 64], (64, Nyquist] in torus frequency
BAND_LABELS = ("[0,8]", "(8,32]", "(32,64]", "(64,Nyq]")


@dataclass(frozen=True)
class StudyConfig:
    """Settings of one study run (all recorded with the results)."""

    n_test: int = 256
    steps: int = 2000
    learning_rate: float = 1e-2
    steps_per_execution: int = 500
    seeds: int = 5
    ambiguity_seeds: int = 3
    depth: int = 9
    units: int = 20
    activation: str = "tanh"
    workers: int = 2


@dataclass(frozen=True)
class RunResult:
    """Clean-signal error of one reconstruction; seed 0 keeps its curves for the figures."""

    variant: str
    epsilon: float
    seed: int
    rmse: float
    band_rms: tuple[float, ...]
    cpu_seconds: float
    reconstruction: tuple[float, ...] = ()
    heads: tuple[tuple[float, ...], ...] = ()


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
    """RMS of a uniform-grid error in each band; their squares sum to the mean square."""
    n = len(error)
    power = np.abs(np.fft.rfft(error) / n) ** 2
    power[1 : (n + 1) // 2] *= 2.0  # conjugate pairs; the Nyquist bin of an even grid once
    k = np.arange(len(power))
    edges = (-1, *BAND_EDGES, n // 2)
    return tuple(
        float(np.sqrt(power[(k > lo) & (k <= hi)].sum())) for lo, hi in zip(edges, edges[1:])
    )


def shell_component(values: np.ndarray, shell: int) -> np.ndarray:
    """The |k| = shell Fourier component of uniform-grid values (a pure sinusoid)."""
    coeffs = np.fft.rfft(values)
    kept = np.zeros_like(coeffs)
    kept[shell] = coeffs[shell]
    return np.fft.irfft(kept, len(values))


def lowpass_baseline(
    y: np.ndarray, t_train: np.ndarray, t_eval: np.ndarray, detrend: bool = False
) -> tuple[np.ndarray, int]:
    """FFT low-pass of uniform-grid data, cut-off K by exact leave-one-out cross-validation.

    Keeping |k| ≤ K is a least-squares projection whose hat matrix has the constant diagonal
    (2K + 1)/n on a uniform grid, so the leave-one-out residual is r/(1 − (2K + 1)/n).
    With ``detrend`` a least-squares line in t is removed first and added back (that line's
    two degrees of freedom are ignored in the cross-validation score).
    """
    line = np.polynomial.Polynomial.fit(t_train, y, 1) if detrend else None
    residual = y - line(t_train) if detrend else y
    n = len(residual)
    coeffs = np.fft.rfft(residual) / n
    scores = []
    for cutoff in range((n - 1) // 2):
        kept = coeffs.copy()
        kept[cutoff + 1 :] = 0.0
        fit = np.fft.irfft(kept * n, n)
        scores.append(np.mean((residual - fit) ** 2) / (1.0 - (2 * cutoff + 1) / n) ** 2)
    cutoff = int(np.argmin(scores))
    phase = np.exp(2j * np.pi * np.outer(t_eval, np.arange(1, cutoff + 1)))
    values = coeffs[0].real + 2.0 * (phase @ coeffs[1 : cutoff + 1]).real
    return (values + line(t_eval) if detrend else values), cutoff


def variant_spec(name: str) -> tuple[str, str, str | None]:
    """(method, reconstruction, output_loss) of a method or reading name."""
    from keras_koopman.losses import DEFAULT_OUTPUT_LOSS
    from keras_koopman.sobolev_model import DEFAULT_RECONSTRUCTION

    if name in READINGS:
        return READINGS[name]
    if name in PLAIN_NETWORK_METHODS:
        return name, "output", None
    if name in METHOD_NAMES:
        return name, DEFAULT_RECONSTRUCTION, DEFAULT_OUTPUT_LOSS
    raise ValueError(f"unknown variant {name!r}; expected one of {METHOD_NAMES + tuple(READINGS)}")


def default_reading() -> str:
    """The reading that the library defaults implement (what "sobolev1" trains)."""
    _, reconstruction, output_loss = variant_spec("sobolev1")
    return f"s1/{reconstruction}/{output_loss or 'none'}"


def _init_worker() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def train_model(variant: str, data: dict[str, np.ndarray], config: StudyConfig, seed: int):
    """Train one network full-batch on the noisy training grid; return the fitted model."""
    import keras
    import tensorflow as tf

    from keras_koopman.sobolev_model import SobolevHeadsModel

    method, reconstruction, output_loss = variant_spec(variant)
    keras.utils.set_random_seed(seed)
    model = SobolevHeadsModel(
        depth=config.depth, units=config.units, activation=config.activation,
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


def run_one(task: tuple[str, float, int, StudyConfig]) -> RunResult:
    """Train and score one (variant, ε, seed)."""
    import warnings

    warnings.filterwarnings("ignore", message="Gradients do not exist")
    variant, epsilon, seed, config = task
    start = time.process_time()
    data = make_data(config.n_test, epsilon, seed)
    model = train_model(variant, data, config, seed)
    inputs = (2.0 * data["t_test"] - 1.0)[None, :, None].astype("float32")
    recon = model.predict(inputs, verbose=0)[0, :, 0].astype(np.float64)
    error = recon - data["h_test"]
    if not np.all(np.isfinite(error)):
        raise FloatingPointError(f"{variant} ε={epsilon} seed={seed}: non-finite reconstruction")
    keep = seed == 0
    heads = model.predict_heads(inputs)[0, :, :, 0] if keep and variant == "sobolev1" else ()
    return RunResult(
        variant, epsilon, seed, float(np.sqrt(np.mean(error**2))), band_rms(error),
        time.process_time() - start,
        tuple(recon.tolist()) if keep else (),
        tuple(tuple(row) for row in np.asarray(heads, np.float64).tolist()),
    )


def baseline_results(config: StudyConfig) -> list[RunResult]:
    """The FFT low-pass baselines for every ε and seed."""
    results = []
    for name, detrend in zip(BASELINES, (False, True)):
        for epsilon in EPSILONS:
            for seed in range(config.seeds):
                data = make_data(config.n_test, epsilon, seed)
                values, _ = lowpass_baseline(data["y_train"], data["t_train"], data["t_test"], detrend)
                error = values - data["h_test"]
                results.append(RunResult(
                    name, epsilon, seed, float(np.sqrt(np.mean(error**2))), band_rms(error), 0.0,
                    tuple(values.tolist()) if seed == 0 else (),
                ))
    return results


def summarise(results: list[RunResult]) -> dict[str, dict[float, dict]]:
    """variant -> ε -> RMSE [mean, std], mean band RMS, number of seeds."""
    table: dict[str, dict[float, dict]] = {}
    for variant in dict.fromkeys(r.variant for r in results):
        table[variant] = {}
        for epsilon in EPSILONS:
            rows = [r for r in results if r.variant == variant and r.epsilon == epsilon]
            if rows:
                rmse = np.array([r.rmse for r in rows])
                table[variant][epsilon] = {
                    "rmse": [float(rmse.mean()), float(rmse.std(ddof=1)) if len(rows) > 1 else 0.0],
                    "bands": np.mean([r.band_rms for r in rows], axis=0).tolist(),
                    "n": len(rows),
                }
    return table


def write_json(path: str, payload: dict) -> None:
    """Atomic JSON write."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle)
    os.replace(tmp, path)


def print_tables(table: dict, clean_bands: tuple[float, ...]) -> None:
    """Markdown tables: RMSE mean ± std (n seeds), then mean band RMS."""
    print("\n| variant | " + " | ".join(f"ε = {e}" for e in EPSILONS) + " | seeds |")
    print("|---|" + "---|" * (len(EPSILONS) + 1))
    for variant, rows in table.items():
        cells = [f"{rows[e]['rmse'][0]:.3f} ± {rows[e]['rmse'][1]:.3f}" if e in rows else "–" for e in EPSILONS]
        seeds = max(r["n"] for r in rows.values())
        print(f"| {variant} | " + " | ".join(cells) + f" | {seeds} |")
    print("\nBand RMS of the clean-signal error (mean over seeds); 'clean h' row: the signal's own band RMS")
    print("| variant | ε | " + " | ".join(BAND_LABELS) + " |")
    print("|---|---|" + "---|" * len(BAND_LABELS))
    print("| clean h | – | " + " | ".join(f"{v:.3f}" for v in clean_bands) + " |")
    for epsilon in EPSILONS:
        for variant, rows in table.items():
            if epsilon in rows:
                print(f"| {variant} | {epsilon} | " + " | ".join(f"{v:.3f}" for v in rows[epsilon]["bands"]) + " |")


def make_figures(config: StudyConfig, figdir: str, results: list[RunResult], table: dict) -> list[str]:
    """Figures in the layout of the paper's Figures 3 and 4, the heads, and an RMSE summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(figdir, exist_ok=True)
    curves = {(r.variant, r.epsilon): r for r in results if r.seed == 0 and r.reconstruction}
    written = []

    def save(fig, name: str) -> None:
        path = os.path.join(figdir, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    def panels(variants: tuple[str, ...], name: str, title: str) -> None:
        variants = tuple(v for v in variants if (v, EPSILONS[0]) in curves)
        if not variants:
            return
        fig, axes = plt.subplots(len(EPSILONS), len(variants), figsize=(4.0 * len(variants), 2.5 * len(EPSILONS)),
                                 sharex=True, squeeze=False)
        for row, epsilon in enumerate(EPSILONS):
            data = make_data(config.n_test, epsilon, 0)
            spread = np.ptp(data["h_test"])
            for col, variant in enumerate(variants):
                ax = axes[row, col]
                recon = np.array(curves[variant, epsilon].reconstruction)
                ax.plot(2 * data["t_train"], data["y_train"], ".", ms=1.2, color="0.75", label="noisy data")
                ax.plot(2 * data["t_test"], data["h_test"], "-", lw=0.9, color="k", label="clean h")
                ax.plot(2 * data["t_test"], recon, "-", lw=1.2, color="C3", label="reconstruction")
                ax.set_title(f"{variant}, ε = {epsilon}: RMSE {curves[variant, epsilon].rmse:.3f}", fontsize=9)
                ax.set_ylim(data["h_test"].min() - 0.5 * spread, data["h_test"].max() + 0.5 * spread)
                if row == len(EPSILONS) - 1:
                    ax.set_xlabel("x")
        axes[0, 0].legend(loc="upper left", fontsize=7, markerscale=4)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        save(fig, name)

    panels(("l2", "sobolev1", "fft_lowpass_detrended"), "sobolev_fig3.png",
           "Figure 3 layout: L2, Sobolev 1 and the detrended FFT low-pass baseline (seed 0)")
    panels(("sobolev2", "sobolev1+2", "fft_lowpass"), "sobolev_fig4.png",
           "Figure 4 layout: Sobolev 2, Sobolev 1+2 and the plain FFT low-pass baseline (seed 0)")

    head_runs = [r for r in results if r.heads]
    if head_runs:
        run = min(head_runs, key=lambda r: r.epsilon)
        data = make_data(config.n_test, run.epsilon, 0)
        heads = np.array(run.heads)
        from keras_koopman.losses import resolve_scale

        shell = resolve_scale("linear")
        fig, axes = plt.subplots(3, 3, figsize=(11, 6.2), sharex=True)
        for layer, ax in enumerate(axes.ravel()[: len(heads)]):
            x = 2 * data["t_test"]
            ax.plot(x, heads[layer], color="C0", lw=1.0, label="head f_ℓ")
            ax.plot(x, shell_component(heads[layer], shell(layer)), "--", color="C1", lw=1.0,
                    label="its |k| = s(ℓ) part")
            ax.plot(x, shell_component(data["h_test"], shell(layer)), ":", color="k", lw=1.2,
                    label="clean h's |k| = s(ℓ) part")
            ax.set_title(f"head {layer} (trained on shell |k| = {shell(layer)})", fontsize=9)
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(f"Sobolev 1 heads f_ℓ = C_ℓ z_ℓ after training (ε = {run.epsilon}, seed 0)", fontsize=10)
        fig.tight_layout()
        save(fig, "sobolev_heads.png")

    variants = [v for v in (*BASELINES, *METHOD_NAMES) if v in table]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        means = [table[variant][e]["rmse"][0] for e in EPSILONS]
        stds = [table[variant][e]["rmse"][1] for e in EPSILONS]
        ax.bar(np.arange(len(EPSILONS)) + i * width, means, width, yerr=stds, capsize=3, label=variant)
    ax.set_xticks(np.arange(len(EPSILONS)) + 0.4 - width / 2, [f"ε = {e}" for e in EPSILONS])
    ax.set_ylabel("clean-signal RMSE (test grid)")
    ax.legend(fontsize=8, ncol=3)
    ax.set_title(f"mean ± std over {config.seeds} seeds", fontsize=9)
    fig.tight_layout()
    save(fig, "sobolev_rmse.png")
    return written


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run the study from command-line arguments (``--help`` lists them); return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).
    prog : str, optional
        Program name shown in ``--help`` and in argument errors.
    """
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=StudyConfig.n_test, help="test points (train = 3×)")
    parser.add_argument("--steps", type=int, default=StudyConfig.steps)
    parser.add_argument("--lr", type=float, default=StudyConfig.learning_rate)
    parser.add_argument("--seeds", type=int, default=StudyConfig.seeds, help="seeds per method and ε")
    parser.add_argument("--ambiguity-seeds", type=int, default=StudyConfig.ambiguity_seeds,
                        help="seeds per ambiguity reading and ε")
    parser.add_argument("--workers", type=int, default=StudyConfig.workers)
    parser.add_argument("--variants", default=",".join([*METHOD_NAMES, *READINGS]),
                        help="comma-separated methods and readings s1/<reconstruction>/<output loss>")
    parser.add_argument("--json", default=os.path.join(tempfile.gettempdir(), "sobolev_study.json"))
    parser.add_argument("--figdir", default="sobolev_figures", help="folder for the figures")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    config = StudyConfig(n_test=args.n_test, steps=args.steps, learning_rate=args.lr, seeds=args.seeds,
                         ambiguity_seeds=args.ambiguity_seeds, workers=args.workers)
    variants = [v for v in args.variants.split(",") if v]
    for variant in variants:
        variant_spec(variant)
    # The default reading is what "sobolev1" trains: reuse those runs instead of repeating them.
    shared = default_reading() if "sobolev1" in variants else None
    tasks = [
        (v, e, s, config)
        for v in variants if v != shared
        for e in EPSILONS
        for s in range(config.seeds if v in METHOD_NAMES else config.ambiguity_seeds)
    ]
    start = time.perf_counter()
    results = []
    with multiprocessing.get_context("spawn").Pool(config.workers, initializer=_init_worker) as pool:
        for result in pool.imap_unordered(run_one, tasks):
            results.append(result)
            print(f"[{time.perf_counter() - start:6.0f}s] {result.variant:22s} ε={result.epsilon:<5} "
                  f"seed={result.seed} RMSE={result.rmse:.4f} (CPU {result.cpu_seconds:.1f}s)", flush=True)
    cpu_total = sum(r.cpu_seconds for r in results)
    if shared is not None:
        results += [dataclasses.replace(r, variant=shared, heads=()) for r in results if r.variant == "sobolev1"]
    order = [*BASELINES, *METHOD_NAMES, *READINGS]
    results = baseline_results(config) + sorted(results, key=lambda r: (order.index(r.variant), r.epsilon, r.seed))
    table = summarise(results)
    clean_bands = band_rms(make_data(config.n_test, 0.0, 0)["h_test"])
    print_tables(table, clean_bands)
    readings = [v for v in READINGS if v in table and v.startswith("s1/")]
    if readings:
        score = {v: np.mean([table[v][e]["rmse"][0] for e in EPSILONS if e in table[v]]) for v in readings}
        best = min(score, key=score.get)
        print(f"\nbest Sobolev-1 reading by RMSE averaged over ε: {best}; library default: {default_reading()}"
              + ("" if best == default_reading() else "  <-- defaults disagree with this measurement"))
    write_json(args.json, {
        "config": dataclasses.asdict(config),
        "default_reading": default_reading(),
        "results": [dataclasses.asdict(r) for r in results],
        "summary": {v: {str(e): s for e, s in rows.items()} for v, rows in table.items()},
        "clean_band_rms": clean_bands,
    })
    print(f"\nresults: {args.json}; training wall time {time.perf_counter() - start:.0f}s, "
          f"training CPU time {cpu_total:.0f}s over {len(tasks)} runs")
    if not args.no_figures:
        for path in make_figures(config, args.figdir, results, table):
            print("figure:", os.path.relpath(path))
    return 0
