"""The search supernet and the child networks of derived genotypes."""

from snas_tf.models.child_network import (
    build_child_network,
    copy_weights_by_name,
    count_parameters,
    inference_model,
    multiply_adds,
)
from snas_tf.models.snas_supernet import SNASSupernet
from snas_tf.optimizers import default_search_optimizers

__all__ = [
    "SNASSupernet",
    "build_child_network",
    "copy_weights_by_name",
    "count_parameters",
    "default_search_optimizers",
    "inference_model",
    "multiply_adds",
]
