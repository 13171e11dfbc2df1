"""Which data to recalibrate BatchNorm on: a trained network's dense test
accuracy as trained, recalibrated on unaugmented training images, and on
augmented ones (drawn as training draws them).

Usage: python docs/results/recalibration_data.py
    [docs/results/cifar10_mobile/none_s0/model.keras] [--count 2000]
"""

import argparse

import keras
import numpy as np

from keras_tdrop.experiments import datasets
from keras_tdrop.pruning.recalibrate import recalibrate_batchnorm


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "model",
        nargs="?",
        default="docs/results/cifar10_mobile/none_s0/model.keras",
    )
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args(argv)
    model = keras.saving.load_model(args.model, compile=False)
    x, y = datasets.load_numpy("cifar10", "test")

    def accuracy(m):
        logits = m.predict(x, batch_size=500, verbose=0)
        return float(np.mean(np.argmax(logits, -1) == y))

    plain, _ = datasets.load_numpy("cifar10", "train[5000:]", limit=args.count)
    augmented = datasets.load(
        "cifar10",
        "train[5000:]",
        batch_size=args.count,
        shuffle=True,
        seed=12345,
        augment=True,
    )
    augmented = next(iter(augmented))[0].numpy()
    print(f"{args.model}: dense CIFAR-10 test accuracy")
    print(
        f"  as trained                                  {accuracy(model):.4f}"
    )
    print(
        f"  recalibrated on {args.count} unaugmented images  "
        f"{accuracy(recalibrate_batchnorm(model, plain)):.4f}"
    )
    print(
        f"  recalibrated on {args.count} augmented images    "
        f"{accuracy(recalibrate_batchnorm(model, augmented)):.4f}"
    )


if __name__ == "__main__":
    main()
