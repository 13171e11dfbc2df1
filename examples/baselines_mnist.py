"""The paper's baselines against targeted dropout on MNIST, weight and unit
pruning side by side.

    TFDS_DATA_DIR=../shared/tensorflow_datasets \\
        python examples/baselines_mnist.py --epochs 3 --out baselines_out

Trains the same MLP (`keras_tdrop.experiments.models.mnist_mlp`,
784-300-100-10) from the same initial weights, on the same batches (same
seed, epochs, batch size,
Adam 1e-3), once per named experiment of `keras_tdrop.experiments.registry`:
no regularisation, targeted dropout, L0, variational dropout, Smallify and
L1, with the Targeted Dropout paper's coefficients. Each model is stripped to
a plain Keras model and swept with `prune_sweep` (every kernel but the
logits, 0-90% per layer): weight pruning (lowest per column first) and unit
pruning (lowest columns first). L0 and variational dropout are swept twice:
by their learned importances (`baselines.importances`: keep probability,
-log alpha) and by magnitude. Writes `baselines_weight.csv`/`.png` and
`baselines_unit.csv`/`.png` to `--out` and prints both tables and each
method's own sparsity (`baselines.masks`).
"""

import argparse
import os
import time

import keras

from keras_tdrop import baselines
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import models
from keras_tdrop.experiments import registry
from keras_tdrop.pruning.report import format_sweep
from keras_tdrop.pruning.report import plot_sweeps
from keras_tdrop.pruning.report import print_progress
from keras_tdrop.pruning.report import write_csv
from keras_tdrop.pruning.sweep import prune_sweep

# Per sweep: column label -> (experiment, rank by learned importances?).
SWEEPS = {
    "weight": {
        "none": ("none", False),
        "targeted": ("targeted_weight_0.75_0.9", False),
        "L0 (keep p)": ("l0_weight", True),
        "L0 (|w|)": ("l0_weight", False),
        "VD (log a)": ("variational", True),
        "VD (|w|)": ("variational", False),
        "smallify": ("smallify", False),
        "L1": ("l1_weight", False),
        "L1 1e-5": ("l1_1e-5", False),
    },
    "unit": {
        "none": ("none", False),
        "targeted": ("targeted_unit_0.9_0.75", False),
        "L0 (keep p)": ("l0_unit", True),
        "L0 (|w|)": ("l0_unit", False),
        "VD (log a)": ("variational", True),
        "VD (|w|)": ("variational", False),
        "smallify": ("smallify", False),
        "L1": ("l1_unit", False),
        "L1 1e-5": ("l1_1e-5", False),
    },
}
# Not in the registry: L1 at a coefficient that leaves this MLP trainable
# in a few epochs (the paper's 0.1 and 0.01 are for its 256-epoch ResNet).
EXTRA = {
    "l1_1e-5": {
        "method": "l1",
        "params": {"coefficient": 1e-5},
        "description": "L1 on the prunable kernels, coefficient 1e-5",
    }
}


def compile_model(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train(name, initial, args):
    """Trains experiment `name` from a copy of `initial`; returns the plain
    (stripped) model and, for gated methods, its importances and masks."""
    experiment = EXTRA[name] if name in EXTRA else registry.get(name)
    method = registry.method(experiment["method"])
    model = method.apply(
        initial, exclude=None, seed=args.seed, **experiment["params"]
    )
    data = datasets.load(
        "mnist",
        "train",
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        shuffle=True,
        seed=args.seed,
        limit=args.train_limit,
    )
    print(f"\n== {name}: {experiment['description']}", flush=True)
    start = time.perf_counter()
    compile_model(model).fit(data, epochs=args.epochs, verbose=2)
    seconds = time.perf_counter() - start
    wrapped = baselines.baseline_layers(model)
    scores = baselines.importances(model) if wrapped else None
    own = baselines.masks(model) if wrapped else {}
    plain = compile_model(method.strip(model))
    total = sum(m.size for m in own.values())
    zeros = sum(int((m == 0).sum()) for m in own.values())
    own_sparsity = zeros / total if total else 0.0
    print(
        f"{name}: trained in {seconds:.0f} s; the method's own sparsity of "
        f"its gated kernels: {own_sparsity:.4f}",
        flush=True,
    )
    return plain, scores, own_sparsity


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="baselines_out")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument(
        "--fractions", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
    )
    args = parser.parse_args(argv)
    fractions = tuple(float(f) for f in args.fractions.split(","))
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    initial = models.mnist_mlp()
    test = datasets.load(
        "mnist",
        "test",
        batch_size=1000,
        data_dir=args.data_dir,
        limit=args.test_limit,
    )
    names = sorted({n for sweep in SWEEPS.values() for n, _ in sweep.values()})
    trained = {}
    for name in names:
        keras.utils.set_random_seed(args.seed)
        trained[name] = train(name, initial, args)
    for targeting, columns in SWEEPS.items():
        sweeps = {}
        for label, (name, by_importance) in columns.items():
            plain, scores, _ = trained[name]
            print(f"\n{targeting} pruning, {label}:", flush=True)
            sweeps[label] = prune_sweep(
                plain,
                test,
                fractions,
                targeting=targeting,
                scores=scores if by_importance else None,
                progress=print_progress,
            )
        table = format_sweep(sweeps)
        print(
            f"\n{targeting} pruning, test accuracy (MNIST MLP, "
            f"{args.epochs} epochs):\n{table}"
        )
        stem = os.path.join(args.out, f"baselines_{targeting}")
        rows = []
        for label, swept in sweeps.items():
            rows.extend({"method": label} | row for row in swept)
        write_csv(rows, stem + ".csv")
        plot_sweeps(
            sweeps,
            stem + ".png",
            title=f"MNIST MLP, {targeting} pruning, {args.epochs} epochs",
            xlabel=f"pruned {targeting}s per layer (%)",
        )
    print("\nOwn sparsity of the gated kernels (before any pruning):")
    for name in names:
        own = trained[name][2]
        if trained[name][1] is not None:
            print(f"  {name:12s} {own:.4f}")
    print(
        f"\nWrote {args.out}/baselines_{{weight,unit}}.{{csv,png}} "
        f"({time.perf_counter() - start:.0f} s)."
    )
    return trained


if __name__ == "__main__":
    main()
