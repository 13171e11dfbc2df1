"""The TF-MOT bridge, run in a subprocess: importing TF-MOT flips tf.keras."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_tdrop import apply_targeted_dropout
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import to_tfmot

# find_spec, not importorskip: importing TF-MOT here would flip tf.keras.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_model_optimization") is None
    or importlib.util.find_spec("tf_keras") is None,
    reason="needs the tfmot extra",
)

ROUND_TRIP = r"""
import json
import numpy as np
import keras
from keras_tdrop.pruning import apply_masks, compute_masks
from keras_tdrop.pruning import from_tfmot, to_tfmot


def residual_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("relu", name="act1")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = keras.layers.Conv2D(8, 1, name="pw")(y)
    y = keras.layers.BatchNormalization(name="bn2")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    out = keras.layers.Dense(4, name="logits")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    for bn in ("bn1", "bn2"):
        layer = model.get_layer(bn)
        layer.moving_mean.assign(rng.normal(0, 0.2, 8).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 2, 8).astype("float32"))
    return model


def sequential_model():
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(10, name="d1"),
        keras.layers.Activation("tanh", name="act"),
        keras.layers.Dropout(0.1, name="drop"),
        keras.layers.Dense(12, activation="relu", name="d2"),
        keras.layers.Dense(3, name="out"),
    ], name="seq")


def zoo_model():
    # Every other layer of SUPPORTED_LAYERS, once.
    keras.utils.set_random_seed(3)
    L = keras.layers
    inp = keras.Input((8, 8, 3), name="image")
    x = L.ZeroPadding2D(1)(inp)
    x = L.SeparableConv2D(6, 3, name="sep")(x)
    x = L.ReLU()(x)
    x = L.SpatialDropout2D(0.1)(x)
    x = L.AveragePooling2D(2)(x)
    a = L.Conv2D(6, 1, name="c_a")(x)
    b = L.Activation("sigmoid")(x)
    m = L.Multiply()([a, b])
    x = L.Concatenate()([L.Average()([a, m]), a])
    x = L.Concatenate()([L.GlobalAveragePooling2D()(x),
                         L.GlobalMaxPooling2D()(x)])
    x = L.LayerNormalization()(x)
    x = L.Reshape((12, 2))(x)
    x = L.Conv1D(4, 3, name="c1d")(x)
    x = L.MaxPooling1D()(x)
    x = L.AveragePooling1D(2)(x)
    x = L.Add()([L.GlobalAveragePooling1D()(x), L.GlobalMaxPooling1D()(x)])
    out = L.Softmax()(L.Dense(3, name="logits")(x))
    return keras.Model(inp, out)


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def wrapper_masks(tf_model):
    return {
        w.name: m.numpy() for layer in tf_model.layers
        for w, m, _ in getattr(layer, "pruning_vars", [])
    }


import tensorflow_model_optimization as tfmot
import tf_keras

out = {}
rng = np.random.default_rng(2)
x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
y = rng.integers(0, 4, 64)
model = residual_model()
original = [np.array(v.numpy()) for v in model.weights]
masks = compute_masks(model, 0.7, exclude=["dw"])
masked = apply_masks(model, masks)
expected = masked.predict(x, verbose=0)

tf_model = to_tfmot(model, masks)
out["wrapped"] = sorted(
    l.name for l in tf_model.layers if hasattr(l, "pruning_vars"))
out["initial_diff"] = maxdiff(tf_model.predict(x, verbose=0), expected)
out["initial_masks_equal"] = all(
    np.array_equal(wrapper_masks(tf_model)[
        f"prune_low_magnitude_{p.split('/')[0]}/kernel:0"], m)
    for p, m in masks.items())

kernels_before = {k: v for k, v in (
    (w.name, w.numpy()) for w in tf_model.weights) if "kernel" in k}
tf_model.compile(
    tf_keras.optimizers.Adam(0.01),
    tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
tf_model.fit(x, y, epochs=1, batch_size=16, verbose=0,
             callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
after = wrapper_masks(tf_model)
out["masks_equal_after_fit"] = all(
    np.array_equal(after[f"prune_low_magnitude_{p.split('/')[0]}/kernel:0"],
                   m) for p, m in masks.items())
changed = zero_violations = 0
for w in tf_model.weights:
    if w.name in after:
        mask = after[w.name]
        zero_violations += int(np.count_nonzero(w.numpy()[mask == 0]))
        changed += int(np.sum(
            (w.numpy() != kernels_before[w.name]) & (mask == 1)))
out["pruned_nonzero_after_fit"] = zero_violations
out["kept_weights_changed"] = changed
out["kept_weights_total"] = int(sum(m.sum() for m in masks.values()))

stripped = tfmot.sparsity.keras.strip_pruning(tf_model)
tuned = tf_model.predict(x, verbose=0)
out["strip_diff"] = maxdiff(stripped.predict(x, verbose=0), tuned)
out["stripped_names"] = [l.name for l in stripped.layers]

back, back_masks = from_tfmot(tf_model, model)
out["back_mask_paths"] = sorted(back_masks)
out["back_masks_equal"] = all(
    np.array_equal(back_masks[p], m) for p, m in masks.items())
out["back_diff"] = maxdiff(back.predict(x, verbose=0), tuned)
out["back_pruned_nonzero"] = sum(
    int(np.count_nonzero(
        keras.ops.convert_to_numpy(v.value)[back_masks[v.path] == 0]))
    for v in back.weights if v.path in back_masks)
out["original_unchanged"] = all(
    np.array_equal(a, v.numpy()) for a, v in zip(original, model.weights))
fresh, fresh_masks = from_tfmot(tf_model)
out["fresh_diff"] = maxdiff(fresh.predict(x, verbose=0), tuned)
out["fresh_masks_equal"] = sorted(fresh_masks) == sorted(masks) and all(
    np.array_equal(fresh_masks[p], m) for p, m in masks.items())
out["fresh_layers"] = [type(l).__name__ for l in fresh.layers]
back2, masks2 = from_tfmot(stripped, model)
out["stripped_back_masks"] = len(masks2)
out["stripped_back_diff"] = maxdiff(back2.predict(x, verbose=0), tuned)

import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
content = tf.lite.TFLiteConverter.from_keras_model(stripped).convert()
interpreter = Interpreter(model_content=content)
(inp,) = interpreter.get_input_details()
interpreter.resize_tensor_input(inp["index"], x.shape)
interpreter.allocate_tensors()
interpreter.set_tensor(inp["index"], x)
interpreter.invoke()
lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
out["tflite_diff"] = maxdiff(lite, tuned)

seq = sequential_model()
xs = rng.normal(size=(32, 6)).astype("float32")
seq_masks = compute_masks(seq, 0.5)
seq_tf = to_tfmot(seq, seq_masks)
out["seq_diff"] = maxdiff(
    seq_tf.predict(xs, verbose=0),
    apply_masks(seq, seq_masks).predict(xs, verbose=0))
seq_back, seq_back_masks = from_tfmot(seq_tf, seq)
out["seq_back_diff"] = maxdiff(
    seq_back.predict(xs, verbose=0), seq_tf.predict(xs, verbose=0))
# Keyed by the returned model's paths (a named Sequential prefixes its own
# with "seq/"); equal masks layer by layer.
apply_masks(seq_back, seq_back_masks)
by_layer = {p.split("/")[-2]: m for p, m in seq_back_masks.items()}
out["seq_back_masks_equal"] = sorted(by_layer) == ["d1", "d2"] and all(
    np.array_equal(by_layer[p.split("/")[-2]], m)
    for p, m in seq_masks.items())

zoo = zoo_model()
zoo_masks = {p: m for p, m in compute_masks(zoo, 0.5).items()
             if p != "sep/depthwise_kernel"}
out["zoo_mask_paths"] = sorted(zoo_masks)
zoo_tf = to_tfmot(zoo, zoo_masks)
out["zoo_diff"] = maxdiff(
    zoo_tf.predict(x, verbose=0),
    apply_masks(zoo, zoo_masks).predict(x, verbose=0))
zoo_back, _ = from_tfmot(tfmot.sparsity.keras.strip_pruning(zoo_tf))
out["zoo_back_diff"] = maxdiff(
    zoo_back.predict(x, verbose=0), zoo_tf.predict(x, verbose=0))

schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, 0, frequency=1)
own = to_tfmot(seq, schedule=schedule)
own.compile("sgd", "mse")
own.fit(xs, rng.normal(size=(32, 3)), epochs=1, batch_size=8, verbose=0,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
out["own_schedule_sparsity"] = {
    name: float((m == 0).mean()) for name, m in wrapper_masks(own).items()}
print("RESULT " + json.dumps(out))
"""


def run_child(script):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(line[-1][len("RESULT ") :])


def test_round_trip_through_tfmot():
    out = run_child(ROUND_TRIP)
    # Dense and Conv kernels are wrapped; depthwise and logits are not.
    assert out["wrapped"] == [
        "prune_low_magnitude_fc",
        "prune_low_magnitude_pw",
        "prune_low_magnitude_stem",
    ]
    assert out["initial_masks_equal"]
    assert out["initial_diff"] < 1e-5
    # A fine-tuning epoch inside TF-MOT: masks identical, pruned weights 0,
    # and the kept weights did train.
    assert out["masks_equal_after_fit"]
    assert out["pruned_nonzero_after_fit"] == 0
    assert out["kept_weights_changed"] > 0.5 * out["kept_weights_total"]
    assert out["strip_diff"] == 0.0
    assert out["stripped_names"][1:4] == ["stem", "bn1", "act1"]
    # Back in Keras 3, outputs equal; the caller's model is untouched.
    assert out["back_mask_paths"] == ["fc/kernel", "pw/kernel", "stem/kernel"]
    assert out["back_masks_equal"]
    assert out["back_pruned_nonzero"] == 0
    assert out["back_diff"] < 1e-5
    assert out["original_unchanged"]
    # Without the Keras 3 model: the architecture is rebuilt from tf_keras.
    assert out["fresh_diff"] < 1e-5 and out["fresh_masks_equal"]
    assert out["fresh_layers"] == [
        "InputLayer",
        "Conv2D",
        "BatchNormalization",
        "Activation",
        "DepthwiseConv2D",
        "Conv2D",
        "BatchNormalization",
        "Add",
        "MaxPooling2D",
        "Flatten",
        "Dropout",
        "Dense",
        "Dense",
    ]
    assert out["stripped_back_masks"] == 0
    assert out["stripped_back_diff"] < 1e-5
    assert out["tflite_diff"] < 1e-4
    assert out["seq_diff"] < 1e-5 and out["seq_back_diff"] < 1e-5
    assert out["seq_back_masks_equal"]
    assert out["zoo_mask_paths"] == [
        "c1d/kernel",
        "c_a/kernel",
        "sep/pointwise_kernel",
    ]
    assert out["zoo_diff"] < 1e-5 and out["zoo_back_diff"] < 1e-5
    # TF-MOT's own schedule recomputes masks: 50% of each wrapped kernel.
    assert out["own_schedule_sparsity"] == {
        "prune_low_magnitude_d1/kernel:0": 0.5,
        "prune_low_magnitude_d2/kernel:0": 0.5,
    }


def test_importing_keras_tdrop_does_not_import_tfmot():
    script = (
        "import sys, keras_tdrop, keras_tdrop.pruning, keras_tdrop.export\n"
        "assert callable(keras_tdrop.pruning.to_tfmot)\n"
        "print(sorted(m for m in ('tensorflow_model_optimization', "
        "'tf_keras') if m in sys.modules))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def small_model():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, name="fc")(x)
    return keras.Model(inputs, outputs)


def test_bad_input_raises_before_importing_tfmot():
    model = small_model()
    masks = compute_masks(model, 0.5, exclude_logits=False)
    with pytest.raises(ValueError, match=r"depthwise.*'dw/kernel'"):
        to_tfmot(model, masks)
    with pytest.raises(ValueError, match="masks=None"):
        to_tfmot(model)
    with pytest.raises(ValueError, match="schedule='sometimes'"):
        to_tfmot(model, {}, schedule="sometimes")
    with pytest.raises(ValueError, match="path='nope/kernel'"):
        to_tfmot(model, {"nope/kernel": np.ones(3)})
    with pytest.raises(ValueError, match="only 0 and 1"):
        to_tfmot(model, {"fc/kernel": np.full((32, 3), 0.5)})
    with pytest.raises(TypeError, match="model="):
        to_tfmot("model", {})
    wrapped = apply_targeted_dropout(
        small_model(), 0.5, 0.5, exclude_logits=False
    )
    with pytest.raises(ValueError, match="strip_targeted_dropout first"):
        to_tfmot(wrapped, {})
    assert "tensorflow_model_optimization" not in sys.modules
