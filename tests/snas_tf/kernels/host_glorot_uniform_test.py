import keras
import numpy as np
import pytest

from snas_tf.kernels.host_glorot_uniform import HostGlorotUniform


def _draw(initializer, shape):
    return keras.ops.convert_to_numpy(initializer(shape, dtype="float32"))


@pytest.mark.parametrize("shape", [(3, 3, 4, 1), (1, 1, 4, 6), (5, 3)])
def test_same_bounds_as_keras_glorot_uniform(shape):
    ours = _draw(HostGlorotUniform(), shape)
    keras_values = _draw(keras.initializers.GlorotUniform(seed=0), shape)
    assert ours.shape == shape and ours.dtype == np.float32
    if len(shape) > 2:
        receptive = np.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    else:
        fan_in, fan_out = shape
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    assert np.abs(ours).max() <= limit
    assert np.abs(keras_values).max() <= limit
    # Near the limit, not a narrower distribution.
    assert np.abs(ours).max() > 0.5 * limit


def test_spread_matches_keras():
    shape = (5, 5, 64, 1)
    ours = _draw(HostGlorotUniform(seed=1), shape)
    theirs = _draw(keras.initializers.GlorotUniform(seed=1), shape)
    np.testing.assert_allclose(ours.std(), theirs.std(), rtol=0.1)
    assert abs(ours.mean()) < 0.1 * ours.std()


def test_seeded_draws_repeat_and_seeds_differ():
    shape = (3, 3, 4, 4)
    a = _draw(HostGlorotUniform(seed=3), shape)
    np.testing.assert_array_equal(a, _draw(HostGlorotUniform(seed=3), shape))
    assert not np.array_equal(a, _draw(HostGlorotUniform(seed=4), shape))


def test_unseeded_draws_follow_keras_set_random_seed():
    draws = []
    for seed in (5, 5, 6):
        keras.utils.set_random_seed(seed)
        draws.append(_draw(HostGlorotUniform(), (3, 3, 4, 1)))
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])


def test_config_round_trip():
    initializer = HostGlorotUniform(seed=7)
    clone = keras.initializers.deserialize(
        keras.initializers.serialize(initializer)
    )
    assert isinstance(clone, HostGlorotUniform) and clone.seed == 7
