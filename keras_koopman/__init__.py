"""keras-koopman: Koopman mode analysis of neural-network training for Keras 3.

The public API is re-exported here; see the README and ``docs/`` for a tour.
"""

from keras_koopman.koopman import (
    IncrementalQR,
    KoopmanModes,
    SpectralDiagnostics,
    delay_embed,
    diagnose,
    dmd_rrr,
    dmd_rrr_series,
    epochs_to_shrink,
    growing_importance,
    slowest_decay,
    spectral_radius,
    unit_cluster,
)

# --- Sobolev losses and model (section kept in alphabetical blocks) ---
from keras_koopman.losses import SobolevLoss1, SobolevLoss2, SobolevNormLoss
from keras_koopman.sobolev_model import SobolevHeadsModel

# --- datasets and models ---
from keras_koopman.datasets import load_fashion_mnist, load_mnist
from keras_koopman.models import paper_cnn

# --- training callbacks ---
from keras_koopman.accelerator import KoopmanAccelerator
from keras_koopman.tuner import (KoopmanPruning, KoopmanPruningMixin, PruningRule,
                                 SpectralBayesianOptimization, SpectralGridSearch,
                                 SpectralHyperband, SpectralRandomSearch, TrialPruning,
                                 koopman_forecast, with_koopman_pruning)
from keras_koopman.plotting import plot_spectrum, plot_training_report, spectrum_png
from keras_koopman.analysis import KoopmanAnalysis, analyze_series, analyze_weights
from keras_koopman.magnitude_pruning import apply_masks, koopman_magnitude_masks, magnitude_masks
from keras_koopman.monitor import KoopmanMonitor
from keras_koopman.sketch import SparseSignSketch
from keras_koopman.trajectory import TrainingTrajectory

__version__ = "0.1.0"
