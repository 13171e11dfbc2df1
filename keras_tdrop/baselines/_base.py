"""What the baseline wrappers share: gated kernels, penalties, strip, export.

A baseline wrapper keeps the wrapped layer's weights as they are and runs the
layer on transformed values of them (gated, masked or noisy kernels) through
a `keras.StatelessScope`, as `TargetedDropout` does, so gradients reach both
the weights and the gate parameters. Its penalty goes through `add_loss`.
"""

import keras
import numpy as np
from keras import ops

from keras_tdrop.kernels import call_with_values
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.kernels import resolve_exclude
from keras_tdrop.wrapping import _check_graph_model
from keras_tdrop.wrapping import _fresh
from keras_tdrop.wrapping import _unwrap_clone
from keras_tdrop.wrapping import clone_with_weights

_AFFINE_TYPES = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)


def check_positive(name, value, strict=False):
    """A float >= 0 (> 0 when `strict`), or a ValueError naming `name`."""
    ok = isinstance(value, (int, float, np.number)) and not isinstance(
        value, bool
    )
    if ok:
        value = float(value)
        ok = value > 0 if strict else value >= 0
    if not ok:
        bound = "> 0" if strict else ">= 0"
        raise ValueError(
            f"`{name}` must be a float {bound}. Received: {name}={value!r}"
        )
    return value


class BaselineWrapper(keras.layers.Wrapper):
    """Base of the baseline wrappers (L0, variational dropout, Smallify).

    Subclasses create their parameters in `build_gates(kernels)` and define
    `penalty()`, `transformed(training)` (the `(variable, value)` pairs the
    layer runs on; at inference they are what `strip_baselines` folds in),
    `importances()` and `masks()` (one array of each kernel's shape per
    kernel).
    """

    # Tells `keras_tdrop.wrapping` to copy every weight of the wrapper
    # between two wrappers, and the inner layer's otherwise.
    _wraps_kernels = True
    _supported_types = None

    def __init__(self, layer, coefficient, seed=None, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "`layer` must be a keras.layers.Layer. "
                f"Received: layer={layer!r}"
            )
        super().__init__(layer, **kwargs)
        self._check_type()
        if layer.built:
            self._check_kernels()
        self.coefficient = check_positive("coefficient", coefficient)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _check_type(self):
        types = self._supported_types
        if types is not None and type(self.layer) not in types:
            names = ", ".join(t.__name__ for t in types)
            raise ValueError(
                f"{type(self).__name__} works on {names}; layer "
                f"'{self.layer.name}' is a {type(self.layer).__name__}."
            )

    def _check_kernels(self):
        if not kernel_variables(self.layer):
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
        self.build_gates(kernel_variables(self.layer))
        self.built = True

    def call(self, inputs, *args, training=None, **kwargs):
        if self.layer._call_has_training_arg:
            kwargs["training"] = training
        self.add_loss(self.penalty())
        replacements = self.transformed(bool(training))
        return call_with_values(self.layer, replacements, inputs, args, kwargs)

    def folded_weights(self):
        """The inner layer's weights as inference uses them (numpy)."""
        values = {
            id(variable): ops.convert_to_numpy(value)
            for variable, value in self.transformed(False)
        }
        return [
            values[id(w)] if id(w) in values else ops.convert_to_numpy(w.value)
            for w in self.layer.weights
        ]

    def get_config(self):
        config = super().get_config()
        config.update({"coefficient": self.coefficient, "seed": self.seed})
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras' Wrapper.from_config pops "layer" from the caller's dict.
        return super().from_config(dict(config), custom_objects=custom_objects)


def affine_output(layer, inputs, kernel, bias):
    """Dense or convolution pre-activation with the given kernel and bias."""
    if isinstance(layer, keras.layers.Dense):
        outputs = ops.matmul(inputs, kernel)
    else:
        outputs = layer.convolution_op(inputs, kernel)
    if bias is None:
        return outputs
    if (
        not isinstance(layer, keras.layers.Dense)
        and layer.data_format == "channels_first"
    ):
        bias = ops.reshape(bias, (1, -1) + (1,) * layer.rank)
    return ops.add(outputs, bias)


def baseline_layers(model):
    """Every baseline wrapper in `model`, nested models included."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, BaselineWrapper)
    ]


def apply_wrapper(
    model, make, exclude, exclude_logits, seed, prefix, types=None
):
    """A copy of `model` with every eligible kernel layer wrapped by `make`.

    Eligible: a layer with a kernel, not excluded, of one of `types` if
    given. `make(layer, seed, name)` returns the wrapper around the fresh
    `layer`.
    """
    _check_graph_model(model)
    excluded = resolve_exclude(model, exclude, exclude_logits)
    counter = [0]

    def wrap(layer):
        if isinstance(layer, (keras.layers.Wrapper, keras.Model)):
            return None
        if excluded(layer) or not kernel_variables(layer):
            return None
        if types is not None and type(layer) not in types:
            return None
        layer_seed = None if seed is None else seed + counter[0]
        counter[0] += 1
        return make(_fresh(layer), layer_seed, f"{prefix}_{layer.name}")

    return clone_with_weights(model, wrap)


def apply_wrapper_class(
    model, cls, params, exclude, exclude_logits, seed, prefix, types=None
):
    """`apply_wrapper` with wrappers `cls(layer, seed=, name=, **params)`.

    `params` are validated once, before any work, by wrapping a Dense.
    """
    cls(keras.layers.Dense(1), **params)

    def make(layer, layer_seed, name):
        return cls(layer, seed=layer_seed, name=name, **params)

    return apply_wrapper(
        model, make, exclude, exclude_logits, seed, prefix, types
    )


def _strip(model):
    _check_graph_model(model)
    stripped, pairs = _unwrap_clone(model, BaselineWrapper)
    for wrapper, new in pairs:
        new.set_weights(wrapper.folded_weights())
    return stripped, pairs


def strip_baselines(model):
    """Returns a plain copy of `model` with every baseline wrapper removed.

    The inner layers keep their names; their weights are the learned ones
    with the gates folded in (L0's deterministic gates, variational
    dropout's log-alpha mask, Smallify's switches), so the plain model
    computes what the wrapped model computes at inference.
    """
    return _strip(model)[0]


def _export(model, method):
    stripped, pairs = _strip(model)
    exported = {}
    for wrapper, new in pairs:
        arrays = getattr(wrapper, method)()
        for kernel, array in zip(kernel_variables(new), arrays):
            exported[kernel.path] = array
    return exported


def importances(model):
    """`{variable path: array}`, each wrapped kernel's learned importance.

    Keyed by the kernel paths of `strip_baselines(model)` (and of its
    copies), with the kernel's shape; higher means more important: L0's keep
    probability, minus variational dropout's log alpha, the magnitude of
    Smallify's switch. Pass it as `scores=` to the pruning functions.
    """
    return _export(model, "importances")


def masks(model):
    """`{variable path: 0/1 array}`, what each method has pruned by itself.

    Keyed as `importances`: 0 where L0's deterministic gate is 0, where log
    alpha reaches variational dropout's threshold, or where Smallify has
    switched the unit off.
    """
    return _export(model, "masks")
