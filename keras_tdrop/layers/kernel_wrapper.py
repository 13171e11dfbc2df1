"""The base of every wrapper that runs a layer on substituted kernels."""

import keras
from keras import ops

from keras_tdrop import keras_adapter
from keras_tdrop.kernels import call_with_values
from keras_tdrop.kernels import kernel_variables

__all__ = [
    "KernelWrapper",
    "fold",
    "kernel_wrappers",
]


class KernelWrapper(keras.layers.Wrapper):
    """Runs the wrapped layer on values substituted for its kernels.

    The stored weights are never modified: the layer runs inside a
    `keras.StatelessScope` on the `(variable, value)` pairs that
    `kernel_values(training)` returns, so gradients reach the weights
    through the substituted values. `TargetedDropout`, `FixedMask`,
    `KernelDropout` and the baselines (`L0Gate`, `VariationalDropout`,
    `Smallify`) are kernel wrappers; `apply_wrapper` wraps a model's
    layers in one of them and `strip_wrappers` folds them back.

    Subclasses create their variables in `build_wrapper(kernels)` and
    define `kernel_values(training)`; what it returns at inference is what
    `folded_weights()` (and so stripping) writes into the plain layer.

    Attributes:
        supported_types: `None` (any layer with a kernel) or a tuple of
            the exact layer types the wrapper works on; `apply_wrapper`
            wraps only those.

    Args:
        layer: the `keras.layers.Layer` to wrap; it must have a kernel.
        seed: optional int for the wrapper's randomness.
    """

    supported_types = None

    def __init__(self, layer, seed=None, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "`layer` must be a keras.layers.Layer. "
                f"Received: layer={layer!r}"
            )
        super().__init__(layer, **kwargs)
        types = self.supported_types
        if types is not None and type(layer) not in types:
            names = ", ".join(t.__name__ for t in types)
            raise ValueError(
                f"{type(self).__name__} works on {names}; layer "
                f"'{layer.name}' is a {type(layer).__name__}."
            )
        if layer.built:
            self._check_kernels()
        self.seed = seed

    def _check_kernels(self):
        if not self.kernels():
            raise ValueError(
                f"{type(self).__name__} needs a layer with a kernel; layer "
                f"'{self.layer.name}' ({type(self.layer).__name__}) has none."
            )

    def kernels(self):
        """The wrapped layer's kernel variables."""
        return kernel_variables(self.layer)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self._check_kernels()
        self.build_wrapper(self.kernels())
        self.built = True

    def build_wrapper(self, kernels):
        """Creates the wrapper's own variables; `kernels` are built."""

    def kernel_values(self, training):
        """`[(variable, value)]`: what the layer runs on (none: as is)."""
        return []

    def call(self, inputs, *args, training=None, **kwargs):
        # Keras drops `training` for a layer whose call takes none.
        kwargs["training"] = training
        if not self.layer.built:
            # A layer whose build takes several shapes (attention) is
            # built by its first call.
            self.layer(inputs, *args, **kwargs)
            self._check_kernels()
        values = self.kernel_values(bool(training))
        if not values:
            return self.layer(inputs, *args, **kwargs)
        return call_with_values(
            self.layer, values, inputs, args, kwargs, self.add_loss
        )

    def folded_weights(self):
        """The wrapped layer's weights as inference uses them (numpy)."""
        return fold(self.layer, self.kernel_values(False))

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras' Wrapper.from_config pops "layer" from the caller's dict.
        return super().from_config(dict(config), custom_objects=custom_objects)


def fold(layer, values):
    """`layer.weights` as numpy, with the `(variable, value)` pairs of
    `values` in place of those variables."""
    by_id = {id(variable): value for variable, value in values}
    return [
        ops.convert_to_numpy(by_id[id(w)] if id(w) in by_id else w.value)
        for w in layer.weights
    ]


def kernel_wrappers(model, types=KernelWrapper):
    """Every layer of `types` in `model`, nested models included."""
    return [
        layer
        for layer in keras_adapter.sublayers(model)
        if isinstance(layer, types)
    ]
