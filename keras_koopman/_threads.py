"""One BLAS thread for the callbacks' analyses, scoped to each analysis.

DMD_RRR's work after its QR step is on small matrices (``p × p`` for ``p`` snapshots), where
threads gain nothing and, on a busy machine, OpenBLAS's spinning idle threads make ``eig`` and
the SVD 10-40 times slower (``docs/koopman.md``, "Threads").  The engine leaves the thread
pools alone; the Keras callbacks, which analyse inside ``fit`` while the machine is busy
training, run each analysis inside :func:`one_blas_thread`.  The limit is scoped: it is lifted
when the analysis returns, and it touches only the BLAS pools (not TensorFlow's).  The pools
are found once per process (about 1 ms); entering the limit then costs about 20 µs.
"""

from __future__ import annotations

import contextlib

from threadpoolctl import ThreadpoolController

__all__ = ["one_blas_thread"]

_CONTROLLER: list[ThreadpoolController] = []


def one_blas_thread() -> contextlib.AbstractContextManager:
    """A context in which the process's BLAS pools use one thread (restored on exit)."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")
