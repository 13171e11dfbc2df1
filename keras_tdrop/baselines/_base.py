"""What the baseline wrappers share: gated kernels, penalties, strip, export.

A baseline wrapper keeps the wrapped layer's weights as they are and runs the
layer on transformed values of them (gated, masked or noisy kernels) through
a `keras.StatelessScope`, as `TargetedDropout` does, so gradients reach both
the weights and the gate parameters. Its penalty goes through `add_loss`.
"""

import keras
import numpy as np
from keras import ops

from keras_tdrop.kernels import kernel_variables
from keras_tdrop.layers.kernel_wrapper import KernelWrapper
from keras_tdrop.layers.kernel_wrapper import kernel_wrappers
from keras_tdrop.wrapping import strip_wrappers
from keras_tdrop.wrapping import unwrap_clone

__all__ = [
    "AFFINE_TYPES",
    "BaselineWrapper",
    "affine_output",
    "baseline_layers",
    "check_positive",
    "importances",
    "masks",
    "strip_baselines",
]

AFFINE_TYPES = (
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


class BaselineWrapper(KernelWrapper):
    """Base of the baseline wrappers (L0, variational dropout, Smallify).

    Subclasses create their parameters in `build_wrapper(kernels)` and
    define `penalty()`, `kernel_values(training)` (the `(variable, value)`
    pairs the layer runs on; at inference they are what `strip_baselines`
    folds in), `importances()` and `masks()` (one array of each kernel's
    shape per kernel).
    """

    def __init__(self, layer, coefficient, seed=None, **kwargs):
        super().__init__(layer, seed=seed, **kwargs)
        self.coefficient = check_positive("coefficient", coefficient)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, *args, training=None, **kwargs):
        self.add_loss(self.penalty())
        return super().call(inputs, *args, training=training, **kwargs)

    def get_config(self):
        return {**super().get_config(), "coefficient": self.coefficient}


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
    return kernel_wrappers(model, BaselineWrapper)


def strip_baselines(model):
    """Returns a plain copy of `model` with every baseline wrapper removed.

    The inner layers keep their names; their weights are the learned ones
    with the gates folded in (L0's deterministic gates, variational
    dropout's log-alpha mask, Smallify's switches), so the plain model
    computes what the wrapped model computes at inference.
    """
    return strip_wrappers(model, BaselineWrapper)


def _export(model, method):
    exported = {}
    for wrapper, new in unwrap_clone(model, BaselineWrapper)[1]:
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
