"""Tests of `snas_tf.training`: global clip and coupled L2, Grappler
scoping, the one-function train step."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import grappler_off

from snas_tf import training


def test_clip_global_clips_the_summed_gradient_once(mirrored):
    g = [np.array([3.0, 0.0], "float32"), np.array([0.0, 4.0], "float32")]
    per_replica = mirrored.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(g[ctx.replica_id_in_sync_group])
    )
    out = mirrored.run(
        lambda t: training.clip_global([t], 2.5)[0], (per_replica,)
    )
    results = mirrored.experimental_local_results(out)
    # Global gradient (3, 4) has norm 5: clipped to 2.5 gives (1.5, 2);
    # each replica holds half, so the optimizer's sum gives the clip.
    for r in results:
        np.testing.assert_allclose(r, [0.75, 1.0], atol=1e-6)


@pytest.mark.parametrize("scale", [0.0, 0.1, 10.0, np.inf])
def test_clip_global_equals_tf_clip_by_global_norm(scale):
    # Below, at and above the clip; an infinite gradient gives NaN as TF's
    # (NaNGuard then stops the run instead of a silent zero update).
    g = [tf.constant([3.0, 0.0]) * scale, tf.constant([[0.0], [4.0]])]
    expected, _ = tf.clip_by_global_norm(g, 2.5)
    got = training.clip_global(g, 2.5)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert np.isnan(got[0].numpy()).any() == np.isinf(scale)


def test_apply_update_clips_then_adds_coupled_decay():
    v = keras.Variable(np.array([1.0, -2.0], "float32"))
    optimizer = keras.optimizers.SGD(0.5)
    grad = tf.constant([30.0, 40.0])  # norm 50, clipped to norm 5: (3, 4)
    training.apply_update(optimizer, [grad], [v], 5.0, 0.1)
    # w - lr * (clipped g + wd * w), as PyTorch's SGD after clip_grad_norm.
    expected = np.array([1.0, -2.0]) - 0.5 * (
        np.array([3.0, 4.0]) + 0.1 * np.array([1.0, -2.0])
    )
    np.testing.assert_allclose(np.array(v), expected, rtol=1e-6)


def test_a_missing_gradient_leaves_only_the_decay():
    v = keras.Variable(np.array([2.0], "float32"))
    training.apply_update(keras.optimizers.SGD(1.0), [None], [v], 5.0, 0.25)
    np.testing.assert_allclose(np.array(v), [1.5])


@pytest.mark.parametrize("attr", ["clipnorm", "global_clipnorm", "clipvalue"])
def test_an_optimizer_that_clips_by_itself_is_rejected(attr):
    with pytest.raises(ValueError, match=attr):
        training.check_no_clipping(keras.optimizers.SGD(0.1, **{attr: 1.0}))


@pytest.mark.parametrize("start_off", [False, True])
@pytest.mark.parametrize("enabled", [False, True])
def test_grappler_is_set_inside_and_restored_after(start_off, enabled):
    tf.config.optimizer.set_experimental_options(
        {"disable_meta_optimizer": start_off}
    )
    try:
        with pytest.raises(KeyError):
            with training.grappler(enabled):
                assert grappler_off() is not enabled
                raise KeyError("an error inside still restores it")
        assert grappler_off() is start_off
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": False}
        )


def test_one_function_step_runs_train_step_unconverted():
    # AutoGraph is off in the one function: train_step runs as written,
    # not as AutoGraph's rewrite (a generated file), which cost seconds
    # of the trace.
    files = []

    class Probe(training.SingleFunctionTrainStep, keras.Sequential):
        def train_step(self, data):
            files.append(sys._getframe().f_code.co_filename)
            return super().train_step(data)

    model = Probe([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((4, 3), "float32")
    with training.grappler(False):
        history = model.fit(x, x[:, :2], batch_size=2, epochs=1, verbose=0)
    assert files == [__file__]
    assert np.isfinite(history.history["loss"]).all()
