"""TFLite export: converted, checked in LiteRT against Keras, then written.

`to_tflite` puts the parts together: `conversion.convert` makes the bytes,
`verification.verify` runs them in LiteRT against the Keras model, the
file is written atomically only if they match, and the interpreter is
timed only when `repeats` asks for it.
"""

import dataclasses
import math
import os
import warnings

import keras

from keras_tdrop.atomic_write import atomic_write
from keras_tdrop.export import conversion
from keras_tdrop.export.conversion import QUANTIZE
from keras_tdrop.export.inputs import as_inputs
from keras_tdrop.export.inputs import calibration_examples
from keras_tdrop.export.inputs import default_sample
from keras_tdrop.export.inputs import fixed_specs
from keras_tdrop.export.inputs import input_specs
from keras_tdrop.export.interpreter import import_litert
from keras_tdrop.export.interpreter import time_invocations
from keras_tdrop.export.verification import TOLERANCES
from keras_tdrop.export.verification import verify
from keras_tdrop.kernels import check_model

__all__ = ["TFLiteExport", "to_tflite"]


@dataclasses.dataclass(frozen=True)
class TFLiteExport:
    """What `to_tflite` wrote and measured.

    `max_abs_diff` is max |LiteRT - Keras| over the sample batch and every
    output; `tolerance` the absolute bound it was checked against
    (`relative_tolerance * output_range`). `latency_ms` is the median of
    `repeats` invocations of the interpreter on the sample batch
    (`batch_size` rows), in milliseconds, or None where `repeats` was not
    given. `verified` is False only for a file with TF Select ops
    (`select_tf_ops=True`) that LiteRT could not run here: it was written
    unchecked (with a warning), `max_abs_diff` is NaN.
    """

    path: str
    bytes: int
    max_abs_diff: float
    tolerance: float
    relative_tolerance: float
    output_range: float
    latency_ms: float | None
    batch_size: int
    sparse: bool
    quantize: str | None
    op_resolver: str
    verified: bool = True

    def __str__(self):
        kind = self.quantize or "float"
        if self.sparse:
            kind += "+sparse"
        if not self.verified:
            return (
                f"{self.path}: {self.bytes:,} bytes ({kind}), not checked "
                "in LiteRT (its TF Select ops cannot run here)"
            )
        text = (
            f"{self.path}: {self.bytes:,} bytes ({kind}), max |diff| "
            f"{self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g} = "
            f"{self.relative_tolerance:g} x output range "
            f"{self.output_range:.3g})"
        )
        if self.latency_ms is None:
            return text
        return (
            f"{text}, {self.latency_ms:.3f} ms per batch of {self.batch_size}"
        )


def to_tflite(
    model,
    path,
    sparse=False,
    quantize=None,
    representative_data=None,
    sample=None,
    sample_size=16,
    calibration_steps=100,
    tolerance=None,
    repeats=None,
    num_threads=None,
    input_shape=None,
    select_tf_ops=False,
):
    """Converts a Keras model to a `.tflite` file, checked in LiteRT first.

    The model is converted with TensorFlow's converter, the bytes are
    loaded into `ai_edge_litert`'s interpreter, a sample batch is run
    through both (one invocation of the interpreter), and the file is
    written (atomically: a temporary file in the same folder, renamed,
    with the permissions `open()` would give it) only if max |LiteRT -
    Keras| is within the tolerance. Nothing is written otherwise, and an
    existing file at `path` is left as it was. The interpreter is timed
    only when `repeats` is given.

    `sparse=True` stores zeroed weights compactly
    (`Optimize.EXPERIMENTAL_SPARSITY`, for weight-pruned models): the file
    shrinks, inference does not get faster (LiteRT densifies the weights).
    When the default XNNPACK delegate refuses such a model (it does with
    quantization), the check runs without default delegates;
    `op_resolver` in the result says which ran. To make a model faster,
    remove units (`keras_tdrop.pruning.shrink`) before exporting.

    A model whose inputs have unknown dimensions (a U-Net on
    `keras.Input((None, None, 3))`) may hold ops that TFLite has no builtin
    for once converted (a `Conv2D` after `UpSampling2D` loses its channel
    count); such a conversion fails with a `ValueError` naming the two
    ways out: `input_shape` converts the model at a fixed size, and
    `select_tf_ops=True` keeps those ops as TensorFlow ("Flex") ops, which
    only a runtime linking the Flex delegate runs. The file is checked in
    LiteRT wherever its interpreter runs it; where it cannot run the Flex
    ops (the `ai_edge_litert` wheel does not link them), the file is
    written unchecked, with a warning, and `verified=False`.

    Args:
        model: a built `keras.Model` (TensorFlow backend).
        path: the `.tflite` file to write; its folder must exist.
        sparse: bool, encode zero weights sparsely.
        quantize: None (float32), `"dynamic"` (int8 weights, float
            activations) or `"int8"` (full integer: int8 weights,
            activations, input and output; needs `representative_data`).
        representative_data: calibration inputs: an array of examples, a
            `tf.data.Dataset` (batched or not, of `x` or `(x, y)`), or a
            callable returning an iterable of those.
        sample: the batch to compare on (default: the first `sample_size`
            examples of `representative_data`, else a seeded standard
            normal batch of the model's input shape).
        sample_size: int, rows of the default sample batch.
        calibration_steps: int, examples used to calibrate `"int8"`.
        tolerance: accepted max |diff| as a fraction of the output range
            (default `TOLERANCES[quantize]`: 1e-4 float, 0.02 dynamic,
            0.05 int8).
        repeats: None (default: not timed) or an int >= 1, interpreter
            invocations on the sample batch timed for `latency_ms`.
        num_threads: passed to the interpreter.
        input_shape: None, or the shape of the input without the batch
            axis (a tuple of ints; for several inputs a list in input
            order or a dict by input name): fixes the model's unknown
            dimensions for conversion and for the sample batch. The batch
            axis stays free.
        select_tf_ops: bool, allow TensorFlow ops that have no TFLite
            builtin (`OpsSet.SELECT_TF_OPS`).

    Returns:
        A `TFLiteExport` (printable): path, bytes, max_abs_diff, tolerance,
        latency_ms (None unless `repeats` is given), and the options used.

    Example:
    >>> result = to_tflite(pruned, "model.tflite", sparse=True)
    >>> print(result)
    >>> to_tflite(model, "model.tflite", repeats=50).latency_ms
    >>> to_tflite(unet, "unet.tflite", input_shape=(256, 256, 3))
    """
    _check_model(model)
    if not isinstance(sparse, bool):
        raise TypeError(f"`sparse` must be a bool. Received: sparse={sparse!r}")
    if quantize not in QUANTIZE:
        raise ValueError(
            f"`quantize` must be one of {QUANTIZE}. Received: "
            f"quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "`quantize='int8'` needs `representative_data` to calibrate the "
            "activations. Received: representative_data=None"
        )
    counts = [
        ("sample_size", sample_size),
        ("calibration_steps", calibration_steps),
    ]
    if repeats is not None:
        counts.append(("repeats", repeats))
    for name, value in counts:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"`{name}` must be an int >= 1. Received: {name}={value!r}"
            )
    relative = TOLERANCES[quantize] if tolerance is None else tolerance
    if not isinstance(relative, (int, float)) or not relative > 0:
        raise ValueError(
            f"`tolerance` must be a positive number. Received: "
            f"tolerance={tolerance!r}"
        )
    if not isinstance(select_tf_ops, bool):
        raise ValueError(
            "`select_tf_ops` must be a bool. Received: "
            f"select_tf_ops={select_tf_ops!r}"
        )
    path = _check_path(path)
    import_litert()
    specs = input_specs(model)
    if input_shape is not None:
        specs = fixed_specs(specs, input_shape)

    examples = None
    if representative_data is not None:
        examples = calibration_examples(representative_data, specs)
    if sample is None:
        sample = default_sample(specs, examples, sample_size)
    else:
        sample = as_inputs(sample, specs, "sample")

    content = conversion.convert(
        model,
        sparse,
        quantize,
        examples,
        calibration_steps,
        input_shapes=None if input_shape is None else [s.shape for s in specs],
        select_tf_ops=select_tf_ops,
    )
    flex = conversion.flex_ops(content) if select_tf_ops else ()
    try:
        check = verify(model, content, sample, specs, relative, num_threads)
    except RuntimeError as error:
        if not flex or "Select TensorFlow op" not in str(error):
            raise
        check = None
    if check is None:
        return _write_unchecked(
            content, path, flex, relative, sample, sparse, quantize
        )
    if not check.passed:
        raise ValueError(
            "The TFLite model does not match Keras: max |diff| = "
            f"{check.max_abs_diff:.6g} > tolerance {check.tolerance:.6g} "
            f"({relative:g} x output range {check.output_range:.6g}; "
            f"sparse={sparse}, quantize={quantize!r}). "
            f"Nothing was written to {path!r}."
        )
    latency = None
    if repeats is not None:
        latency = time_invocations(check.interpreter, repeats)
    with atomic_write(path, "wb") as file:
        file.write(content)
    return TFLiteExport(
        path=path,
        bytes=len(content),
        max_abs_diff=check.max_abs_diff,
        tolerance=check.tolerance,
        relative_tolerance=check.relative_tolerance,
        output_range=check.output_range,
        latency_ms=latency,
        batch_size=int(sample[0].shape[0]),
        sparse=sparse,
        quantize=quantize,
        op_resolver=check.op_resolver,
    )


def _write_unchecked(content, path, flex, relative, sample, sparse, quantize):
    """Writes a file whose TF Select ops LiteRT cannot run here, with a
    warning; its `TFLiteExport` says it was not checked."""
    warnings.warn(
        f"The TFLite file keeps TF Select ops ({', '.join(flex)}), which "
        "this LiteRT interpreter cannot run (it does not link the Flex "
        f"delegate), so {path!r} is written without the check against "
        "Keras. Run it where the Flex delegate is linked (Android: "
        "org.tensorflow:tensorflow-lite-select-tf-ops), or pass "
        "`input_shape=` instead so that every op is a TFLite builtin.",
        UserWarning,
        stacklevel=3,
    )
    with atomic_write(path, "wb") as file:
        file.write(content)
    return TFLiteExport(
        path=path,
        bytes=len(content),
        max_abs_diff=math.nan,
        tolerance=math.nan,
        relative_tolerance=float(relative),
        output_range=math.nan,
        latency_ms=None,
        batch_size=int(sample[0].shape[0]),
        sparse=sparse,
        quantize=quantize,
        op_resolver="none",
        verified=False,
    )


def _check_model(model):
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "TFLite export needs the TensorFlow backend of Keras (set "
            "KERAS_BACKEND=tensorflow). Received: backend="
            f"{keras.backend.backend()!r}"
        )
    check_model(model, built_for="export")


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`path` must be a str or os.PathLike. Received: path={path!r}"
        )
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise ValueError(f"`path` is a folder. Received: path={path!r}")
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"The folder of `path` does not exist. Received: path={path!r}"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(
            f"The folder of `path` is not writable. Received: path={path!r}"
        )
    return path
