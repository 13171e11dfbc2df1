import keras
from keras import ops
from keras.src.backend.common.variables import AutocastScope

from keras_tdrop import targeting as targeting_lib
from keras_tdrop.kernels import call_with_values
from keras_tdrop.kernels import kernel_variables

_CONV_TYPES = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
)


@keras.saving.register_keras_serializable(package="keras_tdrop")
class TargetedDropout(keras.layers.Wrapper):
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
        keep_per_column: optional int N (Xtreme): overrides `target_rate`
            with the gamma that leaves exactly N weights per output column
            of each kernel, `(rows - N) / rows`.
        prune_at_inference: optional bool; by default the reference's own
            choice: `"t2t"` prunes at inference, `"for_ai"` prunes convolution
            kernels only, the default semantics never do.
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
        seed=None,
        **kwargs,
    ):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "`layer` must be a keras.layers.Layer. "
                f"Received: layer={layer!r}"
            )
        super().__init__(layer, **kwargs)
        targeting_lib.check_rate("rate", rate)
        targeting_lib.check_rate("target_rate", target_rate)
        targeting_lib.check_targeting(targeting)
        targeting_lib.check_reference(reference)
        if keep_per_column is not None and (
            isinstance(keep_per_column, bool)
            or not isinstance(keep_per_column, int)
            or keep_per_column < 0
        ):
            raise ValueError(
                "`keep_per_column` must be None or an int >= 0. "
                f"Received: keep_per_column={keep_per_column!r}"
            )
        if prune_at_inference not in (None, True, False):
            raise TypeError(
                "`prune_at_inference` must be None or a bool. "
                f"Received: prune_at_inference={prune_at_inference!r}"
            )
        if layer.built:
            self._check_kernels()
        self.rate = float(rate)
        self.target_rate = float(target_rate)
        self.targeting = targeting
        self.reference = reference
        self.keep_per_column = keep_per_column
        self.prune_at_inference = prune_at_inference
        self.seed = seed
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
            if self.keep_per_column is not None:
                self.target_rate = self._xtreme_gammas()[0]
        self._current_rate = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.rate),
            trainable=False,
            name="current_rate",
        )
        self._current_target_rate = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.target_rate),
            trainable=False,
            name="current_target_rate",
        )
        self.built = True

    def _check_kernels(self):
        if not kernel_variables(self.layer):
            raise ValueError(
                f"TargetedDropout needs a layer with a kernel; layer "
                f"'{self.layer.name}' ({type(self.layer).__name__}) has none."
            )

    def _xtreme_gammas(self):
        gammas = []
        for kernel in kernel_variables(self.layer):
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
            return [1.0] * len(kernel_variables(self.layer))
        gammas = self._xtreme_gammas()
        return [g / gammas[0] if gammas[0] else 1.0 for g in gammas]

    @property
    def current_rate(self):
        """The alpha in use now, as a float."""
        return float(ops.convert_to_numpy(self._current_rate))

    @property
    def current_target_rate(self):
        """The gamma in use now, as a float."""
        return float(ops.convert_to_numpy(self._current_target_rate))

    def set_rates(self, rate=None, target_rate=None):
        """Assigns the current alpha and/or gamma (no retracing)."""
        if rate is not None:
            self._current_rate.assign(rate)
        if target_rate is not None:
            self._current_target_rate.assign(target_rate)

    def prunes_at_inference(self):
        """Whether inference zeroes the targeted set (see `__init__`)."""
        if self.prune_at_inference is not None:
            return self.prune_at_inference
        if self.reference == "for_ai":
            # for-ai/TD prunes its conv layers at evaluation, not dense ones.
            return isinstance(self.layer, _CONV_TYPES)
        return self.reference == "t2t"

    def _dropped_kernels(self, training):
        """`[(kernel variable, value the layer runs on)]`, every kernel.

        In training: the dropped copy (fresh noise). At inference: each
        kernel with its targeted set at the current gamma zeroed, as
        `call` runs it when the layer prunes at inference.
        """
        mapping = []
        for kernel, scale in zip(
            kernel_variables(self.layer), self._kernel_scales()
        ):
            # The count is clipped to [0, n] anyway: no op for a scale of 1.
            gamma = self._current_target_rate
            if scale != 1.0:
                gamma = ops.minimum(gamma * scale, 1.0)
            value = targeting_lib.targeted_dropout(
                _float_value(kernel),
                self._current_rate,
                gamma,
                targeting=self.targeting,
                reference=self.reference,
                training=training,
                prune_at_inference=True,
                seed=self.seed_generator,
            )
            mapping.append((kernel, value))
        return mapping

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
            return [
                ops.convert_to_numpy(k.value)
                for k in kernel_variables(self.layer)
            ]
        return [
            ops.convert_to_numpy(value)
            for _, value in self._dropped_kernels(training=False)
        ]

    def call(self, inputs, *args, training=None, **kwargs):
        if self.layer._call_has_training_arg:
            kwargs["training"] = training
        if not self.layer.built:
            self.layer(inputs, *args, **kwargs)
            self._check_kernels()
        training = bool(training)
        if not training and not self.prunes_at_inference():
            return self.layer(inputs, *args, **kwargs)
        mapping = self._dropped_kernels(training)
        return call_with_values(self.layer, mapping, inputs, args, kwargs)

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
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras' Wrapper.from_config pops "layer" from the caller's dict.
        return super().from_config(dict(config), custom_objects=custom_objects)


def _float_value(kernel):
    # Under a mixed policy the wrapped layer's autocast scope would hand us
    # the 16-bit kernel; targets are ranked on the stored float32 values
    # (the layer still reads the dropped kernel in its compute dtype).
    with AutocastScope(None):
        return kernel.value
