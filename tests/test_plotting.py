"""Spectrum plots and the training report: what is drawn where, file output, bad input."""

import io
import os
import threading
from types import SimpleNamespace

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from keras_koopman import plot_spectrum, plot_training_report, spectrum_png
from keras_koopman.analysis import KoopmanAnalysis, analyze_series, analyze_weights
from keras_koopman.plotting import CLIP_RADIUS, IMPORTANCE_FLOOR

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def loss_curve(n=60, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    return t, 1.0 / (1.0 + t) + 1e-3 * rng.standard_normal(n)


def gd_trajectory(n_epochs=40, seed=1):
    """Gradient descent with noise on a 12-dim quadratic, snapshots as columns."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((12, 12))
    H = A @ A.T / 12 + 0.05 * np.eye(12)
    w = rng.standard_normal(12)
    columns = [w]
    for _ in range(n_epochs):
        w = w - 0.3 * H @ w + 1e-3 * rng.standard_normal(12)
        columns.append(w)
    return np.array(columns).T


def handmade(eigenvalues, importance, residuals, observable="weights"):
    eigenvalues = np.asarray(eigenvalues, dtype=complex)
    return KoopmanAnalysis.from_dict({
        "observable": observable, "first_epoch": 0, "last_epoch": 10, "n_snapshots": 11,
        "delays": None, "rank": len(eigenvalues),
        "eigenvalues": [[z.real, z.imag] for z in eigenvalues],
        "amplitudes": [[v, 0.0] for v in importance],
        "residuals": list(residuals), "importance": list(importance),
        "diagnostics": {"spectral_radius": 1.0, "unit_cluster": 0.5, "slowest_decay_rate": 0.1,
                        "epochs_to_converge": 40.0, "growing": 0.0, "n_important": 2},
    })


@pytest.fixture(scope="module")
def loss_analysis():
    t, values = loss_curve()
    return analyze_series(values, t, observable="loss")


@pytest.fixture(scope="module")
def report_source():
    t, values = loss_curve()
    snapshots = gd_trajectory(n_epochs=59)
    analyses = []
    for n in (20, 30, 40, 50, 60):
        analyses.append(analyze_series(values[:n], t[:n], observable="loss"))
        analyses.append(analyze_weights(snapshots[:, :n], t[:n]))
    return SimpleNamespace(scalars={"loss": (t, values), "val_loss": (t, 1.2 * values)},
                           analyses=analyses)


def markers(ax):
    return ax.collections[0]


def test_markers_sit_at_the_eigenvalues_most_important_on_top(loss_analysis):
    ax = plot_spectrum(loss_analysis)
    offsets = markers(ax).get_offsets()
    order = np.argsort(loss_analysis.importance, kind="stable")
    expected = loss_analysis.eigenvalues[order]
    assert len(loss_analysis.eigenvalues) >= 4
    np.testing.assert_allclose(offsets[:, 0], expected.real)
    np.testing.assert_allclose(offsets[:, 1], expected.imag)
    # the last point drawn (on top) is the most important one
    top = loss_analysis.eigenvalues[np.argmax(loss_analysis.importance)]
    np.testing.assert_allclose(offsets[-1], [top.real, top.imag])


def test_size_and_colour_are_monotone_in_importance():
    importance = [1.0, 0.3, 0.05, 0.002, 1e-5]
    analysis = handmade([0.9, 0.5j, -0.5j, -0.3, 0.1], importance, [0.0] * 5)
    collection = markers(plot_spectrum(analysis))
    sizes = collection.get_sizes()
    rgb = collection.get_edgecolors()[:, :3]
    luminance = rgb @ [0.2126, 0.7152, 0.0722]
    # drawn in increasing importance: 1e-5, 0.002, 0.05, 0.3, 1
    assert np.all(np.diff(sizes) > 0)
    assert np.all(np.diff(luminance) < 0)  # important = dark
    # below the floor of the colour scale the marker is the same as at the floor
    floor = handmade([0.1, 0.2], [1.0, IMPORTANCE_FLOOR], [0.0, 0.0])
    below = markers(plot_spectrum(floor)).get_sizes()[0]
    assert below == pytest.approx(sizes[0])


def test_large_residual_pairs_are_hollow():
    analysis = handmade([0.9, 0.5, -0.5, 0.1], [1.0, 0.8, 0.6, 0.4], [1e-6, 0.5, 2e-3, 1e-4])
    # drawn in increasing importance: residuals 1e-4, 2e-3, 0.5, 1e-6
    default = markers(plot_spectrum(analysis)).get_facecolors()[:, 3]
    np.testing.assert_array_equal(default, [1.0, 0.0, 0.0, 1.0])
    loose = markers(plot_spectrum(analysis, max_residual=1e-2)).get_facecolors()[:, 3]
    np.testing.assert_array_equal(loose, [1.0, 1.0, 0.0, 1.0])
    # hollow markers keep a visible (opaque) edge in the importance colour
    assert np.all(markers(plot_spectrum(analysis)).get_edgecolors()[:, 3] == 1.0)


def test_min_importance_hides_pairs(loss_analysis):
    threshold = 0.05
    ax = plot_spectrum(loss_analysis, min_importance=threshold)
    kept = np.sum(loss_analysis.importance >= threshold)
    assert 0 < kept < len(loss_analysis.importance)
    assert len(markers(ax).get_offsets()) == kept


def test_limits_contain_unit_circle_and_eigenvalues_with_outliers_clipped():
    analysis = handmade([0.2 + 1.4j, 0.2 - 1.4j, -0.5, 40.0], [1.0, 1.0, 0.5, 0.1], [0.0] * 4)
    ax = plot_spectrum(analysis)
    for low, high in (ax.get_xlim(), ax.get_ylim()):
        assert low < -1.4 and high > 1.4
        assert high < CLIP_RADIUS * 1.5  # the outlier at 40 does not blow up the view
    offsets = markers(ax).get_offsets()
    radius = np.hypot(offsets[:, 0], offsets[:, 1])
    assert radius.max() == pytest.approx(CLIP_RADIUS)
    assert np.all(np.abs(offsets) <= ax.get_xlim()[1])
    assert any("|λ|=40" in text.get_text() for text in ax.texts)
    assert ax.get_aspect() == 1.0
    # without outliers the view is the unit circle plus a margin
    inside = plot_spectrum(handmade([0.5, 0.1j], [1.0, 0.5], [0.0, 0.0]))
    assert 1.0 < inside.get_xlim()[1] < 1.3


def test_title_names_observable_and_window(loss_analysis):
    ax = plot_spectrum(loss_analysis)
    assert ax.get_title() == "loss, epochs 0–59 (60 snapshots)"
    assert plot_spectrum(loss_analysis, title="custom").get_title() == "custom"


def test_corner_gives_the_fit_error_when_the_analysis_has_one(loss_analysis):
    texts = [t.get_text() for t in plot_spectrum(loss_analysis).texts]
    assert any(f"fit error {loss_analysis.fit_error:.1e}" in t for t in texts)
    assert loss_analysis.fit_error > 1e-4  # the curve's noise, which no residual shows
    older = handmade([0.5, 0.9], [1.0, 0.5], [0.0, 0.0])  # a record without fit_error
    assert not any("fit error" in t.get_text() for t in plot_spectrum(older).texts)


def test_draws_into_a_given_axes_with_or_without_colorbar(loss_analysis):
    figure = Figure()
    ax = figure.add_subplot()
    assert plot_spectrum(loss_analysis, ax, colorbar=False) is ax
    assert len(figure.axes) == 1
    plot_spectrum(loss_analysis, figure.add_subplot(2, 1, 2))
    assert len(figure.axes) == 3  # two spectra and one colour bar


def test_spectrum_bad_input(loss_analysis):
    with pytest.raises(TypeError, match="analysis"):
        plot_spectrum({"eigenvalues": [0.5]})
    with pytest.raises(TypeError, match="ax"):
        plot_spectrum(loss_analysis, ax="left")
    with pytest.raises(ValueError, match="max_residual"):
        plot_spectrum(loss_analysis, max_residual=-1.0)
    with pytest.raises(ValueError, match="non-finite"):
        plot_spectrum(handmade([np.nan, 0.5], [1.0, 0.5], [0.0, 0.0]))


def test_spectrum_png_is_a_decodable_image(loss_analysis):
    data = spectrum_png(loss_analysis)
    assert data.startswith(PNG_SIGNATURE)
    image = mpimg.imread(io.BytesIO(data), format="png")
    assert image.shape == (500, 520, 4)
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_rendering_is_thread_safe_and_leaves_pyplot_alone(loss_analysis):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    serial = spectrum_png(loss_analysis)
    results = [None] * 4

    def render(i):
        results[i] = spectrum_png(loss_analysis)

    threads = [threading.Thread(target=render, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result == serial for result in results)
    assert plt.get_fignums() == before


def test_report_layout_and_column_subset(report_source):
    figure = plot_training_report(report_source, max_columns=3)
    loss_ax, *spectra, colorbar = figure.axes
    assert len(spectra) == 2 * 3
    # evenly spaced subset of the 5 windows including the first and last, in epoch order
    assert [ax.get_title() for ax in spectra[:3]] == [
        "epochs 0–19 (20 snapshots)", "epochs 0–39 (40 snapshots)", "epochs 0–59 (60 snapshots)"]
    assert spectra[0].get_ylabel().startswith("loss") and spectra[3].get_ylabel().startswith("weights")
    assert loss_ax.get_yscale() == "log"
    assert [line.get_label() for line in loss_ax.get_lines()[:2]] == ["loss", "val_loss"]
    marks = sorted(line.get_xdata()[0] for line in loss_ax.get_lines()[2:])
    assert marks == [19.0, 39.0, 59.0]
    assert "importance" in colorbar.get_ylabel()


def test_report_observables_select_and_order_rows(report_source):
    figure = plot_training_report(report_source, observables=["weights"], max_columns=10)
    assert len(figure.axes) == 1 + 5 + 1
    assert figure.axes[1].get_ylabel().startswith("weights")
    with pytest.raises(ValueError, match="val_loss"):
        plot_training_report(report_source, observables=["val_loss"])
    with pytest.raises(ValueError, match="max_columns"):
        plot_training_report(report_source, max_columns=0)


def test_report_without_analyses_has_linear_axis_for_signed_scalars():
    t = np.arange(10.0)
    source = SimpleNamespace(scalars={"log_likelihood": (t, -1.0 / (1.0 + t))}, analyses=[])
    figure = plot_training_report(source)
    assert len(figure.axes) == 1
    assert figure.axes[0].get_yscale() == "linear"


def test_report_saves_a_png_atomically(report_source, tmp_path):
    path = tmp_path / "report.png"
    figure = plot_training_report(report_source, path, max_columns=2)
    image = mpimg.imread(path)
    width, height = figure.get_size_inches() * 120
    assert image.shape[2] == 4
    assert abs(image.shape[0] - height) <= 2 and abs(image.shape[1] - width) <= 2
    assert os.listdir(tmp_path) == ["report.png"]  # no temporary file left behind


def test_report_bad_input(report_source, tmp_path):
    with pytest.raises(TypeError, match="source"):
        plot_training_report(report_source.analyses)
    with pytest.raises(TypeError, match="KoopmanAnalysis"):
        plot_training_report(SimpleNamespace(scalars={}, analyses=["loss"]))
    with pytest.raises(ValueError, match="val_loss"):
        t = np.arange(5.0)
        plot_training_report(SimpleNamespace(scalars={"val_loss": (t, t[:3])}, analyses=[]))
    missing = tmp_path / "nowhere" / "report.png"
    with pytest.raises(FileNotFoundError, match="path"):
        plot_training_report(report_source, missing)
    assert not missing.parent.exists()
