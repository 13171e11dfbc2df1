"""L0 regularisation with hard-concrete gates (Louizos et al., 2018)."""

import math

import keras
import numpy as np
from keras import ops

from keras_tdrop import targeting as targeting_lib
from keras_tdrop.baselines._base import BaselineWrapper
from keras_tdrop.baselines._base import check_positive
from keras_tdrop.wrapping import apply_wrapper

__all__ = [
    "L0Gate",
    "apply_l0",
    "hard_concrete_mean",
    "hard_concrete_sample",
    "keep_probability",
]

# The uniform noise stays inside (eps, 1 - eps), as in Louizos' code.
_EPSILON = 1e-6


def hard_concrete_sample(log_alpha, uniform, beta, gamma, zeta):
    """Gates from uniform noise: the stretched, clipped binary concrete.

    `s = sigmoid((log u - log(1 - u) + log_alpha) / beta)`, then
    `z = clip(s * (zeta - gamma) + gamma, 0, 1)`.
    """
    logit = ops.log(uniform) - ops.log(1.0 - uniform)
    s = ops.sigmoid((logit + log_alpha) / beta)
    return ops.clip(s * (zeta - gamma) + gamma, 0.0, 1.0)


def hard_concrete_mean(log_alpha, gamma, zeta):
    """The deterministic test-time gate, `clip(sigmoid(log_alpha) *
    (zeta - gamma) + gamma, 0, 1)` (Louizos et al., Eq. 13)."""
    return ops.clip(ops.sigmoid(log_alpha) * (zeta - gamma) + gamma, 0.0, 1.0)


def keep_probability(log_alpha, beta, gamma, zeta):
    """`P(z != 0) = 1 - Q(s <= 0) = sigmoid(log_alpha - beta * log(-gamma /
    zeta))`, the gate's probability of being non-zero (Eq. 12)."""
    return ops.sigmoid(log_alpha - beta * math.log(-gamma / zeta))


@keras.saving.register_keras_serializable(package="keras_tdrop")
class L0Gate(BaselineWrapper):
    """Hard-concrete L0 gates on the kernels of the wrapped layer.

    Every kernel weight (`targeting="weight"`) or every output column
    (`"unit"`, the last axis of the kernel) gets a gate `z` drawn from a
    hard-concrete distribution with a trainable location `log_alpha`; the
    layer runs on `kernel * z`, one fresh draw per training step. The
    expected number of non-zero weights, `sum P(z != 0)` times the weights
    each gate controls, times `coefficient`, is added through `add_loss`.
    At inference the gate is deterministic (Eq. 13 of the paper), so some
    weights are exactly zero. `importances()` are the keep probabilities,
    the order in which the Targeted Dropout paper prunes L0 networks.

    Args:
        layer: the `keras.layers.Layer` to wrap; it must have a kernel.
        coefficient: float >= 0, lambda, the weight of the expected L0 norm
            in the loss (the Targeted Dropout paper uses beta / 50,000 for
            its L0_beta runs; 0.1 / 50,000 by default).
        targeting: `"weight"` (a gate per weight) or `"unit"` (a gate per
            output column).
        beta: float > 0, the concrete temperature (2/3 in the paper).
        gamma, zeta: the stretch interval, gamma < 0 < 1 < zeta (-0.1 and
            1.1 in the paper).
        droprate_init: float in (0, 1), the initial drop rate: `log_alpha`
            starts at `log(1 - p) - log(p)` plus N(0, 0.01) noise.
        seed: optional int for the noise and the initialisation.

    Call arguments:
        The wrapped layer's, plus `training`.

    Example:
    >>> layer = L0Gate(keras.layers.Dense(8), coefficient=1e-5)
    >>> y = layer(np.ones((2, 4)), training=True)

    Reference:
    - [Louizos et al., 2018](https://arxiv.org/abs/1712.01312)
    """

    def __init__(
        self,
        layer,
        coefficient=0.1 / 50000,
        targeting="weight",
        beta=2.0 / 3.0,
        gamma=-0.1,
        zeta=1.1,
        droprate_init=0.5,
        seed=None,
        **kwargs,
    ):
        super().__init__(layer, coefficient, seed=seed, **kwargs)
        targeting_lib.check_targeting(targeting)
        self.beta = check_positive("beta", beta, strict=True)
        if not (isinstance(gamma, (int, float)) and gamma < 0):
            raise ValueError(f"`gamma` must be < 0. Received: gamma={gamma!r}")
        if not (isinstance(zeta, (int, float)) and zeta > 1):
            raise ValueError(f"`zeta` must be > 1. Received: zeta={zeta!r}")
        if not (isinstance(droprate_init, (int, float))) or not (
            0 < droprate_init < 1
        ):
            raise ValueError(
                "`droprate_init` must be a float in (0, 1). "
                f"Received: droprate_init={droprate_init!r}"
            )
        self.targeting = targeting
        self.gamma = float(gamma)
        self.zeta = float(zeta)
        self.droprate_init = float(droprate_init)

    def build_wrapper(self, kernels):
        mean = math.log(1 - self.droprate_init) - math.log(self.droprate_init)
        self.log_alphas = [
            self.add_weight(
                shape=self._gate_shape(kernel),
                initializer=keras.initializers.RandomNormal(
                    mean, 0.01, seed=self.seed
                ),
                name=f"log_alpha_{i}",
            )
            for i, kernel in enumerate(kernels)
        ]

    def _gate_shape(self, kernel):
        if self.targeting == "unit":
            return (kernel.shape[-1],)
        return tuple(kernel.shape)

    def _weights_per_gate(self, kernel):
        if self.targeting == "unit":
            return float(np.prod(kernel.shape[:-1]))
        return 1.0

    def penalty(self):
        total = 0.0
        for kernel, log_alpha in zip(self.kernels(), self.log_alphas):
            keep = keep_probability(log_alpha, self.beta, self.gamma, self.zeta)
            total = total + self._weights_per_gate(kernel) * ops.sum(keep)
        return self.coefficient * total

    def gates(self, training=False):
        """One gate tensor per kernel: a draw, or the test-time gate."""
        if not training:
            return [
                hard_concrete_mean(a, self.gamma, self.zeta)
                for a in self.log_alphas
            ]
        gates = []
        for log_alpha in self.log_alphas:
            uniform = keras.random.uniform(
                ops.shape(log_alpha),
                minval=_EPSILON,
                maxval=1.0 - _EPSILON,
                seed=self.seed_generator,
            )
            gates.append(
                hard_concrete_sample(
                    log_alpha, uniform, self.beta, self.gamma, self.zeta
                )
            )
        return gates

    def kernel_values(self, training):
        return [
            (kernel, kernel.value * ops.cast(gate, kernel.dtype))
            for kernel, gate in zip(self.kernels(), self.gates(training))
        ]

    def importances(self):
        return [
            np.broadcast_to(
                ops.convert_to_numpy(
                    keep_probability(a, self.beta, self.gamma, self.zeta)
                ),
                kernel.shape,
            ).copy()
            for kernel, a in zip(self.kernels(), self.log_alphas)
        ]

    def masks(self):
        return [
            np.broadcast_to(
                ops.convert_to_numpy(gate) > 0, kernel.shape
            ).astype(kernel.dtype)
            for kernel, gate in zip(self.kernels(), self.gates(False))
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "targeting": self.targeting,
                "beta": self.beta,
                "gamma": self.gamma,
                "zeta": self.zeta,
                "droprate_init": self.droprate_init,
            }
        )
        return config


def apply_l0(
    model,
    coefficient=0.1 / 50000,
    targeting="weight",
    beta=2.0 / 3.0,
    gamma=-0.1,
    zeta=1.1,
    droprate_init=0.5,
    exclude=None,
    exclude_logits=True,
    seed=None,
):
    """Returns a copy of `model` with every eligible layer in `L0Gate`.

    Eligible, excluded and copied as in `apply_targeted_dropout` (the logits
    layer is left alone by default; `model` is not modified). Wrappers are
    named `l0_<name>`. `strip_baselines` returns the plain model with the
    test-time gates folded into the kernels.

    Example:
    >>> l0_model = apply_l0(model, coefficient=0.1 / 60000)
    """
    params = dict(
        coefficient=coefficient,
        targeting=targeting,
        beta=beta,
        gamma=gamma,
        zeta=zeta,
        droprate_init=droprate_init,
    )
    return apply_wrapper(
        model,
        L0Gate,
        params,
        exclude=exclude,
        exclude_logits=exclude_logits,
        seed=seed,
        prefix="l0",
    )
