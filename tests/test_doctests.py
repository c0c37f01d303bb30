"""Run the docstring examples of the modules listed in MODULES (add a module: one line)."""

from __future__ import annotations

import doctest
import importlib
import time

import pytest

MODULES = [
    "keras_koopman.losses",
    "keras_koopman.sobolev_model",
    "keras_koopman.reinit",
    "keras_koopman.koopman._options",
    "keras_koopman.monitor",
    "keras_koopman.decisions",
    "keras_koopman.tensorboard",
    "keras_koopman.tuner",
    "keras_koopman.accelerator",
    "keras_koopman.checkpoint",
]

#: Each module's examples must run in this time (they are documentation, not benchmarks).
SECONDS_PER_MODULE = 30.0  # a few short fits on a loaded 2-core machine


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    start = time.perf_counter()
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    elapsed = time.perf_counter() - start
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"
    assert elapsed < SECONDS_PER_MODULE, f"the examples of {name} took {elapsed:.1f} s"
