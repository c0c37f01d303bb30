"""Restart a model from fresh initial weights: :func:`reinitialize` and :func:`reset_optimizer_state`.

Every restart in the package (the monitor's poor-initialisation restarts, the tuner, the
accelerator's optimizer reset) goes through this module.

Where the initializer of a variable is found
--------------------------------------------
A Keras 3 variable does not keep its initializer once it holds a value: ``keras.Variable``
stores it in ``variable._initializer`` only while initialisation is deferred (variables created
in a stateless scope, e.g. on JAX) and sets it to ``None`` afterwards; ``Layer.add_weight`` passes
it to the variable and keeps nothing. The initializer is therefore looked up, for every layer at
any nesting depth (sub-models, ``MultiHeadAttention``'s ``EinsumDense`` sub-layers, custom layers),

1. on the variable itself (``_initializer``, deferred variables only);
2. on the layer that owns the variable, by the Keras convention ``<name>_initializer`` (or
   ``_<name>_initializer``), ``<name>`` being the variable's name or the attribute that holds it:
   ``Dense.kernel_initializer`` for ``kernel``, ``BatchNormalization.moving_mean_initializer`` for
   ``moving_mean``, ``Embedding.embeddings_initializer`` for ``embeddings``, and the recurrent
   cells' ``recurrent_initializer`` for ``recurrent_kernel``. A custom layer that
   calls ``self.add_weight(initializer=...)`` is covered when it keeps the initializer under that
   name, as Keras's own layers do.

An LSTM cell with ``unit_forget_bias=True`` builds its bias with the forget gate's quarter set to
one around ``bias_initializer``; the re-draw sets that quarter to one as well.

``EinsumDense`` gives its ``VarianceScaling`` kernel initializer the kernel's input and output
axes when it builds; the re-draw does the same (from the layer's equation), so the fans match
the first draw. A trainable variable whose initializer cannot be found is left unchanged and
named in a ``RuntimeWarning``.

Non-trainable variables that have an initializer are re-drawn too: ``BatchNormalization``'s
moving mean and variance return to 0 and 1, the statistics a fresh layer starts from (statistics
of the discarded weights would not describe the new ones). Non-trainable state without one (seed
generators, counters) is left as it is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

__all__ = ["reinitialize", "reset_optimizer_state"]

#: Name that Keras's base optimizer gives its learning-rate variable (a hyperparameter: kept).
_LEARNING_RATE = "learning_rate"
#: Name of the optimizer's iteration counter.
_ITERATION = "iteration"

Initializer = Callable[..., Any]


def reinitialize(model: keras.Model, seed: int) -> int:
    """Re-draw a model's weights from their initializers and reset its optimizer's state.

    Parameters
    ----------
    model : keras.Model
        A built model (or layer). Nested models and layers are searched at any depth.
    seed : int
        Non-negative seed. Variable ``i`` of ``model.weights`` is drawn with a seed derived from
        ``(seed, i)`` by ``numpy.random.SeedSequence``, so equal seeds give equal weights and no
        two variables share draws.

    Returns
    -------
    int
        The number of variables re-drawn (trainable and non-trainable).

    Raises
    ------
    TypeError
        ``seed`` is not an integer.
    ValueError
        ``seed`` is negative, or no variable of the model could be re-drawn (an unbuilt model,
        or one whose initializers cannot be found).

    Notes
    -----
    The optimizer (``model.optimizer``, when built) gets :func:`reset_optimizer_state`: its slot
    variables and iteration count restart, its learning rate (a float or a schedule) is kept.

    Example
    -------
    >>> import keras
    >>> from keras_koopman.reinit import reinitialize
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> reinitialize(model, seed=0)   # kernel and bias
    2
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be a non-negative integer; got {type(seed).__name__}.")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed}.")
    initializers = _initializers_by_variable(model)
    redrawn: set[int] = set()
    for index, variable in enumerate(model.weights):
        found = initializers.get(id(variable))
        if found is None or id(variable) in redrawn:
            continue
        layer, initializer = found
        draw_seed = int(np.random.SeedSequence([int(seed), index]).generate_state(1)[0])
        fresh = _seeded(initializer, draw_seed, layer, variable)
        value = fresh(tuple(variable.shape), dtype=variable.dtype)
        variable.assign(_with_unit_forget_bias(layer, variable, value))
        redrawn.add(id(variable))
    if not redrawn:
        raise ValueError(
            f"reinitialize: model {getattr(model, 'name', model)!r} has no variable with a known "
            "initializer to re-draw (is it built? do its layers keep <name>_initializer?)."
        )
    left = [v.path for v in model.trainable_variables if id(v) not in redrawn]
    if left:
        warnings.warn(
            f"reinitialize: no initializer found for {len(left)} trainable variable(s), left "
            f"unchanged: {', '.join(left)}",
            RuntimeWarning,
            stacklevel=2,
        )
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        reset_optimizer_state(optimizer)
    return len(redrawn)


def reset_optimizer_state(optimizer: keras.optimizers.Optimizer, *, iterations: bool = True) -> int:
    """Return an optimizer's state to where a fresh optimizer starts; keep its hyperparameters.

    The slot variables (momentums, velocities, accumulators, ...) get the values a new optimizer
    of the same configuration starts with (zeros for most; e.g. ``Adagrad``'s accumulators its
    ``initial_accumulator_value``, a ``LossScaleOptimizer``'s scale its ``initial_scale``). The
    learning rate, a variable or a ``LearningRateSchedule`` object, is never changed.

    Parameters
    ----------
    optimizer : keras.optimizers.Optimizer
        Wrappers (``LossScaleOptimizer``) are reset together with their inner optimizer. An
        optimizer that is not built yet has no state; nothing is done.
    iterations : bool
        Also set the iteration count(s) to 0 (a schedule then starts over, and Adam's bias
        correction with it). False keeps the count.

    Returns
    -------
    int
        The number of optimizer variables reset.

    Example
    -------
    >>> import keras
    >>> from keras_koopman.reinit import reset_optimizer_state
    >>> variable = keras.Variable([1.0, 2.0])
    >>> optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    >>> optimizer.apply([keras.ops.ones(2)], [variable])
    >>> reset_optimizer_state(optimizer)   # the momentum slot and the iteration count
    2
    >>> round(float(optimizer.learning_rate), 6), int(optimizer.iterations)
    (0.1, 0)
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"optimizer must be a keras.optimizers.Optimizer; got {type(optimizer).__name__}."
        )
    if not optimizer.built:
        return 0
    # Keras keeps the list an optimizer was built for in `_trainable_variables`; a fresh copy
    # built on it creates the same variables in the same order, holding their initial values.
    fresh = optimizer.__class__.from_config(_without_learning_rates(optimizer.get_config()))
    fresh.build(optimizer._trainable_variables)
    pairs = zip(_state(optimizer), _state(fresh), strict=True)
    reset = 0
    for current, initial in pairs:
        if current.name != initial.name or tuple(current.shape) != tuple(initial.shape):
            raise RuntimeError(
                f"reset_optimizer_state: cannot match {current.path} to a fresh "
                f"{type(optimizer).__name__}'s {initial.path}."
            )
        if current.name == _ITERATION and not iterations:
            continue
        current.assign(initial.value)
        reset += 1
    return reset


def _state(optimizer: keras.optimizers.Optimizer) -> list[keras.Variable]:
    """The optimizer's variables except its learning-rate variables (a schedule has none)."""
    return [v for v in optimizer.variables if v.name != _LEARNING_RATE]


def _without_learning_rates(config: Any) -> Any:
    """The config with every ``learning_rate`` set to a placeholder float (schedules and
    callables need not survive a config round trip; the copy's learning rate is never used)."""
    if isinstance(config, dict):
        return {
            key: 0.0 if key == _LEARNING_RATE else _without_learning_rates(value)
            for key, value in config.items()
        }
    if isinstance(config, list | tuple):
        return type(config)(_without_learning_rates(value) for value in config)
    return config


def _initializers_by_variable(model: keras.layers.Layer) -> dict[int, tuple[Any, Initializer]]:
    """id(variable) -> (owning layer, initializer), for every variable whose initializer is found."""
    found: dict[int, tuple[Any, Initializer]] = {}
    for layer in _layers(model):
        for attribute, value in vars(layer).items():
            if not isinstance(value, keras.Variable) or id(value) in found:
                continue
            names = (value.name, attribute.lstrip("_"))
            # recurrent cells keep `recurrent_initializer` for their `recurrent_kernel`
            names += tuple(n.removesuffix("_kernel") for n in names if n.endswith("_kernel"))
            initializer = getattr(value, "_initializer", None) or _layer_initializer(layer, names)
            if initializer is not None:
                found[id(value)] = (layer, initializer)
    return found


def _layer_initializer(layer: Any, names: tuple[str, ...]) -> Initializer | None:
    for name in names:
        for attribute in (f"{name}_initializer", f"_{name}_initializer"):
            initializer = getattr(layer, attribute, None)
            if callable(initializer):
                return initializer
    return None


def _layers(root: Any) -> Iterator[keras.layers.Layer]:
    """``root`` and every layer reachable through its attributes (lists, dicts included)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, keras.layers.Layer):
            yield item
            stack.extend(vars(item).values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())


def _seeded(initializer: Initializer, seed: int, layer: Any, variable: keras.Variable) -> Initializer:
    """A copy of a Keras initializer drawing with ``seed`` (other callables are used as they are).

    An ``EinsumDense`` kernel's ``VarianceScaling`` gets the kernel's input and output axes, as
    the layer gives them when it builds.
    """
    if not isinstance(initializer, keras.initializers.Initializer):
        return initializer
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    config["seed"] = seed
    if (
        isinstance(layer, keras.layers.EinsumDense)
        and isinstance(initializer, keras.initializers.VarianceScaling)
        and variable.name == "kernel"
        and (initializer.input_axes is None or initializer.output_axes is None)
    ):
        config["input_axes"], config["output_axes"] = _einsum_kernel_axes(layer.equation)
    return initializer.__class__.from_config(config)


def _with_unit_forget_bias(layer: Any, variable: keras.Variable, value: Any) -> Any:
    """An LSTM cell built with ``unit_forget_bias=True`` (``LSTMCell``, ``ConvLSTMCell``) draws
    its bias as ``[b_i, 1, b_c, b_o]``, the forget gate's quarter set to one, around its
    ``bias_initializer``; the re-draw does the same."""
    if not getattr(layer, "unit_forget_bias", False) or variable.name != "bias":
        return value
    size = int(variable.shape[0]) // 4
    if len(variable.shape) != 1 or 4 * size != int(variable.shape[0]):
        return value
    value = np.array(keras.ops.convert_to_numpy(value))
    value[size : 2 * size] = 1.0
    return value


def _einsum_kernel_axes(equation: str) -> tuple[list[int], list[int]]:
    """Kernel axes that reach the output and those contracted with the input, as EinsumDense."""
    operands, output = equation.replace("...", "").split("->")
    inputs, kernel = operands.split(",")
    output_axes = [i for i, dim in enumerate(kernel) if dim in output]
    input_axes = [i for i, dim in enumerate(kernel) if dim not in output and dim in inputs]
    return input_axes, output_axes
