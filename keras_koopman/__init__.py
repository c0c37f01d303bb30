"""keras-koopman: Koopman mode analysis of neural-network training for Keras 3.

The public API is re-exported here; see the README and ``docs/architecture.md`` for a tour.
Names are imported on first use (PEP 562): ``import keras_koopman`` and the DMD_RRR engine
(:mod:`keras_koopman.koopman`, numpy/scipy only) start without TensorFlow; the first Keras
name you touch imports Keras.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # the DMD_RRR engine (numpy/scipy only)
    "AnalysisOptions": "keras_koopman.koopman",
    "DEFAULT_OPTIONS": "keras_koopman.koopman",
    "IncrementalQR": "keras_koopman.koopman",
    "KoopmanModes": "keras_koopman.koopman",
    "SpectralDiagnostics": "keras_koopman.koopman",
    "delay_embed": "keras_koopman.koopman",
    "diagnose": "keras_koopman.koopman",
    "dmd_rrr": "keras_koopman.koopman",
    "dmd_rrr_series": "keras_koopman.koopman",
    "epochs_to_shrink": "keras_koopman.koopman",
    "growing_importance": "keras_koopman.koopman",
    "slowest_decay": "keras_koopman.koopman",
    "spectral_radius": "keras_koopman.koopman",
    "unit_cluster": "keras_koopman.koopman",
    # analyses of recorded observables (numpy only)
    "KoopmanAnalysis": "keras_koopman.analysis",
    "analyze_series": "keras_koopman.analysis",
    "analyze_weights": "keras_koopman.analysis",
    "SparseSignSketch": "keras_koopman.sketch",
    "TrainingTrajectory": "keras_koopman.trajectory",
    "TrajectoryStore": "keras_koopman.trajectory",
    "RecordLockedError": "keras_koopman.trajectory",
    # Keras layer: recorder, monitor, decisions, restarts
    "KoopmanMonitor": "keras_koopman.monitor",
    "TrajectoryRecorder": "keras_koopman.recorder",
    "FixedPointStopping": "keras_koopman.decisions",
    "PoorInitialization": "keras_koopman.decisions",
    "reinitialize": "keras_koopman.reinit",
    "KoopmanAccelerator": "keras_koopman.accelerator",
    "SpectrumImages": "keras_koopman.tensorboard",
    "AtomicBackup": "keras_koopman.checkpoint",
    # forecasts of training curves (numpy only) and trial pruning
    "CurveForecast": "keras_koopman.forecast",
    "forecast_curve": "keras_koopman.forecast",
    "KoopmanPruner": "keras_koopman.optuna_pruning",
    "KoopmanPruning": "keras_koopman.tuner",
    "KoopmanPruningMixin": "keras_koopman.tuner",
    "PruningRule": "keras_koopman.tuner",
    "SpectralBayesianOptimization": "keras_koopman.tuner",
    "SpectralGridSearch": "keras_koopman.tuner",
    "SpectralHyperband": "keras_koopman.tuner",
    "SpectralRandomSearch": "keras_koopman.tuner",
    "TrialPruning": "keras_koopman.tuner",
    "with_koopman_pruning": "keras_koopman.tuner",
    # sparsification of weights (masks; "pruning" names trial pruning only)
    "apply_masks": "keras_koopman.sparsity",
    "koopman_magnitude_masks": "keras_koopman.sparsity",
    "magnitude_masks": "keras_koopman.sparsity",
    # Sobolev losses and model
    "SobolevLoss1": "keras_koopman.losses",
    "SobolevLoss2": "keras_koopman.losses",
    "SobolevNormLoss": "keras_koopman.losses",
    "SobolevHeadsModel": "keras_koopman.sobolev_model",
    # data, models, figures
    "load_fashion_mnist": "keras_koopman.datasets",
    "load_mnist": "keras_koopman.datasets",
    "paper_cnn": "keras_koopman.models",
    "plot_spectrum": "keras_koopman.plotting",
    "plot_training_report": "keras_koopman.plotting",
    "spectrum_png": "keras_koopman.plotting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_koopman' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
