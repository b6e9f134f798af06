"""Tests for snas_tf.layers.drop_path (DARTS / SNAS drop-path)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import assert_config_round_trip, assert_keras_file_round_trip

from snas_tf.layers import DropPath


def _input(n=2, size=8, seed=0):
    return tf.random.stateless_normal((n, size, size, 3), seed=(seed, 5))


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _kept(out, x, rate):
    """Per sample: True if kept (x / (1 - rate)), False if all zero."""
    out, x = _numpy(out), _numpy(x)
    kept = np.abs(out).reshape(len(out), -1).max(axis=1) > 0
    np.testing.assert_array_equal(out[~kept], 0.0)
    np.testing.assert_allclose(out[kept], x[kept] / (1 - rate), rtol=1e-6)
    return kept


@pytest.mark.parametrize("training", [None, False])
def test_identity_at_inference(training):
    layer = DropPath(rate=0.5, seed=1)
    x = _input()
    np.testing.assert_array_equal(layer(x, training=training), x)


def test_identity_in_training_at_rate_zero():
    layer = DropPath(seed=1)
    x = _input(n=64)
    np.testing.assert_array_equal(layer(x, training=True), x)


def test_each_sample_is_dropped_whole_or_rescaled():
    rate = 0.3
    layer = DropPath(rate=rate, seed=2)
    x = _input(n=32)
    kept = _kept(layer(x, training=True), x, rate)
    assert 0 < kept.sum() < len(kept)


def test_dropped_fraction_matches_the_rate():
    rate, n = 0.3, 4000
    layer = DropPath(rate=rate, seed=3)
    x = tf.ones((n, 1, 1, 1))
    kept = _kept(layer(x, training=True), x, rate)
    # Binomial(4000, 0.3): standard deviation of the fraction 0.0072.
    assert abs((~kept).mean() - rate) < 0.03
    # A fresh mask every call.
    again = _numpy(layer(x, training=True))[:, 0, 0, 0] > 0
    assert not np.array_equal(again, kept)


def test_seed_reproduces_the_masks():
    x = _input(n=64)
    a, b, c = (DropPath(rate=0.5, seed=s) for s in (4, 4, 5))
    first = _numpy(a(x, training=True))
    np.testing.assert_array_equal(b(x, training=True), first)
    assert not np.array_equal(_numpy(c(x, training=True)), first)


def test_assigned_rate_takes_effect_without_retracing():
    layer = DropPath(seed=6)
    x = tf.ones((256, 2, 2, 1))
    step = tf.function(lambda x: layer(x, training=True))
    np.testing.assert_array_equal(step(x), x)
    layer.rate.assign(0.5)
    kept = _kept(step(x), x, 0.5)
    assert 0.3 < kept.mean() < 0.7
    layer.rate.assign(0.0)
    np.testing.assert_array_equal(step(x), x)
    assert step.experimental_get_tracing_count() == 1


def test_rate_is_a_non_trainable_scalar_weight():
    layer = DropPath(rate=0.25, name="dp")
    assert [w.path for w in layer.weights] == ["dp/rate"]
    assert not layer.trainable_weights
    assert float(_numpy(layer.rate)) == 0.25


def test_replicas_draw_different_masks(mirrored):
    with mirrored.scope():
        layer = DropPath(rate=0.5, seed=7)
    x = tf.ones((64, 1, 1, 1))
    out = mirrored.experimental_local_results(
        mirrored.run(lambda: layer(x, training=True))
    )
    assert len(out) == 2
    assert not np.array_equal(_numpy(out[0]), _numpy(out[1]))


def test_config_round_trip_keeps_the_current_rate():
    layer = DropPath(rate=0.25, seed=8, name="dp")
    clone = assert_config_round_trip(layer)
    assert clone.seed == 8 and float(_numpy(clone.rate)) == 0.25
    layer.rate.assign(0.5)
    assert DropPath.from_config(layer.get_config()).get_config()["rate"] == 0.5


def test_keras_file_round_trip(tmp_path):
    inputs = keras.Input((8, 8, 3))
    outputs = DropPath(rate=0.1, seed=9, name="dp")(inputs)
    model = keras.Model(inputs, outputs)
    model.get_layer("dp").rate.assign(0.125)
    loaded = assert_keras_file_round_trip(model, _input(), tmp_path)
    assert float(_numpy(loaded.get_layer("dp").rate)) == 0.125


@pytest.mark.parametrize("rate", [-0.1, 1.0, True])
def test_bad_rate_raises(rate):
    with pytest.raises(ValueError, match="rate must be in"):
        DropPath(rate=rate)
