"""Prune, compare and shrink a real model: the MNIST CNN, end to end.

Trains `keras_tdrop.experiments.models.mnist_cnn` on MNIST three times from
the same initial weights and batch order: plainly, with weight-targeted dropout
(alpha 0.75, gamma 0.9) and with unit-targeted dropout (alpha 0.9, gamma
0.75), both ramped over the first half of training. Then:

1. a weight-pruning and a unit-pruning sweep of the three (0-90%, stem and
   logits left alone), printed as tables, written as CSV and PNG;
2. the unit-targeted model pruned by units at `--shrink-fraction`, shrunk
   (`keras_tdrop.pruning.shrink`), checked to give the same outputs, and
   exported to TFLite before and after shrinking: parameters, file size and
   LiteRT latency (batch 1 and batch 128, one thread).

Run (47 minutes here, on 2 CPU cores shared with other busy jobs):

    python examples/prune_and_shrink.py --out prune_out

Needs the `litert` extra for step 2's TFLite figures (otherwise the Keras
model's latency is shown instead, and says so).
"""

import argparse
import os
import statistics
import time

import keras
import numpy as np

from keras_tdrop import RampingCallback
from keras_tdrop import apply_targeted_dropout
from keras_tdrop import strip_targeted_dropout
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import models
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compare_sweeps
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import format_sweep
from keras_tdrop.pruning import plot_sweeps
from keras_tdrop.pruning import print_progress
from keras_tdrop.pruning import shrink
from keras_tdrop.pruning import sparsity_report
from keras_tdrop.pruning import sweep_models
from keras_tdrop.pruning import write_csv
from keras_tdrop.pruning.report import XLABELS
from keras_tdrop.pruning.report import format_rows

EXCLUDE = ["stem"]


def compiled(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train_three(args):
    def train_data():
        return datasets.load(
            "mnist",
            "train",
            batch_size=128,
            data_dir=args.data_dir,
            shuffle=True,
            seed=args.seed,
            limit=args.train_limit,
        )

    keras.utils.set_random_seed(args.seed)
    plain = models.mnist_cnn()
    variants = {
        "targeted (weight)": dict(
            rate=0.75, target_rate=0.9, targeting="weight"
        ),
        "targeted (unit)": dict(rate=0.9, target_rate=0.75, targeting="unit"),
    }
    wrapped = {
        name: apply_targeted_dropout(
            plain, exclude=EXCLUDE, seed=args.seed, **options
        )
        for name, options in variants.items()
    }
    print(f"Training the plain model ({args.epochs} epochs).")
    compiled(plain).fit(train_data(), epochs=args.epochs, verbose=2)
    trained = {"plain": plain}
    for name, model in wrapped.items():
        print(f"Training {name}.")
        compiled(model).fit(
            train_data(),
            epochs=args.epochs,
            callbacks=[RampingCallback(ramp_fraction=0.5)],
            verbose=2,
        )
        trained[name] = compiled(strip_targeted_dropout(model))
    return trained


def timed(call, repeats):
    """`(min, median)` milliseconds of `call()` over `repeats` runs; the
    minimum is the least disturbed by other processes on a busy machine."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(1000.0 * (time.perf_counter() - start))
    return min(times), statistics.median(times)


def latencies(model, path, x):
    """File size and `{batch: (min ms, median ms)}` of the model in LiteRT
    (one thread), or of the Keras model when LiteRT is not installed."""
    batches = {1: x[:1], len(x): x}
    try:
        from ai_edge_litert.interpreter import Interpreter

        from keras_tdrop.export.tflite import to_tflite
    except ImportError as error:
        print(f"TFLite unavailable ({error}); timing the Keras model.")
        return (
            None,
            "Keras model call",
            {
                n: timed(lambda b=b: model(b, training=False), 50)
                for n, b in batches.items()
            },
        )
    export = to_tflite(model, path, sample=x[:16], repeats=50)
    print(export)
    timings = {}
    for n, batch in batches.items():
        interpreter = Interpreter(model_path=path, num_threads=1)
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], batch)
        timings[n] = timed(interpreter.invoke, 500 if n == 1 else 100)
    return export.bytes, "LiteRT interpreter, 1 thread", timings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="prune_out")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--shrink-fraction", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data-dir", default=os.environ.get("TFDS_DATA_DIR") or None
    )
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    trained = train_three(args)
    test = datasets.load(
        "mnist", "test", 1000, data_dir=args.data_dir, limit=args.test_limit
    )
    tables = {}
    for targeting in ("weight", "unit"):
        print(f"\n{targeting.capitalize()} pruning sweep.")
        sweeps = sweep_models(
            trained,
            test,
            targeting=targeting,
            exclude=EXCLUDE,
            progress=print_progress,
        )
        stem = os.path.join(args.out, f"{targeting}_sweep")
        write_csv(compare_sweeps(sweeps), stem + ".csv")
        plot_sweeps(
            sweeps,
            stem + ".png",
            title=f"MNIST CNN, {targeting} pruning",
            xlabel=XLABELS[targeting],
        )
        tables[targeting] = format_sweep(sweeps)
    for targeting, table in tables.items():
        print(f"\n{targeting} pruning (accuracy on the test set):\n{table}")

    fraction = args.shrink_fraction
    model = trained["targeted (unit)"]
    masks = compute_masks(model, fraction, "unit", exclude=EXCLUDE)
    masked = compiled(apply_masks(model, masks))
    small, rows = shrink(model, masks, strict=True)
    compiled(small)
    print(f"\nUnit pruning at {fraction:.0%}, then shrink:")
    sparsity_report(masked)
    print(format_rows(rows))
    x_test, y_test = datasets.load_numpy(
        "mnist", "test", args.data_dir, limit=args.test_limit
    )
    outputs = [m.predict(x_test, verbose=0) for m in (masked, small)]
    diff = float(np.max(np.abs(outputs[0] - outputs[1])))
    results = []
    for label, net in (("masked", masked), ("shrunk", small)):
        accuracy = net.evaluate(x_test, y_test, verbose=0, return_dict=True)
        size, how, timings = latencies(
            net, os.path.join(args.out, f"{label}.tflite"), x_test[:128]
        )
        row = {
            "model": label,
            "parameters": net.count_params(),
            "accuracy": accuracy["accuracy"],
            "tflite_bytes": size,
        }
        for n, (low, middle) in timings.items():
            row[f"ms_b{n}_min"] = low
            row[f"ms_b{n}_median"] = middle
        results.append(row)
    small.save(os.path.join(args.out, "shrunk.keras"))
    print(f"\nmax |masked - shrunk| over the test set: {diff:.3g}")
    print(f"Latency: {how}; ms per batch of 1 and of 128 test images.")
    print(format_rows(results))
    print(
        f"\nDone in {time.perf_counter() - start:.0f} s; files in {args.out}."
    )


if __name__ == "__main__":
    main()
