"""Keras model to TFLite bytes, with TensorFlow's converter.

Zeroed weights make files smaller (`sparse=True`), not faster: LiteRT
densifies them at load time. Removing units (`keras_tdrop.pruning.shrink`)
or truncating width makes models faster.
"""

import contextlib
import io
import os
import re
import tempfile
import warnings

import keras

from keras_tdrop import keras_adapter
from keras_tdrop.optional_imports import require

__all__ = ["QUANTIZE", "convert", "flex_ops"]

QUANTIZE = (None, "dynamic", "int8")

# The converter's words for an op that is neither a TFLite builtin nor
# allowed as a TF Select op.
_NOT_BUILTIN = ("neither a custom op nor a flex op", "TF Select ops:")


def convert(
    model,
    sparse=False,
    quantize=None,
    examples=None,
    calibration_steps=100,
    input_shapes=None,
    select_tf_ops=False,
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
        input_shapes: None, or the full shape of each input (batch axis
            first, None there), in `model.inputs` order: the model is
            exported with these shapes, so that every other dimension is
            known to the converter.
        select_tf_ops: bool, let ops without a TFLite builtin stay
            TensorFlow ops (`OpsSet.SELECT_TF_OPS`, "Flex" ops: the runtime
            must link the Flex delegate).

    Returns:
        The file's content, `bytes`. A model with ops that TFLite has no
        builtin for raises a `ValueError` naming them and both options.

    Example:
    >>> content = convert(model, quantize="dynamic")
    """
    import tensorflow as tf

    with contextlib.ExitStack() as stack:
        if input_shapes is None:
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
        else:
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            converter = _fixed_shape_converter(model, input_shapes, folder)
        optimizations = []
        if sparse:
            optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
        if quantize is not None:
            optimizations.append(tf.lite.Optimize.DEFAULT)
        converter.optimizations = optimizations
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "int8":

            def calibration():
                for step, example in enumerate(examples()):
                    if step == calibration_steps:
                        break
                    yield [a.astype("float32") for a in example]

            converter.representative_dataset = calibration
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        if select_tf_ops:
            ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
        if quantize == "int8" or select_tf_ops:
            converter.target_spec.supported_ops = ops
        # The Keras export that the converter runs prints its endpoints.
        with contextlib.redirect_stdout(io.StringIO()):
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", "Statistics for quantized inputs", UserWarning
                )
                try:
                    return converter.convert()
                except Exception as error:
                    if not any(w in str(error) for w in _NOT_BUILTIN):
                        raise
                    message = _not_builtin(model, error, input_shapes)
        raise ValueError(message)


def _fixed_shape_converter(model, input_shapes, folder):
    """A converter of `model` exported (to `folder`) with `input_shapes`."""
    import tensorflow as tf

    tensors = keras.tree.flatten(model.inputs) if _has_inputs(model) else []
    specs = [
        keras.InputSpec(
            shape=shape,
            dtype=getattr(t, "dtype", "float32"),
            name=getattr(t, "name", None),
        )
        for t, shape in zip(tensors or [None] * len(input_shapes), input_shapes)
    ]
    if keras_adapter.is_graph_model(model) and not isinstance(
        model, keras.Sequential
    ):
        by_tensor = {id(t): s for t, s in zip(tensors, specs)}
        structure = keras_adapter.inputs_structure(model)
        signature = [
            keras.tree.map_structure(lambda t: by_tensor[id(t)], structure)
        ]
    else:
        signature = specs
    path = os.path.join(folder, "saved_model")
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(
            path,
            format="tf_saved_model",
            input_signature=signature,
            verbose=False,
        )
    return tf.lite.TFLiteConverter.from_saved_model(path)


def _has_inputs(model):
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def _not_builtin(model, error, input_shapes):
    text = str(error)
    found = re.search(r"TF Select ops: ([^\n]+)", text)
    if found:
        names = found.group(1).strip()
    else:
        names = ", ".join(sorted(set(re.findall(r"'tf\.(\w+)' op", text))))
    unknown = [
        f"'{getattr(t, 'name', 'input')}' {tuple(t.shape)}"
        for t in (
            keras.tree.flatten(model.inputs) if _has_inputs(model) else []
        )
        if None in tuple(t.shape)[1:]
    ]
    hint = ""
    if unknown and input_shapes is None:
        hint = (
            f" The model's inputs have unknown dimensions ({', '.join(unknown)}"
            "), which often leave the converter without a channel count "
            "(UpSampling2D, Conv2DTranspose, reshapes)."
        )
    return (
        f"TensorFlow's converter found ops of model '{model.name}' that "
        f"TFLite has no builtin kernel for: {names or 'see the converter'}."
        f"{hint} Pass `input_shape=` (the input's shape without the batch "
        "axis, e.g. input_shape=(256, 256, 3)) to convert the model at a "
        "fixed size, or `select_tf_ops=True` to keep these ops as "
        "TensorFlow ops (the runtime must then link the Flex delegate)."
    )


def flex_ops(content):
    """The TensorFlow ops a `.tflite` file keeps as TF Select ("Flex")
    ops, sorted (e.g. `("FlexConv2D",)`); empty for a builtin-only file."""
    schema = require(
        "ai_edge_litert.schema_py_generated",
        "litert",
        "Reading a .tflite file's TF Select ops",
    )
    model = schema.Model.GetRootAs(content, 0)
    names = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i).CustomCode()
        if code and code.startswith(b"Flex"):
            names.add(code.decode())
    return tuple(sorted(names))
