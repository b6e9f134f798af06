"""A `Cropping2D` whose gradient is one `Pad` op, for the search supernet.

Keras crops with a strided slice; its gradient, `StridedSliceGrad`, is a
slow general scatter on CPU: the crops in the search network's
FactorizedReduce ops took a visible share of a search step. `tf.slice`
computes the same crop, and its gradient is a zero `Pad`.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="snas_tf")
class SliceCropping2D(keras.layers.Cropping2D):
    """`keras.layers.Cropping2D` (channels-last) computed by `tf.slice`.

    Same arguments and config as the built-in layer.
    """

    def call(self, inputs):
        if self.data_format != "channels_last":
            return super().call(inputs)
        (top, bottom), (left, right) = self.cropping
        shape = tf.shape(inputs)
        size = tf.stack(
            [shape[0], shape[1] - top - bottom, shape[2] - left - right, -1]
        )
        return tf.slice(inputs, [0, top, left, 0], size)
