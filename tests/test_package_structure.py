"""The package's shape: lazy imports, a public API that resolves, small classes, no
knowledge of the developers' folders, no process-wide side effects on import."""

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import keras_koopman

PACKAGE = Path(keras_koopman.__file__).resolve().parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_engine_imports_without_tensorflow_or_matplotlib():
    code = ("import sys, time; t = time.perf_counter(); import keras_koopman as kk; "
            "import keras_koopman.koopman; kk.dmd_rrr; kk.AnalysisOptions; kk.analyze_series; "
            "kk.forecast_curve; print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib', "
            "'keras_tuner', 'optuna') if m in sys.modules)); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout.split("\n")
    assert out[0] == "[]"
    assert float(out[1]) < 5.0  # well under a second on an idle machine


def test_every_public_name_resolves_and_is_documented():
    for name in keras_koopman.__all__:
        value = getattr(keras_koopman, name)
        if callable(value):
            assert inspect.getdoc(value), f"{name} has no docstring"


def _classes():
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                yield path, node


@pytest.mark.parametrize("limit", [300])
def test_no_class_is_longer_than_the_limit(limit):
    long = [f"{p.name}:{n.name} ({n.end_lineno - n.lineno + 1} lines)" for p, n in _classes()
            if n.end_lineno - n.lineno + 1 > limit]
    assert not long, long


def test_the_monitor_keeps_a_small_constructor():
    parameters = inspect.signature(keras_koopman.KoopmanMonitor).parameters
    assert len(parameters) <= 12


def test_the_library_knows_no_developer_folders_and_edits_no_import_path():
    for path in SOURCES:
        text = path.read_text()
        assert "sys.path" not in text, path
        assert '"shared"' not in text and "'shared'" not in text, path
        if path.name != "_atomic.py":  # which reads it once, at import
            assert "os.umask(" not in text, path
        assert "threadpool_limits(" not in text, path


def test_the_lapack_oracle_is_not_installed():
    assert not (PACKAGE / "koopman" / "_lapack.py").exists()
