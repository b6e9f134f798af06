"""The layers namespace the search supernet builds its ops from.

`snas_tf.ops.build_op` takes a layers namespace: `keras.layers` for child
networks (built-in layers only, for every export toolchain), this one for
the search supernet, which only trains and is never exported.
"""

import keras

from snas_tf.kernels.fused_batch_norm import FusedBatchNormalization
from snas_tf.kernels.host_glorot_uniform import HostGlorotUniform
from snas_tf.kernels.phase_split_depthwise import PhaseSplitDepthwiseConv2D
from snas_tf.kernels.slice_cropping import SliceCropping2D


class _SearchLayers:
    """`keras.layers` with BatchNormalization swapped for the fused one,
    Cropping2D for one with a cheap gradient, DepthwiseConv2D for one with
    a faster 5x5 filter gradient, and convolution kernels initialised on
    the host (the same Glorot-uniform distribution)."""

    BatchNormalization = FusedBatchNormalization
    Cropping2D = SliceCropping2D

    @staticmethod
    def Conv2D(*args, **kwargs):  # noqa: N802 (stands in for the class)
        kwargs.setdefault("kernel_initializer", HostGlorotUniform())
        return keras.layers.Conv2D(*args, **kwargs)

    @staticmethod
    def DepthwiseConv2D(*args, **kwargs):  # noqa: N802
        kwargs.setdefault("depthwise_initializer", HostGlorotUniform())
        return PhaseSplitDepthwiseConv2D(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(keras.layers, name)


# The layers namespace the search supernet builds its ops from.
SEARCH_LAYERS = _SearchLayers()
