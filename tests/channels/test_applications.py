"""Group unit masks -> shrink on every keras.applications family, a
Transformer encoder with raw-op residuals, and a KerasHub backbone."""

import keras
import pytest

from tests.channels.helpers import check_group_shrink
from tests.channels.helpers import perturb_norms
from tests.channels.helpers import randomize

A = keras.applications
FRACTIONS = (0.25, 0.5, 0.75)


def small(fn, size=32, **kwargs):
    def build():
        kwargs.setdefault("classes", 10)
        model = fn(
            input_shape=(size, size, 3),
            weights=None,
            classifier_activation=None,
            **kwargs,
        )
        return perturb_norms(model)

    return build


# MobileNetV2 runs by default (about 25 s); every other family of
# keras.applications runs with `-m slow` (15-60 s each).
FAST = {"MobileNetV2": small(A.MobileNetV2, alpha=0.35)}
SLOW = {
    "MobileNetV3Small": small(A.MobileNetV3Small, alpha=0.75),
    "EfficientNetB0": small(A.EfficientNetB0),
    "ResNet50V2": small(A.ResNet50V2),
    "ConvNeXtTiny": small(A.ConvNeXtTiny),
    "DenseNet121": small(A.DenseNet121),
    "EfficientNetV2B0": small(A.EfficientNetV2B0),
    "InceptionResNetV2": small(A.InceptionResNetV2, size=75),
    "InceptionV3": small(A.InceptionV3, size=75),
    "MobileNet": small(A.MobileNet, alpha=0.5),
    "MobileNetV3Large": small(A.MobileNetV3Large, alpha=0.75),
    "NASNetMobile": small(A.NASNetMobile),
    "ResNet50": small(A.ResNet50),
    "VGG16": small(A.VGG16),
    "Xception": small(A.Xception, size=71),
}


@pytest.mark.parametrize("name", sorted(FAST))
def test_fast_families_shrink_exactly(name, tmp_path):
    model = FAST[name]()
    for fraction in FRACTIONS:
        export = tmp_path if fraction == 0.5 else None
        _, report, _ = check_group_shrink(model, fraction, export)
        assert report.removed == report.zeroed


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW))
def test_every_family_shrinks_exactly(name, tmp_path):
    model = SLOW[name]()
    for fraction in FRACTIONS:
        export = tmp_path if fraction == 0.5 else None
        check_group_shrink(model, fraction, export)


def transformer_encoder(blocks=2, width=16, heads=4, length=6):
    L = keras.layers
    inputs = keras.Input((length, 8), name="tokens")
    x = L.Dense(width, name="embed")(inputs)
    for b in range(blocks):
        h = L.LayerNormalization(name=f"ln{b}a")(x)
        h = L.MultiHeadAttention(heads, 4, name=f"mha{b}")(h, h)
        x = x + h
        h = L.LayerNormalization(name=f"ln{b}b")(x)
        h = L.Dense(2 * width, activation="gelu", name=f"ff{b}a")(h)
        h = L.Dense(width, name=f"ff{b}b")(h)
        x = keras.ops.add(x, h)
    x = keras.ops.mean(x, axis=1)
    outputs = L.Dense(3, name="logits")(x)
    return randomize(keras.Model(inputs, outputs))


def test_transformer_encoder_heads_and_hidden_units(tmp_path):
    model = transformer_encoder()
    for fraction in FRACTIONS:
        export = tmp_path if fraction == 0.5 else None
        small_model, report, _ = check_group_shrink(model, fraction, export)
        heads = max(1, 4 - int(fraction * 4))
        hidden = 32 - int(fraction * 32)
        for b in range(2):
            assert small_model.get_layer(f"mha{b}").num_heads == heads
            assert small_model.get_layer(f"ff{b}a").units == hidden
            assert small_model.get_layer(f"ff{b}b").kernel.shape == (
                hidden,
                16,
            )
        # The residual stream feeds LayerNormalization: kept, with reason.
        assert small_model.get_layer("embed").units == 16
        assert report.removed == report.zeroed


def test_kerashub_backbone(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[2, 2],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(32, 32, 3),
    )
    perturb_norms(backbone)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    for fraction in FRACTIONS:
        export = tmp_path if fraction == 0.5 else None
        _, report, _ = check_group_shrink(model, fraction, export)
        assert report.removed == report.zeroed > 0
