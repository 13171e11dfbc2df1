"""TFLite export, checked in LiteRT against Keras before the file is written.

Zeroed weights make files smaller (`sparse=True`), not faster: LiteRT
densifies them at load time. Removing units (`keras_tdrop.pruning.shrink`)
or truncating width makes models faster.
"""

import contextlib
import dataclasses
import io
import os
import statistics
import time
import warnings

import keras
import numpy as np

from keras_tdrop.pruning.report import _atomic

QUANTIZE = (None, "dynamic", "int8")

# Largest accepted max |TFLite - Keras|, as a fraction of the range of the
# Keras outputs on the sample batch (max - min; 1 if they are constant).
# Measured on the MNIST CNN (examples/export_sizes.py): float <= 2e-7,
# dynamic <= 0.27%, int8 <= 0.44% of the range; about 10x margin.
TOLERANCES = {None: 1e-4, "dynamic": 0.02, "int8": 0.05}


@dataclasses.dataclass(frozen=True)
class TFLiteExport:
    """What `to_tflite` wrote and measured.

    `max_abs_diff` is max |LiteRT - Keras| over the sample batch and every
    output; `tolerance` the absolute bound it was checked against
    (`relative_tolerance * output_range`). `latency_ms` is the median of
    `repeats` invocations of the interpreter on the sample batch
    (`batch_size` rows), in milliseconds.
    """

    path: str
    bytes: int
    max_abs_diff: float
    tolerance: float
    relative_tolerance: float
    output_range: float
    latency_ms: float
    batch_size: int
    sparse: bool
    quantize: str | None
    op_resolver: str

    def __str__(self):
        kind = self.quantize or "float"
        if self.sparse:
            kind += "+sparse"
        return (
            f"{self.path}: {self.bytes:,} bytes ({kind}), max |diff| "
            f"{self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g} = "
            f"{self.relative_tolerance:g} x output range "
            f"{self.output_range:.3g}), {self.latency_ms:.3f} ms per batch "
            f"of {self.batch_size}"
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
    repeats=50,
    num_threads=None,
):
    """Converts a Keras model to a `.tflite` file, checked in LiteRT first.

    The model is converted with TensorFlow's converter, the bytes are
    loaded into `ai_edge_litert`'s interpreter, a sample batch is run
    through both, and the file is written (atomically: a temporary file in
    the same folder, renamed) only if max |LiteRT - Keras| is within the
    tolerance. Nothing is written otherwise, and an existing file at `path`
    is left as it was.

    `sparse=True` stores zeroed weights compactly
    (`Optimize.EXPERIMENTAL_SPARSITY`, for weight-pruned models): the file
    shrinks, inference does not get faster (LiteRT densifies the weights).
    When the default XNNPACK delegate refuses such a model (it does with
    quantization), the check runs without default delegates;
    `op_resolver` in the result says which ran. To make a model faster,
    remove units (`keras_tdrop.pruning.shrink`) before exporting.

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
        repeats: int, interpreter invocations timed for `latency_ms`.
        num_threads: passed to the interpreter.

    Returns:
        A `TFLiteExport` (printable): path, bytes, max_abs_diff, tolerance,
        latency_ms, and the options used.

    Example:
    >>> result = to_tflite(pruned, "model.tflite", sparse=True)
    >>> print(result)
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
    for name, value in (
        ("sample_size", sample_size),
        ("calibration_steps", calibration_steps),
        ("repeats", repeats),
    ):
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
    path = _check_path(path)
    interpreter_lib = _import_litert()
    specs = _input_specs(model)

    examples = None
    if representative_data is not None:
        examples = _examples(representative_data, specs)
    if sample is None:
        sample = _default_sample(specs, examples, sample_size)
    else:
        sample = _as_inputs(sample, specs, "sample")

    content = _convert(
        model, sparse, quantize, examples, specs, calibration_steps
    )
    expected = [
        np.asarray(y, dtype="float32")
        for y in keras.tree.flatten(model(_call_args(sample, specs)))
    ]
    runner = _Runner(interpreter_lib, content, specs, sample, num_threads)
    actual = runner.run()
    if len(actual) != len(expected):
        raise RuntimeError(
            f"The TFLite model has {len(actual)} outputs, the Keras model "
            f"{len(expected)}."
        )
    diff = max(float(np.max(np.abs(a - e))) for a, e in zip(actual, expected))
    low = min(float(np.min(e)) for e in expected)
    high = max(float(np.max(e)) for e in expected)
    output_range = high - low if high > low else 1.0
    bound = relative * output_range
    if not diff <= bound:
        raise ValueError(
            f"The TFLite model does not match Keras: max |diff| = {diff:.6g} "
            f"> tolerance {bound:.6g} ({relative:g} x output range "
            f"{output_range:.6g}; sparse={sparse}, quantize={quantize!r}). "
            f"Nothing was written to {path!r}."
        )
    latency = runner.latency_ms(repeats)
    _write_atomically(path, content)
    return TFLiteExport(
        path=path,
        bytes=len(content),
        max_abs_diff=diff,
        tolerance=bound,
        relative_tolerance=float(relative),
        output_range=output_range,
        latency_ms=latency,
        batch_size=int(sample[0].shape[0]),
        sparse=sparse,
        quantize=quantize,
        op_resolver=runner.op_resolver,
    )


def tflite_latency(model, x, repeats=50, num_threads=None):
    """Median milliseconds of one LiteRT invocation of a `.tflite` on `x`.

    `model` is a path or the file's bytes; `x` one batch (a list for
    several inputs, in the file's order). Falls back to the interpreter
    without default delegates where XNNPACK refuses the file.

    Example:
    >>> tflite_latency("model.tflite", x_test[:1], repeats=200)
    """
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(
            f"`repeats` must be an int >= 1. Received: repeats={repeats!r}"
        )
    lib = _import_litert()
    kwargs = _interpreter_source(model, num_threads)
    try:
        interpreter = lib.Interpreter(**kwargs)
        _predict(interpreter, x, batch_size=len(_first(x)))
    except RuntimeError:
        kwargs["experimental_op_resolver_type"] = (
            lib.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        interpreter = lib.Interpreter(**kwargs)
        _predict(interpreter, x, batch_size=len(_first(x)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _first(x):
    return x[0] if isinstance(x, (list, tuple)) else x


def _interpreter_source(model, num_threads):
    kwargs = {"num_threads": num_threads}
    if isinstance(model, (bytes, bytearray)):
        kwargs["model_content"] = bytes(model)
    else:
        kwargs["model_path"] = os.fspath(model)
    return kwargs


def predict_tflite(model, x, batch_size=256, num_threads=None):
    """Runs a `.tflite` file (or its bytes) in LiteRT on `x`, batch by batch.

    Quantized inputs and outputs are converted from and to float with the
    file's scales, so an int8 model is called like the Keras model. For a
    model with several inputs, `x` is a list in the file's input order;
    several outputs come back in the file's output order. Falls back to the
    interpreter without default delegates where XNNPACK refuses the file
    (sparse quantized models).

    Returns:
        The outputs as float32 arrays (one array for a single output).

    Example:
    >>> logits = predict_tflite("model.tflite", x_test)
    """
    lib = _import_litert()
    kwargs = _interpreter_source(model, num_threads)
    try:
        return _predict(lib.Interpreter(**kwargs), x, batch_size)
    except RuntimeError:
        kwargs["experimental_op_resolver_type"] = (
            lib.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        return _predict(lib.Interpreter(**kwargs), x, batch_size)


def _predict(interpreter, x, batch_size):
    inputs = interpreter.get_input_details()
    x = [np.asarray(a) for a in (x if len(inputs) > 1 else [x])]
    if len(x) != len(inputs) or len({len(a) for a in x}) != 1:
        raise ValueError(
            f"`x` must give {len(inputs)} arrays with the same number of "
            f"rows. Received: {[a.shape for a in x]}"
        )
    results, shape = [], None
    for start in range(0, len(x[0]), batch_size):
        batch = [a[start : start + batch_size] for a in x]
        if batch[0].shape != shape:
            for detail, array in zip(inputs, batch):
                interpreter.resize_tensor_input(detail["index"], array.shape)
            interpreter.allocate_tensors()
            inputs = interpreter.get_input_details()
            outputs = interpreter.get_output_details()
            shape = batch[0].shape
        for detail, array in zip(inputs, batch):
            interpreter.set_tensor(detail["index"], _quantize(array, detail))
        interpreter.invoke()
        results.append(
            [
                _dequantize(interpreter.get_tensor(d["index"]), d)
                for d in outputs
            ]
        )
    merged = [np.concatenate(parts) for parts in zip(*results)]
    return merged[0] if len(merged) == 1 else merged


def _check_model(model):
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "TFLite export needs the TensorFlow backend of Keras (set "
            "KERAS_BACKEND=tensorflow). Received: backend="
            f"{keras.backend.backend()!r}"
        )
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model={model!r}"
        )
    if not model.built:
        raise ValueError(
            f"`model` must be built before export. Received: unbuilt model "
            f"'{model.name}'"
        )


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


def _import_litert():
    try:
        from ai_edge_litert import interpreter
    except ImportError as error:
        raise ImportError(
            "TFLite export checks every file in LiteRT: install it with "
            "`pip install keras-tdrop[litert]` (ai-edge-litert)."
        ) from error
    return interpreter


@dataclasses.dataclass(frozen=True)
class _Spec:
    name: str
    shape: tuple
    dtype: str


def _input_specs(model):
    try:
        inputs = keras.tree.flatten(model.inputs)
    except (AttributeError, ValueError):
        inputs = _built_inputs(model)
    if not inputs:
        raise ValueError(
            "`model` must have known inputs (a Sequential or functional "
            "model, or a model built on one input shape). Received: model "
            f"'{model.name}'"
        )
    return [
        _Spec(
            getattr(t, "name", f"input_{i}"),
            tuple(t.shape),
            str(getattr(t, "dtype", "float32")),
        )
        for i, t in enumerate(inputs)
    ]


def _built_inputs(model):
    """Symbolic inputs of the shape a model without a graph (subclassed)
    was built with, batch axis unknown; none if it has no such shape."""
    shape = (model.get_build_config() or {}).get("input_shape")
    if not isinstance(shape, (tuple, list)) or not all(
        d is None or isinstance(d, int) for d in shape
    ):
        return []
    return [keras.KerasTensor((None, *shape[1:]), name="input")]


def _call_args(inputs, specs):
    return inputs[0] if len(specs) == 1 else list(inputs)


def _as_inputs(value, specs, argument):
    """A list of arrays, one per model input, each with a batch axis."""
    if isinstance(value, dict):
        missing = [s.name for s in specs if s.name not in value]
        if missing:
            raise ValueError(
                f"`{argument}` has no entry for the inputs {missing}. "
                f"Received keys: {sorted(value)}"
            )
        value = [value[s.name] for s in specs]
    elif len(specs) == 1:
        value = [value]
    if not isinstance(value, (list, tuple)) or len(value) != len(specs):
        raise ValueError(
            f"`{argument}` must give {len(specs)} input arrays. Received: "
            f"{argument}={type(value).__name__}"
        )
    arrays = []
    for spec, array in zip(specs, value):
        array = np.asarray(array, dtype=spec.dtype)
        if array.ndim == len(spec.shape) - 1:
            array = array[None]
        expected = spec.shape[1:]
        if array.ndim != len(spec.shape) or any(
            e is not None and e != a for e, a in zip(expected, array.shape[1:])
        ):
            raise ValueError(
                f"`{argument}` does not fit input '{spec.name}' of shape "
                f"{spec.shape}. Received shape: {array.shape}"
            )
        arrays.append(array)
    return arrays


def _features(element, specs):
    if isinstance(element, dict):
        return element
    if isinstance(element, (list, tuple)):
        if len(specs) == 1 or isinstance(element[0], (list, tuple, dict)):
            return element[0]
        if len(element) == len(specs):
            return list(element)
    return element


def _examples(data, specs):
    """A function returning iterators of single examples (lists of arrays)."""
    if isinstance(data, (str, bytes)) or data is None:
        raise TypeError(
            "`representative_data` must be an array, a tf.data.Dataset or a "
            f"callable returning an iterable. Received: {data!r}"
        )

    def iterable():
        source = data() if callable(data) else data
        if isinstance(source, np.ndarray) or hasattr(source, "__array__"):
            source = [_as_inputs(source, specs, "representative_data")]
        for element in source:
            if hasattr(element, "numpy") or isinstance(element, np.ndarray):
                element = [element]
            if hasattr(element, "items"):
                element = {k: np.asarray(v) for k, v in element.items()}
            batch = _as_inputs(
                keras.tree.map_structure(np.asarray, _features(element, specs)),
                specs,
                "representative_data",
            )
            for row in range(batch[0].shape[0]):
                yield [a[row : row + 1] for a in batch]

    return iterable


def _default_sample(specs, examples, sample_size):
    if examples is not None:
        rows = []
        for example in examples():
            rows.append(example)
            if len(rows) == sample_size:
                break
        if not rows:
            raise ValueError("`representative_data` yielded no examples.")
        return [np.concatenate(parts) for parts in zip(*rows)]
    rng = np.random.default_rng(0)
    sample = []
    for spec in specs:
        if any(d is None for d in spec.shape[1:]):
            raise ValueError(
                f"Input '{spec.name}' has an unknown dimension {spec.shape}: "
                "pass `sample` or `representative_data`."
            )
        shape = (sample_size,) + spec.shape[1:]
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            sample.append(rng.integers(0, 2, size=shape).astype(spec.dtype))
        else:
            sample.append(rng.standard_normal(shape).astype(spec.dtype))
    return sample


def _convert(model, sparse, quantize, examples, specs, calibration_steps):
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


class _Runner:
    """Runs the converted bytes in LiteRT on one batch, Keras input order."""

    def __init__(self, interpreter_lib, content, specs, sample, num_threads):
        resolver = interpreter_lib.OpResolverType
        try:
            self._setup(interpreter_lib, content, specs, sample, num_threads)
            self.op_resolver = "AUTO"
        except RuntimeError:
            # XNNPACK fails to prepare sparse quantized layers (ECOSYSTEM.md).
            self._setup(
                interpreter_lib,
                content,
                specs,
                sample,
                num_threads,
                resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            )
            self.op_resolver = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"

    def _setup(self, lib, content, specs, sample, num_threads, resolver=None):
        kwargs = {"model_content": content, "num_threads": num_threads}
        if resolver is not None:
            kwargs["experimental_op_resolver_type"] = resolver
        interpreter = lib.Interpreter(**kwargs)
        inputs, outputs = _io_details(interpreter, specs)
        for detail, array in zip(inputs, sample):
            interpreter.resize_tensor_input(detail["index"], array.shape)
        interpreter.allocate_tensors()
        # Details again: quantization parameters and shapes after resizing.
        by_index = {d["index"]: d for d in interpreter.get_input_details()}
        self.inputs = [by_index[d["index"]] for d in inputs]
        by_index = {d["index"]: d for d in interpreter.get_output_details()}
        self.outputs = [by_index[d["index"]] for d in outputs]
        self.interpreter = interpreter
        for detail, array in zip(self.inputs, sample):
            interpreter.set_tensor(detail["index"], _quantize(array, detail))
        interpreter.invoke()

    def run(self):
        return [
            _dequantize(self.interpreter.get_tensor(d["index"]), d)
            for d in self.outputs
        ]

    def latency_ms(self, repeats):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.interpreter.invoke()
            times.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(times)


def _io_details(interpreter, specs):
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


def _quantize(array, detail):
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        q = np.round(array / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)
    return array.astype(dtype)


def _dequantize(array, detail):
    scale, zero_point = detail["quantization"]
    if np.issubdtype(array.dtype, np.integer) and scale:
        return (array.astype("float32") - zero_point) * scale
    return array.astype("float32")


def _write_atomically(path, content):
    with _atomic(path, "wb") as file:
        file.write(content)
