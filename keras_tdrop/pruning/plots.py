"""Plots of reports, as PNG files. Needs matplotlib
(`pip install "keras-tdrop[plots]"`), imported only when a plot is drawn."""

from keras_tdrop.atomic_write import atomic_write
from keras_tdrop.optional_imports import require
from keras_tdrop.pruning.tables import check_sweeps

__all__ = ["XLABELS", "figure", "plot_sweeps", "save_png"]

XLABELS = {
    "weight": "pruned weights per column (%)",
    "unit": "pruned units per layer (%)",
}
MARKERS = "osD^v<>pP*X"


def figure(size, what=None):
    """A matplotlib Figure of `size` inches on an Agg canvas (no pyplot,
    so no global backend is changed); without matplotlib, an ImportError
    that says `what` needs it and how to install it."""
    require("matplotlib", "plots", what)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path):
    """Writes `fig` to `path` as a PNG file (100 dpi), atomically."""
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    return path


def plot_sweeps(
    sweeps, path, metric="accuracy", title=None, xlabel="pruned (%)"
):
    """Plots `metric` against the prune fraction, one curve per model, to a
    PNG file (atomically), with a band of ± sd where the rows have
    `<metric>_sd` (mean rows over seeds).

    `sweeps` is `{name: rows}`, one plot; or `{targeting: {name: rows}}`
    with targeting `"weight"` or `"unit"`: one plot each, side by side,
    titled by their targeting (`title` then names the whole figure).

    Example:
    >>> plot_sweeps({"plain": plain_rows, "targeted": td_rows}, "sweep.png")
    >>> plot_sweeps({"weight": {"td": w_rows}, "unit": {"td": u_rows}}, "b.png")
    """
    check_sweeps(sweeps)
    panels = all(isinstance(v, dict) for v in sweeps.values())
    if not panels:
        sweeps = {None: sweeps}
    size = (6, 4) if len(sweeps) == 1 else (5.5 * len(sweeps), 4)
    fig = figure(size, "plot_sweeps")
    axes = fig.subplots(1, len(sweeps), squeeze=False)[0]
    for ax, (targeting, curves) in zip(axes, sweeps.items()):
        for i, (name, rows) in enumerate(curves.items()):
            if rows:
                _curve(ax, rows, metric, name, MARKERS[i % len(MARKERS)])
        ax.set_xlabel(XLABELS.get(targeting, xlabel))
        ax.set_ylabel(f"test {metric}" if metric == "accuracy" else metric)
        if panels:
            ax.set_title(f"{targeting} pruning")
        elif title:
            ax.set_title(title)
        if "acc" in metric:
            ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8 if panels else None)
    if panels and title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def _curve(ax, rows, metric, name, marker):
    x = [row["fraction"] * 100 for row in rows]
    y = [row[metric] for row in rows]
    (line,) = ax.plot(x, y, f"{marker}-", label=name)
    sd = [row.get(f"{metric}_sd") or 0.0 for row in rows]
    if any(sd):
        ax.fill_between(
            x,
            [m - s for m, s in zip(y, sd)],
            [m + s for m, s in zip(y, sd)],
            color=line.get_color(),
            alpha=0.25,
            linewidth=0,
        )
