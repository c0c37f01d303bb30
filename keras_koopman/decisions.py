"""Decisions on a monitored training run, each a small Keras callback.

Each reads the analyses of a :class:`~keras_koopman.KoopmanMonitor` listed before it in
``callbacks`` and acts in the style of Keras's own ``EarlyStopping``:

- :class:`FixedPointStopping`: the paper's termination criterion (the important Koopman
  eigenvalues of the weight dynamics cluster at 1: training sits at a fixed point).
- :class:`PoorInitialization`: the paper's poor-start test (warn, stop or re-draw the
  weights); by default the loss-ratio rule, which did as well as the spectral one on held-out
  seeds (``docs/results.md``).

The measured rules and their defaults are in ``docs/monitor.md``.
"""

from __future__ import annotations

import numbers
import warnings

import keras
import numpy as np

from keras_koopman._messages import say
from keras_koopman.koopman._validation import check_positive_int
from keras_koopman.monitor import KoopmanMonitor

__all__ = ["FixedPointStopping", "PoorInitialization", "loss_ratio_reason"]

_ACTIONS = ("warn", "stop", "restart")
_RULES = ("loss", "spectral", "either")


def _check_monitor(monitor) -> KoopmanMonitor:
    if not isinstance(monitor, KoopmanMonitor):
        raise TypeError(f"monitor must be a KoopmanMonitor; got {type(monitor).__name__}")
    return monitor


def _check_fraction(value, name: str, *, upper: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not 0.0 <= float(value) <= upper:
        raise ValueError(f"{name} must be a number in [0, {upper:g}]; got {value!r}")
    return float(value)


def loss_ratio_reason(loss: np.ndarray, ratio: float) -> str | None:
    """The loss rule: the reason when the last loss is still ``>= ratio`` times the first
    (``None`` otherwise, or with fewer than 2 values).  Cost ``O(1)``."""
    if loss.size >= 2 and loss[-1] >= ratio * loss[0]:
        return f"loss {loss[-1]:.4g} is still {loss[-1] / loss[0]:.0%} of its first value"
    return None


class FixedPointStopping(keras.callbacks.Callback):
    """Stop training when the weight dynamics sit at a fixed point.

    The monitor's primary observable must have a unit cluster (importance-weighted fraction
    of eigenvalues within ``options.delta`` of 1) of at least ``threshold`` in ``patience``
    consecutive analyses since the start or the last restart (a resumed run counts the
    analyses in its record).  The default patience was chosen on runs whose weights never
    settle (a single spike must not stop them) and on weights resting at a fixed point under
    noise; Keras's ``EarlyStopping`` on ``val_loss`` stopped nearer the best test loss in the
    runs measured, so use this callback to learn *that* training has settled
    (``docs/monitor.md`` and ``docs/results.md`` have the measurements).

    Args:
        monitor: The :class:`~keras_koopman.KoopmanMonitor` (listed before this callback).
        threshold: Unit cluster that counts as "at a fixed point", in [0, 1].
        patience: Consecutive analyses that must reach ``threshold``.
        start_from_epoch: Epochs to wait before the first check (as in Keras's
            ``EarlyStopping``: the first check is at the end of epoch ``start_from_epoch``,
            0-based, i.e. after ``start_from_epoch + 1`` epochs).
        verbose: 1 prints the stop.

    Example:

    >>> import keras, numpy as np, keras_koopman as kk
    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> y = x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    >>> monitor = kk.KoopmanMonitor(["weights"], analyze_every=5, window=10)
    >>> stopper = kk.FixedPointStopping(monitor, start_from_epoch=10)
    >>> _ = model.fit(x, y, epochs=100, verbose=0, callbacks=[monitor, stopper])
    >>> stopper.stopped_epoch is not None and stopper.stopped_epoch < 99
    True
    """

    def __init__(self, monitor: KoopmanMonitor, *, threshold: float = 0.9, patience: int = 3,
                 start_from_epoch: int = 10, verbose: int = 0) -> None:
        super().__init__()
        self.monitor = _check_monitor(monitor)
        self.threshold = _check_fraction(threshold, "threshold")
        self.patience = check_positive_int(patience, "patience")
        if isinstance(start_from_epoch, bool) or not isinstance(start_from_epoch, numbers.Integral) \
                or start_from_epoch < 0:
            raise ValueError(f"start_from_epoch must be a non-negative integer; got {start_from_epoch!r}")
        self.start_from_epoch = int(start_from_epoch)
        self.verbose = int(verbose)
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None

    def get_config(self) -> dict:
        return {"threshold": self.threshold, "patience": self.patience,
                "start_from_epoch": self.start_from_epoch, "verbose": self.verbose}

    def on_train_begin(self, logs=None):
        self.stopped_epoch = None
        self.stop_reason = None

    def streak(self) -> int:
        """Consecutive latest analyses of the primary observable, in the current segment,
        whose unit cluster reaches ``threshold``."""
        segment = self.monitor.recorder.segment_epoch
        count = 0
        for analysis in reversed(self.monitor.all_analyses):
            if analysis.observable != self.monitor.primary:
                continue
            cluster = analysis.diagnostics.unit_cluster
            if analysis.first_epoch < segment or not (np.isfinite(cluster) and cluster >= self.threshold):
                break
            count += 1
        return count

    def on_epoch_end(self, epoch, logs=None):
        self.monitor.check_order(epoch, "FixedPointStopping")
        done = int(epoch) + 1
        if int(epoch) < self.start_from_epoch or self.stopped_epoch is not None:
            return
        streak = self.streak()
        if streak >= self.patience:
            latest = [a for a in self.monitor.all_analyses if a.observable == self.monitor.primary][-1]
            runs = "" if self.patience == 1 else f" in {streak} consecutive analyses"
            self.stopped_epoch = int(epoch)
            self.stop_reason = (f"fixed point: unit cluster {latest.diagnostics.unit_cluster:.3f} "
                                f">= {self.threshold:g}{runs} after {done} epochs")
            self.model.stop_training = True
            if self.verbose:
                say(f"FixedPointStopping: stopping: {self.stop_reason}")


class PoorInitialization(keras.callbacks.Callback):
    """Warn, stop or re-draw the weights when training starts poorly.

    Evaluated after ``first <= e <= last`` completed epochs counted from the start or the
    last restart.  ``rule="loss"`` (default: on held-out runs it did at least as well as the
    spectral rule, ``docs/results.md``) fires when the training loss is still at least
    ``loss_ratio`` times its first value.
    ``rule="spectral"`` fires on stagnation: the primary observable's unit cluster is at
    least ``stagnation_threshold`` (the important eigenvalues sit at 1) while the loss is
    still at least ``high_loss_fraction`` of its first value; ``"either"`` fires on both.
    Every epoch ``logs["koopman_poor_init"]`` is 1.0 if the rule fired, else 0.0.

    Args:
        monitor: The :class:`~keras_koopman.KoopmanMonitor` (listed before this callback;
            it must record ``"loss"``, and ``"weights"`` for the spectral rule).
        action: ``"warn"``, ``"stop"`` or ``"restart"`` (:func:`~keras_koopman.reinitialize`
            with seed ``seed + i`` for restart ``i``, then a new segment of the record).
        rule: ``"loss"``, ``"spectral"`` or ``"either"``.
        epochs: ``(first, last)`` completed epochs at which the rule is evaluated.
        loss_ratio: Threshold of the loss rule, in [0, 1].
        stagnation_threshold: Unit cluster of the spectral rule, in [0, 1].
        high_loss_fraction: Loss condition of the spectral rule (0 = none), in [0, 1].
        max_restarts: With ``"restart"``, at most this many re-draws, then stop.
        seed: Seed of the first re-draw.
        verbose: 1 prints each decision.

    Example:

    >>> import keras, numpy as np, keras_koopman as kk
    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> y = x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(1e-6), loss="mse")  # far too slow
    >>> monitor = kk.KoopmanMonitor(["loss"])
    >>> check = kk.PoorInitialization(monitor, action="stop")
    >>> import warnings; warnings.simplefilter("ignore")
    >>> _ = model.fit(x, y, epochs=20, verbose=0, callbacks=[monitor, check])
    >>> check.stopped_epoch
    1
    """

    def __init__(self, monitor: KoopmanMonitor, *, action: str = "warn", rule: str = "loss",
                 epochs=(2, 5), loss_ratio: float = 0.5, stagnation_threshold: float = 0.95,
                 high_loss_fraction: float = 0.0, max_restarts: int = 3, seed: int = 1,
                 verbose: int = 0) -> None:
        super().__init__()
        self.monitor = _check_monitor(monitor)
        if action not in _ACTIONS:
            raise ValueError(f"action must be one of {_ACTIONS}; got {action!r}")
        if rule not in _RULES:
            raise ValueError(f"rule must be one of {_RULES}; got {rule!r}")
        if "loss" not in monitor.observables:
            raise ValueError("monitor must record 'loss' (observables) for PoorInitialization")
        if rule != "loss" and monitor.primary != "weights":
            raise ValueError(f"rule={rule!r} reads the weights' spectrum: the monitor's "
                             f"primary observable must be 'weights'; got {monitor.primary!r}")
        try:
            first, last = (check_positive_int(e, "epochs") for e in epochs)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"epochs must be (first, last) positive integers; got {epochs!r}") from exc
        if first > last:
            raise ValueError(f"epochs must have first <= last; got {epochs!r}")
        self.action, self.rule, self.epochs = action, rule, (first, last)
        self.loss_ratio = _check_fraction(loss_ratio, "loss_ratio")
        self.stagnation_threshold = _check_fraction(stagnation_threshold, "stagnation_threshold")
        self.high_loss_fraction = _check_fraction(high_loss_fraction, "high_loss_fraction")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, numbers.Integral) \
                or max_restarts < 0:
            raise ValueError(f"max_restarts must be a non-negative integer; got {max_restarts!r}")
        self.max_restarts = int(max_restarts)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an integer; got {seed!r}")
        self.seed = int(seed)
        self.verbose = int(verbose)
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None

    def get_config(self) -> dict:
        return {"action": self.action, "rule": self.rule, "epochs": list(self.epochs),
                "loss_ratio": self.loss_ratio, "stagnation_threshold": self.stagnation_threshold,
                "high_loss_fraction": self.high_loss_fraction, "max_restarts": self.max_restarts,
                "seed": self.seed, "verbose": self.verbose}

    def on_train_begin(self, logs=None):
        self.stopped_epoch = None
        self.stop_reason = None

    def reason(self, done: int) -> str | None:
        """The rule after ``done`` completed epochs: why it fires, or ``None``."""
        monitor = self.monitor
        first, last = self.epochs
        if not first <= done - monitor.recorder.segment_epoch <= last:
            return None
        _, loss = monitor.recorder.scalar("loss")
        reasons = []
        if self.rule in ("loss", "either"):
            reasons.append(loss_ratio_reason(loss, self.loss_ratio))
        if self.rule in ("spectral", "either"):
            analysis = monitor.analysis_at(done)
            if analysis is not None:
                cluster = analysis.diagnostics.unit_cluster
                loss_high = loss.size >= 1 and loss[-1] >= self.high_loss_fraction * loss[0]
                if cluster >= self.stagnation_threshold and loss_high:
                    reasons.append(f"stagnation: unit cluster {cluster:.2f}")
        reasons = [r for r in reasons if r]
        return "; ".join(reasons) if reasons else None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        self.monitor.check_order(epoch, "PoorInitialization")
        done = int(epoch) + 1
        reason = None if self.monitor.model.stop_training else self.reason(done)
        logs["koopman_poor_init"] = float(reason is not None)
        if reason is None:
            return
        message = f"poor initialisation suspected after {done} epochs ({reason})"
        restarts = self.monitor.restarts
        if self.action == "warn":
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        elif self.action == "stop" or restarts >= self.max_restarts:
            used = "" if self.action == "stop" else f"; {self.max_restarts} restarts used"
            warnings.warn(f"{message}{used}; training stopped", RuntimeWarning, stacklevel=2)
            self.stopped_epoch = int(epoch)
            self.stop_reason = f"poor initialisation: {reason}"
            self.model.stop_training = True
        else:
            from keras_koopman.reinit import reinitialize

            reinitialize(self.model, seed=self.seed + restarts)
            self.monitor.restart(done)
            warnings.warn(f"{message}; weights re-initialised (restart {restarts + 1})",
                          RuntimeWarning, stacklevel=2)
        if self.verbose:
            say(f"PoorInitialization: {message}")
