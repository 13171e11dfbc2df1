import numpy as np

from keras_tdrop.export.conversion import convert
from keras_tdrop.export.inputs import calibration_examples
from keras_tdrop.export.inputs import input_specs
from tests.export.helpers import Interpreter
from tests.export.helpers import small_mlp


def details(content):
    interpreter = Interpreter(model_content=content)
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    return inp, out


def test_float_conversion_is_quiet_and_keeps_float_io(capsys):
    content = convert(small_mlp())
    assert isinstance(content, bytes)
    inp, out = details(content)
    assert inp["dtype"] == out["dtype"] == np.float32
    assert capsys.readouterr().out == ""


def test_int8_conversion_calibrates_on_the_examples():
    model = small_mlp()
    x = np.random.default_rng(0).normal(size=(40, 6)).astype("float32")
    examples = calibration_examples(x, input_specs(model))
    content = convert(model, quantize="int8", examples=examples)
    inp, out = details(content)
    assert inp["dtype"] == out["dtype"] == np.int8
    scale, _ = inp["quantization"]
    # The input scale covers the examples' range in 256 steps.
    span = x.max() - x.min()
    assert span / 256 <= scale <= 1.01 * span / 255
