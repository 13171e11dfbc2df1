"""Group-aware unit targeting (`ModelTargetedDropout(..., groups=True)`)."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import ModelTargetedDropout
from keras_tdrop import RampingCallback
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import shrink
from tests.channels.helpers import built_subclassed
from tests.tolerance import assert_close

L = keras.layers


def residual_net(seed=0):
    """Two residual stages: the branches of each `Add` share channels."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", name="stem")(inputs)
    a = L.Conv2D(8, 1, name="a")(x)
    b = L.Conv2D(8, 3, padding="same", name="b")(x)
    b = L.BatchNormalization(name="bn_b")(b)
    y = L.ReLU()(a + b)
    c = L.Conv2D(8, 3, padding="same", activation="relu", name="c")(y)
    d = L.DepthwiseConv2D(3, padding="same", name="d")(c)
    y = L.Add(name="join")([y, d])
    h = L.Conv2D(10, 1, activation="relu", name="h")(y)
    x = L.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, L.Dense(3, name="logits")(x))


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    return x, rng.normal(size=(n, 3)).astype("float32")


def channel_sets(td):
    """Per group, the targeted channel set of each writing kernel."""
    grouping = td.group_targeting
    values = {id(v): ops.convert_to_tensor(v) for v in td.model.weights}
    masks = grouping.kernel_masks(values, td._current_target_rate)
    found = []
    for n, members in grouping.groups:
        sets = []
        for m in members:
            if not m.writes:
                continue
            mask = ops.convert_to_numpy(masks[id(m.variable)])
            along = np.moveaxis(mask, m.axis, 0).reshape(mask.shape[m.axis], -1)
            sets.append(frozenset(m.segments[along.any(axis=1)].tolist()))
        found.append((n, sets))
    return found


def test_every_member_of_a_group_targets_the_same_channels_each_step():
    td = ModelTargetedDropout(
        residual_net(), 0.5, 0.5, targeting="unit", groups=True, seed=1
    )
    names = sorted(k.path for k in td.group_targeting.grouped)
    # a, b (one group through the Add) with c and d (the join), and h.
    assert names == ["a/kernel", "b/kernel", "c/kernel", "d/kernel", "h/kernel"]
    assert sorted(n for n, _ in td.group_targeting.groups) == [8, 10]
    td.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    x, y = data()
    for step in range(4):
        for n, sets in channel_sets(td):
            assert len(sets) >= 1 and len(set(sets)) == 1, (step, sets)
            assert len(sets[0]) == int(np.floor(0.5 * n))
        td.train_on_batch(x, y)
    # Dropped elements lie in the targeted channels only.
    values = {id(v): ops.convert_to_tensor(v) for v in td.model.weights}
    masks = td.group_targeting.kernel_masks(values, 0.5)
    for kernel, dropped in td.dropped_kernels(training=True):
        changed = ops.convert_to_numpy(dropped) != ops.convert_to_numpy(kernel)
        assert not np.any(changed & ~ops.convert_to_numpy(masks[id(kernel)]))
        assert np.any(changed)


def test_after_training_group_masks_and_shrink_equal_the_targeted_pruning(
    tmp_path,
):
    model = residual_net(seed=2)
    td = ModelTargetedDropout(model, 0.5, 0.5, targeting="unit", groups=True)
    td.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    x, y = data(seed=3)
    td.fit(x, y, epochs=2, batch_size=8, verbose=0)
    gamma = 0.5
    masks = compute_masks(model, gamma, targeting="unit", groups=True)
    values = {id(v): ops.convert_to_tensor(v) for v in model.weights}
    targeted = td.group_targeting.kernel_masks(values, gamma)
    for kernel in td.group_targeting.grouped:
        zero = ~masks[kernel.path].astype(bool)
        np.testing.assert_array_equal(
            zero.reshape(-1, zero.shape[-1]).all(axis=0)
            if kernel.path != "d/kernel"
            else zero.all(axis=(0, 1, 3)),
            ops.convert_to_numpy(targeted[id(kernel)])
            .reshape(-1, zero.shape[-1])
            .all(axis=0)
            if kernel.path != "d/kernel"
            else ops.convert_to_numpy(targeted[id(kernel)]).all(axis=(0, 1, 3)),
        )
    small, report = shrink(model, masks)
    assert report.removed == report.zeroed == 4 + 5
    pruned = apply_masks(model, masks)
    assert_close(
        ops.convert_to_numpy(small(x)),
        ops.convert_to_numpy(pruned(x)),
        rtol=1e-5,
        atol=1e-5,
    )
    # .keras round trip: the loaded wrapper targets the same channels.
    path = os.path.join(tmp_path, "td.keras")
    td.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.groups is True
    assert channel_sets(loaded) == channel_sets(td)


def _channel_view(value, m):
    """`value` as (channels along the member's axis, rest)."""
    value = np.moveaxis(ops.convert_to_numpy(value), m.axis, 0)
    return value.reshape(value.shape[0], -1)


@pytest.mark.parametrize("rescale", [False, True])
def test_column_noise_drops_a_group_channel_in_every_writer_at_once(rescale):
    alpha = 0.5
    td = ModelTargetedDropout(
        residual_net(),
        alpha,
        0.5,
        targeting="unit",
        groups=True,
        noise="column",
        rescale=rescale,
        seed=3,
    )
    grouping = td.group_targeting
    values = {id(v): ops.convert_to_tensor(v) for v in td.model.weights}
    masks = grouping.kernel_masks(values, 0.5)
    stored = {id(k): ops.convert_to_numpy(k) for k in grouping.grouped}
    drawn, total, steps = 0, 0, 200
    sums = {id(k): np.zeros_like(stored[id(k)]) for k in grouping.grouped}
    for _ in range(steps):
        out = {
            id(k): ops.convert_to_numpy(v)
            for k, v in grouping.dropped(
                values,
                alpha,
                0.5,
                td.seed_generator,
                noise="column",
                rescale=rescale,
            )
        }
        for n, members in grouping.groups:
            writers = [m for m in members if m.writes]
            dropped_sets = []
            for m in writers:
                zero = np.all(_channel_view(out[id(m.variable)], m) == 0, 1)
                targeted = np.any(_channel_view(masks[id(m.variable)], m), 1)
                # Whole channels: a targeted channel is all zero or intact.
                kept = _channel_view(out[id(m.variable)], m)[~zero]
                scale = 1.0 / (1 - alpha) if rescale else 1.0
                want = _channel_view(stored[id(m.variable)], m)[~zero]
                want = want * np.where(targeted[~zero], scale, 1.0)[:, None]
                assert_close(kept, want, rtol=1e-6)
                assert not np.any(zero & ~targeted)
                dropped_sets.append(
                    frozenset(m.segments[zero & targeted].tolist())
                )
            # Every writer of the group drops the same channels.
            assert len(set(dropped_sets)) == 1, dropped_sets
            drawn += len(dropped_sets[0])
            total += int(np.floor(0.5 * n))
        for key in sums:
            sums[key] += out[key]
    # One draw per targeted channel: about alpha of them dropped
    # (binomial over 200 x 9 channels: sd 0.012, tolerance 4 sd).
    assert abs(drawn / total - alpha) < 0.05
    for kernel in grouping.grouped:
        mean = sums[id(kernel)] / steps
        dense = stored[id(kernel)]
        mask = ops.convert_to_numpy(masks[id(kernel)])
        # Expected effective kernel: the dense one with rescale, the dense
        # one minus alpha times its targeted part without.
        want = dense if rescale else dense - alpha * dense * mask
        # Each channel's mean over 200 Bernoulli draws: sd of the keep
        # fraction 0.035, times 2 with rescale; tolerance ~5 sd.
        tol = (0.35 if rescale else 0.18) * np.abs(dense) + 1e-6
        assert np.all(np.abs(mean - want) <= tol), kernel.path


def test_the_ramp_drives_the_group_target_rate():
    td = ModelTargetedDropout(
        residual_net(), 0.5, 0.75, targeting="unit", groups=True
    )
    td.compile(optimizer="sgd", loss="mse")
    x, y = data()
    ramp = RampingCallback(ramp_fraction=1.0)
    td.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[ramp])
    gamma = td.current_target_rate
    assert 0 < gamma <= 0.75
    for n, sets in channel_sets(td):
        assert len(sets[0]) == int(np.floor(gamma * n * (1 + 2**-20)))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            dict(targeting="weight", groups=True),
            ValueError,
            r"groups=True.*targeting=\"unit\".*Received: targeting='weight'",
        ),
        (
            dict(targeting="unit", reference="t2t", groups=True),
            ValueError,
            r"reference=None.*reference='t2t'",
        ),
        (
            dict(targeting="unit", groups="yes"),
            TypeError,
            r"`groups` must be a bool. Received: groups='yes'",
        ),
    ],
)
def test_bad_group_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ModelTargetedDropout(residual_net(), 0.5, 0.5, **kwargs)


def test_groups_need_a_graph_model():
    with pytest.raises(ValueError, match=r"groups=True.*subclassed"):
        ModelTargetedDropout(
            built_subclassed(), 0.5, 0.5, targeting="unit", groups=True
        )
