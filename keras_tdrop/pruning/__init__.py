from keras_tdrop.pruning.masks import apply_masks
from keras_tdrop.pruning.masks import compute_masks
from keras_tdrop.pruning.masks import prunable_kernels
from keras_tdrop.pruning.masks import prune
from keras_tdrop.pruning.sweep import prune_sweep
