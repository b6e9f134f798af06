"""The fast-kernel switch: the supernet built from `snas_tf.kernels` and the
one built from plain Keras layers compute the same thing."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import assert_config_round_trip, tiny_data

from snas_tf.kernels import (
    FusedBatchNormalization,
    SharedPrefixes,
    scaled_op,
)
from snas_tf.kernels.fused_batch_norm import EPSILON_FLOOR
from snas_tf.kernels.phase_split_depthwise import PhaseSplitDepthwiseConv2D
from snas_tf.kernels.slice_cropping import SliceCropping2D
from snas_tf.models.snas_supernet import SNASSupernet
from snas_tf.ops import build_op
from snas_tf.search_space import PRIMITIVES

ETA = 0.5
KERNEL_CLASSES = (
    FusedBatchNormalization,
    PhaseSplitDepthwiseConv2D,
    SliceCropping2D,
)


def _pair(drop_path_prob=None):
    """A fast and a plain supernet with the same weights: all 8 ops, a
    normal cell and two reduction cells (the second preprocesses with a
    FactorizedReduce), 8x8 inputs; drop-path the search's default, the
    same factors in both (same seed)."""
    x, y = tiny_data(n=2, size=8, classes=3)
    models = []
    for fast in (True, False):
        model = SNASSupernet(
            num_classes=3,
            channels=4,
            num_cells=3,
            num_nodes=2,
            primitives=PRIMITIVES,
            penalty_strength=ETA,
            seed=1,
            fast_kernels=fast,
            drop_path_prob=drop_path_prob,
            name="supernet",
        )
        model.build(x.shape)
        models.append(model)
    fast, plain = models
    # The fused layer's epsilon floor (by design, `snas_tf.kernels`): the
    # plain twin takes it too, so that the rest compares exactly. At these
    # tiny sizes (n = 8 values per channel at 2x2) it moves gradients by
    # about 4e-4 relative, far beyond rounding.
    for layer in _all(plain):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.epsilon = max(layer.epsilon, EPSILON_FLOOR)
    for a, b in zip(fast.weights, plain.weights, strict=True):
        # Layer names carry global counters; the variable's own name and
        # shape must agree.
        same = a.name == b.name and a.shape == b.shape
        assert same, (a.path, b.path)
    rng = np.random.default_rng(3)
    for a, b in zip(fast.weights, plain.weights, strict=True):
        value = rng.normal(size=a.shape).astype("float32")
        if "variance" in a.path:
            value = np.abs(value) + 0.5
        a.assign(value)
        b.assign(value)
    return fast, plain, x, y


def _loss_and_grads(model, x, y, noise):
    variables = model.weight_variables + model.arch_variables
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        sample = model.sample_architecture(noise=noise)
        logits = model.forward(x, sample, training=True)
        loss = ce(y, logits) + ETA * model.resource_penalty(sample)
    return logits, loss, tape.gradient(loss, variables)


def _close(a, b, what):
    # Float32 rounding: each path lies within about 3e-5 relative of a
    # float64 computation at these sizes.
    a, b = np.asarray(a), np.asarray(b)
    scale = np.max(np.abs(b))
    np.testing.assert_allclose(a, b, atol=1e-4 * scale + 1e-6, err_msg=what)


def test_plain_supernet_uses_no_kernel_stand_ins():
    fast, plain, _, _ = _pair()
    assert any(isinstance(la, KERNEL_CLASSES) for la in _all(fast))
    assert not any(isinstance(la, KERNEL_CLASSES) for la in _all(plain))


def _all(model):
    return list(model._flatten_layers(include_self=False))


def test_fast_and_plain_give_the_same_outputs_and_gradients():
    # Drop-path off: an edge that drops one of the two examples leaves
    # BatchNorm gradients over 4 values (2x2 maps), where float rounding
    # alone moved a kernel's gradient by 2.5e-4 relative; the fit step
    # below compares the paths with drop-path on.
    fast, plain, x, y = _pair(drop_path_prob=0.0)
    # Evaluation first: a training pass updates the moving variances,
    # which differ by design (below).
    for mode in ("darts", "argmax"):
        _close(
            fast(x, training=False, arch_mode=mode),
            plain(x, training=False, arch_mode=mode),
            f"eval logits, {mode}",
        )
    noise = fast.draw_noise()
    f_logits, f_loss, f_grads = _loss_and_grads(fast, x, y, noise)
    p_logits, p_loss, p_grads = _loss_and_grads(plain, x, y, noise)
    _close(f_logits, p_logits, "training-mode logits")
    _close(f_loss, p_loss, "loss")
    names = [v.path for v in fast.weight_variables + fast.arch_variables]
    assert len(f_grads) == len(p_grads) == len(names)
    for name, a, b in zip(names, f_grads, p_grads, strict=True):
        _close(a, b, name)


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        arch_optimizer=keras.optimizers.Adam(0.01),
        jit_compile=False,
    )


def test_one_fit_step_updates_alike_but_the_moving_variance():
    fast, plain, x, y = _pair()
    before = {v.path: v.numpy() for v in fast.non_trainable_variables}
    for model in (fast, plain):
        _compile(model)
        model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
    trained = zip(
        fast.trainable_variables, plain.trainable_variables, strict=True
    )
    for a, b in trained:
        _close(a, b, a.path)
    pairs = zip(
        fast.non_trainable_variables, plain.non_trainable_variables, strict=True
    )
    checked = 0
    for a, b in pairs:
        if "moving_variance" not in a.path:
            _close(a, b, a.path)
            continue
        # moving = 0.9 moving + 0.1 var: the fused BatchNorm takes the
        # unbiased batch variance (PyTorch's), Keras the biased one, so
        # their updates differ by n / (n - 1), n = batch * H * W.
        old = 0.9 * before[a.path]
        fast_step, plain_step = a.numpy() - old, b.numpy() - old
        misses = [
            np.max(np.abs(fast_step - n / (n - 1) * plain_step))
            for n in (2 * side * side for side in (8, 4, 2))
        ]
        assert min(misses) < 1e-4 * np.max(np.abs(a)), (a.path, misses)
        assert max(misses) > 1e-4 * np.max(np.abs(a)), a.path
        checked += 1
    assert checked


@pytest.mark.parametrize("primitive", PRIMITIVES[1:])
def test_scaled_op_equals_the_weight_times_the_op(primitive):
    from snas_tf.kernels import SEARCH_LAYERS

    op = build_op(primitive, 4, stride=2, layers=SEARCH_LAYERS)
    x = tf.random.stateless_normal((2, 8, 8, 4), seed=(1, 2))
    weight = tf.constant(0.3)
    expected = weight * op(x)
    _close(scaled_op(op, x, weight), expected, primitive)
    _close(scaled_op(op, x, weight, SharedPrefixes(x)), expected, primitive)


def test_recompute_needs_the_fast_kernels():
    with pytest.raises(ValueError, match="recompute=2 needs fast_kernels"):
        SNASSupernet(num_cells=3, recompute=2, fast_kernels=False)


def test_config_round_trip_keeps_the_switch():
    model = SNASSupernet(channels=4, num_cells=1, fast_kernels=False)
    assert_config_round_trip(model)
    assert SNASSupernet.from_config(model.get_config()).fast_kernels is False
