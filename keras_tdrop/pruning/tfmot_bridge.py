"""A bridge to TF-MOT: our masks into `prune_low_magnitude`, and back.

TF-MOT works only with tf_keras (Keras 2), and importing it switches
`tf.keras` to tf_keras for the whole process. So TF-MOT and tf_keras are
imported only when `to_tfmot` or `from_tfmot` is called, never by importing
keras_tdrop (extra: `pip install "keras-tdrop[tfmot]"`).
"""

from keras_tdrop.pruning.tfmot_layers import SUPPORTED_LAYERS
from keras_tdrop.pruning.tfmot_unwrap import from_tfmot
from keras_tdrop.pruning.tfmot_wrap import to_tfmot

__all__ = ["SUPPORTED_LAYERS", "from_tfmot", "to_tfmot"]
