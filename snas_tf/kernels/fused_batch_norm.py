"""A fused BatchNormalization for the search supernet.

Keras 3's `BatchNormalization` is unfused on the TensorFlow backend: about
twenty graph ops forward and as many backward per layer. The supernet has
hundreds of BatchNorms (every op of every edge ends in one), so graph size,
trace time and step time are dominated by them. `FusedBatchNormalization`
computes the same normalisation with one `FusedBatchNormV3` op (and one
gradient op), keeping the same variables, so weights load either way.

Only the search supernet uses it; child networks keep the built-in layer so
every export toolchain takes them.
"""

import keras
import tensorflow as tf

from snas_tf.kernels import tracing

# The smallest epsilon cuDNN accepts, which `tf.nn.fused_batch_norm` also
# applies; the fused layer uses max(epsilon, EPSILON_FLOOR).
EPSILON_FLOOR = 1.001e-5


@keras.saving.register_keras_serializable(package="snas_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TF's fused kernel.

    Same arguments, variables and config as the built-in layer. Training
    mode normalises with the batch statistics and updates the moving
    statistics as `moving = momentum * moving + (1 - momentum) * batch`;
    the moving variance is updated with the unbiased batch variance, as
    PyTorch (and the SNAS reference code) does. Falls back to the built-in
    computation for anything but 4-D channels-last inputs.

    Args:
        **kwargs: `keras.layers.BatchNormalization` arguments.

    Call arguments:
        inputs: (batch, H, W, C) tensor.
        training: whether to use batch statistics and update the moving ones.
        output_scale: optional scalar the output is multiplied by, folded
            into the kernel's scale (the search supernet's op weight Z_k:
            no separate multiply of the output, and its gradient comes
            from the kernel's scale gradient).

    Example:

    >>> bn = FusedBatchNormalization(center=False, scale=False)
    >>> bn(keras.random.normal((2, 8, 8, 4)), training=True).shape
    TensorShape([2, 8, 8, 4])

    Reference:
        Ioffe & Szegedy, "Batch Normalization", ICML 2015.
    """

    def call(self, inputs, training=None, mask=None, output_scale=None):
        if (
            len(inputs.shape) != 4
            or self.axis not in (-1, 3)
            or mask is not None
        ):
            outputs = super().call(inputs, training=training, mask=mask)
            if output_scale is None:
                return outputs
            return tf.cast(output_scale, outputs.dtype) * outputs
        channels = inputs.shape[-1]
        if output_scale is None:
            scale = self.gamma if self.scale else tf.ones((channels,))
        else:
            # Z_k * BN(x) = BN(x) with scale gamma * Z_k (and offset
            # beta * Z_k when centred). Fill's gradient is one sum; a
            # broadcasting multiply's is six ops.
            output_scale = tf.cast(output_scale, "float32")
            if self.scale:
                scale = tf.cast(self.gamma, "float32") * output_scale
            else:
                scale = tf.fill((channels,), output_scale)
        offset = self.beta if self.center else tf.zeros((channels,))
        if output_scale is not None and self.center:
            offset = tf.cast(offset, "float32") * output_scale
        training = bool(training) and self.trainable
        # float32 runs the V1 kernel: TensorFlow's tape hands its gradient
        # None for the unused outputs (batch statistics, reserve spaces)
        # where V3's gets a zeros op each, five per layer: a much larger
        # traced step for the same kernels. V3 takes the 16-bit inputs.
        fused = (
            tf.raw_ops.FusedBatchNorm
            if inputs.dtype == tf.float32
            else tf.raw_ops.FusedBatchNormV3
        )
        outputs, mean, variance = fused(
            x=inputs,
            scale=tf.cast(scale, "float32"),
            offset=tf.cast(offset, "float32"),
            mean=tf.cast(self.moving_mean, "float32"),
            variance=tf.cast(self.moving_variance, "float32"),
            epsilon=max(self.epsilon, EPSILON_FLOOR),
            exponential_avg_factor=1.0 - self.momentum if training else 1.0,
            data_format="NHWC",
            is_training=training,
        )[:3]
        if training and not tracing.is_raised("recomputing"):
            # With exponential_avg_factor the kernel returns the updated
            # moving statistics.
            self.moving_mean.assign(tf.cast(mean, self.moving_mean.dtype))
            self.moving_variance.assign(
                tf.cast(variance, self.moving_variance.dtype)
            )
        return outputs
