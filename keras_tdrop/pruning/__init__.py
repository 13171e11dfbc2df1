from keras_tdrop.pruning.flops import flops
from keras_tdrop.pruning.flops import register_flops_rule
from keras_tdrop.pruning.group_masks import group_masks
from keras_tdrop.pruning.masks import apply_masks
from keras_tdrop.pruning.masks import compute_masks
from keras_tdrop.pruning.masks import nm_masks
from keras_tdrop.pruning.masks import prunable_kernels
from keras_tdrop.pruning.masks import prune
from keras_tdrop.pruning.ordered_masks import ordered_masks
from keras_tdrop.pruning.recalibrate import recalibrate_batchnorm
from keras_tdrop.pruning.report import compare_sweeps
from keras_tdrop.pruning.report import format_sweep
from keras_tdrop.pruning.report import plot_sweeps
from keras_tdrop.pruning.report import print_progress
from keras_tdrop.pruning.report import sparsity_report
from keras_tdrop.pruning.report import write_csv
from keras_tdrop.pruning.shrink import shrink
from keras_tdrop.pruning.sweep import prune_sweep
from keras_tdrop.pruning.sweep import sweep_models
from keras_tdrop.pruning.tfmot_bridge import from_tfmot
from keras_tdrop.pruning.tfmot_bridge import to_tfmot
from keras_tdrop.pruning.unit_removal import remove_units

__all__ = [
    "apply_masks",
    "compare_sweeps",
    "compute_masks",
    "flops",
    "format_sweep",
    "from_tfmot",
    "group_masks",
    "nm_masks",
    "ordered_masks",
    "plot_sweeps",
    "print_progress",
    "prunable_kernels",
    "prune",
    "prune_sweep",
    "recalibrate_batchnorm",
    "register_flops_rule",
    "remove_units",
    "shrink",
    "sparsity_report",
    "sweep_models",
    "to_tfmot",
    "write_csv",
]
