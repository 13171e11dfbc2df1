"""Which variables of a layer are kernels, which layers of a model,
running a layer on substituted kernel values, and the check that a
`model` argument is a Keras model."""

import itertools

import keras
import numpy as np

from keras_tdrop import keras_adapter as adapter

__all__ = [
    "call_with_values",
    "check_model",
    "iter_layers",
    "kernel_variables",
    "logits_kernels",
    "logits_layers",
    "resolve_exclude",
]

_KERNEL_SUFFIXES = ("kernel",)


def kernel_variables(layer):
    """The prunable kernels of `layer` (never biases, scales or statistics).

    Every variable whose name ends in "kernel" (Dense, Conv*, EinsumDense,
    the depthwise and pointwise kernels of separable convolutions, recurrent
    kernels, and the four EinsumDense kernels of MultiHeadAttention).
    Only trainable variables count: a frozen layer (`trainable=False`) has
    no prunable kernels, and a raw `keras.ops` operation of a functional
    graph (`x + y`, `x[:, 0]`), which is not a Layer, has none either.
    """
    if not isinstance(layer, keras.layers.Layer):
        return []
    return _kernels(layer.trainable_variables)


def _kernels(variables):
    return [
        v
        for v in variables
        if v.name.endswith(_KERNEL_SUFFIXES) and len(v.shape) >= 1
    ]


def call_with_values(
    layer, replacements, inputs, args, kwargs, add_loss, held=()
):
    """Calls `layer` with some of its variables replaced by tensors.

    `replacements` is a list of `(variable, value)`. Updates the layer makes
    to its other variables inside the scope (statistics, seed generators) are
    applied afterwards, except where `held`, a list of `(variable, boolean
    mask of its shape)`, marks elements to keep as they were; the losses it
    adds (activity regularizers) are handed to `add_loss` (the calling
    layer's).
    """
    held = {id(variable): mask for variable, mask in held}
    replaced = {id(variable) for variable, _ in replacements}
    others = [v for v in layer.variables if id(v) not in replaced]
    # A nested scope does not see an enclosing one (JAX's stateless training
    # step): hand it the current value of every other variable.
    mapping = list(replacements) + [(v, v.value) for v in others]
    with keras.StatelessScope(
        state_mapping=mapping, collect_losses=True
    ) as scope:
        outputs = layer(inputs, *args, **kwargs)
    for variable, (_, before) in zip(others, mapping[len(replacements) :]):
        value = scope.get_current_value(variable)
        if value is not None and value is not before:
            if id(variable) in held:
                value = keras.ops.where(held[id(variable)], before, value)
            variable.assign(value)
    if scope.losses:
        add_loss(scope.losses)
    return outputs


def check_model(model, name="model", built_for=None):
    """Raises unless `model` is a `keras.Model`, built if `built_for` is set.

    Args:
        model: the object to check.
        name: str, the argument's name in the messages.
        built_for: str or None; if given, `model` must also be built, and
            the `ValueError` says what for (`"pruning"`, `"export"`).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{name}` must be a keras.Model. Received: {name}={model!r}"
        )
    if built_for is not None and not model.built:
        raise ValueError(
            f"`{name}` must be built before {built_for}. Received: unbuilt "
            f"model '{model.name}'"
        )


def iter_layers(model):
    """All layers of `model`, depth first, descending into nested models.

    Each layer once (a shared layer is called several times but listed
    once); raw `keras.ops` operations of the graph are not layers and are
    left out.
    """
    seen = set()

    def walk(parent):
        for layer in parent.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if isinstance(layer, keras.Model):
                yield from walk(layer)
            else:
                yield layer

    yield from walk(model)


def logits_layers(model):
    """The layers that produce the model's outputs, through kernel-free ones.

    A model ending in `Dense -> Softmax` or `Dense -> Activation` (or a raw
    op such as `ops.softmax`) has its Dense as logits layer; a model with
    several outputs has one per output. An output of a nested model is
    followed inside it. Returns an empty list for a model without a graph.
    """
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return []
    found = []
    for tensor in keras.tree.flatten(outputs or []):
        layer = _logits_of(tensor)
        if layer is not None and layer not in found:
            found.append(layer)
    return found


def _logits_of(tensor):
    while tensor is not None:
        inner = adapter.inner_output(tensor)
        if inner is not None:
            layer = _logits_of(inner)
            if layer is not None:
                return layer
        else:
            layer = adapter.producer(tensor)
            # A frozen logits layer ends the walk too (it is left out
            # anyway, having no trainable kernels).
            if isinstance(layer, keras.layers.Layer) and _kernels(
                layer.variables
            ):
                return layer
        node = adapter.producing_node(tensor)
        inputs = [] if node is None else adapter.node_inputs(node)
        tensor = inputs[0] if len(inputs) == 1 else None
    return None


class _ReadOrder(keras.StatelessScope):
    """A scope that changes nothing and notes when each variable is read."""

    def __init__(self):
        super().__init__()
        self.last_read = {}
        self._clock = itertools.count()

    def get_current_value(self, variable):
        self.last_read[id(variable)] = next(self._clock)
        return super().get_current_value(variable)


def _example_inputs(model):
    """Zeros of the shape `model` was built with (batch 1), or None."""
    config = model.get_build_config() or {}
    shapes = config.get("input_shape")
    if shapes is None:
        return None

    def zeros(shape):
        shape = [1 if d is None else d for d in shape]
        return np.zeros([1] + shape[1:], "float32")

    return keras.tree.map_shape_structure(zeros, shapes)


def logits_kernels(model):
    """The kernels of the model's logits.

    For a Sequential or functional model, the kernels of `logits_layers`.
    A model without a graph (subclassed) is run once at inference on zeros
    of the shape it was built with, and the kernel read last is its logits
    kernel. A model with a `logits_kernels()` method (a model-level
    wrapper) answers for itself. Returns an empty list when there is
    neither a graph nor a known input shape.
    """
    if callable(getattr(model, "logits_kernels", None)):
        return model.logits_kernels()
    layers = logits_layers(model)
    if layers or _has_graph(model):
        return [k for layer in layers for k in kernel_variables(layer)]
    kernels = kernel_variables(model)
    inputs = _example_inputs(model)
    if not kernels or inputs is None:
        return []
    with _ReadOrder() as scope:
        model(inputs, training=False)
    read = [k for k in kernels if id(k) in scope.last_read]
    if not read:
        return []
    return [max(read, key=lambda k: scope.last_read[id(k)])]


def _has_graph(model):
    try:
        return bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def resolve_exclude(model, exclude, exclude_logits=True):
    """A predicate `layer -> bool` from names, a callable or None."""
    if not isinstance(exclude_logits, (bool, np.bool_)):
        raise TypeError(
            "`exclude_logits` must be a bool. "
            f"Received: exclude_logits={exclude_logits!r}"
        )
    if exclude is None:
        names, predicate = set(), None
    elif callable(exclude):
        names, predicate = set(), exclude
    elif isinstance(exclude, str):
        names, predicate = {exclude}, None
    else:
        try:
            names, predicate = set(exclude), None
        except TypeError:
            raise TypeError(
                "`exclude` must be None, a layer name, a list of layer names "
                f"or a callable. Received: exclude={exclude!r}"
            ) from None
        bad = [n for n in names if not isinstance(n, str)]
        if bad:
            raise TypeError(
                "`exclude` names must be strings. "
                f"Received: exclude={exclude!r}"
            )
    logits = (
        {id(layer) for layer in logits_layers(model)}
        if exclude_logits
        else set()
    )

    def excluded(layer):
        inner = getattr(layer, "layer", None)
        ids = {id(layer)} | ({id(inner)} if inner is not None else set())
        layer_names = {layer.name} | (
            {inner.name} if inner is not None else set()
        )
        if ids & logits or layer_names & names:
            return True
        return bool(predicate(layer)) if predicate is not None else False

    return excluded
