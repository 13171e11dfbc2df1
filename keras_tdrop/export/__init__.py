"""Deployment: TFLite files checked in LiteRT (TensorFlow backend only)."""

from keras_tdrop.export.tflite import TFLiteExport
from keras_tdrop.export.tflite import predict_tflite
from keras_tdrop.export.tflite import tflite_latency
from keras_tdrop.export.tflite import to_tflite
