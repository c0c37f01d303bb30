"""The Sobolev study ships in the package: ``keras-koopman sobolev`` runs it from any folder."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from keras_koopman.cli import main
from keras_koopman.sobolev_study import lowpass_baseline


def test_help_names_the_subcommand_without_touching_sys_path(capsys):
    path = list(sys.path)
    assert main(["sobolev", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: keras-koopman sobolev")
    assert main(["sobolev", "--no-such-option"]) == 2
    assert "keras-koopman sobolev: error" in capsys.readouterr().err
    assert sys.path == path


def test_a_tiny_study_runs_in_spawned_workers_from_another_folder(tmp_path, monkeypatch):
    # From a folder without scripts/: the workers ("spawn") import the study from the package.
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "study.json"
    status = main(["sobolev", "--n-test", "16", "--steps", "3", "--seeds", "1", "--variants", "l2",
                   "--workers", "1", "--no-figures", "--json", str(out)])
    assert status == 0
    results = json.loads(out.read_text())["results"]
    trained = [r for r in results if r["variant"] == "l2"]
    assert sorted(r["epsilon"] for r in trained) == [0.05, 0.5, 1.0]
    assert all(np.isfinite(r["rmse"]) and r["rmse"] > 0 for r in trained)


def test_lowpass_baseline_recovers_a_band_limited_signal_from_noise():
    rng = np.random.default_rng(0)
    t = np.arange(96) / 96
    clean = np.sin(2 * np.pi * 2 * t) + 0.5 * np.cos(2 * np.pi * 5 * t)
    values, cutoff = lowpass_baseline(clean + 0.3 * rng.normal(size=96), t, t)
    assert 5 <= cutoff < 20
    assert np.sqrt(np.mean((values - clean) ** 2)) < 0.3 / 2
