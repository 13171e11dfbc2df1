"""The pre-activation ResNet of the Targeted Dropout references."""

import keras

from keras_tdrop.experiments.models._checks import check_positive

__all__ = ["resnet"]


def _kernel_regularizer(weight_decay):
    """L2 on sum(w^2)/2 with coefficient `weight_decay`, as the references.

    Keras' `L2(l2)` adds `l2 * sum(w^2)`, hence `l2 = weight_decay / 2`. The
    penalty is part of the loss (so its gradient goes through momentum and
    the global-norm clip, as in the references), unlike the decoupled
    `weight_decay=` of Keras optimizers.
    """
    if not weight_decay:
        return None
    return keras.regularizers.L2(weight_decay / 2)


def resnet(
    depth=32,
    width=1.0,
    num_classes=10,
    input_shape=(32, 32, 3),
    weight_decay=0.0,
    name=None,
):
    """The pre-activation ResNet of the Targeted Dropout references.

    `stem` (7x7 conv, stride 1, 16 filters at width 1) -> three stages of
    `(depth - 2) / 6` pre-activation blocks with 32, 64 and 128 filters at
    width 1 (the first block of stages 2 and 3 has stride 2) -> `final_bn`
    -> relu -> global average pool -> `logits` (dense, linear). A block is
    BN-relu-conv3x3-BN-relu-conv3x3 plus the shortcut; where the shape
    changes the shortcut is a 1x1 projection (`..._shortcut`) of the
    pre-activated input. ResNet-32 at width 1 is the references' model
    (twice the width of He et al.'s); `resnet(8, 0.5)` is a small member
    that trains in minutes on a CPU.

    Layer names: `stem`, `s{stage}b{block}_conv1`, `..._conv2`,
    `..._shortcut`, `..._bn1`, `..._bn2`, `final_bn`, `pool`, `logits`. As
    in the references, targeted dropout and pruning skip `stem` and
    `logits`: pass `exclude=["stem"]` (the logits are excluded by default).

    Args:
        depth: int, `6n + 2` (8, 14, 20, 32, 56, ...).
        width: positive float multiplying every filter count (stem
            included, rounded, at least 1).
        num_classes: int, units of `logits`.
        input_shape: tuple, the shape of one image.
        weight_decay: float, coefficient of `sum(w^2)/2` on every kernel
            (the references use 2e-4); biases and BN are not decayed.
        name: the model's name, default `resnet{depth}`.

    Example:
    >>> model = resnet(depth=8, width=0.5)
    >>> model.get_layer("s1b1_conv1").kernel.shape  # (3, 3, 8, 16)
    """
    check_positive("depth", depth)
    if (depth - 2) % 6:
        raise ValueError(
            "`depth` must be 6n + 2 (8, 14, 20, 32, ...). "
            f"Received: depth={depth!r}"
        )
    check_positive("width", width, float)
    check_positive("num_classes", num_classes)
    blocks = (depth - 2) // 6
    reg = _kernel_regularizer(weight_decay)

    def filters(base):
        return max(1, int(round(base * width)))

    def conv(x, channels, size, stride, layer_name):
        return keras.layers.Conv2D(
            channels,
            size,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            kernel_regularizer=reg,
            name=layer_name,
        )(x)

    def bn(x, layer_name):
        return keras.layers.BatchNormalization(name=layer_name)(x)

    inputs = keras.Input(shape=input_shape, name="image")
    x = conv(inputs, filters(16), 7, 1, "stem")
    for stage, base in enumerate((32, 64, 128), start=1):
        for block in range(1, blocks + 1):
            prefix = f"s{stage}b{block}"
            stride = 2 if stage > 1 and block == 1 else 1
            channels = filters(base)
            pre = keras.layers.ReLU(name=f"{prefix}_relu1")(
                bn(x, f"{prefix}_bn1")
            )
            if stride != 1 or x.shape[-1] != channels:
                shortcut = conv(pre, channels, 1, stride, f"{prefix}_shortcut")
            else:
                shortcut = x
            y = conv(pre, channels, 3, stride, f"{prefix}_conv1")
            y = keras.layers.ReLU(name=f"{prefix}_relu2")(
                bn(y, f"{prefix}_bn2")
            )
            y = conv(y, channels, 3, 1, f"{prefix}_conv2")
            x = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
    x = keras.layers.ReLU(name="final_relu")(bn(x, "final_bn"))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_regularizer=reg, name="logits"
    )(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")
