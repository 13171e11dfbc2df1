from keras_tdrop.callbacks.ramping import RampingCallback
