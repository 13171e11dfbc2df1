"""What TargetedDropout and ModelTargetedDropout share: their checked
arguments, alpha and gamma as variables, and the targeted dropout of one
kernel."""

import keras
from keras import ops

from keras_tdrop import keras_adapter
from keras_tdrop import targeting as targeting_lib

__all__ = [
    "CONV_TYPES",
    "SAVED_BEFORE_NOISE",
    "TargetedRates",
    "with_saved_semantics",
]

CONV_TYPES = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
)


# The unit semantics of a layer whose saved config predates `noise` and
# `rescale`: it loads with the behaviour it was trained with.
SAVED_BEFORE_NOISE = {"noise": "element", "rescale": False}


def with_saved_semantics(config):
    """`config` with the semantics of files saved before `noise`/`rescale`
    existed filled in (a copy; new files carry their own)."""
    config = dict(config)
    for key, value in SAVED_BEFORE_NOISE.items():
        config.setdefault(key, value)
    return config


class TargetedRates:
    """Mixin of a Keras layer with `rate` (alpha) and `target_rate` (gamma).

    `_set_targeted_arguments(...)` checks and keeps the arguments;
    `_add_rate_variables()` creates the non-trainable variables holding the
    current alpha and gamma, which `set_rates` assigns in place (no
    retracing) and `RampingCallback` ramps to `rate` and
    `final_target_rate`.
    """

    def _set_targeted_arguments(
        self,
        rate,
        target_rate,
        targeting,
        reference,
        prune_at_inference,
        noise=None,
        rescale=False,
    ):
        targeting_lib.check_rate("rate", rate)
        targeting_lib.check_rate("target_rate", target_rate)
        targeting_lib.check_targeting(targeting)
        targeting_lib.check_reference(reference)
        targeting_lib.check_noise(noise, rescale, targeting, reference)
        if prune_at_inference is not None and not isinstance(
            prune_at_inference, bool
        ):
            raise TypeError(
                "`prune_at_inference` must be None or a bool. "
                f"Received: prune_at_inference={prune_at_inference!r}"
            )
        self.rate = float(rate)
        self.target_rate = float(target_rate)
        self.targeting = targeting
        self.reference = reference
        self.prune_at_inference = prune_at_inference
        # Kept resolved, so the config names the semantics trained with.
        self.noise = targeting_lib.resolve_noise(noise, targeting, reference)
        self.rescale = rescale

    @property
    def final_target_rate(self):
        """The gamma a ramp ends at (`target_rate` unless overridden)."""
        return self.target_rate

    def _add_rate_variables(self):
        self._current_rate = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.rate),
            trainable=False,
            name="current_rate",
        )
        self._current_target_rate = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.final_target_rate),
            trainable=False,
            name="current_target_rate",
        )

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
            keras_adapter.assign(self._current_rate, rate)
        if target_rate is not None:
            keras_adapter.assign(self._current_target_rate, target_rate)

    def _prunes_at_inference_in(self, layer):
        """Whether inference zeroes the targeted set of `layer`'s kernels:
        `prune_at_inference`, or by default the reference's own choice."""
        if self.prune_at_inference is not None:
            return self.prune_at_inference
        if self.reference == "for_ai":
            # for-ai/TD prunes its conv layers at evaluation, not dense ones.
            return isinstance(layer, CONV_TYPES)
        return self.reference == "t2t"

    def _dropped_value(self, kernel, training, target_rate=None):
        """`kernel` as the layer runs on it: in training dropped (fresh
        noise), at inference with its targeted set zeroed."""
        return targeting_lib.targeted_dropout(
            keras_adapter.stored_value(kernel),
            self._current_rate,
            self._current_target_rate if target_rate is None else target_rate,
            targeting=self.targeting,
            reference=self.reference,
            training=training,
            prune_at_inference=True,
            seed=self.seed_generator,
            noise=self.noise,
            rescale=self.rescale,
        )
