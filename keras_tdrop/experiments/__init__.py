"""Experiments run from the command line (`keras-tdrop <name>`)."""

from keras_tdrop.experiments.demo import run_demo

__all__ = ["run_demo"]
