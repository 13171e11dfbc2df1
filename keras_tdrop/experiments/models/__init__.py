"""Small reference architectures, with stable layer names.

One module per family: the MNIST networks (`mnist`), the ResNet (`resnet`)
and toy network (`toy`) of Targeted Dropout, the models of Triangular
Dropout (`triangular`) and a MobileNetV2-style CNN (`mobilenet`).
"""

from keras_tdrop.experiments.models.mnist import mnist_cnn
from keras_tdrop.experiments.models.mnist import mnist_mlp
from keras_tdrop.experiments.models.mobilenet import mobile_cnn
from keras_tdrop.experiments.models.resnet import resnet
from keras_tdrop.experiments.models.toy import toy_mlp
from keras_tdrop.experiments.models.triangular import conv_autoencoder
from keras_tdrop.experiments.models.triangular import mlp_head

__all__ = [
    "conv_autoencoder",
    "mlp_head",
    "mnist_cnn",
    "mnist_mlp",
    "mobile_cnn",
    "resnet",
    "toy_mlp",
]
