"""Smoke test of the wheel: built, installed with the litert extra alone in
a fresh virtual environment, then used from outside the source tree.

`python .ci/wheel_smoke.py` (the Python needs `build`: the dev extra) builds
the wheel, creates the environment in a temporary folder, installs the
wheel and runs itself again there with `--inside`: import keras_tdrop, one
fit of a tiny Dense model with `apply_targeted_dropout`, `compute_masks`,
one TFLite export. Each step prints its wall time.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = time.perf_counter()


def step(text, t0):
    print(
        f"== {text}: {time.perf_counter() - t0:.1f} s "
        f"(total {time.perf_counter() - START:.1f} s)",
        flush=True,
    )


def run(*command, **kwargs):
    subprocess.run(command, check=True, **kwargs)


def temp_parent():
    """A RAM-backed folder when there is one with room: the environment is
    ~1.3 GB of small files, and removing them from a disk mounted with
    `discard` took 94 s here (1 s in /dev/shm); else the system's temp."""
    if "TMPDIR" not in os.environ and os.path.isdir("/dev/shm"):
        if shutil.disk_usage("/dev/shm").free > 4 * 2**30:
            return "/dev/shm"
    return None


def outside(keep=None, wheel=None):
    work = keep or tempfile.mkdtemp(
        prefix="keras_tdrop_wheel_", dir=temp_parent()
    )
    os.makedirs(work, exist_ok=True)
    print(f"work folder: {work}", flush=True)
    try:
        if wheel is None:
            t0 = time.perf_counter()
            dist = os.path.join(work, "dist")
            run(
                sys.executable,
                "-m",
                "build",
                "--quiet",
                "--wheel",
                "--outdir",
                dist,
                REPO,
                stdout=subprocess.DEVNULL,
            )
            (wheel,) = glob.glob(os.path.join(dist, "*.whl"))
            step(f"build {os.path.basename(wheel)}", t0)
        t0 = time.perf_counter()
        venv = os.path.join(work, "venv")
        run(sys.executable, "-m", "venv", "--clear", "--without-pip", venv)
        python = os.path.join(venv, "bin", "python")
        step("fresh virtual environment", t0)
        # This Python's pip installs into it (no pip inside, fewer files);
        # no .pyc files are written ahead: imports compile what they use.
        t0 = time.perf_counter()
        run(
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--quiet",
            "--no-compile",
            f"{wheel}[litert]",
        )
        step("pip install the wheel with [litert]", t0)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
        # From the work folder, so that the source tree is not importable.
        t0 = time.perf_counter()
        run(python, os.path.abspath(__file__), "--inside", cwd=work, env=env)
        step("steps in the fresh environment", t0)
    finally:
        if keep is None:
            t0 = time.perf_counter()
            shutil.rmtree(work, ignore_errors=True)
            step("work folder removed", t0)
    step("wheel smoke test passed", START)


def inside():
    import importlib.metadata
    import importlib.util

    t0 = time.perf_counter()
    import keras
    import numpy as np

    import keras_tdrop
    from keras_tdrop import export
    from keras_tdrop import pruning

    here = os.path.dirname(keras_tdrop.__file__)
    assert not here.startswith(REPO), here
    assert os.path.exists(os.path.join(here, "py.typed"))
    version = importlib.metadata.version("keras-tdrop")
    assert version == keras_tdrop.__version__, version
    absent = [
        m
        for m in ("tensorflow_datasets", "matplotlib")
        if importlib.util.find_spec(m) is None
    ]
    print(f"keras_tdrop {version} from {here}")
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")
    print(f"not installed (extras): {', '.join(absent)}")
    step("import keras_tdrop", t0)

    t0 = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    td = keras_tdrop.apply_targeted_dropout(
        model, rate=0.5, target_rate=0.5, seed=0
    )
    td.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.integers(0, 3, size=64)
    history = td.fit(x, y, epochs=1, batch_size=16, verbose=0)
    wrapped = len(keras_tdrop.targeted_dropout_layers(td))
    print(
        f"fit: {wrapped} layer(s) with targeted dropout, "
        f"loss {history.history['loss'][-1]:.4f}"
    )
    step("fit with apply_targeted_dropout", t0)

    t0 = time.perf_counter()
    plain = keras_tdrop.strip_targeted_dropout(td)
    masks = pruning.compute_masks(plain, 0.5)
    pruning.apply_masks(plain, masks)
    for path, mask in masks.items():
        print(f"compute_masks: {path} keeps {int(mask.sum())}/{mask.size}")
    step("compute_masks", t0)

    t0 = time.perf_counter()
    result = export.to_tflite(plain, "model.tflite", sparse=True)
    print(result)
    step("TFLite export (checked in LiteRT)", t0)

    try:
        from keras_tdrop.experiments import datasets

        datasets.load("mnist")
        raise AssertionError("datasets.load ran without tensorflow-datasets")
    except ImportError as error:
        assert 'pip install "keras-tdrop[data]"' in str(error), error
        print(f"datasets.load without the data extra: {error}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--wheel", help="a built wheel (default: build one)")
    parser.add_argument("--keep", help="work folder to keep (default: a temp)")
    args = parser.parse_args(argv)
    if args.inside:
        inside()
    else:
        outside(args.keep, args.wheel and os.path.abspath(args.wheel))


if __name__ == "__main__":
    main()
