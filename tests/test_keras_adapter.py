"""The package's one adapter to Keras and TensorFlow internals: each test
fails loudly when Keras or TensorFlow moves what it reads (the graph walk is
tested in tests/channels/test_graph.py)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import keras_adapter
from keras_tdrop.channels import adapter as channels_adapter

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


def test_channels_adapter_is_the_same_functions():
    for name in keras_adapter.__all__:
        assert getattr(channels_adapter, name) is getattr(keras_adapter, name)


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
    assert ops.convert_to_numpy(variable) == pytest.approx(float(value))
    assert keras.backend.standardize_dtype(variable.dtype) == dtype


def test_assign_inside_a_stateless_scope_stays_in_the_scope():
    variable = keras.Variable(0.0, trainable=False)
    with keras.StatelessScope() as scope:
        keras_adapter.assign(variable, 0.5)
    assert float(ops.convert_to_numpy(variable)) == 0.0
    assert float(ops.convert_to_numpy(scope.get_current_value(variable))) == 0.5
