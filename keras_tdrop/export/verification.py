"""LiteRT outputs of converted bytes against the Keras model's outputs."""

import dataclasses

import keras
import numpy as np

from keras_tdrop.export.inputs import call_args
from keras_tdrop.export.interpreter import dequantize
from keras_tdrop.export.interpreter import open_interpreter
from keras_tdrop.export.interpreter import quantize

__all__ = ["TOLERANCES", "Verification", "verify"]

# Largest accepted max |TFLite - Keras|, as a fraction of the range of the
# Keras outputs on the sample batch (max - min; 1 if they are constant).
# Measured on the MNIST CNN (examples/export_sizes.py): float <= 2e-7,
# dynamic <= 0.27%, int8 <= 0.44% of the range; about 10x margin.
TOLERANCES = {None: 1e-4, "dynamic": 0.02, "int8": 0.05}


@dataclasses.dataclass(frozen=True)
class Verification:
    """What `verify` measured.

    `max_abs_diff` is max |LiteRT - Keras| over the sample batch and every
    output; `tolerance` the absolute bound (`relative_tolerance *
    output_range`); `op_resolver` the LiteRT resolver that ran (`"AUTO"`,
    or `"BUILTIN_WITHOUT_DEFAULT_DELEGATES"` where XNNPACK refused the
    file); `interpreter` is ready to be invoked again on the sample.
    """

    max_abs_diff: float
    tolerance: float
    relative_tolerance: float
    output_range: float
    op_resolver: str
    interpreter: object

    @property
    def passed(self):
        """Whether `max_abs_diff <= tolerance` (False for NaN)."""
        return self.max_abs_diff <= self.tolerance


def verify(model, content, sample, specs, relative_tolerance, num_threads=None):
    """Runs the sample batch through the Keras model and, once, through
    the `.tflite` bytes in LiteRT, and compares the outputs.

    Args:
        model: the Keras model that was converted.
        content: the `.tflite` file's bytes.
        sample: a list of arrays, one per model input, in Keras order
            (as `keras_tdrop.export.inputs.as_inputs` makes).
        specs: the model's `InputSpec`s.
        relative_tolerance: accepted max |diff| as a fraction of the
            range of the Keras outputs (max - min; 1 if they are constant).
        num_threads: passed to the interpreter.

    Returns:
        A `Verification`; raises `RuntimeError` where the file and the
        model do not have the same number of inputs or outputs.

    Example:
    >>> check = verify(model, content, [x[:16]], input_specs(model), 1e-4)
    >>> check.passed, check.max_abs_diff
    """
    expected = [
        np.asarray(y, dtype="float32")
        for y in keras.tree.flatten(
            model(call_args(sample, specs), training=False)
        )
    ]
    interpreter, op_resolver, actual = open_interpreter(
        content, lambda i: _run(i, specs, sample), num_threads
    )
    if len(actual) != len(expected):
        raise RuntimeError(
            f"The TFLite model has {len(actual)} outputs, the Keras model "
            f"{len(expected)}."
        )
    diff = max(float(np.max(np.abs(a - e))) for a, e in zip(actual, expected))
    low = min(float(np.min(e)) for e in expected)
    high = max(float(np.max(e)) for e in expected)
    output_range = high - low if high > low else 1.0
    return Verification(
        max_abs_diff=diff,
        tolerance=relative_tolerance * output_range,
        relative_tolerance=float(relative_tolerance),
        output_range=output_range,
        op_resolver=op_resolver,
        interpreter=interpreter,
    )


def _run(interpreter, specs, sample):
    """Invokes the interpreter once on the sample, inputs in Keras order;
    the outputs as float32, in Keras order."""
    inputs, outputs = _io_details(interpreter, specs)
    for detail, array in zip(inputs, sample):
        interpreter.resize_tensor_input(detail["index"], array.shape)
    interpreter.allocate_tensors()
    # Details again: quantization parameters and shapes after resizing.
    by_index = {d["index"]: d for d in interpreter.get_input_details()}
    inputs = [by_index[d["index"]] for d in inputs]
    by_index = {d["index"]: d for d in interpreter.get_output_details()}
    outputs = [by_index[d["index"]] for d in outputs]
    for detail, array in zip(inputs, sample):
        interpreter.set_tensor(detail["index"], quantize(array, detail))
    interpreter.invoke()
    return [dequantize(interpreter.get_tensor(d["index"]), d) for d in outputs]


def _io_details(interpreter, specs):
    """Input and output details in the Keras model's order, read from the
    file's one signature where it has one."""
    signatures = interpreter.get_signature_list()
    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    if len(signatures) == 1:
        key = next(iter(signatures))
        runner = interpreter.get_signature_runner(key)
        named_in = runner.get_input_details()
        named_out = runner.get_output_details()
        if len(specs) == 1 and len(named_in) == 1:
            inputs = list(named_in.values())
        elif all(s.name in named_in for s in specs):
            inputs = [named_in[s.name] for s in specs]
        outputs = [
            named_out[k] for k in sorted(named_out, key=lambda k: (len(k), k))
        ]
    if len(inputs) != len(specs):
        raise RuntimeError(
            f"The TFLite model has {len(inputs)} inputs, the Keras model "
            f"{len(specs)}."
        )
    return inputs, outputs
