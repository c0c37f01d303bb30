"""``KoopmanAccelerator``: Koopman weight extrapolation with an accept/rollback guard.

Training is a dynamical system ``w_{t+1} = T(w_t)`` on the weights (Mohr et al., *Applications
of Koopman Mode Analysis to Neural Networks*, section "Insights into neural network training
convergence via the Koopman spectrum").  Its Koopman mode decomposition over a window of
epochs (the paper's Eq. (2)),

``x_t ≈ Σ_j z_j α_j λ_jᵗ``,  with the observable ``x_t = [w_t; 1]``,

can be continued beyond the data.  Dogra & Redman (2020) push the weights forward with such a
fitted linear operator instead of taking optimiser steps; Tano, Portwood & Ragusa (2020) do it
per layer in POD coordinates and resume back-propagation after each jump.  This callback does
both, as one rule:

1. Every ``analyze_every`` epochs, DMD_RRR (:func:`~keras_koopman.dmd_rrr`) of the last ``window``
   weight snapshots since the last accepted jump, for the whole network or each layer.
2. Keep the trusted pairs: residual ``<= options.max_residual`` (spurious Ritz pairs have large
   residuals) and not growing (``|λ| <= 1 + delta``).
3. Target: the forecast ``t_end + horizon`` or the fixed point (``λ ≈ 1`` modes kept,
   ``|λ| < 1`` modes decayed to zero).
4. Accept the jump only if the loss on held data decreases; otherwise restore the weights
   exactly.  Every attempt is recorded in :attr:`KoopmanAccelerator.jumps`.

Cost per epoch: one copy of the weights (``O(n)``).  Per attempt: one DMD_RRR of an
``(n + 1) × window`` matrix (``O(n · window²)``) and one or a few forward passes over the held
data.  See ``docs/accelerator.md`` for the measurements behind the defaults.
"""

from __future__ import annotations

import collections
import math
import numbers
import time
from dataclasses import dataclass

import keras
import numpy as np

from keras_koopman._messages import say
from keras_koopman._threads import one_blas_thread
from keras_koopman.koopman import AnalysisOptions, KoopmanModes, default_tol, dmd_rrr
from keras_koopman.recorder import WeightVector
from keras_koopman.reinit import reset_optimizer_state

__all__ = ["ACCELERATOR_MAX_RESIDUAL", "JumpRecord", "KoopmanAccelerator", "LOG_KEYS"]

#: residual bound of the trusted pairs when ``options.max_residual`` is ``None`` (a jump only
#: moves along modes it can trust; chosen by ``scripts/bench_accelerate.py``)
ACCELERATOR_MAX_RESIDUAL = 0.05

#: the ``logs`` keys written at the end of every epoch
LOG_KEYS = (
    "koopman_jump_attempted",
    "koopman_jump_accepted",
    "koopman_jump_loss_ratio",
    "koopman_jumps_accepted",
)

_TARGETS = ("forecast", "fixed_point")
_GRANULARITIES = ("network", "layer")
_OPTIMIZER_STATES = ("keep", "reset")


@dataclass(frozen=True)
class JumpRecord:
    """One attempted jump (accepted or rolled back).

    Attributes
    ----------
    epoch : int
        Index of the epoch in which the jump was attempted (0-based, as in ``logs``).
    step : int
        The optimiser's iteration count when the jump was attempted.
    accepted : bool
        Whether the weights were moved.
    reason : str
        ``"accepted"``, ``"loss did not decrease"``, ``"no trusted modes"``,
        ``"non-finite weights"``, ``"non-finite loss"`` or ``"decomposition failed: ..."``.
    target : str
        ``"forecast"`` or ``"fixed_point"``.
    horizon : int or None
        Forecast horizon in epochs (``None`` for the fixed point).
    loss_before, loss_after : float
        Held loss before and after the (last tried) jump; ``loss_after`` is NaN if no jump
        was evaluated.
    step_fraction : float
        Fraction of the predicted step that was tried last (``< 1`` after backtracking); 0 if
        no step was evaluated.
    step_norm : float
        ``‖Δw‖₂`` of the predicted (full) step.
    weight_norm : float
        ``‖w‖₂`` before the jump.
    n_modes : int
        Ritz pairs computed (summed over layers).
    n_used : int
        Pairs that moved the weights (trusted and selected for the target).
    seconds : float
        Wall-clock time of the attempt (decomposition and loss checks).
    """

    epoch: int
    step: int
    accepted: bool
    reason: str
    target: str
    horizon: int | None
    loss_before: float
    loss_after: float
    step_fraction: float
    step_norm: float
    weight_norm: float
    n_modes: int
    n_used: int
    seconds: float


class KoopmanAccelerator(keras.callbacks.Callback):
    """Jump the weights along their Koopman modes, keeping a jump only if held loss improves.

    Parameters
    ----------
    held_data : tuple ``(x, y)`` or ``(x, y, sample_weight)``
        Data for the accept/rollback check (arrays, or nested structures of arrays as the model
        takes them).  Use a slice of the *training* data (a few hundred to a few thousand
        samples), not the validation set, or the guard selects on the validation loss.
    analyze_every : int
        Analyse and attempt a jump every this many snapshots (the schedule; epochs by default).
    window : int
        Number of weight snapshots (one per epoch end, or per ``batch_interval`` steps; the
        weights before training or just after a jump count as one) fitted by DMD_RRR.  At
        least 3.  An attempt waits until ``window`` snapshots exist since the start or the last
        accepted jump.
    batch_interval : int, optional
        Take a snapshot (and possibly jump) every this many training steps instead of at
        epoch ends, for training that runs few, long epochs.  ``analyze_every``, ``window`` and
        ``horizon`` then count snapshots.  Adds a batch hook, which turns off Keras's
        asynchronous step dispatch.
    target : {"forecast", "fixed_point"}
        Jump to the decomposition's forecast ``horizon`` epochs ahead, or to its fixed point:
        modes with ``|λ − 1| <= delta`` kept, modes with ``|λ| < 1`` decayed to zero (the λ ≈ 1
        mode times its amplitude, docs/koopman.md "Affine maps and the constant observable").
    horizon : int
        Snapshots (epochs by default) ahead for ``target="forecast"`` (ignored for the fixed
        point).
    granularity : {"network", "layer"}
        One decomposition of all trainable weights, or one per layer (variables grouped by
        their path, e.g. a kernel with its bias), each with its own constant observable.
    pod_rank : int, optional
        Work in the leading ``pod_rank`` POD coordinates of the window.  DMD_RRR's own
        compression *is* a POD: the (column-scaled) snapshots are factored by an SVD and the
        Rayleigh–Ritz step runs in the span of the leading left singular vectors, so POD
        coordinates are the ``rank`` truncation of that SVD (Tano et al. keep a few POD modes
        per layer).  ``None`` keeps every singular value above the float32-aware tolerance.
    options : AnalysisOptions, optional
        The analysis settings (:class:`~keras_koopman.AnalysisOptions`).  Only Ritz pairs with
        data-driven residual at most ``options.max_residual`` are trusted (residuals of unit
        modes, so the bound is relative; :data:`ACCELERATOR_MAX_RESIDUAL` when it is ``None``);
        ``|λ − 1| <= options.delta`` counts as λ ≈ 1 (the fixed point) and
        ``|λ| > 1 + options.delta`` as growing, never extrapolated.
    anchored : bool
        ``True``: move the current weights by the predicted change of the trusted modes only,
        ``w + Σ_j z_j α_j (f_j − λ_j^{t_end})`` (the part of the weights the decomposition
        does not trust stays where it is).  ``False``: replace the weights by the
        reconstruction from the trusted modes alone, ``Σ_j z_j α_j f_j``, divided by its
        constant coordinate (the literal "mode × amplitude").  Identical for exact data.
        Here ``f_j = λ_j^{t_end + horizon}`` (forecast); for the fixed point
        ``f_j = λ_j^{t_end}`` (λ ≈ 1: kept at its current value) or 0 (``|λ| < 1``: decayed).
    backtrack : int
        After a rejected jump, retry with half the step, up to this many times (each try costs
        one pass over ``held_data``).
    backoff : bool
        After each rejected attempt double the wait before the next one (up to
        ``8 · analyze_every``); an accepted jump resets it to ``analyze_every``.  Bounds the cost where jumps
        do not help.
    min_improvement : float
        Accept only if ``loss_after < (1 − min_improvement) · loss_before``.
    optimizer_state : {"keep", "reset"}
        After an accepted jump, keep the optimiser's slot variables (Adam's moments, SGD's
        momentum) or set them to zero.  The iteration counter and the learning rate are never
        touched, so learning-rate schedules continue; with ``"reset"`` Adam's bias correction
        is already ≈ 1, so its next steps are up to ``(1 − β₁)/√(1 − β₂)`` (≈ 3.2 for the
        defaults) times the usual size until the moments refill.
    start_from_epoch : int
        Epochs to wait before the first attempt (as in ``keras.callbacks.EarlyStopping``: the
        first attempt can come at the end of epoch ``start_from_epoch``, 0-based).
    held_batch_size : int
        Forward-pass batch size for the held loss.
    verbose : int
        1 prints one line per attempt.

    Attributes
    ----------
    jumps : list of JumpRecord
        Every attempt of the last ``fit``.
    seconds : float
        Total wall-clock time spent in this callback during the last ``fit``.

    Notes
    -----
    Logs: at every epoch end the callback writes :data:`LOG_KEYS` into ``logs`` —
    ``koopman_jump_attempted`` and ``koopman_jump_accepted`` (number of attempts and of
    accepted jumps in this epoch: 0 or 1 unless ``batch_interval`` is set),
    ``koopman_jump_loss_ratio`` (held loss after/before of the epoch's last attempt, NaN
    without one) and ``koopman_jumps_accepted`` (running count).  With epoch snapshots the
    ``val_loss`` in the same ``logs`` was measured *before* the jump.

    Why the constant observable: one epoch of gradient descent near a minimum is affine,
    ``w ↦ (I − ηH) w + ηb``.  On ``[w; 1]`` it is linear, with eigenvalues ``1 − ηh_j`` and 1; the
    λ = 1 eigenvector is ``[w*; 1]``, the fixed point (docs/koopman.md, "Affine maps").  For a linear model
    trained by full-batch gradient descent the fixed-point jump is therefore the
    least-squares solution, whatever epoch it is taken at.

    Rollback is bit-exact: the float32 values read before the jump are written back.
    Randomness is not consumed, so a run whose jumps are all rejected follows plain
    training exactly.

    Example:

    >>> import keras, numpy as np, keras_koopman as kk
    >>> keras.utils.set_random_seed(0)  # the model's initial weights
    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> y = x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32") + 0.3
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(0.02), loss="mse")
    >>> accelerator = kk.KoopmanAccelerator((x, y), analyze_every=5, window=5)
    >>> history = model.fit(x, y, batch_size=64, epochs=10, verbose=0, callbacks=[accelerator])
    >>> [jump.accepted for jump in accelerator.jumps]  # both jumps to the fixed point kept
    [True, True]
    >>> history.history["loss"][-1] < 0.01  # plain SGD is still at 2.1 after 10 epochs
    True
    """

    def __init__(self, held_data, *, analyze_every: int = 10, window: int = 10,
                 batch_interval: int | None = None, target: str = "fixed_point",
                 horizon: int = 20, granularity: str = "network", pod_rank: int | None = None,
                 options: AnalysisOptions | None = None, anchored: bool = True,
                 backtrack: int = 2, backoff: bool = True, min_improvement: float = 1e-3,
                 optimizer_state: str = "keep", start_from_epoch: int = 0,
                 held_batch_size: int = 1024, verbose: int = 0) -> None:
        super().__init__()
        self.held_data = _check_held_data(held_data)
        self.analyze_every = _positive_int(analyze_every, "analyze_every")
        self.window = _positive_int(window, "window")
        if self.window < 3:
            raise ValueError(f"window must be at least 3 snapshots; got {window!r}")
        self.batch_interval = (None if batch_interval is None
                               else _positive_int(batch_interval, "batch_interval"))
        if self.batch_interval is None:
            # an overridden batch hook would make Keras dispatch every step synchronously
            self.on_train_batch_end = keras.callbacks.Callback.on_train_batch_end.__get__(self)
        self.target = _choice(target, "target", _TARGETS)
        self.horizon = _positive_int(horizon, "horizon")
        self.granularity = _choice(granularity, "granularity", _GRANULARITIES)
        self.pod_rank = None if pod_rank is None else _positive_int(pod_rank, "pod_rank")
        self.options = AnalysisOptions.coerce(options)
        if not self.options.delta < 1:
            raise ValueError(f"options.delta must be in [0, 1); got {self.options.delta!r}")
        if not isinstance(anchored, (bool, np.bool_)):
            raise ValueError(f"anchored must be True or False; got {anchored!r}")
        self.anchored = bool(anchored)
        self.backtrack = _nonnegative_int(backtrack, "backtrack")
        if not isinstance(backoff, (bool, np.bool_)):
            raise ValueError(f"backoff must be True or False; got {backoff!r}")
        self.backoff = bool(backoff)
        self.min_improvement = _nonnegative(min_improvement, "min_improvement")
        if not self.min_improvement < 1:
            raise ValueError(f"min_improvement must be in [0, 1); got {min_improvement!r}")
        self.optimizer_state = _choice(optimizer_state, "optimizer_state", _OPTIMIZER_STATES)
        self.start_from_epoch = _nonnegative_int(start_from_epoch, "start_from_epoch")
        self.held_batch_size = _positive_int(held_batch_size, "held_batch_size")
        self.verbose = int(verbose)
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self.jumps: list[JumpRecord] = []
        self.seconds = 0.0
        self._snapshots: collections.deque = collections.deque(maxlen=self.window)
        self._groups: list[tuple[int, int]] = []
        self._since_attempt = 0
        self._interval = self.analyze_every
        self._accepted = 0
        self._epoch = 0
        self._steps = 0
        self._epoch_log = self._empty_epoch_log()

    @staticmethod
    def _empty_epoch_log() -> dict:
        return {"koopman_jump_attempted": 0.0, "koopman_jump_accepted": 0.0,
                "koopman_jump_loss_ratio": math.nan}

    # ------------------------------------------------------------------ Keras hooks
    def on_train_begin(self, logs=None):
        start = time.perf_counter()
        self._reset()
        variables = self.model.trainable_variables
        if not variables:
            raise ValueError("model has no trainable weights to extrapolate")
        self._groups = _groups(variables, self.granularity)
        self._vector = WeightVector(self.model, augment_constant=False)
        self._snapshots.append(self._read_weights())
        self.seconds += time.perf_counter() - start

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        self._epoch_log = self._empty_epoch_log()

    def on_train_batch_end(self, batch, logs=None):  # replaced in __init__ when not used
        self._steps += 1
        if self._steps % self.batch_interval == 0:
            start = time.perf_counter()
            self._observe(self._epoch >= self.start_from_epoch)
            self.seconds += time.perf_counter() - start

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        logs = logs if logs is not None else {}
        self._epoch = int(epoch)
        if self.batch_interval is None:
            self._observe(epoch >= self.start_from_epoch)
        logs.update(self._epoch_log)
        logs["koopman_jumps_accepted"] = float(self._accepted)
        self._epoch_log = self._empty_epoch_log()
        self.seconds += time.perf_counter() - start

    def _observe(self, allowed: bool) -> None:
        """Record a snapshot; attempt a jump when the schedule says so."""
        start = time.perf_counter()
        self._since_attempt += 1
        weights = self._read_weights()
        self._snapshots.append(weights)
        if not (allowed and self._since_attempt >= self._interval
                and len(self._snapshots) >= self.window):
            return
        self._since_attempt = 0
        record = self._attempt(self._epoch, weights, start)
        self.jumps.append(record)
        if record.accepted or not self.backoff:
            self._interval = self.analyze_every
        else:
            self._interval = min(2 * self._interval, 8 * self.analyze_every)
        self._epoch_log["koopman_jump_attempted"] += 1.0
        self._epoch_log["koopman_jump_accepted"] += float(record.accepted)
        if record.loss_before > 0 and np.isfinite(record.loss_after):
            self._epoch_log["koopman_jump_loss_ratio"] = record.loss_after / record.loss_before
        if self.verbose:
            say(f"KoopmanAccelerator: epoch {record.epoch + 1}, step {record.step}: "
                  f"{record.reason} (held loss {record.loss_before:.4g} -> "
                  f"{record.loss_after:.4g}, step {record.step_fraction:g} x "
                  f"{record.step_norm:.3g}, {record.n_used}/{record.n_modes} modes)")

    # ------------------------------------------------------------------ the jump
    def _attempt(self, epoch: int, weights: np.ndarray, start: float) -> JumpRecord:
        iteration = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

        def record(reason, *, accepted=False, loss_before=math.nan, loss_after=math.nan,
                   fraction=0.0, step_norm=math.nan, n_modes=0, n_used=0) -> JumpRecord:
            return JumpRecord(
                epoch=int(epoch), step=iteration, accepted=accepted, reason=reason,
                target=self.target, horizon=self.horizon if self.target == "forecast" else None,
                loss_before=float(loss_before), loss_after=float(loss_after),
                step_fraction=float(fraction), step_norm=float(step_norm),
                weight_norm=float(np.linalg.norm(weights)), n_modes=int(n_modes),
                n_used=int(n_used), seconds=time.perf_counter() - start)

        if not np.all(np.isfinite(weights)):
            return record("non-finite weights")
        try:
            with one_blas_thread():
                step, n_modes, n_used = self._predict_step()
        except ValueError as exc:
            return record(f"decomposition failed: {exc}")
        step_norm = float(np.linalg.norm(step))
        if n_used == 0 or step_norm == 0.0:
            return record("no trusted modes", step_norm=step_norm, n_modes=n_modes)
        if not np.isfinite(step_norm):
            return record("non-finite weights", n_modes=n_modes, n_used=n_used)
        before = held_loss(self.model, self.held_data, self.held_batch_size)
        if not np.isfinite(before):
            return record("non-finite loss", loss_before=before, step_norm=step_norm,
                          n_modes=n_modes, n_used=n_used)
        saved = [np.array(keras.ops.convert_to_numpy(v)) for v in self.model.trainable_variables]
        fraction, after = 1.0, math.nan
        for _ in range(self.backtrack + 1):
            self._write_weights(weights + fraction * step)
            after = held_loss(self.model, self.held_data, self.held_batch_size)
            if np.isfinite(after) and after < (1.0 - self.min_improvement) * before:
                self._accept()
                return record("accepted", accepted=True, loss_before=before, loss_after=after,
                              fraction=fraction, step_norm=step_norm, n_modes=n_modes,
                              n_used=n_used)
            fraction *= 0.5
        for variable, value in zip(self.model.trainable_variables, saved):
            variable.assign(value)
        reason = "loss did not decrease" if np.isfinite(after) else "non-finite loss"
        return record(reason, loss_before=before, loss_after=after, fraction=2.0 * fraction,
                      step_norm=step_norm, n_modes=n_modes, n_used=n_used)

    def _accept(self) -> None:
        self._accepted += 1
        self._snapshots.clear()
        self._snapshots.append(self._read_weights())
        if self.optimizer_state == "reset":
            reset_optimizer_state(self.model.optimizer, iterations=False)

    def _predict_step(self) -> tuple[np.ndarray, int, int]:
        return predict_step(np.stack(self._snapshots, axis=1), self._groups,
                            target=self.target, horizon=self.horizon, anchored=self.anchored,
                            pod_rank=self.pod_rank, options=self.options)

    # ------------------------------------------------------------------ weights and loss
    def _read_weights(self) -> np.ndarray:
        return self._vector.raw()

    def _write_weights(self, vector: np.ndarray) -> None:
        self._vector.assign(vector)


# ---------------------------------------------------------------------- the jump
def held_loss(model: keras.Model, held_data, batch_size: int) -> float:
    """Mean loss of ``model`` on ``held_data`` (compiled loss plus regularisers), in batches of
    ``batch_size``; leaves the compiled metrics alone.  Cost: one forward pass."""
    x, y, sample_weight = held_data
    count = _length(x)
    total = 0.0
    for lo in range(0, count, batch_size):
        hi = min(count, lo + batch_size)
        xb, yb = (keras.tree.map_structure(lambda a: a[lo:hi], part) for part in (x, y))
        wb = None if sample_weight is None else sample_weight[lo:hi]
        y_pred = model.predict_on_batch(xb)
        loss = model.compute_loss(x=xb, y=yb, y_pred=y_pred, sample_weight=wb, training=False)
        total += float(keras.ops.convert_to_numpy(loss)) * (hi - lo)
    return total / count


def predict_step(snapshots: np.ndarray, groups, *, target: str, horizon: int, anchored: bool,
             pod_rank: int | None, options: AnalysisOptions) -> tuple[np.ndarray, int, int]:
    """The predicted change of the flat weight vector, the pairs computed and used.

    Each group's window ``F = [x_0 … x_m]`` (``x = [w; 1]``) is factored ``F = Q R`` once;
    DMD_RRR runs on ``R`` (rows rotated by ``Qᵀ``, which changes neither eigenvalues,
    residuals nor amplitudes) and only the step is lifted, ``Q c`` — ``O(n m)`` instead of
    lifting every mode.
    """
    dtype = np.float32  # weights and their updates carry float32 rounding
    step = np.zeros(snapshots.shape[0])
    n_modes = n_used = 0
    for lo, hi in groups:
        data = np.empty((hi - lo + 1, snapshots.shape[1]))  # float64 [w; 1]
        data[:-1] = snapshots[lo:hi]
        data[-1] = 1.0
        basis, coords = np.linalg.qr(data)
        kwargs = options.dmd_kwargs()
        if kwargs["tol"] is None:
            kwargs["tol"] = default_tol(data.shape[0], dtype)
        modes = dmd_rrr(coords, rank=pod_rank, **kwargs)
        change, used = _change(modes, target=target, horizon=horizon, anchored=anchored,
                               options=options)
        n_modes += len(modes)
        n_used += used
        if not used:
            continue
        if anchored:
            step[lo:hi] = (basis @ change)[:-1]
        else:
            new = basis @ change
            with np.errstate(divide="ignore", invalid="ignore"):
                step[lo:hi] = new[:-1] / new[-1] - data[:-1, -1]
    return step, n_modes, n_used


def _change(modes: KoopmanModes, *, target: str, horizon: int, anchored: bool,
            options: AnalysisOptions) -> tuple[np.ndarray, int]:
    """Anchored: the predicted change of the last snapshot; else the new point itself."""
    lam = modes.eigenvalues
    bound = options.max_residual
    bound = ACCELERATOR_MAX_RESIDUAL if bound is None else bound
    delta = options.delta
    trusted = (modes.residuals <= bound) & (np.abs(lam) <= 1.0 + delta)
    if target == "forecast":
        use = trusted
        final = lam ** (modes.t_end + horizon)
    else:
        unit = np.abs(lam - 1.0) <= delta
        use = trusted & (unit | (np.abs(lam) < 1.0))
        final = np.where(unit, lam ** modes.t_end, 0.0)  # λ ≈ 1 frozen, the rest decayed
    z, alpha, lam, final = modes.modes[:, use], modes.amplitudes[use], lam[use], final[use]
    if anchored:
        return (z @ (alpha * (final - lam ** modes.t_end))).real, int(use.sum())
    return (z @ (alpha * final)).real, int(use.sum())


# ---------------------------------------------------------------------- helpers
def _groups(variables, granularity: str) -> list[tuple[int, int]]:
    """Flat-vector ranges ``[lo, hi)`` of the weight groups (whole network, or per layer)."""
    sizes = [int(np.prod(v.shape)) for v in variables]
    if granularity == "network":
        return [(0, int(sum(sizes)))]
    groups: list[tuple[int, int]] = []
    owner_of_previous = None
    offset = 0
    for variable, size in zip(variables, sizes):
        owner = variable.path.rsplit("/", 1)[0] if "/" in variable.path else variable.path
        if groups and owner == owner_of_previous:
            groups[-1] = (groups[-1][0], offset + size)
        else:
            groups.append((offset, offset + size))
        owner_of_previous = owner
        offset += size
    return groups


def _length(x) -> int:
    return int(keras.tree.flatten(x)[0].shape[0])


def _check_held_data(held_data):
    if not isinstance(held_data, (tuple, list)) or len(held_data) not in (2, 3):
        raise ValueError("held_data must be a tuple (x, y) or (x, y, sample_weight) of arrays; "
                         f"got {type(held_data).__name__}")
    x, y = held_data[0], held_data[1]
    sample_weight = held_data[2] if len(held_data) == 3 else None
    leaves = [np.asarray(a) for a in keras.tree.flatten((x, y, sample_weight)) if a is not None]
    if not leaves or any(a.ndim == 0 for a in leaves):
        raise ValueError("held_data must hold arrays with a leading sample dimension")
    counts = {int(a.shape[0]) for a in leaves}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"held_data: x, y (and sample_weight) must have the same non-zero number "
                         f"of samples; got sizes {sorted(counts)}")
    for a in leaves:
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise ValueError("held_data contains NaN or inf")
    return (x, y, sample_weight)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _nonnegative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    return int(value)


def _nonnegative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) >= 0:
        raise ValueError(f"{name} must be a non-negative finite number; got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a non-negative finite number; got {value!r}")
    return float(value)


def _choice(value, name: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
    return value
