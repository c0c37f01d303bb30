"""The DMD_RRR Koopman engine: decomposition, delay embedding and spectral diagnostics."""

from keras_koopman.koopman._diagnostics import (
    SpectralDiagnostics,
    diagnose,
    epochs_to_shrink,
    growing_importance,
    slowest_decay,
    spectral_radius,
    unit_cluster,
)
from keras_koopman.koopman._dmd import KoopmanModes, default_tol, dmd_rrr
from keras_koopman.koopman._options import DEFAULT_OPTIONS, AnalysisOptions
from keras_koopman.koopman._embedding import delay_embed, dmd_rrr_series
from keras_koopman.koopman._streaming import IncrementalQR

__all__ = [
    "AnalysisOptions",
    "DEFAULT_OPTIONS",
    "IncrementalQR",
    "KoopmanModes",
    "SpectralDiagnostics",
    "default_tol",
    "delay_embed",
    "diagnose",
    "dmd_rrr",
    "dmd_rrr_series",
    "epochs_to_shrink",
    "growing_importance",
    "slowest_decay",
    "spectral_radius",
    "unit_cluster",
]
