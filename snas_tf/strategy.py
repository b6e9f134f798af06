"""One function from a config string to a tf.distribute strategy."""

import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy named `name`.

    `mirrored` uses every local GPU (or the CPU); `multi_worker_mirrored`
    reads the cluster from the `TF_CONFIG` environment variable.

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
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(
        f"Unknown strategy {name!r}. Expected one of {STRATEGIES}."
    )
