"""Keras model to TFLite bytes, with TensorFlow's converter.

Zeroed weights make files smaller (`sparse=True`), not faster: LiteRT
densifies them at load time. Removing units (`keras_tdrop.pruning.shrink`)
or truncating width makes models faster.
"""

import contextlib
import io
import warnings

__all__ = ["QUANTIZE", "convert"]

QUANTIZE = (None, "dynamic", "int8")


def convert(
    model, sparse=False, quantize=None, examples=None, calibration_steps=100
):
    """The bytes of a `.tflite` file for a Keras model (nothing checked,
    nothing written).

    Args:
        model: a built `keras.Model` (TensorFlow backend).
        sparse: bool, encode zero weights sparsely
            (`Optimize.EXPERIMENTAL_SPARSITY`).
        quantize: None (float32), `"dynamic"` (int8 weights, float
            activations) or `"int8"` (full integer: int8 weights,
            activations, input and output).
        examples: for `"int8"`, a function returning iterators of single
            examples (lists of arrays, one per input), as
            `keras_tdrop.export.inputs.calibration_examples` makes.
        calibration_steps: int, examples used to calibrate `"int8"`.

    Returns:
        The file's content, `bytes`.

    Example:
    >>> content = convert(model, quantize="dynamic")
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = []
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    if quantize is not None:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    converter.optimizations = optimizations
    if quantize == "int8":

        def calibration():
            for step, example in enumerate(examples()):
                if step == calibration_steps:
                    break
                yield [a.astype("float32") for a in example]

        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # The Keras export that the converter runs prints its endpoints.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Statistics for quantized inputs", UserWarning
        )
        return converter.convert()
