"""Figures of Koopman spectra of training, in the style of the paper's Figure 2.

The paper plots the Koopman eigenvalues λ_j of an observable of training (the loss curve,
delay-embedded, or the full weight vector) in the complex plane against the unit circle, and
reads convergence off the picture: the important eigenvalues move from near 0 towards 1 as
training approaches a fixed point, and eigenvalues outside the circle are growing modes.
Importance is the modulus of the reconstruction coefficient α_j of the Koopman mode
decomposition (paper, Eq. (2)), relative to the largest; the residual is the data-driven
backward error of the pair (DMD_RRR, see ``docs/koopman.md``).

Everything here uses :class:`matplotlib.figure.Figure` objects with an Agg canvas and never
touches ``pyplot``'s global state, so the functions can be called from a Keras callback
(in any thread) and from headless jobs.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from keras_koopman._atomic import atomic_write
from keras_koopman.analysis import KoopmanAnalysis
from keras_koopman.koopman._validation import check_nonnegative

__all__ = ["plot_spectrum", "plot_training_report", "spectrum_png"]

#: Eigenvalues with ``|λ|`` above this are drawn on the circle of this radius (and labelled).
CLIP_RADIUS = 3.0
#: Lower end of the (logarithmic) importance colour scale; smaller importances share its colour.
IMPORTANCE_FLOOR = 1e-3
#: Residual above which a pair is drawn hollow when ``max_residual`` is not given
#: (the selection threshold used throughout ``docs/koopman.md``).
DEFAULT_RESIDUAL_THRESHOLD = 1e-3
REPORT_DPI = 120

_MIN_SIZE, _MAX_SIZE = 10.0, 150.0
# viridis reversed and without its palest yellow: important modes dark, unimportant light
# but still visible on white (a hollow marker needs a visible edge colour)
IMPORTANCE_CMAP = ListedColormap(colormaps["viridis"](np.linspace(0.9, 0.0, 256)),
                                 name="koopman_importance")
IMPORTANCE_NORM = LogNorm(vmin=IMPORTANCE_FLOOR, vmax=1.0, clip=True)


def _check_analysis(analysis) -> KoopmanAnalysis:
    if not isinstance(analysis, KoopmanAnalysis):
        raise TypeError(f"analysis must be a KoopmanAnalysis; got {type(analysis).__name__}")
    if not np.all(np.isfinite(analysis.eigenvalues)):
        raise ValueError(f"analysis ({analysis.observable}, epochs {analysis.first_epoch:g}–"
                         f"{analysis.last_epoch:g}) has non-finite eigenvalues; cannot plot it")
    return analysis


def _window(analysis: KoopmanAnalysis) -> str:
    return (f"epochs {analysis.first_epoch:g}–{analysis.last_epoch:g} "
            f"({analysis.n_snapshots} snapshots)")


def _importance_scale(importance: np.ndarray) -> np.ndarray:
    """Importance mapped to [0, 1] on the logarithmic colour scale (floor → 0, 1 → 1)."""
    return np.asarray(IMPORTANCE_NORM(np.clip(importance, IMPORTANCE_FLOOR, 1.0)), dtype=float)


def _residual_legend(threshold: float) -> list[Line2D]:
    grey = IMPORTANCE_CMAP(0.6)
    return [Line2D([], [], ls="none", marker="o", ms=7, mfc=grey, mec=grey,
                   label=f"residual ≤ {threshold:.0e}"),
            Line2D([], [], ls="none", marker="o", ms=7, mfc="none", mec=grey, mew=1.5,
                   label=f"residual > {threshold:.0e}")]


def _importance_colorbar(figure: Figure, ax, *, label_size: float = 9.0):
    mappable = ScalarMappable(norm=IMPORTANCE_NORM, cmap=IMPORTANCE_CMAP)
    bar = figure.colorbar(mappable, ax=ax, extend="min", fraction=0.046, pad=0.04)
    bar.set_label("importance |α_j| / max |α| (size and colour)", fontsize=label_size)
    bar.ax.tick_params(labelsize=label_size - 1)
    return bar


def plot_spectrum(analysis: KoopmanAnalysis, ax: Axes | None = None, *,
                  max_residual: float | None = None, min_importance: float = 0.0,
                  title: str | None = None, colorbar: bool = True,
                  legend: bool = True) -> Axes:
    """Plot the Koopman eigenvalues of one analysis in the complex plane (paper, Fig. 2).

    Each Ritz value λ_j is a marker against the unit circle.  Marker **size and colour** show
    its importance ``|α_j| / max_i |α_i|`` (α from the mode decomposition, paper Eq. (2)) on a
    logarithmic scale from ``IMPORTANCE_FLOOR`` (light, small) to 1 (dark, large); the most
    important pairs are drawn on top.  The **fill** shows the residual: pairs whose
    data-driven residual is at most the threshold are filled, the others hollow (a hollow
    marker is an eigenvalue the data do not certify).  Eigenvalues with ``|λ| > CLIP_RADIUS``
    are drawn on that circle and labelled with their modulus.  The lower-left corner gives
    the analysis' spectral radius ρ and unit-cluster fraction ("near 1", importance-weighted
    share of important eigenvalues within ``delta`` of 1) from its diagnostics, and its fit
    error (:attr:`KoopmanAnalysis.fit_error`; the residuals of a Hankel analysis of a noisy
    curve are round-off, so every marker is filled there and the fit error is what shows the
    noise; not shown for analyses read from records written before it existed).

    Parameters
    ----------
    analysis : KoopmanAnalysis
        The spectrum to draw.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; by default a new :class:`~matplotlib.figure.Figure` with one Axes
        (``ax.figure``) is created, without ``pyplot``.
    max_residual : float, optional
        Residual threshold for filled markers; default ``DEFAULT_RESIDUAL_THRESHOLD`` (1e-3).
    min_importance : float, default 0
        Pairs with smaller importance are not drawn.
    title : str, optional
        Axes title; default ``"<observable>, epochs a–b (n snapshots)"``.
    colorbar : bool, default True
        Add an importance colour bar next to ``ax``.
    legend : bool, default True
        Add a legend for the residual encoding (and clipped outliers) below the axes.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn into.  ``ax.collections[0]`` holds the eigenvalue markers, in order
        of increasing importance, at ``(Re λ, Im λ)`` (clipped ones at radius ``CLIP_RADIUS``).

    Raises
    ------
    TypeError
        If ``analysis`` is not a :class:`KoopmanAnalysis` or ``ax`` is not an Axes.
    ValueError
        If a threshold is negative or an eigenvalue is NaN/inf.
    """
    analysis = _check_analysis(analysis)
    if ax is None:
        figure = Figure(figsize=(5.2, 5.0), layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
    elif not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None; got {type(ax).__name__}")
    threshold = check_nonnegative(max_residual, "max_residual")
    threshold = DEFAULT_RESIDUAL_THRESHOLD if threshold is None else threshold
    min_importance = check_nonnegative(min_importance, "min_importance") or 0.0

    keep = analysis.importance >= min_importance
    order = np.flatnonzero(keep)[np.argsort(analysis.importance[keep], kind="stable")]
    lam = analysis.eigenvalues[order]
    modulus = np.abs(lam)
    clipped = modulus > CLIP_RADIUS
    shown = np.where(clipped, lam / np.where(clipped, modulus, 1.0) * CLIP_RADIUS, lam)
    scale = _importance_scale(analysis.importance[order])
    colours = IMPORTANCE_CMAP(scale)
    hollow = analysis.residuals[order] > threshold
    faces = colours.copy()
    faces[hollow, 3] = 0.0

    ax.add_patch(Circle((0.0, 0.0), 1.0, fill=False, color="black", lw=0.8, zorder=1))
    ax.axhline(0.0, color="0.85", lw=0.6, zorder=0)
    ax.axvline(0.0, color="0.85", lw=0.6, zorder=0)
    ax.scatter(shown.real, shown.imag, s=_MIN_SIZE + (_MAX_SIZE - _MIN_SIZE) * scale,
               facecolors=faces, edgecolors=colours,
               linewidths=np.where(hollow, 1.6, 0.5), zorder=3)
    if clipped.any():
        ax.add_patch(Circle((0.0, 0.0), CLIP_RADIUS, fill=False, color="0.6", lw=0.6, ls="--",
                            zorder=1))
        ax.scatter(shown[clipped].real, shown[clipped].imag, s=_MAX_SIZE * 1.8,
                   facecolors="none", edgecolors="crimson", linewidths=1.0, zorder=4)
    for point, radius in zip(shown[clipped], modulus[clipped]):
        inward = -1 if point.real > 0 else 1
        ax.annotate(f"|λ|={radius:.3g}", (point.real, point.imag), fontsize=7, color="crimson",
                    xytext=(8 * inward, 8), textcoords="offset points", zorder=4,
                    ha="right" if inward < 0 else "left")

    reach = max(1.0, float(np.abs(shown).max()) if shown.size else 1.0)
    limit = 1.12 * reach
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("Re λ", fontsize=9)
    ax.set_ylabel("Im λ", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.set_title(f"{analysis.observable}, {_window(analysis)}" if title is None else title,
                 fontsize=10)
    if not shown.size:
        ax.text(0.5, 0.5, "no eigenvalues", transform=ax.transAxes, ha="center", va="center",
                color="0.4")
    diag = analysis.diagnostics
    corner = f"ρ = {diag.spectral_radius:.3f}\nnear 1: {diag.unit_cluster:.0%}"
    if analysis.fit_error is not None:
        corner += f"\nfit error {analysis.fit_error:.1e}"
    ax.text(0.02, 0.02, corner, transform=ax.transAxes, fontsize=7, color="0.3", va="bottom")
    if colorbar:
        _importance_colorbar(ax.figure, ax)
    if legend:
        handles = _residual_legend(threshold)
        if clipped.any():
            handles.append(Line2D([], [], ls="none", marker="o", ms=9, mfc="none", mec="crimson",
                                  label=f"|λ| > {CLIP_RADIUS:g}, drawn at {CLIP_RADIUS:g}"))
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13),
                  ncol=len(handles), fontsize=7, frameon=False, handletextpad=0.2,
                  columnspacing=1.0)
    return ax


def spectrum_png(analysis: KoopmanAnalysis, *, max_residual: float | None = None,
                 min_importance: float = 0.0, dpi: int = 100) -> bytes:
    """The :func:`plot_spectrum` figure of ``analysis`` as PNG bytes (e.g. for TensorBoard).

    Parameters
    ----------
    analysis : KoopmanAnalysis
        The spectrum to draw.
    max_residual, min_importance : float, optional
        As in :func:`plot_spectrum`.
    dpi : int, default 100
        Resolution; the image is about ``5.2 × 5.0`` inches.

    Returns
    -------
    bytes
        An RGBA PNG image (decodable by ``tf.image.decode_png``).
    """
    ax = plot_spectrum(analysis, max_residual=max_residual, min_importance=min_importance)
    buffer = io.BytesIO()
    ax.figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _check_source(source) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[KoopmanAnalysis]]:
    if not (hasattr(source, "scalars") and hasattr(source, "analyses")):
        raise TypeError("source must have .scalars (dict name -> (epochs, values)) and .analyses "
                        f"(sequence of KoopmanAnalysis), e.g. a KoopmanMonitor; got "
                        f"{type(source).__name__}")
    if not isinstance(source.scalars, Mapping):
        raise TypeError(f"source.scalars must be a mapping name -> (epochs, values); got "
                        f"{type(source.scalars).__name__}")
    scalars = {}
    for name, series in source.scalars.items():
        try:
            epochs, values = series
        except (TypeError, ValueError) as exc:
            raise ValueError(f"source.scalars[{name!r}] must be a pair (epochs, values)") from exc
        epochs = np.asarray(epochs, dtype=float).reshape(-1)
        values = np.asarray(values, dtype=float).reshape(-1)
        if epochs.shape != values.shape:
            raise ValueError(f"source.scalars[{name!r}]: epochs and values differ in length "
                             f"({epochs.size} and {values.size})")
        scalars[str(name)] = (epochs, values)
    analyses = list(source.analyses)
    for analysis in analyses:
        if not isinstance(analysis, KoopmanAnalysis):
            raise TypeError(f"source.analyses must hold KoopmanAnalysis objects; got "
                            f"{type(analysis).__name__}")
    return scalars, analyses


def _evenly_spaced(items: list, count: int) -> list:
    """``count`` items spread evenly over ``items``, always including the first and last."""
    if len(items) <= count:
        return items
    picks = np.unique(np.round(np.linspace(0, len(items) - 1, count)).astype(int))
    return [items[i] for i in picks]


def _report_rows(analyses: list[KoopmanAnalysis], observables, max_columns: int):
    present = list(dict.fromkeys(a.observable for a in analyses))
    if observables is None:
        names = present
    else:
        if isinstance(observables, str):
            raise TypeError("observables must be a sequence of names, not a single string; "
                            f"use [{observables!r}]")
        names = [str(name) for name in observables]
        missing = [name for name in names if name not in present]
        if missing:
            raise ValueError(f"observables {missing} have no analyses in source; "
                             f"available: {present}")
    rows = []
    for name in names:
        own = sorted((a for a in analyses if a.observable == name),
                     key=lambda a: (a.last_epoch, a.n_snapshots))
        rows.append((name, _evenly_spaced(own, max_columns)))
    return rows


def _plot_scalars(ax: Axes, scalars: dict, epochs_marked: list[float]) -> None:
    positive = True
    for name, (epochs, values) in scalars.items():
        finite = np.isfinite(values)
        positive &= bool(np.all(values[finite] > 0))
        ax.plot(epochs[finite], values[finite], lw=1.5, label=name,
                marker="o" if finite.sum() <= 30 else None, ms=3)
    if positive and scalars:
        ax.set_yscale("log")
    for i, epoch in enumerate(epochs_marked):
        ax.axvline(epoch, color="0.45", ls=":", lw=1.0, label="Koopman analysis" if i == 0 else None)
    ax.set_xlabel("epoch", fontsize=9)
    ax.set_ylabel("value" + (" (log scale)" if positive and scalars else ""), fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, which="major", color="0.92", lw=0.6)
    if scalars or epochs_marked:
        ax.legend(fontsize=8, loc="best", framealpha=0.9)
    if not scalars:
        ax.text(0.5, 0.5, "no scalars recorded", transform=ax.transAxes, ha="center",
                va="center", color="0.4")


def _save_atomically(figure: Figure, path, dpi: int) -> None:
    atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=dpi))


def plot_training_report(source, path: str | os.PathLike | None = None, *,
                         observables: Sequence[str] | None = None, max_columns: int = 4,
                         title: str | None = None) -> Figure:
    """Loss curves and Koopman spectra over training in one figure (paper, Fig. 2).

    The top row shows every recorded scalar (``loss``, ``val_loss``, ...) against the epoch
    on one axis (logarithmic when all values are positive), with a dotted vertical line at
    the last epoch of each analysis shown below.  Then one row per observable shows its
    spectra (:func:`plot_spectrum`) at successive analyses, left to right in epoch order,
    sharing one importance colour bar and one residual legend.

    Parameters
    ----------
    source : object
        Anything with ``.scalars`` (mapping name -> ``(epochs, values)``) and ``.analyses``
        (sequence of :class:`KoopmanAnalysis`), e.g. a ``KoopmanMonitor``.
    path : str or path-like, optional
        Save the figure there as PNG (about 120 dpi), atomically (temporary file in the same
        folder, then :func:`os.replace`).
    observables : sequence of str, optional
        Rows to draw, in this order; default every observable with an analysis, in order of
        first appearance.
    max_columns : int, default 4
        Most spectra per row; with more analyses an evenly spaced subset that includes the
        first and the last is drawn.
    title : str, optional
        Figure title; default ``"Koopman spectra of training"``.

    Returns
    -------
    matplotlib.figure.Figure
        Axes, in order: the scalar plot, the spectra row by row, the colour bar (present
        when at least one spectrum is drawn).

    Raises
    ------
    TypeError
        If ``source`` lacks ``.scalars``/``.analyses`` or holds objects of the wrong type.
    ValueError
        If ``max_columns < 1``, a scalar series is malformed or an observable has no analyses.
    FileNotFoundError
        If the folder of ``path`` does not exist (nothing is written).
    """
    scalars, analyses = _check_source(source)
    if isinstance(max_columns, bool) or not isinstance(max_columns, (int, np.integer)) \
            or max_columns < 1:
        raise ValueError(f"max_columns must be a positive integer; got {max_columns!r}")
    if path is not None:
        folder = os.path.dirname(os.path.abspath(os.fspath(path)))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"path {os.fspath(path)!r}: folder {folder!r} does not "
                                    "exist; create it first")
    rows = _report_rows(analyses, observables, int(max_columns))
    n_columns = max([len(shown) for _, shown in rows] + [1])

    figure = Figure(figsize=(max(7.0, 3.3 * n_columns + 1.2), 3.0 + 3.3 * len(rows)),
                    layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(1 + len(rows), n_columns, height_ratios=[0.8] + [1.0] * len(rows))
    top = figure.add_subplot(grid[0, :])
    marked = sorted({a.last_epoch for _, shown in rows for a in shown})
    _plot_scalars(top, scalars, marked)

    spectra = []
    for row, (name, shown) in enumerate(rows, start=1):
        for column, analysis in enumerate(shown):
            ax = figure.add_subplot(grid[row, column])
            plot_spectrum(analysis, ax, title=_window(analysis), colorbar=False, legend=False)
            ax.set_ylabel(f"{name}\nIm λ" if column == 0 else "", fontsize=9,
                          fontweight="bold" if column == 0 else "normal")
            spectra.append(ax)
    if spectra:
        _importance_colorbar(figure, spectra, label_size=9.0)
        figure.legend(handles=_residual_legend(DEFAULT_RESIDUAL_THRESHOLD), loc="outside lower center",
                      ncol=2, fontsize=8, frameon=False)
    figure.suptitle("Koopman spectra of training" if title is None else title, fontsize=12)
    if path is not None:
        _save_atomically(figure, path, REPORT_DPI)
    return figure
