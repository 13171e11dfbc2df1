"""Re-estimating BatchNormalization statistics from a few batches."""

import warnings

import keras
import numpy as np

from keras_tdrop import keras_adapter
from keras_tdrop.pruning.apply import copy_model

__all__ = [
    "batchnorm_layers",
    "check_batches",
    "read_batches",
    "recalibrate",
    "recalibrate_batchnorm",
    "restore_statistics",
    "statistics",
]

# Examples per forward pass: batches are joined up to this size, since the
# passes run eagerly and their cost is mostly per operation, not per example.
_CHUNK = 256


class _Reached(Exception):
    """Ends a forward pass once the layer being measured has been called."""


def batchnorm_layers(model):
    """Every `BatchNormalization` layer of `model`, nested ones included."""
    layers = [model] + keras_adapter.sublayers(model)
    return [
        layer
        for layer in layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def recalibrate_batchnorm(
    model, data, steps=None, batch_size=32, inplace=False
):
    """Re-estimates the moving statistics of every BatchNormalization layer.

    After pruning, shrinking or truncating, a BatchNormalization layer
    normalizes its inputs with statistics of the network it was trained
    in. This sets each layer's `moving_mean` and `moving_variance` to the
    exact mean and biased variance of its inputs over all of `data` (not a
    momentum blend), with the model in inference mode and every earlier
    layer already recalibrated, so the statistics are those the layer sees
    at inference. No other weight changes.

    The layers are measured in the order the model calls them. When `data`
    holds at most 256 examples, they go through the model as one batch and
    each layer is set from its inputs just before it normalizes them: one
    forward pass in all. Larger data is read in passes of up to 256
    examples, one pass over all of it per layer, stopped at that layer.
    Works on any Keras backend and on Sequential, functional and subclassed
    models. The batches are read once and kept in memory: recalibrate on a
    few of them.

    Args:
        model: a built `keras.Model`.
        data: the inputs `x` as an array or a dict of arrays (split into
            batches of `batch_size`); an `(x, y)` or
            `(x, y, sample_weight)` tuple of those; or a `tf.data.Dataset`,
            a `keras.utils.PyDataset` or any iterable of batches `x`,
            `(x, y)` or `(x, y, sample_weight)`.
        steps: optional int, read at most this many batches.
        batch_size: int, the batch size when `data` holds arrays.
        inplace: bool, recalibrate `model` itself instead of a copy.

    Returns:
        The recalibrated model (a copy unless `inplace=True`). A model
        without BatchNormalization is returned as it is, with a warning.

    Raises:
        ValueError: for missing or empty data, or data the model cannot
            take; raised before any statistic changes.

    Example:
    >>> pruned = prune(model, 0.5, targeting="unit")
    >>> pruned = recalibrate_batchnorm(pruned, train_ds.take(10))
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(
            "`model` must be a built keras.Model. "
            f"Received: model={type(model).__name__}"
        )
    batches = read_batches(data, steps, batch_size)
    check_batches(model, batches)
    if not batchnorm_layers(model):
        warnings.warn(
            f"Model '{model.name}' has no BatchNormalization layer: there "
            "are no statistics to recalibrate; it is returned unchanged.",
            stacklevel=2,
        )
        return model
    target = model if inplace else copy_model(model)
    recalibrate(target, batches)
    return target


def recalibrate(model, batches):
    """Recalibrates `model` in place on `read_batches`' output.

    Returns the number of layers recalibrated. On any error every
    statistic is restored before the error propagates.
    """
    layers = batchnorm_layers(model)
    saved = statistics(model)
    batches = _joined(batches)
    done = set()
    try:
        if len(batches) == 1:
            _one_pass(model, layers, done, batches[0])
        while len(done) < len(layers):
            measured = _measure_next(model, layers, done, batches)
            if measured is None:
                break
            layer, mean, variance = measured
            _assign(layer, mean, variance)
            done.add(id(layer))
    except BaseException:
        restore_statistics(model, saved)
        raise
    unused = [layer.name for layer in layers if id(layer) not in done]
    if unused:
        warnings.warn(
            f"BatchNormalization layers {unused} are not called by the "
            "model: their statistics were left as they were.",
            stacklevel=3,
        )
    return len(done)


def statistics(model):
    """The moving statistics of `model`'s BatchNormalization layers."""
    return [
        (
            keras.ops.convert_to_numpy(layer.moving_mean),
            keras.ops.convert_to_numpy(layer.moving_variance),
        )
        for layer in batchnorm_layers(model)
    ]


def restore_statistics(model, saved):
    """Assigns `statistics(model)`' output back."""
    for layer, (mean, variance) in zip(batchnorm_layers(model), saved):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)


def _assign(layer, mean, variance):
    layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
    layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))


def _one_pass(model, layers, done, batch):
    """All the data in one batch: each layer, when called, is set from its
    inputs before it normalizes them, so one forward pass does it all."""

    def hook(layer, call):
        def hooked(inputs, *args, **kwargs):
            if id(layer) not in done:
                state = {"count": 0.0, "mean": 0.0, "m2": 0.0}
                _accumulate(state, layer, inputs, kwargs.get("mask"))
                if state["count"]:
                    _assign(layer, state["mean"], state["m2"] / state["count"])
                    done.add(id(layer))
            return call(inputs, *args, **kwargs)

        return hooked

    for layer in layers:
        object.__setattr__(layer, "call", hook(layer, layer.call))
    try:
        model(batch, training=False)
    finally:
        for layer in layers:
            layer.__dict__.pop("call", None)


def _measure_next(model, layers, done, batches):
    """Mean and biased variance of the inputs of the first layer called
    that is not yet recalibrated: every layer before it in the call order
    (every one that can feed it) is."""
    state = {"layer": None, "count": 0.0, "mean": 0.0, "m2": 0.0}

    def hook(layer, call):
        def hooked(inputs, *args, **kwargs):
            if state["layer"] is None and id(layer) not in done:
                state["layer"] = layer
            if state["layer"] is layer:
                _accumulate(state, layer, inputs, kwargs.get("mask"))
                raise _Reached()
            return call(inputs, *args, **kwargs)

        return hooked

    for layer in layers:
        object.__setattr__(layer, "call", hook(layer, layer.call))
    try:
        for batch in batches:
            try:
                model(batch, training=False)
            except _Reached:
                pass
            if state["layer"] is None:
                return None
    finally:
        for layer in layers:
            layer.__dict__.pop("call", None)
    mean, variance = state["mean"], state["m2"] / state["count"]
    return state["layer"], mean, variance


def _joined(batches):
    """Consecutive batches concatenated up to `_CHUNK` examples each (as
    they are where their shapes differ beyond the batch axis)."""
    groups, size = [], _CHUNK
    for batch in batches:
        n = len(keras.tree.flatten(batch)[0])
        if size + n > _CHUNK:
            groups.append([])
            size = 0
        groups[-1].append(batch)
        size += n
    joined = []
    for group in groups:
        try:
            joined.append(
                keras.tree.map_structure(lambda *a: np.concatenate(a), *group)
            )
        except ValueError:
            joined.extend(group)
    return joined


def _accumulate(state, layer, inputs, mask):
    """Merges one batch into the running count, mean and sum of squared
    deviations (Chan et al.'s pairwise update), in float64."""
    x = np.asarray(keras.ops.convert_to_numpy(inputs), dtype="float64")
    axis = layer.axis % x.ndim
    x = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
    weights = np.ones((len(x), 1))
    if mask is not None:
        # Keras' BatchNormalization masks along all axes but the last.
        mask = np.asarray(keras.ops.convert_to_numpy(mask), dtype="float64")
        weights = mask.reshape(-1, 1)
    count = float(weights.sum())
    if count == 0:
        return
    mean = (weights * x).sum(axis=0) / count
    m2 = (weights * (x - mean) ** 2).sum(axis=0)
    total = state["count"] + count
    delta = mean - state["mean"]
    state["mean"] = state["mean"] + delta * count / total
    state["m2"] = state["m2"] + m2 + delta**2 * state["count"] * count / total
    state["count"] = total


def read_batches(data, steps=None, batch_size=32, name="data"):
    """The inputs of each batch of `data` as numpy structures, at most
    `steps` of them; a ValueError for missing, empty or unreadable data
    (naming the argument `name`)."""
    if data is None:
        raise ValueError(
            f"`{name}` is required: the batches to recalibrate on. "
            f"Received: {name}=None"
        )
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, int) or steps < 1
    ):
        raise ValueError(
            f"`steps` must be None or an int >= 1. Received: steps={steps!r}"
        )
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(
            f"`batch_size` must be an int >= 1. Received: {batch_size=}"
        )
    if isinstance(data, tuple) and 1 <= len(data) <= 3 and _is_arrays(data[0]):
        data = data[0]
    if _is_arrays(data):
        size = len(keras.tree.flatten(data)[0])
        items = (
            keras.tree.map_structure(lambda a: a[i : i + batch_size], data)
            for i in range(0, size, batch_size)
        )
    elif isinstance(data, keras.utils.PyDataset):
        items = (data[i] for i in range(len(data)))
    else:
        try:
            if isinstance(data, (str, bytes, dict)):
                raise TypeError
            items = iter(data)
        except TypeError:
            shown = repr(data) if isinstance(data, str) else type(data).__name__
            raise ValueError(
                f"`{name}` must be arrays, an (x, y) tuple of arrays, a "
                "tf.data.Dataset, a PyDataset or an iterable of batches. "
                f"Received: {name}={shown}"
            ) from None
    batches = []
    for item in items:
        if steps is not None and len(batches) == steps:
            break
        x = item[0] if isinstance(item, tuple) else item
        x = keras.tree.map_structure(keras.ops.convert_to_numpy, x)
        if len(keras.tree.flatten(x)[0]):
            batches.append(x)
    if not batches:
        raise ValueError(
            f"`{name}` is empty: there are no examples to recalibrate on. "
            f"Received: {name}={type(data).__name__} with 0 examples"
        )
    return batches


def check_batches(model, batches):
    """A ValueError when a batch does not fit a graph model's inputs."""
    try:
        expected = keras.tree.flatten(keras_adapter.inputs_structure(model))
    except keras_adapter.GraphError:
        return
    for batch in batches:
        arrays = keras.tree.flatten(batch)
        shapes = [tuple(np.shape(a)) for a in arrays]
        fits = len(arrays) == len(expected) and all(
            len(shape) == len(tensor.shape)
            and all(d is None or d == s for d, s in zip(tensor.shape, shape))
            for shape, tensor in zip(shapes, expected)
        )
        if not fits:
            wanted = [tuple(t.shape) for t in expected]
            raise ValueError(
                f"`data` does not fit model '{model.name}': it takes inputs "
                f"of shape {wanted}. Received: a batch of shape {shapes}"
            )


def _is_arrays(value):
    leaves = keras.tree.flatten(value) if isinstance(value, dict) else [value]
    return bool(leaves) and all(
        hasattr(leaf, "shape") and hasattr(leaf, "__len__") for leaf in leaves
    )
