"""MNIST and CIFAR-10 from TensorFlow Datasets, as `tf.data` or numpy.

Loading never hangs offline: a dataset that is not prepared in the data
directory is downloaded only when the download host answers within a few
seconds; otherwise `DataUnavailableError` says where the data was looked for
and how to get it.
"""

import os
import socket
import threading

import numpy as np
import tensorflow as tf

from keras_tdrop.optional_imports import require

__all__ = [
    "DATASETS",
    "DataUnavailableError",
    "augment_image",
    "check_limit",
    "has_network",
    "load",
    "load_numpy",
    "resolve_data_dir",
]

DATASETS = ("mnist", "cifar10")
DOWNLOAD_HOST = ("storage.googleapis.com", 443)


class DataUnavailableError(FileNotFoundError):
    """The dataset is not prepared locally and cannot be downloaded."""


def resolve_data_dir(data_dir=None):
    """The TFDS data directory in use: `data_dir`, `$TFDS_DATA_DIR`, or
    TFDS' default (`~/tensorflow_datasets`)."""
    if data_dir is None:
        data_dir = os.environ.get("TFDS_DATA_DIR") or None
    if data_dir is None:
        tfds = require("tensorflow_datasets", "data", __name__)
        data_dir = tfds.core.constants.DATA_DIR
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def has_network(host=DOWNLOAD_HOST, timeout=3.0):
    """Whether a TCP connection to `host` opens within `timeout` seconds.

    Runs in a daemon thread so that a resolver that never answers cannot
    hold the caller longer than `timeout`.
    """
    result = []

    def connect():
        try:
            socket.create_connection(host, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _check_name(name):
    if name not in DATASETS:
        raise ValueError(
            f"`name` must be one of {DATASETS}. Received: name={name!r}"
        )


def check_limit(limit):
    """Raises a ValueError unless `limit` is None or an int >= 1."""
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
    ):
        raise ValueError(
            f"`limit` must be None or an int >= 1. Received: limit={limit!r}"
        )


def _prepared_builder(name, data_dir):
    """A TFDS builder for `name`, and whether it must download first."""
    tfds = require("tensorflow_datasets", "data", __name__)

    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder, False
    if not has_network():
        raise DataUnavailableError(
            f"Dataset '{name}' is not prepared in {data_dir} (looked for "
            f"{builder.data_dir}) and {DOWNLOAD_HOST[0]} cannot be reached "
            "to download it. Set TFDS_DATA_DIR (or pass --data-dir) to a "
            "folder holding prepared TFDS data, or run once with internet "
            "access so that TFDS downloads it there."
        )
    return builder, True


def _to_float(images, labels):
    return tf.cast(images, tf.float32) / 255.0, tf.cast(labels, tf.int32)


def augment_image(image, seed, pad=4):
    """Pads by `pad` zeros, crops back at random and flips left-right at
    random (CIFAR-10's standard augmentation), with a stateless `seed`
    (a shape-(2,) int tensor): the same seed gives the same image."""
    height, width = image.shape[0], image.shape[1]
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2)
    )
    padded = tf.image.resize_with_crop_or_pad(
        image, height + 2 * pad, width + 2 * pad
    )
    cropped = tf.image.stateless_random_crop(
        padded, tf.shape(image), seed=crop_seed
    )
    return tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed)


def _augment_pair(pair, seed):
    image, label = pair
    return augment_image(image, seed), label


def _standardize(image, label):
    return tf.image.per_image_standardization(image), label


def load(
    name,
    split="train",
    batch_size=128,
    data_dir=None,
    shuffle=False,
    seed=None,
    limit=None,
    augment=False,
    standardize=False,
):
    """Returns a batched, prefetched `tf.data.Dataset` of `(image, label)`.

    Images are float32 in [0, 1] with shape `(height, width, channels)`,
    labels int32. Examples are cached in memory after the first pass, so
    later epochs do not decode again. Two datasets made with the same
    arguments and `seed` yield the same batches in the same order (and the
    same augmentations); every epoch draws new ones.

    Args:
        name: `"mnist"` or `"cifar10"`.
        split: a TFDS split, e.g. `"train"`, `"test"` or `"train[:10%]"`.
        batch_size: int, examples per batch (the last batch may be smaller).
        data_dir: TFDS data directory; default `$TFDS_DATA_DIR`, else TFDS'
            default.
        shuffle: bool, whether to reshuffle the examples every epoch.
        seed: optional int for the shuffle order.
        limit: optional int, keep only the first `limit` examples.
        augment: bool, pad 4 + random crop + random horizontal flip of
            every example (`augment_image`), as the references train.
        standardize: bool, per-image standardisation
            (`tf.image.per_image_standardization`: zero mean, unit
            variance per image) after augmentation.

    Example:
    >>> train = load("mnist", "train", batch_size=128, shuffle=True, seed=0)
    >>> cifar = load("cifar10", augment=True, standardize=True, shuffle=True)
    >>> model.fit(train, epochs=2)
    """
    _check_name(name)
    check_limit(limit)
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or (batch_size < 1)
    ):
        raise ValueError(
            "`batch_size` must be an int >= 1. "
            f"Received: batch_size={batch_size!r}"
        )
    tfds = require("tensorflow_datasets", "data", __name__)

    data_dir = resolve_data_dir(data_dir)
    _, download = _prepared_builder(name, data_dir)
    ds = tfds.load(
        name,
        split=split,
        data_dir=data_dir,
        as_supervised=True,
        download=download,
    )
    if limit is not None:
        ds = ds.take(limit)
    ds = ds.cache()
    if shuffle:
        buffer = int(ds.cardinality())
        if buffer < 1:
            buffer = 10_000
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if not (augment or standardize):
        ds = ds.batch(batch_size).map(
            _to_float, num_parallel_calls=tf.data.AUTOTUNE
        )
        return ds.prefetch(tf.data.AUTOTUNE)
    ds = ds.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        seeds = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=True
        ).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            _augment_pair, num_parallel_calls=tf.data.AUTOTUNE
        )
    if standardize:
        ds = ds.map(_standardize, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_numpy(name, split="train", data_dir=None, limit=None):
    """Returns `(images, labels)` as numpy arrays, in the dataset's order.

    Images are float32 in [0, 1], labels int32; see `load` for the arguments.

    Example:
    >>> x_test, y_test = load_numpy("mnist", "test", limit=1000)
    """
    ds = load(name, split, batch_size=1024, data_dir=data_dir, limit=limit)
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)
