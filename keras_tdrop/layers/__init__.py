from keras_tdrop.layers.model_ordered_dropout import ModelOrderedDropout
from keras_tdrop.layers.model_targeted_dropout import ModelTargetedDropout
from keras_tdrop.layers.targeted_dropout import TargetedDropout

__all__ = [
    "ModelOrderedDropout",
    "ModelTargetedDropout",
    "TargetedDropout",
]
