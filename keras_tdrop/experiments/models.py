"""Small reference architectures for MNIST, with stable layer names."""

import keras

__all__ = [
    "conv_autoencoder",
    "mlp_head",
    "mnist_cnn",
    "mnist_mlp",
    "mobile_cnn",
    "resnet",
    "toy_mlp",
]


def mnist_cnn(
    input_shape=(28, 28, 1),
    num_classes=10,
    filters=(32, 64),
    units=128,
    name="mnist_cnn",
):
    """A small convolutional network for MNIST, returning logits.

    `stem` (conv 3x3, relu) -> max pool -> `conv2` (conv 3x3, relu) -> max
    pool -> flatten -> `fc1` (dense, relu) -> `logits` (dense, linear). As in
    the references, targeted dropout and pruning leave the stem and the
    logits alone: pass `exclude=["stem"]` (the logits are excluded by
    default). With the defaults it has 225,034 parameters.

    Args:
        input_shape: tuple, the shape of one image.
        num_classes: int, units of the `logits` layer.
        filters: pair of ints, the filters of `stem` and `conv2`.
        units: int, units of `fc1`.
        name: the model's name.

    Example:
    >>> model = mnist_cnn()
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True), metrics=["accuracy"])
    """
    stem_filters, conv_filters = filters
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(stem_filters, 3, activation="relu", name="stem")(
        inputs
    )
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(conv_filters, 3, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(units, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def mnist_mlp(
    input_shape=(28, 28, 1),
    num_classes=10,
    units=(300, 100),
    name="mnist_mlp",
):
    """The LeNet-300-100 multilayer perceptron, returning logits.

    flatten -> `fc1` (dense, relu) -> `fc2` (dense, relu) -> `logits`
    (dense, linear); 784-300-100-10 with 266,610 parameters by default.

    Args:
        input_shape: tuple, the shape of one image (flattened first).
        num_classes: int, units of the `logits` layer.
        units: pair of ints, the units of `fc1` and `fc2`.
        name: the model's name.

    Example:
    >>> model = mnist_mlp()
    >>> model.count_params()  # 266610
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for i, width in enumerate(units, start=1):
        x = keras.layers.Dense(width, activation="relu", name=f"fc{i}")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


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


def _check_positive(name, value, kind=int):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float) if kind is float else int)
        or value <= 0
    ):
        raise ValueError(
            f"`{name}` must be a positive {kind.__name__}. "
            f"Received: {name}={value!r}"
        )


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
    _check_positive("depth", depth)
    if (depth - 2) % 6:
        raise ValueError(
            "`depth` must be 6n + 2 (8, 14, 20, 32, ...). "
            f"Received: depth={depth!r}"
        )
    _check_positive("width", width, float)
    _check_positive("num_classes", num_classes)
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


def toy_mlp(
    input_shape=(32, 32, 3),
    units=10,
    num_classes=10,
    name="toy_mlp",
):
    """The one-hidden-layer network of the paper's toy analysis (Table 1).

    flatten -> `hidden` (dense, `units` relu units; 10 in the paper) ->
    `logits` (dense, linear). On CIFAR-10 with the defaults: 30,840
    parameters. The paper targets the `hidden` kernel.

    Args:
        input_shape: tuple, the shape of one image (flattened first).
        units: int, hidden ReLU units.
        num_classes: int, units of `logits`.
        name: the model's name.

    Example:
    >>> model = toy_mlp()
    >>> model.count_params()  # 30840
    """
    _check_positive("units", units)
    _check_positive("num_classes", num_classes)
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(units, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def conv_autoencoder(
    latent_dim=32,
    triangular=True,
    mode="triangular",
    unmasked_rate=0.0,
    filters=32,
    input_shape=(28, 28, 1),
    seed=None,
    name=None,
):
    """The MNIST convolutional autoencoder of the Triangular Dropout paper.

    Encoder: `enc_conv1` (9x9), `enc_conv2` (7x7), `enc_conv3` (3x3), all
    `filters` channels, valid padding, relu -> flatten (4608 values for
    28x28 inputs) -> `latent` (dense, linear, `latent_dim` units) ->
    `latent_dropout` (`TriangularDropout`, when `triangular`). Decoder:
    `dec_dense` (dense to 4608, relu) -> reshape -> `dec_deconv1` (3x3),
    `dec_deconv2` (7x7), `dec_deconv3` (9x9) transposed convs (relu) ->
    `reconstruction` (conv 3x3, one channel, same padding, sigmoid). Train it
    with binary cross-entropy (appendix A.1.1). With the defaults it has
    504,353 trainable parameters (plus the layer's one width variable).

    Args:
        latent_dim: int, width of the code.
        triangular: bool, whether to put `TriangularDropout` on the code.
        mode: `TriangularDropout` mode (`"triangular"` or `"random"`).
        unmasked_rate: `TriangularDropout`'s share of unmasked rows.
        filters: int, channels of every conv.
        input_shape: tuple, the shape of one image.
        seed: optional int for the dropout masks.
        name: the model's name (default `tri_autoencoder_<z>` or
            `autoencoder_<z>`).

    Example:
    >>> model = conv_autoencoder(32)
    >>> model.compile("adam", "binary_crossentropy")
    """
    import math

    from keras_tdrop.layers.triangular_dropout import TriangularDropout

    _check_positive("latent_dim", latent_dim)
    _check_positive("filters", filters)
    if name is None:
        prefix = "tri_autoencoder" if triangular else "autoencoder"
        name = f"{prefix}_{latent_dim}"
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, size in enumerate((9, 7, 3), start=1):
        x = keras.layers.Conv2D(
            filters, size, activation="relu", name=f"enc_conv{i}"
        )(x)
    feature_shape = tuple(x.shape[1:])
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(latent_dim, name="latent")(x)
    if triangular:
        x = TriangularDropout(
            mode=mode,
            unmasked_rate=unmasked_rate,
            seed=seed,
            name="latent_dropout",
        )(x)
    x = keras.layers.Dense(
        math.prod(feature_shape), activation="relu", name="dec_dense"
    )(x)
    x = keras.layers.Reshape(feature_shape, name="unflatten")(x)
    for i, size in enumerate((3, 7, 9), start=1):
        x = keras.layers.Conv2DTranspose(
            filters, size, activation="relu", name=f"dec_deconv{i}"
        )(x)
    outputs = keras.layers.Conv2D(
        input_shape[-1],
        3,
        padding="same",
        activation="sigmoid",
        name="reconstruction",
    )(x)
    return keras.Model(inputs, outputs, name=name)


def mlp_head(
    input_dim=25088,
    units=(4096, 4096),
    num_classes=1000,
    triangular=True,
    mode="triangular",
    seed=None,
    name="mlp_head",
):
    """A fully connected classification head with Triangular Dropout.

    `features` input -> for each entry of `units`: `fc<i>` (dense, relu) ->
    `tri<i>` (`TriangularDropout`, when `triangular`) -> `logits` (dense,
    linear). The defaults are VGG19's head as retrained in the Triangular
    Dropout paper (section 4): 25088-4096-4096-1000, 123,642,856 trainable
    parameters (plus one width variable per `TriangularDropout`);
    `units=(1024, 1024)` is its width-1024 truncation, 27,765,736.

    Args:
        input_dim: int, features in.
        units: sequence of ints, the hidden widths.
        num_classes: int, units of the `logits` layer.
        triangular: bool, whether to add a `TriangularDropout` after each
            hidden layer.
        mode: `TriangularDropout` mode.
        seed: optional int for the dropout masks.
        name: the model's name.

    Example:
    >>> mlp_head(triangular=False).count_params()  # 123642856
    """
    from keras_tdrop.layers.triangular_dropout import TriangularDropout

    _check_positive("input_dim", input_dim)
    _check_positive("num_classes", num_classes)
    inputs = keras.Input(shape=(input_dim,), name="features")
    x = inputs
    for i, width in enumerate(units, start=1):
        _check_positive(f"units[{i - 1}]", width)
        x = keras.layers.Dense(width, activation="relu", name=f"fc{i}")(x)
        if triangular:
            seed_i = None if seed is None else seed + i
            x = TriangularDropout(mode=mode, seed=seed_i, name=f"tri{i}")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


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
    _check_positive("num_classes", num_classes)

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
