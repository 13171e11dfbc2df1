"""Smallify: switch layers with an online pruning condition (Leclerc et al.)."""

import keras
import numpy as np
from keras import ops

from keras_tdrop.baselines._base import AFFINE_TYPES
from keras_tdrop.baselines._base import BaselineWrapper
from keras_tdrop.baselines._base import check_positive
from keras_tdrop.wrapping import apply_wrapper

__all__ = [
    "Smallify",
    "apply_smallify",
    "sign_statistics",
]


def sign_statistics(sign, mean, variance, decay):
    """One step of the exponential moving mean and variance of a sign.

    `diff = sign - mean`, `mean' = mean + (1 - decay) diff`,
    `variance' = decay (variance + (1 - decay) diff^2)`.
    """
    diff = sign - mean
    new_mean = mean + (1.0 - decay) * diff
    new_variance = decay * (variance + (1.0 - decay) * ops.square(diff))
    return new_mean, new_variance


@keras.saving.register_keras_serializable(package="keras_tdrop")
class Smallify(BaselineWrapper):
    """A Smallify switch on every output unit of a Dense or Conv layer.

    Each unit j (output column of the kernel, filter of a convolution) is
    multiplied by a trainable switch `beta_j` (initially 1) between the
    layer's affine map and its activation, so that it folds exactly into
    the kernel and bias; `coefficient * sum |beta|` is added through
    `add_loss`. During training, an exponential moving mean and variance
    of `sign(beta_j)` are kept (`decay`); when the variance exceeds
    `threshold`, the switch oscillates around zero and the unit is switched
    off for good (the paper's online pruning). `importances()` is `|beta|`
    (0 for units switched off).

    Args:
        layer: a `Dense`, `Conv1D`, `Conv2D` or `Conv3D` layer.
        coefficient: float >= 0, lambda, the L1 weight on the switches
            (1e-4 in the Targeted Dropout paper, the default).
        decay: float in [0, 1), the decay of the moving statistics (0.9).
        threshold: float >= 0, the variance above which a unit is switched
            off (0.5).
        seed: unused (the switches are deterministic); kept for a uniform
            signature.

    Call arguments:
        `inputs`, `training`.

    Example:
    >>> layer = Smallify(keras.layers.Dense(8))
    >>> y = layer(np.ones((2, 4)), training=True)

    Reference:
    - [Leclerc et al., 2018](https://arxiv.org/abs/1806.03723)
    """

    supported_types = AFFINE_TYPES

    def __init__(
        self,
        layer,
        coefficient=1e-4,
        decay=0.9,
        threshold=0.5,
        seed=None,
        **kwargs,
    ):
        super().__init__(layer, coefficient, seed=seed, **kwargs)
        decay = check_positive("decay", decay)
        if decay >= 1:
            raise ValueError(
                f"`decay` must be in [0, 1). Received: decay={decay!r}"
            )
        self.decay = decay
        self.threshold = check_positive("threshold", threshold)

    def build_wrapper(self, kernels):
        units = (kernels[0].shape[-1],)
        self.switch = self.add_weight(
            shape=units, initializer="ones", name="switch"
        )
        self.sign_mean = self.add_weight(
            shape=units, initializer="ones", trainable=False, name="sign_mean"
        )
        self.sign_variance = self.add_weight(
            shape=units,
            initializer="zeros",
            trainable=False,
            name="sign_variance",
        )
        self.alive = self.add_weight(
            shape=units, initializer="ones", trainable=False, name="alive"
        )

    def gate(self):
        """`beta * alive`: the switch, 0 for units switched off."""
        return self.switch * self.alive

    def penalty(self):
        return self.coefficient * ops.sum(ops.abs(self.gate()))

    def update_statistics(self):
        """One step of the pruning condition (called by training steps)."""
        mean, variance = sign_statistics(
            ops.sign(ops.stop_gradient(self.switch)),
            self.sign_mean,
            self.sign_variance,
            self.decay,
        )
        self.sign_mean.assign(mean)
        self.sign_variance.assign(variance)
        keep = ops.cast(variance <= self.threshold, self.alive.dtype)
        self.alive.assign(self.alive * keep)

    def kernel_values(self, training):
        if training:
            self.update_statistics()
        gate = self.gate()
        pairs = [(self.layer.kernel, self.layer.kernel.value * gate)]
        if self.layer.use_bias:
            pairs.append((self.layer.bias, self.layer.bias.value * gate))
        return pairs

    def importances(self):
        kernel = self.layer.kernel
        gate = np.abs(ops.convert_to_numpy(self.gate()))
        return [np.broadcast_to(gate, kernel.shape).copy()]

    def masks(self):
        kernel = self.layer.kernel
        alive = ops.convert_to_numpy(self.alive)
        return [np.broadcast_to(alive, kernel.shape).astype(kernel.dtype)]

    def get_config(self):
        config = super().get_config()
        config.update({"decay": self.decay, "threshold": self.threshold})
        return config


def apply_smallify(
    model,
    coefficient=1e-4,
    decay=0.9,
    threshold=0.5,
    exclude=None,
    exclude_logits=True,
    seed=None,
):
    """Returns a copy of `model` with its Dense/Conv layers in `Smallify`
    (named `smallify_<name>`); the logits layer is left alone by default and
    `model` is not modified. `seed` is unused (Smallify draws no noise).

    Example:
    >>> small = apply_smallify(model, coefficient=1e-4)
    """
    params = dict(coefficient=coefficient, decay=decay, threshold=threshold)
    return apply_wrapper(
        model,
        Smallify,
        params,
        exclude=exclude,
        exclude_logits=exclude_logits,
        seed=None,
        prefix="smallify",
    )
