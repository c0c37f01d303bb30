"""Koopman spectrum of plain gradient descent on a quadratic, with DMD_RRR.

Gradient descent w_{t+1} = w_t - η (H w_t - b) is an affine map, so its Koopman eigenvalues
on the full-state observable are exactly 1 - η·eig(H) for the excited directions, plus 1
(the fixed point w* = H⁻¹b).  Run: ``python examples/dmd_quickstart.py``.
"""

import numpy as np

import keras_koopman as kk


def main() -> None:
    rng = np.random.default_rng(0)
    n, eta, steps = 200, 0.45, 30
    h = np.linspace(0.05, 1.9, n)
    basis = np.linalg.qr(rng.standard_normal((n, n)))[0]
    H, b = basis @ np.diag(h) @ basis.T, rng.standard_normal(n)
    excited = [5, 40, 90, 150, 199]
    w = np.linalg.solve(H, b) + basis[:, excited] @ rng.standard_normal(len(excited))
    trajectory = [w]
    for _ in range(steps):
        trajectory.append(trajectory[-1] - eta * (H @ trajectory[-1] - b))
    km = kk.dmd_rrr(np.array(trajectory).T)

    print(f"{len(km)} Koopman modes from {steps + 1} snapshots of {n} weights (rank {km.rank})")
    print(f"{'eigenvalue':>24} {'|λ|':>8} {'residual':>10} {'importance':>11}")
    for lam, res, imp in zip(km.eigenvalues, km.residuals, km.importance):
        print(f"{lam.real:>12.6f}{lam.imag:+.6f}j {abs(lam):8.5f} {res:10.2e} {imp:11.4f}")
    expected = np.sort(np.append(1 - eta * h[excited], 1.0))
    print("expected 1 - η·eig(H) and 1:", np.array2string(expected, precision=6))
    print("diagnostics:", kk.diagnose(km).as_logs())


if __name__ == "__main__":
    main()
