"""keras-koopman: Koopman mode analysis of neural-network training for Keras 3.

The public API is re-exported here; see the README and ``docs/`` for a tour.
"""

from keras_koopman.koopman import (
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

__version__ = "0.1.0"
