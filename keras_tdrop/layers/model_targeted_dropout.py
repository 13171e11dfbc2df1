import fnmatch
import re

import keras

from keras_tdrop import batched_targeting
from keras_tdrop import keras_adapter as adapter
from keras_tdrop.kernels import call_with_values
from keras_tdrop.kernels import check_model
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.kernels import logits_kernels
from keras_tdrop.layers.group_targeting import GroupTargeting
from keras_tdrop.layers.targeted_dropout import TargetedDropout
from keras_tdrop.layers.targeted_rates import TargetedRates
from keras_tdrop.layers.targeted_rates import with_saved_semantics

__all__ = [
    "ModelTargetedDropout",
    "model_targeted_dropouts",
]


@keras.saving.register_keras_serializable(package="keras_tdrop")
class ModelTargetedDropout(TargetedRates, keras.Model):
    """Targeted dropout on chosen kernels of any model, without cloning it.

    Holds the given model (Sequential, functional or subclassed, with its
    kernels in plain layers or inside custom ones) and, in training, runs
    it with each chosen kernel replaced by its dropped value: the least
    important elements per output column (lowest |w|, or lowest-L2
    columns) dropped with probability `rate`, fresh noise every step, by
    the same targeting functions as `TargetedDropout`. The stored weights
    are never modified, and updates the model makes to its other state
    (normalization statistics, seeds) in training are kept. At inference
    the model runs unchanged (unless the reference prunes at inference).
    Use it where layers cannot be wrapped one by one: subclassed models,
    kernels inside custom layers (KerasHub blocks).

    The current alpha and gamma live in non-trainable variables, which
    `RampingCallback` ramps as it ramps `TargetedDropout` layers, and a
    `.keras` file keeps. Train, save and load the wrapper; the model it
    holds (`.model`) is the trained model, ready for pruning and export.

    Kernels are chosen among every kernel of the model (variables named
    `kernel`, see `keras_tdrop.kernels`). A pattern is a glob matched
    against a kernel's path (`"block/attn/query/kernel"`) or any trailing
    part of it that starts after a `/`, so that `"block/*"` chooses every
    kernel under a layer named `block` wherever it sits; or a compiled
    `re.Pattern`, searched in the path. A predicate takes the kernel
    variable and returns a bool. Every pattern must match some kernel.

    Args:
        model: the `keras.Model` to train with targeted dropout.
        rate: float in [0, 1], alpha, the drop probability of targeted
            elements (the final value when ramped).
        target_rate: float in [0, 1], gamma, the proportion of each kernel
            targeted (the final value when ramped).
        targeting: `"weight"` or `"unit"`.
        reference: `None`, `"t2t"` or `"for_ai"`; see
            `keras_tdrop.targeting`.
        include: `None` (every kernel), a pattern, a list of patterns, or
            a predicate `variable -> bool`: the kernels to target.
        exclude: the same forms: kernels never targeted.
        exclude_logits: bool, whether to leave the logits kernels alone
            (those of the layers producing a graph model's outputs; for a
            subclassed model, the kernel its forward pass reads last).
        prune_at_inference: optional bool; by default the reference's own
            choice: `"t2t"` prunes every chosen kernel at inference,
            `"for_ai"` the convolution kernels, the default never.
        noise, rescale: the unit semantics, as in `TargetedDropout`.
        seed: optional int for the dropout noise.
        groups: bool, group-aware unit targeting (a functional or
            Sequential model, `targeting="unit"`): every kernel writing a
            channel group of the channel dependency graph targets the same
            channels, the group's lowest by summed L2 norm of all its
            kernel slices, recomputed each step, which are exactly the
            channels `compute_masks(..., groups=True)` prunes and `shrink`
            removes. Kernels outside such groups (a residual stream that
            feeds a LayerNormalization, the stem) are not targeted; see
            `group_targeting.ungrouped`.
        hold_statistics: bool, with `groups=True` and column noise: a
            step that drops a channel leaves that channel's moving
            statistics (a BatchNormalization's `moving_mean` and
            `moving_variance`) as they were. The drop zeroes the channel's
            writing kernels, so its batch variance is 0, and a
            normalization layer would otherwise learn that and normalise
            the undropped channel wrongly at inference (the dense network
            then scores near chance until `recalibrate_batchnorm`). The
            training forward pass is unchanged: the dropped channel is
            what the pruned network computes. False: the statistics learn
            the dropped steps too (the behaviour before 0.10).
        clean_steps: float in [0, 1), the fraction of training steps taken
            without any drop (drawn per step), on which alone every moving
            statistic of the model (BatchNormalization's `moving_mean`,
            `moving_variance`) learns; the other steps leave them all as
            they were. Dropping channels also shifts what the layers after
            them see, so statistics learned on dropped steps do not fit the
            dense network (with `hold_statistics` alone, a dense
            MobileNetV2-style network scored 60.3% as trained against
            76.9% with its statistics re-estimated; with `clean_steps=0.2`,
            77.9% as trained). 0 (the default): every step drops, and
            `hold_statistics` applies.

    Call arguments:
        The model's, plus `training`.

    Example:
    >>> td = ModelTargetedDropout(model, rate=0.5, target_rate=0.75,
    ...                           exclude=["stem/*"])
    >>> td.compile(optimizer="sgd", loss="mse")
    >>> td.fit(x, y, callbacks=[RampingCallback(ramp_fraction=(0.5, 1.0))])
    >>> trained = td.model

    Reference:
    - [Gomez et al., 2019](https://arxiv.org/abs/1905.13678)
    """

    def __init__(
        self,
        model,
        rate=0.5,
        target_rate=0.5,
        targeting="weight",
        reference=None,
        include=None,
        exclude=None,
        exclude_logits=True,
        prune_at_inference=None,
        noise=None,
        rescale=False,
        seed=None,
        groups=False,
        hold_statistics=True,
        clean_steps=0.0,
        **kwargs,
    ):
        check_model(model)
        super().__init__(**kwargs)
        self._set_targeted_arguments(
            rate,
            target_rate,
            targeting,
            reference,
            prune_at_inference,
            noise,
            rescale,
        )
        _check_selector("include", include)
        _check_selector("exclude", exclude)
        if not isinstance(exclude_logits, bool):
            raise TypeError(
                "`exclude_logits` must be a bool. "
                f"Received: exclude_logits={exclude_logits!r}"
            )
        if not isinstance(groups, bool):
            raise TypeError(
                f"`groups` must be a bool. Received: groups={groups!r}"
            )
        if not isinstance(hold_statistics, bool):
            raise TypeError(
                "`hold_statistics` must be a bool. "
                f"Received: hold_statistics={hold_statistics!r}"
            )
        if (
            isinstance(clean_steps, bool)
            or not isinstance(clean_steps, (int, float))
            or not 0.0 <= clean_steps < 1.0
        ):
            raise ValueError(
                "`clean_steps` must be a float in [0, 1). "
                f"Received: clean_steps={clean_steps!r}"
            )
        if groups and (targeting != "unit" or reference is not None):
            raise ValueError(
                "`groups=True` targets whole channels of the channel graph: "
                'it needs targeting="unit" and reference=None. Received: '
                f"targeting={targeting!r}, reference={reference!r}"
            )
        if groups:
            try:
                adapter.functional_of(model)
            except adapter.GraphError as error:
                raise ValueError(
                    "`groups=True` needs the channel graph of a functional "
                    f"or Sequential model. {error}"
                ) from None
        self.model = model
        self.groups = groups
        self.hold_statistics = hold_statistics
        self.clean_steps = float(clean_steps)
        self._group_targeting = None
        self.include = include
        self.exclude = exclude
        self.exclude_logits = exclude_logits
        self.seed = seed
        self._kernels = None
        if model.built:
            self._kernels = self._select()
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._add_rate_variables()
        self.built = model.built

    def build(self, input_shape):
        if not self.model.built:
            # Runs the model on symbolic inputs, which builds any model.
            self.model(
                keras.tree.map_shape_structure(keras.KerasTensor, input_shape)
            )
        if self._kernels is None:
            self._kernels = self._select()

    @property
    def group_targeting(self):
        """The `GroupTargeting` of the model's channel groups (with
        `groups=True`), else None."""
        if self.groups and self._group_targeting is None:
            self._group_targeting = GroupTargeting(
                self.model, self._kernels, self.exclude_logits
            )
        return self._group_targeting

    def _select(self):
        """The targeted kernels, checked; nothing is changed."""
        kernels = kernel_variables(self.model)
        if not kernels:
            raise ValueError(
                "`model` has no kernels to target. Received: model="
                f"{type(self.model).__name__} '{self.model.name}'"
            )
        inside = set()
        for layer in adapter.sublayers(self.model):
            if isinstance(layer, TargetedDropout):
                inside.update(id(k) for k in kernel_variables(layer))
        kernels = [k for k in kernels if id(k) not in inside]
        chosen = [k for k in kernels if _selects(self.include, k, True)]
        chosen = [k for k in chosen if not _selects(self.exclude, k, False)]
        _check_matches("include", self.include, kernels)
        _check_matches("exclude", self.exclude, kernels)
        if self.exclude_logits:
            logits = {id(k) for k in self.logits_kernels()}
            chosen = [k for k in chosen if id(k) not in logits]
        if not chosen:
            raise ValueError(
                "No kernel of the model is left to target. Received: "
                f"include={self.include!r}, exclude={self.exclude!r}, "
                f"exclude_logits={self.exclude_logits}; the kernels are "
                f"{[k.path for k in kernels]}"
            )
        return chosen

    def logits_kernels(self):
        """The model's logits kernels (see `exclude_logits`)."""
        found = logits_kernels(self.model)
        if not found and self.exclude_logits:
            raise ValueError(
                f"Cannot find the logits kernel of model '{self.model.name}'"
                " (it has no graph, and no input shape to run it on): "
                "build it by calling it once, or pass exclude_logits=False "
                "and `exclude` its output layer."
            )
        return found

    @property
    def targeted_kernels(self):
        """The kernel variables targeted in training."""
        return list(self._kernels or [])

    def _inference_pruned(self):
        """The targeted kernels that inference runs with pruned."""
        layers = [self.model]
        if self.reference == "for_ai":
            # It prunes convolution kernels only: ask each layer.
            layers += adapter.sublayers(self.model)
        pruned = {
            id(k)
            for layer in layers
            if self._prunes_at_inference_in(layer)
            for k in kernel_variables(layer)
        }
        return [k for k in self._kernels if id(k) in pruned]

    def dropped_kernels(self, training=True):
        """`[(kernel, value)]`: the values the model runs on now.

        In training, each targeted kernel dropped (fresh noise at every
        call); at inference, the kernels inference prunes, pruned.
        """
        return self._dropped_and_held(training)[0]

    def _dropped_and_held(self, training):
        """`(dropped_kernels(training), held)`: `held` lists the moving
        statistics a grouped training step leaves as they were (see
        `GroupTargeting.dropped_and_held`)."""
        kernels = self._kernels if training else self._inference_pruned()
        rate, held_all = self._current_rate, None
        if training and self.clean_steps:
            draw = keras.random.uniform((), seed=self.seed_generator)
            clean = keras.ops.less(draw, self.clean_steps)
            rate = keras.ops.where(
                clean, 0.0, keras.ops.cast(self._current_rate, "float32")
            )
            held_all = [
                (
                    v,
                    keras.ops.broadcast_to(
                        keras.ops.logical_not(clean), v.shape
                    ),
                )
                for v in self.model.non_trainable_variables
                if v.name.startswith("moving_")
            ]
        if training and self.groups:
            grouping = self.group_targeting
            values = {
                id(v): adapter.stored_value(v)
                for v in kernel_variables(self.model)
            }
            dropped, held = grouping.dropped_and_held(
                values,
                rate,
                self._current_target_rate,
                self.seed_generator,
                noise=self.noise,
                rescale=self.rescale,
            )
            if held_all is not None:
                return dropped, held_all
            return dropped, held if self.hold_statistics else []
        if not training:
            return [
                (kernel, self._dropped_value(kernel, False))
                for kernel in kernels
            ], []
        # One selection per kernel size, not per kernel: what a network of
        # many small layers needs to build and run its step quickly.
        values = batched_targeting.targeted_dropout_many(
            [adapter.stored_value(kernel) for kernel in kernels],
            rate,
            self._current_target_rate,
            targeting=self.targeting,
            reference=self.reference,
            seed=self.seed_generator,
            noise=self.noise,
            rescale=self.rescale,
        )
        return list(zip(kernels, values)), held_all or []

    def call(self, inputs, training=None, **kwargs):
        mapping, held = self._dropped_and_held(bool(training))
        kwargs["training"] = training
        if not mapping:
            return self.model(inputs, **kwargs)
        return call_with_values(
            self.model, mapping, inputs, (), kwargs, self.add_loss, held
        )

    def get_config(self):
        for name in ("include", "exclude"):
            if callable(getattr(self, name)):
                raise NotImplementedError(
                    f"A ModelTargetedDropout with a predicate `{name}` is not"
                    " serializable; select the kernels with patterns."
                )
        config = super().get_config()
        config.update(
            {
                "model": keras.saving.serialize_keras_object(self.model),
                "rate": self.rate,
                "target_rate": self.target_rate,
                "targeting": self.targeting,
                "reference": self.reference,
                "include": _serializable(self.include),
                "exclude": _serializable(self.exclude),
                "exclude_logits": self.exclude_logits,
                "prune_at_inference": self.prune_at_inference,
                "noise": self.noise,
                "rescale": self.rescale,
                "seed": self.seed,
                "groups": self.groups,
                "hold_statistics": self.hold_statistics,
                "clean_steps": self.clean_steps,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = with_saved_semantics(config)
        # Files saved before `hold_statistics` trained without it.
        config.setdefault("hold_statistics", False)
        config["model"] = keras.saving.deserialize_keras_object(
            config["model"], custom_objects=custom_objects
        )
        for name in ("include", "exclude"):
            config[name] = _deserialized(config.get(name))
        return cls(**config)


def model_targeted_dropouts(model):
    """Every ModelTargetedDropout in `model` (itself and nested models)."""
    return [
        layer
        for layer in [model, *adapter.sublayers(model)]
        if isinstance(layer, ModelTargetedDropout)
    ]


def _patterns(selector):
    if isinstance(selector, (str, re.Pattern)):
        return [selector]
    return list(selector)


def _check_selector(name, selector):
    if selector is None or callable(selector):
        return
    try:
        patterns = _patterns(selector)
    except TypeError:
        patterns = [selector]
    if not patterns or not all(
        isinstance(p, (str, re.Pattern)) for p in patterns
    ):
        raise TypeError(
            f"`{name}` must be None, a pattern (a glob string or a compiled "
            "re.Pattern), a non-empty list of patterns, or a predicate "
            f"`variable -> bool`. Received: {name}={selector!r}"
        )


def _matches(pattern, path):
    if isinstance(pattern, re.Pattern):
        return pattern.search(path) is not None
    parts = path.split("/")
    return any(
        fnmatch.fnmatchcase("/".join(parts[i:]), pattern)
        for i in range(len(parts))
    )


def _selects(selector, kernel, default):
    if selector is None:
        return default
    if callable(selector):
        return bool(selector(kernel))
    return any(_matches(p, kernel.path) for p in _patterns(selector))


def _check_matches(name, selector, kernels):
    if selector is None or callable(selector):
        return
    for pattern in _patterns(selector):
        if not any(_matches(pattern, k.path) for k in kernels):
            raise ValueError(
                f"`{name}` has a pattern that matches no kernel of the "
                f"model. Received: {name}={selector!r}; the kernels are "
                f"{[k.path for k in kernels]}"
            )


def _serializable(selector):
    if isinstance(selector, re.Pattern):
        return {"regex": selector.pattern}
    if selector is None or isinstance(selector, str):
        return selector
    return [_serializable(p) for p in selector]


def _deserialized(selector):
    if isinstance(selector, dict):
        return re.compile(selector["regex"])
    if isinstance(selector, list):
        return [_deserialized(p) for p in selector]
    return selector
