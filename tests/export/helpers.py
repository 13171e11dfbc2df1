"""Small models, inputs and an independent LiteRT run for the export tests."""

import keras
import numpy as np
from ai_edge_litert import interpreter as litert

# The real class, for runs that tests do not count.
Interpreter = litert.Interpreter


def small_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 1), name="image")
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(5, name="logits")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(rng.normal(0, 0.1, 8).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2, 8).astype("float32"))
    return model


def small_mlp(seed=0):
    """One Dense layer: the quickest model to convert."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), name="x")
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(inputs))


def images(n=32, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (n, 12, 12, 1))


def run_file(path, x, resolver=litert.OpResolverType.AUTO):
    """An independent LiteRT run of a written file, dequantizing by hand."""
    interpreter = Interpreter(
        model_path=str(path), experimental_op_resolver_type=resolver
    )
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    if out["dtype"] == np.int8:
        scale, zero = out["quantization"]
        y = (y.astype("float32") - zero) * scale
    return inp["dtype"], y


class CountingInterpreter(Interpreter):
    """LiteRT's interpreter, counting the instances and invocations of all
    of them (`reset()` before use); with `refuse_xnnpack`, tensors cannot
    be allocated under the default resolver, as XNNPACK refuses some
    files."""

    created = []
    invocations = 0
    refuse_xnnpack = False

    @classmethod
    def reset(cls, refuse_xnnpack=False):
        cls.created = []
        cls.invocations = 0
        cls.refuse_xnnpack = refuse_xnnpack

    def __init__(self, *args, **kwargs):
        resolver = kwargs.get(
            "experimental_op_resolver_type", litert.OpResolverType.AUTO
        )
        type(self).created.append(resolver.name)
        self._refuse = (
            type(self).refuse_xnnpack and resolver == litert.OpResolverType.AUTO
        )
        super().__init__(*args, **kwargs)

    def allocate_tensors(self):
        if self._refuse:
            raise RuntimeError("Failed to apply XNNPACK delegate (test).")
        return super().allocate_tensors()

    def invoke(self):
        type(self).invocations += 1
        return super().invoke()
