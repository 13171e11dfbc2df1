"""The one place the tests import Keras' private test harness."""

from keras.src.testing import TestCase  # noqa: F401
