"""Multiply-accumulates (MACs) per example of a Keras graph model.

Only matrix products are counted (Dense, convolutions, EinsumDense,
attention, SimpleRNN/GRU/LSTM), as papers count (MobileNetV2's published
300 M): normalization, activations, pooling, merges and raw `keras.ops`
calls count 0. (Torch-Pruning's counter, adapted from ptflops, also adds
2 per normalized element, 1 per ReLU-family output and pooled input, and
the biases; it leaves swish, sigmoid and merges out too.) Zero weights
are counted too (dense MACs); a pruned but not shrunk model costs what
the dense one costs, and the compression ratio of the reports says how
sparse it is.
"""

import math
import re
import warnings

import keras

from keras_tdrop import keras_adapter

__all__ = [
    "flops",
    "macs_by_call",
    "register_flops_rule",
]

_RULES = {}


def register_flops_rule(layer_class, fn):
    """Counts the MACs of `layer_class` (and its subclasses) with `fn`.

    The rule of the nearest class in the layer's MRO applies, so a rule
    for a subclass of `Dense` replaces Dense's for that subclass only.

    Args:
        layer_class: a subclass of `keras.Operation` (a layer class).
        fn: `fn(layer, input_shapes, output_shapes) -> int`, the MACs of
            one call for one example. `input_shapes` are the shapes of the
            call's tensor arguments in the order of the parameters of
            `layer.call`; `output_shapes` those of its outputs. Both include
            the batch axis (`None`), which the count leaves out.

    Example:
    >>> register_flops_rule(MyGatedDense, lambda layer, i, o: (
    ...     2 * math.prod(i[0][1:]) * layer.units))
    """
    if not (
        isinstance(layer_class, type)
        and issubclass(layer_class, keras.Operation)
    ):
        raise TypeError(
            "`layer_class` must be a subclass of keras.Operation (a layer "
            f"class). Received: layer_class={layer_class!r}"
        )
    if not callable(fn):
        raise TypeError(
            "`fn` must be callable as fn(layer, input_shapes, "
            f"output_shapes). Received: fn={fn!r}"
        )
    _RULES[layer_class] = fn


def flops(model, per_layer=False):
    """Multiply-accumulates per example of a functional or Sequential model.

    Every call of a layer counts, so a layer used twice counts twice;
    nested functional and Sequential models are counted call by call.
    Counts matrix products only (see the module docstring) and every
    weight, zero or not: shrinking a model lowers its count, masking does
    not. A custom layer without a rule counts the sublayers that have one
    (Dense, convolutions, attention inside a Transformer block), each once
    on the shape it was built on; other layers without a rule count 0
    (with a warning when they hold weight matrices); add rules with
    `register_flops_rule`.

    Args:
        model: a built functional or Sequential `keras.Model` whose inputs
            have every dimension but the batch known.
        per_layer: bool. False returns the total; True a list of rows
            `{"layer", "type", "calls", "macs"}`, one per operation (its
            calls summed, nested models' layers listed), then a row
            `{"layer": "total", ...}`.

    Returns:
        The MACs per example, an int (or the rows).

    Example:
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> flops(model)
    32
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    if not isinstance(per_layer, bool):
        raise TypeError(
            f"`per_layer` must be a bool. Received: per_layer={per_layer!r}"
        )
    rows = {}
    for op, macs in macs_by_call(model):
        row = rows.setdefault(
            id(op),
            {
                "layer": op.name,
                "type": type(op).__name__,
                "calls": 0,
                "macs": 0,
            },
        )
        row["calls"] += 1
        row["macs"] += macs
    total = sum(row["macs"] for row in rows.values())
    if not per_layer:
        return total
    end = {"layer": "total", "type": "", "calls": None, "macs": total}
    return list(rows.values()) + [end]


def macs_by_call(model):
    """`(operation, macs)` per call of `model`'s graph, in execution order,
    nested graph models replaced by their own calls."""
    for node in keras_adapter.nodes(model):
        op = node.operation
        if keras_adapter.is_graph_model(op):
            yield from macs_by_call(op)
            continue
        inputs = [
            tuple(t.shape) for t in keras_adapter.node_inputs_by_signature(node)
        ]
        outputs = [tuple(t.shape) for t in node.outputs]
        yield op, _count(op, inputs, outputs)


def _rule(op):
    for cls in type(op).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None


def _count(op, inputs, outputs):
    rule = _rule(op)
    if rule is None:
        if any(len(w.shape) >= 2 for w in getattr(op, "weights", ())):
            counted = _sublayer_macs(op)
            if counted is not None:
                return counted
            warnings.warn(
                f"flops: no rule for layer '{op.name}' of type "
                f"{type(op).__name__}, which holds weight matrices; it "
                "counts 0 MACs. Add one with `register_flops_rule`.",
                stacklevel=4,
            )
        return 0
    if rule is _no_macs:
        return 0
    for shape in inputs + outputs:
        if None in shape[1:]:
            raise ValueError(
                "`flops` needs a model with a known input shape (every "
                f"dimension but the batch). Layer '{op.name}' "
                f"({type(op).__name__}) sees the shape {shape}; build the "
                "model on a keras.Input with a full `shape`."
            )
    return int(rule(op, inputs, outputs))


def _built_shapes(layer):
    """`(input shapes, output shapes)` of a built layer's one call, from
    the shapes it was built on, or None when they are not known."""
    config = layer.get_build_config() if layer.built else None
    if not config:
        return None
    config = config.get("shapes_dict", config)  # MultiHeadAttention's
    if "input_shape" in config:
        inputs = [tuple(config["input_shape"])]
    elif "query_shape" in config:
        value = config.get("value_shape") or config["query_shape"]
        inputs = [tuple(config["query_shape"]), tuple(value)]
    else:
        return None
    try:
        outputs = layer.compute_output_shape(*inputs)
    except Exception:  # a layer without a static shape rule
        return None
    if (
        isinstance(outputs, tuple)
        and outputs
        and isinstance(outputs[0], (tuple, list))
    ):
        outputs = [tuple(o) for o in outputs]
    else:
        outputs = [tuple(outputs)]
    return inputs, outputs


def _sublayer_macs(op):
    """The MACs of a custom layer without a rule (a Transformer block, a
    tokenizer): the sum over its sublayers that have rules, each counted
    once on the shape it was built on (a sublayer called twice counts
    once). None when one of those sublayers' shapes is unknown."""
    total, found = 0, False
    for layer in keras_adapter.children(op):
        rule = _rule(layer)
        if rule is None:
            inner = _sublayer_macs(layer)
            if inner is None and any(len(w.shape) >= 2 for w in layer.weights):
                return None
            total += inner or 0
            found = found or inner is not None
            continue
        if rule is _no_macs:
            continue
        shapes = _built_shapes(layer)
        if shapes is None or any(
            None in shape[1:] for shape in shapes[0] + shapes[1]
        ):
            return None
        total += int(rule(layer, *shapes))
        found = True
    return total if found else None


def _size(shape):
    """Elements of one example of `shape` (batch axis left out)."""
    return math.prod(shape[1:])


def _no_macs(layer, input_shapes, output_shapes):
    return 0


def _channels_in(layer, shape):
    return shape[1] if layer.data_format == "channels_first" else shape[-1]


def _dense(layer, input_shapes, output_shapes):
    return _size(input_shapes[0]) * layer.units


def _conv(layer, input_shapes, output_shapes):
    per_output = math.prod(layer.kernel_size) * _channels_in(
        layer, input_shapes[0]
    )
    return _size(output_shapes[0]) * per_output // layer.groups


def _conv_transpose(layer, input_shapes, output_shapes):
    # Each input position scatters a kernel_size x filters patch.
    return _size(input_shapes[0]) * math.prod(layer.kernel_size) * layer.filters


def _depthwise_conv(layer, input_shapes, output_shapes):
    return _size(output_shapes[0]) * math.prod(layer.kernel_size)


def _separable_conv(layer, input_shapes, output_shapes):
    positions = _size(output_shapes[0]) // layer.filters
    depthwise = _channels_in(layer, input_shapes[0]) * layer.depth_multiplier
    return (
        positions * depthwise * (math.prod(layer.kernel_size) + layer.filters)
    )


def _einsum_dense(layer, input_shapes, output_shapes):
    # An einsum costs the product of the sizes of all its letters.
    inputs, _, outputs = re.split(",|->", layer.equation.replace(" ", ""))
    sizes = {}
    extra = 1
    for spec, shape in ((inputs, input_shapes[0]), (outputs, output_shapes[0])):
        left, dots, right = spec.partition("...")
        dims = list(enumerate(shape))
        named = dims[: len(left)] + (
            dims[len(dims) - len(right) :] if right else []
        )
        for letter, (axis, size) in zip(left + right, named):
            if axis > 0:
                sizes[letter] = size
            else:
                sizes.setdefault(letter, None)
        if dots and spec is inputs:
            middle = dims[len(left) : len(dims) - len(right)]
            extra = math.prod(size for axis, size in middle if axis > 0)
    batch = {letter for letter, size in sizes.items() if size is None}
    return extra * math.prod(
        size for letter, size in sizes.items() if letter not in batch
    )


def _attention(layer, input_shapes, output_shapes):
    query, value = input_shapes[0], input_shapes[1]
    q_positions = _size(query[:-1])
    v_positions = _size(value[:-1])
    axes = layer.attention_axes
    if axes is None:
        axes = range(1, len(value) - 1)
    attended = math.prod(value[a % len(value)] for a in axes)
    heads = layer.num_heads
    return (
        q_positions * math.prod(layer.query_dense.kernel.shape)
        + v_positions * math.prod(layer.key_dense.kernel.shape)
        + v_positions * math.prod(layer.value_dense.kernel.shape)
        + q_positions * attended * heads * layer.key_dim
        + q_positions * attended * heads * layer.value_dim
        + q_positions * math.prod(layer.output_dense.kernel.shape)
    )


def _recurrent(gates):
    def rule(layer, input_shapes, output_shapes):
        # Per step and gate: inputs x units and the recurrent units x units.
        sequences = input_shapes[0]
        steps = sequences[1]
        return gates * (_size(sequences) + steps * layer.units) * layer.units

    return rule


def _bidirectional(layer, input_shapes, output_shapes):
    return sum(
        _count(inner, input_shapes, output_shapes)
        for inner in (layer.forward_layer, layer.backward_layer)
    )


def _wrapper(layer, input_shapes, output_shapes):
    # TimeDistributed and kernel-mask wrappers cost what they wrap.
    return _count(layer.layer, input_shapes, output_shapes)


L = keras.layers
for _classes, _fn in (
    ((L.Dense,), _dense),
    ((L.Conv1D, L.Conv2D, L.Conv3D), _conv),
    (
        (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose),
        _conv_transpose,
    ),
    ((L.DepthwiseConv1D, L.DepthwiseConv2D), _depthwise_conv),
    ((L.SeparableConv1D, L.SeparableConv2D), _separable_conv),
    ((L.EinsumDense,), _einsum_dense),
    ((L.MultiHeadAttention,), _attention),
    ((L.SimpleRNN,), _recurrent(1)),
    ((L.GRU,), _recurrent(3)),
    ((L.LSTM,), _recurrent(4)),
    ((L.Bidirectional,), _bidirectional),
    ((L.Wrapper,), _wrapper),
    ((L.Embedding,), _no_macs),
):
    for _cls in _classes:
        register_flops_rule(_cls, _fn)
del L, _classes, _fn, _cls
