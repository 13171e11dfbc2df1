import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import TargetedDropout
from keras_tdrop import apply_targeted_dropout
from keras_tdrop import strip_targeted_dropout
from keras_tdrop import targeted_dropout_layers
from tests.tolerance import approx
from tests.tolerance import assert_close


def functional_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="stem")(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(10, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(3, name="logits")(x)
    outputs = keras.layers.Softmax(name="probs")(x)
    return keras.Model(inputs, outputs)


def weights_of(model):
    return {v.path: ops.convert_to_numpy(v).copy() for v in model.weights}


X = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")


def test_wraps_every_kernel_layer_but_logits_and_excluded():
    model = functional_model()
    before = weights_of(model)
    td = apply_targeted_dropout(
        model, rate=0.4, target_rate=0.6, exclude=["stem"]
    )
    wrapped = {layer.layer.name for layer in targeted_dropout_layers(td)}
    assert wrapped == {"conv2", "fc1"}
    for layer in targeted_dropout_layers(td):
        assert (layer.current_rate, layer.current_target_rate) == approx(
            (0.4, 0.6)
        )
    # The caller's model is untouched: same layers, same weights.
    assert not any(isinstance(layer, TargetedDropout) for layer in model.layers)
    after = weights_of(model)
    assert before.keys() == after.keys()
    for path in before:
        np.testing.assert_array_equal(before[path], after[path])
    # Inference of the wrapped model is the original's (default semantics).
    assert_close(
        td.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6
    )


def test_exclude_predicate_and_logits_option():
    model = functional_model()
    td = apply_targeted_dropout(
        model,
        exclude=lambda layer: isinstance(layer, keras.layers.Conv2D),
        exclude_logits=False,
    )
    assert {layer.layer.name for layer in targeted_dropout_layers(td)} == {
        "fc1",
        "logits",
    }


def test_strip_returns_plain_model_with_trained_weights():
    model = functional_model()
    td = apply_targeted_dropout(model, rate=0.5, target_rate=0.5, seed=1)
    td.compile("adam", "sparse_categorical_crossentropy")
    td.fit(X, np.array([0, 1, 2, 0]), epochs=2, verbose=0)
    plain = strip_targeted_dropout(td)
    assert not targeted_dropout_layers(plain)
    assert [layer.name for layer in plain.layers] == [
        layer.name for layer in model.layers
    ]
    assert_close(
        plain.predict(X, verbose=0), td.predict(X, verbose=0), atol=1e-6
    )
    conv2 = plain.get_layer("conv2")
    np.testing.assert_array_equal(
        ops.convert_to_numpy(conv2.kernel),
        ops.convert_to_numpy(td.get_layer("td_conv2").layer.kernel),
    )


def test_sequential_and_nested_models():
    inner = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(7, name="inner_fc")],
        name="block",
    )
    inputs = keras.Input((5,))
    x = inner(inputs)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    td = apply_targeted_dropout(model, seed=0)
    assert [layer.layer.name for layer in targeted_dropout_layers(td)] == [
        "inner_fc"
    ]
    x = np.ones((3, 5), "float32")
    assert_close(
        td.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    seq = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4), keras.layers.Dense(2)]
    )
    td_seq = apply_targeted_dropout(seq)
    assert isinstance(td_seq.layers[0], TargetedDropout)
    assert not isinstance(td_seq.layers[1], TargetedDropout)


def test_distinct_seeds_per_layer():
    td = apply_targeted_dropout(functional_model(), seed=10)
    assert [layer.seed for layer in targeted_dropout_layers(td)] == [10, 11, 12]


def test_bad_models():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match=r"subclassed.*Sub"):
        apply_targeted_dropout(Sub())
    with pytest.raises(TypeError, match=r"model="):
        apply_targeted_dropout("model.keras")
    with pytest.raises(ValueError, match=r"unbuilt Sequential"):
        apply_targeted_dropout(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(TypeError, match=r"exclude=42"):
        apply_targeted_dropout(functional_model(), exclude=42)
    with pytest.raises(ValueError, match=r"rate=3"):
        apply_targeted_dropout(functional_model(), rate=3)
    with pytest.raises(TypeError, match=r"model="):
        strip_targeted_dropout(None)


def _column_zeros(kernel):
    matrix = np.reshape(kernel, (-1, kernel.shape[-1]))
    return (matrix == 0).sum(axis=0)


@pytest.mark.parametrize(
    "options, prune_targeted, pruned",
    [
        # (wrapper options, strip argument, layers whose targeted set is
        # zeroed in the plain copy)
        ({}, None, set()),
        ({"prune_at_inference": True}, None, {"conv2", "fc1"}),
        ({"reference": "for_ai"}, None, {"conv2"}),  # convs only
        ({"prune_at_inference": True}, False, set()),
        ({}, True, {"conv2", "fc1"}),
    ],
)
def test_strip_folds_inference_pruning(options, prune_targeted, pruned):
    model = functional_model()
    td = apply_targeted_dropout(
        model, rate=0.5, target_rate=0.75, exclude=["stem"], **options
    )
    before = weights_of(td)
    plain = strip_targeted_dropout(td, prune_targeted=prune_targeted)
    for name in ("conv2", "fc1"):
        kernel = ops.convert_to_numpy(plain.get_layer(name).kernel)
        original = ops.convert_to_numpy(model.get_layer(name).kernel)
        rows = int(np.prod(kernel.shape[:-1]))
        zeros = _column_zeros(kernel)
        if name in pruned:
            # floor(0.75 * rows) lowest-|w| of every column (for-ai's
            # count is the same), the rest untouched.
            assert zeros.tolist() == [int(0.75 * rows)] * kernel.shape[-1]
            kept = kernel != 0
            np.testing.assert_array_equal(kernel[kept], original[kept])
            for column in range(kernel.shape[-1]):
                dropped = np.abs(original[..., column][~kept[..., column]])
                assert (
                    dropped.max()
                    <= np.abs(original[..., column][kept[..., column]]).min()
                )
        else:
            np.testing.assert_array_equal(kernel, original)
    # What the plain copy computes is what the wrapped model infers, unless
    # the strip was told otherwise.
    if prune_targeted is None:
        assert_close(
            plain.predict(X, verbose=0), td.predict(X, verbose=0), atol=1e-6
        )
    after = weights_of(td)
    for path in before:
        np.testing.assert_array_equal(before[path], after[path])


def test_strip_folds_t2t_inference_count():
    model = functional_model()
    td = apply_targeted_dropout(
        model, rate=0.5, target_rate=0.75, exclude=["stem"], reference="t2t"
    )
    plain = strip_targeted_dropout(td)
    kernel = ops.convert_to_numpy(plain.get_layer("fc1").kernel)
    rows = kernel.shape[0]
    # Tensor2Tensor: k' = round(k * alpha) (half to even), then `<=` keeps
    # k' + 1 targeted per column.
    k = int(0.75 * rows)
    expected = int(np.round(k * 0.5)) + 1
    assert _column_zeros(kernel).tolist() == [expected] * kernel.shape[-1]


def test_strip_rejects_bad_prune_targeted():
    td = apply_targeted_dropout(functional_model())
    with pytest.raises(TypeError, match="prune_targeted='yes'"):
        strip_targeted_dropout(td, prune_targeted="yes")
