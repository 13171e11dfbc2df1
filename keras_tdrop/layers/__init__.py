from keras_tdrop.layers.model_targeted_dropout import ModelTargetedDropout
from keras_tdrop.layers.targeted_dropout import TargetedDropout

__all__ = [
    "ModelTargetedDropout",
    "TargetedDropout",
]
