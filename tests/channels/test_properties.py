"""Property tests: random architectures built from the graph's rules
(residual, depthwise, separable, squeeze-excite, concatenation, grouped
convolution, MultiHeadAttention): shrink of group-masked equals masked,
channel counts are exact, FLOPs equal a hand count."""

import keras
import numpy as np
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import flops
from keras_tdrop.pruning import shrink
from tests.channels.helpers import outputs
from tests.channels.helpers import perturb_norms
from tests.tolerance import assert_close

L = keras.layers
BLOCKS = ("res", "dw", "sep", "se", "cat", "group", "mha")


def build(blocks, width, multiplier, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(width, 3, padding="same", name="stem")(inputs)
    for i, kind in enumerate(blocks):
        n = f"b{i}"
        if kind == "res":
            y = L.Conv2D(width, 3, padding="same", name=n + "_c1")(x)
            y = L.BatchNormalization(name=n + "_bn")(y)
            y = L.ReLU()(y)
            x = x + L.Conv2D(width, 1, name=n + "_c2")(y)
        elif kind == "dw":
            y = L.Conv2D(2 * width, 1, activation="relu", name=n + "_exp")(x)
            y = L.DepthwiseConv2D(
                3, padding="same", depth_multiplier=multiplier, name=n + "_dw"
            )(y)
            y = L.BatchNormalization(name=n + "_bn")(y)
            x = L.Add()([x, L.Conv2D(width, 1, name=n + "_proj")(y)])
        elif kind == "sep":
            x = L.SeparableConv2D(
                width,
                3,
                padding="same",
                depth_multiplier=multiplier,
                name=n + "_sep",
            )(x)
        elif kind == "se":
            g = L.GlobalAveragePooling2D(keepdims=True)(x)
            g = L.Conv2D(2, 1, activation="relu", name=n + "_red")(g)
            g = L.Conv2D(width, 1, activation="sigmoid", name=n + "_exc")(g)
            x = keras.ops.multiply(x, g)
        elif kind == "cat":
            y = L.Conv2D(width // 2, 1, name=n + "_side")(x)
            x = L.Concatenate()([x, y])
            x = L.Conv2D(width, 1, activation="relu", name=n + "_fuse")(x)
        elif kind == "group":
            x = L.Conv2D(width, 3, padding="same", groups=2, name=n + "_g")(x)
        else:
            t = L.Reshape((36, width))(x)
            t = t + L.MultiHeadAttention(2, 3, name=n + "_mha")(t, t)
            x = keras.ops.reshape(t, (-1, 6, 6, width))
    x = L.GlobalAveragePooling2D()(x)
    return perturb_norms(keras.Model(inputs, L.Dense(3, name="logits")(x)))


def hand_macs(model):
    """Multiply-accumulates per example, counted from each layer's shapes."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, L.InputLayer) or not layer.weights:
            continue
        out = layer.output.shape
        positions = int(np.prod(out[1:-1])) if len(out) > 2 else 1
        cin = (
            layer.input.shape[-1]
            if not isinstance(layer, L.MultiHeadAttention)
            else None
        )
        if isinstance(layer, L.DepthwiseConv2D):
            k = layer.kernel.shape
            total += positions * k[0] * k[1] * cin * layer.depth_multiplier
        elif isinstance(layer, L.SeparableConv2D):
            k = layer.depthwise_kernel.shape
            total += positions * k[0] * k[1] * cin * layer.depth_multiplier
            total += positions * cin * layer.depth_multiplier * out[-1]
        elif isinstance(layer, L.Conv2D):
            k = layer.kernel.shape
            total += positions * k[0] * k[1] * k[2] * out[-1]
        elif isinstance(layer, L.Dense):
            total += positions * cin * out[-1]
        elif isinstance(layer, L.MultiHeadAttention):
            tokens, c = out[1], out[-1]
            h, d = layer.num_heads, layer.key_dim
            total += tokens * c * h * d * 3  # query, key, value
            total += tokens * tokens * h * d * 2  # scores, weighted values
            total += tokens * h * d * c  # output projection
    return total


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=4),
    width=st.sampled_from([4, 6, 8]),
    multiplier=st.sampled_from([1, 2]),
    fraction=st.sampled_from([0.25, 0.5, 0.75]),
    scope=st.sampled_from(["local", "global"]),
    seed=st.integers(0, 100),
)
def test_shrink_of_group_masks_equals_masked(
    blocks, width, multiplier, fraction, scope, seed
):
    model = build(blocks, width, multiplier, seed)
    masks = compute_masks(
        model, fraction, targeting="unit", groups=True, scope=scope
    )
    small, report = shrink(model, masks)
    assert report.removed == report.zeroed
    x = np.random.default_rng(seed).normal(size=(2, 6, 6, 3))
    x = x.astype("float32")
    for a, b in zip(outputs(apply_masks(model, masks), x), outputs(small, x)):
        assert_close(b, a, rtol=1e-4, atol=1e-5)
    # Channel counts: each producer keeps its non-zero kernel columns.
    for layer in small.layers:
        if isinstance(layer, (L.Conv2D, L.Dense)) and not isinstance(
            layer, (L.DepthwiseConv2D, L.SeparableConv2D)
        ):
            kernel = masks.get(f"{layer.name}/kernel")
            old = model.get_layer(layer.name).kernel.shape[-1]
            live = (
                old
                if kernel is None
                else int(kernel.reshape(-1, old).any(axis=0).sum())
            )
            assert layer.kernel.shape[-1] == live, layer.name
        if isinstance(layer, L.MultiHeadAttention):
            kernel = masks.get(f"{layer.name}/attention_output/kernel")
            heads = (
                2
                if kernel is None
                else int(kernel.reshape(2, -1).any(axis=1).sum())
            )
            assert layer.num_heads == heads
    assert flops(small) == hand_macs(small)
    assert flops(model) == hand_macs(model)
    if fraction > 0 and report.removed:
        assert flops(small) < flops(model)
