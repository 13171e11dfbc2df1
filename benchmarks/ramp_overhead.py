"""Target 3: cost of RampingCallback per training step, and retracing.

`fit()` over the same batches with and without `RampingCallback`, in turns.
The ramp is set so that alpha and gamma change at every step (the worst
case: every layer's two variables are assigned before every batch). A third
variant, `per_batch_read`, is the callback as it was before issue 8's
work: it reads `optimizer.iterations` (a device-to-host read) before every
batch and assigns with `Variable.assign`, to show what the changes saved.
Traces of `train_step` are counted over the whole run; the target is none
after the first fit.

    python benchmarks/ramp_overhead.py               # mnist_cnn, batch 128
    python benchmarks/ramp_overhead.py --model mlp   # a faster step: harder
"""

import time

import _bench
import keras
import numpy as np

from keras_tdrop import RampingCallback
from keras_tdrop import apply_targeted_dropout
from keras_tdrop import targeted_dropout_layers
from keras_tdrop.experiments import models


class PerBatchReadRamping(RampingCallback):
    """The previous RampingCallback: reads the optimizer's step before every
    batch and assigns every layer's alpha and gamma with `Variable.assign`
    when the schedule's fractions change. It calls `Variable.assign` itself:
    `set_rates` now takes the cheaper assignment (`keras_adapter.assign`)."""

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        rate_fraction, target_fraction = self.fractions(self._current_step())
        for layer in self._layers:
            # The layer's own variables: the benchmark times what the
            # previous callback paid for them.
            layer._current_rate.assign(min(1.0, layer.rate * rate_fraction))
            layer._current_target_rate.assign(
                min(1.0, layer.target_rate * target_fraction)
            )


class HookTimer(keras.callbacks.Callback):
    """Wraps another callback and sums the wall and CPU time of its epoch-
    and batch-begin hooks (the per-epoch step read is part of the cost)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.calls = 0

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)

    def on_train_begin(self, logs=None):
        self.inner.on_train_begin(logs)

    def _timed(self, hook, *args):
        start, cpu = time.perf_counter(), time.process_time()
        hook(*args)
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.process_time() - cpu

    def on_epoch_begin(self, epoch, logs=None):
        self._timed(self.inner.on_epoch_begin, epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._timed(self.inner.on_train_batch_begin, batch, logs)
        self.calls += 1

    def on_epoch_end(self, epoch, logs=None):
        self.inner.on_epoch_end(epoch, logs)


def build(kind):
    if kind == "mlp":
        base = models.mnist_mlp()
        td = apply_targeted_dropout(base, 0.75, 0.9, "weight")
    else:
        base = models.mnist_cnn()
        td = apply_targeted_dropout(base, 0.75, 0.9, "weight", exclude=["stem"])
    td.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return td


def main():
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="steps per fit")
    args = p.parse_args()
    steps = args.steps or (100 if args.full else 30)
    reps = args.reps or (15 if args.full else 9)
    keras.utils.set_random_seed(0)
    model = build(args.model)
    traces = [0]
    train_step = model.train_step

    def counted(data):
        traces[0] += 1
        return train_step(data)

    model.train_step = counted
    rng = np.random.default_rng(0)
    x = rng.random((steps * args.batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, steps * args.batch)
    # The ramp never ends within the run, so the rates change every step.
    ramp = dict(schedule="linear", ramp_steps=10**9)
    hooks = {
        "ramping": HookTimer(RampingCallback(**ramp)),
        "per_batch_read": HookTimer(PerBatchReadRamping(**ramp)),
    }

    def fit(callbacks):
        model.fit(
            x,
            y,
            batch_size=args.batch,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
        )

    layers = targeted_dropout_layers(model)
    fns = {
        "no_callback": lambda: fit([]),
        "ramping": lambda: fit([hooks["ramping"]]),
        "per_batch_read": lambda: fit([hooks["per_batch_read"]]),
    }
    print(
        f"{args.model} with TargetedDropout on {len(layers)} layers, batch "
        f"{args.batch}, {steps} steps per fit; {reps} rounds; "
        f"{_bench.load()}",
        flush=True,
    )
    # The first fit traces train_step twice with Adam in plain Keras too
    # (its slot variables are created during the first trace); what must
    # not happen is a trace after that, when alpha and gamma change.
    fit([])
    first = traces[0]
    before = layers[0].current_rate
    times = _bench.interleave(fns, reps, warmup=args.warmup)
    after = layers[0].current_rate
    print(f"times per fit of {steps} steps:")
    _bench.timing_table(times, "no_callback")
    step_cpu = _bench.quartiles(times.cpu["no_callback"])[1] / steps
    rows = []
    for name, hook in hooks.items():
        rows.append(
            [
                name,
                str(hook.calls),
                f"{hook.seconds / max(hook.calls, 1) * 1e6:.0f}",
                f"{hook.cpu_seconds / max(hook.calls, 1) * 1e6:.0f}",
                f"{hook.cpu_seconds / hook.calls / step_cpu * 100:.2f}",
            ]
        )
    _bench.table(
        [
            "callback",
            "hook calls",
            "hook us/batch (wall)",
            "hook us/batch (CPU)",
            "hook CPU % of step CPU",
        ],
        rows,
    )
    print(
        f"train_step traced {first} time(s) in the first fit, "
        f"{traces[0] - first} time(s) in the "
        f"{(reps + args.warmup) * len(fns)} fits after it; alpha of "
        f"'{layers[0].name}' went {before:.3e} -> {after:.3e} during the run"
    )
    size = f"{args.model} b{args.batch}"
    for name, hook in hooks.items():
        _bench.result(
            f"target 3 {name} hook CPU % of step CPU, {size}",
            hook.cpu_seconds / hook.calls / step_cpu * 100,
            1.0,
            fmt="{:.2f}",
        )
    for name in hooks:
        cpu, wall = _bench.both(times, name, "no_callback")
        _bench.result(
            f"target 3 {name} fit A/B overhead % of step, CPU time (wall "
            f"{(wall - 1) * 100:.2f}%), {size}",
            (cpu - 1) * 100,
            1.0,
            fmt="{:.2f}",
        )
    _bench.result(
        "target 3 traces of train_step after the first fit",
        traces[0] - first,
        0,
        fmt="{:d}",
    )


if __name__ == "__main__":
    main()
