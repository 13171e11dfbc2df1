"""Group unit pruning and shrinking on keras.applications models.

For each model (`weights=None`, 64x64 inputs, 10 classes): group unit masks
at `--fraction` (`compute_masks(..., targeting="unit", groups=True)`),
`shrink`, and the share of zeroed channels removed, the parameters and
multiply-accumulates before and after, and max |shrunk - masked| on a
random batch (logits). Prints a table; `--csv` writes it.

    python examples/shrink_applications.py --fraction 0.5
"""

import argparse
import time

import keras

from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import flops
from keras_tdrop.pruning import shrink
from keras_tdrop.pruning.report import format_rows
from keras_tdrop.pruning.report import write_csv

A = keras.applications
MODELS = {
    "MobileNetV2": (A.MobileNetV2, 64, {}),
    "MobileNetV3Small": (A.MobileNetV3Small, 64, {}),
    "EfficientNetB0": (A.EfficientNetB0, 64, {}),
    "ResNet50V2": (A.ResNet50V2, 64, {}),
    "DenseNet121": (A.DenseNet121, 64, {}),
    "NASNetMobile": (A.NASNetMobile, 64, {}),
    "Xception": (A.Xception, 72, {}),
    "ConvNeXtTiny": (A.ConvNeXtTiny, 64, {}),
}


def measure(name, fraction):
    fn, size, kwargs = MODELS[name]
    model = fn(
        input_shape=(size, size, 3),
        weights=None,
        classes=10,
        classifier_activation=None,
        **kwargs,
    )
    start = time.perf_counter()
    masks = compute_masks(model, fraction, targeting="unit", groups=True)
    small, report = shrink(model, masks)
    dense_macs, small_macs = flops(model), flops(small)
    return {
        "model": name,
        "zeroed": report.zeroed,
        "removed %": round(100 * report.removed_fraction, 1),
        "params": model.count_params(),
        "params shrunk": small.count_params(),
        "MACs ratio": round(dense_macs / small_macs, 2),
        "max |diff|": f"{report.max_abs_diff:.1e}",
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--csv", default=None)
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        print(f"[{len(rows) + 1}] {name} ...", flush=True)
        rows.append(measure(name, args.fraction))
    print(format_rows(rows))
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
