"""End-to-end tests of the ``keras-koopman`` command-line tool on a small MNIST subset.

One real run (256 training images, 8 epochs, 500 test images) from the ``mnist_dir`` fixture
(``tests/conftest.py``; the tests that need it skip without the files) is shared by the tests; they check what it writes, that ``analyze`` and ``plot`` reproduce the saved
analyses from the trajectory alone, and that bad arguments give one line and exit status 2.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from keras_koopman import AnalysisOptions, KoopmanMonitor, analyze_series, analyze_weights
from keras_koopman import cli
from keras_koopman.cli import main, scaled_snapshot_counts

EPOCHS = 8
SUBSET = 256
N_WEIGHTS = 65_558  # paper_cnn's trainable weights (docs/data_and_models.md)
# The paper's 40/100/500 loss values and 50/100/500 weight snapshots of 500 epochs, as the same
# fractions of 8 epochs (8 loss values, 9 weight snapshots), at least 6 and 4:
# loss 0.64, 1.6, 8 -> 6, 6, 8; weights 0.9, 1.8, 9 -> 4, 4, 9.
LOSS_COUNTS = [6, 8]
WEIGHT_COUNTS = [4, 9]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mnist_dir) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    status = main(["mnist", "--init", "he", "--epochs", str(EPOCHS), "--subset", str(SUBSET),
                   "--test-subset", "500", "--data-dir", str(mnist_dir), "--out", str(out),
                   "--quiet"])
    assert status == 0
    return out


@pytest.fixture(scope="module")
def summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"keras-koopman{' ' + command if command else ''}: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_scaled_snapshot_counts_follow_the_paper_fractions():
    assert scaled_snapshot_counts((40, 100, 500), 500, minimum=6) == (40, 100, 500)
    assert scaled_snapshot_counts((50, 100, 500), 800, minimum=4) == (50, 100, 500)
    assert scaled_snapshot_counts((40, 100, 500), 50, minimum=6) == (6, 10, 50)
    assert scaled_snapshot_counts((50, 100, 500), 51, minimum=4) == (5, 10, 51)
    assert scaled_snapshot_counts((40, 100, 500), 3, minimum=6) == ()


def test_mnist_run_writes_trajectory_summary_and_report(run_dir, summary):
    for name in ("summary.json", "report.png", "trajectory/trajectory.json"):
        assert (run_dir / name).is_file(), name  # the record's own files: test_trajectory*
    assert summary["format"] == "keras-koopman-mnist-run"
    config = summary["config"]
    assert (config["init"], config["epochs"], config["train_examples"]) == ("he", EPOCHS, SUBSET)
    assert config["test_examples"] == 500
    assert config["options"] == AnalysisOptions().get_config()  # the one default
    assert "tol" not in config and "refine" not in config
    assert summary["epochs_run"] == EPOCHS
    history = summary["history"]
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert len(history[key]) == EPOCHS and np.all(np.isfinite(history[key])), key
        assert summary["final"][key] == history[key][-1]
    assert history["loss"][-1] < 0.5 * history["loss"][0]  # it really trained
    best = summary["best_val_loss"]
    assert best["epoch"] == int(np.argmin(history["val_loss"])) + 1
    assert best["value"] == min(history["val_loss"])

    trajectory = KoopmanMonitor.load(run_dir / "trajectory")
    assert trajectory.weights.shape == (N_WEIGHTS + 1, EPOCHS + 1)  # + the constant observable
    assert np.all(np.isfinite(trajectory.weights))
    np.testing.assert_array_equal(trajectory.weight_epochs, np.arange(EPOCHS + 1))
    np.testing.assert_allclose(trajectory.scalars["loss"][1], history["loss"])
    np.testing.assert_allclose(trajectory.scalars["val_loss"][1], history["val_loss"])
    # the monitor's live analyses are kept with the record, at the report's last epochs
    assert {(a.observable, a.last_epoch) for a in trajectory.analyses} >= {
        ("loss", k) for k in LOSS_COUNTS} | {("weights", k - 1) for k in WEIGHT_COUNTS}


def test_summary_holds_finite_spectra_at_the_scaled_paper_counts(summary):
    assert summary["snapshot_counts"] == {"loss": LOSS_COUNTS, "weights": WEIGHT_COUNTS}
    analyses = summary["analyses"]
    expected = [("loss", k, 1, k) for k in LOSS_COUNTS] + \
               [("weights", k, 0, k - 1) for k in WEIGHT_COUNTS]
    assert [(a["observable"], a["n_snapshots"], a["first_epoch"], a["last_epoch"])
            for a in analyses] == expected
    for a in analyses:
        eigenvalues = np.asarray(a["eigenvalues"], dtype=float)
        assert eigenvalues.shape == (a["rank"], 2) and a["rank"] >= 1
        assert np.all(np.isfinite(eigenvalues))
        assert np.all(np.isfinite(a["residuals"])) and min(a["residuals"]) >= 0
        importance = np.asarray(a["importance"])
        assert importance.max() == pytest.approx(1.0) and importance.min() >= 0
        diagnostics = a["diagnostics"]
        assert 0.0 <= diagnostics["unit_cluster"] <= 1.0
        assert 0.0 <= diagnostics["growing"] <= 1.0
        radius = np.hypot(*eigenvalues[importance >= 0.05].T).max()
        assert diagnostics["spectral_radius"] == pytest.approx(radius)
    # the weights carry the constant observable: an eigenvalue at 1 (the fixed-point mode)
    weights = [a for a in analyses if a["observable"] == "weights"][-1]
    assert np.min(np.abs(np.asarray(weights["eigenvalues"]) - [1.0, 0.0]).sum(axis=1)) < 0.01


def test_report_png_decodes(run_dir):
    image = imread(run_dir / "report.png")
    height, width = image.shape[:2]
    assert height > 800 and width > 600  # curves + a loss row + a weights row
    assert image[..., :3].std() > 0.05  # not blank


def test_analyze_reproduces_the_saved_analyses(run_dir, summary, tmp_path, capsys):
    out = tmp_path / "weights.json"
    assert main(["analyze", str(run_dir), "--observable", "weights", "--snapshots",
                 *map(str, WEIGHT_COUNTS), "--json", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + len(WEIGHT_COUNTS) and table[0].split()[0] == "observable"
    recomputed = json.loads(out.read_text())["analyses"]
    saved = [a for a in summary["analyses"] if a["observable"] == "weights"]
    assert len(recomputed) == len(saved)
    for new, old in zip(recomputed, saved):
        for key in ("n_snapshots", "first_epoch", "last_epoch", "rank", "diagnostics"):
            assert new[key] == old[key], key
        np.testing.assert_allclose(new["eigenvalues"], old["eigenvalues"], rtol=1e-12, atol=1e-14)

    # the same window given as epochs, for the loss observable
    out = tmp_path / "loss.json"
    assert main(["analyze", str(run_dir / "trajectory"), "--observable", "loss", "--window",
                 "1", str(EPOCHS), "--json", str(out)]) == 0
    (recomputed,) = json.loads(out.read_text())["analyses"]
    saved = [a for a in summary["analyses"] if a["observable"] == "loss"][-1]
    assert recomputed["n_snapshots"] == saved["n_snapshots"] == EPOCHS
    assert recomputed["diagnostics"] == saved["diagnostics"]
    np.testing.assert_allclose(recomputed["eigenvalues"], saved["eigenvalues"], rtol=1e-12)
    # the table's last column is the fit error, as saved
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[0] == "loss" and float(row[-1]) == pytest.approx(saved["fit_error"], rel=0.06)
    assert recomputed["fit_error"] == pytest.approx(saved["fit_error"], rel=1e-9)


def test_analyze_json_and_the_library_give_identical_diagnostics(run_dir, tmp_path, capsys):
    """One recorded trajectory, two entry points, the one default AnalysisOptions: the CLI's
    ``analyze --json`` and ``analyze_weights``/``analyze_series`` called directly on the
    record give the same rank, spectrum and diagnostics (the CLI analyses the weights' QR
    factor, the library the raw snapshots: equal up to rounding)."""
    trajectory = KoopmanMonitor.load(run_dir / "trajectory")
    epochs, loss = trajectory.scalars["loss"]
    cases = {
        "weights": analyze_weights(np.asarray(trajectory.weights, dtype=np.float64),
                                   trajectory.weight_epochs, keep_modes=False),
        "loss": analyze_series(np.asarray(loss), np.asarray(epochs), observable="loss",
                               keep_modes=False),
    }
    for observable, direct in cases.items():
        out = tmp_path / f"{observable}.json"
        assert main(["analyze", str(run_dir), "--observable", observable, "--snapshots",
                     str(direct.n_snapshots), "--json", str(out)]) == 0
        (cli_result,) = json.loads(out.read_text())["analyses"]
        library = direct.to_dict()
        for key in ("observable", "first_epoch", "last_epoch", "n_snapshots", "delays", "rank"):
            assert cli_result[key] == library[key], (observable, key)
        assert cli_result["diagnostics"].keys() == library["diagnostics"].keys()
        for key, value in library["diagnostics"].items():
            if observable == "loss":  # the very same computation
                assert cli_result["diagnostics"][key] == value, key
            else:
                assert cli_result["diagnostics"][key] == pytest.approx(value, rel=1e-6,
                                                                       abs=1e-9), key
        tolerance = 0.0 if observable == "loss" else 1e-8
        np.testing.assert_allclose(np.sort_complex(np.asarray(cli_result["eigenvalues"]) @ [1, 1j]),
                                   np.sort_complex(direct.eigenvalues), rtol=0, atol=tolerance)
    capsys.readouterr()


def test_analyses_refine_the_important_pairs_unless_no_refine(run_dir, tmp_path):
    """The CLI's spectra are the paper's DMD_RRR with the library's default options (refined
    pairs where they are important); ``--no-refine`` gives the plain Ritz pairs, whose
    residuals are never smaller."""
    trajectory = KoopmanMonitor.load(run_dir / "trajectory")
    weights = np.asarray(trajectory.weights, dtype=np.float64)
    results = {}
    for flag, options in (([], AnalysisOptions()), (["--no-refine"], AnalysisOptions(refine=False))):
        out = tmp_path / f"{options.refine}.json"
        assert main(["analyze", str(run_dir), "--observable", "weights", "--snapshots",
                     str(EPOCHS + 1), "--json", str(out), *flag]) == 0
        (results[options.refine],) = json.loads(out.read_text())["analyses"]
        direct = analyze_weights(weights, trajectory.weight_epochs, keep_modes=False,
                                 options=options)
        np.testing.assert_allclose(np.sort_complex(np.asarray(results[options.refine]["eigenvalues"])
                                                   @ [1, 1j]),
                                   np.sort_complex(direct.eigenvalues), atol=1e-8)
    refined, plain = results[None], results[False]
    assert np.max(refined["residuals"]) <= np.max(plain["residuals"]) + 1e-12
    assert not np.allclose(refined["eigenvalues"], plain["eigenvalues"])


def test_compressed_analysis_matches_raw_snapshots_and_the_monitor(run_dir, summary):
    """The CLI analyses the QR factor of the weights; the spectrum is that of the raw snapshots
    (analysed here directly) and of the monitor's live analysis over the same epochs."""
    trajectory = KoopmanMonitor.load(run_dir / "trajectory")
    saved = [a for a in summary["analyses"] if a["observable"] == "weights"][-1]
    raw = analyze_weights(np.asarray(trajectory.weights, dtype=np.float64),
                          trajectory.weight_epochs, keep_modes=False)
    live = [a for a in trajectory.analyses
            if a.observable == "weights" and a.last_epoch == saved["last_epoch"]]
    assert len(live) == 1
    saved_lam = np.asarray(saved["eigenvalues"]) @ [1, 1j]
    important = np.asarray(saved["importance"]) >= 0.05
    for other in (raw, live[0]):
        assert other.rank == saved["rank"]
        keep = other.importance >= 0.05
        assert keep.sum() == important.sum()
        np.testing.assert_allclose(np.sort_complex(other.eigenvalues[keep]),
                                   np.sort_complex(saved_lam[important]), atol=1e-5)


def test_plot_redraws_the_report_from_saved_analyses(run_dir, tmp_path, capsys):
    redrawn = tmp_path / "redrawn.png"
    assert main(["plot", str(run_dir), "--out", str(redrawn)]) == 0
    np.testing.assert_array_equal(imread(redrawn), imread(run_dir / "report.png"))

    recomputed = tmp_path / "weights_only.png"
    assert main(["plot", str(run_dir / "trajectory"), "--out", str(recomputed),
                 "--weight-snapshots", "5", "9", "--observables", "weights"]) == 0
    image = imread(recomputed)
    assert image.shape[0] < imread(redrawn).shape[0]  # one row of spectra, not two
    assert image[..., :3].std() > 0.05


@pytest.mark.parametrize("argv, command, mentions", [
    (["mnist", "--init", "he", "--epochs", "0", "--out", "{tmp}/a"], "mnist", "--epochs"),
    (["mnist", "--init", "glorot", "--epochs", "1", "--out", "{tmp}/a"], "mnist", "--init"),
    (["mnist", "--init", "he", "--epochs", "1"], "mnist", "--out"),
    (["mnist", "--init", "he", "--epochs", "1", "--out", "{tmp}/a", "--data-dir",
      "{tmp}/missing"], "mnist", "{tmp}/missing"),
    (["mnist", "--init", "he", "--epochs", "1", "--out", "{tmp}/a", "--data-dir", "{tmp}"],
     "mnist", "train-images-idx3-ubyte.gz"),
    (["analyze", "{tmp}"], "analyze", "not a keras-koopman trajectory"),
    (["analyze", "{tmp}/missing"], "analyze", "no such file"),
    (["analyze", "{run}", "--snapshots", "99"], "analyze", "99"),
    (["analyze", "{run}", "--observable", "loss", "--window", "50", "60"], "analyze", "--window"),
    (["analyze", "{run}", "--delays", "3"], "analyze", "--delays"),
    (["plot", "{run}", "--out", "{tmp}/missing/report.png"], "plot", "--out"),
    (["plot", "{run}"], "plot", "--out"),
    ([], "", "COMMAND"),
    (["train"], "", "invalid choice"),
])
def test_bad_arguments_exit_2_with_one_line(argv, command, mentions, run_dir, tmp_path, capsys):
    def fill(text):
        return text.format(tmp=tmp_path, run=run_dir)

    assert main([fill(a) for a in argv]) == 2
    assert fill(mentions) in _one_error_line(capsys, command)
    assert not (tmp_path / "a").exists()  # nothing written


@pytest.mark.parametrize("flags, mentions", [
    (["--tol", "1.5"], "--tol"),
    (["--weight-snapshots", "2"], "--weight-snapshots"),
    (["--loss-snapshots", "3"], "--loss-snapshots"),
])
def test_mnist_rejects_bad_analysis_flags_before_training(flags, mentions, tmp_path, capsys,
                                                          mnist_dir):
    """Checked before any data is read or epoch trained: three epochs on all 60,000 images
    would take minutes, the refusal takes far less (nothing is patched)."""
    out = tmp_path / "a"
    started = time.perf_counter()
    assert main(["mnist", "--init", "he", "--epochs", "3", "--data-dir", str(mnist_dir),
                 "--out", str(out), "--quiet", *flags]) == 2
    assert time.perf_counter() - started < 30.0
    assert mentions in _one_error_line(capsys, "mnist")
    assert not out.exists()


def test_overwrite_with_a_bad_flag_keeps_the_run(run_dir, capsys, mnist_dir):
    """--overwrite replaces a run only once every argument was accepted."""
    before = {name: (run_dir / name).read_bytes() for name in ("summary.json", "run.json")}
    assert main(["mnist", "--init", "he", "--epochs", "1", "--out", str(run_dir),
                 "--data-dir", str(mnist_dir), "--overwrite", "--tol", "1.5"]) == 2
    assert "--tol" in _one_error_line(capsys, "mnist")
    for name, content in before.items():
        assert (run_dir / name).read_bytes() == content, name
    assert (run_dir / "trajectory" / "trajectory.json").is_file()


def test_out_folder_below_a_file_gives_one_line_and_status_1(tmp_path, capsys, mnist_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "run"
    assert main(["mnist", "--init", "he", "--epochs", "1", "--subset", "32", "--test-subset",
                 "32", "--data-dir", str(mnist_dir), "--out", str(out), "--quiet"]) == 1
    line = _one_error_line(capsys, "mnist")
    assert str(out) in line and "Not a directory" in line
    assert blocker.read_text() == "not a folder"


def test_analyze_json_that_cannot_be_written_gives_one_line(run_dir, tmp_path, capsys):
    """An OSError names the file asked for (not the temporary file beside it), exit 1; a
    --json below a regular file is refused as an argument, exit 2."""
    folder = tmp_path / "taken.json"
    folder.mkdir()  # the target is a folder: the rename fails
    assert main(["analyze", str(run_dir), "--json", str(folder)]) == 1
    line = _one_error_line(capsys, "analyze")
    assert line == f"keras-koopman analyze: error: {folder}: Is a directory"
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob(".*.tmp"))

    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["analyze", str(run_dir), "--json", str(blocker / "out.json")]) == 2
    assert str(blocker) in _one_error_line(capsys, "analyze")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: the "
                    "permission error cannot happen (the folder-below-a-file and "
                    "target-is-a-folder cases are tested without root)")
def test_analyze_json_into_a_read_only_folder_gives_one_line(run_dir, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["analyze", str(run_dir), "--json", str(locked / "out.json")]) == 1
        line = _one_error_line(capsys, "analyze")
        assert line == f"keras-koopman analyze: error: {locked / 'out.json'}: Permission denied"
    finally:
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []


def test_out_folder_with_a_run_is_not_overwritten_by_default(run_dir, capsys):
    before = (run_dir / "summary.json").read_bytes()
    assert main(["mnist", "--init", "he", "--epochs", "1", "--out", str(run_dir)]) == 2
    assert "--overwrite" in _one_error_line(capsys, "mnist")
    assert (run_dir / "summary.json").read_bytes() == before


def test_resume_continues_a_finished_run_and_checks_its_settings(tmp_path, capsys, mnist_dir):
    """A 6-epoch run continued to 7 epochs: one trajectory, one history, one summary; a resume
    with other settings, or with fewer epochs than were trained, is refused."""
    out = tmp_path / "run"
    common = ["mnist", "--init", "xavier", "--subset", "128", "--test-subset", "200",
              "--data-dir", str(mnist_dir), "--out", str(out), "--quiet",
              "--loss-snapshots", "6", "--weight-snapshots", "4"]
    assert main([*common, "--epochs", "6"]) == 0
    first = json.loads((out / "summary.json").read_text())
    assert main([*common, "--epochs", "7", "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 7
    for name in ("loss", "val_loss", "accuracy"):
        assert len(summary["history"][name]) == 7
        assert summary["history"][name][:6] == pytest.approx(first["history"][name])
    trajectory = KoopmanMonitor.load(out / "trajectory")
    assert trajectory.weight_epochs.tolist() == list(range(8))
    assert trajectory.scalars["loss"][1][:6] == pytest.approx(first["history"]["loss"])
    assert summary["wall_seconds"] > first["wall_seconds"]
    capsys.readouterr()
    assert main([*common, "--epochs", "8", "--resume", "--seed", "3"]) == 2
    assert "--seed 0 (now 3)" in _one_error_line(capsys, "mnist")
    assert main(["mnist", "--init", "he", "--epochs", "1", "--resume",
                 "--out", str(tmp_path / "none")]) == 2
    assert "holds no run" in _one_error_line(capsys, "mnist")
    # fewer epochs than the run already trained: refused before training, nothing changes
    recorded = KoopmanMonitor.load(out / "trajectory")
    assert main([*common, "--epochs", "5", "--resume"]) == 2
    line = _one_error_line(capsys, "mnist")
    assert "--epochs" in line and "already trained 7 epochs" in line
    assert json.loads((out / "summary.json").read_text()) == summary
    after = KoopmanMonitor.load(out / "trajectory")
    np.testing.assert_array_equal(after.weights, recorded.weights)
    np.testing.assert_array_equal(after.weight_epochs, recorded.weight_epochs)


@pytest.mark.parametrize("command, options", [
    ("mnist", ["--init", "--epochs", "--out", "--subset", "--data-dir", "--fashion",
               "--batch-size", "--seed", "--quiet", "--loss-snapshots", "--weight-snapshots",
               "--resume", "--overwrite", "--no-refine"]),
    ("analyze", ["--observable", "--snapshots", "--window", "--delays", "--tol", "--json",
                 "--no-refine"]),
    ("plot", ["--out", "--loss-snapshots", "--weight-snapshots", "--observables", "--no-refine"]),
])
def test_help_lists_every_option(command, options, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: keras-koopman {command}")
    for option in options:
        assert option in text, option


def test_sobolev_forwards_to_the_study(capsys):
    """The study ships in the package (keras_koopman.sobolev_study): its --help names this
    command, a bad option exits 2."""
    assert main(["sobolev", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: keras-koopman sobolev")
    assert main(["sobolev", "--no-such-option"]) == 2
    assert "--no-such-option" in capsys.readouterr().err
