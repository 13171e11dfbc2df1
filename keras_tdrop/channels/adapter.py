"""The one place that reads a Keras graph through non-public attributes.

Keras 3 has a public `model.operations`, `model.inputs` and `model.outputs`,
but no public way to list a functional model's calls (nodes) in order with
their arguments, or to re-run the graph with a different callable at each
node. Everything that needs that goes through this module, and
`tests/channels/test_adapter.py` fails loudly when Keras moves it:

- `Functional._nodes_by_depth`: the calls, by depth (the topological order).
- `Node.operation`, `Node.arguments` (`args`, `kwargs`, `fill_in`),
  `Node.outputs`, `Node.is_input`: one call.
- `Functional._inputs_struct`: the nesting of the inputs (dicts).
- `Sequential._functional`: the functional model a built Sequential runs.
- `KerasTensor._keras_history`: the operation that made a tensor, which
  of its calls (`node_index` into `Operation._inbound_nodes`) and which of
  that call's outputs (`tensor_index`).
- `Layer._flatten_layers`: every layer inside a layer or model.
"""

import inspect

import keras


class GraphError(ValueError):
    """The model has no graph that can be walked (subclassed, unbuilt)."""


def functional_of(model):
    """The functional model behind `model` (itself, or a Sequential's).

    Raises:
        GraphError: for a subclassed or unbuilt model.
    """
    functional = model
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
    if functional is None or not hasattr(functional, "_nodes_by_depth"):
        kind = (
            "an unbuilt Sequential model (give it an Input first)"
            if isinstance(model, keras.Sequential)
            else "a subclassed model"
        )
        raise GraphError(
            f"`model` must be a built Sequential or functional model; "
            f"'{model.name}' ({type(model).__name__}) is {kind}, which has "
            "no graph of layers to rewrite."
        )
    return functional


def is_graph_model(op):
    """True for a functional or built Sequential model used as a layer."""
    if not isinstance(op, keras.Model):
        return False
    try:
        functional_of(op)
    except GraphError:
        return False
    return True


def nodes(model):
    """The calls of a graph model in execution order (inputs left out).

    Each is a `keras` Node: `.operation` (a Layer, a nested model, or a raw
    `keras.ops` Operation), `.arguments.args` / `.arguments.kwargs` (the
    call's arguments with KerasTensors in place) and `.outputs` (a flat
    list of KerasTensors).
    """
    functional = functional_of(model)
    ordered = []
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for node in functional._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            ordered.append(node)
    return ordered


def node_inputs(node):
    """The KerasTensors a call reads, flat, in argument order."""
    return list(node.arguments.keras_tensors)


def node_inputs_by_signature(node):
    """The KerasTensors a call reads, flat, in the order of the parameters
    of its operation's `call` (keyword arguments included), so that
    `mha(query=q, value=v, key=k)` and `mha(q, v, k)` list `q, v, k` alike.
    """
    args, kwargs = node.arguments.args, node.arguments.kwargs
    try:
        bound = inspect.signature(node.operation.call).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return node_inputs(node)
    flat = keras.tree.flatten(list(bound.arguments.values()))
    return [t for t in flat if isinstance(t, keras.KerasTensor)]


def call_arguments(node, values):
    """`(args, kwargs)` of `node` with each KerasTensor `t` replaced by
    `values[id(t)]`."""
    return node.arguments.fill_in(values)


def inputs_structure(model):
    """The nesting of `model`'s inputs (a list, a dict, a single tensor)."""
    return functional_of(model)._inputs_struct


def producer(tensor):
    """The operation that computed a KerasTensor, or None."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


def run_graph(model, inputs, call):
    """Runs `model`'s graph on `inputs`, calling `call(node, args, kwargs)`
    in place of each operation.

    `inputs` is flat, in the order of `model.inputs`. Returns the outputs
    in `model.outputs`' structure.
    """
    functional = functional_of(model)
    values = {id(t): v for t, v in zip(functional.inputs, inputs)}
    for node in nodes(functional):
        if any(id(t) not in values for t in node_inputs(node)):
            continue
        args, kwargs = call_arguments(node, values)
        outputs = call(node, args, kwargs)
        for tensor, value in zip(node.outputs, keras.tree.flatten(outputs)):
            values[id(tensor)] = value
    flat = [values[id(t)] for t in keras.tree.flatten(functional.outputs)]
    return keras.tree.pack_sequence_as(functional._outputs_struct, flat)


def producing_node(tensor):
    """The call (Node) that computed a KerasTensor, or None.

    Unlike `operation._inbound_nodes[0]`, the right one for a shared layer
    (called more than once) too.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None or history.operation is None:
        return None
    inbound = history.operation._inbound_nodes
    index = history.node_index
    return inbound[index] if 0 <= index < len(inbound) else None


def sublayers(layer):
    """Every layer inside `layer`, depth first, nested ones included (not
    `layer` itself); each once."""
    return list(layer._flatten_layers(include_self=False, recursive=True))


def raw_op_types(*names):
    """The classes of raw `keras.ops` operations (`Add`, `Reshape`, ...)
    that appear as nodes of a functional graph; names Keras lacks are
    skipped."""
    from keras.src.ops import core
    from keras.src.ops import nn
    from keras.src.ops import numpy as knp

    found = []
    for name in names:
        for module in (knp, nn, core):
            cls = getattr(module, name, None)
            if isinstance(cls, type) and cls not in found:
                found.append(cls)
    return found


def application_layer_types():
    """Custom layers of `keras.applications` that act on each channel
    alone with per-channel parameters (ConvNeXt's LayerScale)."""
    try:
        from keras.src.applications.convnext import LayerScale
    except ImportError:
        return []
    return [LayerScale]


def inner_output(tensor):
    """For a tensor that a nested graph model's call returned, the output
    tensor inside that model it stands for; None for any other tensor."""
    history = getattr(tensor, "_keras_history", None)
    if history is None or not is_graph_model(history.operation):
        return None
    outputs = keras.tree.flatten(functional_of(history.operation).outputs)
    index = history.tensor_index
    return outputs[index] if 0 <= index < len(outputs) else None
