"""The models of the Triangular Dropout paper: the MNIST convolutional
autoencoder and the VGG19-style classification head."""

import keras

from keras_tdrop.experiments.models._checks import check_positive

__all__ = ["conv_autoencoder", "mlp_head"]


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

    check_positive("latent_dim", latent_dim)
    check_positive("filters", filters)
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

    check_positive("input_dim", input_dim)
    check_positive("num_classes", num_classes)
    inputs = keras.Input(shape=(input_dim,), name="features")
    x = inputs
    for i, width in enumerate(units, start=1):
        check_positive(f"units[{i - 1}]", width)
        x = keras.layers.Dense(width, activation="relu", name=f"fc{i}")(x)
        if triangular:
            seed_i = None if seed is None else seed + i
            x = TriangularDropout(mode=mode, seed=seed_i, name=f"tri{i}")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
