"""The package's one adapter to Keras and TensorFlow internals: each test
fails loudly when Keras or TensorFlow moves what it reads (the graph walk is
tested in tests/channels/test_graph.py)."""

import ast
import pathlib

import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import keras_adapter
from tests.tolerance import approx

TF = keras.backend.backend() == "tensorflow"


def test_private_names_the_adapter_reads_exist():
    from keras.src.applications.convnext import LayerScale
    from keras.src.backend.common.stateless_scope import in_stateless_scope
    from keras.src.backend.common.variables import AutocastScope
    from keras.src.ops import numpy as knp

    assert callable(AutocastScope)
    assert in_stateless_scope() is False
    assert hasattr(keras.layers.Layer, "_flatten_layers")
    assert keras_adapter.application_layer_types() == [LayerScale]
    assert knp.Add in keras_adapter.raw_op_types("Add", "NoSuchOp")
    if TF:
        from tensorflow.python.ops import control_flow_util

        assert callable(control_flow_util.GraphOrParentsInXlaContext)


# The one module allowed to read Keras and TensorFlow internals, and the
# known exceptions (none left since the lead moved targeting.py's; issue 16).
ADAPTER = "keras_tdrop/keras_adapter.py"
KNOWN_EXCEPTIONS = set()
PRIVATE_MODULES = ("keras.src", "tensorflow.python")
# Underscored attributes of Keras (3 or 2) objects the adapter wraps.
PRIVATE_ATTRIBUTES = {
    "_keras_history",
    "_inbound_nodes",
    "_outbound_nodes",
    "_nodes_by_depth",
    "_run_through_graph",
    "_inputs_struct",
    "_outputs_struct",
    "_functional",
    "_operations",
    "_flatten_layers",
    "_trackable_children",
    "_tracker",
}
ROOT = pathlib.Path(keras_adapter.__file__).resolve().parent.parent


def _private_uses(path):
    """`(line, what)` for each private Keras/TensorFlow use in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Attribute):
            if node.attr in PRIVATE_ATTRIBUTES and not (
                isinstance(node.value, ast.Name) and node.value.id == "self"
            ):
                found.append((node.lineno, "." + node.attr))
            names = [ast.unparse(node)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in PRIVATE_ATTRIBUTES:
                found.append((node.lineno, repr(node.value)))
            names = [node.value]
        for name in names:
            if any(
                name == m or name.startswith(m + ".") for m in PRIVATE_MODULES
            ):
                found.append((node.lineno, name))
    return found


def test_only_the_adapter_reads_keras_and_tensorflow_internals():
    files = sorted((ROOT / "keras_tdrop").rglob("*.py"))
    assert len(files) > 20
    uses = {}
    for path in files:
        name = path.relative_to(ROOT).as_posix()
        if name != ADAPTER and name not in KNOWN_EXCEPTIONS:
            uses.update(
                {f"{name}:{line}": what for line, what in _private_uses(path)}
            )
    assert not uses, f"Move these into {ADAPTER}: {uses}"
    assert _private_uses(ROOT / ADAPTER)  # the scan sees what it looks for


def test_the_channel_graph_has_no_adapter_of_its_own():
    assert not (ROOT / "keras_tdrop" / "channels" / "adapter.py").exists()


def test_keras2_producer_walks_a_tf_keras_graph():
    tf_keras = pytest.importorskip("tf_keras")
    inputs = tf_keras.Input((3,))
    dense = tf_keras.layers.Dense(2)
    x = dense(inputs)
    y = dense(tf_keras.layers.Dense(3)(x))
    layer, node = keras_adapter.keras2_producer(y)
    assert layer is dense
    assert node is dense._inbound_nodes[1]
    assert keras_adapter.keras2_producer(node.call_args[0])[0] is not dense
    layer, node = keras_adapter.keras2_producer(inputs)
    assert isinstance(layer, tf_keras.layers.InputLayer)
    assert keras_adapter.keras2_producer(np.ones(3)) is None
    assert keras_adapter.keras2_producer(1.0) is None


def test_sublayers_lists_nested_layers_once():
    inner = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, name="a")], name="inner"
    )
    shared = keras.layers.Dense(2, name="b")
    inputs = keras.Input((3,))
    x = shared(inner(inputs))
    model = keras.Model(inputs, shared(x))
    names = [layer.name for layer in keras_adapter.sublayers(model)]
    assert {"inner", "a", "b"} <= set(names)
    assert "a" not in [layer.name for layer in model.layers]
    assert len(names) == len(set(names))


class _ReadsKernel(keras.layers.Layer):
    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(2, 2), initializer="ones")

    def call(self, inputs):
        self.seen = (
            keras.backend.standardize_dtype(self.kernel.value.dtype),
            keras.backend.standardize_dtype(
                keras_adapter.stored_value(self.kernel).dtype
            ),
        )
        return ops.matmul(inputs, self.kernel)


def test_stored_value_is_float32_inside_a_mixed_precision_layer():
    layer = _ReadsKernel(dtype="mixed_float16")
    layer(np.ones((1, 2), "float32"))
    assert layer.seen == ("float16", "float32")


@pytest.mark.skipif(not TF, reason="a TensorFlow graph")
def test_in_xla_context_only_in_a_jit_compiled_graph():
    import tensorflow as tf

    seen = []

    def probe(x):
        seen.append(keras_adapter.in_xla_context())
        return x

    probe(1.0)
    tf.function(probe)(tf.constant(1.0))
    tf.function(probe, jit_compile=True)(tf.constant(1.0))
    assert seen == [False, False, True]


@pytest.mark.skipif(TF, reason="the other backends")
def test_in_xla_context_is_false_off_tensorflow():
    assert keras_adapter.in_xla_context() is False


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "value", [0.25, 1, np.float64(0.5), np.float32(0.75), "tensor"]
)
def test_assign_takes_numbers_and_tensors(dtype, value):
    variable = keras.Variable(0.0, dtype=dtype, trainable=False)
    if value == "tensor":
        value = ops.convert_to_tensor(0.125, dtype=dtype)
    keras_adapter.assign(variable, value)
    assert ops.convert_to_numpy(variable) == approx(float(value))
    assert keras.backend.standardize_dtype(variable.dtype) == dtype


def test_assign_inside_a_stateless_scope_stays_in_the_scope():
    variable = keras.Variable(0.0, trainable=False)
    with keras.StatelessScope() as scope:
        keras_adapter.assign(variable, 0.5)
    assert float(ops.convert_to_numpy(variable)) == 0.0
    assert float(ops.convert_to_numpy(scope.get_current_value(variable))) == 0.5
