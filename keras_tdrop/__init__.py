"""keras_tdrop: targeted and triangular dropout for Keras 3, and pruning."""

from keras_tdrop import baselines
from keras_tdrop import pruning
from keras_tdrop import schedules
from keras_tdrop import targeting
from keras_tdrop.callbacks.ramping import RampingCallback
from keras_tdrop.layers.model_ordered_dropout import ModelOrderedDropout
from keras_tdrop.layers.model_targeted_dropout import ModelTargetedDropout
from keras_tdrop.layers.targeted_dropout import TargetedDropout
from keras_tdrop.layers.triangular_dropout import TriangularDropout
from keras_tdrop.layers.triangular_dropout import set_width
from keras_tdrop.truncation import truncate
from keras_tdrop.version import __version__
from keras_tdrop.wrapping import apply_targeted_dropout
from keras_tdrop.wrapping import strip_targeted_dropout
from keras_tdrop.wrapping import targeted_dropout_layers

__all__ = [
    "ModelOrderedDropout",
    "ModelTargetedDropout",
    "RampingCallback",
    "TargetedDropout",
    "TriangularDropout",
    "__version__",
    "apply_targeted_dropout",
    "baselines",
    "pruning",
    "schedules",
    "set_width",
    "strip_targeted_dropout",
    "targeted_dropout_layers",
    "targeting",
    "truncate",
]
