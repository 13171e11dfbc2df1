"""Group unit targeted dropout leaves BatchNormalization statistics true:
a dropped channel's moving statistics are held on the steps that drop it
(`ModelTargetedDropout(..., groups=True, hold_statistics=True)`)."""

import keras
import numpy as np
import pytest

from keras_tdrop import ModelTargetedDropout
from tests.tolerance import assert_close

L = keras.layers
STEPS = 300


def bn_net(seed=0):
    """stem -> a -> bn_a -> b -> bn_b -> logits: `a`'s channels are one
    group (a, bn_a, b's rows), `b`'s another (b, bn_b, the logits' rows)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="a")(x)
    x = L.ReLU()(L.BatchNormalization(momentum=0.9, name="bn_a")(x))
    x = L.Conv2D(8, 1, use_bias=False, name="b")(x)
    x = L.ReLU()(L.BatchNormalization(momentum=0.9, name="bn_b")(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(3, name="logits")(x))


def batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(16, 6, 6, 3)).astype("float32")
    return x, rng.integers(0, 3, size=16)


def train(model, steps=STEPS):
    """`steps` steps on one fixed batch with a learning rate of 0: the
    kernels (and so the targeted channels) stay fixed and only the moving
    statistics move."""
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = batch()
    dataset = [(x, y)] * steps
    for xb, yb in dataset:
        model.train_on_batch(xb, yb)


def grouped(hold=True, seed=3, **kwargs):
    """`bn_net` in group unit targeted dropout at 0.5/0.5, stem left."""
    return ModelTargetedDropout(
        bn_net(),
        rate=0.5,
        target_rate=0.5,
        targeting="unit",
        exclude=["stem/*"],
        hold_statistics=hold,
        seed=seed,
        **{"groups": True, **kwargs},
    )


def statistics(model, name):
    layer = model.get_layer(name)
    return (
        keras.ops.convert_to_numpy(layer.moving_mean),
        keras.ops.convert_to_numpy(layer.moving_variance),
    )


def targeted_channels(td, name):
    """The channels of layer `name`'s group targeted now, as a bool array."""
    grouping = td.group_targeting
    values = {id(v): keras.ops.convert_to_tensor(v) for v in td.model.weights}
    kernel = td.model.get_layer(name).kernel
    for n, members, mask in grouping.targeted(values, td._current_target_rate):
        for m in members:
            if m.writes and m.variable is kernel:
                return keras.ops.convert_to_numpy(mask)[m.segments]
    raise AssertionError(f"no group writes {name}")


@pytest.mark.parametrize("hold", [True, False])
def test_a_dropped_channels_statistics_match_the_undropped_network(hold):
    plain = bn_net()
    train(plain)
    td = grouped(hold)
    train(td)
    targeted = targeted_channels(td, "a")
    assert targeted.sum() == 4
    mean, variance = statistics(td.model, "bn_a")
    plain_mean, plain_variance = statistics(plain, "bn_a")
    # The untargeted channels are never dropped: equal either way.
    assert_close(
        variance[~targeted], plain_variance[~targeted], rtol=1e-4, atol=1e-6
    )
    if hold:
        # bn_a's input does not depend on any drop: held on the dropped
        # steps, its targeted statistics converge to the plain ones.
        assert_close(mean[targeted], plain_mean[targeted], rtol=1e-3, atol=1e-5)
        assert_close(
            variance[targeted], plain_variance[targeted], rtol=1e-3, atol=1e-5
        )
    else:
        # Learning the dropped steps (variance 0, about half of them), the
        # targeted channels' moving variance sits far below the truth.
        ratio = variance[targeted] / plain_variance[targeted]
        assert np.all(ratio < 0.85), ratio


def test_the_hold_touches_only_the_dropped_channels_statistics():
    """Held or not, the steps compute the same (same seed): every
    statistic outside the targeted channels comes out identical."""
    found = []
    for hold in (True, False):
        td = grouped(hold, seed=3)
        train(td, steps=40)
        found.append(
            {
                name: (statistics(td.model, name), targeted_channels(td, w))
                for name, w in (("bn_a", "a"), ("bn_b", "b"))
            }
        )
    for name in ("bn_a", "bn_b"):
        (held, targeted), (free, _) = found[0][name], found[1][name]
        for a, b in zip(held, free):
            assert_close(a[~targeted], b[~targeted], rtol=1e-5, atol=1e-6)
        # ... and the targeted ones differ (the test can fail).
        assert np.abs(held[1][targeted] - free[1][targeted]).max() > 1e-3


def test_the_training_forward_pass_is_the_dropped_network():
    """Holding the statistics changes what is remembered, not what a step
    computes: both settings give the same training outputs."""
    x, _ = batch()
    outputs = []
    for hold in (True, False):
        td = grouped(hold, seed=5)
        outputs.append(keras.ops.convert_to_numpy(td(x, training=True)))
    assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)


def test_hold_statistics_is_saved_and_checked(tmp_path):
    td = ModelTargetedDropout(
        bn_net(),
        targeting="unit",
        groups=True,
        hold_statistics=False,
        clean_steps=0.2,
    )
    path = str(tmp_path / "td.keras")
    td.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.hold_statistics is False and loaded.clean_steps == 0.2
    with pytest.raises(TypeError, match="hold_statistics=1"):
        ModelTargetedDropout(
            bn_net(), targeting="unit", groups=True, hold_statistics=1
        )


def test_apply_targeted_dropout_with_groups_holds_statistics_too():
    """`apply_targeted_dropout(..., groups=True)` returns the same
    grouped targeting around a copy; the caller's model is unchanged."""
    from keras_tdrop import apply_targeted_dropout

    model = bn_net()
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    td = apply_targeted_dropout(
        model,
        rate=0.5,
        target_rate=0.5,
        targeting="unit",
        groups=True,
        exclude="stem",
        seed=3,
    )
    assert isinstance(td, ModelTargetedDropout) and td.model is not model
    assert td.hold_statistics and td.exclude == ["stem/kernel"]
    train(td)
    targeted = targeted_channels(td, "a")
    plain = bn_net()
    train(plain)
    assert_close(
        statistics(td.model, "bn_a")[1][targeted],
        statistics(plain, "bn_a")[1][targeted],
        rtol=1e-3,
        atol=1e-5,
    )
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))
    with pytest.raises(ValueError, match="targeting='weight'"):
        apply_targeted_dropout(model, groups=True)


@pytest.mark.parametrize("groups", [True, False])
def test_clean_steps_learn_every_statistic_of_the_dense_network(groups):
    """With `clean_steps`, the moving statistics learn only the steps
    taken without drops: every channel of every BatchNorm layer, targeted
    or not, downstream of a drop or not, ends equal to the plain
    network's (with the kernels fixed)."""
    plain = bn_net()
    train(plain)
    td = grouped(groups=groups, clean_steps=0.5)
    train(td)
    for name in ("bn_a", "bn_b"):
        for got, want in zip(
            statistics(td.model, name), statistics(plain, name)
        ):
            assert_close(got, want, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="clean_steps=1.0"):
        ModelTargetedDropout(bn_net(), targeting="unit", clean_steps=1.0)
