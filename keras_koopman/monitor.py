"""``KoopmanMonitor``: record the training trajectory and analyse it with DMD_RRR in ``fit``.

Training is a dynamical system ``w_{t+1} = T(w_t)`` (the paper's section "Insights into
neural network training convergence via the Koopman spectrum").  The monitor records the
full-state observable (all trainable weights) and scalar observables (any ``logs`` key) with
a :class:`~keras_koopman.TrajectoryRecorder`, runs the KMD of the paper's Eq. (2) on them at
chosen epochs with one :class:`~keras_koopman.AnalysisOptions`, and writes the diagnostics of
its primary observable into ``logs``.  It decides nothing except to stop on NaN/inf (a
trajectory with non-finite values cannot be analysed); the decisions are separate callbacks
that read its analyses (:class:`~keras_koopman.FixedPointStopping`,
:class:`~keras_koopman.PoorInitialization`), listed after it.

Cost per epoch: the recorder's (``O(n·r)``, see :mod:`keras_koopman.recorder`); per analysis
of the weights ``O(T³)`` on the ``T×T`` QR factor plus ``O(k³)`` per refined pair, never on
the ``n×T`` data; per analysis of a scalar ``O(T³)``.
"""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np

from keras_koopman._messages import say
from keras_koopman._threads import one_blas_thread
from keras_koopman.analysis import (KoopmanAnalysis, NotEnoughSnapshots, analyze_series,
                                    analyze_weights)
from keras_koopman.koopman import AnalysisOptions, KoopmanModes, default_tol, dmd_rrr
from keras_koopman.koopman._validation import check_positive_int
from keras_koopman.recorder import TrajectoryRecorder
from keras_koopman.trajectory import TrainingTrajectory

__all__ = ["DIAGNOSTIC_KEYS", "KoopmanMonitor", "fixed_point_estimate", "weight_modes"]

#: the ``logs`` keys written every epoch from the first analysis of the primary observable on
DIAGNOSTIC_KEYS = (
    "koopman_unit_cluster",
    "koopman_spectral_radius",
    "koopman_growing",
    "koopman_epochs_to_converge",
)


@keras.saving.register_keras_serializable(package="keras_koopman")
class KoopmanMonitor(keras.callbacks.Callback):
    """Record the training trajectory and analyse it with DMD_RRR while ``fit`` runs.

    From the first analysis of the ``primary`` observable on, every epoch's ``logs`` carry
    :data:`DIAGNOSTIC_KEYS` (the latest analysis), so ``History``, ``EarlyStopping``,
    ``TensorBoard`` and keras-tuner see them (list the monitor before those).  Before it no
    ``koopman_*`` key is logged, so ``EarlyStopping(monitor="koopman_unit_cluster")`` waits
    as it does for any missing metric.  ``CSVLogger`` fixes its columns at the first epoch,
    before any analysis, so it does not write them: read them from ``History`` or from the
    record's analyses.  NaN/inf in a recorded observable stops training with
    a ``RuntimeWarning`` and logs ``koopman_nonfinite = 1``.

    Args:
        observables: What to record: ``"weights"`` (the full-state observable) and ``logs``
            keys (scalar observables such as ``"loss"``, ``"val_loss"``).
        analyze_every: Analyse after every this many completed epochs.
        analyze_at: Also analyse after these numbers of completed epochs (the paper uses
            40/100/500 loss and 50/100/500 weight snapshots).
        window: Analyse only the last ``window`` snapshots (default: all since the start or
            the last restart; at least 4).
        options: The :class:`~keras_koopman.AnalysisOptions` (tolerance, scaling,
            refinement, ``delta``, ``min_importance``, delays, constant observable).
        storage: Folder for a disk record, written every epoch (append-only, checksummed,
            locked; survives ``kill -9``).  Default: memory.
        resume: Continue the record in ``storage`` (``fit`` may start at any epoch ``e``:
            the snapshot at ``e`` must equal the model's weights, then what was recorded
            after ``e`` is dropped).
        overwrite: Replace a record already in ``storage``; without it (or ``resume``) a
            folder holding a record is refused.
        max_dim: Record a seeded sparse sketch of this many coordinates when the model has
            more weights (memory ``O(max_dim · epochs)``; eigenvalues kept on the span).
        batch_interval: Record the weights every this many steps instead of once per epoch
            (a batch hook makes Keras dispatch every step synchronously).
        primary: The observable whose diagnostics go into ``logs`` (default ``"weights"`` if
            recorded, else the first observable).
        verbose: 1 prints a line per analysis.

    Example:

    >>> import keras, numpy as np, keras_koopman as kk
    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> y = x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    >>> monitor = kk.KoopmanMonitor(["weights", "loss"], analyze_every=20, window=10)
    >>> history = model.fit(x, y, epochs=60, verbose=0, callbacks=[monitor])
    >>> [a.observable for a in monitor.analyses][:2]
    ['weights', 'loss']
    >>> len(history.history["koopman_unit_cluster"])  # logged from the first analysis on
    41
    >>> history.history["koopman_unit_cluster"][-1] > 0.9  # converged: eigenvalues at 1
    True
    """

    def __init__(self, observables=("weights", "loss", "val_loss"), *,
                 analyze_every: int | None = None, analyze_at=(), window: int | None = None,
                 options: AnalysisOptions | None = None, storage=None, resume: bool = False,
                 overwrite: bool = False, max_dim: int | None = None,
                 batch_interval: int | None = None, primary: str | None = None,
                 verbose: int = 0) -> None:
        super().__init__()
        if isinstance(observables, str) or not all(isinstance(o, str) and o for o in observables):
            raise TypeError(f"observables must be a sequence of names; got {observables!r}")
        self.observables = tuple(dict.fromkeys(observables))
        if not self.observables:
            raise ValueError("observables must name at least one observable")
        self.analyze_every = check_positive_int(analyze_every, "analyze_every", allow_none=True)
        if isinstance(analyze_at, (str, int)):
            raise TypeError(f"analyze_at must be a sequence of epoch counts; got {analyze_at!r}")
        self.analyze_at = tuple(sorted({check_positive_int(e, "analyze_at") for e in analyze_at}))
        self.window = check_positive_int(window, "window", allow_none=True)
        if self.window is not None and self.window < 4:
            raise ValueError(f"window must be at least 4 snapshots; got {window}")
        self.options = AnalysisOptions.coerce(options)
        self.batch_interval = check_positive_int(batch_interval, "batch_interval", allow_none=True)
        if primary is None:
            primary = "weights" if "weights" in self.observables else self.observables[0]
        if primary not in self.observables:
            raise ValueError(f"primary must be one of observables {self.observables}; got {primary!r}")
        self.primary = primary
        if isinstance(verbose, bool) or verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2; got {verbose!r}")
        self.verbose = int(verbose)
        self.recorder = TrajectoryRecorder(
            tuple(dict.fromkeys(("loss",) + tuple(o for o in self.observables if o != "weights"))),
            weights="weights" in self.observables,
            augment_constant=self.options.augment_constant, max_dim=max_dim, storage=storage,
            resume=resume, overwrite=overwrite)
        if self.batch_interval is None:
            # an overridden batch hook would make Keras dispatch every step synchronously
            self.on_train_batch_end = keras.callbacks.Callback.on_train_batch_end.__get__(self)
        self._reset()

    def get_config(self) -> dict:
        rec = self.recorder
        return {"observables": list(self.observables), "analyze_every": self.analyze_every,
                "analyze_at": list(self.analyze_at), "window": self.window,
                "options": self.options.get_config(),
                "storage": None if rec.storage is None else str(rec.storage),
                "resume": rec.resume, "overwrite": rec.overwrite, "max_dim": rec.max_dim,
                "batch_interval": self.batch_interval, "primary": self.primary,
                "verbose": self.verbose}

    def _reset(self) -> None:
        self.analyses: list[KoopmanAnalysis] = []
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None
        self.epochs_done = 0
        self._steps = 0
        self._latest: dict[str, float] = {}

    # ------------------------------------------------------------------ Keras hooks
    def on_train_begin(self, logs=None):
        self._reset()
        self.recorder.start(self.model, writable=is_chief())

    def on_epoch_begin(self, epoch, logs=None):
        if self.recorder.pending_resume:
            self.recorder.continue_at(int(epoch))
            primary = [a for a in self.all_analyses if a.observable == self.primary]
            if primary:  # logs continue as they would have without the break
                self._latest = _logged(primary[-1])
        self.epochs_done = int(epoch)

    def on_train_batch_end(self, batch, logs=None):  # replaced in __init__ when not used
        self._steps += 1
        if self.recorder.weights and self._steps % self.batch_interval == 0:
            steps = self.params.get("steps") or 0
            epoch = self.epochs_done + ((batch + 1) / steps if steps else 0.0)
            if not self.recorder.record_weights(epoch):
                self._stop_nonfinite(None, ["weights"], f"epoch {epoch:g}")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        self.epochs_done = done = int(epoch) + 1
        if self.batch_interval is not None:
            self.recorder.vector.check_unchanged()
        bad = self.recorder.record_epoch(done, logs, weights=self.batch_interval is None)
        if bad:
            self._stop_nonfinite(epoch, bad, f"epoch {done}")
            logs["koopman_nonfinite"] = 1.0
        elif done in self.analyze_at or (self.analyze_every and done % self.analyze_every == 0):
            for name in self.observables:
                self.analysis_at(done, name)
        logs.update(self._latest)

    def on_train_end(self, logs=None):
        self.recorder.close()

    # ------------------------------------------------------------------ analyses
    @property
    def all_analyses(self) -> tuple[KoopmanAnalysis, ...]:
        """Analyses of a resumed record made before this ``fit``, then this ``fit``'s."""
        return self.recorder.prior_analyses + tuple(self.analyses)

    def analysis_at(self, done: int, observable: str | None = None) -> KoopmanAnalysis | None:
        """The analysis of ``observable`` (default: primary) after ``done`` epochs, made now
        if the schedule did not make it; ``None`` while there are too few snapshots."""
        name = self.primary if observable is None else observable
        for analysis in reversed(self.analyses):
            if analysis.observable == name and analysis.last_epoch == done:
                return analysis
        try:
            with one_blas_thread():  # scoped: see keras_koopman._threads
                analysis = self._analyse(name)
        except NotEnoughSnapshots as exc:
            if self.verbose:
                say(f"KoopmanMonitor: epoch {done}: {name} not analysed yet ({exc})")
            return None
        self.analyses.append(analysis)
        self.recorder.store.set_analyses(self.analyses)
        if name == self.primary:
            self._latest = _logged(analysis)
        if self.verbose:
            d = analysis.diagnostics
            say(f"KoopmanMonitor: epoch {done}: {name}: rank {analysis.rank}, unit cluster "
                f"{d.unit_cluster:.3f}, radius {d.spectral_radius:.4f}, growing {d.growing:.3f}, "
                f"epochs to converge {d.epochs_to_converge:.1f}")
        return analysis

    def _analyse(self, name: str) -> KoopmanAnalysis:
        rec = self.recorder
        if name == "weights":
            R, epochs = rec.weight_window(self.window)
            return analyze_weights(R, epochs, n_features=rec.qr.n_features,
                                   options=self.options, keep_modes=False)
        epochs, values = rec.scalar(name, self.window)
        return analyze_series(values, epochs, observable=name, options=self.options)

    def restart(self, done: int) -> None:
        """Start a new segment after the weights were re-drawn (called by a decision)."""
        self.recorder.new_segment(float(done))
        self._latest = {}

    # ------------------------------------------------------------------ decisions' tools
    def stop(self, epoch, reason: str) -> None:
        """Stop training (used by the monitor and by the decision callbacks)."""
        self.model.stop_training = True
        self.stopped_epoch = epoch
        self.stop_reason = reason
        if self.verbose:
            say(f"KoopmanMonitor: stopping: {reason}")

    def _stop_nonfinite(self, epoch, names, when: str) -> None:
        self.stop(epoch, f"non-finite {', '.join(names)} at {when}")
        warnings.warn(f"KoopmanMonitor: {self.stop_reason}; training stopped", RuntimeWarning,
                      stacklevel=2)

    def check_order(self, epoch: int, who: str) -> None:
        """Raise if the monitor has not yet seen epoch ``epoch`` (listed after ``who``)."""
        if self.epochs_done != int(epoch) + 1 or self.recorder.store is None:
            raise RuntimeError(f"{who} reads the KoopmanMonitor's analyses: list the monitor "
                               f"before {who} in callbacks, and both in the same fit")

    # ------------------------------------------------------------------ records
    @property
    def restarts(self) -> int:
        return self.recorder.restarts

    @property
    def scalars(self) -> dict:
        """``name -> (epochs, values)`` of every recorded scalar observable."""
        store = self.recorder.store
        return {} if store is None else {n: store.scalar(n) for n in store.scalar_names}

    @property
    def weight_epochs(self) -> np.ndarray:
        store = self.recorder.store
        return np.empty(0) if store is None else store.weight_epochs

    def trajectory(self) -> np.ndarray:
        """Recorded weight observable, snapshots as columns (n, T)."""
        if self.recorder.store is None:
            raise RuntimeError("nothing recorded yet: call model.fit with this callback first")
        return self.recorder.store.weights()

    def weight_modes(self, analysis: KoopmanAnalysis | None = None) -> KoopmanModes:
        """Koopman modes of the weights in weight coordinates (see :func:`weight_modes`)."""
        return weight_modes(self, analysis)

    def fixed_point_estimate(self, analysis: KoopmanAnalysis | None = None, *,
                             delta: float | None = None) -> np.ndarray:
        """The weights training converges to (see :func:`fixed_point_estimate`)."""
        return fixed_point_estimate(self, analysis, delta=delta)

    def save(self, path) -> None:
        """Write the record (weights, scalars, analyses) to a new folder; chief only."""
        if self.recorder.store is None:
            raise RuntimeError("nothing recorded yet: call model.fit with this callback first")
        if is_chief():
            self.recorder.store.save(path)

    @staticmethod
    def load(path) -> TrainingTrajectory:
        """Read a saved or disk-backed record (validated; see :mod:`keras_koopman.trajectory`)."""
        return TrainingTrajectory.load(path)


def weight_modes(monitor: KoopmanMonitor, analysis: KoopmanAnalysis | None = None) -> KoopmanModes:
    """Koopman modes of a monitor's weight observable in weight coordinates.

    Re-runs DMD_RRR on the analysis window (default: the latest weights analysis) with the
    monitor's options and lifts the modes with the trajectory's orthonormal basis
    (``O(n T k)``).  Rows are the flattened trainable weights in ``model.trainable_variables``
    order (sketch coordinates with ``max_dim``), plus the constant observable as last row.
    """
    qr = monitor.recorder.qr
    if qr is None or len(qr) == 0:
        raise RuntimeError("no weight trajectory recorded")
    if analysis is None:
        candidates = [a for a in monitor.analyses if a.observable == "weights"]
        if not candidates:
            raise RuntimeError("no weights analysis yet")
        analysis = candidates[-1]
    epochs = monitor.recorder.store.weight_epochs
    start = int(np.searchsorted(epochs, analysis.first_epoch))
    stop = int(np.searchsorted(epochs, analysis.last_epoch, side="right"))
    kwargs = monitor.options.dmd_kwargs()
    if kwargs["tol"] is None:
        kwargs["tol"] = default_tol(qr.n_features, np.float32)
    compressed = dmd_rrr(qr.R[:, start:stop], **kwargs)
    return dataclasses.replace(compressed, modes=qr.Q @ compressed.modes)


def fixed_point_estimate(monitor: KoopmanMonitor, analysis: KoopmanAnalysis | None = None, *,
                         delta: float | None = None) -> np.ndarray:
    """The weights that training is converging to, from the ``λ ≈ 1`` Koopman modes.

    The weight trajectory's decomposition ``x_t = Σ_j φ_j α_j λ_jᵗ`` (Eq. (2)) splits into
    modes that persist (``|λ_j − 1| <= delta``) and modes that decay; the estimate is the
    persistent part at the end of the window, ``Re Σ_{|λ_j − 1| <= δ} φ_j α_j λ_j^{t_end}``,
    divided by its constant-observable coordinate (1 on the data) when the constant is
    recorded.  For gradient descent on a quadratic it is the minimiser (tested); at
    convergence it is the current weights, which is why sparsifying by its magnitudes (Redman et
    al., ICLR 2022; :func:`~keras_koopman.koopman_magnitude_masks`) reduces to magnitude
    sparsification there.  Returns float64 of shape ``(n_weights,)``.  Cost: ``O(n T k)``.

    Raises:
        RuntimeError: with a sketch (``max_dim``), which does not map back to weights; when
            the modes near 1 do not carry the constant observable; with no weights analysis.
    """
    if monitor.recorder.vector is not None and monitor.recorder.vector.sketch is not None:
        raise RuntimeError("fixed_point_estimate needs the full weights; this monitor "
                           f"recorded a max_dim={monitor.recorder.max_dim} sketch")
    delta = monitor.options.delta if delta is None else float(delta)
    modes = weight_modes(monitor, analysis)
    near = np.abs(modes.eigenvalues - 1.0) <= delta
    estimate = np.real(modes.modes[:, near] @ (modes.amplitudes[near]
                                               * modes.eigenvalues[near] ** modes.t_end))
    if monitor.options.augment_constant:
        if abs(estimate[-1]) < 0.5:
            raise RuntimeError(f"no fixed point: the Koopman modes within delta={delta:g} "
                               "of 1 do not carry the constant observable (coordinate "
                               f"{estimate[-1]:.3g}, expected 1); analyse more epochs")
        estimate = estimate[:-1] / estimate[-1]
    return estimate


def _logged(analysis: KoopmanAnalysis) -> dict[str, float]:
    logs = analysis.diagnostics.as_logs()
    return {key: logs[key] for key in DIAGNOSTIC_KEYS}


def is_chief() -> bool:
    """Whether this process writes files (the chief under ``tf.distribute``; always alone)."""
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return True
    return bool(tf.distribute.get_strategy().extended.should_checkpoint)

