"""The channel graph's groups, its unknown-layer behaviour, the rule table,
the Keras internals the adapter reads, and bad input."""

import keras
import numpy as np
import pytest

from keras_tdrop import keras_adapter
from keras_tdrop.channels import ChannelwiseParams
from keras_tdrop.channels import channel_graph
from keras_tdrop.channels import register_channel_rule
from keras_tdrop.channels.rules import _RULES
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import shrink
from tests.channels.helpers import built_subclassed
from tests.channels.helpers import outputs
from tests.channels.helpers import randomize
from tests.channels.helpers import weights_of
from tests.tolerance import assert_close

L = keras.layers


class Scale(L.Layer):
    """A custom per-channel scale the graph does not know."""

    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


def se_residual_model(custom=False):
    inputs = keras.Input((8, 8, 3))
    stem = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = L.Conv2D(12, 1, name="expand")(stem)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    if custom:
        x = Scale(name="scale")(x)
    gate = L.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    gate = L.Conv2D(4, 1, activation="relu", name="se_reduce")(gate)
    gate = L.Conv2D(12, 1, activation="sigmoid", name="se_expand")(gate)
    x = L.Multiply(name="excite")([x, gate])
    x = L.Conv2D(8, 1, name="project")(x)
    x = L.Add(name="add")([stem, x])
    y = L.Conv2D(6, 3, padding="same", groups=2, name="grouped")(x)
    x = L.Concatenate(name="cat")([x, y])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs_ = L.Dense(3, name="logits")(x)
    return randomize(keras.Model(inputs, outputs_))


def test_groups_of_a_residual_se_block():
    graph = channel_graph(se_residual_model())
    pieces = graph.root_slices()

    def layers_of(layer, axis):
        variable = graph.model.get_layer(layer).kernel
        index = graph.weight_index(graph.model.get_layer(layer), variable)
        ids = graph.slices[(id(graph.model.get_layer(layer)), index, axis)].ids
        root = int(graph.roots(ids[:1])[0])
        return {p.layer.name for p, _ in pieces[root]}

    # expand's channels: bn, dw, the SE gate's expand and the projection.
    assert layers_of("expand", 3) == {
        "expand",
        "bn",
        "dw",
        "se_reduce",
        "se_expand",
        "project",
    }
    # The residual stream: stem, project, the grouped conv (a whole group
    # of 4 inputs with its 3 outputs) and the logits' rows (via concat).
    assert layers_of("stem", 3) == {
        "stem",
        "expand",
        "project",
        "grouped",
        "logits",
    }
    groups = graph.groups()
    sizes = sorted(len(r) for r in groups.values())
    # input 3, stem+project+grouped (8 channels in 2 groups of 4 joined
    # with grouped's 2 groups of 3 outputs: 2 roots), expand 12,
    # se_reduce 4, logits 3.
    assert sizes == [2, 3, 3, 4, 12]


def test_unknown_layer_keeps_its_group_and_says_why():
    model = se_residual_model(custom=True)
    masks = compute_masks(model, 0.5, targeting="unit", groups=True)
    graph = channel_graph(model)
    reasons = graph.blocked_reasons()
    assert any("'scale' (Scale)" in w for why in reasons.values() for w in why)
    # The expand group is blocked by the unknown layer: no mask touches it.
    assert sorted(masks) == ["se_expand/kernel", "se_reduce/kernel"]
    small, report = shrink(model, masks)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    for a, b in zip(outputs(apply_masks(model, masks), x), outputs(small, x)):
        assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert small.get_layer("expand").filters == 12
    with pytest.raises(ValueError, match=r"'scale' \(Scale\)"):
        channel_graph(model, strict=True)
    # Masks that zero the blocked group: shrink keeps it and says why;
    # strict=True raises naming the layer; outputs unchanged.
    unit = compute_masks(model, 0.5, targeting="unit", exclude=["stem"])
    small, report = shrink(model, unit)
    row = [r for r in report if r["group"].startswith("expand")][0]
    assert row["removed"] == 0 and row["kept"] == row["zeroed"] == 6
    assert "'scale' (Scale): the channel graph has no rule" in row["reason"]
    with pytest.raises(ValueError, match=r"strict=True.*'scale' \(Scale\)"):
        shrink(model, unit, strict=True)


def test_a_registered_rule_makes_the_custom_layer_shrinkable():
    model = se_residual_model(custom=True)
    register_channel_rule(Scale, ChannelwiseParams())
    try:
        masks = compute_masks(model, 0.5, targeting="unit", groups=True)
        small, report = shrink(model, masks)
        assert small.get_layer("expand").filters == 6
        assert small.get_layer("scale").scale.shape == (6,)
        assert report.removed == report.zeroed
        assert report.max_abs_diff < 1e-5
    finally:
        del _RULES[Scale]


def test_group_counts_are_exact_per_group():
    model = se_residual_model()
    masks = compute_masks(model, 0.5, targeting="unit", groups=True)
    expand = masks["expand/kernel"]
    removed = np.flatnonzero(~expand.reshape(-1, 12).any(axis=0))
    assert len(removed) == 6
    # Every member zeroes the same channels.
    for name, axis in (("dw", 2), ("se_expand", 3), ("project", 2)):
        mask = masks[f"{name}/kernel"]
        zero = np.flatnonzero(
            ~np.moveaxis(mask, axis, 0).reshape(12, -1).any(1)
        )
        np.testing.assert_array_equal(zero, removed)


def test_global_scope_normalises_groups():
    model = se_residual_model()
    masks = compute_masks(
        model, 0.5, targeting="unit", groups=True, scope="global"
    )
    small, report = shrink(model, masks)
    assert report.removed == report.zeroed > 0


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda m: compute_masks(m, 0.5, "weight", groups=True),
            ValueError,
            r"groups=True.*targeting=\"unit\".*Received: targeting='weight'",
        ),
        (
            lambda m: compute_masks(m, 1.5, "unit", groups=True),
            ValueError,
            r"fraction.*1.5",
        ),
        (
            lambda m: compute_masks(m, -0.1, "unit", groups=True),
            ValueError,
            r"fraction.*-0.1",
        ),
        (
            lambda m: compute_masks(m, 0.5, "unit", groups="yes"),
            TypeError,
            r"`groups` must be a bool. Received: groups='yes'",
        ),
        (
            lambda m: compute_masks(m, 0.5, "unit", groups=True, block_size=4),
            ValueError,
            r"`block_size`.*Received: block_size=4",
        ),
        (lambda m: shrink("model"), TypeError, r"Received: model='model'"),
        (lambda m: shrink(m, strict="yes"), TypeError, r"`strict`.*'yes'"),
        (lambda m: channel_graph([m]), TypeError, r"Received: model=\["),
    ],
)
def test_bad_input(call, error, match):
    model = se_residual_model()
    before = weights_of(model)
    with pytest.raises(error, match=match):
        call(model)
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)


def test_subclassed_model_says_what_works():
    net = built_subclassed()
    with pytest.raises(ValueError, match=r"subclassed.*masks.*sparse TFLite"):
        shrink(net)
    with pytest.raises(ValueError, match=r"groups=True.*subclassed.*groups"):
        compute_masks(net, 0.5, "unit", groups=True)


def test_adapter_reads_the_keras_internals_it_needs():
    """Fails loudly when Keras moves the private attributes keras_adapter.py
    reads (see its docstring)."""
    inputs = {
        "a": keras.Input((4,), name="a"),
        "b": keras.Input((4,), name="b"),
    }
    shared = L.Dense(4, name="shared")
    x = shared(inputs["a"]) + shared(inputs["b"])
    model = keras.Model(inputs, [x, x[:, :2]])
    nodes = keras_adapter.nodes(model)
    names = [type(n.operation).__name__ for n in nodes]
    assert names == ["Dense", "Dense", "Add", "GetItem"]
    assert keras_adapter.node_inputs(nodes[2]) == list(nodes[2].arguments.args)
    assert set(keras_adapter.inputs_structure(model)) == {"a", "b"}
    assert keras_adapter.producer(nodes[2].outputs[0]) is nodes[2].operation
    seq = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    assert keras_adapter.functional_of(seq).layers[-1] is seq.layers[-1]
    values = [np.ones((1, 4), "float32"), np.zeros((1, 4), "float32")]
    calls = []

    def call(node, args, kwargs):
        calls.append(type(node.operation).__name__)
        return node.operation(*args, **kwargs)

    out = keras_adapter.run_graph(model, values, call)
    assert calls == names and len(out) == 2
    assert keras_adapter.raw_op_types("Add", "Reshape", "GetItem")
    with pytest.raises(keras_adapter.GraphError, match="subclassed"):
        keras_adapter.functional_of(built_subclassed())


def test_round_to_keeps_multiples_of_r_channels():
    model = se_residual_model()
    masks = compute_masks(
        model, 0.25, targeting="unit", groups=True, round_to=4
    )
    small, report = shrink(model, masks)
    # expand's group: 12 channels, floor(0.25 * 12) = 3 chosen, 9 kept ->
    # rounded up to 12: none removed; at 0.5, 6 kept (not a multiple of 4)
    # -> 8 kept.
    assert small.get_layer("expand").filters == 12
    masks = compute_masks(model, 0.5, targeting="unit", groups=True, round_to=4)
    small, report = shrink(model, masks)
    assert small.get_layer("expand").filters == 8
    assert small.get_layer("dw").kernel.shape[-2] == 8
    assert report.removed == report.zeroed == 4 + 0  # se_reduce: 4 -> 4
    with pytest.raises(ValueError, match=r"`round_to`.*Received: round_to=0"):
        compute_masks(model, 0.5, targeting="unit", groups=True, round_to=0)
    with pytest.raises(ValueError, match=r"needs groups=True.*round_to=8"):
        compute_masks(model, 0.5, targeting="unit", round_to=8)


def test_keep_stem_false_prunes_the_stem_group():
    from keras_tdrop.pruning import group_masks

    model = se_residual_model()
    assert "stem/kernel" not in group_masks(model, 0.5)
    masks = group_masks(model, 0.5, keep_stem=False)
    small, report = shrink(model, masks)
    # The stem's group: stem, project, grouped (2 groups of 4 inputs + 3
    # outputs each: 2 units) -> 1 unit of 4 channels removed.
    assert small.get_layer("stem").filters == 4
    assert small.get_layer("grouped").groups == 1
    assert report.removed == report.zeroed
    assert report.max_abs_diff < 1e-5
