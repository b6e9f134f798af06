import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import assert_config_round_trip

from snas_tf.kernels.slice_cropping import SliceCropping2D


@pytest.mark.parametrize("cropping", [((1, 0), (1, 0)), ((0, 2), (1, 1))])
@pytest.mark.parametrize("size", [(5, 6), (8, 8)])
def test_same_values_and_gradients_as_the_built_in_layer(cropping, size):
    x = tf.constant(np.random.default_rng(0).normal(size=(2, *size, 3)))
    outputs = []
    for layer in (keras.layers.Cropping2D(cropping), SliceCropping2D(cropping)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.square(y) * tf.sin(y))
        outputs.append((y.numpy(), tape.gradient(loss, x).numpy()))
    (y0, g0), (y1, g1) = outputs
    assert y1.shape == y0.shape
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(g1, g0)


def test_config_round_trip():
    clone = assert_config_round_trip(SliceCropping2D(((1, 0), (1, 0))))
    assert isinstance(clone, SliceCropping2D)
