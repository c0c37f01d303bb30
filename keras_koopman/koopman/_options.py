"""``AnalysisOptions``: the one set of settings every Koopman analysis of training uses.

The engine (:func:`~keras_koopman.dmd_rrr`, :func:`~keras_koopman.diagnose`), the analysis
helpers, :class:`~keras_koopman.KoopmanMonitor`, the decision callbacks, the tuner, the
accelerator and the command-line tool all read their thresholds from one frozen
:class:`AnalysisOptions`; its defaults are the product's single documented default, so the
same data get the same verdict through every entry point (``docs/architecture.md``).
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields, replace

from keras_koopman.koopman._validation import check_nonnegative, check_positive_int, check_tol

__all__ = ["AnalysisOptions", "DEFAULT_OPTIONS"]


@dataclass(frozen=True)
class AnalysisOptions:
    """Settings of one Koopman analysis (DMD_RRR, delay embedding and diagnostics).

    Args:
        tol: Relative truncation of DMD_RRR's SVD, in ``[0, 1)``; ``None`` (default) uses
            :func:`~keras_koopman.koopman.default_tol` at float32 rounding level for the
            observable's size (weights and losses come from float32 arithmetic).
        scale: Scale the snapshots to unit norm before the SVD (DMD_RRR step 1).  This is a
            weighted least-squares fit when the data are noisy, not a change of basis: see
            ``docs/koopman.md`` ("Column scaling") for the measurement behind the default.
        refine: Refined Ritz pairs (DMD_RRR steps 9-14): ``True`` refines every pair,
            ``False`` none, a float ``q`` in ``(0, 1]`` the pairs at least ``q`` important;
            ``None`` (default) means ``q = min_importance``, i.e. the pairs the diagnostics
            read.  Plain Ritz pairs misread minibatch weight spectra (``docs/results.md``).
        delta: Distance to 1 within which an eigenvalue counts as "at 1" (unit cluster,
            decay and growth tests; the paper's clustering around 1).
        min_importance: Modes below this importance (relative amplitude) are ignored by the
            diagnostics.
        max_residual: If set, modes whose data-driven residual exceeds it are ignored too.
        delays: Hankel depth for scalar observables (the loss curve); ``None`` (default)
            uses ``max(2, T // 3)`` for ``T`` values (more snapshot pairs than rows: the fit
            error is informative, the residuals are ~0 for noisy curves).
        augment_constant: Append the constant function 1 to the weight observable, so that
            the fixed point of an affine training map is the λ = 1 mode (default ``True``).

    Example:

    >>> import keras_koopman as kk
    >>> options = kk.AnalysisOptions(delta=0.02)
    >>> options.refine_level
    0.01
    >>> kk.AnalysisOptions(delta=-1)
    Traceback (most recent call last):
    ...
    ValueError: delta must be a non-negative number or None; got -1
    """

    tol: float | None = None
    scale: bool = True
    refine: bool | float | None = None
    delta: float = 0.01
    min_importance: float = 0.01
    max_residual: float | None = None
    delays: int | None = None
    augment_constant: bool = True

    def __post_init__(self) -> None:
        check_tol(self.tol)
        for name in ("scale", "augment_constant"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False; got {getattr(self, name)!r}")
        refine = self.refine
        if refine is not None and not isinstance(refine, bool):
            if not isinstance(refine, numbers.Real) or not 0.0 < float(refine) <= 1.0:
                raise ValueError(f"refine must be True, False, None or a number in (0, 1]; "
                                 f"got {refine!r}")
        if check_nonnegative(self.delta, "delta") is None:
            raise TypeError("delta must be a non-negative number; got None")
        if check_nonnegative(self.min_importance, "min_importance") is None:
            raise TypeError("min_importance must be a non-negative number; got None")
        if self.min_importance > 1.0:
            raise ValueError(f"min_importance must be at most 1; got {self.min_importance!r}")
        check_nonnegative(self.max_residual, "max_residual")
        check_positive_int(self.delays, "delays", allow_none=True)

    @property
    def refine_level(self) -> bool | float:
        """The ``refine`` argument passed to :func:`~keras_koopman.dmd_rrr`."""
        return self.min_importance if self.refine is None else self.refine

    def dmd_kwargs(self) -> dict:
        """Keyword arguments of :func:`~keras_koopman.dmd_rrr` (``tol`` left to the caller
        when ``None``, since its default depends on the observable's size)."""
        return {"tol": self.tol, "scale": self.scale, "refine": self.refine_level}

    def diagnose_kwargs(self) -> dict:
        """Keyword arguments of :func:`~keras_koopman.diagnose`."""
        return {"delta": self.delta, "min_importance": self.min_importance,
                "max_residual": self.max_residual}

    def replace(self, **changes) -> "AnalysisOptions":
        """A copy with some fields changed (validated like the constructor)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"AnalysisOptions has no option(s) {unknown}")
        return replace(self, **changes)

    def get_config(self) -> dict:
        """JSON-serialisable form; ``AnalysisOptions(**config)`` rebuilds it."""
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict) -> "AnalysisOptions":
        return cls(**config)

    @classmethod
    def coerce(cls, value, name: str = "options") -> "AnalysisOptions":
        """``value`` if it is an ``AnalysisOptions``, defaults for ``None``, a mapping's
        options otherwise; anything else is a ``TypeError`` naming ``name``."""
        if value is None:
            return DEFAULT_OPTIONS
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return DEFAULT_OPTIONS.replace(**value)
        raise TypeError(f"{name} must be an AnalysisOptions, a dict of its fields or None; "
                        f"got {type(value).__name__}")


#: The product's one default (used wherever ``options`` is omitted).
DEFAULT_OPTIONS = AnalysisOptions()
