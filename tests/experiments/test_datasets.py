import os
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from keras_tdrop.experiments import datasets
from tests.tolerance import assert_close

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = os.environ.get("TFDS_DATA_DIR") or str(
    REPO.parent / "shared" / "tensorflow_datasets"
)
# The well-known class counts of the MNIST test split.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
HAS_NETWORK = datasets.has_network


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Nothing in these tests may download."""
    monkeypatch.setattr(datasets, "has_network", lambda *a, **k: False)


def test_load_mnist_batches():
    ds = datasets.load(
        "mnist", "train", batch_size=64, data_dir=DATA_DIR, limit=200
    )
    batches = list(ds.as_numpy_iterator())
    assert [len(y) for _, y in batches] == [64, 64, 64, 8]
    x, y = batches[0]
    assert x.shape == (64, 28, 28, 1)
    assert x.dtype == np.float32
    assert y.dtype == np.int32
    images = np.concatenate([b[0] for b in batches])
    assert images.min() == 0.0
    assert images.max() == 1.0
    # uint8 / 255 exactly: every value is a multiple of 1/255.
    assert_close(images * 255, np.round(images * 255), atol=1e-4)


def test_load_numpy_mnist_test_label_counts():
    x, y = datasets.load_numpy("mnist", "test", data_dir=DATA_DIR)
    assert x.shape == (10000, 28, 28, 1)
    assert np.bincount(y, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert 0.12 < x.mean() < 0.14  # MNIST's mean pixel is 0.1307


def test_load_numpy_limit_matches_load():
    x, y = datasets.load_numpy("mnist", "train", data_dir=DATA_DIR, limit=300)
    assert x.shape == (300, 28, 28, 1)
    assert y.shape == (300,)
    assert np.bincount(y, minlength=10).sum() == 300
    assert set(np.unique(y)) == set(range(10))
    ds = datasets.load(
        "mnist", "train", batch_size=100, data_dir=DATA_DIR, limit=300
    )
    np.testing.assert_array_equal(
        np.concatenate([b for _, b in ds.as_numpy_iterator()]), y
    )


def _epoch_labels(ds, epochs):
    return [
        np.concatenate([y for _, y in ds.as_numpy_iterator()])
        for _ in range(epochs)
    ]


def test_shuffle_is_reproducible_and_reshuffles():
    def make(seed):
        return datasets.load(
            "mnist",
            "train",
            batch_size=50,
            data_dir=DATA_DIR,
            shuffle=True,
            seed=seed,
            limit=400,
        )

    first, second = _epoch_labels(make(7), 2), _epoch_labels(make(7), 2)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], first[1])
    other = _epoch_labels(make(8), 1)[0]
    assert not np.array_equal(first[0], other)
    # Shuffling permutes: the same examples, as a multiset.
    _, unshuffled = datasets.load_numpy(
        "mnist", "train", data_dir=DATA_DIR, limit=400
    )
    np.testing.assert_array_equal(np.sort(first[0]), np.sort(unshuffled))


def test_load_cifar10_shapes():
    x, y = datasets.load_numpy("cifar10", "test", data_dir=DATA_DIR, limit=20)
    assert x.shape == (20, 32, 32, 3)
    assert x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y.min() >= 0 and y.max() <= 9


def test_missing_data_fails_fast_and_says_where(tmp_path):
    empty = tmp_path / "empty"
    start = time.perf_counter()
    with pytest.raises(datasets.DataUnavailableError) as info:
        datasets.load("mnist", "train", data_dir=str(empty))
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert str(empty) in message
    assert "TFDS_DATA_DIR" in message
    assert isinstance(info.value, FileNotFoundError)
    assert not empty.exists()


def test_missing_data_uses_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert datasets.resolve_data_dir() == str(tmp_path)
    with pytest.raises(
        datasets.DataUnavailableError, match=re.escape(str(tmp_path))
    ):
        datasets.load_numpy("cifar10", "test")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "imagenet"}, "Received: name='imagenet'"),
        ({"name": "mnist", "limit": 0}, "Received: limit=0"),
        ({"name": "mnist", "batch_size": 0}, "Received: batch_size=0"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        datasets.load(data_dir=DATA_DIR, **kwargs)


def test_has_network():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert HAS_NETWORK(("127.0.0.1", port), timeout=2.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    start = time.perf_counter()
    assert not HAS_NETWORK(("127.0.0.1", closed), timeout=1.0)
    assert time.perf_counter() - start < 2.0


def _crops(image, pad=4):
    """Every pad-crop-flip of `image`: {(dy, dx, flipped): array}."""
    h, w, _ = image.shape
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    out = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy : dy + h, dx : dx + w]
            out[(dy, dx, False)] = crop
            out[(dy, dx, True)] = crop[:, ::-1]
    return out


def _which_crop(augmented, image):
    found = [
        key
        for key, crop in _crops(image).items()
        if np.array_equal(crop, augmented)
    ]
    assert found, "the augmented image is no pad-crop-flip of the original"
    return found[0]


def test_augment_image_is_a_pad_crop_flip():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    image = rng.random((8, 8, 3)).astype("float32") + 0.1  # no zero pixel
    keys = []
    for i in range(300):
        out = datasets.augment_image(
            tf.constant(image), tf.constant([i, 7], "int64")
        ).numpy()
        keys.append(_which_crop(out, image))
        again = datasets.augment_image(
            tf.constant(image), tf.constant([i, 7], "int64")
        ).numpy()
        np.testing.assert_array_equal(out, again)
    flips = sum(k[2] for k in keys)
    # Binomial(300, 0.5): mean 150, sd 8.7; 4 sd either side.
    assert 115 <= flips <= 185
    offsets = {(k[0], k[1]) for k in keys}
    assert len(offsets) > 60  # of 81, uniform: ~79 expected in 300 draws
    assert {k[0] for k in keys} == set(range(9))


def test_load_cifar10_augmented_examples_match_originals():
    x, y = datasets.load_numpy("cifar10", "train", data_dir=DATA_DIR, limit=24)
    ds = datasets.load(
        "cifar10",
        "train",
        batch_size=10,
        data_dir=DATA_DIR,
        limit=24,
        augment=True,
        seed=3,
    )
    epochs = [
        np.concatenate([b for b, _ in ds.as_numpy_iterator()]) for _ in range(2)
    ]
    labels = np.concatenate([b for _, b in ds.as_numpy_iterator()])
    np.testing.assert_array_equal(labels, y)
    keys = [[_which_crop(a, o) for a, o in zip(e, x)] for e in epochs]
    assert keys[0] != keys[1]  # every epoch draws new crops
    again = datasets.load(
        "cifar10",
        "train",
        batch_size=10,
        data_dir=DATA_DIR,
        limit=24,
        augment=True,
        seed=3,
    )
    np.testing.assert_array_equal(
        np.concatenate([b for b, _ in again.as_numpy_iterator()]), epochs[0]
    )


def test_load_standardize_matches_numpy():
    x, _ = datasets.load_numpy("cifar10", "test", data_dir=DATA_DIR, limit=12)
    ds = datasets.load(
        "cifar10",
        "test",
        batch_size=5,
        data_dir=DATA_DIR,
        limit=12,
        standardize=True,
    )
    got = np.concatenate([b for b, _ in ds.as_numpy_iterator()])
    flat = x.reshape(len(x), -1).astype("float64")
    std = np.maximum(flat.std(axis=1), 1 / np.sqrt(flat.shape[1]))
    expected = (flat - flat.mean(axis=1, keepdims=True)) / std[:, None]
    assert_close(got.reshape(len(x), -1), expected, atol=1e-4)
    assert_close(got.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    assert_close(got.std(axis=(1, 2, 3)), 1, atol=1e-4)
