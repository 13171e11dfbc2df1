import contextlib
import csv
import io
import math
import os
from pathlib import Path

import pytest

from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import demo
from tests.tolerance import approx

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = os.environ.get("TFDS_DATA_DIR") or str(
    REPO.parent / "shared" / "tensorflow_datasets"
)
TEST_LIMIT = 400
# (rows, cols) of the prunable kernels of mnist_cnn(): conv2 and fc1.
PRUNABLE = [(3 * 3 * 32, 64), (5 * 5 * 64, 128)]


def expected_sparsity(fraction):
    removed = sum(
        math.floor(round(fraction * rows, 6)) * cols for rows, cols in PRUNABLE
    )
    return removed / sum(rows * cols for rows, cols in PRUNABLE)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny demo, shared by the tests below."""
    out = tmp_path_factory.mktemp("demo")
    original = datasets.has_network
    datasets.has_network = lambda *a, **k: False
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            rows = demo.run_demo(
                out,
                data_dir=DATA_DIR,
                epochs=1,
                batch_size=64,
                train_limit=640,
                test_limit=TEST_LIMIT,
                verbose=2,
            )
    finally:
        datasets.has_network = original
    return out, rows, stdout.getvalue()


def test_rows(tiny_run):
    _, rows, _ = tiny_run
    assert [r["prune_fraction"] for r in rows] == list(demo.FRACTIONS)
    for row in rows:
        assert row["sparsity"] == approx(
            expected_sparsity(row["prune_fraction"]), abs=1e-12, dtype="float64"
        )
        for key in ("accuracy_plain", "accuracy_targeted"):
            # Accuracies are counts of correct test examples.
            correct = row[key] * TEST_LIMIT
            assert correct == approx(round(correct), abs=1e-3)
            assert 0.0 <= row[key] <= 1.0


def test_sparsity_exact_values(tiny_run):
    _, rows, _ = tiny_run
    by_fraction = {r["prune_fraction"]: r["sparsity"] for r in rows}
    assert by_fraction[0.0] == 0.0
    # conv2: 144 of 288 per column; fc1: 800 of 1600 per column.
    assert by_fraction[0.5] == (144 * 64 + 800 * 128) / (288 * 64 + 1600 * 128)
    # 0.1: floor(28.8) = 28 of 288 and 160 of 1600.
    assert by_fraction[0.1] == approx(
        22272 / 223232, abs=1e-12, dtype="float64"
    )


def test_csv(tiny_run):
    out, rows, _ = tiny_run
    with open(out / "demo.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 10
    assert tuple(table[0].keys()) == demo.COLUMNS
    for written, row in zip(table, rows):
        for key in demo.COLUMNS:
            assert float(written[key]) == approx(row[key], abs=1e-6)


def test_png(tiny_run):
    out, _, _ = tiny_run
    data = (out / "demo.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000


def test_printed_table_and_progress(tiny_run):
    _, rows, printed = tiny_run
    assert "prune %  sparsity    plain  targeted" in printed
    for i in range(1, 11):
        assert f"[{i}/10] pruned" in printed
    last = rows[-1]
    assert (
        f"    90%    {last['sparsity']:.4f}   {last['accuracy_plain']:.4f}"
        f"    {last['accuracy_targeted']:.4f}"
    ) in printed


def test_invalid_fractions(tmp_path):
    with pytest.raises(ValueError, match="Received: fractions="):
        demo.run_demo(tmp_path, fractions=(0.5, 1.5))


def test_small_demo_favours_targeted_dropout_at_high_sparsity(tmp_path):
    """The demo's headline on a small subset (3000 training images, two
    epochs of batches of 32, 1000 test images; 25-40 s on 2 busy cores).

    Measured over seeds 0-4 (accuracy at 95% of the weights per column
    pruned, targeted minus plain): +0.205, +0.119, +0.113, +0.185, +0.227
    (mean 0.170, standard deviation 0.050, minimum 0.113); at 0% the plain
    model is 0.02-0.03 ahead. At 90% this budget is not enough for the gap
    to be reliable (-0.014 to +0.067), so the check is at 95%, with a
    threshold of 0.05 (the mean less 2.4 standard deviations)."""
    original = datasets.has_network
    datasets.has_network = lambda *a, **k: False
    try:
        rows = demo.run_demo(
            tmp_path,
            data_dir=DATA_DIR,
            epochs=2,
            batch_size=32,
            train_limit=3000,
            test_limit=1000,
            fractions=(0.0, 0.95),
            seed=0,
            verbose=0,
        )
    finally:
        datasets.has_network = original
    dense, pruned = rows
    assert dense["accuracy_plain"] > 0.85 and dense["accuracy_targeted"] > 0.85
    assert pruned["accuracy_targeted"] - pruned["accuracy_plain"] > 0.05


@pytest.mark.slow
def test_default_demo_favours_targeted_dropout(tmp_path):
    """The full default demo (about 2.5 minutes on 2 cores)."""
    rows = demo.run_demo(tmp_path, data_dir=DATA_DIR, verbose=0)
    by_fraction = {r["prune_fraction"]: r for r in rows}
    assert by_fraction[0.0]["accuracy_plain"] > 0.98
    assert by_fraction[0.9]["accuracy_targeted"] > 0.95
    assert (
        by_fraction[0.9]["accuracy_targeted"]
        - by_fraction[0.9]["accuracy_plain"]
        > 0.05
    )
