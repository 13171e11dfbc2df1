"""A run folder's sweeps on disk: writing, reading and finding them.

A finished run folder keeps its sweeps as `sweep_{weight,unit}.csv` (and,
for models with BatchNormalization, `sweep_{weight,unit}_recalibrated.csv`)
next to its `config.json`.
"""

import os

from keras_tdrop.pruning.report import write_csv

__all__ = [
    "SIZE_COLUMNS",
    "SWEEP_COLUMNS",
    "TARGETINGS",
    "find_runs",
    "load_run",
    "read_run_json",
    "read_sweep_csv",
    "sweep_files",
    "write_sweep_csv",
]

SWEEP_COLUMNS = ("fraction", "sparsity", "loss", "accuracy")
# Written too when the sweep rows have them (prune_sweep's rows do).
SIZE_COLUMNS = ("parameters", "nonzero", "compression", "flops", "speedup")
TARGETINGS = ("weight", "unit")


def write_sweep_csv(rows, path):
    """Writes the rows of `prune_sweep` as a run folder keeps them: the
    columns `read_sweep_csv` reads (see `write_csv`)."""
    rows = list(rows)
    extra = [c for c in SIZE_COLUMNS if rows and c in rows[0]]
    write_csv(rows, path, columns=SWEEP_COLUMNS + tuple(extra))


def read_sweep_csv(path):
    """The rows written by `write_sweep_csv`, as floats (None if empty)."""
    import csv

    with open(path, newline="") as f:
        return [
            {k: float(v) if v != "" else None for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def sweep_files(recalibrated=False):
    """`{targeting: file name}` of a run folder's sweeps."""
    suffix = "_recalibrated" if recalibrated else ""
    return {t: f"sweep_{t}{suffix}.csv" for t in TARGETINGS}


def load_run(run_dir, recalibrated=False):
    """`(label, {"weight": rows, "unit": rows})` of a finished run folder.

    The label is the experiment's name (from config.json), else the
    folder's name. With `recalibrated`, the sweeps with BatchNorm
    recalibrated (`sweep_{weight,unit}_recalibrated.csv`).
    """
    files = sweep_files(recalibrated)
    sweeps = {}
    for targeting, name in files.items():
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            sweeps[targeting] = read_sweep_csv(path)
    if not sweeps:
        why = (
            "a model without BatchNorm, or swept before recalibration: run "
            "`keras-tdrop train` on it again"
            if recalibrated
            else "is the run finished?"
        )
        raise ValueError(
            f"`{run_dir}` holds no {' or '.join(files.values())} ({why}). "
            f"Received: run_dir={run_dir!r}"
        )
    label = os.path.basename(os.path.normpath(run_dir))
    config = read_run_json(run_dir)
    return config.get("experiment", label), sweeps


def find_runs(folder, recalibrated=False):
    """The run folders directly under `folder` (those with a sweep CSV;
    with `recalibrated`, a recalibrated one), sorted by name."""
    if not os.path.isdir(folder):
        raise ValueError(
            f"`results` must be a folder of run folders. Received: "
            f"results={folder!r}"
        )
    return [
        os.path.join(folder, name)
        for name in sorted(os.listdir(folder))
        if any(
            os.path.exists(os.path.join(folder, name, file))
            for file in sweep_files(recalibrated).values()
        )
    ]


def read_run_json(run_dir, name="config.json"):
    """The JSON file `name` of a run folder as a dict, {} if it is absent."""
    import json

    path = os.path.join(run_dir, name)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)
