"""A small MobileNetV2-style network for CIFAR-10."""

import keras

from keras_tdrop.experiments.models._checks import check_positive

__all__ = ["mobile_cnn"]


def mobile_cnn(
    input_shape=(32, 32, 3),
    num_classes=10,
    blocks=((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 2)),
    stem_filters=16,
    head_filters=256,
    squeeze_excite=True,
    bn_momentum=0.9,
    name="mobile_cnn",
):
    """A small MobileNetV2-style network for CIFAR-10, returning logits.

    `stem` (conv 3x3, BN, ReLU6) -> inverted residual blocks -> `head`
    (conv 1x1, BN, ReLU6) -> global average pool -> `logits`. A block is
    `b{i}_expand` (conv 1x1, BN, ReLU6; absent for expansion 1) ->
    `b{i}_depthwise` (3x3, BN, ReLU6) -> `b{i}_project` (conv 1x1, BN, no
    activation), plus the input (`b{i}_add`) where the shape allows. With
    `squeeze_excite`, the last block gates its depthwise output with a
    squeeze-excite (`b{i}_se_reduce`, `b{i}_se_expand`), as EfficientNet
    does. Convolutions have no bias (BatchNormalization follows). With the
    defaults it has 133,898 parameters.

    Args:
        input_shape: tuple, the shape of one image.
        num_classes: int, units of the `logits` layer.
        blocks: tuples `(expansion, filters, stride, repeats)`; only the
            first block of each tuple has the stride.
        stem_filters: int, filters of `stem`.
        head_filters: int, filters of `head`.
        squeeze_excite: bool, a squeeze-excite in the last block.
        bn_momentum: float, of every BatchNormalization. 0.9 lets the
            moving statistics follow a run of a few epochs (with Keras'
            0.99, 2 epochs on 4,000 CIFAR-10 images evaluated at 10%
            accuracy against 37% with 0.9).
        name: the model's name.

    Example:
    >>> model = mobile_cnn()
    >>> model.get_layer("b2_depthwise").kernel.shape  # (3, 3, 64, 1)
    """
    check_positive("num_classes", num_classes)

    def bn_act(x, prefix, activation=True):
        x = keras.layers.BatchNormalization(
            momentum=bn_momentum, name=f"{prefix}_bn"
        )(x)
        if activation:
            x = keras.layers.ReLU(6.0, name=f"{prefix}_relu")(x)
        return x

    def conv(x, filters, size, prefix, stride=1):
        return keras.layers.Conv2D(
            filters,
            size,
            strides=stride,
            padding="same",
            use_bias=False,
            name=prefix,
        )(x)

    inputs = keras.Input(shape=input_shape, name="image")
    x = bn_act(conv(inputs, stem_filters, 3, "stem"), "stem")
    count = sum(repeats for *_, repeats in blocks)
    index = 0
    for expansion, filters, stride, repeats in blocks:
        for repeat in range(repeats):
            index += 1
            prefix = f"b{index}"
            channels = x.shape[-1] * expansion
            y = x
            if expansion != 1:
                y = conv(y, channels, 1, f"{prefix}_expand")
                y = bn_act(y, f"{prefix}_expand")
            y = keras.layers.DepthwiseConv2D(
                3,
                strides=stride if repeat == 0 else 1,
                padding="same",
                use_bias=False,
                name=f"{prefix}_depthwise",
            )(y)
            y = bn_act(y, f"{prefix}_depthwise")
            if squeeze_excite and index == count:
                y = _squeeze_excite(y, max(1, channels // 4), prefix)
            y = bn_act(
                conv(y, filters, 1, f"{prefix}_project"),
                f"{prefix}_project",
                activation=False,
            )
            if repeat > 0 and x.shape[-1] == filters:
                y = keras.layers.Add(name=f"{prefix}_add")([x, y])
            x = y
    x = bn_act(conv(x, head_filters, 1, "head"), "head")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _squeeze_excite(x, filters, prefix):
    s = keras.layers.GlobalAveragePooling2D(
        keepdims=True, name=f"{prefix}_se_squeeze"
    )(x)
    s = keras.layers.Conv2D(
        filters, 1, activation="relu", name=f"{prefix}_se_reduce"
    )(s)
    s = keras.layers.Conv2D(
        x.shape[-1], 1, activation="sigmoid", name=f"{prefix}_se_expand"
    )(s)
    return keras.layers.Multiply(name=f"{prefix}_se_excite")([x, s])
