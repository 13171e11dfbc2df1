"""A model's inputs for export: their specs, sample batches, calibration
examples."""

import dataclasses

import keras
import numpy as np

__all__ = [
    "InputSpec",
    "as_inputs",
    "call_args",
    "calibration_examples",
    "default_sample",
    "fixed_specs",
    "input_specs",
]


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One input of a Keras model: its name, shape (batch axis first) and
    dtype."""

    name: str
    shape: tuple
    dtype: str


def input_specs(model):
    """The `InputSpec`s of a model, in its input order.

    A model without a graph (subclassed) gives the shape it was built
    with, batch axis unknown.
    """
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
        InputSpec(
            getattr(t, "name", f"input_{i}"),
            tuple(t.shape),
            str(getattr(t, "dtype", "float32")),
        )
        for i, t in enumerate(inputs)
    ]


def _built_inputs(model):
    shape = (model.get_build_config() or {}).get("input_shape")
    if not isinstance(shape, (tuple, list)) or not all(
        d is None or isinstance(d, int) for d in shape
    ):
        return []
    return [keras.KerasTensor((None, *shape[1:]), name="input")]


def call_args(inputs, specs):
    """A list of input arrays as the model is called: one array, or the
    list."""
    return inputs[0] if len(specs) == 1 else list(inputs)


def as_inputs(value, specs, argument):
    """A list of arrays, one per model input, each with a batch axis.

    `value` is one array (one input), a list in input order or a dict by
    input name; `argument` names it in the errors.
    """
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


def calibration_examples(data, specs):
    """A function returning iterators of single examples (lists of arrays,
    one row each) from `representative_data`: an array, a `tf.data.Dataset`
    (batched or not, of `x` or `(x, y)`) or a callable returning an
    iterable of those."""
    if isinstance(data, (str, bytes)) or data is None:
        raise TypeError(
            "`representative_data` must be an array, a tf.data.Dataset or a "
            f"callable returning an iterable. Received: {data!r}"
        )

    def iterable():
        source = data() if callable(data) else data
        if isinstance(source, np.ndarray) or hasattr(source, "__array__"):
            source = [as_inputs(source, specs, "representative_data")]
        for element in source:
            if hasattr(element, "numpy") or isinstance(element, np.ndarray):
                element = [element]
            if hasattr(element, "items"):
                element = {k: np.asarray(v) for k, v in element.items()}
            batch = as_inputs(
                keras.tree.map_structure(np.asarray, _features(element, specs)),
                specs,
                "representative_data",
            )
            for row in range(batch[0].shape[0]):
                yield [a[row : row + 1] for a in batch]

    return iterable


def default_sample(specs, examples, sample_size):
    """The first `sample_size` calibration examples as one batch, or
    without examples a seeded batch (standard normal; 0/1 for integer
    inputs)."""
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
                "pass `input_shape` to fix it, or `sample` or "
                "`representative_data` to check the file on."
            )
        shape = (sample_size,) + spec.shape[1:]
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            sample.append(rng.integers(0, 2, size=shape).astype(spec.dtype))
        else:
            sample.append(rng.standard_normal(shape).astype(spec.dtype))
    return sample


def fixed_specs(specs, input_shape):
    """`specs` with the shapes `input_shape` gives (batch axis free),
    checked against the model's known dimensions."""

    def refuse(why):
        raise ValueError(
            f"`input_shape` {why}. Received: input_shape={input_shape!r}"
        )

    def is_shape(value):
        return isinstance(value, (tuple, list)) and all(
            isinstance(d, int) and not isinstance(d, bool) for d in value
        )

    if isinstance(input_shape, dict):
        missing = [s.name for s in specs if s.name not in input_shape]
        if missing or len(input_shape) != len(specs):
            refuse(
                f"must have one entry per input {[s.name for s in specs]} "
                f"(missing: {missing})"
            )
        shapes = [input_shape[s.name] for s in specs]
    elif len(specs) == 1 and is_shape(input_shape):
        shapes = [input_shape]
    elif isinstance(input_shape, (tuple, list)) and len(input_shape) == len(
        specs
    ):
        shapes = list(input_shape)
    else:
        refuse(
            "must be a tuple of ints (the input's shape without the batch "
            "axis), or for several inputs a list or dict of them"
        )
    fixed = []
    for spec, shape in zip(specs, shapes):
        if not is_shape(shape) or any(d < 1 for d in shape):
            refuse(f"for input '{spec.name}' must be a tuple of ints >= 1")
        expected = spec.shape[1:]
        if len(shape) != len(expected) or any(
            e is not None and e != d for e, d in zip(expected, shape)
        ):
            refuse(
                f"for input '{spec.name}' must fit its shape {spec.shape} "
                "without the batch axis"
            )
        fixed.append(InputSpec(spec.name, (None, *shape), spec.dtype))
    return fixed
