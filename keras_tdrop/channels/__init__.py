"""Channel dependency graph: which channels of which weights go together.

`channel_graph(model)` follows every channel of a functional or Sequential
model through its layers and raw ops and returns the units that can only be
removed together; `register_channel_rule` teaches it a custom layer.
"""

from keras_tdrop.channels import table  # registers the default rules
from keras_tdrop.channels.graph import ChannelGraph
from keras_tdrop.channels.graph import channel_graph
from keras_tdrop.channels.layer_rules import ChannelwiseParams
from keras_tdrop.channels.rebuild import rebuild
from keras_tdrop.channels.rules import Blocking
from keras_tdrop.channels.rules import ChannelRule
from keras_tdrop.channels.rules import PassThrough
from keras_tdrop.channels.rules import register_channel_rule

__all__ = [
    "Blocking",
    "ChannelGraph",
    "ChannelRule",
    "ChannelwiseParams",
    "PassThrough",
    "channel_graph",
    "rebuild",
    "register_channel_rule",
]
