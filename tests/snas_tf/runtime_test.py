"""Tests for snas_tf.runtime: a job's Grappler, seed and thread set-up."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import grappler_off

from snas_tf.config import load_config
from snas_tf.runtime import configure_threads, grappler_enabled, job_runtime


@pytest.mark.parametrize(
    "value, search, enabled",
    [
        ("false", False, False),
        ("true", True, True),
        # null: off for a search on a CPU-only machine (the test machines
        # have no GPU), on for retraining.
        ("null", True, False),
        ("null", False, True),
    ],
)
def test_runtime_grappler_resolves_per_job(value, search, enabled):
    assert not tf.config.list_physical_devices("GPU")
    runtime = load_config([], [f"runtime.grappler={value}"]).runtime
    assert grappler_enabled(runtime.grappler, search) is enabled


@pytest.mark.parametrize("search", [True, False])
def test_job_runtime_sets_grappler_for_the_job_only(search):
    runtime = load_config([], ["runtime.seed=3"]).runtime
    assert not grappler_off()
    with pytest.raises(KeyError):
        with job_runtime(runtime, search=search):
            assert grappler_off() is search
            drawn = keras.random.uniform((3,), seed=None)
            raise KeyError("an error inside still restores Grappler")
    assert not grappler_off()
    # The seed was set on entry: the same draw again.
    keras.utils.set_random_seed(3)
    again = keras.random.uniform((3,), seed=None)
    np.testing.assert_array_equal(np.asarray(drawn), np.asarray(again))


def test_configure_threads_keeps_the_pools_of_a_running_tf():
    tf.constant(1.0) + 1.0  # TensorFlow is initialised: pools are fixed.
    before = tf.config.threading.get_intra_op_parallelism_threads()
    runtime = load_config([], ["runtime.intra_op_threads=7"]).runtime
    configure_threads(runtime)  # no error
    assert tf.config.threading.get_intra_op_parallelism_threads() == before
