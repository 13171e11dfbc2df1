"""Imports of optional dependencies that name the extra providing them."""

import importlib

__all__ = [
    "require",
]


def require(module, extra, what=None):
    """Imports `module`, or raises an ImportError naming the extra to install.

    Call it inside the function that needs the module, never at import
    time, so that `import keras_tdrop` works without the extras.

    Args:
        module: str, the dotted module name (`"matplotlib"`).
        extra: str, the keras-tdrop extra that installs it (`"plots"`).
        what: optional str, what needs the module, for the message.

    Returns:
        The imported module.

    Example:
    >>> tfds = require("tensorflow_datasets", "data", "Loading MNIST")
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        needs = f"{what} needs" if what else "This needs"
        raise ImportError(
            f"{needs} `{module}`, which could not be imported ({error}). "
            f'Install it with `pip install "keras-tdrop[{extra}]"`.',
            name=module,
        ) from error
