"""``KoopmanMonitor``: Koopman mode analysis of training inside ``model.fit``.

Training is a dynamical system ``w_{t+1} = T(w_t)`` (the paper's section "Insights into
neural network training convergence via the Koopman spectrum").  The monitor records the
full-state observable (all trainable weights) and scalar observables (the loss, ``val_loss``,
any ``logs`` key) every epoch, runs DMD_RRR on them at chosen epochs, writes spectral
diagnostics into ``logs`` and can act on them (stop at a fixed point, handle a poor
initialisation, stop on NaN/inf).

Cost per epoch: flattening the weights (``O(n)``), an optional sketch (``O(n)``), and one
column update of the trajectory's QR factor (``O(n·T)``); an analysis then works on the
``T×T`` factor (``O(T³)``, plus ``O(k³)`` per refined pair), never on the ``n×T`` data.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import keras
import numpy as np

from keras_koopman.analysis import KoopmanAnalysis, analyze_series, analyze_weights
from keras_koopman.koopman import IncrementalQR, KoopmanModes, default_tol, dmd_rrr
from keras_koopman.koopman._validation import check_positive_int
from keras_koopman.sketch import SparseSignSketch
from keras_koopman.trajectory import TrainingTrajectory, TrajectoryStore

__all__ = ["KoopmanMonitor", "DIAGNOSTIC_KEYS"]

#: the ``logs`` keys written every epoch (NaN until the first analysis)
DIAGNOSTIC_KEYS = (
    "koopman_unit_cluster",
    "koopman_spectral_radius",
    "koopman_growing",
    "koopman_epochs_to_converge",
    "koopman_poor_init",
    "koopman_nonfinite",
)

_POOR_INIT_ACTIONS = (None, "warn", "stop", "restart")
_POOR_INIT_RULES = ("loss", "spectral", "either")


class KoopmanMonitor(keras.callbacks.Callback):
    """Record the training trajectory and analyse it with DMD_RRR while ``fit`` runs.

    Parameters
    ----------
    observables : sequence of str
        What to record: ``"weights"`` (the full-state observable) and names of ``logs``
        entries (scalar observables, e.g. ``"loss"``, ``"val_loss"``); a scalar that is absent
        from ``logs`` is skipped.
    analyze_at : sequence of int
        Numbers of completed epochs after which to analyse (the paper uses 40/100/500 loss
        snapshots and 50/100/500 weight snapshots).
    analyze_every : int, optional
        Also analyse every this many epochs.
    window : int, optional
        Analyse only the last ``window`` snapshots (default: all so far).
    delays : int, optional
        Hankel depth for scalar observables; default ``max(2, T // 3)`` for ``T`` values,
        which keeps the fit overdetermined so residuals mean something.
    augment_constant : bool
        Append the constant function 1 to the weight observable (default ``True``).  Gradient
        descent with a bias is an affine map ``w ↦ (I − ηH) w + ηb``; in ``n`` dimensions it has
        ``n + 1`` Koopman modes, the fixed point being the λ = 1 mode of the constant
        observable, and without the constant the trajectory can lack the dimension to show
        both the fixed point and all ``n`` decaying directions.
    max_dim : int, optional
        If the model has more weights than this, record a seeded sparse random projection to
        ``max_dim`` coordinates instead (see :class:`~keras_koopman.sketch.SparseSignSketch`);
        eigenvalues are preserved on the trajectory's span, memory is ``O(max_dim · epochs)``.
    sketch_seed : int
        Seed of that projection.
    storage : str or path, optional
        Directory for a disk-backed record written every epoch (survives a killed process;
        reopen with :meth:`load`).  Default: in memory.
    resume : bool
        With ``storage``, continue the record already in that folder instead of replacing it
        (default ``False``).  ``fit`` may start at any epoch ``e`` (``initial_epoch`` or
        ``keras.callbacks.BackupAndRestore``): everything recorded after ``e`` is dropped, the
        snapshot at ``e`` must equal the model's weights (else ``ValueError``; it is recorded
        if missing), and the trajectory's QR factor is rebuilt (``O(n T²)``, once).  List the
        monitor before ``BackupAndRestore`` so a snapshot is on disk before its checkpoint.
        Analyses made before ``e`` stay in the folder's ``analyses.json``; ``analyses`` holds
        the new ones.  A folder without a record starts a fresh one.
    batch_interval : int, optional
        Record the weights every this many training steps instead of once per epoch (slows
        Keras: a batch hook turns off asynchronous dispatch).  Off by default.
    primary : str
        Observable whose diagnostics go into ``logs`` under ``koopman_*`` and drive decisions.
    tol, refine, delta, min_importance, max_residual
        Passed to :func:`~keras_koopman.dmd_rrr` and the diagnostics.  ``refine`` defaults to
        ``min_importance``: the pairs whose importance is at least ``min_importance`` are
        refined (DMD_RRR's step 6).  On weight trajectories with as many independent
        directions as snapshots (minibatch training) plain Ritz pairs have residuals of
        0.3 and their importances are meaningless: the unit cluster of weights resting at a
        fixed point under noise is 0.09 with plain pairs and 1.00 refined
        (``scripts/reproduce_mnist.py null``, ``docs/results.md``).  Refinement costs 1.3x the
        analysis time at 500 snapshots of the paper's CNN and up to 3.5x on a random walk
        (``scripts/bench_monitor.py overhead`` and ``refine``);
        ``refine=False`` saves it when no decision reads the weights' spectrum.  ``delta`` and
        ``min_importance`` default to 0.01, the values chosen by the poor-initialisation study.
    stop_at_fixed_point : bool
        Stop training when, after ``warmup`` epochs, ``koopman_unit_cluster`` of the primary
        observable reaches ``fixed_point_threshold`` (the paper's termination criterion) in
        ``stop_patience`` consecutive analyses.
    stop_patience : int
        Consecutive analyses of the primary observable that must each reach
        ``fixed_point_threshold`` before ``stop_at_fixed_point`` stops training (the count
        restarts after a re-initialisation).  Default 3: on full-set MNIST, where the weights
        never settle, the refined unit cluster flickers and 1 stopped all three 200-epoch runs
        on a single spike (epochs 68-84), 2 stopped one (epoch 131), 3 none; on weights resting
        at a fixed point under noise 3 stops 1-5 epochs after 1
        (``scripts/reproduce_mnist.py null --stops``, ``docs/monitor.md``).
    on_poor_initialization : {None, "warn", "stop", "restart"}
        Action when the poor-initialisation rule fires (see :meth:`is_poor_initialization`).
    poor_init_rule : {"loss", "spectral", "either"}
        ``"loss"`` (default, the best rule measured in ``docs/results.md``): the loss has not
        fallen below ``loss_ratio`` times its first-epoch value.  ``"spectral"``: the Koopman
        rule (stagnation at 1, growth, too slow).  ``"either"``: both.
    poor_init_epochs : (int, int)
        The rule is evaluated at ``first <= epoch <= last`` completed epochs (counted from the
        last restart); spectral rules analyse the primary observable at every such epoch.
    loss_ratio : float
        Threshold of the loss rule (0.5).
    stagnation_threshold, high_loss_fraction, growth_threshold, check_budget
        Thresholds of the spectral rule: unit cluster (0.95), the loss condition that goes with
        it (0 = none), growing-mode importance (``None`` = off), and whether a predicted time to
        converge beyond the epoch budget counts (off: it fired on every healthy run measured).
    max_restarts : int
        With ``"restart"``, at most this many re-initialisations.
    restart_seed : int
        Seed for re-initialisation (restart ``i`` uses ``restart_seed + i``).
    keep_modes : bool
        Keep the ``KoopmanModes`` of scalar observables in each analysis (weight modes are
        ``n × k``; get them with :meth:`weight_modes`).
    tensorboard_dir : str, optional
        Log each spectrum as an image with ``tf.summary.image`` (chief only).
    verbose : int
        1 prints a line per analysis and per decision.

    Notes
    -----
    Logs: every epoch the monitor writes the :data:`DIAGNOSTIC_KEYS` into ``logs`` (latest
    analysis of the primary observable; NaN before the first), so ``History``,
    ``CSVLogger`` (list the monitor before it), ``TensorBoard`` and keras-tuner see them.
    Under ``tf.distribute`` every replica's weights are identical, decisions are deterministic
    functions of them and of the synchronised ``logs``, so every worker decides alike; only
    the chief (``strategy.extended.should_checkpoint``) writes files.
    """

    def __init__(self, *, observables=("weights", "loss", "val_loss"), analyze_at=(),
                 analyze_every: int | None = None, window: int | None = None,
                 delays: int | None = None, augment_constant: bool = True,
                 max_dim: int | None = None, sketch_seed: int = 0, storage=None,
                 resume: bool = False, batch_interval: int | None = None, primary: str = "weights",
                 tol: float | None = None, refine: bool | float | None = None,
                 delta: float = 0.01, min_importance: float = 0.01,
                 max_residual: float | None = None, stop_at_fixed_point: bool = False,
                 fixed_point_threshold: float = 0.9, warmup: int = 10, stop_patience: int = 3,
                 on_poor_initialization: str | None = None, poor_init_rule: str = "loss",
                 poor_init_epochs=(2, 5), loss_ratio: float = 0.5,
                 stagnation_threshold: float = 0.95, high_loss_fraction: float = 0.0,
                 growth_threshold: float | None = None, check_budget: bool = False,
                 max_restarts: int = 3, restart_seed: int = 1,
                 keep_modes: bool = True, tensorboard_dir=None, verbose: int = 0) -> None:
        super().__init__()
        if isinstance(observables, str) or not all(isinstance(o, str) for o in observables):
            raise TypeError(f"observables must be a sequence of names; got {observables!r}")
        self.observables = tuple(observables)
        if not self.observables:
            raise ValueError("observables must name at least one observable")
        self.analyze_at = tuple(check_positive_int(e, "analyze_at") for e in analyze_at)
        self.analyze_every = check_positive_int(analyze_every, "analyze_every", allow_none=True)
        self.window = check_positive_int(window, "window", allow_none=True)
        if self.window is not None and self.window < 4:
            raise ValueError(f"window must be at least 4 snapshots; got {window}")
        self.delays = check_positive_int(delays, "delays", allow_none=True)
        self.augment_constant = bool(augment_constant)
        self.max_dim = check_positive_int(max_dim, "max_dim", allow_none=True)
        self.sketch_seed = int(sketch_seed)
        self.storage = storage
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be True or False; got {resume!r}")
        if resume and storage is None:
            raise ValueError("resume=True needs storage= (the folder of the record to continue)")
        self.resume = resume
        self.batch_interval = check_positive_int(batch_interval, "batch_interval", allow_none=True)
        if primary not in self.observables:
            raise ValueError(f"primary must be one of observables {self.observables}; got {primary!r}")
        self.primary = primary
        self.tol = tol
        self.refine = min_importance if refine is None else refine
        self.delta = delta
        self.min_importance = min_importance
        self.max_residual = max_residual
        self.stop_at_fixed_point = bool(stop_at_fixed_point)
        self.fixed_point_threshold = float(fixed_point_threshold)
        self.warmup = int(warmup)
        self.stop_patience = check_positive_int(stop_patience, "stop_patience")
        if on_poor_initialization not in _POOR_INIT_ACTIONS:
            raise ValueError(f"on_poor_initialization must be one of {_POOR_INIT_ACTIONS}; "
                             f"got {on_poor_initialization!r}")
        self.on_poor_initialization = on_poor_initialization
        first, last = (int(e) for e in poor_init_epochs)
        if not 1 <= first <= last:
            raise ValueError(f"poor_init_epochs must be (first, last) with 1 <= first <= last; got {poor_init_epochs!r}")
        self.poor_init_epochs = (first, last)
        if poor_init_rule not in _POOR_INIT_RULES:
            raise ValueError(f"poor_init_rule must be one of {_POOR_INIT_RULES}; got {poor_init_rule!r}")
        self.poor_init_rule = poor_init_rule
        self.loss_ratio = float(loss_ratio)
        self.stagnation_threshold = float(stagnation_threshold)
        self.high_loss_fraction = float(high_loss_fraction)
        self.growth_threshold = None if growth_threshold is None else float(growth_threshold)
        self.check_budget = bool(check_budget)
        self.max_restarts = int(max_restarts)
        self.restart_seed = int(restart_seed)
        self.keep_modes = bool(keep_modes)
        self.tensorboard_dir = tensorboard_dir
        self.verbose = int(verbose)
        if self.batch_interval is None:
            # an overridden batch hook would make Keras dispatch every step synchronously
            self.on_train_batch_end = keras.callbacks.Callback.on_train_batch_end.__get__(self)
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self.analyses: list[KoopmanAnalysis] = []
        self.restarts = 0
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None
        self._store: TrajectoryStore | None = None
        self._qr: IncrementalQR | None = None
        self._sketch: SparseSignSketch | None = None
        self._latest: dict[str, float] = {k: math.nan for k in DIAGNOSTIC_KEYS}
        self._latest["koopman_poor_init"] = 0.0
        self._latest["koopman_nonfinite"] = 0.0
        self._steps = 0
        self._epochs_done = 0
        self._segment_start = 0  # index of the first weight snapshot since the last restart
        self._segment_epoch = 0.0  # epoch of the last restart (scalars after it count)
        self._writer = None
        self._resuming = False  # a reopened record waits for the first epoch to be known
        self._fixed_point_streak = 0  # consecutive primary analyses at the stop threshold

    @property
    def scalars(self) -> dict:
        """``name -> (epochs, values)`` of every recorded scalar observable."""
        if self._store is None:
            return {}
        return {name: self._store.scalar(name) for name in self._store.scalar_names}

    @property
    def weight_epochs(self) -> np.ndarray:
        return np.empty(0) if self._store is None else self._store.weight_epochs

    def trajectory(self) -> np.ndarray:
        """Recorded weight observable, snapshots as columns (n, T)."""
        if self._store is None:
            raise RuntimeError("nothing recorded yet: call model.fit with this callback first")
        return self._store.weights()

    # ------------------------------------------------------------------ Keras hooks
    def on_train_begin(self, logs=None):
        self._reset()
        self._chief = _is_chief()
        n_weights = int(sum(int(np.prod(v.shape)) for v in self.model.trainable_variables))
        if n_weights == 0:
            raise ValueError("model has no trainable weights to monitor")
        dims = n_weights
        if self.max_dim is not None and n_weights > self.max_dim:
            self._sketch = SparseSignSketch(n_weights, self.max_dim, seed=self.sketch_seed)
            dims = self.max_dim
        dims += int(self.augment_constant)
        dtypes = {np.dtype(keras.backend.standardize_dtype(v.dtype)) for v in self.model.trainable_variables}
        dtype = np.result_type(*dtypes) if dtypes else np.float32
        metadata = {
            "model": self.model.name,
            "n_weights": n_weights,
            "augment_constant": self.augment_constant,
            "sketch": None if self._sketch is None else self._sketch.get_config(),
            "variables": [[v.path, list(map(int, v.shape))] for v in self.model.trainable_variables],
            "batch_interval": self.batch_interval,
        }
        path = self.storage if self._chief else None
        if self.resume and (Path(self.storage) / "trajectory.json").is_file():
            self._store = TrajectoryStore.reopen(self.storage, n_features=dims, dtype=dtype,
                                                 metadata=metadata, writable=self._chief)
            self._resuming = True  # the starting epoch is known at on_epoch_begin
        else:
            self._store = TrajectoryStore(dims, path=path, dtype=dtype, metadata=metadata)
        if "weights" in self.observables:
            self._qr = IncrementalQR(dims)
            if not self._resuming:
                self._record_weights(0.0)
        if self.tensorboard_dir is not None and self._chief:
            import tensorflow as tf
            self._writer = tf.summary.create_file_writer(str(self.tensorboard_dir))

    def on_epoch_begin(self, epoch, logs=None):
        if self._resuming:
            self._resuming = False
            self._continue_record(epoch)

    def _continue_record(self, epoch: int) -> None:
        """Cut a reopened record back to ``epoch`` and line it up with the model's weights."""
        store = self._store
        store.truncate(float(epoch))
        self._epochs_done = epoch
        restarts = [float(e) for e in store.metadata.get("restart_epochs", []) if e <= epoch]
        store.metadata["restart_epochs"] = restarts
        self.restarts = len(restarts)
        self._segment_epoch = restarts[-1] if restarts else 0.0
        # the logs carry the latest analysis's diagnostics, as they would have without the break
        primary = [a for a in store.prior_analyses if a.observable == self.primary]
        if primary:
            self._set_latest(primary[-1].diagnostics)
        for analysis in primary:
            if analysis.first_epoch >= self._segment_epoch:
                self._count_fixed_point(analysis.diagnostics)
        if "weights" not in self.observables:
            return
        epochs = store.weight_epochs
        current = self._observe_weights()
        if epochs.size and epochs[-1] == epoch:
            stored = np.asarray(store.weights()[:, -1], dtype=np.float64)
            scale = 1.0 + float(np.max(np.abs(stored)))
            if not np.allclose(stored, current, rtol=0.0, atol=1e-5 * scale):
                raise ValueError(
                    f"storage: the snapshot of epoch {epoch} in {self.storage} differs from the "
                    f"model's weights (max difference {np.max(np.abs(stored - current)):.3g}); "
                    "the record belongs to another run: pass a fresh storage folder or resume=False")
        else:
            if epochs.size and epoch - epochs[-1] > 1:
                warnings.warn(f"KoopmanMonitor: the record in {self.storage} ends at epoch "
                              f"{epochs[-1]:g} but training resumes at epoch {epoch}; the "
                              "snapshots in between are missing", RuntimeWarning)
            store.append_weights(float(epoch), current)
        for column in np.asarray(store.weights()).T:
            self._qr.append(column)
        # after a restart at epoch e the record holds two snapshots at e; the segment starts at
        # the second (the re-initialised weights)
        self._segment_start = (int(np.searchsorted(store.weight_epochs, self._segment_epoch,
                                                   side="right")) - 1 if restarts else 0)

    def on_train_batch_end(self, batch, logs=None):  # replaced in __init__ when not used
        self._steps += 1
        if "weights" in self.observables and self._steps % self.batch_interval == 0:
            steps = self.params.get("steps") or 0
            epoch = self._epochs_done + ((batch + 1) / steps if steps else 0.0)
            self._record_weights(epoch)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        self._epochs_done = epoch + 1
        done = self._epochs_done
        watched = dict.fromkeys(("loss",) + self.observables)
        nonfinite = [k for k in watched if k in logs and not np.isfinite(float(logs[k]))]
        weights = None
        if "weights" in self.observables and self.batch_interval is None:
            weights = self._observe_weights()
            if not np.all(np.isfinite(weights)):
                nonfinite.append("weights")
        if nonfinite:
            self._stop(epoch, f"non-finite {', '.join(nonfinite)} at epoch {done}")
            self._latest["koopman_nonfinite"] = 1.0
            warnings.warn(f"KoopmanMonitor: {self.stop_reason}; training stopped", RuntimeWarning)
            logs.update(self._latest)
            return
        if weights is not None:
            self._append_weights(float(done), weights)
        names = dict.fromkeys(("loss",) + self.observables)  # the loss always (poor-init rule)
        scalars = {k: float(logs[k]) for k in names if k != "weights" and k in logs}
        if scalars:
            self._store.append_scalars(float(done), scalars)
        if self._should_analyse(done):
            self._analyse(done)
        self._decide(epoch, done)
        logs.update(self._latest)

    def on_train_end(self, logs=None):
        if self._store is not None:
            self._store.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ recording
    def _observe_weights(self) -> np.ndarray:
        parts = [keras.ops.convert_to_numpy(v).reshape(-1) for v in self.model.trainable_variables]
        vector = np.concatenate(parts)
        if self._sketch is not None:
            vector = self._sketch(vector)
        if self.augment_constant:
            vector = np.append(vector, 1.0)
        return vector

    def _record_weights(self, epoch: float) -> None:
        weights = self._observe_weights()
        if not np.all(np.isfinite(weights)):
            self._latest["koopman_nonfinite"] = 1.0
            self._stop(None, f"non-finite weights at epoch {epoch:g}")
            return
        self._append_weights(epoch, weights)

    def _append_weights(self, epoch: float, vector: np.ndarray) -> None:
        self._store.append_weights(epoch, vector)
        stored = self._store.weights()[:, -1]  # what was stored, in its dtype
        self._qr.append(stored)

    # ------------------------------------------------------------------ analysis
    def _should_analyse(self, done: int) -> bool:
        if done in self.analyze_at or (self.analyze_every is not None and done % self.analyze_every == 0):
            return True
        first, last = self.poor_init_epochs
        return (self.on_poor_initialization is not None and self.poor_init_rule != "loss"
                and first <= done - self._segment_epoch <= last)

    def _analyse(self, done: int) -> None:
        new = []
        for name in self.observables:
            try:
                analysis = self._analyse_observable(name)
            except ValueError as exc:  # too few values so far, NaN in a series, ...
                if self.verbose:
                    print(f"KoopmanMonitor: epoch {done}: {name} not analysed ({exc})")
                continue
            if analysis is not None:
                new.append(analysis)
        self.analyses.extend(new)
        if self._store is not None:
            self._store.set_analyses(self.analyses)
        for analysis in new:
            if analysis.observable == self.primary:
                self._set_latest(analysis.diagnostics)
                self._count_fixed_point(analysis.diagnostics)
            if self.verbose:
                d = analysis.diagnostics
                print(f"KoopmanMonitor: epoch {done}: {analysis.observable}: rank {analysis.rank}, "
                      f"unit cluster {d.unit_cluster:.3f}, radius {d.spectral_radius:.4f}, "
                      f"growing {d.growing:.3f}, epochs to converge {d.epochs_to_converge:.1f}")
            if self._writer is not None:
                self._log_image(analysis, done)

    def _set_latest(self, diag) -> None:
        """Log the spectral diagnostics of the primary observable's latest analysis."""
        self._latest.update({
            "koopman_unit_cluster": diag.unit_cluster,
            "koopman_spectral_radius": diag.spectral_radius,
            "koopman_growing": diag.growing,
            "koopman_epochs_to_converge": diag.epochs_to_converge,
        })

    def _count_fixed_point(self, diag) -> None:
        """Consecutive primary analyses whose unit cluster reaches the stop threshold."""
        held = np.isfinite(diag.unit_cluster) and diag.unit_cluster >= self.fixed_point_threshold
        self._fixed_point_streak = self._fixed_point_streak + 1 if held else 0

    def _window_slice(self, count: int) -> slice:
        start = self._segment_start if self.window is None else max(self._segment_start, count - self.window)
        return slice(start, count)

    def _analyse_observable(self, name: str) -> KoopmanAnalysis | None:
        options = dict(tol=self.tol, refine=self.refine, delta=self.delta,
                       min_importance=self.min_importance, max_residual=self.max_residual)
        if name == "weights":
            count = len(self._qr)
            window = self._window_slice(count)
            if window.stop - window.start < 3:
                raise ValueError("fewer than 3 weight snapshots")
            return analyze_weights(self._qr.R[:, window], self._store.weight_epochs[window],
                                   n_features=self._qr.n_features, keep_modes=False, **options)
        epochs, values = self._store.scalar(name)
        if epochs.size == 0:
            return None
        keep = epochs > self._segment_epoch
        epochs, values = epochs[keep], values[keep]
        if self.window is not None:
            epochs, values = epochs[-self.window:], values[-self.window:]
        return analyze_series(values, epochs, observable=name, delays=self.delays,
                              keep_modes=self.keep_modes, **options)

    def weight_modes(self, analysis: KoopmanAnalysis | None = None) -> KoopmanModes:
        """Koopman modes of the weight observable in weight coordinates.

        Re-runs DMD_RRR on the analysis window (default: the latest weights analysis) and
        lifts the modes with the trajectory's orthonormal basis (``O(n T k)``).  Rows are the
        flattened trainable weights in ``model.trainable_variables`` order (sketch
        coordinates if ``max_dim`` was active), plus the constant observable as last row when
        ``augment_constant``.
        """
        if self._qr is None or len(self._qr) == 0:
            raise RuntimeError("no weight trajectory recorded")
        if analysis is None:
            candidates = [a for a in self.analyses if a.observable == "weights"]
            if not candidates:
                raise RuntimeError("no weights analysis yet")
            analysis = candidates[-1]
        epochs = self._store.weight_epochs
        start = int(np.searchsorted(epochs, analysis.first_epoch))
        stop = int(np.searchsorted(epochs, analysis.last_epoch, side="right"))
        tol = default_tol(self._qr.n_features, np.float32) if self.tol is None else self.tol
        compressed = dmd_rrr(self._qr.R[:, start:stop], tol=tol, refine=self.refine)
        lifted = self._qr.Q @ compressed.modes
        return KoopmanModes(
            eigenvalues=compressed.eigenvalues.copy(), modes=lifted,
            residuals=compressed.residuals.copy(), amplitudes=compressed.amplitudes.copy(),
            importance=compressed.importance.copy(), rank=compressed.rank,
            singular_values=compressed.singular_values.copy(), t_end=compressed.t_end,
            real_data=compressed.real_data)

    def fixed_point_estimate(self, analysis: KoopmanAnalysis | None = None, *,
                             delta: float | None = None) -> np.ndarray:
        """The weights that training is converging to, from the ``λ ≈ 1`` Koopman modes.

        The weight trajectory's decomposition ``x_t = Σ_j φ_j α_j λ_jᵗ`` (Eq. (2)) splits
        into modes that persist (``|λ_j − 1| <= delta``) and modes that decay; the estimate is
        the persistent part at the end of the window, ``Re Σ_{|λ_j − 1| <= δ} φ_j α_j λ_j^{t_end}``,
        divided by its constant-observable coordinate (which is 1 on the data) when
        ``augment_constant`` is on.  Without the constant, a trajectory with no mode near 1
        decays to zero, and the estimate is zero.  For gradient descent on a quadratic it is the minimiser
        (tested), and at convergence it is the current weights, which is why pruning by its
        magnitudes (Redman et al., ICLR 2022; :func:`~keras_koopman.koopman_magnitude_masks`)
        reduces to magnitude pruning there.

        Parameters
        ----------
        analysis : KoopmanAnalysis, optional
            A weights analysis of this monitor (default: the latest).
        delta : float, optional
            Distance to 1 below which a mode counts as persistent (default: the monitor's).

        Returns
        -------
        ndarray, shape (n_weights,)
            Flattened trainable weights in ``model.trainable_variables`` order, float64.

        Raises
        ------
        RuntimeError
            With a sketch (``max_dim``), which does not map back to weights; with the
            constant observable, when the modes near 1 do not carry it; or with no weights
            analysis.

        Cost: that of :meth:`weight_modes` (``O(n T k)``).
        """
        if self._sketch is not None:
            raise RuntimeError("fixed_point_estimate needs the full weights; this monitor "
                               f"recorded a max_dim={self.max_dim} sketch")
        delta = self.delta if delta is None else float(delta)
        modes = self.weight_modes(analysis)
        near = np.abs(modes.eigenvalues - 1.0) <= delta
        persistent = modes.modes[:, near] @ (modes.amplitudes[near]
                                             * modes.eigenvalues[near] ** modes.t_end)
        estimate = np.real(persistent)
        if self.augment_constant:
            if abs(estimate[-1]) < 0.5:
                raise RuntimeError(f"no fixed point: the Koopman modes within delta={delta:g} "
                                   "of 1 do not carry the constant observable (coordinate "
                                   f"{estimate[-1]:.3g}, expected 1); analyse more epochs")
            estimate = estimate[:-1] / estimate[-1]
        return estimate

    # ------------------------------------------------------------------ decisions
    def is_poor_initialization(self, done: int) -> str | None:
        """The poor-initialisation rule after ``done`` completed epochs; the reason, or ``None``.

        Evaluated when ``poor_init_epochs[0] <= done − e0 <= poor_init_epochs[1]``, ``e0`` the
        epoch of the last restart (0 without one).  With ``poor_init_rule="loss"`` (default)
        it fires when the training loss is still at least ``loss_ratio`` times its first
        value after the restart.  The spectral rule, on the analysis of the primary observable
        at this epoch, fires if any of:

        1. *stagnation*: ``unit_cluster >= stagnation_threshold`` (the important eigenvalues
           sit at 1: training is at a fixed point) while the loss is still at least
           ``high_loss_fraction`` of its first value (0: no loss condition);
        2. *growth* (if ``growth_threshold`` is set): the importance-weighted fraction of
           growing modes (``|λ| > 1 + delta``) is at least ``growth_threshold``;
        3. *too slow* (if ``check_budget``): ``epochs_to_converge`` exceeds the epochs left.

        Defaults were chosen on held-out seeds (``docs/results.md``): on an MNIST MLP with 24
        held-out runs the loss rule had 1/11 false alarms and 0/13 misses, the spectral rule
        1/11 and 2/13.
        """
        first, last = self.poor_init_epochs
        if not first <= done - self._segment_epoch <= last:  # counted from the (re)start
            return None
        epochs, loss = self._store.scalar("loss")
        loss = loss[epochs > self._segment_epoch]
        reasons = []
        if self.poor_init_rule in ("loss", "either") and loss.size >= 2 \
                and loss[-1] >= self.loss_ratio * loss[0]:
            reasons.append(f"loss {loss[-1]:.4g} is still {loss[-1] / loss[0]:.0%} of its first value")
        if self.poor_init_rule in ("spectral", "either"):
            current = [a for a in self.analyses if a.observable == self.primary and a.last_epoch == done]
            if current:
                reasons.extend(self._spectral_reasons(current[-1].diagnostics, loss, done))
        return "; ".join(reasons) if reasons else None

    def _spectral_reasons(self, diag, loss: np.ndarray, done: int) -> list[str]:
        reasons = []
        loss_high = loss.size >= 1 and loss[-1] >= self.high_loss_fraction * loss[0]
        if diag.unit_cluster >= self.stagnation_threshold and loss_high:
            reasons.append(f"stagnation: unit cluster {diag.unit_cluster:.2f}")
        if self.growth_threshold is not None and diag.growing >= self.growth_threshold:
            reasons.append(f"growing modes carry {diag.growing:.0%} of the importance")
        budget = (self.params or {}).get("epochs")
        if self.check_budget and budget is not None and diag.epochs_to_converge > budget - done:
            reasons.append(f"predicted {diag.epochs_to_converge:.0f} epochs to converge, "
                           f"{budget - done} left in the budget")
        return reasons

    def _decide(self, epoch: int, done: int) -> None:
        if self.on_poor_initialization is not None:
            reason = self.is_poor_initialization(done)
            if reason is not None:
                self._latest["koopman_poor_init"] = 1.0
                self._act_on_poor_init(epoch, done, reason)
                return
        if (self.stop_at_fixed_point and done >= self.warmup
                and self._fixed_point_streak >= self.stop_patience):
            cluster = self._latest["koopman_unit_cluster"]
            streak = ("" if self.stop_patience == 1
                      else f" in {self._fixed_point_streak} consecutive analyses")
            self._stop(epoch, f"fixed point: unit cluster {cluster:.3f} >= "
                              f"{self.fixed_point_threshold}{streak} after {done} epochs")

    def _act_on_poor_init(self, epoch: int, done: int, reason: str) -> None:
        message = f"KoopmanMonitor: poor initialisation suspected after {done} epochs ({reason})"
        if self.on_poor_initialization == "warn":
            warnings.warn(message, RuntimeWarning)
        elif self.on_poor_initialization == "stop":
            warnings.warn(message + "; training stopped", RuntimeWarning)
            self._stop(epoch, f"poor initialisation: {reason}")
        elif self.restarts >= self.max_restarts:
            warnings.warn(message + f"; {self.max_restarts} restarts used, training stopped",
                          RuntimeWarning)
            self._stop(epoch, f"poor initialisation after {self.restarts} restarts: {reason}")
        else:
            self.restarts += 1
            reinitialize(self.model, seed=self.restart_seed + self.restarts - 1)
            self._fixed_point_streak = 0
            warnings.warn(message + f"; weights re-initialised (restart {self.restarts})", RuntimeWarning)
            if self.verbose:
                print(message)
            self._segment_epoch = float(done)
            self._store.metadata.setdefault("restart_epochs", []).append(float(done))
            if "weights" in self.observables:
                self._segment_start = len(self._qr)
                self._append_weights(float(done), self._observe_weights())

    def _stop(self, epoch, reason: str) -> None:
        self.model.stop_training = True
        self.stopped_epoch = epoch
        self.stop_reason = reason
        if self.verbose:
            print(f"KoopmanMonitor: stopping: {reason}")

    # ------------------------------------------------------------------ output
    def _log_image(self, analysis: KoopmanAnalysis, done: int) -> None:
        import tensorflow as tf

        from keras_koopman.plotting import spectrum_png

        image = tf.image.decode_png(spectrum_png(analysis), channels=4)[None]
        with self._writer.as_default():
            tf.summary.image(f"koopman/{analysis.observable}", image, step=done)
        self._writer.flush()

    def save(self, path) -> None:
        """Write the record (weights, scalars, analyses) to a directory; chief only.

        The layout is described in :mod:`keras_koopman.trajectory`; read it back with
        :meth:`load`.
        """
        if self._store is None:
            raise RuntimeError("nothing recorded yet: call model.fit with this callback first")
        if _is_chief():
            self._store.save(path)

    @staticmethod
    def load(path) -> TrainingTrajectory:
        """Read a saved or disk-backed record (``TrainingTrajectory``)."""
        return TrainingTrajectory.load(path)


def _is_chief() -> bool:
    import tensorflow as tf
    if not tf.distribute.has_strategy():
        return True
    return bool(tf.distribute.get_strategy().extended.should_checkpoint)


_INITIALIZED = ("kernel", "bias", "embeddings", "recurrent_kernel", "depthwise_kernel",
                "pointwise_kernel", "gamma", "beta")


def reinitialize(model: keras.Model, seed: int) -> None:
    """Draw fresh initial values for every variable that has an initializer, and reset the
    optimizer's state (moments and iteration count).

    Each layer's ``<name>_initializer`` is re-created from its config with a seed derived
    from ``seed``, so restarts are reproducible.  Other variables are left as they are.
    """
    counter = 0
    for layer in _all_layers(model):
        for attr in _INITIALIZED:
            variable = getattr(layer, attr, None)
            init = getattr(layer, f"{attr}_initializer", None)
            if variable is None or init is None or not hasattr(variable, "assign"):
                continue
            config = init.get_config()
            if "seed" in config:
                config["seed"] = int(seed) * 100003 + counter
            fresh = init.__class__.from_config(config)
            variable.assign(fresh(variable.shape, variable.dtype))
            counter += 1
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and getattr(optimizer, "built", False):
        for variable in optimizer.variables:
            variable.assign(keras.ops.zeros(variable.shape, variable.dtype))


def _all_layers(layer):
    seen = set()
    stack = [layer]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(getattr(current, "layers", []) or [])
