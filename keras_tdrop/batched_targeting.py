"""Targeted dropout of many kernels in one step: one selection per batch.

A network of many small layers (MobileNet, NASNet) pays for targeted
dropout per kernel: every kernel adds its own selection, noise and drop to
the training graph, which lengthens graph building and adds per-op work to
each step. The selections are independent per output column (weight
targeting) or per kernel (unit targeting), so kernels that share a size can
be selected together without changing what is targeted:

- weight targeting: kernels with the same column length (`rows`, see
  `matrix_shape`) are viewed as matrices and concatenated along their
  columns; each column still selects its own `floor(gamma * rows)`;
- unit targeting: kernels with the same number of columns have their
  column norms stacked, one row per kernel; each row still selects its own
  `floor(gamma * cols)` columns.

`ModelTargetedDropout` drops its kernels this way. The noise is drawn once
per batch, so the random stream differs from calling `targeted_dropout` on
each kernel; its distribution does not.
"""

import numpy as np
from keras import ops

from keras_tdrop import targeting as targeting_lib

__all__ = [
    "batches",
    "targeted_dropout_many",
]


def batches(kernels, targeting):
    """Indices of `kernels` grouped by what their selection shares.

    Args:
        kernels: tensors (or anything with `shape` and `dtype`) of rank
            >= 1.
        targeting: `"weight"` (grouped by column length) or `"unit"`
            (grouped by number of columns); kernels of different dtypes
            are never grouped.

    Returns:
        A list of index lists, in order of first appearance.
    """
    targeting_lib.check_targeting(targeting)
    found = {}
    for i, kernel in enumerate(kernels):
        rows, cols = targeting_lib.matrix_shape(kernel.shape)
        size = rows if targeting == "weight" else cols
        found.setdefault((size, str(kernel.dtype)), []).append(i)
    return list(found.values())


def targeted_dropout_many(
    kernels,
    rate,
    target_rate,
    targeting="weight",
    reference=None,
    seed=None,
    noise=None,
    rescale=False,
):
    """Training-time targeted dropout of several kernels, batched.

    Each returned kernel is what `targeted_dropout(kernel, ...,
    training=True)` gives for it: the same targeted set, each targeted
    element (or with `noise="column"`, unit) zeroed with probability
    `rate`, the same rescaling. Kernels are batched as the module
    docstring says, so a model's training graph holds one selection per
    distinct kernel size instead of one per kernel.

    Args:
        kernels: list of tensors of rank >= 1.
        rate, target_rate, targeting, reference, noise, rescale: as in
            `targeted_dropout`.
        seed: a `keras.random.SeedGenerator` (or int) for the noise.

    Returns:
        The list of dropped kernels, in the order of `kernels`.
    """
    targeting_lib.check_targeting(targeting)
    targeting_lib.check_reference(reference)
    targeting_lib.check_noise(noise, rescale, targeting, reference)
    noise = targeting_lib.resolve_noise(noise, targeting, reference)
    dropped = [None] * len(kernels)
    for batch in batches(kernels, targeting):
        members = [kernels[i] for i in batch]
        if len(members) == 1:
            values = [
                targeting_lib.targeted_dropout(
                    members[0],
                    rate,
                    target_rate,
                    targeting=targeting,
                    reference=reference,
                    training=True,
                    seed=seed,
                    noise=noise,
                    rescale=rescale,
                )
            ]
        elif targeting == "weight":
            values = _weight_batch(
                members, rate, target_rate, reference, seed, rescale
            )
        else:
            values = _unit_batch(
                members, rate, target_rate, reference, seed, noise, rescale
            )
        for i, value in zip(batch, values):
            dropped[i] = value
    return dropped


def _matrices(kernels):
    return [
        ops.reshape(k, targeting_lib.matrix_shape(k.shape)) for k in kernels
    ]


def _weight_batch(kernels, rate, target_rate, reference, seed, rescale):
    """Kernels of one column length, side by side: one `targeted_dropout`."""
    matrices = _matrices(kernels)
    dropped = targeting_lib.targeted_dropout(
        ops.concatenate(matrices, axis=1),
        rate,
        target_rate,
        targeting="weight",
        reference=reference,
        training=True,
        seed=seed,
        rescale=rescale,
    )
    cuts = np.cumsum([m.shape[1] for m in matrices])[:-1].tolist()
    parts = ops.split(dropped, cuts, axis=1)
    return [ops.reshape(p, k.shape) for p, k in zip(parts, kernels)]


def _unit_batch(kernels, rate, target_rate, reference, seed, noise, rescale):
    """Kernels of one width: their column norms stacked, one selection."""
    matrices = _matrices(kernels)
    cols = matrices[0].shape[1]
    norms = ops.stack(
        [
            ops.sqrt(ops.sum(ops.square(ops.cast(m, "float32")), axis=0))
            for m in matrices
        ]
    )
    count = targeting_lib.target_count(target_rate, cols)
    masks = targeting_lib.targeted_rows(norms, count, reference)
    if noise == "column":
        column_drops = targeting_lib.draw_drop(masks, rate, seed)
    dropped = []
    for i, (kernel, matrix) in enumerate(zip(kernels, matrices)):
        if noise == "column":
            drop = column_drops[i]
        else:
            drop = targeting_lib.draw_drop(masks[i], rate, seed, matrix.shape)
        value = targeting_lib.apply_drop(
            matrix, masks[i], drop, rate, reference == "t2t" or rescale
        )
        dropped.append(ops.reshape(value, kernel.shape))
    return dropped
