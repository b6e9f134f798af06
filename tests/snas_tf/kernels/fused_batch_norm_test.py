"""Tests for snas_tf.kernels.fused_batch_norm."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import assert_config_round_trip, assert_keras_file_round_trip

from snas_tf.kernels.fused_batch_norm import FusedBatchNormalization

SHAPE = (2, 8, 8, 4)
# PyTorch-style settings, as the ops build them (docs/method.md §1).
KWARGS = dict(momentum=0.9, epsilon=1e-5)


def _input(seed=0):
    # Non-zero mean and non-unit scale, so normalisation is visible.
    x = tf.random.stateless_normal(SHAPE, seed=(seed, 11))
    return 3.0 * x + 1.5


def _pair(affine=True, seed=0):
    """A fused and a built-in BN with the same random weights and stats."""
    kwargs = dict(KWARGS, center=affine, scale=affine)
    fused = FusedBatchNormalization(**kwargs)
    builtin = keras.layers.BatchNormalization(**kwargs)
    fused.build(SHAPE)
    builtin.build(SHAPE)
    rng = np.random.default_rng(seed)
    weights = [
        rng.uniform(0.5, 2.0, w.shape).astype("float32")
        if "variance" in w.path or "gamma" in w.path
        else rng.normal(size=w.shape).astype("float32")
        for w in builtin.weights
    ]
    builtin.set_weights(weights)
    fused.set_weights(weights)
    return fused, builtin


@pytest.mark.parametrize("affine", [True, False])
def test_inference_matches_builtin(affine):
    fused, builtin = _pair(affine)
    x = _input()
    expected = builtin(x, training=False)
    np.testing.assert_allclose(fused(x, training=False), expected, atol=1e-5)
    # Inference mode leaves the moving statistics alone.
    for a, b in zip(fused.weights, builtin.weights, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("affine", [True, False])
def test_training_output_uses_batch_statistics(affine):
    fused, builtin = _pair(affine, seed=1)
    x = _input(seed=1)
    got = fused(x, training=True)
    np.testing.assert_allclose(got, builtin(x, training=True), atol=1e-4)
    if not affine:
        # center=False, scale=False: zero mean, unit (biased) variance.
        np.testing.assert_allclose(
            tf.reduce_mean(got, axis=(0, 1, 2)), 0.0, atol=1e-5
        )
        np.testing.assert_allclose(
            tf.math.reduce_variance(got, axis=(0, 1, 2)), 1.0, atol=1e-3
        )


def test_training_updates_moving_stats_with_unbiased_variance():
    fused, _ = _pair(seed=2)
    old_mean = fused.moving_mean.numpy()
    old_var = fused.moving_variance.numpy()
    x = _input(seed=2).numpy()
    fused(x, training=True)
    m = fused.momentum
    values = x.reshape(-1, SHAPE[-1]).astype("float64")
    np.testing.assert_allclose(
        fused.moving_mean, m * old_mean + (1 - m) * values.mean(0), atol=1e-5
    )
    # PyTorch (and the SNAS reference) update with the unbiased variance:
    # over N = 128 values it differs from the biased one by a factor
    # N / (N - 1), about 7e-3 here, far above the tolerance.
    unbiased = m * old_var + (1 - m) * values.var(0, ddof=1)
    biased = m * old_var + (1 - m) * values.var(0, ddof=0)
    assert np.all(np.abs(unbiased - biased) > 1e-3)
    np.testing.assert_allclose(fused.moving_variance, unbiased, atol=1e-4)


def test_non_trainable_layer_runs_in_inference_mode():
    fused, builtin = _pair(seed=3)
    fused.trainable = False
    before = [w.numpy() for w in fused.weights]
    x = _input(seed=3)
    np.testing.assert_allclose(
        fused(x, training=True), builtin(x, training=False), atol=1e-5
    )
    for a, b in zip(fused.weights, before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("affine", [True, False])
def test_training_gradients_match_builtin(affine):
    fused, builtin = _pair(affine, seed=4)
    x = _input(seed=4)
    upstream = tf.random.stateless_normal(SHAPE, seed=(4, 4))
    grads = []
    for layer in (fused, builtin):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * upstream)
        grads.append(tape.gradient(loss, [x] + layer.trainable_weights))
    assert len(grads[0]) == (3 if affine else 1)
    for got, expected in zip(*grads, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.abs(grads[0][0]).max() > 1e-3


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_output_scale_equals_scaling_the_output(affine, training):
    # The supernet folds an op's weight Z_k into its final BN: value,
    # gradients (x, gamma/beta and Z_k itself) and the moving statistics
    # must equal those of Z_k * BN(x).
    scaled_layer, _ = _pair(affine, seed=5)
    plain_layer, _ = _pair(affine, seed=5)
    x = _input(seed=5)
    upstream = tf.random.stateless_normal(SHAPE, seed=(5, 5))
    scale = tf.Variable(0.37)
    results = []
    for layer, scaled in ((scaled_layer, True), (plain_layer, False)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            if scaled:
                out = layer(x, training=training, output_scale=scale)
            else:
                out = scale * layer(x, training=training)
            loss = tf.reduce_sum(out * upstream)
        grads = tape.gradient(loss, [x, scale] + layer.trainable_weights)
        results.append([out] + grads + [w.numpy() for w in layer.weights])
    assert len(results[0]) == (9 if affine else 5)
    for got, expected in zip(*results, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert abs(float(results[0][2])) > 1e-3


def test_config_round_trip():
    layer = FusedBatchNormalization(center=False, scale=False, **KWARGS)
    clone = assert_config_round_trip(layer)
    assert isinstance(clone, FusedBatchNormalization)
    assert (clone.center, clone.scale) == (False, False)
    assert clone.momentum == 0.9 and clone.epsilon == 1e-5


def test_keras_file_round_trip(tmp_path):
    assert (
        keras.saving.get_registered_name(FusedBatchNormalization)
        == "snas_tf>FusedBatchNormalization"
    )
    fused, _ = _pair(seed=5)
    model = keras.Sequential([keras.Input(SHAPE[1:]), fused])
    loaded = assert_keras_file_round_trip(model, _input(seed=5), tmp_path)
    assert isinstance(loaded.layers[0], FusedBatchNormalization)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_float32_gradient_graph_has_no_zeros_for_unused_outputs():
    # The V1 kernel: the tape passes None for the batch statistics' and
    # reserve spaces' gradients instead of building a zeros op for each.
    layer = FusedBatchNormalization(center=False, scale=False, **KWARGS)
    layer.build(SHAPE)

    @tf.function(autograph=False)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True, output_scale=tf.constant(0.5))
            loss = tf.reduce_sum(y * tf.sin(x))
        return tape.gradient(loss, x)

    graph = step.get_concrete_function(tf.TensorSpec(SHAPE)).graph
    types = [op.type for op in graph.get_operations()]
    assert "FusedBatchNormGrad" in types
    assert "ZerosLike" not in types
    zeros = [
        op
        for op in graph.get_operations()
        if op.type == "Const" and not any(t.consumers() for t in op.outputs)
    ]
    assert not zeros


def test_bfloat16_inputs_match_float32_in_training():
    x = _input()
    fused, _ = _pair(affine=True)
    half = FusedBatchNormalization(dtype="mixed_bfloat16", **KWARGS)
    half.build(SHAPE)
    half.set_weights(fused.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y32 = fused(x, training=True)
        y16 = half(x, training=True)
        loss32 = tf.reduce_sum(y32 * tf.sin(x))
        loss16 = tf.reduce_sum(tf.cast(y16, tf.float32) * tf.sin(x))
    assert y16.dtype == tf.bfloat16
    np.testing.assert_allclose(
        tf.cast(y16, tf.float32).numpy(), y32.numpy(), atol=0.05
    )
    g16 = tape.gradient(loss16, half.gamma).numpy()
    g32 = tape.gradient(loss32, fused.gamma).numpy()
    # The gradient's scale first (about 11 here), so that the tolerance
    # below, relative to it, cannot hide a wrong value: bfloat16 keeps 8
    # significant bits (~0.4%); a channel's gradient sums 128 of them.
    scale = np.abs(g32).max()
    assert scale > 5.0, g32
    np.testing.assert_allclose(g16, g32, rtol=0.01, atol=0.005 * scale)
    np.testing.assert_allclose(
        half.moving_mean.numpy(), fused.moving_mean.numpy(), atol=0.05
    )
