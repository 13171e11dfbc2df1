import keras
from keras import ops

__all__ = [
    "MODES",
    "TriangularDropout",
    "set_width",
    "triangular_dropout_layers",
    "triangular_widths",
]

MODES = ("triangular", "random")


def _check_width(width, units=None):
    if width is None:
        return None
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(
            f"`width` must be None or an int >= 1. Received: width={width!r}"
        )
    if units is not None and width > units:
        raise ValueError(
            f"`width` must be at most the layer's {units} units. "
            f"Received: width={width}"
        )
    return width


def triangular_widths(batch_size, units):
    """The kept width of each row of the exact batch-triangular mask.

    Row `j` of a batch of `B` keeps the first `ceil((j + 1) * n / B)` of `n`
    units. B == n gives the lower-triangular matrix, B = k * n repeats each
    of its rows k times, B = n / k gives the paper's block triangle (blocks
    of one row by k units). For other B the widths are spread as evenly as
    possible over 1..n, with the last row always at full width. Works with a
    symbolic batch size (an int tensor).
    """
    rows = ops.arange(1, batch_size + 1, dtype="int32")
    return ops.floor_divide(rows * units + batch_size - 1, batch_size)


@keras.saving.register_keras_serializable(package="keras_tdrop")
class TriangularDropout(keras.layers.Layer):
    """Triangular Dropout: each example of a batch keeps a prefix of units.

    Applied to a layer's activations of shape `(batch, ..., n)`, in training
    it zeroes units along the last axis so that row `j` of the batch keeps
    only the units `[0, w_j)`. With `mode="triangular"` the mask is the
    paper's exact batch-triangular matrix: lower-triangular when the batch
    size B equals n, its rows repeated when B > n, a block triangle when
    B < n; in general row j keeps `ceil((j + 1) * n / B)` units, which covers
    any B (the smaller last batch of an epoch, an unknown batch dimension)
    with widths spread evenly over 1..n. With `mode="random"` every row draws
    its own width uniformly from 1..n (the paper's approximate variant).
    The network thus learns an ordering of its units, and after training
    any width w can be chosen by keeping units `[0, w)`: set `layer.width`
    (or `keras_tdrop.set_width(model, w)`) to mask the rest at inference, or
    `keras_tdrop.truncate(model, w)` to build a narrower plain model.

    At inference the layer is the identity unless a width is set. The width
    lives in a non-trainable variable, so changing it needs no retrace, and
    it is saved with the model. A width set before training also caps the
    training masks (the triangle then spreads over 1..width).

    Args:
        mode: `"triangular"` (exact batch-triangular masks) or `"random"`
            (an independent uniform width per row).
        unmasked_rate: float in [0, 1], probability that a row is left
            unmasked (full width) in training; the author code's blend
            towards no dropout. Default 0.
        width: optional int, units kept at inference (None: all).
        seed: optional int for the random parts.

    Call arguments:
        inputs: a tensor of rank >= 2, batch first, units last.
        training: bool, whether to apply the training masks.

    Example:
    >>> layer = TriangularDropout()
    >>> layer(np.ones((4, 4)), training=True)  # lower-triangular ones
    >>> layer.width = 2
    >>> layer(np.ones((1, 4)))  # [[1., 1., 0., 0.]]

    Reference:
    - [Staley & Markowitz, 2022](https://arxiv.org/abs/2205.01235)
    """

    def __init__(
        self,
        mode="triangular",
        unmasked_rate=0.0,
        width=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(
                f"`mode` must be one of {MODES}. Received: mode={mode!r}"
            )
        if (
            isinstance(unmasked_rate, bool)
            or not isinstance(unmasked_rate, (int, float))
            or not 0.0 <= unmasked_rate <= 1.0
        ):
            raise ValueError(
                "`unmasked_rate` must be a float in [0, 1]. "
                f"Received: unmasked_rate={unmasked_rate!r}"
            )
        self.mode = mode
        self.unmasked_rate = float(unmasked_rate)
        self._initial_width = _check_width(width)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.units = None
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                "TriangularDropout needs inputs of rank >= 2 with a known "
                f"last dimension. Received: input_shape={input_shape}"
            )
        self.units = int(input_shape[-1])
        _check_width(self._initial_width, self.units)
        self._width = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self._initial_width or 0),
            trainable=False,
            dtype="int32",
            name="width",
        )

    @property
    def width(self):
        """Units kept at inference, or None for all of them."""
        if not self.built:
            return self._initial_width
        value = int(ops.convert_to_numpy(self._width))
        return value or None

    @width.setter
    def width(self, value):
        _check_width(value, self.units)
        if self.built:
            self._width.assign(value or 0)
        else:
            self._initial_width = value

    def _active_units(self):
        width = self._width.value
        return ops.where(width > 0, width, self.units)

    def _row_widths(self, batch_size, active):
        if self.mode == "triangular":
            widths = triangular_widths(batch_size, active)
        else:
            uniform = keras.random.uniform(
                (batch_size,), seed=self.seed_generator
            )
            widths = ops.cast(
                ops.floor(uniform * ops.cast(active, "float32")), "int32"
            )
            widths = ops.minimum(widths, active - 1) + 1
        if self.unmasked_rate > 0.0:
            keep_all = (
                keras.random.uniform((batch_size,), seed=self.seed_generator)
                < self.unmasked_rate
            )
            widths = ops.where(keep_all, active, widths)
        return widths

    def call(self, inputs, training=False):
        active = self._active_units()
        positions = ops.arange(self.units, dtype="int32")
        if training:
            widths = self._row_widths(ops.shape(inputs)[0], active)
            keep = positions[None, :] < widths[:, None]
            keep = ops.reshape(
                keep, (-1,) + (1,) * (len(inputs.shape) - 2) + (self.units,)
            )
        else:
            keep = positions < active
        return ops.where(keep, inputs, ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "mode": self.mode,
            "unmasked_rate": self.unmasked_rate,
            "width": self.width,
            "seed": self.seed,
        }


def triangular_dropout_layers(model):
    """The `TriangularDropout` layers of `model`, nested models included,
    in graph order."""
    found = []
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, TriangularDropout):
            found.append(layer)
        else:
            found.extend(triangular_dropout_layers(layer))
    return found


def set_width(model, width):
    """Sets the inference width of every `TriangularDropout` in `model`.

    The widths are variables, so a compiled model picks the change up at
    its next call without retracing.

    Args:
        model: a Keras model (or layer) holding `TriangularDropout` layers.
        width: an int (the same width everywhere), None (no masking), or a
            dict `{layer name: int or None}` for some of the layers.

    Returns:
        The list of layers changed.

    Example:
    >>> set_width(model, 8)
    >>> model.predict(x)  # as if the masked layers had 8 units
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "`model` must be a keras.Model (or layer). "
            f"Received: model={model!r}"
        )
    layers = triangular_dropout_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no TriangularDropout layer; "
            "set_width has nothing to set."
        )
    if isinstance(width, dict):
        by_name = {layer.name: layer for layer in layers}
        unknown = sorted(set(width) - set(by_name))
        if unknown:
            raise ValueError(
                "`width` names layers that are not TriangularDropout layers "
                f"of model '{model.name}': {unknown}; they are "
                f"{sorted(by_name)}. Received: width={width!r}"
            )
        targets = [(by_name[name], w) for name, w in width.items()]
    else:
        _check_width(width)
        targets = [(layer, width) for layer in layers]
    for layer, w in targets:
        if layer.units is not None:
            _check_width(w, layer.units)
    for layer, w in targets:
        layer.width = w
    return [layer for layer, _ in targets]
