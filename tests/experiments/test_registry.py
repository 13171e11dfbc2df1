import json

import numpy as np
import pytest

from keras_tdrop import schedules
from keras_tdrop.experiments import registry
from keras_tdrop.experiments import train as train_lib
from keras_tdrop.kernels import iter_layers
from tests.tolerance import approx
from tests.tolerance import assert_close

# The configurations the issue names, with the paper's values.
PAPER_TARGETED = {
    "targeted_weight_0.5_0.5": (0.5, 0.5, "weight"),
    "targeted_weight_0.33_0.75": (0.33, 0.75, "weight"),
    "targeted_weight_0.66_0.75": (0.66, 0.75, "weight"),
    "targeted_weight_0.75_0.9": (0.75, 0.9, "weight"),
    "targeted_unit_0.5_0.5": (0.5, 0.5, "unit"),
    "targeted_unit_0.33_0.75": (0.33, 0.75, "unit"),
    "targeted_unit_0.66_0.75": (0.66, 0.75, "unit"),
    "targeted_unit_0.9_0.75": (0.9, 0.75, "unit"),
    "ramping_weight": (0.99, 0.99, "weight"),
    "ramping_unit": (0.99, 0.9, "unit"),
}


def test_named_experiments_hold_the_papers_settings():
    for name, (rate, target_rate, targeting) in PAPER_TARGETED.items():
        params = registry.get(name)["params"]
        expected = {
            "rate": rate,
            "target_rate": target_rate,
            "targeting": targeting,
        }
        if targeting == "unit":
            # Pinned to the semantics they were run with before the unit
            # default became whole units (`noise=None` -> "column").
            expected["noise"] = "element"
        if name.startswith("ramping"):
            # Evaluated as for-ai/TD evaluates ramped runs: pruned.
            expected["prune_at_inference"] = True
        assert params == expected
    # Every unit experiment names its noise, so no run changes meaning
    # with the package default.
    for name, spec in registry.EXPERIMENTS.items():
        params = spec["params"]
        if spec["method"] == "targeted" and params.get("targeting") == "unit":
            assert params["noise"] in ("element", "column"), name
    assert registry.get("targeted_unit_0.9_0.75_rescale")["params"] == {
        "rate": 0.9,
        "target_rate": 0.75,
        "targeting": "unit",
        "noise": "element",
        "rescale": True,
    }
    # The package's unit default is its own experiment.
    assert registry.get("targeted_unit_0.9_0.75_column")["params"] == {
        "rate": 0.9,
        "target_rate": 0.75,
        "targeting": "unit",
        "noise": "column",
    }
    # Table 7's ramped runs: one per random-prune fraction, alpha 0.99.
    for targeting, gammas in (
        ("weight", (0.5, 0.75, 0.9)),
        ("unit", (0.75, 0.85, 0.95)),
    ):
        for gamma in gammas:
            spec = registry.get(f"ramping_{targeting}_{gamma}")
            assert spec["params"] == {
                "rate": 0.99,
                "target_rate": gamma,
                "targeting": targeting,
                **({"noise": "element"} if targeting == "unit" else {}),
                "prune_at_inference": True,
            }
            assert spec["ramp"] == registry.REFERENCE_RAMP
    for targeting in ("weight", "unit"):
        for rate in (0.25, 0.5):
            spec = registry.get(f"dropout_{targeting}_{rate}")
            assert spec["method"] == "dropout"
            assert spec["params"] == {"rate": rate, "targeting": targeting}
    for keep in (3, 4):
        spec = registry.get(f"xtreme{keep}")
        assert spec["params"]["keep_per_column"] == keep
        assert spec["ramp"] == registry.REFERENCE_RAMP
    assert registry.get("l1_weight")["params"] == {"coefficient": 0.1}
    assert registry.get("l1_unit")["params"] == {"coefficient": 0.01}
    assert registry.get("none")["method"] == "none"
    assert registry.get("ramping_weight")["ramp"] == {
        "schedule": "piecewise",
        "ramp_steps": (20000, 40000),
    }
    random = [n for n in registry.names() if n.startswith("random_prune")]
    assert len(random) == 8
    assert registry.get("toy_targeted")["params"] == {
        "rate": 0.5,
        "target_rate": 0.75,
    }
    toy = registry.get("toy_none")["recipe"]
    assert (toy["learning_rate"], toy["momentum"], toy["epochs"]) == (
        1e-3,
        0.0,
        200,
    )


def test_reference_recipe():
    recipe = registry.get("none")["recipe"]
    assert recipe["learning_rate"] == 0.4
    assert recipe["momentum"] == 0.9
    assert recipe["lr_boundaries"] == (40000, 60000, 80000)
    assert recipe["weight_decay"] == 2e-4
    assert recipe["global_clipnorm"] == 1.0
    assert recipe["augment"] and recipe["standardize"]


def test_experiments_are_json_data():
    for name in registry.names():
        spec = registry.get(name)
        assert json.loads(json.dumps(spec)) is not None
        assert spec["method"] in registry.METHODS
        assert isinstance(spec["version"], int) and spec["version"] >= 1
        # get() returns a copy: editing it leaves the registry alone.
        spec["params"]["edited"] = True
        assert "edited" not in registry.get(name)["params"]


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="Received: name='nope'"):
        registry.get("nope")
    with pytest.raises(ValueError, match="Received: method='nope'"):
        registry.method("nope")


def test_resolve_config_scales_milestones_and_ramp():
    config = train_lib.resolve_config(
        "ramping_weight",
        model="resnet8",
        width=0.5,
        epochs=4,
        batch_size=100,
        train_limit=1000,
    )
    assert config["steps_per_epoch"] == 10
    assert config["planned_steps"] == 40
    # 40k/60k/80k of 100k reference steps -> 16/24/32 of 40.
    assert config["lr_boundaries_steps"] == [16, 24, 32]
    assert config["ramp"]["ramp_steps"] == [8, 16]
    assert config["seed"] == 0
    assert config["recipe"]["epochs"] == 4


def _tiny_training_model(name):
    config = train_lib.resolve_config(
        name,
        model="toy_mlp",
        data="mnist",
        epochs=1,
        batch_size=8,
        train_limit=16,
    )
    config["params"] = dict(config["params"])
    model = train_lib.build_training_model(config)
    return config, model


@pytest.mark.parametrize("name", registry.names())
def test_every_experiment_builds_trains_and_strips(name):
    spec = registry.get(name)
    if not registry.available(spec["method"]):
        pytest.skip(f"method {spec['method']!r} cannot be imported here")
    config, model = _tiny_training_model(name)
    rng = np.random.default_rng(0)
    x = rng.random((16, 28, 28, 1)).astype("float32")
    y = np.arange(16) % 10
    callbacks = []
    if config["ramp"]:
        from keras_tdrop import RampingCallback

        callbacks.append(RampingCallback(ramp_steps=(1, 2)))
    model.run_eagerly = True  # two steps: cheaper than tracing
    history = model.fit(
        x, y, batch_size=8, epochs=1, verbose=0, callbacks=callbacks
    )
    assert np.isfinite(history.history["loss"][0])
    assert int(model.optimizer.iterations.numpy()) == 2
    plain = registry.method(config["method"]).strip(model)
    # A plain Keras model: no wrapper of any method is left.
    assert all(
        type(layer).__module__.startswith("keras.")
        for layer in iter_layers(plain)
    )
    assert_close(
        plain(x),
        model(x, training=False),
        rtol=1e-4,
        atol=1e-5,
    )


def test_ramp_scaled_to_the_run_matches_the_schedule():
    config = train_lib.resolve_config(
        "ramping_unit", model="resnet8", epochs=256, batch_size=128
    )
    first, total = config["ramp"]["ramp_steps"]
    # 256 epochs of 391 steps = 100,096 steps ~ the reference's 100k.
    assert (first, total) == (20019, 40038)
    assert schedules.piecewise(first, first, total)[1] == approx(0.95)
