import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import TargetedDropout
from tests import testing
from tests.tolerance import approx
from tests.tolerance import assert_close


def exact_lowest(values, k):
    """Numpy: k lowest per column, ties by lower index (stable rank < k)."""
    ranks = np.argsort(np.argsort(values, axis=0, kind="stable"), axis=0)
    return ranks < k


def effective_kernel(layer, rows, training=True):
    """The kernel a wrapped bias-free Dense used: its output on eye(rows)."""
    return ops.convert_to_numpy(
        layer(np.eye(rows, dtype="float32"), training=training)
    )


def dense(units, kernel):
    layer = keras.layers.Dense(units, use_bias=False)
    layer.build((None, kernel.shape[0]))
    layer.kernel.assign(kernel)
    return layer


class TargetedDropoutLayerTest(testing.TestCase):
    def test_layer_harness_dense(self):
        self.run_layer_test(
            TargetedDropout,
            init_kwargs={
                "layer": keras.layers.Dense(6),
                "rate": 0.5,
                "target_rate": 0.5,
                "seed": 1,
            },
            input_shape=(3, 5),
            expected_output_shape=(3, 6),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=2,
            expected_num_seed_generators=1,
        )

    def test_layer_harness_conv2d_unit(self):
        self.run_layer_test(
            TargetedDropout,
            init_kwargs={
                "layer": keras.layers.Conv2D(4, 3),
                "rate": 0.66,
                "target_rate": 0.75,
                "targeting": "unit",
                "reference": "t2t",
            },
            input_shape=(2, 6, 6, 3),
            expected_output_shape=(2, 4, 4, 4),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=2,
        )


@pytest.mark.parametrize("targeting", ["weight", "unit"])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_rate_one_drops_exactly_the_targeted_set(targeting, gamma):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(20, 8)).astype("float32")
    layer = TargetedDropout(
        dense(8, kernel),
        rate=1.0,
        target_rate=gamma,
        targeting=targeting,
        seed=0,
    )
    got = effective_kernel(layer, 20)
    if targeting == "weight":
        k = int(np.floor(np.float32(gamma) * 20 * (1 + 2**-20)))
        targeted = exact_lowest(np.abs(kernel), k)
    else:
        k = int(np.floor(np.float32(gamma) * 8 * (1 + 2**-20)))
        norms = np.linalg.norm(kernel, axis=0)
        targeted = np.broadcast_to(
            exact_lowest(norms[:, None], k).T, kernel.shape
        )
    np.testing.assert_array_equal(got, np.where(targeted, 0.0, kernel))


def test_conv_parity_with_pruned_plain_conv():
    rng = np.random.default_rng(1)
    conv = keras.layers.Conv2D(5, 3, use_bias=False)
    conv.build((None, 7, 7, 4))
    kernel = rng.normal(size=(3, 3, 4, 5)).astype("float32")
    conv.kernel.assign(kernel)
    layer = TargetedDropout(conv, rate=1.0, target_rate=0.6, seed=0)
    x = rng.normal(size=(2, 7, 7, 4)).astype("float32")
    got = ops.convert_to_numpy(layer(x, training=True))
    matrix = np.abs(kernel.reshape(36, 5))
    targeted = exact_lowest(matrix, int(0.6 * 36)).reshape(kernel.shape)
    plain = keras.layers.Conv2D(5, 3, use_bias=False)
    plain.build((None, 7, 7, 4))
    plain.kernel.assign(np.where(targeted, 0.0, kernel))
    assert_close(got, ops.convert_to_numpy(plain(x)), atol=1e-5)
    # Inference with the default semantics is the plain layer, unchanged.
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer(x, training=False)),
        ops.convert_to_numpy(conv(x)),
    )


def test_dropped_fraction_of_targeted_is_alpha_and_untargeted_never_change():
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(40, 25)).astype("float32")
    alpha, gamma = 0.66, 0.75
    layer = TargetedDropout(
        dense(25, kernel), rate=alpha, target_rate=gamma, seed=3
    )
    targeted = exact_lowest(np.abs(kernel), 30)
    dropped, steps = 0, 60
    previous = None
    for _ in range(steps):
        got = effective_kernel(layer, 40)
        np.testing.assert_array_equal(got[~targeted], kernel[~targeted])
        kept = got[targeted] != 0
        np.testing.assert_array_equal(
            got[targeted][kept], kernel[targeted][kept]
        )
        dropped += int((~kept).sum())
        if previous is not None:
            assert np.any(previous != got), "noise must be fresh every step"
        previous = got
    trials = steps * targeted.sum()
    sd = np.sqrt(alpha * (1 - alpha) / trials)
    assert abs(dropped / trials - alpha) < 4 * sd
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer.layer.kernel), kernel
    )


def test_t2t_rescales_survivors_and_prunes_round_k_alpha_plus_one():
    rng = np.random.default_rng(4)
    kernel = rng.normal(size=(10, 6)).astype("float32")
    alpha, gamma = 0.5, 0.5
    layer = TargetedDropout(
        dense(6, kernel), rate=alpha, target_rate=gamma, reference="t2t", seed=5
    )
    absk = np.abs(kernel)
    thres = np.sort(absk, axis=0)[5]
    targeted = absk <= thres
    got = effective_kernel(layer, 10)
    np.testing.assert_array_equal(got[~targeted], kernel[~targeted])
    survivors = got[targeted] != 0
    assert_close(
        got[targeted][survivors],
        kernel[targeted][survivors] / (1 - alpha),
        rtol=1e-6,
    )
    # Inference prunes k' = round(5 * 0.5) = 2 (half to even), so 3 per column.
    pruned = absk <= np.sort(absk, axis=0)[2]
    np.testing.assert_array_equal(
        effective_kernel(layer, 10, training=False),
        np.where(pruned, 0.0, kernel),
    )


def test_for_ai_prunes_conv_at_inference_but_not_dense():
    rng = np.random.default_rng(6)
    kernel = rng.normal(size=(12, 4)).astype("float32")
    layer = TargetedDropout(dense(4, kernel), 0.5, 0.5, reference="for_ai")
    np.testing.assert_array_equal(effective_kernel(layer, 12, False), kernel)
    conv = keras.layers.Conv1D(4, 1, use_bias=False)
    conv.build((None, 1, 12))
    conv.kernel.assign(kernel[None])
    wrapped = TargetedDropout(conv, 0.5, 0.5, reference="for_ai")
    got = ops.convert_to_numpy(
        wrapped(np.eye(12, dtype="float32")[:, None], training=False)
    )[:, 0]
    absk = np.abs(kernel)
    targeted = absk < np.sort(absk, axis=0)[6]
    np.testing.assert_array_equal(got, np.where(targeted, 0.0, kernel))
    forced = TargetedDropout(
        dense(4, kernel), 0.5, 0.5, prune_at_inference=True
    )
    assert (effective_kernel(forced, 12, False) == 0).sum() == 6 * 4


def test_gradients_skip_dropped_weights():
    rng = np.random.default_rng(7)
    kernel = rng.normal(size=(6, 3)).astype("float32")
    inputs = keras.Input((6,))
    td = TargetedDropout(dense(3, kernel), rate=1.0, target_rate=0.5, seed=0)
    model = keras.Model(inputs, td(inputs))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = rng.normal(size=(16, 6)).astype("float32")
    model.fit(x, rng.normal(size=(16, 3)), epochs=1, batch_size=16, verbose=0)
    after = ops.convert_to_numpy(td.layer.kernel)
    targeted = exact_lowest(np.abs(kernel), 3)
    np.testing.assert_array_equal(after[targeted], kernel[targeted])
    assert np.all(after[~targeted] != kernel[~targeted])


def test_xtreme_leaves_n_weights_per_column():
    rng = np.random.default_rng(8)
    kernel = rng.normal(size=(27, 5)).astype("float32")
    layer = TargetedDropout(
        dense(5, kernel), rate=1.0, target_rate=0.3, keep_per_column=3
    )
    got = effective_kernel(layer, 27)
    np.testing.assert_array_equal((got != 0).sum(axis=0), [3] * 5)
    assert layer.final_target_rate == approx(24 / 27)
    assert layer.current_target_rate == approx(24 / 27)
    # The user's target_rate is kept, in the config too.
    assert layer.target_rate == 0.3
    assert layer.get_config()["target_rate"] == 0.3


def test_multi_head_attention_all_four_kernels_targeted():
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3)
    query = np.random.default_rng(9).normal(size=(2, 4, 6)).astype("float32")
    value = np.random.default_rng(10).normal(size=(2, 5, 8)).astype("float32")
    layer = TargetedDropout(mha, rate=1.0, target_rate=1.0)
    out = ops.convert_to_numpy(layer(query, value, training=True))
    bias = ops.convert_to_numpy(mha._output_dense.bias)
    assert_close(out, np.broadcast_to(bias, out.shape), atol=1e-6)
    assert len(mha.trainable_variables) == 8
    inference = ops.convert_to_numpy(layer(query, value))
    assert_close(inference, ops.convert_to_numpy(mha(query, value)))


def test_xtreme_on_built_attention_keeps_n_in_every_kernel():
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    mha(np.zeros((1, 3, 8)), np.zeros((1, 3, 8)))
    layer = TargetedDropout(mha, rate=1.0, keep_per_column=2)
    layer.build((1, 3, 8))
    kernels = [mha._query_dense.kernel, mha._output_dense.kernel]
    scales = layer._kernel_scales()
    rows = [8 * 2, 2 * 4]
    assert scales[0] == 1.0
    # query (8, 2, 4): rows 16 -> gamma 14/16; output (2, 4, 8): rows 8 -> 6/8.
    assert scales[3] == approx((6 / 8) / (14 / 16))
    assert [int(np.prod(k.shape[:-1])) for k in kernels] == rows


def test_xtreme_attention_keeps_n_per_column_of_each_kernel_when_run():
    """Each of the four kernels (column lengths 16, 16, 16 and 8) keeps
    exactly N weights per column, in inference_kernels and in training,
    which needs every kernel's own gamma (8 rows at the query's gamma
    14/16 would keep 1, not 2)."""
    rng = np.random.default_rng(12)
    query = rng.normal(size=(2, 3, 8)).astype("float32")
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    mha(query, query)
    for variable in mha.weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    layer = TargetedDropout(mha, rate=1.0, keep_per_column=2, seed=3)
    layer.build((2, 3, 8))
    pruned = layer.inference_kernels(prune=True)
    kernels = [w for w in mha.weights if "kernel" in w.path]
    assert len(pruned) == len(kernels) == 4
    for kernel, value in zip(kernels, pruned):
        rows = int(np.prod(kernel.shape[:-1]))
        columns = value.reshape(rows, -1)
        np.testing.assert_array_equal((columns != 0).sum(axis=0), 2)
        # The two kept per column are the largest |w|.
        stored = ops.convert_to_numpy(kernel).reshape(rows, -1)
        kept = ~exact_lowest(np.abs(stored), rows - 2)
        np.testing.assert_array_equal(columns, np.where(kept, stored, 0))
    # rate=1 drops the whole targeted set in training: the layer runs on
    # the pruned kernels.
    out = ops.convert_to_numpy(layer(query, query, training=True))
    for kernel, value in zip(kernels, pruned):
        kernel.assign(value)
    assert_close(
        out, ops.convert_to_numpy(mha(query, query)), rtol=1e-5, atol=1e-5
    )


def test_normalization_updates_inside_wrapper_are_kept():
    block = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(4, kernel_initializer="ones"),
            keras.layers.BatchNormalization(),
        ]
    )
    layer = TargetedDropout(block, rate=0.5, target_rate=0.5, seed=1)
    before = ops.convert_to_numpy(block.layers[1].moving_mean).copy()
    layer(
        np.random.default_rng(0).normal(3.0, 1.0, (32, 4)).astype("float32"),
        training=True,
    )
    after = ops.convert_to_numpy(block.layers[1].moving_mean)
    # Inputs near 3 through a ones kernel with at least 2 of 4 weights kept
    # per column give batch means >= ~6; momentum 0.99 moves the mean >= 0.05.
    assert np.all(after - before > 0.05)


def test_functional_sequential_fit_evaluate_predict_and_tf_function():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 3, 32)
    seq = keras.Sequential(
        [
            keras.Input((6,)),
            TargetedDropout(
                keras.layers.Dense(8, activation="relu"), 0.5, 0.5, seed=1
            ),
            keras.layers.Dense(3),
        ]
    )
    seq.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = seq.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert len(history.history["loss"]) == 2
    assert np.isfinite(seq.evaluate(x, y, verbose=0))
    assert seq.predict(x, verbose=0).shape == (32, 3)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(batch):
            return seq.layers[0](batch, training=True)

        assert step(x).shape == (32, 8)


def test_save_load_keeps_config_weights_and_current_rates(tmp_path):
    inputs = keras.Input((5,))
    td = TargetedDropout(
        keras.layers.Dense(4),
        rate=0.7,
        target_rate=0.8,
        targeting="unit",
        reference="for_ai",
        seed=3,
        prune_at_inference=False,
    )
    model = keras.Model(inputs, td(inputs))
    td.set_rates(0.2, 0.3)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.layers[1]
    assert isinstance(layer, TargetedDropout)
    assert (layer.rate, layer.target_rate) == (0.7, 0.8)
    assert (layer.targeting, layer.reference, layer.seed) == (
        "unit",
        "for_ai",
        3,
    )
    assert layer.current_rate == approx(0.2)
    assert layer.current_target_rate == approx(0.3)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer.layer.kernel),
        ops.convert_to_numpy(td.layer.kernel),
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"targeting": "unit", "reference": "t2t"},
        {"reference": "for_ai", "prune_at_inference": True, "seed": 4},
        {"keep_per_column": 2, "rate": 0.9},
    ],
)
def test_from_config_round_trip(kwargs):
    layer = TargetedDropout(keras.layers.Conv2D(3, 2, name="c"), **kwargs)
    config = layer.get_config()
    clone = TargetedDropout.from_config(config)
    assert clone.get_config() == config
    assert isinstance(clone.layer, keras.layers.Conv2D)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"rate": -0.1}, ValueError, r"rate=-0.1"),
        ({"rate": 1.5}, ValueError, r"rate=1.5"),
        ({"rate": "high"}, TypeError, r"rate='high'"),
        ({"target_rate": 2.0}, ValueError, r"target_rate=2.0"),
        ({"target_rate": float("nan")}, ValueError, r"target_rate=nan"),
        ({"targeting": "filter"}, ValueError, r"targeting='filter'"),
        ({"reference": "tf1"}, ValueError, r"reference='tf1'"),
        ({"keep_per_column": -1}, ValueError, r"keep_per_column=-1"),
        ({"keep_per_column": 2.5}, ValueError, r"keep_per_column=2.5"),
        ({"prune_at_inference": "yes"}, TypeError, r"prune_at_inference='yes'"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        TargetedDropout(keras.layers.Dense(2), **kwargs)


def test_bad_layers():
    with pytest.raises(TypeError, match=r"layer="):
        TargetedDropout("dense")
    built = keras.layers.LayerNormalization()
    built.build((None, 3))
    with pytest.raises(ValueError, match=r"layer_normalization.*has none"):
        TargetedDropout(built)
    with pytest.raises(ValueError, match=r"relu_x"):
        TargetedDropout(keras.layers.ReLU(name="relu_x"))
    unbuilt = TargetedDropout(keras.layers.LayerNormalization(name="ln_x"))
    with pytest.raises(ValueError, match=r"ln_x"):
        unbuilt(np.ones((1, 3)))
    too_many = TargetedDropout(keras.layers.Dense(2), keep_per_column=9)
    with pytest.raises(ValueError, match=r"keep_per_column=9"):
        too_many.build((None, 4))


# --- unit semantics: noise and rescale --------------------------------------


def _unit_layer(**kwargs):
    layer = TargetedDropout(
        keras.layers.Dense(16, use_bias=False),
        rate=0.5,
        target_rate=0.5,
        targeting="unit",
        seed=3,
        **kwargs,
    )
    layer.build((None, 6))
    return layer


def test_noise_and_rescale_reach_the_kernel():
    x = np.eye(6, dtype="float32")
    layer = _unit_layer(noise="column", rescale=True)
    kernel = ops.convert_to_numpy(layer.layer.kernel)
    targeted = np.zeros(16, bool)
    targeted[np.argsort(np.linalg.norm(kernel, axis=0), kind="stable")[:8]] = 1
    for _ in range(5):
        used = ops.convert_to_numpy(layer(x, training=True))  # = kernel
        zero = (used == 0).all(0)
        assert_close(used[:, ~targeted], kernel[:, ~targeted])
        kept = targeted & ~zero
        assert_close(used[:, kept], 2 * kernel[:, kept], 1e-6)
        assert not zero[~targeted].any()
        # Column noise: every targeted column is kept whole or dropped whole.
        assert (
            (used[:, targeted] == 0).all(0) | (used[:, targeted] != 0).all(0)
        ).all()


def test_semantics_in_config_and_old_files_keep_theirs(tmp_path):
    layer = _unit_layer(noise="column", rescale=True)
    config = layer.get_config()
    assert config["noise"] == "column" and config["rescale"] is True
    clone = TargetedDropout.from_config(config)
    assert (clone.noise, clone.rescale) == ("column", True)
    # A config written before the two arguments existed.
    old = {k: v for k, v in config.items() if k not in ("noise", "rescale")}
    loaded = TargetedDropout.from_config(old)
    assert (loaded.noise, loaded.rescale) == ("element", False)
    inputs = keras.Input((6,))
    model = keras.Model(
        inputs, _unit_layer(noise="column", rescale=True)(inputs)
    )
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    layer = again.layers[-1]
    assert (layer.noise, layer.rescale) == ("column", True)


@pytest.mark.parametrize(
    "kwargs, noise",
    [
        ({"targeting": "unit"}, "column"),
        ({"targeting": "weight"}, "element"),
        ({"targeting": "unit", "reference": "for_ai"}, "element"),
        ({"targeting": "unit", "reference": "t2t"}, "element"),
        ({"targeting": "unit", "noise": "element"}, "element"),
    ],
)
def test_default_noise_is_whole_units_for_unit_targeting(kwargs, noise):
    layer = TargetedDropout(keras.layers.Dense(4), **kwargs)
    assert layer.noise == noise
    # The config holds the resolved value, not None.
    assert layer.get_config()["noise"] == noise


def test_a_file_of_the_old_default_keeps_element_noise(tmp_path):
    # Saved before the unit default changed: the config says "element"
    # (or, older still, has no `noise`): it loads and trains with it.
    x = np.eye(6, dtype="float32")
    for drop_key in (False, True):
        inputs = keras.Input((6,))
        layer = _unit_layer(noise="element")
        model = keras.Model(inputs, layer(inputs))
        path = tmp_path / f"old{drop_key}.keras"
        model.save(path)
        if drop_key:
            config = layer.get_config()
            del config["noise"], config["rescale"]
            loaded = TargetedDropout.from_config(config)
        else:
            loaded = keras.saving.load_model(path).layers[-1]
        assert (loaded.noise, loaded.rescale) == ("element", False)
        if not loaded.built:
            loaded.build((None, 6))
        loaded.layer.kernel.assign(layer.layer.kernel)
        partial = False
        for _ in range(10):
            used = ops.convert_to_numpy(loaded(x, training=True))
            zero = used == 0
            partial |= bool((zero.any(0) & ~zero.all(0)).any())
        # Element noise drops parts of columns (whole-unit noise never).
        assert partial


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"noise": "column", "targeting": "weight"}, "targeting='weight'"),
        ({"rescale": True, "reference": "t2t"}, "rescale=True"),
        ({"noise": "rows"}, "noise='rows'"),
    ],
)
def test_bad_semantics_raise_before_building(kwargs, match):
    args = {"rate": 0.5, "target_rate": 0.5, "targeting": "unit", **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        TargetedDropout(keras.layers.Dense(4), **args)
