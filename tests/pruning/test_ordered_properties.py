"""Property tests of truncation through channel groups, on random graphs
built from the channel rules (residual, depthwise, separable,
squeeze-excite, concatenation, grouped and attention blocks)."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_tdrop import truncate
from keras_tdrop.channels import channel_graph
from keras_tdrop.channels.groups import prunable_groups
from keras_tdrop.channels.ordering import kept_channels
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import ordered_masks
from keras_tdrop.pruning.ordered_masks import group_writers
from tests.channels.helpers import outputs
from tests.channels.test_properties import BLOCKS
from tests.channels.test_properties import build
from tests.tolerance import assert_close

L = keras.layers


def out_channels(layer):
    """A layer's output channels as the rebuilt model holds them."""
    if isinstance(layer, L.MultiHeadAttention):
        return layer.get_config()["num_heads"]
    return layer.get_config().get("filters") or layer.get_config()["units"]


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=4),
    width=st.sampled_from([4, 6, 8]),
    multiplier=st.sampled_from([1, 2]),
    fraction=st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0]),
    round_to=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 100),
)
def test_truncation_commutes_with_masking(
    blocks, width, multiplier, fraction, round_to, seed
):
    """truncate(model, w) computes what the model computes with the
    ordered masks of w; every cut group keeps exactly `kept_channels`
    channels, a multiple of `round_to` (or the whole group)."""
    model = build(blocks, width, multiplier, seed)
    graph = channel_graph(model)
    groups = prunable_groups(graph, model)
    if not groups:
        with pytest.raises(ValueError, match="no channel group"):
            ordered_masks(model, fraction, round_to=round_to)
        return
    masks = ordered_masks(model, fraction, round_to=round_to)
    small = truncate(model, fraction, round_to=round_to)
    x = np.random.default_rng(seed).normal(size=(2, 6, 6, 3))
    x = x.astype("float32")
    masked = outputs(apply_masks(model, masks), x)
    for a, b in zip(masked, outputs(small, x)):
        assert_close(b, a, rtol=1e-4, atol=1e-5)
    for roots in groups.values():
        n = len(roots)
        kept = kept_channels(n, fraction, round_to)
        assert kept == n or kept % round_to == 0
        assert kept >= min(n, np.ceil(fraction * n - 1e-6))
        for name in group_writers(graph, roots):
            old = model.get_layer(name)
            if not isinstance(old, (L.Conv2D, L.Dense)) or isinstance(
                old, (L.DepthwiseConv2D, L.SeparableConv2D)
            ):
                continue
            if old.get_config().get("groups", 1) != 1:
                continue
            if out_channels(old) != n:
                continue  # it writes several groups (a concatenation)
            assert out_channels(small.get_layer(name)) == kept, name
