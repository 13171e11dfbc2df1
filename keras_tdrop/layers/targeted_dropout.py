import keras
from keras import ops

from keras_tdrop import targeting as targeting_lib
from keras_tdrop.layers.kernel_wrapper import KernelWrapper
from keras_tdrop.layers.kernel_wrapper import fold
from keras_tdrop.layers.targeted_rates import TargetedRates
from keras_tdrop.layers.targeted_rates import with_saved_semantics

__all__ = [
    "TargetedDropout",
]


@keras.saving.register_keras_serializable(package="keras_tdrop")
class TargetedDropout(TargetedRates, KernelWrapper):
    """Targeted dropout on the kernels of the wrapped layer.

    In training, the least important elements of each kernel (per output
    column, the lowest-|w| weights or the lowest-L2 columns) are dropped with
    probability `rate`, with fresh noise every step, so that the network
    learns not to rely on them and pruning them afterwards costs little. The
    stored weights are never modified: the wrapped layer runs on a dropped
    copy of its kernels. Works around any layer with kernels (Dense, Conv*,
    DepthwiseConv2D, EinsumDense, MultiHeadAttention and its four kernels).

    The current alpha and gamma live in non-trainable variables, so that
    `RampingCallback` can change them during `fit()` without retracing, and a
    saved model resumes with the values it had.

    Args:
        layer: the `keras.layers.Layer` to wrap; it must have a kernel.
        rate: float in [0, 1], alpha, the drop probability of targeted
            elements (the final value when ramped).
        target_rate: float in [0, 1], gamma, the proportion of each kernel
            targeted (the final value when ramped).
        targeting: `"weight"` or `"unit"`.
        reference: `None` (exact counts, no rescaling), `"t2t"`
            (Tensor2Tensor) or `"for_ai"` (for-ai/TD); see
            `keras_tdrop.targeting`.
        keep_per_column: optional int N (Xtreme): in place of
            `target_rate` (kept as given, in the config too), the gamma
            that leaves exactly N weights per output column of each
            kernel, `(rows - N) / rows` (`final_target_rate`).
        prune_at_inference: optional bool; by default the reference's own
            choice: `"t2t"` prunes at inference, `"for_ai"` prunes convolution
            kernels only, the default semantics never do.
        noise: `"element"` (one Bernoulli draw per targeted weight),
            `"column"` (one per targeted unit, so whole units are dropped;
            unit targeting only), or `None` (the default): `"column"` for
            unit targeting with `reference=None` (the best unit semantics
            measured in `docs/reproducing.md`), `"element"` otherwise.
            The config holds the resolved value.
        rescale: bool, whether the surviving targeted weights are scaled by
            `1 / (1 - rate)` in training, so that the expected kernel is the
            dense one (reference `None` only; `"t2t"` always rescales).
            A file saved before these two arguments existed loads with
            `"element"` and `False`, the semantics it was trained with
            (unit targeting's default was `"element"` then).
        seed: optional int for the dropout noise.

    Call arguments:
        The wrapped layer's, plus `training`.

    Example:
    >>> layer = TargetedDropout(keras.layers.Dense(8), rate=0.5,
    ...                         target_rate=0.75)
    >>> y = layer(np.ones((2, 4)), training=True)

    Reference:
    - [Gomez et al., 2019](https://arxiv.org/abs/1905.13678)
    """

    def __init__(
        self,
        layer,
        rate=0.5,
        target_rate=0.5,
        targeting="weight",
        reference=None,
        keep_per_column=None,
        prune_at_inference=None,
        noise=None,
        rescale=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(layer, seed=seed, **kwargs)
        self._set_targeted_arguments(
            rate,
            target_rate,
            targeting,
            reference,
            prune_at_inference,
            noise,
            rescale,
        )
        if keep_per_column is not None and (
            isinstance(keep_per_column, bool)
            or not isinstance(keep_per_column, int)
            or keep_per_column < 0
        ):
            raise ValueError(
                "`keep_per_column` must be None or an int >= 0. "
                f"Received: keep_per_column={keep_per_column!r}"
            )
        self.keep_per_column = keep_per_column
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape=None):
        if not self.layer.built:
            try:
                self.layer.build(input_shape)
            except TypeError:
                # Layers whose build takes several shapes (attention) are
                # built by their first call, in `call`.
                if self.keep_per_column is not None:
                    raise ValueError(
                        "`keep_per_column` needs the kernel shapes at build "
                        f"time; build layer '{self.layer.name}' (call it "
                        "once) before wrapping it."
                    ) from None
        if self.layer.built:
            self._check_kernels()
        self._add_rate_variables()
        self.built = True

    @property
    def final_target_rate(self):
        """The gamma a ramp ends at: `target_rate`, or with
        `keep_per_column` the first kernel's Xtreme gamma (once built)."""
        if self.keep_per_column is None or not self.layer.built:
            return self.target_rate
        return self._xtreme_gammas()[0]

    def _xtreme_gammas(self):
        gammas = []
        for kernel in self.kernels():
            rows, _ = targeting_lib.matrix_shape(kernel.shape)
            if self.keep_per_column > rows:
                raise ValueError(
                    "`keep_per_column` cannot exceed the column length of "
                    f"kernel '{kernel.path}' ({rows}). Received: "
                    f"keep_per_column={self.keep_per_column}"
                )
            gammas.append((rows - self.keep_per_column) / rows)
        return gammas

    def _kernel_scales(self):
        """Per kernel, its gamma as a multiple of the layer's gamma.

        1 everywhere, except with `keep_per_column`, where the layer's gamma
        is its first kernel's and the others follow in proportion so that
        each ends with N weights per column.
        """
        if self.keep_per_column is None:
            return [1.0] * len(self.kernels())
        gammas = self._xtreme_gammas()
        return [g / gammas[0] if gammas[0] else 1.0 for g in gammas]

    def prunes_at_inference(self):
        """Whether inference zeroes the targeted set (see `__init__`)."""
        return self._prunes_at_inference_in(self.layer)

    def _dropped_kernels(self, training):
        """`[(kernel variable, value the layer runs on)]`, every kernel.

        In training: the dropped copy (fresh noise). At inference: each
        kernel with its targeted set at the current gamma zeroed.
        """
        mapping = []
        for kernel, scale in zip(self.kernels(), self._kernel_scales()):
            # The count is clipped to [0, n] anyway: no op for a scale of 1.
            gamma = None
            if scale != 1.0:
                gamma = ops.minimum(self._current_target_rate * scale, 1.0)
            mapping.append(
                (kernel, self._dropped_value(kernel, training, gamma))
            )
        return mapping

    def kernel_values(self, training):
        if not training and not self.prunes_at_inference():
            return []
        return self._dropped_kernels(training)

    def folded_weights(self, prune=None):
        """The wrapped layer's weights as inference uses them (numpy);
        `prune=True` / `False` overrides the layer's own choice."""
        if prune is None:
            prune = self.prunes_at_inference()
        return fold(self.layer, self._dropped_kernels(False) if prune else [])

    def inference_kernels(self, prune=None):
        """The kernels as inference uses them, as numpy arrays.

        The stored kernels when the layer does not prune at inference;
        otherwise each with its targeted set (current alpha and gamma)
        zeroed. `prune=True` / `False` overrides the layer's own choice.
        `strip_targeted_dropout` folds these into the plain model.
        """
        if prune is None:
            prune = self.prunes_at_inference()
        if not prune:
            return [ops.convert_to_numpy(k.value) for k in self.kernels()]
        return [
            ops.convert_to_numpy(value)
            for _, value in self._dropped_kernels(training=False)
        ]

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return super().from_config(
            with_saved_semantics(config), custom_objects=custom_objects
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "rate": self.rate,
                "target_rate": self.target_rate,
                "targeting": self.targeting,
                "reference": self.reference,
                "keep_per_column": self.keep_per_column,
                "prune_at_inference": self.prune_at_inference,
                "noise": self.noise,
                "rescale": self.rescale,
            }
        )
        return config
