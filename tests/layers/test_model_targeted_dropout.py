import math
import re

import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import ModelTargetedDropout
from keras_tdrop import RampingCallback
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import prunable_kernels
from keras_tdrop.pruning import prune_sweep
from tests.tolerance import approx
from tests.tolerance import assert_close
from tests.tolerance import close


@keras.saving.register_keras_serializable(package="test_mtd")
class Block(keras.layers.Layer):
    """Attention and a dense layer in a residual, kernels inside."""

    def __init__(self, dim=8, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.attn = keras.layers.MultiHeadAttention(2, 4, name="attn")
        self.ff = keras.layers.Dense(dim, name="ff")
        self.norm = keras.layers.LayerNormalization(name="norm")

    def build(self, input_shape):
        self.attn.build(input_shape, input_shape)
        self.ff.build(input_shape)
        self.norm.build(input_shape)

    def call(self, x):
        return self.norm(x + self.ff(self.attn(x, x)))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


@keras.saving.register_keras_serializable(package="test_mtd")
class Subclassed(keras.Model):
    """Head first in `__init__`, so only a forward pass tells it is last."""

    def __init__(self, dim=8, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.head = keras.layers.Dense(3, name="head")
        self.hidden = keras.layers.Dense(dim, activation="relu", name="hidden")
        self.norm = keras.layers.BatchNormalization(name="bn")
        self.block = Block(dim, name="block")

    def call(self, x, training=False):
        h = self.norm(self.hidden(x), training=training)
        return self.head(self.block(h[:, None, :])[:, 0])

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


def functional_block(dim):
    inputs = keras.Input((5,))
    h = keras.layers.Dense(dim, activation="relu", name="hidden")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Reshape((1, dim))(h)
    h = keras.layers.Flatten()(Block(dim, name="block")(h))
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def make_model(kind, dim=8):
    keras.utils.set_random_seed(0)
    if kind == "subclassed":
        model = Subclassed(dim, name="sub")
        model(np.zeros((1, 5), "float32"))
        return model
    return functional_block(dim)


def data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype("float32")
    return x, rng.normal(size=(n, 3)).astype("float32")


TARGETED = [
    "block/attn/attention_output/kernel",
    "block/attn/key/kernel",
    "block/attn/query/kernel",
    "block/attn/value/kernel",
    "block/ff/kernel",
    "hidden/kernel",
]
KINDS = ["subclassed", "functional"]
LAYERS = ("hidden", "block", "head")


def run(model, x, training=False):
    return ops.convert_to_numpy(model(x, training=training))


def relative(kernels):
    """Kernel paths from the model's own layers on (no model prefixes)."""
    paths = []
    for kernel in kernels:
        parts = kernel.path.split("/")
        start = next(i for i, p in enumerate(parts) if p in LAYERS)
        paths.append("/".join(parts[start:]))
    return sorted(paths)


@pytest.mark.parametrize("kind", KINDS)
def test_selects_every_kernel_but_the_logits(kind):
    td = ModelTargetedDropout(make_model(kind))
    assert relative(td.targeted_kernels) == TARGETED
    assert relative(td.logits_kernels()) == ["head/kernel"]


@pytest.mark.parametrize(
    "include, exclude, expected",
    [
        ("block/*", None, TARGETED[:5]),
        ("block/*", re.compile("attn"), ["block/ff/kernel"]),
        (["hidden/*", "*/query/kernel"], None, [TARGETED[2], TARGETED[5]]),
        (lambda v: "ff" in v.path, None, ["block/ff/kernel"]),
        (None, lambda v: "attn" in v.path, TARGETED[4:]),
    ],
)
def test_selection_by_pattern_and_predicate(include, exclude, expected):
    td = ModelTargetedDropout(
        make_model("subclassed"), include=include, exclude=exclude
    )
    assert relative(td.targeted_kernels) == expected


def test_logits_included_on_request():
    td = ModelTargetedDropout(make_model("subclassed"), exclude_logits=False)
    assert len(td.targeted_kernels) == len(TARGETED) + 1


def exact_targets(kernel, target_rate, targeting):
    """Numpy: the targeted elements (distinct magnitudes, no ties)."""
    value = ops.convert_to_numpy(kernel.value)
    cols = value.shape[-1]
    matrix = value.reshape(-1, cols)
    if targeting == "weight":
        k = math.floor(target_rate * matrix.shape[0])
        ranks = np.argsort(np.argsort(np.abs(matrix), axis=0), axis=0)
        return (ranks < k).reshape(value.shape)
    k = math.floor(target_rate * cols)
    ranks = np.argsort(np.argsort(np.linalg.norm(matrix, axis=0)))
    return np.broadcast_to(ranks < k, matrix.shape).reshape(value.shape)


@pytest.mark.parametrize(
    "kind, targeting",
    [
        ("subclassed", "weight"),
        ("subclassed", "unit"),
        ("functional", "weight"),
    ],
)
def test_dropped_fraction_of_targets_is_rate(kind, targeting):
    rate, target_rate, draws = 0.3, 0.5, 10
    td = ModelTargetedDropout(
        make_model(kind, dim=32),
        rate=rate,
        target_rate=target_rate,
        targeting=targeting,
        seed=3,
    )
    targets = [
        exact_targets(k, target_rate, targeting) for k in td.targeted_kernels
    ]
    dropped = [np.zeros(t.shape) for t in targets]
    for _ in range(draws):
        for i, (kernel, value) in enumerate(td.dropped_kernels()):
            value = ops.convert_to_numpy(value)
            kept = value == ops.convert_to_numpy(kernel.value)
            assert np.all(kept | (value == 0))
            dropped[i] += value == 0
    assert all(d[~t].sum() == 0 for d, t in zip(dropped, targets))
    if targeting == "unit":
        # The default unit noise drops whole units: one draw per targeted
        # column, so the trials are columns (every element of a column
        # is dropped the same number of times).
        columns = [t.reshape(-1, t.shape[-1]).all(0) for t in targets]
        for d, c in zip(dropped, columns):
            counts = d.reshape(-1, d.shape[-1])[:, c]
            assert np.all(counts == counts[:1])
        n = draws * sum(int(c.sum()) for c in columns)
        fraction = (
            sum(
                d.reshape(-1, d.shape[-1])[0, c].sum()
                for d, c in zip(dropped, columns)
            )
            / n
        )
        assert n == 540  # 10 draws x 54 targeted columns
    else:
        n = draws * sum(int(t.sum()) for t in targets)
        fraction = sum(d[t].sum() for d, t in zip(dropped, targets)) / n
        assert n == 10880
    # Binomial(n, rate): within 5 standard deviations.
    assert abs(fraction - rate) < 5 * math.sqrt(rate * (1 - rate) / n)


@pytest.mark.parametrize("kind", KINDS)
def test_training_runs_on_the_dropped_kernels(kind):
    model = make_model(kind)
    td = ModelTargetedDropout(model, rate=1.0, target_rate=1.0, seed=1)
    x, _ = data(4)
    zeros = [(k, ops.zeros(k.shape)) for k in td.targeted_kernels]
    chosen = {id(k) for k in td.targeted_kernels}
    others = [v for v in model.variables if id(v) not in chosen]
    with keras.StatelessScope(zeros + [(v, v.value) for v in others]):
        expected = run(model, x, training=True)
    assert_close(run(td, x, training=True), expected, atol=1e-6)
    np.testing.assert_array_equal(run(td, x), run(model, x))


@pytest.mark.parametrize("kind", KINDS)
def test_fit_never_changes_stored_kernels_but_updates_statistics(kind):
    model = make_model(kind)
    td = ModelTargetedDropout(model, rate=0.9, target_rate=0.9, seed=1)
    before = {v.path: ops.convert_to_numpy(v.value) for v in model.weights}
    td.compile(keras.optimizers.SGD(learning_rate=0.0), "mse")
    td.fit(*data(), batch_size=8, epochs=2, verbose=0)
    for v in model.trainable_weights:
        np.testing.assert_array_equal(
            ops.convert_to_numpy(v.value), before[v.path]
        )
    mean = next(v for v in model.weights if v.path.endswith("moving_mean"))
    assert not np.array_equal(ops.convert_to_numpy(mean), before[mean.path])


def test_fully_dropped_kernels_get_no_gradient():
    model = make_model("functional")
    td = ModelTargetedDropout(model, rate=1.0, target_rate=1.0, seed=1)
    before = {v.path: ops.convert_to_numpy(v.value) for v in model.weights}
    td.compile(keras.optimizers.SGD(learning_rate=0.1), "mse")
    history = td.fit(*data(), batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for kernel in td.targeted_kernels:
        np.testing.assert_array_equal(
            ops.convert_to_numpy(kernel.value), before[kernel.path]
        )
    (head,) = td.logits_kernels()
    assert not np.array_equal(ops.convert_to_numpy(head), before[head.path])


def test_fit_trains():
    td = ModelTargetedDropout(make_model("subclassed"), rate=0.5, seed=1)
    td.compile(keras.optimizers.Adam(0.01), "mse")
    history = td.fit(*data(), batch_size=8, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0]


def test_ramping_callback_drives_the_rates():
    td = ModelTargetedDropout(
        make_model("subclassed"), rate=0.5, target_rate=0.8
    )
    td.compile(keras.optimizers.SGD(0.01), "mse")
    history = td.fit(
        *data(),
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[RampingCallback("linear", ramp_steps=10)],
    )
    # The last batch begins at step 7: 7/10 of the final values.
    assert td.current_rate == approx(0.35)
    assert td.current_target_rate == approx(0.56)
    assert history.history["td_rate"] == approx([0.15, 0.35])


@pytest.mark.parametrize("kind", KINDS)
def test_keras_round_trip(kind, tmp_path):
    td = ModelTargetedDropout(
        make_model(kind),
        rate=0.4,
        target_rate=0.6,
        targeting="unit",
        exclude=["hidden/*", re.compile("value")],
        seed=2,
    )
    td.compile(keras.optimizers.SGD(0.01), "mse")
    td.fit(*data(), batch_size=8, verbose=0)
    td.set_rates(0.25, 0.5)
    path = tmp_path / "td.keras"
    td.save(path)
    loaded = keras.saving.load_model(path)
    x, _ = data(8)
    assert_close(
        loaded.predict(x, verbose=0), td.predict(x, verbose=0), atol=1e-6
    )
    assert (loaded.current_rate, loaded.current_target_rate) == (0.25, 0.5)
    assert relative(loaded.targeted_kernels) == relative(td.targeted_kernels)
    assert loaded.get_config()["exclude"] == td.get_config()["exclude"]
    clone = ModelTargetedDropout.from_config(td.get_config())
    assert len(clone.targeted_kernels) == len(td.targeted_kernels)


def test_unbuilt_model_is_built_on_first_call(tmp_path):
    keras.utils.set_random_seed(0)
    td = ModelTargetedDropout(Subclassed(name="late"), seed=1)
    td.compile(keras.optimizers.SGD(0.01), "mse")
    td.fit(*data(), batch_size=8, verbose=0)
    assert relative(td.targeted_kernels) == TARGETED
    td.save(tmp_path / "late.keras")
    loaded = keras.saving.load_model(tmp_path / "late.keras")
    x, _ = data(8)
    assert_close(run(loaded, x), run(td, x), atol=1e-6)


@pytest.mark.parametrize(
    "kind, targeting", [("subclassed", "weight"), ("functional", "unit")]
)
def test_pruning_works_on_the_same_models(kind, targeting):
    td = ModelTargetedDropout(make_model(kind))
    for model in (td, td.model):
        kernels = prunable_kernels(model)
        assert relative(kernels) == TARGETED
        masks = compute_masks(model, 0.5, targeting)
        assert sorted(masks) == sorted(k.path for k in kernels)
        pruned = apply_masks(model, masks)
        assert pruned is not model
        x, _ = data(4)
        assert not close(run(pruned, x), run(model, x), rtol=1e-5)
        copied = {v.path: v for v in pruned.weights}
        assert len(copied) == len(pruned.weights)
    model = td.model
    model.compile(loss="mse", metrics=["mae"])
    rows = prune_sweep(model, data(), fractions=(0.0, 0.5))
    assert [r["fraction"] for r in rows] == [0.0, 0.5]
    assert rows[0]["sparsity"] == 0.0 and rows[1]["sparsity"] > 0.3


def test_prune_sweep_on_the_wrapper():
    td = ModelTargetedDropout(make_model("subclassed"))
    td.compile(loss="mse")
    rows = prune_sweep(td, data(), fractions=(0.0, 0.9))
    assert rows[1]["loss"] != rows[0]["loss"]


class NoKernels(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.LayerNormalization()

    def call(self, x):
        return self.norm(x)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"rate": 1.5}, ValueError, r"`rate`.*Received: rate=1.5"),
        ({"target_rate": -0.1}, ValueError, r"target_rate=-0.1"),
        ({"rate": "0.5"}, TypeError, r"Received: rate='0.5'"),
        ({"targeting": "filter"}, ValueError, r"targeting='filter'"),
        ({"include": "nothing/*"}, ValueError, r"include='nothing/\*'"),
        ({"exclude": ["hidden/*", "typo"]}, ValueError, r"exclude=\["),
        ({"include": 3}, TypeError, r"Received: include=3"),
        ({"include": "head/*"}, ValueError, r"No kernel .* left"),
        ({"prune_at_inference": 1}, TypeError, r"prune_at_inference=1"),
    ],
)
def test_bad_arguments_leave_the_model_untouched(kwargs, error, message):
    model = make_model("subclassed")
    weights = [ops.convert_to_numpy(v.value) for v in model.weights]
    paths = [v.path for v in model.weights]
    with pytest.raises(error, match=message):
        ModelTargetedDropout(model, **kwargs)
    assert [v.path for v in model.weights] == paths
    for v, value in zip(model.weights, weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(v.value), value)


def test_bad_models():
    with pytest.raises(TypeError, match="Received: model="):
        ModelTargetedDropout(keras.layers.Dense(3))
    model = NoKernels(name="plain")
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match="no kernels .* 'plain'"):
        ModelTargetedDropout(model)


def test_predicate_selection_is_not_serializable():
    td = ModelTargetedDropout(make_model("subclassed"), include=lambda v: True)
    with pytest.raises(NotImplementedError, match="predicate `include`"):
        td.get_config()
