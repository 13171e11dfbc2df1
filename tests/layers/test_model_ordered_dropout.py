"""Ordered channel dropout through the channel graph: training passes cut
every group to the same prefix of channels, `truncate` cuts exactly those,
and the truncated model is an ordinary, exportable Keras model."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import ModelOrderedDropout
from keras_tdrop import RampingCallback
from keras_tdrop import truncate
from keras_tdrop.channels import channel_graph
from keras_tdrop.channels.groups import prunable_groups
from keras_tdrop.channels.ordering import kept_channels
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import ordered_masks
from keras_tdrop.pruning.ordered_masks import ordered_roots
from tests.channels.helpers import perturb_norms
from tests.channels.test_applications import small
from tests.channels.test_applications import transformer_encoder
from tests.tolerance import approx
from tests.tolerance import assert_close

A = keras.applications
L = keras.layers
WIDTHS = (0.25, 0.5, 0.75)


def mobile_block_net(width=16, seed=0):
    """A MobileNetV2-style network: stem, inverted residuals (expansion,
    depthwise, projection, residual Add), head, logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0)(x)
    for i in range(2):
        y = L.Conv2D(3 * width, 1, use_bias=False, name=f"b{i}_exp")(x)
        y = L.BatchNormalization(name=f"b{i}_exp_bn")(y)
        y = L.ReLU(6.0)(y)
        y = L.DepthwiseConv2D(3, padding="same", name=f"b{i}_dw")(y)
        y = L.BatchNormalization(name=f"b{i}_dw_bn")(y)
        y = L.ReLU(6.0)(y)
        y = L.Conv2D(width, 1, use_bias=False, name=f"b{i}_proj")(y)
        y = L.BatchNormalization(name=f"b{i}_proj_bn")(y)
        x = L.Add()([x, y])
    x = L.Conv2D(2 * width, 1, name="head")(x)
    x = L.GlobalAveragePooling2D()(x)
    return perturb_norms(keras.Model(inputs, L.Dense(5, name="logits")(x)))


def x_of(model, batch=4, seed=1):
    shape = (batch,) + tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype("float32")


def out(model, x, training=False):
    return ops.convert_to_numpy(model(x, training=training))


def assert_prefixes(model, width, round_to=1):
    """Every member slice of every cut group keeps the group's first
    `kept_channels` channels and loses the others, in `ordered_masks`."""
    graph = channel_graph(model)
    masks = ordered_masks(model, width, round_to=round_to)
    groups = prunable_groups(graph, model)
    assert groups
    pieces = graph.root_slices()
    for roots in groups.values():
        k = kept_channels(len(roots), width, round_to)
        if round_to > 1:
            assert k % round_to == 0 or k == len(roots)
        index = {r: i for i, r in enumerate(roots)}
        for root in roots:
            for piece, positions in pieces[root]:
                if piece.role == "param":
                    continue
                mask = masks.get(piece.variable.path)
                if mask is None:
                    # Nothing of this kernel is cut: the group keeps all.
                    assert k == len(roots)
                    continue
                kept = np.take(mask, positions, axis=piece.axis)
                # A cut channel is zero in the whole slice; a kept one
                # keeps its entries (but those another cut group zeroes).
                if index[root] < k:
                    assert np.any(kept == 1.0), (piece.variable.path, root)
                else:
                    assert np.all(kept == 0.0), (piece.variable.path, root)


def check_truncation(model, tmp_path, widths=WIDTHS, round_to=1, atol=1e-5):
    """truncate == ordered-masked model; .keras round trip; LiteRT."""
    x = x_of(model)
    for width in widths:
        assert_prefixes(model, width, round_to)
        masks = ordered_masks(model, width, round_to=round_to)
        small_model = truncate(model, width, round_to=round_to)
        assert small_model.count_params() < model.count_params()
        assert not any(
            isinstance(layer, ModelOrderedDropout)
            for layer in small_model.layers
        )
        expected = out(apply_masks(model, masks), x)
        assert_close(out(small_model, x), expected, rtol=1e-4, atol=atol)
        if tmp_path is not None and width == 0.5:
            path = os.path.join(tmp_path, "small.keras")
            small_model.save(path)
            loaded = keras.saving.load_model(path)
            assert_close(out(loaded, x), out(small_model, x), atol=1e-6)
            if keras.backend.backend() != "tensorflow":
                continue  # LiteRT export converts TensorFlow graphs
            from keras_tdrop.export import to_tflite

            result = to_tflite(
                small_model, os.path.join(tmp_path, "small.tflite"), sample=x
            )
            assert result.max_abs_diff <= result.tolerance


def test_kept_channels_rule():
    assert kept_channels(16, 0.25) == 4
    assert kept_channels(10, 0.3) == 3  # 0.3 * 10 is 3.0000000000000004
    assert kept_channels(20, 0.25, round_to=8) == 8
    assert kept_channels(20, 0.5, round_to=8) == 16
    assert kept_channels(4, 0.25, round_to=8) == 4
    assert kept_channels(3, 0.01) == 1
    assert kept_channels(7, 1.0) == 7
    for n, w, r in [(16, 0.25, 1), (20, 0.3, 8), (10, 0.55, 4), (3, 0.01, 1)]:
        tensor = kept_channels(n, ops.convert_to_tensor(w, "float32"), r)
        assert int(ops.convert_to_numpy(tensor)) == kept_channels(n, w, r)


def test_mobile_block_net_truncates_exactly(tmp_path):
    model = mobile_block_net()
    check_truncation(model, tmp_path)
    check_truncation(model, None, widths=(0.3,), round_to=4)


def test_keras_mobilenet_v2_truncates_exactly(tmp_path):
    model = small(A.MobileNetV2, alpha=0.35)()
    check_truncation(model, tmp_path)


def test_transformer_encoder_truncates_exactly(tmp_path):
    model = transformer_encoder()
    check_truncation(model, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["EfficientNetB0", "ConvNeXtTiny"])
def test_heavy_applications_truncate_exactly(name, tmp_path):
    fn = {"EfficientNetB0": A.EfficientNetB0, "ConvNeXtTiny": A.ConvNeXtTiny}
    model = small(fn[name])()
    check_truncation(model, tmp_path)


def test_training_pass_is_the_ordered_masked_model():
    """A sandwich step's passes: the full width (which alone moves the
    statistics) and the narrowest width, each equal to the model with the
    ordered masks of that width, in training mode."""
    model = mobile_block_net()
    od = ModelOrderedDropout(model, min_width=0.25, num_random=1, seed=3)
    x = x_of(model, batch=6)
    full = out(model, x, training=True)
    narrow = out(apply_masks(model, ordered_masks(model, 0.25)), x, True)
    moving = [ops.convert_to_numpy(v).copy() for v in model.weights]
    y = out(od, x, training=True)
    assert y.shape == (3 * 6, 5)
    assert_close(y[:6], full, rtol=1e-5, atol=1e-5)
    assert_close(y[6:12], narrow, rtol=1e-5, atol=1e-5)
    # Only the full pass moved the statistics; no trainable weight moved.
    reference = keras.models.clone_model(model)
    reference.set_weights(moving)
    reference(x, training=True)
    for v, w in zip(model.weights, reference.weights):
        assert_close(ops.convert_to_numpy(v), ops.convert_to_numpy(w))
    assert_close(out(od, x), out(model, x))  # inference: the model


def test_every_step_cuts_the_same_prefix_in_every_member():
    """The kernels a training pass runs on: zero exactly where the ordered
    masks of the drawn width are, at every width drawn."""
    model = mobile_block_net()
    od = ModelOrderedDropout(model, min_width=0.25, round_to=2)
    values = {
        id(v): ops.convert_to_tensor(v.value) for v in kernel_variables(model)
    }
    for width in (0.25, 0.4, 0.5, 0.8, 1.0):
        truncated, held = od.ordering.truncated(values, width, 2)
        masks = ordered_masks(model, width, round_to=2)
        by_path = {v.path: ops.convert_to_numpy(t) for v, t in truncated}
        stored = {v.path: ops.convert_to_numpy(v) for v in model.weights}
        assert set(masks) <= set(by_path)
        for path, value in by_path.items():
            mask = masks.get(path, 1.0)
            assert_close(value, stored[path] * mask)
        graph = channel_graph(model)
        removed = list(ordered_roots(graph, model, width, 2))
        # The residual stream holds the stem, so it stays whole; the
        # expansions (with their depthwise convolutions) and the head are
        # cut, and the statistics of their normalizations held.
        assert {v.path for v, _ in held} == (
            {
                f"b{i}_{part}_bn/moving_{stat}"
                for i in range(2)
                for part in ("exp", "dw")
                for stat in ("mean", "variance")
            }
            if width < 1.0
            else {v.path for v, _ in held}
        )
        for variable, hold in held:
            assert variable.name.startswith("moving_")
            (piece,) = [
                p for p in graph.slices.values() if p.variable is variable
            ]
            expected = np.isin(graph.roots(piece.ids), removed)
            assert np.array_equal(ops.convert_to_numpy(hold), expected)


@pytest.mark.parametrize("mode", ["sandwich", "uniform", "triangular"])
def test_fit_ramp_save_load_and_truncate(mode, tmp_path):
    model = mobile_block_net()
    od = ModelOrderedDropout(
        model, min_width=0.25, mode=mode, num_random=1, chunks=2, seed=1
    )
    od.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x = x_of(model, batch=16)
    y = np.arange(16) % 5
    ramp = RampingCallback(ramp_fraction=(0.25, 0.5))
    history = od.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[ramp])
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["td_rate"][-1] == approx(0.75)
    path = os.path.join(tmp_path, "od.keras")
    od.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ModelOrderedDropout)
    assert (loaded.mode, loaded.min_width) == (mode, 0.25)
    assert_close(out(loaded, x), out(od, x), atol=1e-6)
    small_model = truncate(loaded, 0.5)
    masks = ordered_masks(od.model, 0.5)
    assert_close(
        out(small_model, x), out(apply_masks(od.model, masks), x), atol=1e-5
    )


def test_export_widths_of_an_ordered_model(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("LiteRT export converts TensorFlow graphs")
    from keras_tdrop.export.widths import export_widths
    from keras_tdrop.export.widths import format_width_table

    model = mobile_block_net()
    od = ModelOrderedDropout(model, round_to=4)
    x = x_of(model, batch=8)
    y = np.arange(8) % 5
    rows = export_widths(
        od,
        [0.25, 0.5, 1.0],
        tmp_path,
        data=(x, y),
        metric="sparse_categorical_accuracy",
        verbose=0,
    )
    assert [r["width"] for r in rows] == [0.25, 0.5, 1.0]
    assert rows[-1]["params"] == model.count_params()
    for row in rows:
        small_model = truncate(model, row["width"], round_to=4)
        assert row["params"] == small_model.count_params()
        assert row["max_abs_diff"] <= 1e-4
        expected = np.mean(np.argmax(out(small_model, x), axis=-1) == y)
        assert row["sparse_categorical_accuracy"] == approx(expected)
    assert rows[0]["macs"] < rows[1]["macs"] < rows[2]["macs"]
    assert len(format_width_table(rows).splitlines()) == 5
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"{model.name}_w{w}.tflite" for w in (0.25, 0.5, 1.0)]
        + [f"{model.name}_widths.csv"]
    )


def test_recalibrated_truncation():
    model = mobile_block_net()
    x = x_of(model, batch=32)
    small_model = truncate(model, 0.5, recalibrate=x)
    bn = small_model.get_layer("b0_exp_bn")
    features = keras.Model(small_model.inputs[0], bn.input)(x, training=False)
    axes = tuple(range(len(features.shape) - 1))
    assert_close(
        ops.convert_to_numpy(bn.moving_mean),
        ops.convert_to_numpy(ops.mean(features, axis=axes)),
        rtol=1e-4,
        atol=1e-5,
    )


def test_bad_input_is_refused_before_any_work():
    model = mobile_block_net()
    before = [ops.convert_to_numpy(v).copy() for v in model.weights]
    for width in (0.0, 1.5, -0.25, "half", True):
        with pytest.raises(ValueError, match=r"`width` must be .*Received"):
            truncate(model, width)
    with pytest.raises(ValueError, match="takes a fraction"):
        truncate(model, 8)
    with pytest.raises(ValueError, match=r"channel count in \[1, 48\]"):
        truncate(model, {"b0_exp": 49})
    with pytest.raises(ValueError, match="write no channel group"):
        truncate(model, {"nope": 0.5})
    with pytest.raises(ValueError, match="round_to=0"):
        truncate(model, 0.5, round_to=0)
    with pytest.raises(ValueError, match="min_width=1.5"):
        ModelOrderedDropout(model, min_width=1.5)
    with pytest.raises(ValueError, match="mode='wide'"):
        ModelOrderedDropout(model, mode="wide")
    with pytest.raises(ValueError, match="round_to=0"):
        ModelOrderedDropout(model, round_to=0)
    with pytest.raises(ValueError, match="chunks=0"):
        ModelOrderedDropout(model, mode="triangular", chunks=0)
    # No group truncation can cut: the stem alone feeds the logits.
    inputs = keras.Input((4, 4, 3))
    h = L.GlobalAveragePooling2D()(L.Conv2D(4, 1, name="only")(inputs))
    tiny = keras.Model(inputs, L.Dense(2, name="logits")(h))
    with pytest.raises(ValueError, match="no channel group"):
        truncate(tiny, 0.5)
    with (
        pytest.raises(ValueError, match="no channel group"),
        pytest.warns(UserWarning),
    ):
        ModelOrderedDropout(tiny)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2D(4, 1)
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(ops.mean(self.conv(x), axis=(1, 2)))

    sub = Sub()
    sub(np.zeros((1, 4, 4, 3), "float32"))
    with pytest.raises(ValueError, match="TriangularDropout"):
        ModelOrderedDropout(sub)
    with pytest.raises(ValueError, match="functional or Sequential"):
        truncate(sub, 0.5)
    for v, w in zip(model.weights, before):
        assert np.array_equal(ops.convert_to_numpy(v), w)
