"""apply/strip_targeted_dropout on real graphs: keras.applications, raw-op
residuals, KerasHub dict inputs, nested and shared layers, several inputs
and outputs, frozen layers."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import apply_targeted_dropout
from keras_tdrop import keras_adapter
from keras_tdrop import strip_targeted_dropout
from keras_tdrop import targeted_dropout_layers
from keras_tdrop.kernels import iter_layers
from keras_tdrop.kernels import logits_layers
from keras_tdrop.pruning.masks import apply_masks
from keras_tdrop.pruning.masks import compute_masks

KERNEL_TYPES = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Dense,
    keras.layers.MultiHeadAttention,
)


def numpy_tree(outputs):
    return [ops.convert_to_numpy(o) for o in keras.tree.flatten(outputs)]


def assert_same_outputs(a, b, x):
    for got, want in zip(
        numpy_tree(a(x, training=False)), numpy_tree(b(x, training=False))
    ):
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-6


def typed_layers(model, types):
    """Independent count: layers of `types` anywhere in `model`, each once
    (nested models walked by hand, not through keras_tdrop)."""
    found = {}
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
        elif isinstance(layer, types) and layer.trainable:
            found[id(layer)] = layer.name
    return sorted(found.values())


def round_trip(model, x, y, expected_wrapped, tmp_path, losses=None, big=False):
    """apply -> fit (SGD at learning rate 0) -> strip, with the four checks;
    returns (wrapped model, plain model).

    `big` models fit eagerly (tracing a 200-layer graph for two steps costs
    ~30 s on one core) and skip the pruned copy.
    """
    td = apply_targeted_dropout(model, rate=0.5, target_rate=0.5, seed=1)
    wrapped = sorted(w.layer.name for w in targeted_dropout_layers(td))
    assert wrapped == sorted(expected_wrapped)
    before = {v.path: ops.convert_to_numpy(v) for v in td.trainable_variables}
    td.compile(
        keras.optimizers.SGD(learning_rate=0.0),
        losses or "sparse_categorical_crossentropy",
        run_eagerly=big,
    )
    td.fit(x, y, batch_size=2, epochs=1, verbose=0)
    # (1) Only the optimizer writes trainable weights; at rate 0 none moves.
    for v in td.trainable_variables:
        np.testing.assert_array_equal(ops.convert_to_numpy(v), before[v.path])
    # (2) The plain model infers as the wrapped one, same layers.
    plain = strip_targeted_dropout(td)
    assert not targeted_dropout_layers(plain)
    assert [(type(a), a.name) for a in iter_layers(plain)] == [
        (type(a), a.name) for a in iter_layers(model)
    ]
    assert_same_outputs(plain, td, x)
    # (3) A .keras round trip of the wrapped model infers the same.
    path = tmp_path / "td.keras"
    td.save(path)
    loaded = keras.models.load_model(path)
    assert len(targeted_dropout_layers(loaded)) == len(wrapped)
    assert_same_outputs(loaded, td, x)
    # Pruning sees the same kernels as wrapping, wrapped or plain.
    masks = compute_masks(plain, 0.5)
    wrapped_kernels = {
        v.path
        for w in targeted_dropout_layers(td)
        for v in w.layer.trainable_variables
        if v.name.endswith("kernel")
    }
    assert set(masks) == wrapped_kernels
    assert set(compute_masks(td, 0.5)) == wrapped_kernels
    if big:
        return td, plain
    pruned = apply_masks(plain, masks)
    variables = {v.path: v for v in pruned.variables}
    for path_, mask in masks.items():
        value = ops.convert_to_numpy(variables[path_])
        assert (value[mask == 0] == 0).all()
    numpy_tree(pruned(x, training=False))
    return td, plain


def images(n=4, size=32, classes=10):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    return x, rng.integers(0, classes, n)


def test_mobilenet_v3_small(tmp_path):
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10
    )
    assert [layer.name for layer in logits_layers(model)] == ["logits"]
    expected = typed_layers(model, KERNEL_TYPES)
    assert len(expected) == 54
    expected.remove("logits")
    round_trip(model, *images(), expected, tmp_path, big=True)


def test_efficientnet_b0(tmp_path):
    model = keras.applications.EfficientNetB0(
        input_shape=(32, 32, 3), weights=None, classes=10
    )
    expected = typed_layers(model, KERNEL_TYPES)
    assert len(expected) == 82
    expected.remove("predictions")
    round_trip(model, *images(), expected, tmp_path, big=True)


@pytest.mark.slow
def test_convnext_tiny(tmp_path):
    model = keras.applications.ConvNeXtTiny(
        input_shape=(32, 32, 3), weights=None, classes=10
    )
    expected = typed_layers(model, KERNEL_TYPES)
    # 18 blocks of 3, the stem and 3 downsamplings (nested Sequentials),
    # the head.
    assert len(expected) == 59
    expected.remove("convnext_tiny_head_dense")
    round_trip(model, *images(), expected, tmp_path, big=True)


def convnext_like(width=8):
    """ConvNeXt's shape in small: a Sequential stem, depthwise 7x7, layer
    norm, inverted MLP, a layer scale and the residual as raw ops."""
    inputs = keras.Input((16, 16, 3))
    stem = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(width, 4, strides=4, name="stem_conv"),
            keras.layers.LayerNormalization(epsilon=1e-6, name="stem_ln"),
        ],
        name="stem",
    )
    x = stem(inputs)
    for i in range(2):
        h = keras.layers.DepthwiseConv2D(7, padding="same", name=f"dw{i}")(x)
        h = keras.layers.LayerNormalization(epsilon=1e-6, name=f"ln{i}")(h)
        h = keras.layers.Dense(4 * width, name=f"pw{i}a")(h)
        h = keras.layers.Activation("gelu", name=f"gelu{i}")(h)
        h = keras.layers.Dense(width, name=f"pw{i}b")(h)
        x = x + h * 0.1
    x = ops.mean(x, axis=(1, 2))
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="head_ln")(x)
    outputs = ops.softmax(keras.layers.Dense(10, name="head")(x))
    return keras.Model(inputs, outputs)


def test_convnext_like_raw_ops(tmp_path):
    model = convnext_like()
    raw = {
        type(op).__name__
        for op in model.operations
        if not isinstance(op, keras.layers.Layer)
    }
    assert {"Add", "Multiply", "Mean", "Softmax"} <= raw
    assert [layer.name for layer in logits_layers(model)] == ["head"]
    expected = typed_layers(model, KERNEL_TYPES)
    assert len(expected) == 8
    expected.remove("head")
    x, y = images(size=16)
    round_trip(model, x / 255.0, y, expected, tmp_path)


def transformer_encoder(dim=16, heads=2, blocks=2):
    inputs = keras.Input((8, dim))
    x = inputs
    for i in range(blocks):
        h = keras.layers.MultiHeadAttention(
            heads, dim // heads, name=f"mha{i}"
        )(x, x)
        x = keras.layers.LayerNormalization(name=f"ln{i}a")(x + h)
        h = keras.layers.Dense(2 * dim, activation="relu", name=f"ff{i}a")(x)
        h = keras.layers.Dense(dim, name=f"ff{i}b")(h)
        x = keras.layers.LayerNormalization(name=f"ln{i}b")(x + h)
    x = x[:, 0]
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs)


def test_transformer_encoder_raw_op_residuals(tmp_path):
    model = transformer_encoder()
    expected = typed_layers(model, KERNEL_TYPES)
    assert len(expected) == 7
    expected.remove("logits")
    x = np.random.default_rng(0).normal(size=(4, 8, 16)).astype("float32")
    y = np.arange(4) % 10
    td, _ = round_trip(model, x, y, expected, tmp_path)
    # Training runs the dropped kernels (no Dropout layer here to blur it).
    train = ops.convert_to_numpy(td(x, training=True))
    infer = ops.convert_to_numpy(td(x, training=False))
    assert np.abs(train - infer).max() > 1e-3


def _bert_classifier(keras_hub):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=16,
    )
    inputs = {
        name: keras.Input((None,), dtype="int32", name=name)
        for name in ("token_ids", "segment_ids", "padding_mask")
    }
    pooled = backbone(inputs)["pooled_output"]
    outputs = keras.layers.Dense(3, name="classifier")(pooled)
    return keras.Model(inputs, outputs)


def test_keras_hub_bert_backbone_dict_inputs(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    model = _bert_classifier(keras_hub)
    # The encoders hold their kernels in sublayers: each is wrapped whole.
    expected = typed_layers(
        model, (keras_hub.layers.TransformerEncoder, keras.layers.Dense)
    )
    assert expected == [
        "classifier",
        "pooled_dense",
        "transformer_layer_0",
        "transformer_layer_1",
    ]
    expected.remove("classifier")
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(0, 50, (4, 12)).astype("int32"),
        "segment_ids": np.zeros((4, 12), "int32"),
        "padding_mask": np.ones((4, 12), "int32"),
    }
    td, plain = round_trip(model, x, np.arange(4) % 3, expected, tmp_path)
    assert set(plain.input) == set(model.input)


def test_nested_and_shared(tmp_path):
    block = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(6, name="block_fc")],
        name="block",
    )
    inner_in = keras.Input((6,))
    inner = keras.Model(
        inner_in,
        keras.layers.Dense(6, name="inner_fc")(inner_in) + inner_in,
        name="inner",
    )
    shared = keras.layers.Dense(6, name="shared_fc")
    inputs = keras.Input((6,))
    x = shared(inputs)
    x = inner(block(x))
    x = inner(shared(x))  # a shared nested model and a shared layer
    outputs = keras.layers.Dense(4, name="logits")(x)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    td, plain = round_trip(
        model,
        x,
        np.arange(4),
        ["block_fc", "inner_fc", "shared_fc"],
        tmp_path,
    )
    # One wrapper per shared layer, shared as the layer was.
    wrappers = {w.layer.name: w for w in targeted_dropout_layers(td)}
    assert len(wrappers) == 3
    assert plain.get_layer("shared_fc") is not None
    calls = [
        n for n in keras_adapter.nodes(plain) if n.operation.name == "shared_fc"
    ]
    assert len(calls) == 2
    assert len({id(n.operation) for n in calls}) == 1


def test_multi_input_multi_output(tmp_path):
    left = keras.Input((5,), name="left")
    right = keras.Input((3,), name="right")
    x = keras.layers.Concatenate()(
        [keras.layers.Dense(4, name="left_fc")(left), right * 2.0]
    )
    x = keras.layers.Dense(8, activation="relu", name="trunk")(x)
    first = keras.layers.Dense(3, name="first")(x)
    second = keras.layers.Softmax(name="second_probs")(
        keras.layers.Dense(2, name="second")(x)
    )
    model = keras.Model([left, right], [first, second])
    assert [layer.name for layer in logits_layers(model)] == [
        "first",
        "second",
    ]
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(4, 5)), rng.normal(size=(4, 3))]
    x = [a.astype("float32") for a in x]
    y = [np.arange(4) % 3, np.arange(4) % 2]
    td, plain = round_trip(
        model,
        x,
        y,
        ["left_fc", "trunk"],
        tmp_path,
        losses=["sparse_categorical_crossentropy"] * 2,
    )
    assert [t.name for t in plain.inputs] == ["left", "right"]


def test_frozen_layers_are_not_wrapped_and_stay_frozen():
    frozen_block = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(6, name="frozen_inner")],
        name="frozen_block",
    )
    frozen_block.trainable = False
    inputs = keras.Input((6,))
    x = keras.layers.Dense(6, name="frozen_fc", trainable=False)(inputs)
    x = frozen_block(x)
    x = keras.layers.Dense(6, name="fc")(x)
    outputs = keras.layers.Dense(2, name="logits")(x)
    model = keras.Model(inputs, outputs)
    td = apply_targeted_dropout(model, seed=0)
    assert [w.layer.name for w in targeted_dropout_layers(td)] == ["fc"]
    assert not td.get_layer("frozen_fc").trainable
    assert not td.get_layer("frozen_block").trainable
    frozen = ["frozen_fc", "frozen_inner", "fc"]
    kernels = {
        layer.name: ops.convert_to_numpy(layer.kernel)
        for layer in iter_layers(model)
        if isinstance(layer, keras.layers.Dense)
    }
    td.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    td.fit(x, np.arange(8) % 2, batch_size=4, epochs=1, verbose=0)
    plain = strip_targeted_dropout(td)
    assert not plain.get_layer("frozen_block").trainable
    for layer in iter_layers(plain):
        if not isinstance(layer, keras.layers.Dense):
            continue
        after = ops.convert_to_numpy(layer.kernel)
        if layer.name in frozen[:2]:
            np.testing.assert_array_equal(after, kernels[layer.name])
        else:
            assert not np.array_equal(after, kernels[layer.name])
    assert [v.path for v in plain.trainable_variables] == [
        v.path for v in model.trainable_variables
    ]
    assert set(compute_masks(plain, 0.5)) == {"fc/kernel"}


def test_adapter_producing_node_of_shared_layer():
    shared = keras.layers.Dense(3)
    inputs = keras.Input((3,))
    first = shared(inputs)
    second = shared(first)
    assert keras_adapter.producing_node(
        first
    ) is not keras_adapter.producing_node(second)
    assert keras_adapter.node_inputs(keras_adapter.producing_node(second)) == [
        first
    ]
    assert keras_adapter.producing_node(np.ones(3)) is None
    model = keras.Model(inputs, second)
    assert shared in keras_adapter.sublayers(model)


def test_logits_followed_into_and_out_of_nested_models():
    inner_in = keras.Input((4,))
    h = keras.layers.Dense(4, name="hidden")(inner_in)
    a = keras.layers.Dense(3, name="a")(h)
    b = keras.layers.Dense(2, name="b")(h)
    heads = keras.Model(inner_in, [a, b], name="heads")
    post = keras.Sequential(
        [keras.Input((2,)), keras.layers.Activation("softmax")], name="post"
    )
    inputs = keras.Input((4,))
    _, second = heads(inputs)
    model = keras.Model(inputs, post(second))
    # Only the nested output in use is followed, through a kernel-free
    # nested model after it.
    assert [layer.name for layer in logits_layers(model)] == ["b"]
    td = apply_targeted_dropout(model)
    wrapped = [w.layer.name for w in targeted_dropout_layers(td)]
    assert sorted(wrapped) == ["a", "hidden"]


@pytest.mark.parametrize("kind", ["efficientnetb0", "bert"])
def test_batched_model_targeted_dropout_on_real_models(kind):
    """ModelTargetedDropout's batched selection on models written
    elsewhere: exactly each kernel's own targeted set dropped (rate 1),
    fewer selections than kernels, and for BERT a fit that never writes
    the stored kernels."""
    from keras_tdrop import ModelTargetedDropout
    from keras_tdrop.batched_targeting import batches
    from keras_tdrop.targeting import targeted_mask

    keras.utils.set_random_seed(0)
    if kind == "bert":
        model = _bert_classifier(pytest.importorskip("keras_hub"))
    else:
        model = keras.applications.EfficientNetB0(
            input_shape=(32, 32, 3),
            weights=None,
            classes=3,
            classifier_activation=None,
        )
    td = ModelTargetedDropout(model, rate=1.0, target_rate=0.5, seed=0)
    kernels = td.targeted_kernels
    assert len(batches(kernels, "weight")) < len(kernels)
    for kernel, value in td.dropped_kernels():
        stored = ops.convert_to_numpy(kernel.value)
        targeted = ops.convert_to_numpy(targeted_mask(stored, 0.5))
        np.testing.assert_array_equal(
            ops.convert_to_numpy(value), np.where(targeted, 0.0, stored)
        )
    if kind != "bert":
        return
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(0, 50, (8, 6)).astype("int32"),
        "segment_ids": np.zeros((8, 6), "int32"),
        "padding_mask": np.ones((8, 6), "int32"),
    }
    y = rng.normal(size=(8, 3)).astype("float32")
    before = [ops.convert_to_numpy(k.value) for k in kernels]
    td.compile(keras.optimizers.SGD(learning_rate=0.0), "mse")
    history = td.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for kernel, old in zip(kernels, before):
        np.testing.assert_array_equal(ops.convert_to_numpy(kernel.value), old)
