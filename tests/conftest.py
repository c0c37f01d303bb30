"""Fixtures shared by several test modules."""

from __future__ import annotations

import dataclasses

import pytest


@pytest.fixture
def script_unit_cluster(monkeypatch):
    """``script(values)`` makes ``KoopmanMonitor``'s weight analysis ending at epoch ``e`` report
    ``values[e]`` (default 0) as its unit cluster (the spectrum itself is computed as usual)
    and returns the list of the values reported, in order."""
    import keras_koopman.monitor as monitor_module

    def script(values: dict[int, float]) -> list[float]:
        real, calls = monitor_module.analyze_weights, []

        def analyze(*args, **kwargs):
            analysis = real(*args, **kwargs)
            calls.append(values.get(int(analysis.last_epoch), 0.0))
            diagnostics = dataclasses.replace(analysis.diagnostics, unit_cluster=calls[-1])
            return dataclasses.replace(analysis, diagnostics=diagnostics)

        monkeypatch.setattr(monitor_module, "analyze_weights", analyze)
        return calls

    return script


def _raw_mnist_dir():
    """The MNIST raw files for the tests: ``$KERAS_KOOPMAN_MNIST_DIR``, else the ``shared/data``
    folder beside this checkout (the test suite knows the project layout; the library does not)."""
    import os
    from pathlib import Path

    from_env = os.environ.get("KERAS_KOOPMAN_MNIST_DIR")
    return Path(from_env) if from_env else Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir():
    """Folder with the four raw MNIST files; skips the test when it is absent."""
    folder = _raw_mnist_dir()
    if not folder.is_dir():
        pytest.skip(f"MNIST raw files not found in {folder} (set KERAS_KOOPMAN_MNIST_DIR)")
    return folder
