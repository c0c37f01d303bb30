"""``SpectrumImages``: the monitor's Koopman spectra as TensorBoard images."""

from __future__ import annotations

import keras

from keras_koopman.monitor import KoopmanMonitor, is_chief

__all__ = ["SpectrumImages"]


class SpectrumImages(keras.callbacks.Callback):
    """Log every new analysis of a :class:`~keras_koopman.KoopmanMonitor` as an image.

    Each analysis made during an epoch becomes a ``tf.summary.image`` under
    ``koopman/<observable>`` at that epoch (the spectrum in the complex plane with the unit
    circle, :func:`~keras_koopman.spectrum_png`).  Only the chief writes under
    ``tf.distribute``.  Cost: one small matplotlib figure per analysis.

    Args:
        monitor: The monitor, listed before this callback.
        log_dir: The TensorBoard log folder (e.g. the one of ``keras.callbacks.TensorBoard``).

    Example:

    >>> import keras, numpy as np, tempfile, keras_koopman as kk
    >>> from keras_koopman.tensorboard import SpectrumImages
    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> y = x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    >>> monitor = kk.KoopmanMonitor(["weights", "loss"], analyze_at=(8,))
    >>> images = SpectrumImages(monitor, tempfile.mkdtemp())
    >>> _ = model.fit(x, y, epochs=8, verbose=0, callbacks=[monitor, images])
    >>> images.logged
    2
    """

    def __init__(self, monitor: KoopmanMonitor, log_dir) -> None:
        super().__init__()
        if not isinstance(monitor, KoopmanMonitor):
            raise TypeError(f"monitor must be a KoopmanMonitor; got {type(monitor).__name__}")
        if not isinstance(log_dir, (str, bytes)) and not hasattr(log_dir, "__fspath__"):
            raise TypeError(f"log_dir must be a folder path; got {type(log_dir).__name__}")
        self.monitor = monitor
        self.log_dir = str(log_dir)
        self.logged = 0
        self._writer = None
        self._seen = 0

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        self.logged = 0
        self._seen = 0
        self._writer = tf.summary.create_file_writer(self.log_dir) if is_chief() else None

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        from keras_koopman.plotting import spectrum_png

        self.monitor.check_order(epoch, "SpectrumImages")
        new = self.monitor.analyses[self._seen:]
        self._seen = len(self.monitor.analyses)
        if self._writer is None:
            return
        with self._writer.as_default():
            for analysis in new:
                image = tf.image.decode_png(spectrum_png(analysis), channels=4)[None]
                tf.summary.image(f"koopman/{analysis.observable}", image, step=int(epoch) + 1)
                self.logged += 1
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
