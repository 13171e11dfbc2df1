import functools
import numbers

import keras
import numpy as np

from keras_tdrop import schedules
from keras_tdrop import targeting as targeting_lib
from keras_tdrop.layers.model_ordered_dropout import model_ordered_dropouts
from keras_tdrop.layers.model_targeted_dropout import model_targeted_dropouts
from keras_tdrop.wrapping import targeted_dropout_layers

__all__ = [
    "RampingCallback",
]

_SCHEDULES = ("piecewise", "linear", "constant")


def _is_steps(steps, schedule):
    """Whether `steps` has the structure `schedule` reads: a pair of numbers
    for "piecewise", a number (or a pair, of which the last) for "linear".
    Values are checked by the schedule functions themselves."""

    def number(value):
        return isinstance(value, numbers.Real) and not isinstance(value, bool)

    if number(steps):
        return schedule == "linear"
    return (
        isinstance(steps, (tuple, list))
        and len(steps) == 2
        and all(number(s) for s in steps)
    )


@keras.saving.register_keras_serializable(package="keras_tdrop")
class RampingCallback(keras.callbacks.Callback):
    """Ramps alpha and gamma of every TargetedDropout in the model.

    Before every training batch, at the optimizer's step `s`, the callback
    assigns to each `TargetedDropout` and `ModelTargetedDropout` (the
    model itself, nested models included)
    `rate = final_rate * fa(s)` and `target_rate = final_target_rate * fg(s)`,
    where `(fa, fg) = schedule(s)`. Because the step comes from the optimizer,
    training resumed from a checkpoint continues the ramp where it stopped.
    With `steps_per_execution > 1` Keras calls the callback once per
    execution, at its first step, so the values then hold for the execution.

    The per-batch cost is kept to a few Python operations: the optimizer's
    step is read from the device at the beginning of training and of every
    epoch only (after `BackupAndRestore` or a checkpoint has restored it),
    and within an epoch it is that value plus the batch index Keras passes
    (a hand-written loop that does not call `on_epoch_begin` is seen by its
    batch index starting again, and the step is read then).
    That assumes the optimizer's step advances by one per training step, as
    with Keras's `train_step`; a `LossScaleOptimizer` (mixed precision)
    does not count the steps it skips on non-finite gradients, so with one
    the step is read before every batch instead.
    A layer's `set_rates` is called only with the values that change (in
    the variables' dtype).
    The final values are each layer's own `rate`/`target_rate` (so Xtreme
    layers end with their own gamma) unless `rate`/`target_rate` are given.
    The values in use are written to the epoch logs as `td_rate` and
    `td_target_rate` (means over layers), so History and TensorBoard (listed
    after this callback) show them.

    Args:
        schedule: `"piecewise"` (for-ai/TD's ramp, the default), `"linear"`,
            `"constant"`, or a callable `step -> (rate_fraction,
            target_rate_fraction)`.
        ramp_steps: steps of the ramp: `(first, total)` for `"piecewise"`
            (default `(20000, 40000)`), `total` for `"linear"`.
        ramp_fraction: the same as fractions of the planned training length
            (`epochs * steps_per_epoch`), e.g. `(0.5, 1.0)`; resolved when
            training begins. Exclusive with `ramp_steps`.
        rate: optional float overriding every layer's final alpha.
        target_rate: optional float overriding every layer's final gamma.

    Example:
    >>> model.fit(x, y, epochs=10, callbacks=[
    ...     RampingCallback(ramp_fraction=(0.5, 1.0))])

    Reference:
    - [Gomez et al., 2019](https://arxiv.org/abs/1905.13678), Sec. 5.1;
      for-ai/TD `*_piecewise` dropouts.
    """

    def __init__(
        self,
        schedule="piecewise",
        ramp_steps=None,
        ramp_fraction=None,
        rate=None,
        target_rate=None,
    ):
        super().__init__()
        if not callable(schedule) and schedule not in _SCHEDULES:
            raise ValueError(
                f"`schedule` must be one of {_SCHEDULES} or a callable "
                f"`step -> (rate_fraction, target_rate_fraction)`. "
                f"Received: schedule={schedule!r}"
            )
        if ramp_steps is not None and ramp_fraction is not None:
            raise ValueError(
                "Pass `ramp_steps` or `ramp_fraction`, not both. Received: "
                f"ramp_steps={ramp_steps!r}, ramp_fraction={ramp_fraction!r}"
            )
        if (ramp_steps is not None or ramp_fraction is not None) and (
            callable(schedule) or schedule == "constant"
        ):
            raise ValueError(
                "`ramp_steps`/`ramp_fraction` apply to the 'piecewise' and "
                f"'linear' schedules only. Received: schedule={schedule!r}"
            )
        if ramp_steps is not None and not _is_steps(ramp_steps, schedule):
            shape = "(first, total)" if schedule == "piecewise" else "total"
            raise ValueError(
                f"`ramp_steps` must be {shape} steps for the {schedule!r} "
                f"schedule. Received: ramp_steps={ramp_steps!r}"
            )
        if (
            schedule == "linear"
            and ramp_steps is None
            and ramp_fraction is None
        ):
            ramp_fraction = 1.0
        if ramp_fraction is not None:
            for value in np.ravel(ramp_fraction):
                if not 0.0 < float(value) <= 1.0:
                    raise ValueError(
                        "`ramp_fraction` values must be in (0, 1]. "
                        f"Received: ramp_fraction={ramp_fraction!r}"
                    )
        for name, value in (("rate", rate), ("target_rate", target_rate)):
            if value is not None:
                targeting_lib.check_rate(name, value)
        self.schedule = schedule
        self.ramp_steps = ramp_steps
        self.ramp_fraction = ramp_fraction
        self.rate = rate
        self.target_rate = target_rate
        self._fn = None
        if ramp_fraction is None:
            self._fn = self._make_fn(ramp_steps)
        self._layers = []
        # Per layer: (its final alpha, its final gamma, its variables' dtype),
        # and the (alpha, gamma) last set.
        self._targets = []
        self._written = []
        self._epoch_step = 0  # the optimizer's step at the epoch's start
        self._read_every_batch = False
        self._last_batch = -1  # the batch index of the last call this epoch

    def _make_fn(self, steps):
        if callable(self.schedule):
            return self.schedule
        if self.schedule == "constant":
            return schedules.constant
        if self.schedule == "linear":
            total = steps if np.ndim(steps) == 0 else steps[-1]
            schedules.linear(0, total)
            return functools.partial(schedules.linear, total_steps=total)
        first, total = (20000, 40000) if steps is None else steps
        schedules.piecewise(0, first, total)
        return functools.partial(
            schedules.piecewise, first_steps=first, total_steps=total
        )

    def fractions(self, step):
        """`(rate_fraction, target_rate_fraction)` at `step`."""
        if self._fn is None:
            raise RuntimeError(
                "`ramp_fraction` is resolved when training begins; call "
                "fractions() after fit() has started."
            )
        rate_fraction, target_fraction = self._fn(int(step))
        return float(rate_fraction), float(target_fraction)

    def on_train_begin(self, logs=None):
        self._layers = (
            model_targeted_dropouts(self.model)
            + model_ordered_dropouts(self.model)
            + targeted_dropout_layers(self.model)
        )
        if self.ramp_fraction is not None:
            epochs = self.params.get("epochs")
            steps = self.params.get("steps")
            if not epochs or not steps:
                raise ValueError(
                    "`ramp_fraction` needs a known training length, but fit() "
                    f"reported epochs={epochs}, steps={steps}. Pass "
                    "`steps_per_epoch` to fit(), or use `ramp_steps`."
                )
            planned = epochs * steps
            fractions = np.ravel(self.ramp_fraction)
            resolved = [max(1, int(round(f * planned))) for f in fractions]
            if self.schedule == "piecewise" and len(resolved) == 1:
                resolved = [resolved[0] // 2 or 1, resolved[0]]
            self._fn = self._make_fn(tuple(resolved))
        self._targets = [
            (
                layer.rate if self.rate is None else self.rate,
                (
                    layer.final_target_rate
                    if self.target_rate is None
                    else self.target_rate
                ),
                np.dtype(layer.variable_dtype),
            )
            for layer in self._layers
        ]
        self._written = [(None, None)] * len(self._layers)
        self._read_every_batch = isinstance(
            self.model.optimizer, keras.optimizers.LossScaleOptimizer
        )
        self._epoch_step = self._current_step()
        self._last_batch = -1
        self._apply(self._epoch_step)
        self._warn_if_short()

    def _warn_if_short(self):
        """Warns when fit() knows its length and ends before the ramp
        does: targeted dropout would never reach its rates."""
        params = self.params or {}
        epochs, steps = params.get("epochs"), params.get("steps")
        if (
            not epochs
            or not steps
            or not self._layers
            or callable(self.schedule)
        ):
            return
        last = self._epoch_step + epochs * steps
        alpha, gamma = self.fractions(last)
        if alpha >= 1.0 and gamma >= 1.0:
            return
        import warnings

        warnings.warn(
            f"RampingCallback: this fit() ends at step {last}, before the "
            f"ramp does: alpha reaches {alpha:.3g} and gamma {gamma:.3g} of "
            "their final values, so targeted dropout never trains at its "
            "rates. Pass `ramp_fraction=(0.5, 1.0)` (fractions of this "
            "fit) or smaller `ramp_steps`.",
            stacklevel=2,
        )

    def on_epoch_begin(self, epoch, logs=None):
        # One device read per epoch; it also picks up a step restored after
        # on_train_begin (by BackupAndRestore listed after this callback).
        self._epoch_step = self._current_step()
        self._last_batch = -1

    def on_train_batch_begin(self, batch, logs=None):
        if self._read_every_batch:
            self._apply(self._current_step())
            return
        if batch <= self._last_batch:
            # A new epoch that on_epoch_begin did not announce (a training
            # loop driving the callback by hand): read the step again.
            self._epoch_step = self._current_step() - batch
        self._last_batch = batch
        self._apply(self._epoch_step + batch)

    def _current_step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _apply(self, step):
        """Sets the values at `step` on the layers whose values change."""
        rate_fraction, target_fraction = self.fractions(step)
        changed = []
        for i, (rate, target, dtype) in enumerate(self._targets):
            new = (
                float(dtype.type(min(1.0, rate * rate_fraction))),
                float(dtype.type(min(1.0, target * target_fraction))),
            )
            old = self._written[i]
            if new != old:
                self._written[i] = new
                # None for a value that stays: set_rates leaves it alone.
                rates = [n if n != o else None for n, o in zip(new, old)]
                changed.append((self._layers[i], *rates))
        if changed:
            # On JAX, reading `self.model` attaches the trainer's state to
            # the variables first, so the assignments reach the next step.
            self.model  # noqa: B018
            for layer, rate, target_rate in changed:
                layer.set_rates(rate, target_rate)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self._layers:
            return
        logs["td_rate"] = float(
            np.mean([layer.current_rate for layer in self._layers])
        )
        logs["td_target_rate"] = float(
            np.mean([layer.current_target_rate for layer in self._layers])
        )

    def get_config(self):
        if callable(self.schedule):
            raise NotImplementedError(
                "A RampingCallback with a custom schedule is not serializable."
            )
        return {
            "schedule": self.schedule,
            "ramp_steps": self.ramp_steps,
            "ramp_fraction": self.ramp_fraction,
            "rate": self.rate,
            "target_rate": self.target_rate,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
