"""Benchmark: ``dmd_rrr`` against LAPACK ``dgedmd``/``dgedmdq`` and PyDMD's ``DMD``.

Data: a synthetic weight trajectory ``w_t = w* + Σ_j c_j λ_j^t v_j`` (t = 0 … T−1) with one
λ = 1 fixed point (w*), ``--real`` real decaying modes and ``--pairs`` complex-conjugate pairs,
generated in float32 so that it carries float32 rounding noise like TensorFlow weights (see
``make_trajectory`` for the exact recipe).  Every method gets the same float64, Fortran-order copy
of the trajectory ``F`` (n × T; pairs ``F[:, :-1] -> F[:, 1:]``) and the same truncation:

* ``dmd_rrr``: ``tol=--tol`` (relative to σ₁ of the column-scaled X), ``scale=True``, with
  ``refine=True`` (the reference row) and ``refine=False``;
* LAPACK ``dgedmd`` (on ``X = F[:, :-1]``, ``Y = F[:, 1:]``) and ``dgedmdq`` (on F):
  ``JOBS='S'``, ``NRNK=-1``, ``TOL=--tol``, ``WHTSVD=1`` (DGESVD), Ritz vectors and residuals,
  optimal workspace;
* PyDMD ``DMD(svd_rank=k, exact=False)`` with k the rank chosen by ``dmd_rrr`` (PyDMD has no
  relative-tolerance rule and does not scale columns; its other arguments are the defaults:
  no TLSQ, no optimal amplitudes); PyDMD computes no residuals.

Each method runs alone in a fresh subprocess (numpy, scipy and the LAPACK oracle at their
default thread counts, or ``--threads``).  Reported: wall and CPU time of the call (CPU
time, ``time.process_time``, is the robust figure on a shared machine with ``--threads 1``), their
ratios to ``dmd_rrr`` (refined), the largest distance between the method's eigenvalues and ``dmd_rrr``'s
(matched by minimal total distance), the largest distance from a planted eigenvalue to the
nearest computed one, the largest residual among the pairs nearest to the planted eigenvalues,
and the peak resident-memory increase during the call (Linux ``VmHWM`` reset through
``/proc/self/clear_refs``) divided by the size of the float64 input.

Usage::

    python scripts/bench_dmd.py            # 65,558 × 500 and 1,000,000 × 200
    python scripts/bench_dmd.py --quick    # 20,000 × 200 and 100,000 × 200 (smoke test)
    python scripts/bench_dmd.py --threading --repeat 5   # BLAS threads vs threadpool_limits(1)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

FULL_SIZES = [(65_558, 500), (1_000_000, 200)]
QUICK_SIZES = [(20_000, 200), (100_000, 200)]
METHODS = ["dmd_rrr", "dmd_rrr(refine=False)", "dgedmd", "dgedmdq", "pydmd.DMD"]


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def planted_eigenvalues(n_real: int, n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """The planted spectrum: ``(real λ's, one λ per conjugate pair with Im λ > 0)``.

    Real: ``1 − logspace(−2.3, −0.7, n_real)`` (0.995 … 0.8, decay times 200 … 4.5 epochs).
    Pairs: ``r = 1 − logspace(−2.3, −1, n_pairs)`` (0.995 … 0.9),
    ``θ = linspace(0.1, 2.8, n_pairs)`` radians.  With the defaults (7 real, 11 pairs) every
    planted mode stays ≥ 1000× above the float32 noise floor of the scaled snapshots
    (σ_30/σ_1 ≥ 4e-6 against ≈ 3e-9 for T = 200 and 500), so a tolerance of 1e-6 keeps
    exactly the 30 planted directions.
    The fixed point λ = 1 (the minimiser w*) comes on top.
    """
    real = 1.0 - np.logspace(-2.3, -0.7, n_real)
    radius = 1.0 - np.logspace(-2.3, -1, n_pairs)
    angle = np.linspace(0.1, 2.8, n_pairs)
    return real, radius * np.exp(1j * angle)


def make_trajectory(n: int, snapshots: int, *, n_real: int, n_pairs: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Weight-trajectory-like float32 matrix ``F`` (n × snapshots) and its planted eigenvalues.

    Recipe (``rng = np.random.default_rng(seed)``, everything float32 unless stated):
    ``w* ~ N(0, 0.05²)`` per weight; one unit direction ``v_j`` per real mode and two
    (``v_j^re, v_j^im``) per pair, i.i.d. Gaussian normalised to unit norm; amplitudes
    ``c_j = ‖w*‖ · 10^U(−2, −0.5)`` and, for pairs, a phase ``φ_j ~ U(0, 2π)``.  Then
    ``w_t = w* + Σ_real c_j λ_j^t v_j + Σ_pairs c_j |λ_j|^t (cos(θ_j t + φ_j) v_j^re
    + sin(θ_j t + φ_j) v_j^im)``: the time coefficients are computed in float64, rounded to
    float32, and combined with one float32 GEMM, so every entry carries float32 rounding
    (relative ≈ 6e-8, what a TensorFlow weight snapshot holds).
    """
    rng = np.random.default_rng(seed)
    real, pairs = planted_eigenvalues(n_real, n_pairs)
    w_star = (0.05 * rng.standard_normal(n)).astype(np.float32)
    n_dirs = n_real + 2 * n_pairs
    directions = rng.standard_normal((n, n_dirs), dtype=np.float32)
    directions /= np.linalg.norm(directions, axis=0)
    scale = float(np.linalg.norm(w_star.astype(np.float64)))
    amp_real = scale * 10 ** rng.uniform(-2, -0.5, n_real)
    amp_pair = scale * 10 ** rng.uniform(-2, -0.5, n_pairs)
    phase = rng.uniform(0, 2 * np.pi, n_pairs)
    t = np.arange(snapshots)
    coeff = np.empty((n_dirs, snapshots))
    coeff[:n_real] = amp_real[:, None] * real[:, None] ** t
    radius_t = np.abs(pairs)[:, None] ** t * amp_pair[:, None]
    angle_t = np.angle(pairs)[:, None] * t + phase[:, None]
    coeff[n_real::2] = radius_t * np.cos(angle_t)
    coeff[n_real + 1::2] = radius_t * np.sin(angle_t)
    F = directions @ coeff.astype(np.float32)
    F += w_star[:, None]
    eigenvalues = np.concatenate([[1.0], real, pairs, pairs.conj()]).astype(np.complex128)
    return F, eigenvalues


# ---------------------------------------------------------------------------------------------
# One method in one process
# ---------------------------------------------------------------------------------------------

def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def run_worker(method: str, data_path: str, tol: float, rank: int | None, repeat: int,
               result_path: str) -> None:
    """Load the trajectory, run ``method`` ``repeat`` times, save eigenvalues, time and memory."""
    from keras_koopman import dmd_rrr
    import lapack_oracle as _lapack  # beside this script (sys.path[0])
    from pydmd import DMD

    F32 = np.load(data_path)
    F = np.asfortranarray(F32, dtype=np.float64)
    del F32

    def call():
        if method == "dmd_rrr":
            out = dmd_rrr(F, tol=tol, scale=True, refine=True)
            return out.eigenvalues, out.residuals, out.rank
        if method == "dmd_rrr(refine=False)":
            out = dmd_rrr(F, tol=tol, scale=True, refine=False)
            return out.eigenvalues, out.residuals, out.rank
        if method == "dgedmd":
            out = _lapack.dgedmd(F[:, :-1], F[:, 1:], jobs="S", whtsvd=1, nrnk=-1, tol=tol)
            return out.eigenvalues, out.residuals, out.rank
        if method == "dgedmdq":
            out = _lapack.dgedmdq(F, jobs="S", whtsvd=1, nrnk=-1, tol=tol)
            return out.eigenvalues, out.residuals, out.rank
        if method == "pydmd.DMD":
            model = DMD(svd_rank=rank, exact=False).fit(F)
            return model.eigs, np.full(model.eigs.shape, np.nan), int(model.eigs.size)
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")

    times, cpu_times, peak_kib = [], [], float("nan")
    for attempt in range(repeat):
        baseline = _status_kib("VmRSS")
        tracked = _reset_peak_rss()
        start, cpu_start = time.perf_counter(), time.process_time()
        eigenvalues, residuals, k = call()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        if attempt == 0 and tracked:
            peak_kib = _status_kib("VmHWM") - baseline
    tmp = result_path + ".tmp.npz"
    np.savez(tmp, eigenvalues=np.asarray(eigenvalues, dtype=np.complex128),
             residuals=np.asarray(residuals, dtype=np.float64), rank=k,
             seconds=min(times), cpu_seconds=min(cpu_times), peak_bytes=peak_kib * 1024.0,
             input_bytes=float(F.nbytes))
    os.replace(tmp, result_path)


def run_method(method: str, data_path: str, tol: float, rank: int | None, repeat: int,
               workdir: str, threads: int | None) -> dict:
    result_path = os.path.join(workdir, f"result_{METHODS.index(method)}.npz")
    command = [sys.executable, os.path.abspath(__file__), "--worker", method,
               "--data", data_path, "--tol", repr(tol), "--repeat", str(repeat),
               "--result", result_path]
    if rank is not None:
        command += ["--rank", str(rank)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if threads is not None:  # read by all three OpenBLAS copies (numpy, scipy, LAPACK oracle)
        env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr[-4000:]}")
    with np.load(result_path) as data:
        return {key: data[key] for key in data.files}


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------

def max_matched_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a_i − b_j| over a minimal-total-distance matching (min(len) pairs)."""
    if a.size == 0 or b.size == 0:
        return float("nan")
    rows, cols = linear_sum_assignment(np.abs(a[:, None] - b[None, :]))
    return float(np.max(np.abs(a[rows] - b[cols])))


def max_error_to_truth(truth: np.ndarray, computed: np.ndarray) -> float:
    """Largest distance from a planted eigenvalue to the nearest computed one."""
    return float(np.max(np.min(np.abs(truth[:, None] - computed[None, :]), axis=1)))


def bench_size(n: int, snapshots: int, args, workdir: str) -> list[dict]:
    F32, truth = make_trajectory(n, snapshots, n_real=args.real, n_pairs=args.pairs,
                                 seed=args.seed)
    data_path = os.path.join(workdir, "trajectory.npy")
    np.save(data_path + ".tmp.npy", F32)
    os.replace(data_path + ".tmp.npy", data_path)
    del F32
    rows = []
    reference = None
    for method in METHODS:
        rank = int(reference["rank"]) if reference is not None else None
        result = run_method(method, data_path, args.tol, rank, args.repeat, workdir,
                            args.threads)
        if reference is None:
            reference = result
        rows.append({
            "method": method,
            "k": int(result["rank"]),
            "seconds": float(result["seconds"]),
            "cpu": float(result["cpu_seconds"]),
            "ratio": float(result["seconds"]) / float(reference["seconds"]),
            "cpu_ratio": float(result["cpu_seconds"]) / float(reference["cpu_seconds"]),
            "dlam": max_matched_distance(result["eigenvalues"], reference["eigenvalues"]),
            "truth": max_error_to_truth(truth, result["eigenvalues"]),
            "max_res_true": _max_residual_near(truth, result),
            "mem": float(result["peak_bytes"]) / float(result["input_bytes"]),
        })
        print(f"  {method:22s} {rows[-1]['seconds']:8.2f} s wall {rows[-1]['cpu']:8.2f} s cpu",
              file=sys.stderr, flush=True)
    os.remove(data_path)
    return rows


def _max_residual_near(truth: np.ndarray, result: dict) -> float:
    """Largest residual among the computed pairs nearest to the planted eigenvalues."""
    eig, res = result["eigenvalues"], result["residuals"]
    nearest = np.argmin(np.abs(truth[:, None] - eig[None, :]), axis=1)
    return float(np.max(res[nearest]))


def format_table(n: int, snapshots: int, rows: list[dict], planted: int) -> str:
    lines = [f"n = {n:,}, T = {snapshots} snapshots ({snapshots - 1} pairs), "
             f"{planted} planted eigenvalues, input {n * snapshots * 8 / 2**30:.2f} GiB float64",
             "",
             "| method | k | wall (s) | CPU (s) | CPU / dmd_rrr | wall / dmd_rrr "
             "| max \\|Δλ\\| vs dmd_rrr | max \\|λ − λ_true\\| | max residual (true modes) "
             "| peak mem / input |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        res = "—" if np.isnan(row["max_res_true"]) else f"{row['max_res_true']:.1e}"
        lines.append(f"| {row['method']} | {row['k']} | {row['seconds']:.2f} | {row['cpu']:.2f} | "
                     f"{row['cpu_ratio']:.2f} | {row['ratio']:.2f} | {row['dlam']:.1e} | {row['truth']:.1e} | {res} | "
                     f"{row['mem']:.2f} |")
    return "\n".join(lines)


def bench_threading(repeat: int) -> None:
    """``dmd_rrr`` at OpenBLAS's default thread count against the same call inside
    ``threadpoolctl.threadpool_limits(limits=1)`` (the opt-in recipe of ``docs/koopman.md``),
    in this process, alternating, ``repeat`` calls each; noisy 10-mode trajectories."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from keras_koopman import dmd_rrr

    rng = np.random.default_rng(0)
    rates = np.linspace(0.5, 0.99, 10)
    pools = [(pool["filepath"].rsplit("/", 1)[-1], pool["num_threads"]) for pool in threadpool_info()]
    print(f"BLAS pools {pools}; load {os.getloadavg()[0]:.1f}\n")
    print("| data (n × T, noise 1e-3, refine=True) | threads | wall min (s) | wall median (s) | "
          "CPU min (s) |\n|---|---|---|---|---|")
    for n, T in [(200, 60), (2000, 100), (20000, 200)]:
        F = rng.standard_normal((n, 10)) @ rates[:, None] ** np.arange(T)[None, :]
        F += 1e-3 * rng.standard_normal((n, T))
        timings = {"default": ([], []), "limits=1": ([], [])}
        for _ in range(repeat):
            for mode, (walls, cpus) in timings.items():
                start, cpu = time.perf_counter(), time.process_time()
                if mode == "default":
                    dmd_rrr(F)
                else:
                    with threadpool_limits(limits=1):
                        dmd_rrr(F)
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - cpu)
        for mode, (walls, cpus) in timings.items():
            print(f"| {n} × {T} | {mode} | {min(walls):.3f} | {np.median(walls):.3f} | "
                  f"{min(cpus):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threading", action="store_true",
                        help="only compare default BLAS threads with threadpool_limits(1)")
    parser.add_argument("--quick", action="store_true", help="small smoke-test sizes")
    parser.add_argument("--tol", type=float, default=1e-6,
                        help="relative truncation tolerance for every method (default 1e-6, "
                             "the float32 rounding level)")
    parser.add_argument("--real", type=int, default=7, help="real decaying modes (default 7)")
    parser.add_argument("--pairs", type=int, default=11, help="complex pairs (default 11)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--repeat", type=int, default=1,
                        help="calls per method; the fastest is reported (default 1)")
    parser.add_argument("--threads", type=int,
                        help="BLAS threads per method (default: OpenBLAS's own, all cores)")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, args.data, args.tol, args.rank, args.repeat, args.result)
        return
    if args.threading:
        print(f"# bench_dmd.py --threading  {datetime.date.today()}  cpus {os.cpu_count()}")
        bench_threading(max(args.repeat, 3))
        return

    import pydmd
    import scipy
    from importlib.metadata import version
    planted = 1 + args.real + 2 * args.pairs
    print(f"# bench_dmd.py  {datetime.date.today()}  python {platform.python_version()}  "
          f"numpy {np.__version__}  scipy {scipy.__version__}  "
          f"pydmd {version('pydmd')}  scipy-openblas32 {version('scipy-openblas32')}  "
          f"cpus {os.cpu_count()}  threads {args.threads or 'default'}  tol {args.tol:g}  "
          f"seed {args.seed}  load {os.getloadavg()[0]:.1f}")
    del pydmd
    workdir = tempfile.mkdtemp(prefix="bench_dmd_")
    try:
        for n, snapshots in (QUICK_SIZES if args.quick else FULL_SIZES):
            print(f"{n} x {snapshots}", file=sys.stderr, flush=True)
            rows = bench_size(n, snapshots, args, workdir)
            print()
            print(format_table(n, snapshots, rows, planted))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
