"""The apply/strip pairs of `registry.METHODS` for this package's methods.

Every apply takes `(model, *, exclude, seed, **params)` and returns a new
model (the caller's is left alone); every strip returns a plain Keras model
that computes what the trained one computes at inference.
"""

import keras
import numpy as np

from keras_tdrop.baselines._base import apply_wrapper
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.layers.kernel_mask import FixedMask
from keras_tdrop.layers.kernel_mask import KernelDropout
from keras_tdrop.layers.kernel_mask import _KernelMaskWrapper
from keras_tdrop.wrapping import _unwrap_clone
from keras_tdrop.wrapping import apply_targeted_dropout
from keras_tdrop.wrapping import clone_with_weights


def apply_none(model, *, exclude=None, seed=None):
    """A copy of `model`, trained as is."""
    return clone_with_weights(model)


def strip_none(model):
    """`model` itself: there is nothing to strip."""
    return model


def apply_targeted(model, *, exclude=None, seed=None, **params):
    """`apply_targeted_dropout(model, **params)`."""
    return apply_targeted_dropout(model, exclude=exclude, seed=seed, **params)


def _apply_kernel_mask(
    model, wrapper, amount, targeting, exclude, seed, prefix
):
    """Every eligible kernel layer in `wrapper(amount, targeting)`."""
    return apply_wrapper(
        model,
        lambda layer, s, name: wrapper(
            layer, amount, targeting, seed=s, name=name
        ),
        exclude,
        True,
        seed,
        prefix,
    )


def apply_dropout(model, *, exclude=None, seed=None, rate, targeting):
    """Every eligible kernel layer in `KernelDropout(rate, targeting)`."""
    return _apply_kernel_mask(
        model, KernelDropout, rate, targeting, exclude, seed, "dropout"
    )


def apply_random_prune(model, *, exclude=None, seed=None, fraction, targeting):
    """Every eligible kernel layer in `FixedMask(fraction, targeting)`."""
    return _apply_kernel_mask(
        model, FixedMask, fraction, targeting, exclude, seed, "random"
    )


def strip_kernel_masks(model):
    """A plain copy of `model`: every FixedMask / KernelDropout removed.

    A FixedMask's zeros are folded into the kernel (the plain model computes
    what the wrapped one does); KernelDropout is the identity at inference.
    """
    stripped, pairs = _unwrap_clone(model, _KernelMaskWrapper)
    for wrapper, new in pairs:
        if isinstance(wrapper, FixedMask):
            masks = iter(wrapper.masks)
            kernels = {id(k) for k in kernel_variables(wrapper.layer)}
            weights = [
                keras.ops.convert_to_numpy(w.value)
                * (
                    keras.ops.convert_to_numpy(next(masks).value)
                    if id(w) in kernels
                    else 1
                )
                for w in wrapper.layer.weights
            ]
            new.set_weights([np.asarray(w) for w in weights])
    return stripped


strip_random_prune = strip_kernel_masks


def apply_l1(model, *, exclude=None, seed=None, coefficient):
    """`keras_tdrop.baselines.apply_l1(model, coefficient)`."""
    from keras_tdrop.baselines import apply_l1 as apply

    return apply(model, coefficient, exclude=exclude)
