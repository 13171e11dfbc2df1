"""Training interrupted mid-ramp resumes exactly. Backend-agnostic."""

import keras
import numpy as np
import pytest

from keras_tdrop import RampingCallback
from keras_tdrop import TargetedDropout
from keras_tdrop import TriangularDropout
from keras_tdrop.pruning import compute_masks

RAMP = (12, 30)  # 10 steps per epoch: the ramp runs through epoch 3.


class Interrupt(Exception):
    pass


class Recorder(keras.callbacks.Callback):
    """(step, alpha, gamma) of td1 before every batch; may interrupt."""

    def __init__(self, stop_at=None, snapshot_at=20):
        super().__init__()
        self.seen = []
        self.stop_at = stop_at
        self.snapshot_at = snapshot_at
        self.snapshot = None

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step == self.stop_at:
            raise Interrupt(step)
        if step == self.snapshot_at:
            self.snapshot = [np.array(w) for w in self.model.get_weights()]
        layer = self.model.get_layer("td1")
        self.seen.append((step, layer.current_rate, layer.current_target_rate))


def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = TargetedDropout(
        keras.layers.Dense(8, activation="relu"),
        rate=0.6,
        target_rate=0.8,
        seed=1,
        name="td1",
    )(inputs)
    x = TriangularDropout(name="tri")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    return model


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 6)).astype("float32"), rng.normal(
        size=(40, 2)
    ).astype("float32")


def fit(model, epochs, callbacks):
    x, y = data()
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[RampingCallback(ramp_steps=RAMP), *callbacks],
    )


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run's (step, alpha, gamma) and step-20 weights."""
    recorder = Recorder()
    fit(build(), 4, [recorder])
    return recorder


def test_backup_and_restore_resumes_the_ramp_exactly(tmp_path, reference):

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    first = build()
    before = Recorder(stop_at=25)  # in epoch 3, mid-ramp
    with pytest.raises(Interrupt):
        fit(first, 4, [backup, before])
    resumed = build()  # a new process would start from scratch like this
    after = Recorder()
    fit(
        resumed,
        4,
        [keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), after],
    )

    # Restored at the end of epoch 2 (step 20): the ramp goes on from there
    # with exactly the alpha and gamma the uninterrupted run had.
    assert after.seen[0][0] == 20
    assert 0 < after.seen[0][1] < 0.6 and 0 < after.seen[0][2] < 0.8
    assert (
        before.seen + after.seen[5:]
        == reference.seen[:25] + reference.seen[25:]
    )
    assert after.seen == reference.seen[20:]
    # ... and exactly the weights (and optimizer state) it had at step 20.
    # (The dropout noise after that differs: Keras does not save a
    # SeedGenerator's state, for keras.layers.Dropout neither.)
    for a, b in zip(reference.snapshot, after.snapshot):
        np.testing.assert_array_equal(a, b)


def test_save_and_load_mid_ramp_continues_with_the_same_values(
    tmp_path, reference
):

    first = build()
    fit(first, 2, [])  # stops at step 20, mid-ramp
    td = first.get_layer("td1")
    saved = (td.current_rate, td.current_target_rate)
    path = tmp_path / "mid.keras"
    first.save(path)
    loaded = keras.saving.load_model(path)
    td = loaded.get_layer("td1")
    assert (td.current_rate, td.current_target_rate) == saved
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 20
    after = Recorder()
    x, y = data()
    loaded.fit(
        x,
        y,
        batch_size=4,
        epochs=4,
        initial_epoch=2,
        shuffle=False,
        verbose=0,
        callbacks=[RampingCallback(ramp_steps=RAMP), after],
    )
    assert after.seen == reference.seen[20:]
    for a, b in zip(reference.snapshot, after.snapshot):
        np.testing.assert_array_equal(a, b)


def test_pruning_masks_are_reproducible_from_a_saved_model(tmp_path):
    model = build()
    fit(model, 2, [])
    path = tmp_path / "trained.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for targeting in ("weight", "unit"):
        a = compute_masks(model, 0.5, targeting=targeting)
        b = compute_masks(loaded, 0.5, targeting=targeting)
        assert len(a) == len(b) == 1
        for mask_a, mask_b in zip(a.values(), b.values()):
            assert np.array_equal(mask_a, mask_b)
            assert 0 < mask_a.sum() < mask_a.size
