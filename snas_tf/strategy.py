"""One function from a config string to a tf.distribute strategy, and
where each worker of a multi-worker job writes."""

import os

import tensorflow as tf

from snas_tf.distribute_compat import patch_keras_for_multi_worker

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy named `name`.

    `mirrored` uses every local GPU (or the CPU); `multi_worker_mirrored`
    reads the cluster from the `TF_CONFIG` environment variable and first
    applies `snas_tf.distribute_compat.patch_keras_for_multi_worker()`.

    Raises:
        ValueError: for an unknown name.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(
            gpus[0].name if gpus else "/cpu:0"
        )
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        # Stock Keras 3.15 `fit` fails here (keras-team/keras#20585).
        patch_keras_for_multi_worker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(
        f"Unknown strategy {name!r}. Expected one of {STRATEGIES}."
    )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the job's outputs: always, except for
    the non-chief workers of a multi-worker cluster (the chief is task
    `chief`, or `worker` 0 when the cluster has no `chief`)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief" or task_type is None:
        return True
    has_chief = "chief" in resolver.cluster_spec().jobs
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_dir(strategy: tf.distribute.Strategy, model_dir) -> str:
    """`model_dir` for the chief, `model_dir/workers/<task id>` for the
    other workers, so workers on a shared file system never write the same
    file (TensorFlow's multi-worker checkpointing pattern)."""
    if is_chief(strategy):
        return str(model_dir)
    resolver = strategy.cluster_resolver
    return os.path.join(str(model_dir), "workers", str(resolver.task_id))
