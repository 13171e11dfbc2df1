"""Sparse variational dropout (Molchanov et al., 2017)."""

import keras
from keras import ops

from keras_tdrop.baselines._base import AFFINE_TYPES
from keras_tdrop.baselines._base import BaselineWrapper
from keras_tdrop.baselines._base import affine_output
from keras_tdrop.wrapping import apply_wrapper

__all__ = [
    "LOG_ALPHA_RANGE",
    "VariationalDropout",
    "apply_variational_dropout",
    "kl_approximation",
    "log_alpha",
]

# The constants of the paper's approximation of -KL (Eq. 14).
K1, K2, K3 = 0.63576, 1.87320, 1.48695
# log alpha is clipped to this range, as in the authors' code.
LOG_ALPHA_RANGE = (-10.0, 10.0)
_EPSILON = 1e-8


def log_alpha(kernel, log_sigma2):
    """`clip(log sigma^2 - log(theta^2 + 1e-8), -10, 10)`."""
    value = log_sigma2 - ops.log(ops.square(kernel) + _EPSILON)
    return ops.clip(value, *LOG_ALPHA_RANGE)


def kl_approximation(log_alpha):
    """Per weight, `KL(q || p) ~= k1 - k1 sigmoid(k2 + k3 log alpha) +
    0.5 log(1 + 1/alpha)`, Molchanov et al.'s approximation of the KL of the
    log-uniform prior (their Eq. 14, with C = -k1 so that it tends to 0 as
    alpha grows)."""
    return (
        K1
        - K1 * ops.sigmoid(K2 + K3 * log_alpha)
        + 0.5 * ops.log1p(ops.exp(-log_alpha))
    )


@keras.saving.register_keras_serializable(package="keras_tdrop")
class VariationalDropout(BaselineWrapper):
    """Sparse variational dropout on the kernel of a Dense or Conv layer.

    Each weight theta gets a trainable `log sigma^2` (the additive noise
    reparameterisation); `log alpha = log sigma^2 - log theta^2`. Training
    samples the pre-activations with the local reparameterisation trick,
    `mean = x * theta + b`, `var = x^2 * sigma^2`, output `act(mean +
    sqrt(var) * eps)`, and adds `coefficient * sum KL` (the paper's
    approximation) through `add_loss`. Weights with large alpha are noise:
    at inference those with `log alpha >= threshold` are zeroed and the
    others used as they are. `importances()` is `-log alpha`, so pruning
    removes the highest log alpha first.

    Args:
        layer: a `Dense`, `Conv1D`, `Conv2D` or `Conv3D` layer.
        coefficient: float >= 0, the weight of the KL term (the Targeted
            Dropout paper uses 0.01 / 50,000, the default).
        threshold: float, the log alpha from which a weight is dropped at
            inference (3 in the paper), or None to keep every weight.
        log_sigma2_init: float, the initial `log sigma^2` (-10 in the paper).
        seed: optional int for the noise.

    Call arguments:
        `inputs`, `training`.

    Example:
    >>> layer = VariationalDropout(keras.layers.Dense(8))
    >>> y = layer(np.ones((2, 4)), training=True)

    Reference:
    - [Molchanov et al., 2017](https://arxiv.org/abs/1701.05369)
    """

    supported_types = AFFINE_TYPES

    def __init__(
        self,
        layer,
        coefficient=0.01 / 50000,
        threshold=3.0,
        log_sigma2_init=-10.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(layer, coefficient, seed=seed, **kwargs)
        if threshold is not None and not isinstance(threshold, (int, float)):
            raise ValueError(
                "`threshold` must be a float or None. "
                f"Received: threshold={threshold!r}"
            )
        if not isinstance(log_sigma2_init, (int, float)):
            raise ValueError(
                "`log_sigma2_init` must be a float. "
                f"Received: log_sigma2_init={log_sigma2_init!r}"
            )
        self.threshold = None if threshold is None else float(threshold)
        self.log_sigma2_init = float(log_sigma2_init)

    def build_wrapper(self, kernels):
        (kernel,) = kernels
        self.log_sigma2 = self.add_weight(
            shape=kernel.shape,
            initializer=keras.initializers.Constant(self.log_sigma2_init),
            name="log_sigma2",
        )

    def log_alpha(self):
        """The current log alpha of every weight (a tensor)."""
        return log_alpha(self.layer.kernel.value, self.log_sigma2)

    def penalty(self):
        return self.coefficient * ops.sum(kl_approximation(self.log_alpha()))

    def call(self, inputs, training=None):
        if not training:
            return super().call(inputs, training=False)
        self.add_loss(self.penalty())
        layer = self.layer
        bias = layer.bias if layer.use_bias else None
        mean = affine_output(layer, inputs, layer.kernel, bias)
        variance = affine_output(
            layer, ops.square(inputs), ops.exp(self.log_sigma2), None
        )
        noise = keras.random.normal(
            ops.shape(mean), dtype=mean.dtype, seed=self.seed_generator
        )
        outputs = mean + ops.sqrt(variance + _EPSILON) * noise
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return outputs

    def _keep(self):
        if self.threshold is None:
            return ops.ones_like(self.log_sigma2)
        return ops.cast(
            self.log_alpha() < self.threshold, self.log_sigma2.dtype
        )

    def kernel_values(self, training):
        kernel = self.layer.kernel
        return [(kernel, kernel.value * self._keep())]

    def importances(self):
        return [-ops.convert_to_numpy(self.log_alpha())]

    def masks(self):
        return [ops.convert_to_numpy(self._keep())]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "threshold": self.threshold,
                "log_sigma2_init": self.log_sigma2_init,
            }
        )
        return config


def apply_variational_dropout(
    model,
    coefficient=0.01 / 50000,
    threshold=3.0,
    log_sigma2_init=-10.0,
    exclude=None,
    exclude_logits=True,
    seed=None,
):
    """Returns a copy of `model` with its Dense/Conv layers in
    `VariationalDropout` (named `vd_<name>`).

    Every Dense, Conv1D, Conv2D and Conv3D layer not excluded is wrapped
    (the logits layer is left alone by default); other layers with kernels
    are left as they are. `model` is not modified.

    Example:
    >>> vd_model = apply_variational_dropout(model, coefficient=0.01 / 60000)
    """
    params = dict(
        coefficient=coefficient,
        threshold=threshold,
        log_sigma2_init=log_sigma2_init,
    )
    return apply_wrapper(
        model,
        VariationalDropout,
        params,
        exclude=exclude,
        exclude_logits=exclude_logits,
        seed=seed,
        prefix="vd",
    )
