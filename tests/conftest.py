"""Test setup: two logical CPUs, so 1- and 2-replica behaviour is tested.

Must run before TensorFlow initialises its devices, hence at import time.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# As `import snas_tf` does; here TF is imported before snas_tf.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)


@pytest.fixture(scope="session")
def mirrored():
    """One MirroredStrategy over the two logical CPUs for the whole session:
    several strategies over the same devices in one process can collide on
    collective instance keys."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
