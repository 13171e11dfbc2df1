"""Ramped targeted dropout on an MNIST MLP, then weight and unit pruning.

    TFDS_DATA_DIR=../shared/tensorflow_datasets python examples/ramping_mlp.py

Trains the 784-300-100-10 MLP for 3 epochs with targeted dropout ramped by
for-ai/TD's schedule (scaled to the run), strips the wrappers, and prints the
test accuracy after pruning 0-90% of each hidden kernel.
"""

import keras

import keras_tdrop
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import models
from keras_tdrop.pruning import prune

train = datasets.load("mnist", "train", shuffle=True, seed=0)
test = datasets.load("mnist", "test")

model = keras_tdrop.apply_targeted_dropout(
    models.mnist_mlp(), rate=0.75, target_rate=0.9, targeting="weight", seed=0
)
model.compile(
    keras.optimizers.Adam(1e-3),
    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
history = model.fit(
    train,
    epochs=3,
    callbacks=[keras_tdrop.RampingCallback(ramp_fraction=(0.25, 0.5))],
)
print(
    "alpha, gamma per epoch:",
    history.history["td_rate"],
    history.history["td_target_rate"],
)

plain = keras_tdrop.strip_targeted_dropout(model)
plain.compile(
    metrics=["accuracy"],
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
for targeting in ("weight", "unit"):
    for fraction in (0.0, 0.5, 0.7, 0.8, 0.9):
        pruned = prune(plain, fraction, targeting=targeting)
        pruned.compile(metrics=["accuracy"], loss=plain.loss)
        _, accuracy = pruned.evaluate(test, verbose=0)
        print(f"{targeting:6s} {fraction:4.0%}  accuracy {accuracy:.4f}")
