"""Text tables: one formatter for the rows of every report."""

import numpy as np

__all__ = ["check_sweeps", "compare_sweeps", "format_rows", "format_sweep"]


def format_rows(
    rows,
    columns=None,
    headers=None,
    widths=0,
    label=True,
    missing="",
    gap="  ",
    rule=True,
):
    """Rows of dicts as a fixed-width text table.

    Floats get 4 decimals, booleans read yes/no, strings are shown as
    they are (format a value yourself to show it otherwise).

    Args:
        rows: dicts; a key a row lacks is shown as `missing`.
        columns: the keys shown, in order (default: the first row's).
        headers: optional `{key: title}`; other columns are titled by key.
        widths: the least width of every column, an int or `{key: int}`.
        label: bool, the first column is left-aligned (the others are
            right-aligned).
        missing: the text of None.
        gap: the text between two columns.
        rule: bool, a line of dashes under the titles.

    Example:
    >>> print(format_rows([{"layer": "fc1", "sparsity": 0.5}]))
    """
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    headers = headers or {}
    heads = [str(headers.get(c, c)) for c in columns]
    cells = [[_cell(row.get(c), missing) for c in columns] for row in rows]
    least = (
        widths if isinstance(widths, dict) else dict.fromkeys(columns, widths)
    )
    sizes = [
        max([least.get(c, 0), len(h)] + [len(line[i]) for line in cells])
        for i, (c, h) in enumerate(zip(columns, heads))
    ]

    def line(values):
        return gap.join(
            f"{v:<{w}}" if label and i == 0 else f"{v:>{w}}"
            for i, (v, w) in enumerate(zip(values, sizes))
        ).rstrip()

    lines = [line(heads)]
    if rule:
        lines.append(line(["-" * w for w in sizes]))
    lines.extend(line(values) for values in cells)
    return "\n".join(lines)


def _cell(value, missing):
    if value is None:
        return missing
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}"
    return str(value)


def _check_rows(rows, name, keys):
    if not isinstance(rows, (list, tuple)) or not all(
        isinstance(row, dict) for row in rows
    ):
        raise TypeError(
            f"`{name}` must be a list of sweep rows (dicts). "
            f"Received: {name}={rows!r}"
        )
    for row in rows:
        for key in keys:
            if key not in row:
                raise ValueError(
                    f"Every row of `{name}` needs a {key!r} key. "
                    f"Received: a row with keys {sorted(row)}"
                )


def check_sweeps(sweeps):
    """Raises a ValueError unless `sweeps` is a non-empty dict."""
    if not isinstance(sweeps, dict) or not sweeps:
        raise ValueError(
            "`sweeps` must be a non-empty dict {model name: sweep rows}. "
            f"Received: sweeps={type(sweeps).__name__}"
        )


def compare_sweeps(sweeps, metric="accuracy"):
    """Sweeps of several models side by side: one row per fraction.

    Keys: `prune_fraction`, `sparsity` (or `sparsity_<name>` per model when
    the models' sparsities differ), and `<metric>_<name>` per model.

    Example:
    >>> rows = compare_sweeps({"plain": plain_rows, "targeted": td_rows})
    >>> rows[-1]["accuracy_targeted"]
    """
    check_sweeps(sweeps)
    fractions = None
    for name, rows in sweeps.items():
        _check_rows(rows, f"sweeps[{name!r}]", ("fraction", "sparsity"))
        for row in rows:
            if metric not in row:
                raise ValueError(
                    f"`metric` must be a key of every sweep row; "
                    f"{name!r}'s rows have {sorted(row)}. "
                    f"Received: metric={metric!r}"
                )
        these = [row["fraction"] for row in rows]
        if fractions is None:
            fractions = these
        elif these != fractions:
            raise ValueError(
                "Every sweep must have the same fractions. Received: "
                f"{name!r} has {these}, expected {fractions}"
            )
    names = list(sweeps)
    columns = list(zip(*sweeps.values()))
    shared = all(
        len({row["sparsity"] for row in at_fraction}) == 1
        for at_fraction in columns
    )
    out = []
    for at_fraction in columns:
        row = {"prune_fraction": at_fraction[0]["fraction"]}
        if shared:
            row["sparsity"] = at_fraction[0]["sparsity"]
        for name, swept in zip(names, at_fraction):
            if not shared:
                row[f"sparsity_{name}"] = swept["sparsity"]
            row[f"{metric}_{name}"] = swept[metric]
        out.append(row)
    return out


def format_sweep(sweeps, metric="accuracy"):
    """The paper's table: prune %, sparsity, then `metric` per model.

    `sweeps` is `{name: rows of prune_sweep}`, or one list of rows (then
    every value the sweep measured is a column).

    Example:
    >>> print(format_sweep({"plain": plain_rows, "targeted": td_rows}))
    """
    headers = {}
    if isinstance(sweeps, dict):
        wide = compare_sweeps(sweeps, metric)
        for name in sweeps:
            headers[f"sparsity_{name}"] = f"sp. {name}"
            headers[f"{metric}_{name}"] = name
    else:
        _check_rows(sweeps, "sweeps", ("fraction",))
        wide = [
            {"prune_fraction": r["fraction"]}
            | {k: v for k, v in r.items() if k != "fraction"}
            for r in sweeps
        ]
    for row in wide:
        row["prune_fraction"] = f"{row['prune_fraction'] * 100:.0f}%"
    headers["prune_fraction"] = "prune %"
    return format_rows(
        wide, headers=headers, widths=7, label=False, missing="-"
    )
