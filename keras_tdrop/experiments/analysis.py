"""The paper's analysis of pruning: Eq. 3 and the theta*H*theta matrix.

Pruning a set of weights moves the parameters by `-d` (`d_i = theta_i` for
a removed weight, 0 otherwise); to second order the loss changes by

    dE = E(theta - d) - E(theta) ~ -g.d + 1/2 d'Hd          (Eq. 3)

with g the gradient and H the Hessian of the mean loss over a dataset.
`loss_change` computes both terms with one Hessian-vector product per batch
(H is never formed) next to the measured change; `theta_h_theta` forms
`theta_i H_ij theta_j` for a small block of weights (Figure 1) and
`plot_theta_h_theta` draws it. Gradients come from nested
`tf.GradientTape`s, so this module needs the TensorFlow backend.

Reference: Gomez et al., 2019, Sec. 3 (Eq. 3), Sec. 5.1, Table 1, Fig. 1.
"""

import keras
import numpy as np

from keras_tdrop.optional_imports import require
from keras_tdrop.pruning.masks import compute_masks
from keras_tdrop.wrapping import clone_with_weights

__all__ = [
    "hessian_block",
    "loss_change",
    "mean_loss",
    "plot_theta_h_theta",
    "pruning_delta",
    "theta_h_theta",
]


def _tf():
    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(
            "keras_tdrop.experiments.analysis computes Hessian-vector "
            "products with tf.GradientTape and needs the TensorFlow backend. "
            "Received: "
            f"backend={keras.backend.backend()!r}"
        )
    import tensorflow as tf

    return tf


def _batches(data, batch_size=500):
    """`(x, y)` numpy batches from a dataset of pairs or an `(x, y)` tuple."""
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    for x, y in data:
        yield x, y


def _default_loss(loss):
    if loss is not None:
        return loss
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _variables(model, paths):
    by_path = {v.path: v for v in model.trainable_variables}
    missing = [p for p in paths if p not in by_path]
    if missing:
        raise ValueError(
            "Every path must name a trainable variable of the model "
            f"(e.g. {sorted(by_path)[:4]}). Received: {missing}"
        )
    return [by_path[p] for p in paths]


def pruning_delta(model, fraction, targeting="weight", exclude=None):
    """`{variable path: d}` of magnitude pruning at `fraction`: the value
    of every weight `compute_masks` removes, 0 elsewhere."""
    masks = compute_masks(model, fraction, targeting, exclude)
    values = {v.path: v for v in model.variables}
    return {
        path: keras.ops.convert_to_numpy(values[path].value) * (1 - mask)
        for path, mask in masks.items()
    }


def mean_loss(model, data, loss=None):
    """The mean of `loss` (default cross-entropy on logits) over `data`,
    in inference mode."""
    loss = _default_loss(loss)
    total, count = 0.0, 0
    for x, y in _batches(data):
        value = loss(y, model(x, training=False))
        n = int(np.shape(x)[0])
        total += float(keras.ops.convert_to_numpy(value)) * n
        count += n
    return total / count


def loss_change(model, data, deltas, loss=None):
    """Eq. 3's estimate of the change of loss from `theta` to `theta - d`,
    and the measured change.

    Args:
        model: a built Keras model (left unchanged).
        data: a dataset of `(x, y)` batches or an `(x, y)` tuple of arrays.
        deltas: `{variable path: d}` (see `pruning_delta`); variables not
            named have `d = 0`.
        loss: a Keras loss (default sparse cross-entropy on logits); the
            mean over the dataset is the E of Eq. 3.

    Returns:
        A dict: `loss` E(theta), `gradient_term` -g.d, `hessian_term`
        1/2 d'Hd, `estimate` |-g.d + 1/2 d'Hd| (the paper's |dE|), and
        `measured` |E(theta - d) - E(theta)|.

    Example:
    >>> d = pruning_delta(model, 0.75)
    >>> loss_change(model, (x_test, y_test), d)["estimate"]
    """
    tf = _tf()
    loss = _default_loss(loss)
    paths = list(deltas)
    variables = _variables(model, paths)
    d = [
        tf.constant(deltas[p], dtype=v.dtype) for p, v in zip(paths, variables)
    ]
    grad_dot, hess_dot, total, count = 0.0, 0.0, 0.0, 0
    for x, y in _batches(data):
        n = int(np.shape(x)[0])
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                value = loss(y, model(x, training=False))
            grads = inner.gradient(value, variables)
            g_dot_d = tf.add_n(
                [tf.reduce_sum(g * di) for g, di in zip(grads, d)]
            )
        hvp = outer.gradient(g_dot_d, variables)
        d_h_d = tf.add_n([tf.reduce_sum(h * di) for h, di in zip(hvp, d)])
        total += float(value) * n
        grad_dot += float(g_dot_d) * n
        hess_dot += float(d_h_d) * n
        count += n
    base = total / count
    gradient_term = -grad_dot / count
    hessian_term = 0.5 * hess_dot / count
    # The clone's variable paths may differ from the model's (a cloned
    # Sequential gets a new name), so theta - d is set by position.
    pruned = clone_with_weights(model)
    pruned.set_weights(
        [
            keras.ops.convert_to_numpy(v.value) - deltas.get(v.path, 0)
            for v in model.weights
        ]
    )
    return {
        "loss": base,
        "gradient_term": gradient_term,
        "hessian_term": hessian_term,
        "estimate": abs(gradient_term + hessian_term),
        "measured": abs(mean_loss(pruned, data, loss) - base),
    }


def hessian_block(model, data, path, indices, loss=None):
    """The explicit Hessian of the mean loss over `data` restricted to the
    entries `indices` (flat indices) of variable `path`: an `(n, n)` array.

    Costs n Hessian-vector products per batch: for small blocks and for
    checking `loss_change` on small networks.
    """
    tf = _tf()
    loss = _default_loss(loss)
    (variable,) = _variables(model, [path])
    indices = np.asarray(indices, dtype="int64").ravel()
    size = int(np.prod(variable.shape))
    if indices.size == 0 or indices.min() < 0 or indices.max() >= size:
        raise ValueError(
            f"`indices` must be flat indices in [0, {size}) of {path!r}. "
            f"Received: indices={indices.tolist()[:8]}..."
        )
    block, count = np.zeros((indices.size, indices.size)), 0
    for x, y in _batches(data):
        n = int(np.shape(x)[0])
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                value = loss(y, model(x, training=False))
            grad = inner.gradient(value, variable)
            selected = tf.gather(tf.reshape(grad, [-1]), indices)
        rows = outer.jacobian(selected, variable)
        rows = tf.reshape(rows, [indices.size, -1])
        block += tf.gather(rows, indices, axis=1).numpy() * n
        count += n
    return block / count


def theta_h_theta(model, data, path, indices, loss=None):
    """Figure 1's matrix `theta_i H_ij theta_j` for entries `indices` of
    variable `path`, ordered by |theta| descending (the kept weights first).

    Returns `(matrix, order)`, `order` the flat indices in matrix order.
    The sum of the block of the weights to be pruned (lower right) is the
    Hessian term of Eq. 3 for pruning them, times 2.
    """
    (variable,) = _variables(model, [path])
    theta = keras.ops.convert_to_numpy(variable.value).ravel()
    indices = np.asarray(indices, dtype="int64").ravel()
    order = indices[np.argsort(-np.abs(theta[indices]), kind="stable")]
    hessian = hessian_block(model, data, path, order, loss)
    values = theta[order].astype("float64")
    return values[:, None] * hessian * values[None, :], order


def plot_theta_h_theta(matrices, path, kept=None, titles=None):
    """Heat maps of `theta*H*theta` matrices side by side, as Figure 1.

    Args:
        matrices: one matrix or a list of them.
        path: the PNG to write.
        kept: optional int (or one per matrix), the number of kept weights
            (first rows/columns); a line marks the boundary.
        titles: optional titles.
    """
    require("matplotlib", "plots", "plot_theta_h_theta")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import SymLogNorm
    from matplotlib.figure import Figure

    if isinstance(matrices, np.ndarray):
        matrices = [matrices]
    kept = kept if isinstance(kept, (list, tuple)) else [kept] * len(matrices)
    titles = titles or [None] * len(matrices)
    fig = Figure(figsize=(5 * len(matrices), 4.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    scale = max(float(np.abs(m).max()) for m in matrices) or 1.0
    for ax, matrix, k, title in zip(axes, matrices, kept, titles):
        image = ax.imshow(
            matrix,
            cmap="RdBu_r",
            norm=SymLogNorm(scale * 1e-3, vmin=-scale, vmax=scale),
        )
        if k:
            for line in (ax.axhline, ax.axvline):
                line(k - 0.5, color="black", lw=0.8)
        if title:
            ax.set_title(title, fontsize=9)
        ax.set_xlabel("weight (by |theta|, kept first)")
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
