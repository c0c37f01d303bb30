"""Benchmark: DMD_RRR column scaling (``scale=True``) against none (``scale=False``).

Column scaling (DMD_RRR step 1, ``X₁ = X D⁻¹``) leaves ``A`` unchanged only when an exact
linear map explains the data; with noise it turns the least-squares fit into a weighted one
(every snapshot counts equally, whatever its size).  This script measures which setting gives
the more accurate spectrum on the observables keras-koopman analyses, where the true
eigenvalues are known:

* ``weights``: noisy gradient descent ``w ← w − η(Hw − b) + σξ`` (η = 0.5) on random
  quadratics (20 weights, ``‖w*‖ ≈ 10``; five directions displaced by 1–2 at the start, with
  curvatures 0.05, 0.3, 0.8, 1.2, 1.7; the other 15 only excited by the noise), with the
  constant 1 appended to every snapshot (the monitor's default); true important eigenvalues:
  ``1 − η h`` of the three slowest displaced directions and 1;
* ``loss``: Hankel-embedded loss curves ``Σ_j c_j λ_jᵗ + noise`` (3–4 exponentials, ``c_j``
  spanning three orders of magnitude, depth ``T // 3`` as in ``analyze_series``), relative
  noise levels as listed;
* ``oscillation``: a decaying oscillation ``r^t (cos θt, sin θt)`` seen through a random
  30×2 basis, plus noise.

Each family runs at three noise levels and ``--seeds`` seeds.  The analysis is the product's:
``tol`` at float32 rounding level (``default_tol(n, float32)``) and ``refine=0.01``.  Metrics per
run: the eigenvalue error (largest distance from a true important eigenvalue to the nearest
computed eigenvalue of importance ≥ 0.01), and the unit cluster and spectral radius from
``diagnose`` against the same diagnostics of the noise-free data.  Seeds of the first half
choose the setting: the sign of the median, over the runs of the product's observables
(``weights`` and ``loss``), of the paired ``log10(error scale=True / error scale=False)``;
the second half (held out) reports it, per family and noise level.

Usage::

    python scripts/bench_scaling.py               # 40 seeds (20 choose, 20 held out)
    python scripts/bench_scaling.py --seeds 8     # smoke test
"""

from __future__ import annotations

import argparse
import datetime
import time

import numpy as np

from keras_koopman import diagnose, dmd_rrr, dmd_rrr_series
from keras_koopman.koopman import default_tol

NOISE = {"weights": [1e-5, 1e-4, 1e-3], "loss": [1e-6, 1e-4, 1e-2],
         "oscillation": [1e-5, 1e-3, 1e-1]}
REFINE = 0.01  # the diagnostics' min_importance, the monitor's refinement level


def weights_case(rng: np.random.Generator, noise: float):
    """``(clean, noisy, true eigenvalues, analyse)`` for noisy gradient descent + constant 1."""
    n, eta, steps = 20, 0.5, 60
    excited = [0, 1, 2, 3, 4]  # curvatures 0.05, 0.3, 0.8, 1.2, 1.7: λ = 0.975 … 0.15
    h = np.concatenate([[0.05, 0.3, 0.8, 1.2, 1.7], rng.uniform(0.05, 1.8, n - 5)])
    basis = np.linalg.qr(rng.standard_normal((n, n)))[0]
    H = basis @ np.diag(h) @ basis.T
    w_star = 10.0 * rng.standard_normal(n) / np.sqrt(n)
    b = H @ w_star
    start = w_star + basis[:, excited] @ rng.uniform(1.0, 2.0, len(excited))
    clean, noisy = [start], [start]
    for _ in range(steps):
        clean.append(clean[-1] - eta * (H @ clean[-1] - b))
        noisy.append(noisy[-1] - eta * (H @ noisy[-1] - b) + noise * rng.standard_normal(n))
    ones = np.ones((1, steps + 1))
    truth = np.append(1 - eta * h[excited[:3]], 1.0)  # slow, important ones

    def analyse(F, scale):
        return dmd_rrr(F, tol=default_tol(F.shape[0], np.float32), scale=scale, refine=REFINE)

    return (np.vstack([np.array(clean).T, ones]), np.vstack([np.array(noisy).T, ones]),
            truth, analyse)


def loss_case(rng: np.random.Generator, noise: float):
    """Loss curve: 3–4 decaying exponentials with coefficients over three orders, plus noise."""
    T = 90
    k = int(rng.integers(3, 5))
    rates = np.sort(rng.uniform(0.55, 0.985, k))[::-1]
    while np.min(np.abs(np.diff(rates))) < 0.04:
        rates = np.sort(rng.uniform(0.55, 0.985, k))[::-1]
    coefficients = 10.0 ** rng.uniform(-2, 1, k)
    t = np.arange(T)
    clean = (coefficients[:, None] * rates[:, None] ** t).sum(axis=0)
    noisy = clean + noise * clean * rng.standard_normal(T)  # relative (multiplicative) noise
    important = coefficients >= 0.05 * coefficients.max()

    def analyse(series, scale):
        return dmd_rrr_series(series, delays=T // 3, tol=default_tol(T // 3, np.float32),
                              scale=scale, refine=REFINE)

    return clean, noisy, rates[important], analyse


def oscillation_case(rng: np.random.Generator, noise: float):
    """A decaying oscillation in 30 dimensions plus noise."""
    T, n = 80, 30
    radius, angle = rng.uniform(0.9, 0.99), rng.uniform(0.1, 1.0)
    t = np.arange(T)
    latent = radius ** t * np.array([np.cos(angle * t), np.sin(angle * t)])
    clean = rng.standard_normal((n, 2)) @ latent
    noisy = clean + noise * rng.standard_normal((n, T))
    lam = radius * np.exp(1j * angle)

    def analyse(F, scale):
        return dmd_rrr(F, tol=default_tol(n, np.float32), scale=scale, refine=REFINE)

    return clean, noisy, np.array([lam, np.conj(lam)]), analyse


CASES = {"weights": weights_case, "loss": loss_case, "oscillation": oscillation_case}


def eigenvalue_error(km, truth: np.ndarray) -> float:
    chosen = km.eigenvalues[km.importance >= REFINE]
    if chosen.size == 0:
        return float("inf")
    return float(np.abs(truth[:, None] - chosen[None, :]).min(axis=1).max())


def run(seeds: int) -> list[dict]:
    rows = []
    for family, make in CASES.items():
        for noise in NOISE[family]:
            for seed in range(seeds):
                rng = np.random.default_rng([seed, len(family), int(-np.log10(noise))])
                clean, noisy, truth, analyse = make(rng, noise)
                reference = diagnose(analyse(clean, True))
                for scale in (True, False):
                    km = analyse(noisy, scale)
                    d = diagnose(km)
                    rows.append(dict(
                        family=family, noise=noise, seed=seed, scale=scale,
                        error=eigenvalue_error(km, truth),
                        unit_cluster=abs(d.unit_cluster - reference.unit_cluster),
                        radius=abs(d.spectral_radius - reference.spectral_radius)))
    return rows


PRODUCT = ("weights", "loss")  # the observables KoopmanMonitor analyses; they set the default


def paired_log_ratio(rows: list[dict], families) -> float:
    """Median over runs of ``log10(error with scale=True / error with scale=False)``: negative
    when scaling is more accurate.  Paired by (family, noise, seed)."""
    on = {(r["family"], r["noise"], r["seed"]): r["error"] for r in rows if r["scale"]}
    ratios = [np.log10(max(on[key], 1e-17) / max(r["error"], 1e-17)) for r in rows
              if not r["scale"] and (key := (r["family"], r["noise"], r["seed"])) in on
              and r["family"] in families]
    return float(np.median(ratios))


def summarise(rows: list[dict], seeds: int) -> None:
    half = seeds // 2
    choose = [r for r in rows if r["seed"] < half]
    held = [r for r in rows if r["seed"] >= half]
    print("median paired log10(error scale=True / error scale=False), < 0: scaling better")
    print("| families | choice half | held-out half |\n|---|---|---|")
    for families in [PRODUCT, *[(family,) for family in CASES]]:
        print(f"| {' + '.join(families)} | {paired_log_ratio(choose, families):+.2f} | "
              f"{paired_log_ratio(held, families):+.2f} |")
    chosen = paired_log_ratio(choose, PRODUCT) < 0
    print(f"\nchosen on the choice half (seeds 0..{half - 1}) over {' + '.join(PRODUCT)}: "
          f"scale={chosen}; held out (seeds {half}..{seeds - 1}) it "
          f"{'agrees' if (paired_log_ratio(held, PRODUCT) < 0) == chosen else 'DISAGREES'}")
    print(f"\nheld-out half (seeds {half}..{seeds - 1}), medians over seeds:")
    print("| family | noise | error scale=True | error scale=False | ratio T/F | "
          "False better (seeds) | unit-cluster dev T / F | radius dev T / F |")
    print("|---|---|---|---|---|---|---|---|")
    for family in CASES:
        for noise in NOISE[family]:
            group = [r for r in held if r["family"] == family and r["noise"] == noise]
            on = [r for r in group if r["scale"]]
            off = [r for r in group if not r["scale"]]
            e_on = np.median([r["error"] for r in on])
            e_off = np.median([r["error"] for r in off])
            wins = sum(b["error"] < a["error"] for a, b in zip(on, off))
            uc = (np.median([r["unit_cluster"] for r in on]),
                  np.median([r["unit_cluster"] for r in off]))
            rad = (np.median([r["radius"] for r in on]), np.median([r["radius"] for r in off]))
            print(f"| {family} | {noise:g} | {e_on:.2e} | {e_off:.2e} | {e_on / e_off:.3g} | "
                  f"{wins}/{len(on)} | {uc[0]:.3f} / {uc[1]:.3f} | {rad[0]:.2e} / {rad[1]:.2e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40, help="seeds per family and noise level")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (one half chooses, the other reports)")
    start = time.perf_counter()
    rows = run(args.seeds)
    print(f"# bench_scaling, {datetime.date.today()}, {args.seeds} seeds, "
          f"{time.perf_counter() - start:.0f} s\n")
    summarise(rows, args.seeds)


if __name__ == "__main__":
    main()
