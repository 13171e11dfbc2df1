"""Ordered (triangular) channel dropout on a whole graph model: train once,
truncate to any width afterwards."""

import keras
from keras import ops

from keras_tdrop import keras_adapter as adapter
from keras_tdrop.channels.ordering import check_round_to
from keras_tdrop.channels.ordering import check_width
from keras_tdrop.kernels import call_with_values
from keras_tdrop.kernels import check_model
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.layers.group_targeting import GroupTargeting
from keras_tdrop.layers.targeted_rates import TargetedRates

__all__ = [
    "MODES",
    "ModelOrderedDropout",
    "model_ordered_dropouts",
]

# How the widths of a training step are drawn (the `mode` argument).
MODES = ("sandwich", "uniform", "triangular")


@keras.saving.register_keras_serializable(package="keras_tdrop")
class ModelOrderedDropout(TargetedRates, keras.Model):
    """Ordered channel dropout on every channel group of a graph model.

    Trains a functional or Sequential model so that it can be cut to any
    width afterwards (`keras_tdrop.truncate(model, width)`), with no
    fine-tuning: Triangular Dropout (Staley & Markowitz) and slimmable
    networks (Yu et al.) through the channel dependency graph
    (`keras_tdrop.channels`). At each training pass, every channel group
    (the convolutions feeding one residual `Add`, an expansion with its
    depthwise convolution and squeeze-excite gate, attention heads) keeps
    its first `kept_channels(n, w, round_to)` channels at a drawn width w
    and the others are dropped in every member of the group, where
    truncation cuts them: their writing columns, reading rows, depthwise
    and attention slices are zeroed for the pass (the stored weights are
    never modified). The moving statistics of the dropped channels (a
    BatchNormalization's `moving_mean`, `moving_variance`) are left as
    they were. A pass at width w therefore computes exactly what
    `truncate(model.model, w)` computes.

    Widths are drawn in `[min_width, 1]`, the deepest cut being the
    current `rate` (`1 - min_width`), which `RampingCallback` ramps in
    from 0 as it ramps targeted dropout:
    - `"sandwich"` (universally slimmable networks' sandwich rule): each
      step runs the full width, `min_width` and `num_random` uniformly
      drawn widths on the same batch, and the loss is the mean of their
      losses (their gradients accumulated). Only the full-width pass
      teaches the moving statistics, so the full network's statistics are
      its own; narrower widths recalibrate theirs (`truncate(...,
      recalibrate=data)`). Training outputs are the passes' outputs
      stacked along the batch axis (full width first); `compute_loss`
      repeats the targets to match, and metrics read the full width.
    - `"uniform"` (slimmable): one width per step, shared by all groups.
    - `"triangular"`: the Triangular Dropout paper's per-example widths:
      the batch is split into `chunks` parts, each run at its own width
      (a kernel is shared by the examples of one pass, so a width is
      per chunk: `chunks` equal to the batch size is per example, at
      one pass per example).

    Groups that truncation cannot cut (blocked by a layer the graph cannot
    follow, the stem reading the model input, the logits with
    `exclude_logits`, and groups written by `exclude`d layers) keep all
    their channels. Train and save the wrapper; `.model` is the trained
    model, ready for `truncate` and `export_widths`.

    Args:
        model: a functional or Sequential `keras.Model`.
        min_width: float in (0, 1], the narrowest width trained.
        mode: `"sandwich"`, `"uniform"` or `"triangular"` (see above).
        num_random: int >= 0, random widths per `"sandwich"` step.
        chunks: int >= 1, parts of the batch for `"triangular"`.
        round_to: int >= 1, channel counts are multiples of it (as
            `truncate(..., round_to=...)` cuts; e.g. 8 for mobile kernels).
        exclude: optional list of layer names whose channel groups keep
            all their channels.
        exclude_logits: bool, leave the logits layer's channels whole.
        seed: optional int for the drawn widths.

    Call arguments:
        The model's, plus `training`.

    Example:
    >>> od = ModelOrderedDropout(mobilenet, min_width=0.25, round_to=8)
    >>> od.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    >>> od.fit(x, y, callbacks=[RampingCallback(ramp_fraction=0.25)])
    >>> small = keras_tdrop.truncate(od.model, 0.5, round_to=8)

    References:
    - [Staley & Markowitz, 2022](https://arxiv.org/abs/2205.01235)
    - [Yu & Huang, 2019](https://arxiv.org/abs/1903.05134)
    """

    def __init__(
        self,
        model,
        min_width=0.25,
        mode="sandwich",
        num_random=2,
        chunks=4,
        round_to=1,
        exclude=None,
        exclude_logits=True,
        seed=None,
        **kwargs,
    ):
        check_model(model)
        min_width = check_width(min_width, "min_width")
        if mode not in MODES:
            raise ValueError(
                f"`mode` must be one of {MODES}. Received: mode={mode!r}"
            )
        for name, value, low in (
            ("num_random", num_random, 0),
            ("chunks", chunks, 1),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or (value < low)
            ):
                raise ValueError(
                    f"`{name}` must be an int >= {low}. "
                    f"Received: {name}={value!r}"
                )
        round_to = check_round_to(round_to)
        if exclude is not None and (
            isinstance(exclude, str)
            or not all(isinstance(e, str) for e in exclude)
        ):
            raise TypeError(
                "`exclude` must be None or a list of layer names. "
                f"Received: exclude={exclude!r}"
            )
        if not isinstance(exclude_logits, bool):
            raise TypeError(
                "`exclude_logits` must be a bool. "
                f"Received: exclude_logits={exclude_logits!r}"
            )
        try:
            adapter.functional_of(model)
        except adapter.GraphError as error:
            raise ValueError(
                "ModelOrderedDropout orders the channels of the channel "
                "graph, which needs a functional or Sequential model; "
                "subclassed models can use TriangularDropout layers on "
                f"their units instead. {error}"
            ) from None
        super().__init__(**kwargs)
        self.model = model
        self.min_width = min_width
        self.mode = mode
        self.num_random = num_random
        self.chunks = chunks
        self.round_to = round_to
        self.exclude = list(exclude) if exclude is not None else None
        self.exclude_logits = exclude_logits
        self.seed = seed
        # The deepest cut, ramped by RampingCallback (its gamma is unused).
        self.rate = 1.0 - min_width
        self.target_rate = 1.0
        self._ordering = None
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._add_rate_variables()
        self.built = model.built
        if model.built:
            self._check_groups()

    def build(self, input_shape):
        if not self.model.built:
            self.model(
                keras.tree.map_shape_structure(keras.KerasTensor, input_shape)
            )
        self._check_groups()

    def _check_groups(self):
        if not self.ordering.groups:
            raise ValueError(
                f"Model '{self.model.name}' has no channel group that "
                "truncation can cut (every group is blocked, the stem, the "
                f"logits or excluded; exclude={self.exclude!r}, "
                f"exclude_logits={self.exclude_logits}). See "
                "keras_tdrop.channels.channel_graph(model).blocked_reasons()."
            )

    @property
    def ordering(self):
        """The `GroupTargeting` of the groups ordered dropout cuts."""
        if self._ordering is None:
            self._ordering = GroupTargeting(
                self.model,
                kernel_variables(self.model),
                self.exclude_logits,
                self.exclude,
            )
        return self._ordering

    @property
    def passes(self):
        """Forward passes per training step (`"sandwich"`: 2 + num_random;
        otherwise 1, `"triangular"` splitting the batch into chunks)."""
        return 2 + self.num_random if self.mode == "sandwich" else 1

    def _draw(self):
        deepest = ops.cast(self._current_rate, "float32")
        u = keras.random.uniform((), seed=self.seed_generator)
        return 1.0 - u * deepest

    def _widths(self):
        """The widths of this step's passes (scalar tensors or floats)."""
        deepest = ops.cast(self._current_rate, "float32")
        if self.mode == "sandwich":
            return [1.0, 1.0 - deepest] + [
                self._draw() for _ in range(self.num_random)
            ]
        count = self.chunks if self.mode == "triangular" else 1
        return [self._draw() for _ in range(count)]

    def _pass(self, values, width, inputs, kwargs, freeze_statistics):
        if isinstance(width, float) and width == 1.0:
            mapping, held = [], []
        else:
            mapping, held = self.ordering.truncated(
                values, width, self.round_to
            )
        if freeze_statistics:
            held = [
                (v, ops.ones(v.shape, "bool"))
                for v in self.model.non_trainable_variables
                if v.name.startswith("moving_")
            ]
        return call_with_values(
            self.model, mapping, inputs, (), kwargs, self.add_loss, held
        )

    def call(self, inputs, training=None, **kwargs):
        kwargs["training"] = training
        if not training:
            return self.model(inputs, **kwargs)
        widths = self._widths()
        if self.mode == "triangular" and self.chunks > 1:
            size = ops.shape(keras.tree.flatten(inputs)[0])[0]
            parts = [
                keras.tree.map_structure(
                    lambda x, i=i: x[
                        i * size // self.chunks : (i + 1) * size // self.chunks
                    ],
                    inputs,
                )
                for i in range(self.chunks)
            ]
        else:
            parts = [inputs] * len(widths)
        # The stored kernels, read once for every pass of the step.
        values = {
            id(v): adapter.stored_value(v) for v in kernel_variables(self.model)
        }
        outputs = [
            self._pass(
                values, width, part, kwargs, self.mode == "sandwich" and i > 0
            )
            for i, (width, part) in enumerate(zip(widths, parts))
        ]
        if len(outputs) == 1:
            return outputs[0]
        return keras.tree.map_structure(
            lambda *o: ops.concatenate(o, axis=0), *outputs
        )

    def _repeat(self, values):
        if values is None:
            return None
        return keras.tree.map_structure(
            lambda v: ops.concatenate([v] * self.passes, axis=0), values
        )

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """The mean loss over the step's passes: in a `"sandwich"` training
        step, `y` and `sample_weight` repeated once per pass."""
        if training and self.passes > 1:
            y, sample_weight = self._repeat(y), self._repeat(sample_weight)
        return super().compute_loss(
            x=x,
            y=y,
            y_pred=y_pred,
            sample_weight=sample_weight,
            training=training,
        )

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Metrics of the full width (the first pass of a step)."""
        if self.passes > 1 and y is not None:
            size = ops.shape(keras.tree.flatten(y)[0])[0]
            y_pred = keras.tree.map_structure(lambda p: p[:size], y_pred)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "model": keras.saving.serialize_keras_object(self.model),
                "min_width": self.min_width,
                "mode": self.mode,
                "num_random": self.num_random,
                "chunks": self.chunks,
                "round_to": self.round_to,
                "exclude": self.exclude,
                "exclude_logits": self.exclude_logits,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(
            config["model"], custom_objects=custom_objects
        )
        return cls(**config)


def model_ordered_dropouts(model):
    """Every ModelOrderedDropout in `model` (itself and nested models)."""
    return [
        layer
        for layer in [model, *adapter.sublayers(model)]
        if isinstance(layer, ModelOrderedDropout)
    ]
