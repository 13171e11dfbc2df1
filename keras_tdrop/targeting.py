"""Which elements of a kernel are the least important.

One set of pure `keras.ops` functions decides it, for training (what targeted
dropout may drop) and for pruning (what is removed afterwards). A kernel of any
rank is viewed as a matrix `[rows, cols]` with `rows = prod(shape[:-1])` and
`cols = shape[-1]` (output units or filters).

Three semantics, selected by `reference`:

- `None` (default): exactly k targeted per column, ties broken by index;
  survivors unscaled in training; inference unchanged.
- `"t2t"` (Tensor2Tensor): `|w| <=` the k-th smallest, so k+1 (more on
  ties); survivors scaled by 1/(1-rate); inference prunes round(k*rate)+1.
- `"for_ai"` (for-ai/TD): `|w| <` the k-th smallest, so k (fewer on ties);
  survivors unscaled; inference prunes the k targeted (conv layers).

with `k = floor(target_rate * n)` and `n` the column length (weight) or the
number of columns (unit).

With `reference=None` two more choices shape training (the references fix
their own): `noise` (`"element"`: one Bernoulli draw per targeted weight;
`"column"`: one per targeted column, so unit targeting drops whole units, as
the paper's text reads; `None`, the default, is `"column"` for unit targeting
and `"element"` otherwise, chosen by measurement in `docs/reproducing.md`)
and `rescale` (survivors of the targeted set scaled by 1/(1-rate), so that
the expected kernel is the dense kernel).
"""

import math

import keras
import numpy as np
from keras import ops
from keras import random

from keras_tdrop import keras_adapter

__all__ = [
    "NOISES",
    "REFERENCES",
    "TARGETINGS",
    "apply_drop",
    "check_noise",
    "check_rate",
    "check_reference",
    "check_targeting",
    "draw_drop",
    "inference_count",
    "matrix_shape",
    "resolve_noise",
    "target_count",
    "targeted_dropout",
    "targeted_mask",
    "targeted_rows",
]

TARGETINGS = ("weight", "unit")
REFERENCES = (None, "t2t", "for_ai")
NOISES = ("element", "column")

# floor(rate * n) computed in float32 would turn 0.29 * 100 into 28 or 29
# depending on rounding; a relative guard of 2**-20 makes every backend agree.
_COUNT_GUARD = 1.0 + 2.0**-20


def check_targeting(targeting):
    if targeting not in TARGETINGS:
        raise ValueError(
            f"`targeting` must be one of {TARGETINGS}. "
            f"Received: targeting={targeting!r}"
        )


def check_reference(reference):
    if reference not in REFERENCES:
        raise ValueError(
            f"`reference` must be one of {REFERENCES}. "
            f"Received: reference={reference!r}"
        )


def resolve_noise(noise, targeting, reference):
    """The noise `noise=None` stands for: `"column"` (whole units) for unit
    targeting with `reference=None`, `"element"` otherwise; any other value
    is returned as given."""
    if noise is not None:
        return noise
    if targeting == "unit" and reference is None:
        return "column"
    return "element"


def check_noise(noise, rescale, targeting, reference):
    """Checks `noise` and `rescale` against the targeting and reference."""
    if noise is not None and noise not in NOISES:
        raise ValueError(
            f"`noise` must be None or one of {NOISES}. "
            f"Received: noise={noise!r}"
        )
    if not isinstance(rescale, bool):
        raise TypeError(
            f"`rescale` must be a bool. Received: rescale={rescale!r}"
        )
    noise = resolve_noise(noise, targeting, reference)
    if noise == "column" and targeting != "unit":
        raise ValueError(
            "`noise='column'` (one draw per targeted unit) needs "
            f"targeting='unit'. Received: targeting={targeting!r}"
        )
    if reference is not None and (noise != "element" or rescale):
        raise ValueError(
            f"reference={reference!r} fixes its own noise and scaling (one "
            "draw per element; survivors scaled only by 't2t'). Received: "
            f"noise={noise!r}, rescale={rescale!r}"
        )


def check_rate(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"`{name}` must be a float in [0, 1]. Received: {name}={value!r}"
        )
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(
            f"`{name}` must be a float in [0, 1]. Received: {name}={value!r}"
        )


def _check_number_rates(**rates):
    """`check_rate` for Python numbers; tensors and variables (ramped
    knobs) are checked where they are made."""
    for name, value in rates.items():
        if not hasattr(value, "shape"):
            check_rate(name, value)


def matrix_shape(shape):
    """`(rows, cols)` of a kernel shape viewed as a matrix."""
    shape = tuple(shape)
    if len(shape) == 0 or any(d is None for d in shape):
        raise ValueError(
            "A kernel must have a known, non-scalar shape. "
            f"Received: shape={shape}"
        )
    return math.prod(shape[:-1]), shape[-1]


def target_count(target_rate, n):
    """`k = floor(target_rate * n)`, as an int32 tensor clipped to [0, n]."""
    rate = ops.cast(target_rate, "float32")
    k = ops.floor(rate * float(n) * _COUNT_GUARD)
    return ops.cast(ops.clip(k, 0.0, float(n)), "int32")


def _partial_selection():
    """Whether a selection op with a tensor `k` can pick the k-th value here.

    TensorFlow outside XLA selects in linear time (`NthElement`); XLA
    (JAX, TensorFlow's `jit_compile`) needs a static `k`, and PyTorch a
    Python int (a host synchronisation): they count instead.
    """
    return (
        keras.backend.backend() == "tensorflow"
        and not keras_adapter.in_xla_context()
    )


def _kth_smallest(scores, j):
    """The j-th smallest (0-based) entry of each row of `scores` ([c, n])."""
    if _partial_selection():
        import tensorflow as tf

        kth = tf.raw_ops.NthElement(input=scores, n=ops.convert_to_tensor(j))
        return ops.expand_dims(kth, -1)
    # Scores are >= 0, and the bit patterns of non-negative float32 values,
    # read as int32, are in the same order as the values: 31 counting passes
    # settle the k-th value bit by bit, exactly, in linear time and with
    # static shapes (a full sort is several times slower under XLA).
    bits = ops.view(ops.cast(scores, "float32"), "int32")

    def settle_bit(_, carry):
        low, step = carry
        candidate = low + step
        count = ops.sum(
            ops.cast(ops.less(bits, candidate), "int32"), axis=-1, keepdims=True
        )
        low = ops.where(ops.less_equal(count, j), candidate, low)
        return low, ops.floor_divide(step, 2)

    start = (
        ops.zeros((scores.shape[0], 1), "int32"),
        ops.convert_to_tensor(2**30, "int32"),
    )
    low, _ = ops.fori_loop(0, 31, settle_bit, start)
    return ops.view(low, "float32")


def _lowest_by_key(scores, k):
    """Mask of the k lowest of `scores` along its first axis, ties by index.

    TensorFlow outside XLA only. Each score's float32 bit pattern (ordered
    as the values, scores being >= 0) and its index make one unique int64
    key, so one selection (the k-th key, a sentinel appended so that any k
    in [0, n] is a valid index) gives exactly k per column without a pass
    over the ties.
    """
    import tensorflow as tf

    n = scores.shape[0]
    rank = len(scores.shape)
    index = np.arange(n, dtype="int64").reshape((n,) + (1,) * (rank - 1))
    keys = tf.cast(tf.bitcast(scores, tf.int32), tf.int64) * n + index
    by_row = tf.transpose(keys) if rank == 2 else keys
    pad = [[0, 0]] * (rank - 1) + [[0, 1]]
    by_row = tf.pad(by_row, pad, constant_values=np.iinfo("int64").max)
    return keys < tf.raw_ops.NthElement(input=by_row, n=k)


def _lowest(scores, k, reference):
    """Boolean mask of the k lowest entries of each row of `scores`.

    `scores` is `[c, n]`: one row per column of the kernel (weight
    targeting) or a single row of column norms (unit targeting), so that
    selections and running sums run along the contiguous last axis.
    """
    n = scores.shape[-1]
    if reference is None:
        kth = _kth_smallest(scores, ops.maximum(k - 1, 0))
        below = ops.less(scores, kth)
        ties = ops.equal(scores, kth)
        room = k - ops.sum(ops.cast(below, "int32"), axis=-1, keepdims=True)
        excess = ops.sum(ops.cast(ties, "int32"), axis=-1, keepdims=True)

        def by_index():
            rank = ops.cumsum(ops.cast(ties, "int32"), axis=-1)
            return ops.logical_and(ties, ops.less_equal(rank, room))

        # Usually only the k-th value itself sits at the threshold; ranking
        # the ties by index (a running sum) is needed only when there are
        # more of them than room.
        tied = ops.cond(
            ops.any(ops.greater(excess, room)), by_index, lambda: ties
        )
        chosen = ops.logical_or(below, tied)
        return ops.logical_and(chosen, ops.greater(k, 0))
    # The references read the threshold at sorted index k, which does not
    # exist when k == n; every element is targeted then.
    kth = _kth_smallest(scores, ops.minimum(k, n - 1))
    if reference == "t2t":
        chosen = ops.less_equal(scores, kth)
    else:
        chosen = ops.less(scores, kth)
    return ops.logical_or(chosen, ops.greater_equal(k, n))


def targeted_rows(scores, k, reference=None):
    """Boolean mask of the k targeted entries of each row of `scores`.

    The selection under one reference's semantics (see the module
    docstring), row by row: `scores` is `[c, n]` non-negative importances
    (for example the column norms of c kernels, one kernel per row) and
    `k` an int or scalar int tensor in [0, n].
    """
    check_reference(reference)
    k = ops.cast(k, "int32")
    if reference is None and _partial_selection():
        # The key selection runs along the first axis.
        return ops.transpose(_lowest_by_key(ops.transpose(scores), k))
    return _lowest(scores, k, reference)


def targeted_mask(
    kernel, target_rate, targeting="weight", reference=None, count=None
):
    """Boolean mask of the targeted (least important) elements of `kernel`.

    Args:
        kernel: tensor or variable of rank >= 1; the last axis holds the
            output columns.
        target_rate: float or scalar tensor, gamma, the proportion targeted.
        targeting: `"weight"` (lowest |w| in each column) or `"unit"`
            (whole columns with the lowest L2 norm).
        reference: `None`, `"t2t"` or `"for_ai"`; see the module docstring.
        count: optional int or scalar tensor overriding
            `floor(target_rate * n)`.

    Returns:
        A boolean tensor of `kernel`'s shape, True where targeted.
    """
    check_targeting(targeting)
    check_reference(reference)
    if count is None:
        _check_number_rates(target_rate=target_rate)
    mask = _targeted(kernel, target_rate, targeting, reference, count)
    return ops.broadcast_to(mask, tuple(kernel.shape))


def _targeted(kernel, target_rate, targeting, reference, count=None):
    """`targeted_mask`, of `kernel`'s shape or `(cols,)` (unit targeting)."""
    shape = tuple(kernel.shape)
    rows, cols = matrix_shape(shape)
    matrix = ops.reshape(ops.cast(kernel, "float32"), (rows, cols))
    if targeting == "weight":
        scores, n = ops.abs(matrix), rows
    else:
        scores = ops.sqrt(ops.sum(ops.square(matrix), axis=0))
        n = cols
    k = target_count(target_rate, n) if count is None else count
    k = ops.cast(k, "int32")
    if reference is None and _partial_selection():
        mask = _lowest_by_key(scores, k)
    elif targeting == "weight":
        mask = ops.transpose(_lowest(ops.transpose(scores), k, reference))
    else:
        mask = _lowest(ops.reshape(scores, (1, cols)), k, reference)
        return ops.reshape(mask, (cols,))
    return mask if targeting == "unit" else ops.reshape(mask, shape)


def inference_count(target_rate, rate, n):
    """Tensor2Tensor's inference pruning count: round(k * rate), half even."""
    k = ops.cast(target_count(target_rate, n), "float32")
    return ops.cast(ops.round(k * ops.cast(rate, "float32")), "int32")


def targeted_dropout(
    kernel,
    rate,
    target_rate,
    targeting="weight",
    reference=None,
    training=False,
    prune_at_inference=None,
    seed=None,
    noise=None,
    rescale=False,
):
    """Applies targeted dropout to a kernel and returns the new kernel.

    In training, each targeted element is zeroed with probability `rate`
    (fresh noise per call; one draw per element, or with `noise="column"`,
    unit targeting's default, one per targeted column); untargeted elements
    are returned unchanged.
    `reference="t2t"` and `rescale=True` scale the surviving targeted
    elements by `1 / (1 - rate)`. At inference the kernel
    is returned unchanged unless `prune_at_inference` (default: True for
    `"t2t"` and `"for_ai"`, False otherwise), in which case the targeted set
    is zeroed (for `"t2t"`: the set of `round(k * rate)`).

    Args:
        kernel: tensor of rank >= 1.
        rate: alpha, the drop probability of targeted elements.
        target_rate: gamma, the proportion of elements targeted.
        targeting: `"weight"` or `"unit"`.
        reference: `None`, `"t2t"` or `"for_ai"`.
        training: bool.
        prune_at_inference: bool or None (the reference's own choice).
        seed: a `keras.random.SeedGenerator` or int for the noise.
        noise: `"element"` (one draw per targeted weight), `"column"`
            (one per targeted column; unit targeting only), or `None`
            (the default): `"column"` for unit targeting with
            `reference=None`, `"element"` otherwise.
        rescale: whether surviving targeted elements are scaled by
            `1 / (1 - rate)` (reference `None` only; `"t2t"` always does).
    """
    check_targeting(targeting)
    check_reference(reference)
    check_noise(noise, rescale, targeting, reference)
    noise = resolve_noise(noise, targeting, reference)
    _check_number_rates(rate=rate, target_rate=target_rate)
    matrix_shape(kernel.shape)
    if not training:
        if prune_at_inference is None:
            prune_at_inference = reference is not None
        if not prune_at_inference:
            return kernel
        count = None
        if reference == "t2t":
            rows, cols = matrix_shape(kernel.shape)
            n = rows if targeting == "weight" else cols
            count = inference_count(target_rate, rate, n)
        mask = _targeted(kernel, target_rate, targeting, reference, count)
        return ops.where(mask, ops.zeros_like(kernel), kernel)

    mask = _targeted(kernel, target_rate, targeting, reference)
    shape = kernel.shape if noise == "element" else None
    drop = draw_drop(mask, rate, seed, shape)
    return apply_drop(kernel, mask, drop, rate, reference == "t2t" or rescale)


def draw_drop(mask, rate, seed, shape=None):
    """The targeted elements dropped this step: `mask` and a fresh
    Bernoulli(`rate`) draw of `shape` (default: `mask`'s; a larger shape
    that `mask` broadcasts to draws one value per element)."""
    shape = tuple(mask.shape if shape is None else shape)
    draws = random.uniform(shape, dtype="float32", seed=seed)
    return ops.logical_and(mask, ops.less(draws, ops.cast(rate, "float32")))


def apply_drop(kernel, mask, drop, rate, rescale):
    """`kernel` with the `drop` elements zeroed and, with `rescale`, the
    other `mask` (targeted) elements scaled by `1 / (1 - rate)`; `mask` and
    `drop` broadcast to the kernel's shape."""
    if not rescale:
        return ops.where(drop, ops.zeros_like(kernel), kernel)
    # Scaled in float32 and zeroed after, so that a float16 kernel at rate
    # ~1 gets neither 0 * inf = NaN nor an overflowing survivor scale.
    rate = ops.cast(rate, "float32")
    keep_prob = ops.maximum(1.0 - rate, 1e-12)
    scaled = ops.cast(kernel, "float32") * ops.where(mask, 1.0 / keep_prob, 1.0)
    scaled = ops.where(drop, ops.zeros_like(scaled), scaled)
    return ops.cast(scaled, kernel.dtype)
