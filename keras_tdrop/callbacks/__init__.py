from keras_tdrop.callbacks.ramping import RampingCallback

__all__ = [
    "RampingCallback",
]
