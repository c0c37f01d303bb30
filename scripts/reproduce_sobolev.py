"""Noisy multi-scale signal study of the paper (Figures 3-4): ``keras_koopman.sobolev_study``.

Same arguments as ``keras-koopman sobolev``; the figures go to ``docs/figures`` unless
``--figdir`` says otherwise::

    python scripts/reproduce_sobolev.py                      # the full study (docs/results.md)
    python scripts/reproduce_sobolev.py --seeds 1 --ambiguity-seeds 1 --steps 200 --no-figures
"""

from __future__ import annotations

import sys
from pathlib import Path

from keras_koopman.sobolev_study import main

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"

if __name__ == "__main__":
    # A --figdir given on the command line comes later and wins.
    sys.exit(main(["--figdir", str(FIGURES), *sys.argv[1:]]))
