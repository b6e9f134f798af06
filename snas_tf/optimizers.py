"""`FusedSGD`: Keras' SGD with momentum, one TF op per variable; and
`default_search_optimizers`, the search's two optimizers from its config.

Keras' SGD builds about ten graph ops per variable and step (casts, two
multiplies, a subtract, an assign, an add, reads). The supernet has over a
thousand variables, so the optimizer was about a fifth of the train step's
graph: build and graph-optimisation time of the first step, and executor
overhead of every step. TF's `ResourceApplyKerasMomentum` kernel computes
the same update (`m = momentum * m - lr * g; w += m`) in one op. Without a
distribution strategy the per-variable bookkeeping of Keras' update loop
(a learning-rate read, a momentum constant and an identity per variable)
goes too: the learning rate is read once per step.
"""

import keras
import tensorflow as tf

from snas_tf.config import SearchConfig


@keras.saving.register_keras_serializable(package="snas_tf")
class FusedSGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` whose momentum update is one fused TF op.

    Same arguments, variables (so checkpoints load either way) and results.
    Falls back to the Keras computation without momentum, with Nesterov
    momentum, or for sparse gradients.
    """

    def _fused(self):
        return self.momentum != 0 and not self.nesterov

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # Under a strategy Keras' loop updates each replica's copy; outside
        # one the variables are plain and one op per variable suffices.
        if tf.distribute.has_strategy() or not self._fused():
            return super()._backend_update_step(
                grads, trainable_variables, learning_rate
            )
        learning_rate = tf.convert_to_tensor(learning_rate)
        momentum = tf.constant(self.momentum)
        for grad, variable in zip(grads, trainable_variables, strict=True):
            if isinstance(grad, tf.IndexedSlices):
                self.update_step(grad, variable, learning_rate)
            else:
                self._apply(grad, variable, learning_rate, momentum)

    def update_step(self, gradient, variable, learning_rate):
        if not self._fused() or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        self._apply(gradient, variable, learning_rate, self.momentum)

    def _apply(self, gradient, variable, learning_rate, momentum):
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
            momentum=tf.cast(momentum, dtype),
            use_locking=False,
            use_nesterov=False,
        )


def default_search_optimizers(
    epochs: int, steps_per_epoch: int, search: SearchConfig | None = None
):
    """The paper's optimizers (docs/method.md §3) with the values of `search`.

    Weights: SGD with momentum, the learning rate cosine-decayed from
    `search.learning_rate` to `search.learning_rate_min` over the search.
    Architecture: Adam as in the paper (the reference's single-GPU code
    uses plain SGD; decision: Adam). Weight decay and clipping are
    `compile` arguments of `SNASSupernet`, applied as the reference does.

    Args:
        epochs: search epochs, the length of the cosine decay.
        steps_per_epoch: optimizer steps per epoch.
        search: a `SearchConfig` for the learning rates, momentum and Adam
            betas; None: its defaults, the paper's values.

    Returns:
        `(optimizer, arch_optimizer)`.
    """
    s = SearchConfig() if search is None else search
    lr = keras.optimizers.schedules.CosineDecay(
        s.learning_rate,
        decay_steps=max(1, epochs * steps_per_epoch),
        alpha=s.learning_rate_min / s.learning_rate,
    )
    return (
        FusedSGD(lr, momentum=s.momentum),
        keras.optimizers.Adam(
            s.arch_learning_rate, beta_1=s.arch_beta_1, beta_2=s.arch_beta_2
        ),
    )
