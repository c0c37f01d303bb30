"""``PoorInitialization``'s two rules on the paper's CNN with little data (healthy runs only).

``scripts/measure_poor_init.py`` calibrated the rules on an MLP (1,500 MNIST images, batch 64:
24 steps per epoch).  This script checks their defaults on the package's own model,
:func:`keras_koopman.paper_cnn` with its three initialisers (He, Glorot/Xavier and the paper's
normal one, all with Adam 1e-3), trained on the first ``--sizes`` MNIST images with batch 64
for ``--epochs`` epochs and validated on 1,000 test images.  Every run carries a
``KoopmanMonitor(("weights", "loss"), analyze_every=1)``; for epochs 2–5 (the default check
window) it prints the training loss over the first epoch's (the loss rule fires at its
``loss_ratio``) and the weights' unit cluster (the spectral rule fires at its
``stagnation_threshold``; both thresholds and the window are read from
``PoorInitialization``'s signature; with the modulus of the most important eigenvalue, which
decides whether the cluster within ``delta=0.01`` of 1 is empty), and the final validation
accuracy (≥ 0.9: the run is healthy, so any firing is a false alarm).

    python scripts/measure_poor_init_cnn.py --json runs/poor_init_cnn.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def rule_defaults() -> tuple[range, float, float]:
    """``PoorInitialization``'s check window, ``loss_ratio`` and ``stagnation_threshold``."""
    from keras_koopman import PoorInitialization

    parameters = inspect.signature(PoorInitialization).parameters
    first, last = parameters["epochs"].default
    return (range(first, last + 1), parameters["loss_ratio"].default,
            parameters["stagnation_threshold"].default)


WINDOW, LOSS_RATIO, STAGNATION = rule_defaults()


def one_run(kk, data, validation, init: str, seed: int, epochs: int) -> dict:
    model = kk.paper_cnn(init, seed=seed)
    monitor = kk.KoopmanMonitor(("weights", "loss"), analyze_every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(*data, epochs=epochs, batch_size=64, verbose=0,
                            validation_data=validation, callbacks=[monitor])
    loss = np.asarray(history.history["loss"])
    cluster, dominant = {}, {}
    for analysis in monitor.analyses:
        if analysis.observable == "weights" and analysis.last_epoch in WINDOW:
            epoch = int(analysis.last_epoch)
            cluster[epoch] = round(analysis.diagnostics.unit_cluster, 3)
            top = analysis.eigenvalues[np.argmax(analysis.importance)]
            dominant[epoch] = round(float(abs(top)), 4)
    return {"init": init, "seed": seed,
            "loss_ratio": {e: round(float(loss[e - 1] / loss[0]), 3) for e in WINDOW},
            "unit_cluster": cluster, "dominant_modulus": dominant,
            "val_accuracy": round(float(history.history["val_accuracy"][-1]), 3)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 5000])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "mnist",
                        help="folder with the four raw MNIST files")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/keras_koopman_tfds"))
    parser.add_argument("--json", type=Path, help="write every run here")
    args = parser.parse_args(argv)

    import keras_koopman as kk

    where = {"manual_dir": args.data_dir, "data_dir": args.cache_dir, "as_numpy": True}
    validation = kk.load_mnist("test", subset=1000, **where)
    runs = []
    for size in args.sizes:
        data = kk.load_mnist("train", subset=size, **where)
        for init in ("he", "xavier", "normal"):
            for seed in range(args.seeds):
                run = dict(one_run(kk, data, validation, init, seed, args.epochs), images=size)
                runs.append(run)
                print(json.dumps(run), flush=True)
    print(f"\n| images | init | runs | healthy (val acc >= 0.9) | loss rule fires ({LOSS_RATIO}) "
          f"| spectral rule fires ({STAGNATION}) |\n|---|---|---|---|---|---|")
    for size in args.sizes:
        for init in ("he", "xavier", "normal"):
            group = [r for r in runs if r["images"] == size and r["init"] == init]
            loss = sum(max(r["loss_ratio"].values()) >= LOSS_RATIO for r in group)
            spectral = sum(max(r["unit_cluster"].values(), default=0.0) >= STAGNATION
                           for r in group)
            healthy = sum(r["val_accuracy"] >= 0.9 for r in group)
            print(f"| {size} | {init} | {len(group)} | {healthy} | {loss} | {spectral} |")
    if args.json:
        from keras_koopman._atomic import write_json_atomic

        write_json_atomic(args.json, runs)


if __name__ == "__main__":
    main()
