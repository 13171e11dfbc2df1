"""The package's one atomic writer: a file appears whole or not at all.

Every file the package writes (CSV, JSON, PNG, `.keras`, `.tflite`) goes
through here, so that an interrupted run never leaves a half-written file
where a complete one was, and the file gets the permissions `open()` would
give it (the process umask is applied by the OS, never read or changed).
"""

import contextlib
import os
import secrets

__all__ = ["atomic_path", "atomic_write"]


def _sibling(path, suffix):
    """A fresh name next to `path`, ending in `suffix` (some writers, such
    as `keras.Model.save`, insist on their extension)."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    token = secrets.token_hex(4)
    return os.path.join(folder, f".{name}.{os.getpid()}.{token}{suffix}")


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yields a temporary path next to `path` for a writer that takes a
    file name; renames it over `path` when the block succeeds, removes it
    when the block fails.

    Args:
        path: the final file.
        suffix: the temporary name's ending; default `path`'s extension.

    Example:

    >>> with atomic_path("model.keras") as tmp:  # doctest: +SKIP
    ...     model.save(tmp)
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"The folder to write into does not exist: {folder}. "
            f"Received: path={path!r}"
        )
    if suffix is None:
        suffix = os.path.splitext(path)[1] or ".part"
    tmp = _sibling(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path, mode="w", **kwargs):
    """Opens a temporary file next to `path` like `open(path, mode)`; it
    replaces `path` only when the block succeeds (flushed and synced first).

    Args:
        path: the final file.
        mode: `"w"` or `"wb"` (with `open`'s other keyword arguments, such
            as `newline=""` for CSV).

    Example:

    >>> with atomic_write("results.json") as f:  # doctest: +SKIP
    ...     json.dump(results, f)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"`mode` must be 'w' or 'wb'. Received: mode={mode!r}")
    with atomic_path(path, suffix=".part") as tmp:
        # 0o666 before the umask, as open() creates files.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
