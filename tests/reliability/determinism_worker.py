"""Trains a small targeted-dropout model from a seed and saves what it drew.

Spawned twice (or more) by `test_determinism.py`; every process must write
the same arrays for the same seed.

    python determinism_worker.py SEED OUT.npz
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_tdrop import RampingCallback  # noqa: E402
from keras_tdrop import TriangularDropout  # noqa: E402
from keras_tdrop import apply_targeted_dropout  # noqa: E402
from keras_tdrop.pruning import compute_masks  # noqa: E402


def main(seed, out):
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    inputs = keras.Input((12,))
    x = keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
    x = TriangularDropout(mode="random", name="tri")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc2")(x)
    plain = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    # No per-layer seeds: the seed generators take theirs from the global
    # seed set above.
    model = apply_targeted_dropout(plain, rate=0.5, target_rate=0.5)
    td = model.get_layer("td_fc2")
    probe = np.eye(16, dtype="float32")
    drawn = [keras.ops.convert_to_numpy(td.layer(probe)) for _ in range(1)] + [
        keras.ops.convert_to_numpy(td(probe, training=True)) for _ in range(3)
    ]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 12)).astype("float32")
    y = rng.integers(0, 3, size=96)
    model.compile(
        keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy"
    )
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=3,
        shuffle=True,
        verbose=0,
        callbacks=[RampingCallback(ramp_steps=(6, 12))],
    )
    masks = compute_masks(model, 0.5)
    arrays = {f"drawn{i}": d for i, d in enumerate(drawn)}
    arrays.update({f"weight{i}": w for i, w in enumerate(model.get_weights())})
    arrays.update({f"mask:{k}": m for k, m in masks.items()})
    tmp = out + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, out)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
