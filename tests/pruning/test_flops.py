import importlib

import keras
import numpy as np
import pytest

from keras_tdrop import apply_targeted_dropout
from keras_tdrop.pruning import flops
from keras_tdrop.pruning import register_flops_rule
from tests.tolerance import approx

flops_lib = importlib.import_module("keras_tdrop.pruning.flops")
L = keras.layers


def small_cnn():
    inputs = keras.Input((8, 8, 4))
    x = L.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = L.BatchNormalization()(x)
    x = L.Conv2D(6, 1, groups=2, name="grouped")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(x)
    x = L.ReLU()(x)
    x = L.SeparableConv2D(5, 3, name="separable")(x)
    x = L.Conv2DTranspose(3, 2, strides=2, name="transpose")(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(10, name="fc")(x)
    return keras.Model(inputs, outputs)


# Hand counts: output positions x kernel size x inputs per group x filters.
CNN_MACS = {
    "conv": 8 * 8 * 3 * 3 * 4 * 8,  # 18432
    "grouped": 8 * 8 * 1 * (8 // 2) * 6,  # 1536
    "depthwise": 6 * 6 * 3 * 3 * (6 * 2),  # 3888, 6x6x12 out
    "separable": 4 * 4 * (12 * 3 * 3 + 12 * 5),  # 2688, 4x4x5 out
    "transpose": 4 * 4 * 2 * 2 * 5 * 3,  # 960: per input position
    "fc": 3 * 10,
}


def test_small_cnn_exact():
    model = small_cnn()
    assert flops(model) == sum(CNN_MACS.values()) == 27534
    rows = flops(model, per_layer=True)
    counted = {r["layer"]: r["macs"] for r in rows if r["macs"]}
    assert counted == CNN_MACS | {"total": 27534}
    assert rows[-1] == {
        "layer": "total",
        "type": "",
        "calls": None,
        "macs": 27534,
    }
    assert len(rows) == len(model.layers)  # InputLayer out, total in
    assert flops(keras.Sequential(model.layers)) == 27534


@pytest.mark.parametrize(
    "layer, shape, expected",
    [
        (L.Conv1D(4, 3, padding="causal"), (10, 2), 10 * 3 * 2 * 4),
        (L.Conv1D(4, 3, groups=2), (10, 2), 8 * 3 * 1 * 4),
        (L.Conv3D(2, (1, 2, 3)), (3, 4, 5, 2), 27 * 6 * 2 * 2),
        (
            L.Conv2D(4, 3, data_format="channels_first"),
            (2, 6, 6),
            4 * 4 * 9 * 2 * 4,
        ),
        (L.Conv1DTranspose(3, 2, strides=2), (5, 4), 5 * 2 * 4 * 3),
        (L.Conv3DTranspose(2, 2), (2, 2, 2, 3), 8 * 8 * 3 * 2),
        (L.DepthwiseConv1D(3, depth_multiplier=3), (10, 2), 8 * 3 * 6),
        (L.SeparableConv1D(4, 3), (10, 2), 8 * (2 * 3 + 2 * 4)),
        (L.Dense(4), (3, 5), 3 * 5 * 4),
        (L.TimeDistributed(L.Dense(4)), (3, 5), 3 * 5 * 4),
        (L.EinsumDense("abc,cde->abde", (5, 3, 4)), (5, 6), 5 * 6 * 3 * 4),
        (L.EinsumDense("...b,bc->...c", 7), (5, 6), 5 * 6 * 7),
        (L.EinsumDense("ab,bc->ac", 7), (6,), 6 * 7),
        (L.EinsumDense("abc,bd->adc", (4, 6)), (5, 6), 5 * 6 * 4),
        (L.SimpleRNN(4), (7, 3), 7 * (3 * 4 + 4 * 4)),
        (L.GRU(4, return_sequences=True), (7, 3), 3 * 7 * (3 * 4 + 4 * 4)),
        (L.LSTM(4), (7, 3), 4 * 7 * (3 * 4 + 4 * 4)),
        (L.Bidirectional(L.LSTM(4)), (7, 3), 2 * 4 * 7 * (12 + 16)),
        (L.Embedding(50, 16), (7,), 0),
        (L.LayerNormalization(), (7, 3), 0),
    ],
)
def test_layer_rules(layer, shape, expected):
    inputs = keras.Input(shape)
    model = keras.Model(inputs, layer(inputs))
    assert flops(model) == expected


def test_attention_with_raw_op_residual():
    inputs = keras.Input((6, 8))
    h = L.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(inputs, inputs)
    x = inputs + h  # a raw keras.ops node: 0 MACs
    outputs = L.Dense(3, name="fc")(x)
    model = keras.Model(inputs, outputs)
    projections = 4 * (6 * 8 * 2 * 4)  # q, k, v (8 -> 2x4), out (2x4 -> 8)
    attention = 6 * 6 * 2 * 4 + 6 * 6 * 2 * 4  # QK^T and scores x V
    assert flops(model) == projections + attention + 6 * 8 * 3 == 2256
    rows = flops(model, per_layer=True)
    assert [r["type"] for r in rows if r["macs"] == 0] == ["Add"]


def test_cross_attention_by_keyword():
    query = keras.Input((6, 8))
    value = keras.Input((10, 5))
    key = keras.Input((10, 7))
    mha = L.MultiHeadAttention(num_heads=2, key_dim=4, value_dim=3)
    # Keyword order differs from the signature's (query, value, key).
    outputs = mha(key=key, query=query, value=value)
    model = keras.Model([query, value, key], outputs)
    expected = (
        6 * 8 * 8  # query 8 -> 2x4
        + 10 * 7 * 8  # key 7 -> 2x4
        + 10 * 5 * 6  # value 5 -> 2x3
        + 6 * 10 * 2 * 4  # QK^T
        + 6 * 10 * 2 * 3  # scores x V
        + 6 * 6 * 8  # output 2x3 -> 8
    )
    assert flops(model) == expected == 2372


def test_shared_layer_counts_every_call():
    a = keras.Input((3,))
    b = keras.Input((2, 3))
    shared = L.Dense(4, name="shared")
    model = keras.Model([a, b], [shared(a), shared(b)])
    assert flops(model) == 3 * 4 + 2 * 3 * 4
    row = flops(model, per_layer=True)[0]
    assert row == {"layer": "shared", "type": "Dense", "calls": 2, "macs": 36}


def test_nested_models():
    inner = keras.Sequential(
        [keras.Input((4,)), L.Dense(5), L.Dense(2)], name="inner"
    )
    inputs = keras.Input((6,))
    x = L.Dense(4)(inputs)
    y = L.Dense(4)(inputs)
    mid = keras.Model(inputs, L.Concatenate()([inner(x), inner(y)]))
    outer_in = keras.Input((6,))
    model = keras.Model(outer_in, L.Dense(1)(mid(outer_in)))
    # 2 x (6x4) stems, inner (4x5 + 5x2) twice, 4x1 head.
    assert flops(model) == 48 + 2 * 30 + 4 == 112
    rows = flops(model, per_layer=True)
    assert [r["calls"] for r in rows if r["type"] == "Dense"] == [
        1,
        1,
        2,
        2,
        1,
    ]


def test_wrapped_model_costs_what_it_wraps():
    model = small_cnn()
    wrapped = apply_targeted_dropout(model, exclude_logits=False)
    assert flops(wrapped) == flops(model)


def test_zero_weights_still_count():
    model = keras.Sequential([keras.Input((5,)), L.Dense(3)])
    model.layers[0].kernel.assign(np.zeros((5, 3)))
    assert flops(model) == 15


def test_mobilenet_v2_matches_published():
    model = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=1.0, weights=None
    )
    # Sandler et al. 2018, Table 3: 300M multiply-adds.
    assert flops(model) == 300_774_272
    assert flops(model) == approx(300e6, rel=0.02)


@pytest.mark.slow
def test_resnet50_matches_published():
    model = keras.applications.ResNet50(input_shape=(224, 224, 3), weights=None)
    # He et al. 2016, Table 1: 3.8 x 10^9 multiply-adds.
    assert flops(model) == 3_857_973_248
    assert flops(model) == approx(3.8e9, rel=0.02)


class Gated(L.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 4))

    def call(self, inputs):
        return keras.ops.matmul(inputs, self.w)


def test_custom_rules_and_unknown_layers(monkeypatch):
    monkeypatch.setattr(flops_lib, "_RULES", dict(flops_lib._RULES))
    inputs = keras.Input((3, 5))
    model = keras.Model(inputs, Gated(name="gated")(inputs))
    with pytest.warns(UserWarning, match=r"'gated' of type Gated"):
        assert flops(model) == 0
    register_flops_rule(Gated, lambda layer, i, o: i[0][1] * i[0][2] * o[0][2])
    assert flops(model) == 3 * 5 * 4

    class Doubled(L.Dense):
        pass

    model = keras.Sequential([keras.Input((5,)), Doubled(2)])
    assert flops(model) == 10  # Dense's rule, through the MRO
    register_flops_rule(Doubled, lambda layer, i, o: 2 * 10)
    assert flops(model) == 20


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.fc = L.Dense(2)

    def call(self, inputs):
        return self.fc(inputs)


def test_bad_input():
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model"):
        flops("model.keras")
    model = keras.Sequential([keras.Input((5,)), L.Dense(3)])
    with pytest.raises(TypeError, match=r"per_layer='yes'"):
        flops(model, per_layer="yes")
    subclassed = Subclassed()
    subclassed(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"is a subclassed model"):
        flops(subclassed)
    with pytest.raises(ValueError, match=r"unbuilt Sequential"):
        flops(keras.Sequential([L.Dense(3)]))
    inputs = keras.Input((None, 8))
    ragged = keras.Model(inputs, L.Dense(2, name="fc")(inputs))
    with pytest.raises(
        ValueError,
        match=r"known input shape.*Layer 'fc' \(Dense\).*\(None, None, 8\)",
    ):
        flops(ragged)
    with pytest.raises(TypeError, match=r"layer_class=<class 'int'>"):
        register_flops_rule(int, lambda *a: 0)
    with pytest.raises(TypeError, match=r"fn=3"):
        register_flops_rule(L.Dense, 3)


class _Block(keras.layers.Layer):
    """A Transformer block written as published code writes it: its
    sublayers made in `__init__`, no flops rule of its own."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = keras.layers.MultiHeadAttention(2, 4)
        self.up = keras.layers.Dense(16)
        self.down = keras.layers.Dense(8)
        self.conv = keras.layers.Conv1D(8, 3, padding="same")

    def call(self, x):
        x = x + self.attention(x, x)
        return self.conv(self.down(self.up(x)))


def test_a_custom_layer_counts_its_sublayers_as_the_same_graph_does():
    import warnings

    inputs = keras.Input((5, 8))
    custom = keras.Model(inputs, _Block()(inputs))
    x = keras.Input((5, 8))
    y = x + keras.layers.MultiHeadAttention(2, 4)(x, x)
    y = keras.layers.Dense(8)(keras.layers.Dense(16)(y))
    plain = keras.Model(x, keras.layers.Conv1D(8, 3, padding="same")(y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "counts 0 MACs" warning
        counted = flops(custom)
    # attention 2*5*8*4*3 + 2*5*5*4*2 + 5*2*4*8; dense 5*8*16 + 5*16*8;
    # conv 5*3*8*8.
    assert counted == flops(plain) == 960 + 400 + 320 + 640 + 640 + 960
