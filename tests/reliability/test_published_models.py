"""Models written the way keras.io examples write them, through the whole
path: apply_targeted_dropout (weight, unit, groups) -> fit 3 steps ->
strip -> group masks -> shrink -> flops -> to_tflite.

Each layer below is the example's own code at a tiny size: CCT's
`CCTTokenizer` (sublayers made in `__init__`, no `build`, no
`get_config`), ViT's `Patches` and `PatchEncoder` (no `**kwargs`),
the text classification `TransformerBlock` (no `**kwargs`, no
`get_config`), ViT's augmentation `Sequential` inside the model, and a
U-Net with Conv2DTranspose, UpSampling2D and Concatenate skips. At every
step the package works (shrunk == masked, a group really removed, MACs
counted through the custom layers, a LiteRT-checked file) or raises one
ValueError naming the layer and the fix.
"""

import keras
import numpy as np
import pytest
from keras import layers
from keras import ops

from keras_tdrop import apply_targeted_dropout
from keras_tdrop import strip_targeted_dropout
from keras_tdrop.channels import channel_graph
from keras_tdrop.export import to_tflite
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import flops
from keras_tdrop.pruning import shrink
from tests.tolerance import assert_close


class CCTTokenizer(layers.Layer):
    """keras.io/examples/vision/cct, at 2 x 8 filters."""

    def __init__(
        self,
        kernel_size=3,
        stride=1,
        padding=1,
        pooling_kernel_size=3,
        pooling_stride=2,
        num_conv_layers=2,
        num_output_channels=(8, 8),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.conv_model = keras.Sequential()
        for i in range(num_conv_layers):
            self.conv_model.add(
                layers.Conv2D(
                    num_output_channels[i],
                    kernel_size,
                    stride,
                    padding="valid",
                    use_bias=False,
                    activation="relu",
                    kernel_initializer="he_normal",
                )
            )
            self.conv_model.add(layers.ZeroPadding2D(padding))
            self.conv_model.add(
                layers.MaxPooling2D(pooling_kernel_size, pooling_stride, "same")
            )

    def call(self, images):
        outputs = self.conv_model(images)
        return ops.reshape(
            outputs,
            (
                -1,
                ops.shape(outputs)[1] * ops.shape(outputs)[2],
                ops.shape(outputs)[-1],
            ),
        )


class Patches(layers.Layer):
    """keras.io/examples/vision/image_classification_with_vision_transformer."""

    def __init__(self, patch_size):
        super().__init__()
        self.patch_size = patch_size

    def call(self, images):
        input_shape = ops.shape(images)
        batch_size = input_shape[0]
        num_patches_h = input_shape[1] // self.patch_size
        num_patches_w = input_shape[2] // self.patch_size
        patches = ops.image.extract_patches(images, size=self.patch_size)
        return ops.reshape(
            patches,
            (
                batch_size,
                num_patches_h * num_patches_w,
                self.patch_size * self.patch_size * input_shape[3],
            ),
        )

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size})
        return config


class PatchEncoder(layers.Layer):
    """The same example's encoder: weights, no `**kwargs`, and a config
    without `projection_dim`."""

    def __init__(self, num_patches, projection_dim):
        super().__init__()
        self.num_patches = num_patches
        self.projection = layers.Dense(units=projection_dim)
        self.position_embedding = layers.Embedding(
            input_dim=num_patches, output_dim=projection_dim
        )

    def call(self, patch):
        positions = ops.expand_dims(
            ops.arange(start=0, stop=self.num_patches, step=1), axis=0
        )
        return self.projection(patch) + self.position_embedding(positions)

    def get_config(self):
        config = super().get_config()
        config.update({"num_patches": self.num_patches})
        return config


class TransformerBlock(layers.Layer):
    """keras.io/examples/nlp/text_classification_with_transformer, with
    the one thing Keras asks for that the example leaves out: `**kwargs`."""

    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, **kwargs):
        super().__init__(**kwargs)
        self.att = layers.MultiHeadAttention(
            num_heads=num_heads, key_dim=embed_dim
        )
        self.ffn = keras.Sequential(
            [layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)]
        )
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs):
        attn_output = self.att(inputs, inputs)
        attn_output = self.dropout1(attn_output)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.ffn(out1)
        ffn_output = self.dropout2(ffn_output)
        return self.layernorm2(out1 + ffn_output)


class ExampleTransformerBlock(TransformerBlock):
    """The block exactly as the example writes it: no `**kwargs`, no
    `get_config`."""

    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):
        super().__init__(embed_dim, num_heads, ff_dim, rate)


def cct():
    inputs = keras.Input((16, 16, 3))
    x = CCTTokenizer(name="tokenizer")(inputs)
    x = layers.Dense(12, activation="relu", name="mlp")(x)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(3, name="logits")(x))


def vit(block=None, encoder=False):
    inputs = keras.Input((16, 16, 3))
    x = Patches(4)(inputs)  # 16 patches of 48
    if encoder:
        x = PatchEncoder(16, 8)(x)
    else:
        x = layers.Dense(8, name="proj")(x)
    if block is not None:
        x = block(x)
    else:
        x = layers.Dense(12, activation="gelu", name="mlp")(x)
    x = layers.GlobalAveragePooling1D()(x)
    if block is not None:
        x = layers.Dense(12, activation="relu", name="fc")(x)
    return keras.Model(inputs, layers.Dense(3, name="logits")(x))


def augmented_cnn():
    augmentation = keras.Sequential(
        [
            layers.RandomFlip("horizontal"),
            layers.RandomRotation(factor=0.02),
            layers.RandomZoom(height_factor=0.2, width_factor=0.2),
        ],
        name="data_augmentation",
    )
    inputs = keras.Input((16, 16, 3))
    x = layers.Rescaling(1.0 / 255)(augmentation(inputs))
    x = layers.Conv2D(8, 3, activation="relu", name="stem")(x)
    x = layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(3, name="logits")(x))


def unet(shape=(16, 16, 3)):
    inputs = keras.Input(shape)
    c1 = layers.Conv2D(8, 3, padding="same", activation="relu", name="down1")(
        inputs
    )
    c2 = layers.Conv2D(16, 3, padding="same", activation="relu", name="down2")(
        layers.MaxPooling2D()(c1)
    )
    u1 = layers.Conv2DTranspose(8, 2, strides=2, padding="same", name="up_t")(
        c2
    )
    c3 = layers.Conv2D(8, 3, padding="same", activation="relu", name="up1")(
        layers.Concatenate()([u1, c1])
    )
    c4 = layers.Conv2D(8, 3, padding="same", activation="relu", name="up2")(
        layers.UpSampling2D()(c2)
    )
    x = layers.Concatenate()([c3, c4])
    return keras.Model(inputs, layers.Conv2D(2, 1, name="logits")(x))


# name: (builder, MACs per example by hand, groups that must lose
# channels, the custom layer the channel graph keeps whole with a reason)
CASES = {
    "cct_tokenizer": (
        cct,
        14 * 14 * 8 * 27 + 6 * 6 * 8 * 72 + 16 * 8 * 12 + 12 * 3,
        {"mlp"},
        "tokenizer",
    ),
    "vit_patches": (
        vit,
        16 * 48 * 8 + 16 * 8 * 12 + 12 * 3,
        {"proj", "mlp"},
        None,
    ),
    "vit_transformer_block": (
        lambda: vit(TransformerBlock(8, 2, 16, name="block")),
        # proj; q, k, v; scores and values of 2 heads; output; MLP; fc; logits
        16 * 48 * 8
        + 3 * 16 * 8 * 16
        + 2 * (2 * 16 * 16 * 8)
        + 16 * 16 * 8
        + 2 * 16 * 8 * 16
        + 8 * 12
        + 12 * 3,
        {"fc"},
        "block",
    ),
    "augmentation": (
        augmented_cnn,
        14 * 14 * 8 * 27 + 12 * 12 * 8 * 72 + 8 * 3,
        {"conv"},
        None,
    ),
    "unet": (
        unet,
        16 * 16 * 8 * 27  # down1
        + 8 * 8 * 16 * 72  # down2
        + 8 * 8 * 16 * 4 * 8  # up_t
        + 2 * 16 * 16 * 8 * 144  # up1, up2
        + 16 * 16 * 2 * 16,  # logits
        {"down2", "up_t", "up1", "up2"},
        None,
    ),
}
TARGETING = {
    "weight": {"targeting": "weight"},
    "unit": {"targeting": "unit"},
    "groups": {"targeting": "unit", "groups": True},
}


def data(model, rows=6):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, *model.inputs[0].shape[1:])).astype("float32")
    y = np.zeros((rows, *model.outputs[0].shape[1:]), "float32")
    return x, y


def weights_of(model):
    return [(w.path, ops.convert_to_numpy(w).copy()) for w in model.weights]


def assert_unchanged(model, before):
    after = weights_of(model)
    assert [p for p, _ in after] == [p for p, _ in before]
    for (_, old), (_, new) in zip(before, after):
        np.testing.assert_array_equal(old, new)


def train(model, options):
    """apply -> fit 3 steps -> strip; the caller's model untouched."""
    x, y = data(model)
    before = weights_of(model)
    td = apply_targeted_dropout(model, rate=0.5, seed=0, **options)
    td.compile(optimizer="sgd", loss="mse")
    history = td.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert int(td.optimizer.iterations) == 3
    assert np.isfinite(history.history["loss"][0])
    assert_unchanged(model, before)
    return td.model if options.get("groups") else strip_targeted_dropout(td)


@pytest.mark.parametrize("targeting", sorted(TARGETING))
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_whole_path(case, targeting, tmp_path):
    build, macs, pruned, kept_whole = CASES[case]
    keras.utils.set_random_seed(0)
    model = build()
    assert flops(model) == macs
    plain = train(model, TARGETING[targeting])
    x, _ = data(plain)
    masks = compute_masks(plain, 0.5, targeting="unit", groups=True)
    assert {p.split("/")[0] for p in masks} >= pruned
    before = weights_of(plain)
    small, report = shrink(plain, masks)
    assert_unchanged(plain, before)
    assert {row["group"] for row in report if row["removed"]} == pruned
    assert report.removed_fraction == 1.0
    masked = apply_masks(plain, masks)
    assert_close(
        ops.convert_to_numpy(small(x, training=False)),
        ops.convert_to_numpy(masked(x, training=False)),
        atol=1e-5,
    )
    assert flops(plain) == macs and 0 < flops(small) < macs
    if kept_whole is not None:
        reasons = {
            w
            for ws in channel_graph(plain).blocked_reasons().values()
            for w in ws
        }
        assert any(
            r.startswith(f"'{kept_whole}'") and "register_channel_rule" in r
            for r in reasons
        ), reasons
    result = to_tflite(small, tmp_path / "small.tflite", sample=x)
    assert result.verified and result.max_abs_diff <= result.tolerance


@pytest.mark.parametrize("targeting", sorted(TARGETING))
@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: vit(encoder=True), "PatchEncoder"),
        (
            lambda: vit(ExampleTransformerBlock(8, 2, 16)),
            "ExampleTransformerBlock",
        ),
    ],
    ids=["patch_encoder", "transformer_block"],
)
def test_a_weighted_layer_without_kwargs_is_named_with_the_fix(
    build, name, targeting
):
    keras.utils.set_random_seed(0)
    model = build()
    with pytest.raises(
        ValueError,
        match=rf"(?s)Layer '\w+' \({name}\) holds weights.*"
        r"__init__\(self, \.\.\., \*\*kwargs\)",
    ):
        apply_targeted_dropout(model, **TARGETING[targeting])
    # What needs no copy still works on it: MACs (through the sublayers),
    # group masks, the LiteRT-checked export.
    assert flops(model) > 0
    assert compute_masks(model, 0.5, targeting="unit", groups=True)


def test_shrinking_a_layer_without_kwargs_is_named_with_the_fix():
    keras.utils.set_random_seed(0)
    model = vit(encoder=True)
    masks = compute_masks(model, 0.5, targeting="unit", groups=True)
    with pytest.raises(ValueError, match=r"(?s)'\w+' \(PatchEncoder\).*kwargs"):
        shrink(model, masks)


def test_no_prunable_group_warns_with_the_layer_instead_of_a_silent_empty():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = layers.Dense(8, name="proj")(Patches(4)(inputs))
    x = TransformerBlock(8, 2, 16, name="block")(x)
    x = layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, layers.Dense(3, name="logits")(x))
    with pytest.warns(
        UserWarning,
        match=r"(?s)no channel group of model .* can be pruned.*'block' "
        r"\(TransformerBlock\): the channel graph has no rule.*"
        r"register_channel_rule",
    ):
        assert compute_masks(model, 0.5, targeting="unit", groups=True) == {}


def test_unet_at_unknown_size_exports_at_a_fixed_size(tmp_path):
    keras.utils.set_random_seed(0)
    model = unet((None, None, 3))
    masks = compute_masks(model, 0.5, targeting="unit", groups=True)
    small, report = shrink(model, masks)
    assert report.removed_fraction == 1.0
    with pytest.raises(ValueError, match=r"(?s)input_shape=.*select_tf_ops"):
        to_tflite(small, tmp_path / "unet.tflite", sample=data(unet())[0])
    result = to_tflite(small, tmp_path / "unet.tflite", input_shape=(16, 16, 3))
    assert result.verified and result.max_abs_diff <= result.tolerance


def test_group_training_with_no_droppable_group_warns():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = layers.Dense(8, name="proj")(Patches(4)(inputs))
    x = TransformerBlock(8, 2, 16, name="block")(x)
    x = layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, layers.Dense(3, name="logits")(x))
    with pytest.warns(UserWarning, match=r"'block' \(TransformerBlock\)"):
        td = apply_targeted_dropout(model, targeting="unit", groups=True)
        td.compile(optimizer="sgd", loss="mse")
        td.fit(*data(model), batch_size=2, epochs=1, verbose=0)
