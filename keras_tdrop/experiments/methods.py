"""The apply/strip pairs of `registry.METHODS` for this package's methods.

Every apply takes `(model, *, exclude, seed, **params)` and returns a new
model (the caller's is left alone); every strip returns a plain Keras model
that computes what the trained one computes at inference.
"""

from keras_tdrop.layers.kernel_mask import FixedMask
from keras_tdrop.layers.kernel_mask import KernelDropout
from keras_tdrop.wrapping import apply_targeted_dropout
from keras_tdrop.wrapping import apply_wrapper
from keras_tdrop.wrapping import clone_with_weights
from keras_tdrop.wrapping import strip_wrappers

__all__ = [
    "apply_dropout",
    "apply_l1",
    "apply_none",
    "apply_random_prune",
    "apply_targeted",
    "apply_targeted_groups",
    "strip_kernel_masks",
    "strip_model_targeted",
    "strip_none",
]


def apply_none(model, *, exclude=None, seed=None):
    """A copy of `model`, trained as is."""
    return clone_with_weights(model)


def strip_none(model):
    """`model` itself: there is nothing to strip."""
    return model


def apply_targeted(model, *, exclude=None, seed=None, **params):
    """`apply_targeted_dropout(model, **params)`."""
    return apply_targeted_dropout(model, exclude=exclude, seed=seed, **params)


def apply_targeted_groups(model, *, exclude=None, seed=None, **params):
    """`apply_targeted_dropout(model, targeting="unit", groups=True,
    **params)`: one `ModelTargetedDropout` around a copy."""
    return apply_targeted_dropout(
        model,
        targeting="unit",
        groups=True,
        exclude=exclude,
        seed=seed,
        **params,
    )


def strip_model_targeted(model):
    """The network a `ModelTargetedDropout` trained (`.model`)."""
    return model.model


def apply_dropout(model, *, exclude=None, seed=None, rate, targeting):
    """Every eligible kernel layer in `KernelDropout(rate, targeting)`."""
    params = dict(rate=rate, targeting=targeting)
    return apply_wrapper(
        model,
        KernelDropout,
        params,
        exclude=exclude,
        seed=seed,
        prefix="dropout",
    )


def apply_random_prune(model, *, exclude=None, seed=None, fraction, targeting):
    """Every eligible kernel layer in `FixedMask(fraction, targeting)`."""
    params = dict(fraction=fraction, targeting=targeting)
    return apply_wrapper(
        model, FixedMask, params, exclude=exclude, seed=seed, prefix="random"
    )


def strip_kernel_masks(model):
    """A plain copy of `model`: every FixedMask / KernelDropout removed.

    A FixedMask's zeros are folded into the kernel (the plain model computes
    what the wrapped one does); KernelDropout is the identity at inference.
    """
    return strip_wrappers(model, (FixedMask, KernelDropout))


strip_random_prune = strip_kernel_masks


def apply_l1(model, *, exclude=None, seed=None, coefficient):
    """`keras_tdrop.baselines.apply_l1(model, coefficient)`."""
    from keras_tdrop.baselines import apply_l1 as apply

    return apply(model, coefficient, exclude=exclude)
