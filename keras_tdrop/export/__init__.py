"""Deployment: TFLite files checked in LiteRT (TensorFlow backend only)."""

from keras_tdrop.export.interpreter import predict_tflite
from keras_tdrop.export.interpreter import tflite_latency
from keras_tdrop.export.tflite import TFLiteExport
from keras_tdrop.export.tflite import to_tflite

__all__ = ["TFLiteExport", "predict_tflite", "tflite_latency", "to_tflite"]
