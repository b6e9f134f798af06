"""Build a large model and its training state before `fit` traces a step.

Plumbing of the search supernet, apart from its SNAS logic: a
`tf.function` that creates variables on its first call is traced a second
time, which for the supernet's large graph doubles the first step. Built
from the data's shape first, with the optimizer slots and metric
variables made eagerly, nothing is created inside the traced steps.
"""

import tensorflow as tf
from keras import ops

from snas_tf.kernels.tracing import short_variable_names


def image_shape(x):
    """(None, H, W, C) of a batch of images given to `fit`, if knowable
    without reading the data (arrays, tensors, tf.data element specs; of
    nested inputs such as bi-level DARTS's `((x_train, x_arch), y)`, the
    first)."""
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        while isinstance(spec, (tuple, list)):
            spec = spec[0]
        shape = getattr(spec, "shape", None)
    else:
        shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4:
        return None
    return (None,) + tuple(shape[1:])


class BuildsBeforeFit:
    """Mixin for a `keras.Model` of images with `weight_variables` and
    `num_classes` (list it before `keras.Model`): `fit` builds the model
    from the data's shape first; `_build_training_state` (for the model's
    `build` and `compile` to call) creates the training variables eagerly.
    """

    def fit(self, x=None, y=None, *args, **kwargs):
        if not self.built:
            shape = image_shape(x)
            if shape is not None:
                with self.distribute_strategy.scope():
                    self.build(shape)
        return super().fit(x, y, *args, **kwargs)

    def _ensure_built(self, x):
        # Without a strategy Keras defers building to the first trace of
        # the step, which may call another method than `__call__`. The
        # model's build() also creates the training state when compiled.
        if not self.built:
            self.build(tuple(x.shape))

    def _build_training_state(self):
        """Creates the optimizer slots and metric variables eagerly."""
        with tf.init_scope(), short_variable_names():
            if not self.optimizer.built:
                self.optimizer.build(self.weight_variables)
            y = ops.zeros((1,), dtype="int32")
            y_pred = ops.zeros((1, self.num_classes))
            self.compute_loss(y=y, y_pred=y_pred)
            self.compute_metrics(None, y, y_pred, None)
            self.reset_metrics()
