"""Candidate operations built from built-in Keras layers."""

from snas_tf.ops.operations import (
    Op,
    batch_norm,
    build_op,
    factorized_reduce,
    relu_conv_bn,
    strided_padding,
)

__all__ = [
    "Op",
    "batch_norm",
    "build_op",
    "factorized_reduce",
    "relu_conv_bn",
    "strided_padding",
]
