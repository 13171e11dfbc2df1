"""Bad input across the public API, table-driven.

Every case must raise the listed exception with a message naming what was
wrong and what was received, before any work: the fixture's model keeps
its weights (and its layers, and its TargetedDropout rates), and no output
file is left behind.
"""

import contextlib
import io
import os
import zipfile

import keras
import numpy as np
import pytest

from keras_tdrop import RampingCallback
from keras_tdrop import TargetedDropout
from keras_tdrop import TriangularDropout
from keras_tdrop import apply_targeted_dropout
from keras_tdrop import baselines
from keras_tdrop import schedules
from keras_tdrop import set_width
from keras_tdrop import strip_targeted_dropout
from keras_tdrop import targeted_dropout_layers
from keras_tdrop import targeting
from keras_tdrop.channels import ChannelRule
from keras_tdrop.channels import channel_graph
from keras_tdrop.channels import rebuild
from keras_tdrop.channels import register_channel_rule
from keras_tdrop.layers.kernel_mask import FixedMask
from keras_tdrop.layers.kernel_mask import KernelDropout
from keras_tdrop.layers.kernel_mask import random_mask
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compare_sweeps
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import flops
from keras_tdrop.pruning import format_sweep
from keras_tdrop.pruning import group_masks
from keras_tdrop.pruning import nm_masks
from keras_tdrop.pruning import print_progress
from keras_tdrop.pruning import prunable_kernels
from keras_tdrop.pruning import prune
from keras_tdrop.pruning import prune_sweep
from keras_tdrop.pruning import recalibrate_batchnorm
from keras_tdrop.pruning import register_flops_rule
from keras_tdrop.pruning import remove_units
from keras_tdrop.pruning import sparsity_report
from keras_tdrop.pruning import sweep_models
from keras_tdrop.pruning import write_csv
from keras_tdrop.pruning.shrink import shrink
from keras_tdrop.truncation import truncate

L = keras.layers


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.fc = L.Dense(3)

    def call(self, x):
        return self.fc(x)


def built_subclassed():
    model = Subclassed()
    model(np.ones((1, 6), "float32"))
    return model


class Context:
    """What a case may use: a model to leave untouched and a folder."""

    def __init__(self, tmp_path):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6,), name="x")
        x = L.Dense(5, activation="relu", name="fc1")(inputs)
        x = TargetedDropout(L.Dense(4), 0.5, 0.5, seed=1, name="td")(x)
        x = TriangularDropout(name="tri")(x)
        outputs = L.Dense(2, name="logits")(x)
        self.model = keras.Model(inputs, outputs)
        self.model.compile("sgd", "mse", metrics=["mae"])
        self.plain = keras.Sequential(
            [keras.Input((6,)), L.Dense(4, name="a"), L.Dense(2, name="b")]
        )
        self.tmp = tmp_path
        self.x = np.ones((4, 6), "float32")
        self.y = np.zeros((4, 2), "float32")

    def saved(self, name="m.keras"):
        path = self.tmp / name
        self.plain.save(path)
        return path

    def model_with(self, value):
        """A plain copy of the model whose fc1 kernel holds `value`."""
        copy = keras.models.clone_model(self.plain)
        kernel = np.ones((6, 4), "float32")
        kernel[2, 1] = value
        copy.get_layer("a").kernel.assign(kernel)
        return copy


def _truncated(ctx):
    path = ctx.saved()
    data = path.read_bytes()
    cut = ctx.tmp / "cut.keras"
    cut.write_bytes(data[: len(data) // 2])
    return keras.saving.load_model(cut)


def _corrupted(ctx):
    path = ctx.tmp / "bad.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{not json")
        archive.writestr("metadata.json", "{}")
    return keras.saving.load_model(path)


def _ramp_fraction_unknown_length(ctx):
    import tensorflow as tf

    def gen():
        yield ctx.x, ctx.y

    data = tf.data.Dataset.from_generator(
        gen,
        output_signature=(
            tf.TensorSpec((None, 6), "float32"),
            tf.TensorSpec((None, 2), "float32"),
        ),
    )
    ctx.model.fit(
        data,
        epochs=1,
        verbose=0,
        callbacks=[RampingCallback(ramp_fraction=0.5)],
    )


def _offline(ctx):
    from keras_tdrop.experiments import datasets

    return datasets.load("mnist", data_dir=str(ctx.tmp / "no_data_here"))


def to_tflite(*args, **kwargs):
    from keras_tdrop.export.tflite import to_tflite

    return to_tflite(*args, **kwargs)


def tflite_latency(*args, **kwargs):
    from keras_tdrop.export import tflite_latency

    return tflite_latency(*args, **kwargs)


class UsageError(Exception):
    """What `keras-tdrop` printed on a usage error (argparse exits)."""


def cli(*argv):
    """A case running `keras-tdrop *argv` with no data to train on: a
    usage error raises UsageError; a run that starts fails on the data."""

    def call(ctx):
        from keras_tdrop.experiments.cli import main

        args = [*argv, "--data-dir", str(ctx.tmp / "no_data_here")]
        args += ["--out", str(ctx.tmp / "out")]
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                main(args)
            except SystemExit as error:
                raise UsageError(stderr.getvalue()) from error

    return call


ROWS = [{"fraction": 0.0, "sparsity": 0.0, "accuracy": 0.9}]


NAN = float("nan")
R = "Received"

# (id, call, exception, message pattern)
# fmt: off
CASES = [
    # TargetedDropout
    ("td-layer-str", lambda c: TargetedDropout("dense"), TypeError,
     r"`layer`.*Received: layer='dense'"),
    ("td-rate>1", lambda c: TargetedDropout(L.Dense(2), rate=1.5),
     ValueError, r"`rate`.*Received: rate=1.5"),
    ("td-rate-str", lambda c: TargetedDropout(L.Dense(2), rate="0.5"),
     TypeError, r"`rate`.*Received: rate='0.5'"),
    ("td-rate-bool", lambda c: TargetedDropout(L.Dense(2), rate=True),
     TypeError, r"`rate`.*Received: rate=True"),
    ("td-target<0", lambda c: TargetedDropout(L.Dense(2), target_rate=-0.1),
     ValueError, r"`target_rate`.*Received: target_rate=-0.1"),
    ("td-target-nan", lambda c: TargetedDropout(L.Dense(2), target_rate=NAN),
     ValueError, r"`target_rate`.*Received: target_rate=nan"),
    ("td-targeting", lambda c: TargetedDropout(L.Dense(2), targeting="row"),
     ValueError, r"`targeting`.*Received: targeting='row'"),
    ("td-reference", lambda c: TargetedDropout(L.Dense(2), reference="tf"),
     ValueError, r"`reference`.*Received: reference='tf'"),
    ("td-keep-negative",
     lambda c: TargetedDropout(L.Dense(2), keep_per_column=-1),
     ValueError, r"`keep_per_column`.*Received: keep_per_column=-1"),
    ("td-keep-float",
     lambda c: TargetedDropout(L.Dense(2), keep_per_column=2.5),
     ValueError, r"`keep_per_column`.*Received: keep_per_column=2.5"),
    ("td-keep-too-many",
     lambda c: TargetedDropout(L.Dense(2), keep_per_column=9)(c.x),
     ValueError, r"`keep_per_column`.*\(6\).*Received: keep_per_column=9"),
    ("td-prune-at-inference",
     lambda c: TargetedDropout(L.Dense(2), prune_at_inference="yes"),
     TypeError, r"`prune_at_inference`.*Received.*'yes'"),
    ("td-no-kernel-built",
     lambda c: TargetedDropout(c.model.get_layer("tri")),
     ValueError, r"kernel.*'tri' \(TriangularDropout\)"),
    ("td-no-kernel-unbuilt",
     lambda c: TargetedDropout(L.Activation("relu", name="act"))(c.x),
     ValueError, r"kernel.*'act' \(Activation\)"),
    # Wrapping
    ("wrap-not-model", lambda c: apply_targeted_dropout("model"), TypeError,
     r"`model`.*Received: model='model'"),
    ("wrap-subclassed", lambda c: apply_targeted_dropout(Subclassed()),
     ValueError, r"subclassed.*Received: model=Subclassed"),
    ("wrap-unbuilt",
     lambda c: apply_targeted_dropout(keras.Sequential([L.Dense(2)])),
     ValueError, rf"built.*{R}: unbuilt Sequential"),
    ("wrap-rate", lambda c: apply_targeted_dropout(c.plain, rate=2),
     ValueError, r"`rate`.*Received: rate=2"),
    ("wrap-targeting",
     lambda c: apply_targeted_dropout(c.plain, targeting="units"),
     ValueError, r"`targeting`.*Received: targeting='units'"),
    ("wrap-exclude-int", lambda c: apply_targeted_dropout(c.plain, exclude=5),
     TypeError, r"`exclude`.*Received: exclude=5"),
    ("wrap-exclude-ints",
     lambda c: apply_targeted_dropout(c.plain, exclude=[1]),
     TypeError, r"`exclude`.*Received: exclude=\[1\]"),
    ("strip-none", lambda c: strip_targeted_dropout(None), TypeError,
     r"`model`.*Received: model=None"),
    ("strip-subclassed", lambda c: strip_targeted_dropout(Subclassed()),
     ValueError, r"subclassed"),
    # RampingCallback
    ("ramp-schedule", lambda c: RampingCallback(schedule="cosine"),
     ValueError, r"`schedule`.*Received: schedule='cosine'"),
    ("ramp-both",
     lambda c: RampingCallback(ramp_steps=(1, 2), ramp_fraction=0.5),
     ValueError, r"not both.*ramp_steps=\(1, 2\), ramp_fraction=0.5"),
    ("ramp-fraction-0", lambda c: RampingCallback(ramp_fraction=0),
     ValueError, r"`ramp_fraction`.*Received: ramp_fraction=0"),
    ("ramp-fraction>1", lambda c: RampingCallback(ramp_fraction=(0.5, 1.5)),
     ValueError, r"`ramp_fraction`.*ramp_fraction=\(0.5, 1.5\)"),
    ("ramp-rate", lambda c: RampingCallback(rate=2.0), ValueError,
     r"`rate`.*Received: rate=2.0"),
    ("ramp-constant-steps",
     lambda c: RampingCallback(schedule="constant", ramp_steps=(1, 2)),
     ValueError, r"'piecewise' and 'linear'.*schedule='constant'"),
    ("ramp-steps-order", lambda c: RampingCallback(ramp_steps=(10, 5)),
     ValueError, r"first_steps.*total_steps|total_steps.*first_steps"),
    ("ramp-steps-negative", lambda c: RampingCallback(ramp_steps=(-1, 5)),
     ValueError, r"first_steps.*-1"),
    ("ramp-steps-str", lambda c: RampingCallback(ramp_steps="many"),
     ValueError, r"`ramp_steps`.*Received: ramp_steps='many'"),
    ("ramp-steps-triple", lambda c: RampingCallback(ramp_steps=(1, 2, 3)),
     ValueError, r"\(first, total\).*Received: ramp_steps=\(1, 2, 3\)"),
    ("ramp-fraction-unknown-length", _ramp_fraction_unknown_length,
     ValueError, r"`ramp_fraction`.*steps=None"),
    # targeting functions
    ("mask-scalar-kernel",
     lambda c: targeting.targeted_mask(np.float32(1.0), 0.5),
     ValueError, r"non-scalar shape.*Received: shape=\(\)"),
    ("mask-targeting",
     lambda c: targeting.targeted_mask(np.ones((3, 2)), 0.5, "col"),
     ValueError, r"`targeting`.*Received: targeting='col'"),
    ("dropout-reference",
     lambda c: targeting.targeted_dropout(np.ones((3, 2)), 0.5, 0.5,
                                          reference="T2T"),
     ValueError, r"`reference`.*Received: reference='T2T'"),
    # Pruning
    ("masks-fraction", lambda c: compute_masks(c.model, 1.5), ValueError,
     r"`fraction`.*Received: fraction=1.5"),
    ("masks-fraction-none", lambda c: compute_masks(c.model, None),
     TypeError, r"`fraction`.*Received: fraction=None"),
    ("masks-targeting", lambda c: compute_masks(c.model, 0.5, "row"),
     ValueError, r"`targeting`.*Received: targeting='row'"),
    ("masks-not-model", lambda c: compute_masks([1, 2], 0.5), TypeError,
     r"`model`.*Received: model=\[1, 2\]"),
    ("masks-unbuilt",
     lambda c: compute_masks(keras.Sequential([L.Dense(2)]), 0.5),
     ValueError, r"built.*unbuilt model"),
    ("masks-nan-weights", lambda c: compute_masks(c.model_with(NAN), 0.5),
     ValueError, r"a/kernel.*non-finite.*NaN"),
    ("masks-inf-weights",
     lambda c: compute_masks(c.model_with(float("inf")), 0.5),
     ValueError, r"a/kernel.*non-finite.*Inf"),
    ("masks-scope", lambda c: compute_masks(c.model, 0.5, scope="world"),
     ValueError, r"`scope`.*Received: scope='world'"),
    ("masks-criterion",
     lambda c: compute_masks(c.model, 0.5, criterion="size"),
     ValueError, r"`criterion`.*Received: criterion='size'"),
    ("masks-block-size",
     lambda c: compute_masks(c.model, 0.5, block_size=1),
     ValueError, r"`block_size`.*Received: block_size=1"),
    ("masks-block-unit",
     lambda c: compute_masks(c.model, 0.5, "unit", block_size=4),
     ValueError, r"`block_size`.*Received: targeting='unit'"),
    ("masks-scores-unknown",
     lambda c: compute_masks(c.model, 0.5, scores={"q": np.ones(3)}),
     ValueError, r"`scores`.*Received: path='q'"),
    ("masks-scores-nan",
     lambda c: compute_masks(c.plain, 0.5, scores={
         c.plain.get_layer("a").kernel.path: np.full((6, 4), NAN)}),
     ValueError, r"(?i)non-finite.*a/kernel"),
    ("apply-masks-list", lambda c: apply_masks(c.model, [1]), TypeError,
     r"`masks`.*Received: masks=list"),
    ("apply-masks-unknown",
     lambda c: apply_masks(c.model, {"nope/kernel": np.ones((6, 5))}),
     ValueError, r"Received: path='nope/kernel'"),
    ("apply-masks-shape",
     lambda c: apply_masks(
         c.model, {c.model.get_layer("fc1").kernel.path: np.ones((5, 6))}),
     ValueError, r"fc1/kernel.*\(5, 6\).*\(6, 5\)"),
    ("prune-fraction", lambda c: prune(c.model, -0.5, inplace=True),
     ValueError, r"`fraction`.*Received: fraction=-0.5"),
    ("sweep-empty-fractions",
     lambda c: prune_sweep(c.model, (c.x, c.y), fractions=[]),
     ValueError, r"`fractions`.*Received: fractions=\[\]"),
    ("sweep-fraction>1",
     lambda c: prune_sweep(c.model, (c.x, c.y), fractions=[0.5, 1.2]),
     ValueError, r"`fractions`.*Received: fractions=\[0.5, 1.2\]"),
    ("sweep-uncompiled", lambda c: prune_sweep(c.plain, (c.x, c.y)),
     ValueError, r"compiled.*metrics=None"),
    ("sweep-empty-data",
     lambda c: prune_sweep(c.model, (c.x[:0], c.y[:0]), fractions=[0.5]),
     ValueError, r"(?i)empty|no (data|examples|batches)"),
    # TriangularDropout
    ("tri-mode", lambda c: TriangularDropout(mode="square"), ValueError,
     r"`mode`.*Received: mode='square'"),
    ("tri-unmasked-rate", lambda c: TriangularDropout(unmasked_rate=2),
     ValueError, r"`unmasked_rate`.*Received: unmasked_rate=2"),
    ("tri-width-0", lambda c: TriangularDropout(width=0), ValueError,
     r"`width`.*Received: width=0"),
    ("tri-width>units", lambda c: set_width(c.model, 9), ValueError,
     r"`width`.*4 units.*Received: width=9"),
    ("tri-set-width-none", lambda c: set_width(c.plain, 2), ValueError,
     r"no TriangularDropout"),
    ("tri-set-width-name", lambda c: set_width(c.model, {"tri2": 2}),
     ValueError, r"tri2.*Received: width=\{'tri2': 2\}"),
    # Truncation and shrinking
    ("truncate-not-model", lambda c: truncate("m", 2), TypeError,
     r"`model`.*Received: model='m'"),
    ("truncate-no-layer", lambda c: truncate(c.plain, 2), ValueError,
     r"no TriangularDropout"),
    ("truncate-width-0", lambda c: truncate(c.model, 0), ValueError,
     r"`width` for layer 'tri'.*\[1, 4\].*Received: width=0"),
    ("truncate-width-name", lambda c: truncate(c.model, {"x": 1}),
     ValueError, r"\['x'\].*Received: width=\{'x': 1\}"),
    ("shrink-not-model", lambda c: shrink(None), TypeError,
     r"`model`.*Received: model=None"),
    ("shrink-subclassed", lambda c: shrink(built_subclassed()), ValueError,
     r"Sequential or functional.*Subclassed"),
    ("shrink-bad-masks", lambda c: shrink(c.plain, masks={"z": 1}),
     ValueError, r"Received: path='z'"),
    ("shrink-unbuilt-subclassed", lambda c: shrink(Subclassed()),
     ValueError, r"Sequential or functional.*Subclassed"),
    ("wrap-built-subclassed",
     lambda c: apply_targeted_dropout(built_subclassed()),
     ValueError, r"subclassed.*Received: model=Subclassed"),
    # Export
    ("tflite-missing-folder",
     lambda c: to_tflite(c.plain, c.tmp / "nowhere" / "m.tflite"),
     FileNotFoundError, r"folder.*Received: path=.*nowhere"),
    ("tflite-path-folder", lambda c: to_tflite(c.plain, c.tmp),
     ValueError, r"folder.*Received: path="),
    ("tflite-quantize", lambda c: to_tflite(c.plain, c.tmp / "m.tflite",
                                            quantize="int4"),
     ValueError, r"`quantize`.*Received: quantize='int4'"),
    ("tflite-sparse", lambda c: to_tflite(c.plain, c.tmp / "m.tflite",
                                          sparse="yes"),
     TypeError, r"`sparse`.*Received: sparse='yes'"),
    ("tflite-unwritable", lambda c: to_tflite(c.plain, "/proc/m.tflite"),
     OSError, r"/proc"),
    # Files and data
    ("load-truncated", _truncated, (ValueError, zipfile.BadZipFile, OSError),
     r"(?i)zip|file"),
    ("load-corrupted", _corrupted, (ValueError, zipfile.BadZipFile, OSError),
     r"(?i)json|config|expect"),
    ("load-missing",
     lambda c: keras.saving.load_model(c.tmp / "missing.keras"),
     (ValueError, OSError), r"missing.keras"),
    ("data-offline", _offline, FileNotFoundError,
     r"'mnist' is not prepared in .*no_data_here"),
    # Channel-group masks and N:M masks
    ("group-masks-fraction", lambda c: group_masks(c.plain, 1.5),
     ValueError, r"`fraction`.*Received: fraction=1.5"),
    ("group-masks-scope", lambda c: group_masks(c.plain, 0.5, scope="all"),
     ValueError, r"`scope`.*Received: scope='all'"),
    ("group-masks-keep-stem",
     lambda c: group_masks(c.plain, 0.5, keep_stem="no"),
     TypeError, r"`keep_stem`.*Received: keep_stem='no'"),
    ("group-masks-importance",
     lambda c: group_masks(c.plain, 0.5, importance="taylor"),
     ValueError, r"`importance`.*Received: importance='taylor'"),
    ("group-masks-round-to", lambda c: group_masks(c.plain, 0.5, round_to=0),
     ValueError, r"`round_to`.*Received: round_to=0"),
    ("group-masks-not-model", lambda c: group_masks("m", 0.5), TypeError,
     r"`model`.*Received: model='m'"),
    ("masks-groups-str",
     lambda c: compute_masks(c.plain, 0.5, "unit", groups="yes"),
     TypeError, r"`groups`.*Received: groups='yes'"),
    ("nm-n>m", lambda c: nm_masks(c.plain, 4, 2), ValueError,
     r"`n` must be <= `m`.*Received: n=4, m=2"),
    ("nm-n-str", lambda c: nm_masks(c.plain, "2", 4), ValueError,
     r"`n`.*Received: n='2'"),
    ("prunable-exclude-logits",
     lambda c: prunable_kernels(c.plain, exclude_logits="no"),
     TypeError, r"`exclude_logits`.*Received: exclude_logits='no'"),
    ("wrap-exclude-logits",
     lambda c: apply_targeted_dropout(c.plain, exclude_logits=None),
     TypeError, r"`exclude_logits`.*Received: exclude_logits=None"),
    ("prune-inplace", lambda c: prune(c.model, 0.5, inplace="yes"),
     TypeError, r"`inplace`.*Received: inplace='yes'"),
    ("apply-masks-inplace", lambda c: apply_masks(c.model, {}, inplace=1),
     TypeError, r"`inplace`.*Received: inplace=1"),
    # FLOPs
    ("flops-not-model", lambda c: flops("m"), TypeError,
     r"`model`.*Received: model='m'"),
    ("flops-per-layer", lambda c: flops(c.plain, per_layer="yes"),
     TypeError, r"`per_layer`.*Received: per_layer='yes'"),
    ("flops-rule-class", lambda c: register_flops_rule("Dense", max),
     TypeError, r"`layer_class`.*Received: layer_class='Dense'"),
    ("flops-rule-fn", lambda c: register_flops_rule(L.Dense, 3), TypeError,
     r"`fn`.*Received: fn=3"),
    # Recalibration, sweeps and reports
    ("recal-steps", lambda c: recalibrate_batchnorm(c.plain, c.x, steps=0),
     ValueError, r"`steps`.*Received: steps=0"),
    ("recal-batch-size",
     lambda c: recalibrate_batchnorm(c.plain, c.x, batch_size=0),
     ValueError, r"`batch_size`.*Received: batch_size=0"),
    ("recal-data-str", lambda c: recalibrate_batchnorm(c.plain, "x.npy"),
     ValueError, r"`data` must be arrays.*Received: data='x.npy'"),
    ("sweep-progress",
     lambda c: prune_sweep(c.model, (c.x, c.y), [0.5], progress=True),
     TypeError, r"`progress`.*Received: progress=True"),
    ("sweep-recalibrate-str",
     lambda c: prune_sweep(c.model, (c.x, c.y), [0.5], recalibrate="x"),
     ValueError, r"`recalibrate` must be arrays.*Received: recalibrate='x'"),
    ("sweep-data-str", lambda c: prune_sweep(c.model, "test.npz", [0.5]),
     TypeError, r"`data`.*Received: data='test.npz'"),
    ("sweep-models-list", lambda c: sweep_models([c.model], (c.x, c.y)),
     ValueError, r"`models`.*Received: models=list"),
    ("compare-sweeps-metric",
     lambda c: compare_sweeps({"a": ROWS}, metric="f1"),
     ValueError, r"`metric`.*Received: metric='f1'"),
    ("format-sweep-str", lambda c: format_sweep("rows"), TypeError,
     r"`sweeps`.*Received: sweeps='rows'"),
    ("sparsity-report-not-model", lambda c: sparsity_report("m"),
     TypeError, r"`model`.*Received: model='m'"),
    ("sparsity-report-dense",
     lambda c: sparsity_report(c.plain, verbose=0, dense=[c.plain]),
     TypeError, r"`dense`.*Received: dense=\[<Sequential"),
    ("write-csv-str", lambda c: write_csv("rows", c.tmp / "r.csv"),
     TypeError, r"`rows`.*Received: rows='rows'"),
    ("write-csv-row", lambda c: write_csv([ROWS[0], 3], c.tmp / "r.csv"),
     TypeError, r"`rows`.*Received: rows\[1\]=3"),
    ("write-csv-missing-folder",
     lambda c: write_csv(ROWS, c.tmp / "nowhere" / "r.csv"),
     FileNotFoundError, r"folder.*Received: path=.*nowhere"),
    ("print-progress-row", lambda c: print_progress("row", 1, 2), TypeError,
     r"`row`.*Received: row='row'"),
    ("remove-units-index", lambda c: remove_units(c.plain, {"a": [9]}),
     ValueError, r"`keep\['a'\]`.*\[0, 4\).*Received: \[9\]"),
    ("remove-units-layer", lambda c: remove_units(c.plain, {"z": [0]}),
     ValueError, r"`keep` names a layer.*Received: 'z'"),
    ("shrink-strict", lambda c: shrink(c.plain, strict="yes"), TypeError,
     r"`strict`.*Received: strict='yes'"),
    # Channel graph
    ("graph-not-model", lambda c: channel_graph("m"), TypeError,
     r"`model`.*Received: model='m'"),
    ("graph-strict", lambda c: channel_graph(c.plain, strict="yes"),
     TypeError, r"`strict`.*Received: strict='yes'"),
    ("rebuild-graph", lambda c: rebuild(c.plain, set()), TypeError,
     r"`graph`.*ChannelGraph.*Received: graph=<Sequential"),
    ("channel-rule-type", lambda c: register_channel_rule("Dense",
                                                          ChannelRule()),
     TypeError, r"`op_type`.*Received: op_type='Dense'"),
    ("channel-rule-rule", lambda c: register_channel_rule(L.Dense, 3),
     TypeError, r"`rule`.*Received: rule=3"),
    # Finding and setting layers
    ("td-layers-not-model", lambda c: targeted_dropout_layers("m"),
     TypeError, r"`model`.*Received: model='m'"),
    ("set-width-not-model", lambda c: set_width("m", 2), TypeError,
     r"`model`.*Received: model='m'"),
    ("set-width-float", lambda c: set_width(c.model, 2.5), ValueError,
     r"`width`.*Received: width=2.5"),
    # Schedules and the targeting functions
    ("piecewise-first-fraction",
     lambda c: schedules.piecewise(5, first_fraction=1.5),
     ValueError, r"`first_fraction`.*Received: first_fraction=1.5"),
    ("piecewise-total-0", lambda c: schedules.piecewise(5, 1, 0),
     ValueError, r"`total_steps`.*Received: total_steps=0"),
    ("linear-total-str", lambda c: schedules.linear(5, "10"), TypeError,
     r"`total_steps`.*Received: total_steps='10'"),
    ("mask-target>1", lambda c: targeting.targeted_mask(np.ones((3, 2)), 1.5),
     ValueError, r"`target_rate`.*Received: target_rate=1.5"),
    ("dropout-rate>1",
     lambda c: targeting.targeted_dropout(np.ones((3, 2)), 1.5, 0.5),
     ValueError, r"`rate`.*Received: rate=1.5"),
    ("dropout-target-str",
     lambda c: targeting.targeted_dropout(np.ones((3, 2)), 0.5, "0.5"),
     TypeError, r"`target_rate`.*Received: target_rate='0.5'"),
    ("td-noise", lambda c: TargetedDropout(L.Dense(2), noise="gauss"),
     ValueError, r"`noise`.*Received: noise='gauss'"),
    ("td-rescale", lambda c: TargetedDropout(L.Dense(2), rescale="yes"),
     TypeError, r"`rescale`.*Received: rescale='yes'"),
    # Kernel masks and baselines
    ("fixed-mask-layer", lambda c: FixedMask("dense", fraction=0.5),
     TypeError, r"`layer`.*Received: layer='dense'"),
    ("fixed-mask-fraction", lambda c: FixedMask(L.Dense(2), fraction=1.5),
     ValueError, r"`fraction`.*Received: fraction=1.5"),
    ("kernel-dropout-rate", lambda c: KernelDropout(L.Dense(2), rate=-0.5),
     ValueError, r"`rate`.*Received: rate=-0.5"),
    ("random-mask-targeting",
     lambda c: random_mask((3, 2), 0.5, targeting="row"),
     ValueError, r"`targeting`.*Received: targeting='row'"),
    ("l0-beta", lambda c: baselines.apply_l0(c.plain, beta=-1), ValueError,
     r"`beta`.*Received: beta=-1"),
    ("l1-coefficient", lambda c: baselines.apply_l1(c.plain, coefficient=-1),
     ValueError, r"`coefficient`.*Received: coefficient=-1"),
    ("smallify-not-model", lambda c: baselines.apply_smallify("m"),
     TypeError, r"`model`.*Received: model='m'"),
    # Export
    ("tflite-tolerance",
     lambda c: to_tflite(c.plain, c.tmp / "m.tflite", tolerance=-1),
     ValueError, r"`tolerance`.*Received: tolerance=-1"),
    ("tflite-not-model", lambda c: to_tflite("m", c.tmp / "m.tflite"),
     TypeError, r"`model`.*Received: model='m'"),
    ("tflite-latency-repeats",
     lambda c: tflite_latency(c.tmp / "m.tflite", c.x, repeats=0),
     ValueError, r"`repeats`.*Received: repeats=0"),
    # The keras-tdrop command line
    ("cli-epochs", cli("demo", "--epochs", "0"), UsageError,
     r"argument --epochs: must be >= 1, got 0"),
    ("cli-fractions", cli("demo", "--fractions", "0.5,2"), UsageError,
     r"argument --fractions: .*got '0.5,2'"),
    ("cli-rate", cli("demo", "--rate", "1.5"), UsageError,
     r"argument --rate: must be in \[0, 1\], got 1.5"),
    ("cli-learning-rate", cli("autoencoder", "--learning-rate", "0"),
     UsageError, r"argument --learning-rate: must be > 0, got 0.0"),
    ("cli-fixed-widths", cli("autoencoder", "--fixed-widths", "0,3"),
     UsageError, r"argument --fixed-widths: .*got '0,3'"),
    ("cli-train-width", cli("train", "none", "--width", "-1"), UsageError,
     r"argument --width: must be > 0, got -1.0"),
    ("cli-train-learning-rate",
     cli("train", "none", "--learning-rate", "nan"), UsageError,
     r"argument --learning-rate: must be > 0, got nan"),
    ("cli-analyze-fraction", cli("analyze", "--fraction", "2"), UsageError,
     r"argument --fraction: must be in \[0, 1\], got 2.0"),
]
# fmt: on


def _snapshot(ctx):
    td = ctx.model.get_layer("td")
    tri = ctx.model.get_layer("tri")
    return (
        [np.array(w) for w in ctx.model.get_weights()],
        [layer.name for layer in ctx.model.layers],
        (td.current_rate, td.current_target_rate, tri.width),
        [np.array(w) for w in ctx.plain.get_weights()],
    )


def _same(a, b):
    weights_a, names_a, rates_a, plain_a = a
    weights_b, names_b, rates_b, plain_b = b
    return (
        names_a == names_b
        and rates_a == rates_b
        and all(np.array_equal(x, y) for x, y in zip(weights_a, weights_b))
        and all(np.array_equal(x, y) for x, y in zip(plain_a, plain_b))
    )


def test_table_is_large_enough():
    assert len(CASES) >= 100
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(
    "call, error, pattern",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_raises_clearly_and_touches_nothing(
    tmp_path, call, error, pattern
):
    ctx = Context(tmp_path)
    before = _snapshot(ctx)
    files = set(os.listdir(tmp_path))
    with pytest.raises(error, match=pattern):
        call(ctx)
    assert _same(before, _snapshot(ctx))
    left = set(os.listdir(tmp_path)) - files
    assert not {n for n in left if n.endswith((".tmp", ".part"))}
