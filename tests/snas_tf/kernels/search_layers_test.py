import keras

from snas_tf.kernels.fused_batch_norm import FusedBatchNormalization
from snas_tf.kernels.host_glorot_uniform import HostGlorotUniform
from snas_tf.kernels.phase_split_depthwise import PhaseSplitDepthwiseConv2D
from snas_tf.kernels.search_layers import SEARCH_LAYERS
from snas_tf.kernels.slice_cropping import SliceCropping2D


def test_swaps_batch_normalization_and_cropping_and_passes_others_through():
    assert SEARCH_LAYERS.BatchNormalization is FusedBatchNormalization
    assert SEARCH_LAYERS.Cropping2D is SliceCropping2D
    assert SEARCH_LAYERS.MaxPooling2D is keras.layers.MaxPooling2D


def test_convolutions_have_kernels_drawn_on_the_host():
    conv = SEARCH_LAYERS.Conv2D(4, 1, use_bias=False)
    depthwise = SEARCH_LAYERS.DepthwiseConv2D(3, use_bias=False)
    assert type(conv) is keras.layers.Conv2D
    # The built-in layer with a faster 5x5 filter gradient.
    assert type(depthwise) is PhaseSplitDepthwiseConv2D
    assert isinstance(conv.kernel_initializer, HostGlorotUniform)
    assert isinstance(depthwise.depthwise_initializer, HostGlorotUniform)
    # An explicit initializer still wins.
    zeros = SEARCH_LAYERS.Conv2D(4, 1, kernel_initializer="zeros")
    assert not isinstance(zeros.kernel_initializer, HostGlorotUniform)
