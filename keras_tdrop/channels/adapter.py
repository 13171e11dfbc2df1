"""The channel graph's name for `keras_tdrop.keras_adapter`, the package's
one module that reads Keras and TensorFlow internals."""

from keras_tdrop.keras_adapter import *  # noqa: F403
