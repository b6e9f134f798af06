"""Gradient handling and run settings shared by search and retraining.

Both follow the reference's PyTorch recipe under any tf.distribute strategy:
clip the gradient of the **global** batch by its global norm, then add
coupled L2 weight decay (`wd * w` joins the gradient, as PyTorch's SGD and
Adam `weight_decay` do), then let the optimizer apply it. Keras optimizers
would clip per replica before their all-reduce, and Keras' `weight_decay`
is decoupled (about 10x weaker under momentum 0.9).
"""

import contextlib

import keras
import tensorflow as tf
from keras import ops

_CLIP_ATTRS = ("clipnorm", "global_clipnorm", "clipvalue")


def num_replicas() -> int:
    """Replicas of the current strategy (1 outside any)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def per_replica(value):
    """Scales a replica-invariant term so the replicas' sum counts it once.

    Each replica's loss is divided by the replica count and the optimizer
    sums the replicas' gradients (Keras Loss objects do the same).
    """
    replicas = num_replicas()
    return value if replicas == 1 else value / replicas


def clip_global(grads, clipnorm):
    """Clips the gradient of the global batch by its global norm.

    The replicas' gradients are summed first, clipped, then divided by the
    replica count: the optimizer's own sum then gives the clipped global
    gradient on every replica.
    """
    replicas = num_replicas()
    if replicas > 1:
        ctx = tf.distribute.get_replica_context()
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    if clipnorm:
        # tf.clip_by_global_norm's formula (NaN for a non-finite norm),
        # without its identity op per gradient.
        norm = tf.linalg.global_norm(grads)
        scale = clipnorm / tf.maximum(norm, clipnorm) + (norm - norm)
        grads = [g * scale for g in grads]
    if replicas > 1:
        grads = [g / replicas for g in grads]
    return grads


def apply_update(optimizer, grads, variables, clipnorm, weight_decay):
    """Clips globally, adds coupled L2, applies: one optimizer step.

    Args:
        optimizer: a Keras optimizer without its own clipping.
        grads: gradients of the replica-scaled loss (None for unused
            variables).
        variables: the variables, in the order of `grads`.
        clipnorm: global-norm clip (0 or None: no clipping).
        weight_decay: coupled L2 coefficient (0: none).
    """
    grads = [
        ops.zeros_like(v) if g is None else g
        for g, v in zip(grads, variables, strict=True)
    ]
    grads = clip_global(grads, clipnorm)
    if weight_decay:
        # Scaled like the loss, so the replicas' sum counts it once. One
        # constant per dtype, not one per variable: a smaller graph.
        dtypes = {v.dtype for v in variables}
        decay = {d: tf.constant(per_replica(weight_decay), d) for d in dtypes}
        grads = [
            g + decay[v.dtype] * v
            for g, v in zip(grads, variables, strict=True)
        ]
    optimizer.apply_gradients(zip(grads, variables, strict=True))


def check_no_clipping(optimizer) -> None:
    """Raises if `optimizer` clips by itself (per replica, before the
    all-reduce), which `apply_update` already does globally."""
    for attr in _CLIP_ATTRS:
        if getattr(optimizer, attr, None):
            raise ValueError(
                f"{type(optimizer).__name__} has {attr}="
                f"{getattr(optimizer, attr)!r}; set clipping with "
                "compile(clipnorm=...), which clips the global gradient "
                "across replicas."
            )


def replica_jit(model, jit_compile):
    """Splits `jit_compile` for a model under its strategy.

    Keras cannot XLA-compile the whole step under a multi-replica strategy
    ("resource located in device CPU:1"); the per-replica forward/backward
    pass can be compiled instead.

    Returns:
        (jit_compile for `keras.Model.compile`, whether to wrap the
        per-replica pass in `tf.function(jit_compile=True)`).
    """
    wrap = (
        jit_compile is True
        and model.distribute_strategy.num_replicas_in_sync > 1
    )
    return (False if wrap else jit_compile), wrap


def single_function_step(model, fallback):
    """`model.train_step` over a data iterator as one `tf.function`.

    Keras' train function is a `tf.function` per iterator calling a
    `tf.function` per batch. With Grappler off (a search on a CPU, by
    default) one function traces and instantiates faster; with Grappler
    on Keras' nesting had the faster first step (figures: "Where the
    search step's time goes" in `benchmarks/README.md`). This is the
    same step: `strategy.run`, then Keras' reduction of the replicas'
    logs. AutoGraph is off, as in Keras' function: the train steps
    branch on Python values only, and converting them cost seconds of
    the trace. At the end of the data `get_next` raises
    `OutOfRangeError`, which Keras' epoch iterator takes as the end of
    the epoch.

    Args:
        model: a compiled Keras model.
        fallback: Keras' own train function, returned as is with Grappler
            on (when called: see `grappler`) and where it is needed:
            eager runs, XLA (`jit_compile`, which compiles the inner
            function only) and `steps_per_execution` > 1.
    """
    if (
        grappler_on()
        or model.run_eagerly
        or model.jit_compile
        or model.steps_per_execution != 1
    ):
        return fallback
    # Private in Keras 3.15: how Keras reduces the replicas' outputs.
    from keras.src.backend.tensorflow.trainer import reduce_per_replica

    strategy = model.distribute_strategy

    # Keras' TF epoch iterator always passes a tf.data or distributed
    # iterator here.
    @tf.function(reduce_retracing=True, autograph=False)
    def step_on_iterator(iterator):
        data = iterator.get_next()
        outputs = strategy.run(model.train_step, args=(data,))
        return reduce_per_replica(outputs, strategy, reduction="auto")

    return step_on_iterator


class SingleFunctionTrainStep:
    """Mixin for a `keras.Model` whose train function is
    `single_function_step` (list it before `keras.Model`)."""

    def make_train_function(self, force=False):
        if self.train_function is None or force:
            super().make_train_function(force=True)
            self.train_function = single_function_step(
                self, self.train_function
            )
        return self.train_function


@contextlib.contextmanager
def mixed_precision(enabled: bool):
    """Layers built inside compute in bfloat16 with float32 variables
    ("mixed_bfloat16": no loss scaling, so the global clip stays exact)
    when `enabled`; the global dtype policy is restored on exit."""
    policy = keras.mixed_precision.dtype_policy()
    if enabled:
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(policy)


_GRAPPLER_OFF = "disable_meta_optimizer"


def grappler_on() -> bool:
    """Whether functions first run now get TF's graph optimiser."""
    options = tf.config.optimizer.get_experimental_options()
    return not options.get(_GRAPPLER_OFF, False)


@contextlib.contextmanager
def grappler(enabled: bool):
    """TensorFlow's graph optimiser (Grappler) on or off for the functions
    first run inside; the process's previous setting is restored on exit.

    The option is per process and read when a function first runs, so a
    search that turns it off leaves later work in the same process (a
    retraining, a loaded SavedModel) as it found it."""
    before = grappler_on()
    tf.config.optimizer.set_experimental_options({_GRAPPLER_OFF: not enabled})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {_GRAPPLER_OFF: not before}
        )


def track_loss(model, loss, batch_size) -> None:
    """Updates the model's `loss` metric with the unscaled loss value."""
    loss = loss * num_replicas()
    for metric in model.metrics:
        if metric.name == "loss":
            metric.update_state(loss, sample_weight=batch_size)


__all__ = [
    "SingleFunctionTrainStep",
    "apply_update",
    "check_no_clipping",
    "clip_global",
    "grappler",
    "grappler_on",
    "mixed_precision",
    "num_replicas",
    "per_replica",
    "replica_jit",
    "single_function_step",
    "track_loss",
]
