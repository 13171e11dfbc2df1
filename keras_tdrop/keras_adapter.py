"""The one place that reads Keras and TensorFlow through non-public names.

Every private Keras (`keras.src`, underscored attributes) or TensorFlow
(`tensorflow.python`) use of the package is here, each with why, and
`tests/test_keras_adapter.py` fails loudly when Keras or TensorFlow moves it.

Keras 3 has a public `model.operations`, `model.inputs` and `model.outputs`,
but no public way to list a functional model's calls (nodes) in order with
their arguments, or to re-run the graph with a different callable at each
node:

- `Functional._nodes_by_depth`: the calls, by depth (the topological order).
- `Node.operation`, `Node.arguments` (`args`, `kwargs`, `fill_in`),
  `Node.outputs`, `Node.is_input`: one call.
- `Functional._inputs_struct`, `_outputs_struct`: the nesting of the inputs
  and outputs (dicts).
- `Sequential._functional`: the functional model a built Sequential runs.
- `KerasTensor._keras_history`: the operation that made a tensor, which
  of its calls (`node_index` into `Operation._inbound_nodes`) and which of
  that call's outputs (`tensor_index`).

And beyond the graph:

- `Layer._flatten_layers`: every layer inside a layer or model (Keras has
  no public recursive listing; `Model.layers` is one level).
- `keras.src.ops` classes: the raw operations a graph holds as nodes
  (`x + y` is an `Add`); only their instances are public.
- `keras.src.applications.convnext.LayerScale`: not exported.
- `keras.src.backend.common.variables.AutocastScope`: a variable's stored
  value inside a layer that autocasts (mixed precision); see
  `stored_value`.
- `tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext`:
  whether a TensorFlow graph is compiled by XLA; see `in_xla_context`.
- TensorFlow's `AssignVariableOp` on a Keras variable's `handle`, outside
  a `keras.StatelessScope` (`keras.src.backend.common.stateless_scope.
  in_stateless_scope`, which has no public name): a scalar assignment at a
  sixth of `Variable.assign`'s host time; see `assign`.

And of tf_keras (Keras 2, for the TF-MOT bridge), which has no public way to
walk a model's graph either:

- `KerasTensor._keras_history` (`layer, node_index, tensor_index`) and
  `Layer._inbound_nodes`: the layer and the call (Node, with `call_args`,
  `call_kwargs`, `outputs`) that computed a symbolic tensor; see
  `keras2_producer`.
"""

import inspect
import numbers

import keras

__all__ = [
    "GraphError",
    "application_layer_types",
    "assign",
    "call_arguments",
    "functional_of",
    "in_xla_context",
    "inner_output",
    "inputs_structure",
    "is_graph_model",
    "keras2_producer",
    "node_inputs",
    "node_inputs_by_signature",
    "nodes",
    "producer",
    "producing_node",
    "raw_op_types",
    "run_graph",
    "stored_value",
    "sublayers",
]


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


def children(layer):
    """The layers directly inside `layer` (not theirs), each once."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


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


def stored_value(variable):
    """The value of `variable` in the dtype it is stored in.

    Inside a layer under a mixed policy, `variable.value` is the 16-bit
    cast; this is the stored float32 value (what targeting ranks).
    """
    from keras.src.backend.common.variables import AutocastScope

    with AutocastScope(None):
        return variable.value


def in_xla_context():
    """Whether TensorFlow is tracing a graph that XLA compiles.

    False when executing eagerly, in a plain `tf.function` graph, and on the
    other backends. Should TensorFlow move the private function this reads,
    every graph answers True, the answer that is safe under XLA.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    if tf.executing_eagerly():
        return False
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - tests/test_keras_adapter.py
        return True
    graph = tf.compat.v1.get_default_graph()
    return bool(control_flow_util.GraphOrParentsInXlaContext(graph))


def assign(variable, value):
    """`variable.assign(value)`, cheaper for a Python number on TensorFlow.

    There, one `AssignVariableOp` on the variable's handle costs about a
    sixth of the host time of `Variable.assign` (which converts the value,
    checks the shape and goes through Keras' and TensorFlow's Python
    layers): what a callback changing a few scalars before every batch
    pays. Tensors, distributed variables, stateless scopes and the other
    backends take `Variable.assign`.
    """
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    if (
        keras.backend.backend() == "tensorflow"
        and isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and not in_stateless_scope()
    ):
        import tensorflow as tf

        # In an autocast scope `.value` is a tensor, not the variable.
        handle = variable.value
        if isinstance(handle, tf.Variable) and not isinstance(
            handle, tf.distribute.DistributedValues
        ):
            dtype = variable.dtype
            value = (
                float(value)
                if dtype == "float32"
                else tf.constant(value, dtype)
            )
            tf.raw_ops.AssignVariableOp(resource=handle.handle, value=value)
            return
    variable.assign(value)


def keras2_producer(tensor):
    """For a tf_keras (Keras 2) symbolic tensor, `(layer, node)`: the layer
    that computed it and the call of it that did (a Keras 2 Node, with
    `call_args`, `call_kwargs` and `outputs`; None if the layer lacks it).
    None for anything else (a Python value, a Keras 3 tensor has no
    triple)."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    layer, node_index, _ = history
    inbound = getattr(layer, "_inbound_nodes", [])
    node = inbound[node_index] if 0 <= node_index < len(inbound) else None
    return layer, node
