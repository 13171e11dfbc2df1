"""Custom layers written the way published Keras code writes them:
sublayers made in `__init__` with no `build`, a weightless layer without
`get_config`/`**kwargs`; apply, fit, strip, group masks and shrink run
through, or fail naming the layer and what Keras needs."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import apply_targeted_dropout
from keras_tdrop import strip_targeted_dropout
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import shrink
from tests.tolerance import assert_close

L = keras.layers


class Tokenizer(L.Layer):
    """Two convolutions made in `__init__`, no `build` (keras.io's CCT)."""

    def __init__(self, filters=8, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.c1 = L.Conv2D(filters, 3, padding="same", activation="relu")
        self.c2 = L.Conv2D(filters, 3, padding="same", activation="relu")

    def call(self, x):
        return self.c2(self.c1(x))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


class Patches(L.Layer):
    """No `**kwargs`, no `get_config`, no weights (keras.io's ViT)."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def call(self, x):
        return ops.reshape(x, (ops.shape(x)[0], -1, x.shape[-1]))


class Scale(L.Layer):
    """A weight, but no `**kwargs`: cannot be re-created from a config."""

    def __init__(self, units):
        super().__init__()
        self.w = self.add_weight(shape=(units,), initializer="ones")

    def call(self, x):
        return x * self.w


def model(extra=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = Tokenizer(name="tokenizer")(inputs)
    x = Patches(2)(x)
    x = L.Dense(6, name="d")(x)
    if extra is not None:
        x = extra(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, L.Dense(3, name="logits")(x))


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 8, 8, 3)).astype("float32"), rng.normal(
        size=(8, 3)
    ).astype("float32")


def test_apply_fit_strip_masks_shrink_through_custom_layers():
    net = model()
    x, y = data()
    before = [ops.convert_to_numpy(w) for w in net.weights]
    td = apply_targeted_dropout(net, targeting="unit", rate=0.5)
    assert type(td.get_layer("td_tokenizer").layer) is Tokenizer
    # The copy built its sublayers: all 4 tokenizer weights, net's values.
    copied = td.get_layer("td_tokenizer").layer.weights
    assert len(copied) == 4
    np.testing.assert_array_equal(ops.convert_to_numpy(copied[0]), before[0])
    td.compile(optimizer="sgd", loss="mse")
    td.fit(x, y, batch_size=4, epochs=1, verbose=0)  # 2 steps
    for old, new in zip(before, net.weights):
        np.testing.assert_array_equal(old, ops.convert_to_numpy(new))
    plain = strip_targeted_dropout(td)
    masks = compute_masks(plain, 0.5, targeting="unit", groups=True)
    assert masks  # the Dense "d" group at least
    small, _ = shrink(plain, masks)
    assert small.count_params() < plain.count_params()
    masked = apply_masks(plain, masks)
    assert_close(
        ops.convert_to_numpy(small(x)),
        ops.convert_to_numpy(masked(x)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_a_weighted_layer_keras_cannot_recreate_is_named():
    net = model(Scale(6))
    with pytest.raises(
        ValueError, match=r"(?s)Layer 'scale' \(Scale\).*\*\*kwargs"
    ):
        apply_targeted_dropout(net, targeting="unit")
