"""Candidate operations built from built-in Keras layers."""

from snas_tf.ops.operations import (
    Op,
    SharedPrefixes,
    batch_norm,
    build_op,
    factorized_reduce,
    relu_conv_bn,
)

__all__ = [
    "Op",
    "SharedPrefixes",
    "batch_norm",
    "build_op",
    "factorized_reduce",
    "relu_conv_bn",
]
