"""Triangular Dropout end to end: train once, choose a width, deploy it.

    TFDS_DATA_DIR=../shared/tensorflow_datasets \\
        python examples/triangular_autoencoder.py [out_dir]

Trains the paper's MNIST conv autoencoder (16 filters here, for speed) with
`TriangularDropout` on its 32-wide code, for 2 epochs on 2,048 images;
prints the test reconstruction loss at code widths 1..32 (one compiled model,
the width changed by `set_width`); truncates it to width 8 (an ordinary
Keras model, 8 code units, outputs equal to the masked model's); and
exports widths 4, 8, 16 and 32 to TFLite, each file checked in LiteRT and
evaluated there. About 5 minutes on 2 CPU cores.
"""

import sys

import keras
import numpy as np

import keras_tdrop
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import models
from keras_tdrop.export.widths import export_widths
from keras_tdrop.export.widths import format_width_table

out_dir = sys.argv[1] if len(sys.argv) > 1 else "triangular_autoencoder_out"
x_train, _ = datasets.load_numpy("mnist", "train", limit=2048)
x_test, _ = datasets.load_numpy("mnist", "test", limit=500)

keras.utils.set_random_seed(0)
model = models.conv_autoencoder(latent_dim=32, filters=16, seed=0)
model.compile(keras.optimizers.Adam(2e-3), "binary_crossentropy")
model.fit(x_train, x_train, batch_size=64, epochs=2)

# 1. Any width after training: one variable, no retracing.
for width in (1, 2, 4, 8, 16, 32):
    keras_tdrop.set_width(model, width)
    loss = model.evaluate(x_test, x_test, verbose=0)
    print(f"width {width:2d}: test BCE {loss:.4f}")
keras_tdrop.set_width(model, None)

# 2. A narrower plain model with the same outputs as the masked one.
small = keras_tdrop.truncate(model, 8)
keras_tdrop.set_width(model, 8)
difference = np.max(
    np.abs(small.predict(x_test, verbose=0) - model.predict(x_test, verbose=0))
)
keras_tdrop.set_width(model, None)
print(
    f"truncated to 8: {small.count_params():,} parameters "
    f"(full: {model.count_params():,}); max |difference| {difference:.2g}"
)

# 3. One TFLite file per width, with the loss of each file in LiteRT.
rows = export_widths(
    model,
    [4, 8, 16, 32],
    out_dir,
    data=(x_test, x_test),
    metric="binary_crossentropy",
    sample=x_test[:16],
    repeats=50,
)
print(format_width_table(rows))
