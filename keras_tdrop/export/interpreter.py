"""Running `.tflite` files in LiteRT: the interpreter, predictions, latency.

Every interpreter of the package is created by `open_interpreter`, the one
place that falls back from XNNPACK to LiteRT's builtin kernels.
"""

import os
import statistics
import time

import numpy as np

from keras_tdrop.optional_imports import require

__all__ = [
    "dequantize",
    "import_litert",
    "open_interpreter",
    "predict_tflite",
    "quantize",
    "tflite_latency",
    "time_invocations",
]


def import_litert():
    """The `ai_edge_litert.interpreter` module, or a clear `ImportError`."""
    what = "TFLite export (it checks every file in LiteRT)"
    return require("ai_edge_litert.interpreter", "litert", what)


def open_interpreter(model, run, num_threads=None):
    """Creates a LiteRT interpreter and runs `run(interpreter)` on it, once
    without XNNPACK if XNNPACK refuses the file.

    LiteRT applies its default delegate (XNNPACK) when tensors are
    allocated, and XNNPACK fails to prepare some valid files (sparse
    quantized layers, see ECOSYSTEM.md) with a `RuntimeError`. Then a
    second interpreter is created with
    `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES` and `run` is called
    again on it; an error there is raised as it is.

    Args:
        model: a `.tflite` path, or the file's bytes.
        run: a function of the interpreter that allocates its tensors
            (and usually invokes it); its result is returned.
        num_threads: passed to the interpreter.

    Returns:
        `(interpreter, op_resolver, result)`: the interpreter that ran,
        `"AUTO"` or `"BUILTIN_WITHOUT_DEFAULT_DELEGATES"`, and what `run`
        returned.

    Example:
    >>> interpreter, resolver, _ = open_interpreter(
    ...     "model.tflite", lambda i: i.allocate_tensors())
    """
    lib = import_litert()
    kwargs = {"num_threads": num_threads}
    if isinstance(model, (bytes, bytearray)):
        kwargs["model_content"] = bytes(model)
    else:
        kwargs["model_path"] = os.fspath(model)
    try:
        interpreter = lib.Interpreter(**kwargs)
        return interpreter, "AUTO", run(interpreter)
    except RuntimeError:
        resolver = lib.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        interpreter = lib.Interpreter(
            **kwargs, experimental_op_resolver_type=resolver
        )
        return interpreter, resolver.name, run(interpreter)


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
    _, _, outputs = open_interpreter(
        model, lambda i: _predict(i, x, batch_size), num_threads
    )
    return outputs


def tflite_latency(model, x, repeats=50, num_threads=None):
    """Median milliseconds of one LiteRT invocation of a `.tflite` on `x`.

    `model` is a path or the file's bytes; `x` one batch (a list for
    several inputs, in the file's order). The batch is run once before
    the `repeats` timed invocations. Falls back to the interpreter without
    default delegates where XNNPACK refuses the file.

    Example:
    >>> tflite_latency("model.tflite", x_test[:1], repeats=200)
    """
    _check_repeats(repeats)
    rows = len(x[0] if isinstance(x, (list, tuple)) else x)
    interpreter, _, _ = open_interpreter(
        model, lambda i: _predict(i, x, rows), num_threads
    )
    return time_invocations(interpreter, repeats)


def time_invocations(interpreter, repeats):
    """Median milliseconds of `repeats` invocations of a ready interpreter
    (tensors allocated, inputs set)."""
    _check_repeats(repeats)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _check_repeats(repeats):
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(
            f"`repeats` must be an int >= 1. Received: repeats={repeats!r}"
        )


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
            interpreter.set_tensor(detail["index"], quantize(array, detail))
        interpreter.invoke()
        results.append(
            [dequantize(interpreter.get_tensor(d["index"]), d) for d in outputs]
        )
    merged = [np.concatenate(parts) for parts in zip(*results)]
    return merged[0] if len(merged) == 1 else merged


def quantize(array, detail):
    """`array` in the dtype of an input tensor, quantized with its scale
    and zero point where it is an integer tensor."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        q = np.round(array / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)
    return array.astype(dtype)


def dequantize(array, detail):
    """An output tensor's values as float32, dequantized where they are
    integers with a scale."""
    scale, zero_point = detail["quantization"]
    if np.issubdtype(array.dtype, np.integer) and scale:
        return (array.astype("float32") - zero_point) * scale
    return array.astype("float32")
