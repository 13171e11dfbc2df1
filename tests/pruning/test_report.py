import csv
import os

import keras
import numpy as np
import pytest

from keras_tdrop import apply_targeted_dropout
from keras_tdrop.pruning import compare_sweeps
from keras_tdrop.pruning import format_sweep
from keras_tdrop.pruning import plot_sweeps
from keras_tdrop.pruning import print_progress
from keras_tdrop.pruning import sparsity_report
from keras_tdrop.pruning import write_csv
from keras_tdrop.pruning.report import SIZE_COLUMNS
from keras_tdrop.pruning.report import format_rows
from tests.tolerance import approx


def rows_of(accuracies, sparsity=(0.0, 0.5, 0.9)):
    return [
        {"fraction": f, "sparsity": s, "loss": 1.0 - a, "accuracy": a}
        for f, s, a in zip((0.0, 0.5, 0.9), sparsity, accuracies)
    ]


PLAIN = rows_of((0.98, 0.97, 0.41))
TARGETED = rows_of((0.97, 0.97, 0.95))


def test_sparsity_report_counts():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 2, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5, name="fc")(x)
    model = keras.Model(inputs, outputs)
    conv = np.ones((2, 2, 2, 3), "float32")
    conv[..., 1] = 0.0  # a whole filter
    conv[0, 0, 0, 2] = 0.0
    fc = np.ones((27, 5), "float32")
    fc[:10, 0] = 0.0
    model.get_layer("conv").kernel.assign(conv)
    model.get_layer("fc").kernel.assign(fc)
    rows = sparsity_report(model, verbose=0)
    assert rows == [
        dict(
            layer="conv",
            parameters=27,
            weights=24,
            zeros=9,
            sparsity=9 / 24,
            units=3,
            zero_units=1,
            nonzero=15,  # 3 zero biases too
            compression=27 / 15,
            flops=3 * 3 * 2 * 2 * 2 * 3,
        ),
        dict(
            layer="fc",
            parameters=140,
            weights=135,
            zeros=10,
            sparsity=10 / 135,
            units=5,
            zero_units=0,
            nonzero=125,
            compression=140 / 125,
            flops=27 * 5,
        ),
        dict(
            layer="total",
            parameters=model.count_params(),
            weights=159,
            zeros=19,
            sparsity=19 / 159,
            units=8,
            zero_units=1,
            nonzero=146,  # batch norm: 6 of 12 (beta and mean are 0)
            compression=179 / 146,
            flops=216 + 135,
        ),
    ]
    assert model.count_params() == 179
    # Wrapped layers report the kernels they wrap.
    wrapped = apply_targeted_dropout(model, exclude_logits=False)
    assert [r["zeros"] for r in sparsity_report(wrapped, verbose=0)] == [
        9,
        10,
        19,
    ]


def test_sparsity_report_prints_table(capsys):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.layers[0].kernel.assign(np.zeros((3, 2)))
    sparsity_report(model)
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0].split()
        == (
            "layer parameters weights zeros sparsity units zero_units nonzero "
            "compression flops"
        ).split()
    )
    assert lines[-1].split() == "total 8 6 6 1.0000 2 2 0 inf 6".split()


def mlp(hidden):
    inputs = keras.Input((5,))
    x = keras.layers.Dense(hidden, name="fc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def test_sparsity_report_speedup_against_dense():
    dense, narrow = mlp(8), mlp(4)
    rows = sparsity_report(narrow, verbose=0, dense=dense)
    # fc1 5x8 -> 5x4, logits 8x3 -> 4x3: half the MACs everywhere.
    assert [(r["flops"], r["speedup"]) for r in rows] == [
        (20, 2.0),
        (12, 2.0),
        (32, 2.0),
    ]
    masked = sparsity_report(dense, verbose=0, dense=dense)
    assert [r["speedup"] for r in masked] == [1.0, 1.0, 1.0]
    assert "speedup" not in sparsity_report(dense, verbose=0)[0]


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.fc = keras.layers.Dense(2)

    def call(self, inputs):
        return self.fc(inputs)


def test_sparsity_report_without_a_graph_has_no_flops():
    model = Subclassed()
    model(np.ones((1, 3)))
    rows = sparsity_report(model, verbose=0, dense=model)
    assert [(r["flops"], r["speedup"]) for r in rows] == [(None, None)] * 2
    assert rows[-1]["nonzero"] == 6  # the kernel; the biases are 0


def test_format_rows():
    text = format_rows([{"layer": "fc1", "n": 12, "x": 0.5}, {"layer": "b"}])
    assert text.splitlines() == [
        "layer   n       x",
        "-----  --  ------",
        "fc1    12  0.5000",
        "b",
    ]


def test_compare_sweeps_and_table():
    rows = compare_sweeps({"plain": PLAIN, "targeted": TARGETED})
    assert rows[2] == {
        "prune_fraction": 0.9,
        "sparsity": 0.9,
        "accuracy_plain": 0.41,
        "accuracy_targeted": 0.95,
    }
    assert format_sweep({"plain": PLAIN, "targeted": TARGETED}) == "\n".join(
        [
            "prune %  sparsity    plain  targeted",
            "-------  --------  -------  --------",
            "     0%    0.0000   0.9800    0.9700",
            "    50%    0.5000   0.9700    0.9700",
            "    90%    0.9000   0.4100    0.9500",
        ]
    )
    assert compare_sweeps({"plain": PLAIN}, "loss")[1]["loss_plain"] == (
        approx(0.03)
    )


def test_different_sparsities_get_their_columns():
    other = rows_of((0.9, 0.8, 0.7), sparsity=(0.0, 0.45, 0.8))
    rows = compare_sweeps({"cnn": PLAIN, "mlp": other})
    assert list(rows[1]) == [
        "prune_fraction",
        "sparsity_cnn",
        "accuracy_cnn",
        "sparsity_mlp",
        "accuracy_mlp",
    ]
    table = format_sweep({"cnn": PLAIN, "mlp": other}).splitlines()
    assert table[0] == "prune %  sp. cnn      cnn  sp. mlp      mlp"
    assert table[4] == "    90%   0.9000   0.4100   0.8000   0.7000"


def test_single_sweep_table():
    assert format_sweep(PLAIN).splitlines()[:3] == [
        "prune %  sparsity     loss  accuracy",
        "-------  --------  -------  --------",
        "     0%    0.0000   0.0200    0.9800",
    ]


def test_single_sweep_table_with_counts():
    rows = [
        dict(r, parameters=1000, flops=123456789, speedup=1.0, missing=None)
        for r in PLAIN[:2]
    ]
    assert format_sweep(rows).splitlines()[::2] == [
        "prune %  sparsity     loss  accuracy  parameters      flops"
        "  speedup  missing",
        "     0%    0.0000   0.0200    0.9800        1000  123456789"
        "   1.0000        -",
    ]


def test_bad_sweeps():
    with pytest.raises(ValueError, match=r"sweeps=list"):
        compare_sweeps([PLAIN])
    with pytest.raises(ValueError, match=r"'short' has \[0.0\]"):
        compare_sweeps({"plain": PLAIN, "short": PLAIN[:1]})


def test_write_csv_is_atomic(tmp_path):
    path = tmp_path / "rows.csv"
    write_csv(compare_sweeps({"plain": PLAIN}), path)
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    assert table[2] == {
        "prune_fraction": "0.900000",
        "sparsity": "0.900000",
        "accuracy_plain": "0.410000",
    }
    before = path.read_bytes()
    with pytest.raises(ValueError):
        # A row with a column the header lacks fails half way.
        write_csv([{"a": 1.0}, {"b": 2.0}], path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["rows.csv"]


def test_plot_has_one_curve_per_model(tmp_path):
    from matplotlib.image import imread

    path = tmp_path / "sweeps.png"
    third = rows_of((0.5, 0.6, 0.7))
    plot_sweeps({"a": PLAIN, "b": TARGETED, "c": third}, path, title="t")
    pixels = (imread(path)[..., :3] * 255).round().astype(int)
    colours = {tuple(p) for p in pixels.reshape(-1, 3)}
    # matplotlib's first three cycle colours: one curve each.
    for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):
        assert colour in colours
    path2 = tmp_path / "two.png"
    plot_sweeps({"a": PLAIN, "b": TARGETED}, path2)
    pixels = (imread(path2)[..., :3] * 255).round().astype(int)
    assert (44, 160, 44) not in {tuple(p) for p in pixels.reshape(-1, 3)}


def test_written_files_get_the_umask_mode_not_0600(tmp_path):
    path = tmp_path / "rows.csv"
    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        original = os.umask(umask)
        try:
            write_csv([{"a": 1}], path)
            plot_sweeps({"a": PLAIN}, tmp_path / "a.png")
        finally:
            os.umask(original)
        assert path.stat().st_mode & 0o777 == mode
        assert (tmp_path / "a.png").stat().st_mode & 0o777 == mode


def test_format_rows_options():
    rows = [
        {"run": "a", "loss": 0.25, "kept": True, "note": None, "n": 3},
        {"run": "bb", "loss": None, "kept": False, "note": "x", "n": 12},
    ]
    assert format_rows(rows).splitlines() == [
        "run    loss  kept  note   n",
        "---  ------  ----  ----  --",
        "a    0.2500   yes         3",
        "bb             no     x  12",
    ]
    text = format_rows(
        rows,
        columns=["n", "loss"],
        headers={"loss": "L"},
        widths={"loss": 8},
        label=False,
        missing="-",
        gap=" ",
        rule=False,
    )
    assert text.splitlines() == [
        " n        L",
        " 3   0.2500",
        "12        -",
    ]
    assert format_rows([{"a": 1}], widths=4).splitlines()[0] == "a"


def test_write_csv_columns_and_float_format(tmp_path):
    path = tmp_path / "rows.csv"
    rows = [
        {"run": "a", "x": 1 / 3, "n": 2, "skip": 1, "m": None},
        {"run": "b", "x": np.float32(0.5), "n": 3, "skip": 2},
    ]
    write_csv(rows, path, columns=("run", "x", "n", "m"), float_format=".3g")
    assert path.read_text().splitlines() == [
        "run,x,n,m",
        "a,0.333,2,",
        "b,0.5,3,",
    ]


def test_print_progress_shows_the_evaluated_values(capsys):
    row = {"fraction": 0.5, "sparsity": 0.25, "accuracy": 0.75, "loss": 0.5}
    row |= dict.fromkeys(SIZE_COLUMNS)
    print_progress(row, 2, 4)
    assert capsys.readouterr().out == (
        "[2/4] pruned 50% (sparsity 0.2500): accuracy 0.7500, loss 0.5000\n"
    )


def test_plot_panels_with_bands(tmp_path):
    from matplotlib.image import imread

    mean = [dict(r, accuracy_sd=0.1) for r in TARGETED]
    path = tmp_path / "panels.png"
    plot_sweeps(
        {"weight": {"plain": PLAIN, "td": mean}, "unit": {"plain": PLAIN}},
        path,
        title="runs",
    )
    pixels = imread(path)
    assert pixels.shape[:2] == (400, 1100)
    colours = {
        tuple(p)
        for p in (pixels[..., :3] * 255).round().astype(int).reshape(-1, 3)
    }
    # The second curve's band: its colour (255, 127, 14) at alpha 0.25 on
    # white.
    assert (255, 223, 195) in colours
    single = tmp_path / "single.png"
    plot_sweeps({"plain": PLAIN}, single)
    assert imread(single).shape[:2] == (400, 600)
