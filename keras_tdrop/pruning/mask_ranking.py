"""Choosing the pruned entries of kernels: importances, the lowest per
column or overall, and the lowest in every N:M block.

The choice goes through the targeting functions of training
(`keras_tdrop.targeting.targeted_mask`), so pruning removes what targeted
dropout targets, with the same exact counts and ties.
"""

import numpy as np
from keras import ops

from keras_tdrop import targeting as targeting_lib

__all__ = ["block_masks", "kernel_importances", "keep_mask", "lowest_entries"]


def kernel_importances(kernels, targeting, criterion, scores, seed):
    """Per kernel, non-negative importances (lowest pruned first): a matrix
    `[rows, cols]` for weight targeting, `[cols, 1]` for unit targeting."""
    rng = np.random.default_rng(seed)
    values = []
    for kernel in kernels:
        rows, cols = targeting_lib.matrix_shape(kernel.shape)
        if criterion == "random":
            value = rng.random(rows * cols if targeting == "weight" else cols)
        elif scores is not None:
            value = np.asarray(scores[kernel.path], "float64")
            if targeting == "unit" and value.shape != (cols,):
                value = value.reshape(rows, cols).mean(axis=0)
        else:
            value = ops.convert_to_numpy(kernel.value).astype("float64")
            value = value.reshape(rows, cols)
            if targeting == "weight":
                value = np.abs(value)
            else:
                value = np.sqrt(np.square(value).sum(axis=0))
        shape = (rows, cols) if targeting == "weight" else (cols, 1)
        values.append(np.reshape(value, shape))
    if scores is not None:
        # Importances may be negative (e.g. -log alpha); the targeting
        # functions rank |value|, so shift them all by one offset.
        low = min(v.min() for v in values)
        values = [v - low for v in values]
    return values


def lowest_entries(values, fraction):
    """Boolean mask of the floor(fraction * rows) lowest entries of each
    column of a non-negative matrix, by the targeting functions."""
    pruned = targeting_lib.targeted_mask(
        ops.convert_to_tensor(values.astype("float32")), fraction, "weight"
    )
    return ops.convert_to_numpy(pruned)


def block_masks(kernels, count, block_size, criterion, scores, seed):
    """`{path: mask}`: the `count` lowest of every `block_size` consecutive
    entries along each kernel's input axis pruned (N:M sparsity)."""
    rng = np.random.default_rng(seed)
    masks = {}
    for kernel in kernels:
        shape = tuple(kernel.shape)
        if criterion == "random":
            value = rng.random(shape)
        elif scores is not None:
            value = np.asarray(scores[kernel.path], "float64")
            value = value - value.min()
        else:
            value = np.abs(ops.convert_to_numpy(kernel.value))
        masks[kernel.path] = keep_mask(
            _block_lowest(value, count, block_size), kernel.dtype
        )
    return masks


def _block_lowest(value, count, block_size):
    """`count` lowest of every `block_size` consecutive entries along the
    input axis (-2; the only axis of a rank-1 kernel). A short last block is
    padded in front with zeros that count as removed, as TF-MOT pads."""
    matrix = (
        value.reshape(1, -1) if value.ndim == 1 else np.moveaxis(value, -1, 0)
    )
    lanes = matrix.reshape(-1, matrix.shape[-1])  # [lanes, inputs]
    inputs = lanes.shape[1]
    pad = -inputs % block_size
    padded = np.concatenate([lanes, np.zeros((lanes.shape[0], pad))], axis=1)
    blocks = padded.reshape(lanes.shape[0], -1, block_size)
    if pad:
        # Pads first in the last block, so that ties at zero take them.
        blocks[:, -1] = np.roll(blocks[:, -1], pad, axis=-1)
    columns = blocks.reshape(-1, block_size).T  # [block_size, blocks]
    pruned = targeting_lib.targeted_mask(
        ops.convert_to_tensor(columns.astype("float32")),
        None,
        "weight",
        count=count,
    )
    pruned = ops.convert_to_numpy(pruned).T.reshape(blocks.shape)
    if pad:
        pruned[:, -1] = np.roll(pruned[:, -1], -pad, axis=-1)
    pruned = pruned.reshape(lanes.shape[0], -1)[:, :inputs]
    if value.ndim == 1:
        return pruned.reshape(value.shape)
    pruned = pruned.reshape(matrix.shape)
    return np.moveaxis(pruned, 0, -1)


def keep_mask(pruned, dtype):
    """The mask (1 = keep, 0 = pruned) of `dtype` of a boolean `pruned`."""
    return 1 - np.asarray(ops.convert_to_numpy(pruned)).astype(dtype)
