"""`SNASSupernet.injected_noise`: a step replays given Gumbel noise."""

import numpy as np
import pytest
import tensorflow as tf
from testing_utils import plain_compile, tiny_data, values

from snas_tf.layers import gumbel_softmax
from snas_tf.models.snas_supernet import SNASSupernet


def _supernet():
    x, y = tiny_data(n=2, size=8, classes=3)
    model = SNASSupernet(
        num_classes=3,
        channels=4,
        num_cells=3,
        num_nodes=2,
        seed=1,
        drop_path_prob=0.0,  # the hand-made pass below has no masks
    )
    model.build(x.shape)
    plain_compile(model)
    return model, x, y


def _noise(model, seed=5):
    shape = (2,) + tuple(model.arch_logits_normal.shape)
    return np.random.default_rng(seed).gumbel(size=shape).astype("float32")


def test_draws_return_the_injected_noise_without_advancing_the_seed():
    model, _, _ = _supernet()
    noise = _noise(model)
    state = model.noise_seed.state.numpy()
    with model.injected_noise(noise):
        np.testing.assert_array_equal(model.draw_noise(), noise)
        sample = model.sample_architecture()
    np.testing.assert_allclose(
        sample.normal,
        gumbel_softmax.relaxed_one_hot(
            model.arch_logits_normal, model.temperature, noise[0]
        ),
        rtol=1e-6,
    )
    np.testing.assert_array_equal(model.noise_seed.state.numpy(), state)
    assert not np.allclose(model.draw_noise(), noise)


@pytest.mark.slow
def test_fit_inside_the_block_steps_with_the_noise():
    """A traced step (fit) updates α by exactly minus the gradient that
    the injected noise gives (plain SGD, lr 1); the traced function does
    not outlive the block."""
    model, x, y = _supernet()
    noise = _noise(model)
    start = values(model.weights)
    with tf.GradientTape() as tape:
        sample = model.sample_architecture(noise=noise)
        loss = model.compute_loss(
            x=x, y=y, y_pred=model.forward(x, sample, training=True)
        ) + model.penalty_strength * model.resource_penalty(sample)
    grads = tape.gradient(loss, model.arch_variables)
    for v, s in zip(model.weights, start, strict=True):
        v.assign(s)  # the moving statistics of that pass
    alpha = values(model.arch_variables)
    with model.injected_noise(noise):
        model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
        assert model.train_function is not None
    assert model.train_function is None
    for a, g, after in zip(
        alpha, grads, values(model.arch_variables), strict=True
    ):
        np.testing.assert_allclose(after, a - g.numpy(), atol=1e-5)


def test_noise_of_another_shape_is_refused():
    model, _, _ = _supernet()
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 5, 8\)"):
        with model.injected_noise(np.zeros((2, 14, 8))):
            pass
