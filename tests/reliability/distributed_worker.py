"""Runs one distributed training job and writes what it saw as JSON.

Spawned by `test_distributed.py` in a fresh process, because the CPU must be
split into logical devices (and TF_CONFIG read) before TensorFlow
initialises its devices.

    python distributed_worker.py mirrored OUT.json
    python distributed_worker.py multiworker OUT.json   # TF_CONFIG set

`mirrored`: MirroredStrategy over two logical CPUs against the same jobs on
one device. `multiworker`: this worker's side of a MultiWorkerMirroredStrategy
job (one CPU per worker).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"

import tensorflow as tf  # noqa: E402

MODE, OUT = sys.argv[1], sys.argv[2]
if MODE == "mirrored":
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
else:
    STRATEGY = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=300
        )
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_tdrop import RampingCallback  # noqa: E402
from keras_tdrop import TargetedDropout  # noqa: E402
from keras_tdrop import TriangularDropout  # noqa: E402
from keras_tdrop.pruning import compute_masks  # noqa: E402
from keras_tdrop.pruning import prune  # noqa: E402

keras.config.disable_traceback_filtering()
GLOBAL_BATCH = 16
STEPS = 8


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(GLOBAL_BATCH * STEPS // 2, 8)).astype("float32")
    y = rng.normal(size=(len(x), 3)).astype("float32")
    return x, y


def dataset():
    x, y = data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    # Each worker holds the whole (tiny) data set; DATA sharding splits every
    # global batch between the workers, so a step sees the same 16 examples
    # as the single-device step.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return ds.with_options(options)


def build(rate, target_rate):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    x = TargetedDropout(
        keras.layers.Dense(16, activation="relu"),
        rate=rate,
        target_rate=target_rate,
        seed=1,
        name="td1",
    )(inputs)
    x = TargetedDropout(
        keras.layers.Dense(12, activation="relu"),
        rate=rate,
        target_rate=target_rate,
        targeting="unit",
        seed=2,
        name="td2",
    )(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


def local_values(variable):
    """The value of `variable` on every replica (one entry off-strategy)."""
    value = variable.value
    locals_ = STRATEGY.experimental_local_results(value)
    return [np.asarray(v).tolist() for v in locals_]


def train(rate, target_rate, distributed):
    if distributed:
        with STRATEGY.scope():
            model = build(rate, target_rate)
    else:
        model = build(rate, target_rate)
    ramp = RampingCallback(ramp_steps=(4, 12))
    if MODE == "mirrored" or not distributed:
        model.fit(dataset(), epochs=2, verbose=0, callbacks=[ramp])
    else:
        custom_loop(model, ramp)
    return model


def custom_loop(model, ramp, epochs=2):
    """Keras 3's fit() fails under MultiWorkerMirroredStrategy (it reduces
    the first (x, y) batch as one value: keras-team/keras#20585), so the
    workers run fit()'s own step, `model.train_step`, in `strategy.run`,
    with the callback driven by hand as fit() drives it."""
    strategy = model.distribute_strategy
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)

    @tf.function
    def step(batch):
        strategy.run(model.train_step, args=(batch,))

    ramp.set_model(model)
    ramp.on_train_begin()
    for _ in range(epochs):
        for batch_index, batch in enumerate(
            strategy.experimental_distribute_dataset(dataset())
        ):
            ramp.on_train_batch_begin(batch_index)
            step(batch)


def ramp_state(model):
    state = {}
    for name in ("td1", "td2"):
        layer = model.get_layer(name)
        state[name] = {
            "rate": local_values(layer._current_rate),
            "target_rate": local_values(layer._current_target_rate),
            "seed_state": local_values(layer.seed_generator.state),
        }
    return state


def weights(model):
    return [np.asarray(w).tolist() for w in model.get_weights()]


def pruning_report(model):
    """Masks of a model built in the strategy's scope, applied to a copy
    and in place."""
    masks = compute_masks(model, 0.5)
    variables = {v.path: v for v in model.variables}
    before = {path: local_values(variables[path]) for path in masks}
    copy = prune(model, 0.5)
    copied = dict(zip([v.path for v in model.variables], copy.variables))
    prune(model, 0.5, inplace=True)
    report = {}
    for path, mask in masks.items():
        after = local_values(variables[path])
        report[path] = {
            "kept_per_column": np.sum(mask, axis=0).astype(int).tolist(),
            "rows": int(mask.shape[0]),
            "replicas": len(after),
            "copy_equals_masked_before": bool(
                np.array_equal(
                    np.asarray(copied[path].value),
                    np.asarray(before[path][0]) * mask,
                )
            ),
            "replicas_equal_masked_before": all(
                np.array_equal(np.asarray(a), np.asarray(b) * mask)
                for a, b in zip(after, before[path])
            ),
        }
    return report


def triangular_report(units=4):
    """The widths each replica's rows keep, for a global batch of 2 * units
    ones, and a short fit of a model with TriangularDropout."""
    with STRATEGY.scope():
        layer = TriangularDropout(name="tri")
        layer.build((None, units))
    ones = tf.data.Dataset.from_tensors(
        tf.ones((2 * units, units))
    ).with_options(dataset().options())
    batch = next(iter(STRATEGY.experimental_distribute_dataset(ones)))

    @tf.function
    def masked(x):
        return STRATEGY.run(lambda v: layer(v, training=True), args=(x,))

    outputs = STRATEGY.experimental_local_results(masked(batch))
    widths = [
        np.sum(np.asarray(o), axis=-1).astype(int).tolist() for o in outputs
    ]

    with STRATEGY.scope():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8,))
        x = keras.layers.Dense(6, activation="relu")(inputs)
        x = TriangularDropout(name="tri_fit")(x)
        model = keras.Model(inputs, keras.layers.Dense(3)(x))
        model.compile(keras.optimizers.SGD(0.1), "mse")
    before = model.get_weights()
    if MODE == "mirrored":
        model.fit(dataset(), epochs=1, verbose=0)
    else:
        custom_loop(model, RampingCallback(), epochs=1)
    kernels = [local_values(w) for w in model.trainable_weights]
    return {
        "local_widths": widths,
        "trained": any(
            not np.array_equal(a, b)
            for a, b in zip(before, model.get_weights())
        ),
        "replicas_equal": all(
            all(r == values[0] for r in values) for values in kernels
        ),
    }


def main():
    result = {
        "mode": MODE,
        "num_replicas": STRATEGY.num_replicas_in_sync,
        "runs": {},
    }
    for rate, target_rate in ((0.0, 0.0), (0.5, 0.5)):
        key = f"{rate}/{target_rate}"
        dist = train(rate, target_rate, distributed=True)
        run = {"ramp": ramp_state(dist), "weights": weights(dist)}
        single = train(rate, target_rate, distributed=False)
        run["single_ramp"] = ramp_state(single)
        run["single_weights"] = weights(single)
        result["runs"][key] = run
        if rate:
            result["pruning"] = pruning_report(dist)
    result["triangular"] = triangular_report()
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, OUT)


if __name__ == "__main__":
    main()
