"""What every kernel wrapper shares (TargetedDropout, the kernel masks, the
baselines): checks, training flag, losses, names, apply and strip."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import TargetedDropout
from keras_tdrop import apply_targeted_dropout
from keras_tdrop import baselines
from keras_tdrop.layers.kernel_mask import FixedMask
from keras_tdrop.layers.kernel_mask import KernelDropout
from keras_tdrop.layers.kernel_wrapper import KernelWrapper
from keras_tdrop.layers.kernel_wrapper import kernel_wrappers
from keras_tdrop.wrapping import strip_wrappers
from tests.tolerance import approx
from tests.tolerance import assert_close

WRAPPERS = {
    "TargetedDropout": lambda layer: TargetedDropout(layer, 0.5, 0.5, seed=0),
    "FixedMask": lambda layer: FixedMask(layer, 0.5, seed=0),
    "KernelDropout": lambda layer: KernelDropout(layer, 0.5, seed=0),
    "L0Gate": lambda layer: baselines.L0Gate(layer, seed=0),
    "VariationalDropout": lambda layer: baselines.VariationalDropout(layer),
    "Smallify": lambda layer: baselines.Smallify(layer),
}


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_registered_name_and_checks(name):
    make = WRAPPERS[name]
    wrapper = make(keras.layers.Dense(3))
    assert isinstance(wrapper, KernelWrapper)
    # Saved .keras files name the class so: it must never change.
    assert keras.saving.get_registered_name(type(wrapper)) == (
        f"keras_tdrop>{name}"
    )
    with pytest.raises(TypeError, match=r"keras.layers.Layer.*layer=3"):
        make(3)
    built = keras.layers.Flatten()
    built.build((None, 2, 2))
    if type(wrapper).supported_types is None:
        with pytest.raises(ValueError, match=r"needs a layer with a kernel"):
            make(built)
    else:
        with pytest.raises(ValueError, match=r"works on Dense.*Flatten"):
            make(built)


class Scale(keras.layers.Layer):
    """A kernel layer whose call takes no `training` and adds a loss."""

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], 4), initializer="ones", name="kernel"
        )

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.kernel)
        self.add_loss(ops.sum(outputs))
        return outputs


@pytest.mark.parametrize("name", ["TargetedDropout", "FixedMask", "L0Gate"])
def test_layer_without_training_argument_keeps_its_losses(name):
    wrapper = WRAPPERS[name](Scale())
    x = np.ones((2, 3), "float32")
    for training in (True, False):
        outputs = wrapper(x, training=training)
        inner = [float(ops.convert_to_numpy(v)) for v in wrapper.losses]
        # The layer's own loss (on the values it ran on) is never dropped.
        assert float(ops.convert_to_numpy(ops.sum(outputs))) in [
            approx(v) for v in inner
        ]


def wrapped_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = TargetedDropout(
        keras.layers.Dense(8, name="fc1"), 0.5, 0.5, reference="t2t", seed=0
    )(inputs)
    x = FixedMask(keras.layers.Dense(8, name="fc2"), 0.5, seed=1)(x)
    x = baselines.L0Gate(keras.layers.Dense(8, name="fc3"), seed=2)(x)
    outputs = keras.layers.Dense(2, name="logits")(x)
    return keras.Model(inputs, outputs)


def test_apply_leaves_layers_already_wrapped():
    model = wrapped_model()
    kinds = [type(layer) for layer in kernel_wrappers(model)]
    td = apply_targeted_dropout(model, exclude_logits=True)
    assert [type(layer) for layer in kernel_wrappers(td)] == kinds
    l0 = baselines.apply_l0(model)
    assert [type(layer) for layer in kernel_wrappers(l0)] == kinds


def test_strip_wrappers_of_every_kind_computes_the_inference():
    model = wrapped_model()
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    expected = ops.convert_to_numpy(model(x, training=False))
    plain = strip_wrappers(model)
    assert not kernel_wrappers(plain)
    assert [layer.name for layer in plain.layers[1:]] == [
        "fc1",
        "fc2",
        "fc3",
        "logits",
    ]
    assert_close(ops.convert_to_numpy(plain(x)), expected, rtol=1e-5, atol=1e-6)
    # FixedMask's zeros are in the plain kernel.
    masked = model.layers[2]
    np.testing.assert_array_equal(
        ops.convert_to_numpy(plain.get_layer("fc2").kernel) == 0,
        ops.convert_to_numpy(masked.masks[0]) == 0,
    )
