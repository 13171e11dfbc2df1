"""The Targeted Dropout paper's baselines: L0, variational dropout, Smallify,
L1, each applied to a copy of a model and stripped back to a plain one."""

from keras_tdrop.baselines._base import baseline_layers
from keras_tdrop.baselines._base import importances
from keras_tdrop.baselines._base import masks
from keras_tdrop.baselines._base import strip_baselines
from keras_tdrop.baselines.l0 import L0Gate
from keras_tdrop.baselines.l0 import apply_l0
from keras_tdrop.baselines.l1 import apply_l1
from keras_tdrop.baselines.l1 import strip_l1
from keras_tdrop.baselines.smallify import Smallify
from keras_tdrop.baselines.smallify import apply_smallify
from keras_tdrop.baselines.variational import VariationalDropout
from keras_tdrop.baselines.variational import apply_variational_dropout

__all__ = [
    "L0Gate",
    "Smallify",
    "VariationalDropout",
    "apply_l0",
    "apply_l1",
    "apply_smallify",
    "apply_variational_dropout",
    "baseline_layers",
    "importances",
    "masks",
    "strip_baselines",
    "strip_l1",
]
