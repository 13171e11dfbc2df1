"""`RampLogger`: a run's alpha and gamma at every optimizer step."""

import os

import keras

__all__ = ["RampLogger", "has_tensorboard"]


class RampLogger(keras.callbacks.Callback):
    """Records alpha and gamma (means over the TargetedDropout layers) at
    every optimizer step: appended to `csv_path` (`step,alpha,gamma`) and,
    when tensorboard is installed, written to TensorBoard in `log_dir` as
    `ramp/alpha` and `ramp/gamma`. A resumed run appends from its step."""

    def __init__(self, csv_path, log_dir=None):
        super().__init__()
        self.csv_path = csv_path
        self.log_dir = log_dir
        self._writer = None
        self._file = None
        self._layers = []

    def on_train_begin(self, logs=None):
        from keras_tdrop.wrapping import targeted_dropout_layers

        self._layers = targeted_dropout_layers(self.model)
        if not self._layers:
            return
        new = not os.path.exists(self.csv_path)
        self._file = open(self.csv_path, "a")
        if new:
            self._file.write("step,alpha,gamma\n")
        if self.log_dir is not None and has_tensorboard():
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_begin(self, batch, logs=None):
        if not self._layers:
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        n = len(self._layers)
        alpha = sum(layer.current_rate for layer in self._layers) / n
        gamma = sum(layer.current_target_rate for layer in self._layers) / n
        self._file.write(f"{step},{alpha:.6g},{gamma:.6g}\n")
        if self._writer is not None:
            import tensorflow as tf

            with self._writer.as_default():
                tf.summary.scalar("ramp/alpha", alpha, step)
                tf.summary.scalar("ramp/gamma", gamma, step)

    def on_epoch_end(self, epoch, logs=None):
        if self._file is not None:
            self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def has_tensorboard():
    """Whether the tensorboard package is installed (TF 2.21 does not
    depend on it; `pip install tensorboard` to get the TensorBoard logs)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None
