"""Kernels multiplied by a 0/1 mask: fixed (random pruning) or fresh
Bernoulli noise (standard weight or unit dropout)."""

import math

import keras
import numpy as np
from keras import ops

from keras_tdrop import targeting as targeting_lib
from keras_tdrop.layers.kernel_wrapper import KernelWrapper
from keras_tdrop.layers.kernel_wrapper import kernel_wrappers

__all__ = [
    "FixedMask",
    "KernelDropout",
    "kernel_mask_layers",
    "random_mask",
]


def random_mask(shape, fraction, targeting="weight", rng=None):
    """A 0/1 float32 mask of `shape` removing a random `fraction`.

    `"weight"`: exactly `floor(fraction * rows)` random zeros in every
    output column (the kernel viewed as `[rows, cols]`); `"unit"`: exactly
    `floor(fraction * cols)` random columns of zeros. The counts are those of
    magnitude pruning at the same fraction (`compute_masks`), so a random and
    a magnitude-pruned network have the same sparsity.
    """
    targeting_lib.check_rate("fraction", fraction)
    targeting_lib.check_targeting(targeting)
    rng = np.random.default_rng(rng)
    rows, cols = targeting_lib.matrix_shape(shape)
    n = rows if targeting == "weight" else cols
    # The same float32 guard as targeting.target_count, so counts agree.
    k = min(n, int(math.floor(np.float32(fraction) * n * (1 + 2.0**-20))))
    if targeting == "weight":
        order = rng.random((rows, cols)).argsort(axis=0).argsort(axis=0)
        mask = (order >= k).astype("float32")
    else:
        keep = np.ones(cols, "float32")
        keep[rng.permutation(cols)[:k]] = 0.0
        mask = np.broadcast_to(keep, (rows, cols)).copy()
    return mask.reshape(shape)


class _KernelMaskWrapper(KernelWrapper):
    """Runs the wrapped layer on `kernel * mask(kernel)` (stored kernels are
    untouched; gradients reach them through the mask)."""

    def __init__(self, layer, targeting="weight", seed=None, **kwargs):
        super().__init__(layer, seed=seed, **kwargs)
        targeting_lib.check_targeting(targeting)
        self.targeting = targeting

    def get_config(self):
        return {**super().get_config(), "targeting": self.targeting}


@keras.saving.register_keras_serializable(package="keras_tdrop")
class FixedMask(_KernelMaskWrapper):
    """A fixed random sub-network of the wrapped layer's kernels.

    Chosen once when the layer is built and never changed: a random
    `fraction` of the weights of every output column (`"weight"`) or of the
    columns (`"unit"`) is zero in training and inference alike, so the layer
    trains as the smaller network it is. The masks are non-trainable
    variables (`mask_0`, ... one per kernel), saved with the model. The
    "random-prune" experiment of the paper (Table 7): prune at random before
    training, then train.

    Args:
        layer: the `keras.layers.Layer` to wrap; it must have a kernel.
        fraction: float in [0, 1], the share removed (see `random_mask`).
        targeting: `"weight"` or `"unit"`.
        seed: optional int choosing the masks.

    Example:
    >>> layer = FixedMask(keras.layers.Dense(8), fraction=0.75, seed=0)
    >>> y = layer(np.ones((2, 4)))  # 1 of the 4 weights per unit left

    Reference:
    - [Gomez et al., 2019](https://arxiv.org/abs/1905.13678), Sec. 6.
    """

    def __init__(self, layer, fraction, targeting="weight", seed=None, **kw):
        super().__init__(layer, targeting=targeting, seed=seed, **kw)
        targeting_lib.check_rate("fraction", fraction)
        self.fraction = float(fraction)

    def build_wrapper(self, kernels):
        rng = np.random.default_rng(self.seed)
        self.masks = []
        for i, kernel in enumerate(kernels):
            value = random_mask(
                kernel.shape, self.fraction, self.targeting, rng
            )
            self.masks.append(
                self.add_weight(
                    shape=kernel.shape,
                    initializer=keras.initializers.Constant(value),
                    dtype=kernel.dtype,
                    trainable=False,
                    name=f"mask_{i}",
                )
            )

    def kernel_values(self, training):
        return [
            (kernel, kernel.value * ops.cast(mask, kernel.dtype))
            for kernel, mask in zip(self.kernels(), self.masks)
        ]

    def get_config(self):
        return {**super().get_config(), "fraction": self.fraction}


@keras.saving.register_keras_serializable(package="keras_tdrop")
class KernelDropout(_KernelMaskWrapper):
    """Standard dropout on the wrapped layer's kernels: weights or units.

    In training every kernel element (`"weight"`) or every output column
    (`"unit"`, one Bernoulli per column shared by its rows) is dropped with
    probability `rate`, with fresh noise every step (shared by the batch),
    and the survivors are scaled by `1 / (1 - rate)`; inference is
    unchanged. The paper's "dropout" baseline: targeted dropout with every
    element targeted.

    Args:
        layer: the `keras.layers.Layer` to wrap; it must have a kernel.
        rate: float in [0, 1), the drop probability.
        targeting: `"weight"` or `"unit"`.
        seed: optional int for the noise.

    Example:
    >>> layer = KernelDropout(keras.layers.Dense(8), rate=0.5, seed=0)
    >>> y = layer(np.ones((2, 4)), training=True)

    Reference:
    - [Gomez et al., 2019](https://arxiv.org/abs/1905.13678), Sec. 5.
    """

    def __init__(self, layer, rate, targeting="weight", seed=None, **kwargs):
        super().__init__(layer, targeting=targeting, seed=seed, **kwargs)
        targeting_lib.check_rate("rate", rate)
        if rate >= 1.0:
            raise ValueError(
                f"`rate` must be in [0, 1). Received: rate={rate!r}"
            )
        self.rate = float(rate)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def kernel_values(self, training):
        if not training or self.rate == 0.0:
            return []
        return [
            (kernel, self._dropped(kernel.value)) for kernel in self.kernels()
        ]

    def _dropped(self, value):
        shape = tuple(value.shape)
        if self.targeting == "unit":
            shape = (1,) * (len(shape) - 1) + shape[-1:]
        keep = keras.random.uniform(shape, seed=self.seed_generator)
        keep = ops.cast(keep >= self.rate, value.dtype)
        return value * keep / (1.0 - self.rate)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


def kernel_mask_layers(model):
    """Every FixedMask and KernelDropout in `model`, nested models too."""
    return kernel_wrappers(model, _KernelMaskWrapper)
