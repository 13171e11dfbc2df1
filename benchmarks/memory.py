"""Target 6: peak memory of a targeted-dropout training step against plain.

Each variant runs in its own subprocess with TensorFlow's CPU allocator
switched to BFC (`TF_CPU_ALLOCATOR_USE_BFC=true`), whose statistics
`tf.config.experimental.get_memory_info("CPU:0")` reports (with the default
CPU allocator it raises "Allocator stats not available"). After one warm-up
step (tracing), the peak is reset and one more `train_on_batch` is run:

- step peak: allocator peak during the step minus the bytes in use before
  it (the step's working set: activations, gradients, temporaries);
- total peak: the allocator peak itself (weights and optimizer state too);
- RSS high-water: the process's VmHWM minus its VmRSS before the first step,
  from /proc (includes tracing, malloc's own retention and TF's caches),
  as a cross-check of the allocator figures.

    python benchmarks/memory.py          # ResNet-20 (width 0.5), batch 32
    python benchmarks/memory.py --full   # ResNet-20 (width 0.5), batch 128
"""

import json
import os
import subprocess
import sys

import _bench

VARIANTS = ("plain", "td_weight", "td_unit")


def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(variant, depth, width, batch):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_tdrop import apply_targeted_dropout
    from keras_tdrop.experiments import models

    keras.utils.set_random_seed(0)
    model = models.resnet(depth, width)
    if variant != "plain":
        targeting = variant.split("_")[1]
        model = apply_targeted_dropout(
            model, 0.5, 0.5, targeting, exclude=["stem"]
        )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.random((batch, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    rss_before = rss_kib("VmRSS")
    model.train_on_batch(x, y)
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    model.train_on_batch(x, y)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    print(
        json.dumps(
            {
                "step_peak": peak - before,
                "total_peak": peak,
                "rss_hwm": (rss_kib("VmHWM") - rss_before) * 1024,
            }
        )
    )


def main():
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--child", choices=VARIANTS, help=argparse_hidden())
    args = p.parse_args()
    batch = args.batch or (128 if args.full else 32)
    if args.child:
        child(args.child, args.depth, args.width, batch)
        return
    env = dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC="true")
    print(
        f"ResNet-{args.depth} width {args.width}, batch {batch}; "
        f"{_bench.load()}",
        flush=True,
    )
    results = {}
    for variant in VARIANTS:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                variant,
                "--depth",
                str(args.depth),
                "--width",
                str(args.width),
                "--batch",
                str(batch),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
        print(f"  {variant}: {results[variant]}", flush=True)
    mib = 2.0**20
    rows = []
    for variant, r in results.items():
        base = results["plain"]
        rows.append(
            [variant]
            + [
                f"{r[key] / mib:.1f} ({r[key] / max(base[key], 1):.3f})"
                for key in ("step_peak", "total_peak", "rss_hwm")
            ]
        )
    _bench.table(
        [
            "variant",
            "step peak MiB (ratio)",
            "total peak MiB (ratio)",
            "RSS high-water MiB (ratio)",
        ],
        rows,
    )
    size = f"ResNet-{args.depth} w{args.width} b{batch}"
    for variant in ("td_weight", "td_unit"):
        ratio = results[variant]["step_peak"] / results["plain"]["step_peak"]
        _bench.result(f"target 6 {variant} step peak ratio, {size}", ratio, 1.2)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
