"""Training wrapper of a child network: the retraining step of SNAS §3.2.

The child network stays a flat functional model of built-in layers (plus
`DropPath` in its training build). `ChildTrainer` wraps it for `fit` with the
reference's step: cross-entropy (optionally label-smoothed) of the logits
plus `auxiliary_weight` x that of the auxiliary logits, one backward pass,
global-norm clipping of the global batch's gradient and coupled L2 weight
decay (`snas_tf.training`). It reports top-1 and top-5 accuracy.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §3.2-3.3, App. G; the authors' train_edge_all.py / train_imagenet.py.
"""

import keras
import tensorflow as tf
from keras import ops

from snas_tf import training
from snas_tf.config import TrainConfig
from snas_tf.optimizers import FusedSGD


class ChildTrainer(training.SingleFunctionTrainStep, keras.Model):
    """Trains a child network with the reference's loss and update.

    Args:
        network: a model from `build_child_network`, with outputs
            `[logits, aux_logits]` (auxiliary head) or `logits`.
        num_classes: classes of the classifier.
        auxiliary_weight: weight of the auxiliary loss (default:
            `TrainConfig`'s, the reference's).
        label_smoothing: label smoothing (reference ImageNet: 0.1).
        **kwargs: `keras.Model` arguments.
    """

    def __init__(
        self,
        network,
        num_classes,
        auxiliary_weight=TrainConfig.auxiliary_weight,
        label_smoothing=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing must be in [0, 1), got {label_smoothing!r}."
            )
        if auxiliary_weight < 0:
            raise ValueError(
                f"auxiliary_weight must be >= 0, got {auxiliary_weight!r}."
            )
        self.network = network
        self.num_classes = int(num_classes)
        self.auxiliary = len(network.outputs) > 1
        self.auxiliary_weight = float(auxiliary_weight)
        self.label_smoothing = float(label_smoothing)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.top1 = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.top5 = keras.metrics.SparseTopKCategoricalAccuracy(
            k=min(5, self.num_classes), name="top5_accuracy"
        )
        # The functional network is built; so is this wrapper.
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.top1, self.top5]

    def compile(
        self,
        optimizer=None,
        weight_decay=TrainConfig.weight_decay,
        clipnorm=TrainConfig.clipnorm,
        jit_compile="auto",
        **kwargs,
    ):
        """Configures the retraining.

        Args:
            optimizer: default SGD with `TrainConfig`'s learning rate
                (constant) and momentum; must not clip by itself (the step
                clips the global gradient).
            weight_decay: coupled L2 coefficient, as the reference's
                PyTorch SGD.
            clipnorm: global-norm clip of the global batch's gradient.
            jit_compile: XLA; under a multi-replica strategy the
                per-replica forward/backward pass is compiled.
            **kwargs: other `keras.Model.compile` arguments (no loss or
                metrics: the step defines them).
        """
        if optimizer is None:
            optimizer = FusedSGD(
                TrainConfig.learning_rate, momentum=TrainConfig.momentum
            )
        optimizer = keras.optimizers.get(optimizer)
        training.check_no_clipping(optimizer)
        model_jit, wrap = training.replica_jit(self, jit_compile)
        super().compile(optimizer=optimizer, jit_compile=model_jit, **kwargs)
        self._gradient_fn = (
            tf.function(self._loss_and_gradients, jit_compile=True)
            if wrap
            else self._loss_and_gradients
        )
        self.weight_decay = float(weight_decay)
        self.clipnorm = clipnorm
        # Slots created now, inside the caller's strategy scope: nothing is
        # created inside the traced step (which would trace it twice).
        self.optimizer.build(self.network.trainable_variables)

    def call(self, images, training=False):
        """Logits (the auxiliary head is a training-only output)."""
        outputs = self.network(images, training=training)
        return outputs[0] if self.auxiliary else outputs

    def _cross_entropy(self, labels, logits):
        """Mean cross-entropy over the replica's batch, scaled so that the
        replicas' summed gradients are the global batch's."""
        one_hot = ops.one_hot(ops.cast(labels, "int32"), self.num_classes)
        per_example = keras.losses.categorical_crossentropy(
            one_hot,
            ops.cast(logits, "float32"),
            from_logits=True,
            label_smoothing=self.label_smoothing,
        )
        return training.per_replica(ops.mean(per_example))

    def _loss_and_gradients(self, x, y):
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.network(x, training=True)
            if self.auxiliary:
                logits, aux_logits = outputs
                loss = self._cross_entropy(y, logits)
                total = loss + self.auxiliary_weight * self._cross_entropy(
                    y, aux_logits
                )
            else:
                logits = outputs
                loss = total = self._cross_entropy(y, logits)
        return loss, logits, tape.gradient(total, variables)

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        loss, logits, grads = self._gradient_fn(x, y)
        training.apply_update(
            self.optimizer,
            grads,
            self.network.trainable_variables,
            self.clipnorm,
            self.weight_decay,
        )
        return self._update_metrics(loss, y, logits)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        logits = self(x, training=False)
        return self._update_metrics(self._cross_entropy(y, logits), y, logits)

    def _update_metrics(self, loss, y, logits):
        logits = ops.cast(logits, "float32")  # bfloat16 under mixed precision
        # The loss is the main head's (without the auxiliary term), unscaled.
        self.loss_tracker.update_state(
            loss * training.num_replicas(), sample_weight=ops.shape(y)[0]
        )
        self.top1.update_state(y, logits)
        self.top5.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}


__all__ = ["ChildTrainer"]
