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
