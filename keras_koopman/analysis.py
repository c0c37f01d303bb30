"""One Koopman analysis of a training observable over a window of epochs.

An *observable* is a function of the training state recorded once per epoch: the
full-state observable ``"weights"`` (all trainable weights, flattened, optionally augmented
with the constant function 1), or a scalar such as ``"loss"`` / ``"val_loss"``, which is
delay-embedded (Hankel DMD) before DMD_RRR.  Both helpers take one
:class:`~keras_koopman.AnalysisOptions` (default: the product's one default), and are the
only analysis path of :class:`~keras_koopman.KoopmanMonitor`, the decision callbacks, the
tuner and the command-line tool, so the same data get the same diagnostics everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from keras_koopman.koopman import (
    KoopmanModes,
    SpectralDiagnostics,
    default_tol,
    delay_embed,
    diagnose,
    dmd_rrr,
)
from keras_koopman.koopman._options import AnalysisOptions

__all__ = ["KoopmanAnalysis", "NotEnoughSnapshots", "analyze_series", "analyze_weights",
           "default_delays"]

#: the fewest values a Hankel analysis of a scalar series needs
MIN_SERIES = 4
#: the fewest weight snapshots a weights analysis needs
MIN_WEIGHTS = 3


class NotEnoughSnapshots(ValueError):
    """Too few snapshots for an analysis yet: the one condition a monitor waits out."""


@dataclass(frozen=True, eq=False)
class KoopmanAnalysis:
    """Spectrum and diagnostics of one observable over epochs ``first_epoch … last_epoch``.

    Attributes
    ----------
    observable : str
        ``"weights"`` or the name of a scalar observable (a ``logs`` key such as ``"loss"``).
    first_epoch, last_epoch : float
        Epochs of the first and last snapshot used (0 is the state before training).
    n_snapshots : int
        Number of snapshots in the window.
    delays : int or None
        Hankel embedding depth for scalar observables, ``None`` for the weights.
    eigenvalues, residuals, amplitudes, importance : ndarray
        The spectrum (see :class:`~keras_koopman.KoopmanModes`), sorted by importance.
    rank : int
        Numerical rank used by DMD_RRR.
    diagnostics : SpectralDiagnostics
        Spectral radius, unit cluster, decay rate, epochs to converge, growth.
    fit_error : float or None
        The decomposition's relative one-step error ``‖Y − A_k X‖_F / ‖Y‖_F``
        (:attr:`KoopmanModes.fit_error <keras_koopman.KoopmanModes>`): how much of the window
        the linear model leaves unexplained, which the residuals cannot show when the
        snapshots span their space (a Hankel matrix of a scalar curve).  ~0 for weight
        analyses with independent snapshots.  ``None`` in records written before it existed.
    modes : KoopmanModes or None
        The full decomposition when it was kept (it is not saved to disk; weight modes are
        ``n_weights × k`` and are computed on demand, see ``KoopmanMonitor.weight_modes``).
    """

    observable: str
    first_epoch: float
    last_epoch: float
    n_snapshots: int
    delays: int | None
    eigenvalues: np.ndarray
    residuals: np.ndarray
    amplitudes: np.ndarray
    importance: np.ndarray
    rank: int
    diagnostics: SpectralDiagnostics
    fit_error: float | None = None
    modes: KoopmanModes | None = None

    @classmethod
    def from_modes(cls, modes: KoopmanModes, *, observable: str, first_epoch: float,
                   last_epoch: float, n_snapshots: int, delays: int | None,
                   diagnostics: SpectralDiagnostics, keep_modes: bool = True) -> "KoopmanAnalysis":
        return cls(observable=observable, first_epoch=float(first_epoch),
                   last_epoch=float(last_epoch), n_snapshots=int(n_snapshots), delays=delays,
                   eigenvalues=modes.eigenvalues, residuals=modes.residuals,
                   amplitudes=modes.amplitudes, importance=modes.importance, rank=modes.rank,
                   diagnostics=diagnostics, fit_error=float(modes.fit_error),
                   modes=modes if keep_modes else None)

    def to_dict(self) -> dict:
        """JSON-serialisable form (the spectrum and diagnostics; never the modes)."""
        return {
            "observable": self.observable,
            "first_epoch": self.first_epoch,
            "last_epoch": self.last_epoch,
            "n_snapshots": self.n_snapshots,
            "delays": self.delays,
            "rank": self.rank,
            "eigenvalues": [[float(z.real), float(z.imag)] for z in self.eigenvalues],
            "amplitudes": [[float(z.real), float(z.imag)] for z in self.amplitudes],
            "residuals": [float(r) for r in self.residuals],
            "importance": [float(v) for v in self.importance],
            "diagnostics": {k: _json_float(v) for k, v in self.diagnostics.as_logs("").items()},
            "fit_error": self.fit_error,  # finite (dmd_rrr raises on overflow) or None
        }

    @classmethod
    def from_dict(cls, data: dict) -> "KoopmanAnalysis":
        """Inverse of :meth:`to_dict` (``modes`` is ``None``; ``fit_error`` is ``None`` for
        a dict without it, written before it existed)."""
        def complex_array(pairs):
            values = np.asarray(pairs, dtype=float).reshape(-1, 2)
            return values[:, 0] + 1j * values[:, 1]

        diag = dict(data["diagnostics"])
        diag["n_important"] = int(diag["n_important"])
        return cls(
            observable=str(data["observable"]), first_epoch=float(data["first_epoch"]),
            last_epoch=float(data["last_epoch"]), n_snapshots=int(data["n_snapshots"]),
            delays=None if data["delays"] is None else int(data["delays"]),
            eigenvalues=complex_array(data["eigenvalues"]),
            residuals=np.asarray(data["residuals"], dtype=float),
            amplitudes=complex_array(data["amplitudes"]),
            importance=np.asarray(data["importance"], dtype=float),
            rank=int(data["rank"]),
            diagnostics=SpectralDiagnostics(**{k: float(v) if k != "n_important" else v
                                               for k, v in diag.items()}),
            fit_error=_fit_error(data.get("fit_error")),
        )


def _fit_error(value) -> float | None:
    """A stored ``fit_error``: absent/None, or a finite number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"fit_error must be a finite number >= 0 or null; got {value!r}")
    return float(value)


def _json_float(value: float):
    value = float(value)
    return value if np.isfinite(value) else str(value)  # "inf"/"nan": valid JSON, float() reads it


def default_delays(n_values: int) -> int:
    """Default Hankel depth for a scalar series of ``n_values``: ``max(2, n_values // 3)``.

    A third of the series gives a Hankel matrix with half as many rows as columns: the fit
    has more snapshot pairs than dimensions, so its one-step error
    (:attr:`KoopmanAnalysis.fit_error`) measures how well a linear model explains the curve,
    and it still resolves up to ``n_values // 3`` exponentials.  The residuals, which need
    more rows than the rank, are then ~0 whenever the matrix has full row rank (any noisy
    curve) and carry no information; only a Hankel matrix with more rows than columns gives
    them room (``docs/koopman.md``, "Residuals and what they certify").
    """
    return max(2, n_values // 3)


def analyze_series(values, epochs, *, observable: str, options: AnalysisOptions | None = None,
                   keep_modes: bool = True) -> KoopmanAnalysis:
    """Hankel DMD_RRR of a scalar observable (e.g. the loss curve, paper Fig. 2 top rows).

    ``values`` and ``epochs`` have equal length; NaN entries at the start (no loss before
    training) are dropped, a NaN elsewhere is a ``ValueError``.  The delay depth is
    ``options.delays`` (default :func:`default_delays`), the truncation ``options.tol``
    (default: float32 rounding level, since losses come from float32 arithmetic).  Cost
    ``O(L·T + T³)`` for ``L`` delays and ``T`` values, plus ``O(k³)`` per refined pair.

    Raises:
        NotEnoughSnapshots: fewer than 4 finite values (a ``ValueError``; a monitor waits).
        ValueError: NaN/inf inside the series, or ``delays`` too large for it.
    """
    options = AnalysisOptions.coerce(options)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    epochs = np.asarray(epochs, dtype=np.float64).reshape(-1)
    if values.shape != epochs.shape:
        raise ValueError(f"values and epochs must have the same length; got {values.shape} and {epochs.shape}")
    finite = np.isfinite(values)
    start = int(np.argmax(finite)) if finite.any() else values.size
    values, epochs = values[start:], epochs[start:]
    if values.size < MIN_SERIES:
        raise NotEnoughSnapshots(f"{observable}: need at least {MIN_SERIES} values for a Hankel "
                                 f"analysis; got {values.size}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{observable} contains NaN/inf after epoch {epochs[0]:g}; cannot analyse it")
    delays = default_delays(values.size) if options.delays is None else options.delays
    if not 1 <= delays <= values.size - 2:
        raise ValueError(f"delays must be in [1, {values.size - 2}] for {values.size} values; got {delays}")
    kwargs = options.dmd_kwargs()
    if kwargs["tol"] is None:
        kwargs["tol"] = default_tol(delays, np.float32)
    modes = dmd_rrr(delay_embed(values, delays), **kwargs)
    return KoopmanAnalysis.from_modes(
        modes, observable=observable, first_epoch=epochs[0], last_epoch=epochs[-1],
        n_snapshots=values.size, delays=delays,
        diagnostics=diagnose(modes, **options.diagnose_kwargs()), keep_modes=keep_modes)


def analyze_weights(snapshots, epochs, *, n_features: int | None = None,
                    options: AnalysisOptions | None = None, keep_modes: bool = True,
                    observable: str = "weights") -> KoopmanAnalysis:
    """DMD_RRR of the full-state observable, snapshots as columns ``(n, T)``.

    ``snapshots`` may also be the compressed trajectory ``R`` of an
    :class:`~keras_koopman.koopman.IncrementalQR` (same spectrum; then pass the original
    ``n_features`` so the default tolerance matches float32 weights of that size).  Cost: one
    DMD_RRR, ``O(n T²)`` (``O(T³)`` on ``R``), plus ``O(k³)`` per refined pair.

    Raises:
        NotEnoughSnapshots: fewer than 3 snapshots (a ``ValueError``; a monitor waits).
    """
    options = AnalysisOptions.coerce(options)
    snapshots = np.asarray(snapshots)
    epochs = np.asarray(epochs, dtype=np.float64).reshape(-1)
    if snapshots.ndim != 2 or snapshots.shape[1] != epochs.size:
        raise ValueError(f"snapshots must be (n, {epochs.size}) to match epochs; got {snapshots.shape}")
    if epochs.size < MIN_WEIGHTS:
        raise NotEnoughSnapshots(f"{observable}: need at least {MIN_WEIGHTS} snapshots; got {epochs.size}")
    n = snapshots.shape[0] if n_features is None else int(n_features)
    kwargs = options.dmd_kwargs()
    if kwargs["tol"] is None:
        kwargs["tol"] = default_tol(n, np.float32)
    modes = dmd_rrr(snapshots, **kwargs)
    return KoopmanAnalysis.from_modes(
        modes, observable=observable, first_epoch=epochs[0], last_epoch=epochs[-1],
        n_snapshots=epochs.size, delays=None,
        diagnostics=diagnose(modes, **options.diagnose_kwargs()), keep_modes=keep_modes)
