"""`FusedSGD`: Keras' SGD with momentum, one TF op per variable.

Keras' SGD builds about ten graph ops per variable and step (casts, two
multiplies, a subtract, an assign, an add, reads). The supernet has over a
thousand variables, so the optimizer was about a fifth of the train step's
graph: build and graph-optimisation time of the first step, and executor
overhead of every step. TF's `ResourceApplyKerasMomentum` kernel computes
the same update (`m = momentum * m - lr * g; w += m`) in one op.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="snas_tf")
class FusedSGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` whose momentum update is one fused TF op.

    Same arguments, variables (so checkpoints load either way) and results.
    Falls back to the Keras computation without momentum, with Nesterov
    momentum, or for sparse gradients.
    """

    def update_step(self, gradient, variable, learning_rate):
        if (
            self.momentum == 0
            or self.nesterov
            or isinstance(gradient, tf.IndexedSlices)
        ):
            return super().update_step(gradient, variable, learning_rate)
        m = self.momentums[self._get_variable_index(variable)]
        var = (
            variable.value if isinstance(variable, keras.Variable) else variable
        )
        accum = m.value if isinstance(m, keras.Variable) else m
        dtype = var.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=var.handle,
            accum=accum.handle,
            lr=tf.cast(learning_rate, dtype),
            grad=tf.cast(gradient, dtype),
            momentum=tf.cast(self.momentum, dtype),
            use_locking=False,
            use_nesterov=False,
        )
