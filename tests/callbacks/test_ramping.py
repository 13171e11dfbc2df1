import keras
import numpy as np
import pytest

from keras_tdrop import RampingCallback
from keras_tdrop import TargetedDropout
from keras_tdrop import targeted_dropout_layers
from tests.tolerance import approx


def td_model(rate=0.8, target_rate=0.6, keep=None, steps_per_execution=1):
    inputs = keras.Input((6,))
    x = TargetedDropout(
        keras.layers.Dense(5, activation="relu"),
        rate=rate,
        target_rate=target_rate,
        keep_per_column=keep,
        seed=1,
        name="td1",
    )(inputs)
    x = TargetedDropout(
        keras.layers.Dense(4),
        rate=rate / 2,
        target_rate=target_rate / 2,
        seed=2,
        name="td2",
    )(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.compile(
        keras.optimizers.SGD(0.01),
        "mse",
        steps_per_execution=steps_per_execution,
    )
    return model


def data(n=40):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype("float32"), rng.normal(size=(n, 2))


def fit(model, x, y, *callbacks, epochs=1):
    return model.fit(
        x, y, batch_size=4, epochs=epochs, verbose=0, callbacks=list(callbacks)
    )


def piecewise(step, first, total):
    alpha = min(1.0, step / total)
    gamma = 0.95 * min(1.0, step / first) + 0.05 * np.clip(
        (step - first) / (total - first), 0, 1
    )
    return alpha, gamma


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        layer = self.model.get_layer("td1")
        self.seen.append((step, layer.current_rate, layer.current_target_rate))


def test_fit_moves_layer_variables_along_the_ramp():
    model = td_model()
    recorder = Recorder()
    x, y = data(40)  # 10 steps per epoch at batch 4
    history = fit(
        model, x, y, RampingCallback(ramp_steps=(20, 40)), recorder, epochs=6
    )
    assert len(recorder.seen) == 60
    for step, rate, target in recorder.seen:
        alpha, gamma = piecewise(step, 20, 40)
        assert rate == approx(0.8 * alpha, abs=1e-6)
        assert target == approx(0.6 * gamma, abs=1e-6)
    td2 = model.get_layer("td2")
    assert td2.current_rate == approx(0.4)
    assert td2.current_target_rate == approx(0.3)
    alpha9, gamma9 = piecewise(9, 20, 40)
    expected_rate = np.mean([0.8 * alpha9, 0.4 * alpha9])
    assert history.history["td_rate"][0] == approx(expected_rate, abs=1e-6)
    assert history.history["td_target_rate"][-1] == approx(0.45, abs=1e-6)


def test_no_retracing_when_rates_change():
    traces = []

    class Counting(TargetedDropout):
        def call(self, *args, **kwargs):
            traces.append(1)
            return super().call(*args, **kwargs)

    inputs = keras.Input((6,))
    layer = Counting(keras.layers.Dense(3), rate=0.5, target_rate=0.5)
    model = keras.Model(inputs, layer(inputs))
    model.compile("sgd", "mse")
    x, _ = data(40)
    traces.clear()
    model.fit(
        x,
        np.zeros((40, 3)),
        batch_size=4,
        epochs=3,
        verbose=0,
        callbacks=[RampingCallback(ramp_steps=(10, 30))],
    )
    assert layer.current_rate == approx(0.5 * 29 / 30)  # last step: 29
    assert (
        len(traces) <= 2
    )  # one trace of the train step (two on some backends)


def test_ramp_fraction_resolves_from_planned_length():
    model = td_model()
    recorder = Recorder()
    x, y = data(40)
    fit(
        model,
        x,
        y,
        RampingCallback(ramp_fraction=(0.25, 0.5)),
        recorder,
        epochs=4,
    )
    # 40 planned steps: gamma 95% at step 10, 100% and alpha 100% at step 20.
    for step, rate, target in recorder.seen:
        alpha, gamma = piecewise(step, 10, 20)
        assert rate == approx(0.8 * alpha, abs=1e-6)
        assert target == approx(0.6 * gamma, abs=1e-6)


@pytest.mark.parametrize(
    "schedule, ramp_fraction, expected",
    [
        # One number for the piecewise ramp (as the demo passes it): the
        # ramp ends at that share of training, gamma's first phase at half.
        ("piecewise", 0.5, lambda s: piecewise(s, 10, 20)),
        ("piecewise", 0.25, lambda s: piecewise(s, 5, 10)),
        ("linear", 0.5, lambda s: (min(1.0, s / 20),) * 2),
    ],
)
def test_single_number_ramp_fraction(schedule, ramp_fraction, expected):
    model = td_model()
    recorder = Recorder()
    x, y = data(40)
    callback = RampingCallback(schedule, ramp_fraction=ramp_fraction)
    fit(model, x, y, callback, recorder, epochs=4)
    assert [step for step, _, _ in recorder.seen] == list(range(40))
    for step, rate, target in recorder.seen:
        alpha, gamma = expected(step)
        assert rate == approx(0.8 * alpha, abs=1e-6)
        assert target == approx(0.6 * gamma, abs=1e-6)
    assert recorder.seen[-1][1:] == approx((0.8, 0.6))


def test_resume_mid_ramp_from_saved_model(tmp_path):
    x, y = data(40)
    model = td_model()
    fit(model, x, y, RampingCallback("linear", ramp_steps=40))
    path = str(tmp_path / "mid.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.get_layer("td1")
    assert layer.current_rate == approx(0.8 * 9 / 40)
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 10
    recorder = Recorder()
    fit(loaded, x, y, RampingCallback("linear", ramp_steps=40), recorder)
    assert recorder.seen[0][0] == 10
    assert recorder.seen[0][1] == approx(0.8 * 10 / 40)


def test_custom_callable_constant_and_overrides():
    x, y = data(8)
    model = td_model()
    fit(model, x, y, RampingCallback(lambda step: (0.5, 0.25)))
    layer = model.get_layer("td1")
    assert (layer.current_rate, layer.current_target_rate) == approx(
        (0.4, 0.15)
    )
    fit(model, x, y, RampingCallback("constant", rate=0.1, target_rate=0.2))
    for layer in targeted_dropout_layers(model):
        assert (layer.current_rate, layer.current_target_rate) == approx(
            (0.1, 0.2)
        )


def test_xtreme_layers_ramp_to_their_own_gamma():
    model = td_model(rate=0.9, keep=2)
    x, y = data(8)
    fit(model, x, y, RampingCallback("constant"))
    assert model.get_layer("td1").current_target_rate == approx(4 / 6)


def test_config_round_trip():
    callback = RampingCallback("piecewise", ramp_steps=(5, 10), rate=0.3)
    clone = RampingCallback.from_config(callback.get_config())
    assert clone.get_config() == callback.get_config()
    assert clone.fractions(5) == approx((0.5, 0.95))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schedule": "cosine"}, r"schedule='cosine'"),
        ({"ramp_steps": (10, 5)}, r"first_steps=10"),
        ({"ramp_steps": (0, 5)}, r"first_steps=0"),
        ({"ramp_fraction": (0.5, 1.5)}, r"ramp_fraction=\(0.5, 1.5\)"),
        ({"ramp_steps": (1, 2), "ramp_fraction": (0.5, 1.0)}, r"not both"),
        ({"schedule": "constant", "ramp_steps": 3}, r"schedule='constant'"),
        ({"rate": 1.2}, r"rate=1.2"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RampingCallback(**kwargs)


def test_ramp_fraction_needs_known_length():
    import tensorflow as tf

    model = td_model()
    x, y = data(8)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat(2)
    dataset = dataset.filter(lambda a, b: True)  # unknown cardinality
    with pytest.raises(ValueError, match=r"steps=None"):
        model.fit(
            dataset,
            epochs=1,
            verbose=0,
            callbacks=[RampingCallback(ramp_fraction=(0.5, 1.0))],
        )


class BatchRecorder(keras.callbacks.Callback):
    """(batch, optimizer step, alpha and gamma of td1 and td2) per call."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        values = []
        for name in ("td1", "td2"):
            layer = self.model.get_layer(name)
            values += [layer.current_rate, layer.current_target_rate]
        self.seen.append((batch, step, *values))


def linear_values(step, total=40):
    """alpha and gamma of td1 and td2 at `step`, as float32 values."""
    f = min(1.0, step / total)
    return [float(np.float32(v * f)) for v in (0.8, 0.6, 0.4, 0.3)]


@pytest.mark.parametrize("steps_per_execution", [1, 3, 4])
def test_values_at_every_step_with_steps_per_execution(steps_per_execution):
    if steps_per_execution > 1 and keras.backend.backend() == "torch":
        pytest.skip("the PyTorch trainer needs steps_per_execution=1")
    # The step is read once per epoch and advanced by the batch index; with
    # steps_per_execution > 1 Keras calls the hook at each execution's first
    # step, and an epoch of 10 steps ends with a shorter execution.
    model = td_model(steps_per_execution=steps_per_execution)
    recorder = BatchRecorder()
    x, y = data(40)  # 10 steps per epoch at batch 4
    fit(
        model,
        x,
        y,
        RampingCallback("linear", ramp_steps=40),
        recorder,
        epochs=3,
    )
    batches = list(range(0, 10, steps_per_execution))
    assert [seen[0] for seen in recorder.seen] == batches * 3
    assert [seen[1] for seen in recorder.seen] == [
        epoch * 10 + batch for epoch in range(3) for batch in batches
    ]
    for _, step, *values in recorder.seen:
        assert values == approx(linear_values(step), rel=1e-6)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 30


def test_a_step_restored_after_train_begin_is_picked_up():
    # Like BackupAndRestore listed after the ramp: the optimizer's step
    # changes after RampingCallback.on_train_begin has read it.
    class SetStep(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.model.optimizer.iterations.assign(17)

    model = td_model()
    recorder = BatchRecorder()
    x, y = data(40)
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[
            RampingCallback("linear", ramp_steps=40),
            SetStep(),
            recorder,
        ],
    )
    assert [seen[1] for seen in recorder.seen] == list(range(17, 37))
    for _, step, *values in recorder.seen:
        assert values == approx(linear_values(step), rel=1e-6)


def test_sets_only_values_that_change(monkeypatch):
    writes = []
    set_rates = TargetedDropout.set_rates

    def counting_set_rates(layer, rate=None, target_rate=None):
        writes.extend(v for v in (rate, target_rate) if v is not None)
        set_rates(layer, rate, target_rate)

    monkeypatch.setattr(TargetedDropout, "set_rates", counting_set_rates)

    class CountingRecorder(BatchRecorder):
        def on_train_batch_begin(self, batch, logs=None):
            super().on_train_batch_begin(batch, logs)
            self.seen[-1] += (len(writes),)

    model = td_model()
    recorder = CountingRecorder()
    x, y = data(40)
    fit(model, x, y, RampingCallback(ramp_steps=(2, 4)), recorder)
    # Four values (alpha and gamma of two layers) change at steps 0-4 and
    # are assigned then; step 0 once, at train begin. The ramp ends at step
    # 4: steps 5-9 assign nothing.
    assert [seen[-1] for seen in recorder.seen] == [4, 8, 12, 16, 20] + [20] * 5
    for _, step, *values, _ in recorder.seen:
        alpha, gamma = piecewise(step, 2, 4)
        expected = [0.8 * alpha, 0.6 * gamma, 0.4 * alpha, 0.3 * gamma]
        assert values == approx(expected, abs=1e-6)
    assert writes[-4:] == approx([0.8, 0.6, 0.4, 0.3])
    # A second fit starts from nothing written: its first step is assigned.
    writes.clear()
    fit(model, x, y, RampingCallback("constant"))
    assert len(writes) == 4


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.distribute"
)
def test_distributed_variables_are_assigned():
    import tensorflow as tf

    with tf.distribute.MirroredStrategy(["CPU:0"]).scope():
        model = td_model()
    recorder = BatchRecorder()
    x, y = data(40)
    fit(model, x, y, RampingCallback("linear", ramp_steps=40), recorder)
    for _, step, *values in recorder.seen:
        assert values == approx(linear_values(step), rel=1e-6)


@pytest.mark.parametrize(
    "dtype, variable_dtype",
    [("float64", "float64"), ("mixed_float16", "float32")],
)
def test_other_variable_dtypes(dtype, variable_dtype):
    inputs = keras.Input((6,))
    layer = TargetedDropout(
        keras.layers.Dense(5, dtype=dtype),
        rate=0.8,
        target_rate=0.6,
        dtype=dtype,
        name="td1",
    )
    outputs = keras.layers.Dense(2, dtype="float32")(layer(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.01), "mse")
    assert layer._current_rate.dtype == variable_dtype
    recorder = Recorder()
    x, y = data(40)
    fit(model, x, y, RampingCallback("linear", ramp_steps=40), recorder)
    for step, rate, target in recorder.seen:
        assert rate == approx(0.8 * step / 40, rel=1e-6)
        assert target == approx(0.6 * step / 40, rel=1e-6)


def test_loss_scale_optimizer_skipped_steps_do_not_advance_the_ramp():
    # A LossScaleOptimizer skips the steps whose gradients are not finite
    # and does not count them: the values must follow its step, not the
    # batch index. Batches 1 and 5 of every epoch have an infinite target.
    model = td_model()
    model.compile(
        keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01)),
        "mse",
    )
    recorder = BatchRecorder()
    x, y = data(40)
    y[4:8] = np.inf
    y[20:24] = np.inf
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[RampingCallback("linear", ramp_steps=40), recorder],
    )
    assert [seen[1] for seen in recorder.seen] == [
        0, 1, 1, 2, 3, 4, 4, 5, 6, 7,
        8, 9, 9, 10, 11, 12, 12, 13, 14, 15,
    ]  # fmt: skip
    for _, step, *values in recorder.seen:
        assert values == approx(linear_values(step), rel=1e-6)


def test_loop_driving_the_callback_without_epoch_begin():
    # As a custom training loop may: on_train_begin, then batch hooks whose
    # index starts again every epoch, with no on_epoch_begin.
    model = td_model()
    x, y = data(12)
    ramp = RampingCallback("linear", ramp_steps=40)
    ramp.set_model(model)
    ramp.on_train_begin()
    seen = []
    for _ in range(3):
        for batch in range(3):
            ramp.on_train_batch_begin(batch)
            step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
            layer = model.get_layer("td1")
            seen.append((step, layer.current_rate))
            model.train_on_batch(x[4 * batch : 4 * batch + 4], y[:4])
    assert [step for step, _ in seen] == list(range(9))
    assert [rate for _, rate in seen] == approx(
        [0.8 * step / 40 for step in range(9)], rel=1e-6
    )


def test_a_fit_shorter_than_the_ramp_says_how_far_it_gets():
    """The reference ramp (20k/40k steps) in a 3-step fit: a warning with
    the fractions reached, none for a ramp that ends inside the fit."""
    import warnings as warnings_lib

    from keras_tdrop import apply_targeted_dropout

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    model = apply_targeted_dropout(
        keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden)),
        rate=0.5,
        target_rate=0.5,
    )
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((12, 4), "float32")
    y = np.zeros((12, 2), "float32")
    with pytest.warns(UserWarning, match=r"alpha reaches 7\.5e-05") as found:
        model.fit(
            x,
            y,
            batch_size=4,
            epochs=1,
            verbose=0,
            callbacks=[RampingCallback()],
        )
    (ours,) = [w for w in found if "RampingCallback" in str(w.message)]
    assert "gamma 0.000142 of" in str(ours.message)
    with warnings_lib.catch_warnings(record=True) as seen:
        warnings_lib.simplefilter("always")
        model.fit(
            x,
            y,
            batch_size=4,
            epochs=1,
            verbose=0,
            callbacks=[RampingCallback(ramp_fraction=(0.5, 1.0))],
        )
    assert not [w for w in seen if "RampingCallback" in str(w.message)]
