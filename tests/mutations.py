"""Edits a reviewer might make that used to leave every test green.

Each mutation is applied to a copy of the package and tests in a temporary
folder (the working tree is never touched), and the test named for it is
run there; it must fail. Run from the repository root:

    .venv/bin/python tests/mutations.py            # all of them
    .venv/bin/python tests/mutations.py xla-bits   # one, by name

Exit status 0 when every mutation is caught. A mutation whose text is no
longer in its file (the code moved) is reported as such, and fails too.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, file, text, replacement, the test that must fail)
MUTATIONS = [
    (
        "xtreme-kernel-scale",
        "keras_tdrop/layers/targeted_dropout.py",
        "return [g / gammas[0] if gammas[0] else 1.0 for g in gammas]",
        "return [1.0 for g in gammas]",
        "tests/layers/test_targeted_dropout.py::"
        "test_xtreme_attention_keeps_n_per_column_of_each_kernel_when_run",
    ),
    (
        "shrink-uniform-always",
        "keras_tdrop/pruning/constants.py",
        "return np.allclose(flat, flat[0], rtol=1e-5, atol=1e-6)",
        "return True",
        "tests/pruning/test_shrink.py::"
        "test_zero_padding_keeps_a_nonzero_constant_exact",
    ),
    (
        "shrink-uniform-check-removed",
        "keras_tdrop/pruning/constants.py",
        "if _uniform(flat) and all(",
        "if all(",
        "tests/pruning/test_shrink.py::"
        "test_zero_padding_keeps_a_nonzero_constant_exact",
    ),
    (
        "ramp-fraction-first-phase",
        "keras_tdrop/callbacks/ramping.py",
        "resolved = [resolved[0] // 2 or 1, resolved[0]]",
        "resolved = [resolved[0] // 4 or 1, resolved[0]]",
        "tests/callbacks/test_ramping.py::test_single_number_ramp_fraction",
    ),
    (
        "ramp-fraction-of-one-epoch",
        "keras_tdrop/callbacks/ramping.py",
        "planned = epochs * steps",
        "planned = steps",
        "tests/callbacks/test_ramping.py::test_single_number_ramp_fraction",
    ),
    (
        "xla-bits",
        "keras_tdrop/targeting.py",
        "low = ops.where(ops.less_equal(count, j), candidate, low)",
        "low = ops.where(ops.less(count, j), candidate, low)",
        "tests/test_targeting.py::test_mask_under_xla_on_tensorflow",
    ),
    (
        "demo-no-ramp-to-full-strength",
        "keras_tdrop/experiments/demo.py",
        "callbacks.append(RampingCallback(ramp_fraction=ramp_fraction))",
        "callbacks.append(RampingCallback(ramp_fraction=ramp_fraction, "
        "target_rate=0.1))",
        "tests/experiments/test_demo.py::"
        "test_small_demo_favours_targeted_dropout_at_high_sparsity",
    ),
]


def run(name, path, text, replacement, test):
    with tempfile.TemporaryDirectory() as folder:
        for item in ("keras_tdrop", "tests", "pyproject.toml"):
            source = ROOT / item
            if source.is_dir():
                shutil.copytree(source, Path(folder) / item)
            else:
                shutil.copy(source, folder)
        target = Path(folder) / path
        code = target.read_text()
        if code.count(text) != 1:
            return "NOT APPLIED (text not found once)"
        target.write_text(code.replace(text, replacement))
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cache"]
            + [test],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
        )
        return (
            "caught"
            if result.returncode == 1
            else (f"MISSED (pytest exit {result.returncode})")
        )


def main(names):
    chosen = [m for m in MUTATIONS if not names or m[0] in names]
    missed = 0
    for mutation in chosen:
        outcome = run(*mutation)
        missed += outcome != "caught"
        print(f"{mutation[0]:<32} {outcome:<10} {mutation[4]}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
