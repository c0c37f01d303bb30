"""Messages of the Keras callbacks, printed the way Keras prints its own.

Keras's callbacks print through ``keras.src.utils.io_utils.print_msg`` (private): to stdout
when interactive logging is on, to the logger otherwise.  This is the same rule on the public
``keras.config.is_interactive_logging_enabled``.  Warnings go through :mod:`warnings` only.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["say"]

_LOGGER = logging.getLogger("keras_koopman")


def say(message: str) -> None:
    """Print ``message`` as Keras prints callback messages (``verbose=1``)."""
    import keras

    if keras.config.is_interactive_logging_enabled():
        sys.stdout.write(message + "\n")
        sys.stdout.flush()
    else:
        _LOGGER.info(message)
