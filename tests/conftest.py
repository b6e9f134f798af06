"""Test setup: two logical CPUs, so 1- and 2-replica behaviour is tested.

Must run before TensorFlow initialises its devices, hence at import time.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# snas_tf's TensorFlow environment defaults (oneDNN on, its primitives
# cached), before TensorFlow is imported.
import snas_tf  # noqa: E402, F401

# isort: split
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
