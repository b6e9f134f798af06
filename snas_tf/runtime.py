"""A job's process-wide runtime set-up: TF thread pools, seeds, op
determinism and Grappler, from a `RuntimeConfig` (`config.runtime`).

Shared by the search, retraining and tuning jobs and the benchmarks, so
each job starts TensorFlow the same way.
"""

import contextlib

import keras
import tensorflow as tf

from snas_tf.training import grappler


def configure_threads(runtime) -> None:
    """Sets TF's thread pools; must run before TensorFlow runs any op."""
    try:
        if runtime.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(
                runtime.intra_op_threads
            )
        if runtime.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(
                runtime.inter_op_threads
            )
    except RuntimeError:
        # TF already initialised (e.g. a second job in one process): keep
        # the pools it has.
        pass


@contextlib.contextmanager
def job_runtime(runtime, search: bool):
    """A job's runtime settings: threads, seeds and op determinism
    (`runtime.deterministic`), set on entry (before TensorFlow runs any
    op), and Grappler (`runtime.grappler`, see `grappler_enabled`) for
    the job's duration only. `search` says the job is a supernet search."""
    configure_threads(runtime)
    keras.utils.set_random_seed(runtime.seed)
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    with grappler(grappler_enabled(runtime.grappler, search)):
        yield


def grappler_enabled(setting, search: bool) -> bool:
    """`runtime.grappler` resolved: null is off for a search on a machine
    without a GPU, on otherwise (see `RuntimeConfig`)."""
    if setting is not None:
        return setting
    return not search or bool(tf.config.list_physical_devices("GPU"))


__all__ = ["configure_threads", "grappler_enabled", "job_runtime"]
