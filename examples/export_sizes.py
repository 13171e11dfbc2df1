"""File size, accuracy and latency of TFLite exports of a pruned MNIST CNN.

    TFDS_DATA_DIR=../shared/tensorflow_datasets \\
        python examples/export_sizes.py --out export_out

Trains `keras_tdrop.experiments.models.mnist_cnn` on MNIST (weight-level
targeted dropout as in the demo: alpha 0.75, gamma 0.9, ramped over the
first half;
`--plain` trains without it), prunes `conv2` and `fc1` at each fraction
(lowest |w| per column; `stem` and `logits` kept), and exports every pruned
model as float, sparse float, dynamic-range, int8 and sparse int8 `.tflite`
files with `keras_tdrop.export.to_tflite`. Each file is checked against
Keras on 32 test images and evaluated on the 10,000 test images in LiteRT.
Latency is measured after all exports, round-robin over the files (so that
load from other processes spreads over all of them): `--rounds` rounds of
20 invocations on one batch of 32 test images, 1 thread; the median of the
rounds' medians. `--latency-only` re-measures the files of an earlier run.
Writes `export_sizes.csv`, `export_sizes.png` and the files to `--out`.
"""

import argparse
import csv
import os
import time

import keras
import numpy as np

import keras_tdrop
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import models
from keras_tdrop.export import predict_tflite
from keras_tdrop.export import tflite_latency
from keras_tdrop.export import to_tflite
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import prune

FORMATS = {
    "float": {},
    "sparse": {"sparse": True},
    "dynamic": {"quantize": "dynamic"},
    "int8": {"quantize": "int8"},
    "sparse int8": {"sparse": True, "quantize": "int8"},
}
EXCLUDE = ["stem"]


def arrays(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


def train(args):
    keras.utils.set_random_seed(args.seed)
    model = models.mnist_cnn()
    callbacks = []
    if not args.plain:
        model = keras_tdrop.apply_targeted_dropout(
            model, 0.75, 0.9, targeting="weight", exclude=EXCLUDE, seed=0
        )
        callbacks.append(keras_tdrop.RampingCallback(ramp_fraction=0.5))
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    data = datasets.load(
        "mnist", "train", shuffle=True, seed=args.seed, limit=args.train_limit
    )
    model.fit(data, epochs=args.epochs, callbacks=callbacks, verbose=2)
    return (
        keras_tdrop.strip_targeted_dropout(model) if not args.plain else model
    )


def measure_latency(rows, folder, sample, rounds):
    times = {r["file"]: [] for r in rows}
    for round_ in range(rounds):
        for name in times:
            times[name].append(
                tflite_latency(
                    os.path.join(folder, name), sample, 20, num_threads=1
                )
            )
        print(f"latency round {round_ + 1}/{rounds}", flush=True)
    for r in rows:
        r["latency_ms"] = float(np.median(times[r["file"]]))


def read_csv(path):
    with open(path) as file:
        rows = list(csv.DictReader(file))
    for r in rows:
        for key in r:
            if key not in ("format", "file", "op_resolver"):
                r[key] = float(r[key])
        r["bytes"] = int(r["bytes"])
        tag = r["format"].replace(" ", "_")
        r.setdefault("file", f"cnn_p{r['fraction']:.2f}_{tag}.tflite")
    return rows


def write_outputs(rows, folder):
    with open(os.path.join(folder, "export_sizes.csv"), "w") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, os.path.join(folder, "export_sizes.png"))
    print()
    print(format_table(rows))


def format_table(rows):
    lines = [
        "prune  sparsity  format         bytes  max|diff|  ms/32 img  "
        "accuracy  (Keras)",
        "-----  --------  -----------  -------  ---------  ---------  "
        "--------  -------",
    ]
    for r in rows:
        lines.append(
            f"{r['fraction']:>5.0%}  {r['sparsity']:8.4f}  {r['format']:11s}"
            f"  {r['bytes']:7,d}  {r['max_abs_diff']:9.2e}  "
            f"{r['latency_ms']:9.3f}  {r['accuracy']:8.4f}  "
            f"{r['keras_accuracy']:.4f}"
        )
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name in FORMATS:
        mine = [r for r in rows if r["format"] == name]
        fractions = [100 * r["fraction"] for r in mine]
        left.plot(
            fractions, [r["bytes"] / 1000 for r in mine], "o-", label=name
        )
        right.plot(fractions, [r["accuracy"] for r in mine], "o-", label=name)
    left.set(
        xlabel="pruned weights per column of conv2, fc1 (%)",
        ylabel="file size (kB)",
        title="MNIST CNN .tflite size",
    )
    right.set(
        xlabel="pruned weights per column of conv2, fc1 (%)",
        ylabel="test accuracy in LiteRT",
        title="accuracy of each file (10,000 images)",
    )
    left.legend()
    left.grid(alpha=0.3)
    right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="export_out")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fractions", default="0,0.5,0.8,0.9")
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--latency-only", action="store_true")
    args = parser.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    x_test, y_test = arrays(datasets.load("mnist", "test", batch_size=1000))
    if args.latency_only:
        rows = read_csv(os.path.join(args.out, "export_sizes.csv"))
        measure_latency(rows, args.out, x_test[:32], args.rounds)
        write_outputs(rows, args.out)
        return

    model = train(args)
    x_calib, _ = arrays(datasets.load("mnist", "train", limit=500))
    rows = []
    for fraction in fractions:
        masks = compute_masks(model, fraction, exclude=EXCLUDE)
        kept = sum(float(m.sum()) for m in masks.values())
        sparsity = 1 - kept / sum(m.size for m in masks.values())
        pruned = prune(model, fraction, exclude=EXCLUDE)
        logits = pruned.predict(x_test, batch_size=1000, verbose=0)
        keras_accuracy = float(np.mean(logits.argmax(-1) == y_test))
        print(
            f"pruned {fraction:.0%} (sparsity {sparsity:.4f}): Keras test "
            f"accuracy {keras_accuracy:.4f}"
        )
        for name, options in FORMATS.items():
            tag = name.replace(" ", "_")
            name_ = f"cnn_p{fraction:.2f}_{tag}.tflite"
            path = os.path.join(args.out, name_)
            result = to_tflite(
                pruned,
                path,
                representative_data=x_calib,
                calibration_steps=500,
                sample=x_test[:32],
                repeats=50,
                num_threads=1,
                **options,
            )
            predicted = predict_tflite(path, x_test, batch_size=500)
            accuracy = float(np.mean(predicted.argmax(-1) == y_test))
            print(f"  {name:11s} {result}; accuracy {accuracy:.4f}")
            rows.append(
                {
                    "fraction": fraction,
                    "sparsity": sparsity,
                    "format": name,
                    "file": name_,
                    "bytes": result.bytes,
                    "max_abs_diff": result.max_abs_diff,
                    "tolerance": result.tolerance,
                    "latency_ms": result.latency_ms,
                    "accuracy": accuracy,
                    "keras_accuracy": keras_accuracy,
                    "op_resolver": result.op_resolver,
                }
            )
    measure_latency(rows, args.out, x_test[:32], args.rounds)
    write_outputs(rows, args.out)
    print(
        f"\nWrote {args.out}/export_sizes.csv and export_sizes.png "
        f"({time.perf_counter() - start:.0f} s)."
    )


if __name__ == "__main__":
    main()
