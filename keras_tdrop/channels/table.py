"""The default channel rules, one line per type of layer or raw op."""

import keras

from keras_tdrop import keras_adapter
from keras_tdrop.channels import layer_rules as lr
from keras_tdrop.channels import shape_rules as sr
from keras_tdrop.channels.attention_rule import MultiHeadAttention
from keras_tdrop.channels.rules import Blocking
from keras_tdrop.channels.rules import PassThrough
from keras_tdrop.channels.rules import register_channel_rule

__all__ = [
    "AUGMENTATION_LAYERS",
    "CHANNEL_PASS_LAYERS",
    "register_defaults",
]

L = keras.layers


def _activation_mixes(layer, node):
    if lr.mixing_activation(layer):
        return "it is a softmax over the channels"
    return None


def _softmax_axis(layer, node):
    rank = len(node.outputs[0].shape)
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if any(a % rank == rank - 1 for a in axes):
        return "it is a softmax over the channels"
    return None


def _scalar_scale(layer, node):
    for value in (getattr(layer, "scale", 1.0), getattr(layer, "offset", 0)):
        if getattr(value, "shape", ()) not in ((), (1,)):
            return "its scale or offset is per channel"
    return None


CHANNEL_PASS_LAYERS = (
    # Layers that act on each channel alone and keep the last axis.
    L.ReLU,
    L.LeakyReLU,
    L.ELU,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.ActivityRegularization,
    L.Identity,
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.MaxPooling3D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.AveragePooling3D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.GlobalMaxPooling3D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
    L.ZeroPadding3D,
    L.Cropping1D,
    L.Cropping2D,
    L.Cropping3D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.UpSampling3D,
)
# Augmentation inside the model (keras.io's examples put it there): each
# moves pixels or shifts every channel alone, and is the identity at
# inference. Those that mix channels (grayscale, hue) are not listed.
AUGMENTATION_LAYERS = (
    L.RandomFlip,
    L.RandomRotation,
    L.RandomZoom,
    L.RandomTranslation,
    L.RandomCrop,
    L.RandomContrast,
    L.RandomBrightness,
)
_RAW_UNARY = (
    "Relu",
    "Relu6",
    "Sigmoid",
    "Tanh",
    "Gelu",
    "Silu",
    "HardSigmoid",
    "HardSilu",
    "Softplus",
    "Softsign",
    "Elu",
    "Selu",
    "LeakyRelu",
    "Celu",
    "Glu",
    "Mish",
    "Exp",
    "Abs",
    "Absolute",
    "Square",
    "Sqrt",
    "Negative",
    "Erf",
    "Cast",
    "Clip",
    "Log",
    "Reciprocal",
    "Sign",
)
_RAW_MERGE = (
    "Add",
    "Subtract",
    "Multiply",
    "Divide",
    "TrueDivide",
    "Maximum",
    "Minimum",
    "Power",
)


def register_defaults():
    for cls in CHANNEL_PASS_LAYERS + AUGMENTATION_LAYERS:
        register_channel_rule(cls, PassThrough())
    register_channel_rule(L.Activation, PassThrough(_activation_mixes))
    register_channel_rule(L.Softmax, PassThrough(_softmax_axis))
    register_channel_rule(L.Rescaling, PassThrough(_scalar_scale))
    register_channel_rule(L.Dense, lr.Producer())
    for cls in (L.Conv1D, L.Conv2D, L.Conv3D):
        register_channel_rule(cls, lr.Conv())
    for cls in (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose):
        register_channel_rule(cls, lr.ConvTranspose())
    for cls in (L.DepthwiseConv1D, L.DepthwiseConv2D):
        register_channel_rule(cls, lr.Depthwise())
    for cls in (L.SeparableConv1D, L.SeparableConv2D):
        register_channel_rule(cls, lr.Separable())
    register_channel_rule(L.EinsumDense, lr.EinsumDense())
    register_channel_rule(L.Embedding, lr.Embedding())
    for cls in [L.BatchNormalization, L.PReLU, L.Normalization]:
        register_channel_rule(cls, lr.ChannelwiseParams())
    for cls in keras_adapter.application_layer_types():
        register_channel_rule(cls, lr.ChannelwiseParams())
    register_channel_rule(L.GroupNormalization, lr.GroupNormalization())
    register_channel_rule(L.LayerNormalization, lr.LayerNormalization())
    register_channel_rule(L.MultiHeadAttention, MultiHeadAttention())
    for cls in (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum):
        register_channel_rule(cls, sr.Merge())
    register_channel_rule(L.Concatenate, sr.Concatenate())
    register_channel_rule(L.Flatten, sr.Flatten())
    register_channel_rule(L.Reshape, sr.Reshape())
    register_channel_rule(L.Permute, sr.KeepsLastAxis())
    register_channel_rule(L.RepeatVector, sr.KeepsLastAxis())
    register_channel_rule(L.Dot, Blocking("it mixes channels"))
    # Masking masks a step when every channel equals mask_value: removing
    # a channel with a constant could change which steps are masked.
    register_channel_rule(
        L.Masking, Blocking("it masks steps by all channels together")
    )
    raw = keras_adapter.raw_op_types
    for cls in raw(*_RAW_UNARY):
        register_channel_rule(cls, PassThrough())
    for cls in raw(*_RAW_MERGE):
        register_channel_rule(cls, sr.Merge())
    for cls in raw("Concatenate"):
        register_channel_rule(cls, sr.Concatenate())
    for cls in raw("Reshape"):
        register_channel_rule(cls, sr.Reshape())
    for cls in raw("Mean", "Sum", "Max", "Min", "Prod", "Var", "Std"):
        register_channel_rule(cls, sr.Reduce())
    for cls in raw("GetItem"):
        register_channel_rule(cls, sr.GetItem())
    for cls in raw("ExpandDims", "Squeeze"):
        register_channel_rule(cls, sr.KeepsLastAxis())
    for cls in raw("Transpose"):
        register_channel_rule(cls, sr.KeepsLastAxis(transposes=True))
    for cls in raw("Softmax", "LogSoftmax", "Matmul", "Einsum", "Dot"):
        register_channel_rule(cls, Blocking("it mixes channels"))


register_defaults()
