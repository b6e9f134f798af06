import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import assert_config_round_trip

from snas_tf.kernels.phase_split_depthwise import (
    PhaseSplitDepthwiseConv2D,
    phase_split_applies,
    phase_split_filter_grad,
    shared_space_to_batch,
    sharing_space_to_batch,
)


def _random(shape, seed):
    return tf.constant(
        np.random.default_rng(seed).normal(size=shape).astype("float32")
    )


def _values_and_gradients(layer, x, dy):
    """Output, input gradient and kernel gradient in one traced step, and
    the traced graph's filter-gradient and input-gradient op counts."""

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * dy)
        return (y, *tape.gradient(loss, [x, layer.kernel]))

    graph = step.get_concrete_function(x).graph
    types = [op.type for op in graph.get_operations()]
    counts = (
        types.count("DepthwiseConv2dNativeBackpropFilter"),
        types.count("DepthwiseConv2dNativeBackpropInput"),
    )
    return [t.numpy() for t in step(x)], counts


@pytest.mark.parametrize(
    "kwargs, width, phase_split, flipped",
    [
        (dict(padding="same"), 8, True, True),
        (dict(padding="valid"), 8, True, False),
        # A dilated conv runs on a space-to-batch of the input: 8 columns
        # become 4 per phase (SAME, padded only to a multiple of the
        # rate) or 6 (VALID, as TensorFlow pads it).
        (dict(padding="same", dilation_rate=2), 8, True, True),
        (dict(padding="valid", dilation_rate=2), 12, True, False),
        # 7 columns: padded to 8 in phase space and cropped after.
        (dict(padding="same", dilation_rate=2, kernel_size=3), 7, False, True),
        # 10 columns: 5 per phase, too odd for the phase split.
        (dict(padding="same", dilation_rate=2), 10, False, True),
        # Odd widths and 3x3 filters keep TensorFlow's filter gradient.
        (dict(padding="same"), 7, False, True),
        (dict(padding="same", kernel_size=3), 8, False, True),
        # An even filter pads asymmetrically; strides take the built-in
        # layer.
        (dict(padding="same", kernel_size=4), 8, False, False),
        (dict(padding="same", strides=2), 8, False, False),
    ],
)
def test_same_values_and_gradients_as_the_built_in_layer(
    kwargs, width, phase_split, flipped
):
    kwargs = dict(dict(kernel_size=5, use_bias=False), **kwargs)
    shape = (2, 10, width, 4)
    layers = [
        keras.layers.DepthwiseConv2D(**kwargs),
        PhaseSplitDepthwiseConv2D(**kwargs),
    ]
    for layer in layers:
        layer.build(shape)
    layers[1].set_weights(layers[0].get_weights())
    x = _random(shape, 0)
    dy = _random(layers[0].compute_output_shape(shape), 1)
    (expected, _), (got, (filter_grads, input_grads)) = (
        _values_and_gradients(layer, x, dy) for layer in layers
    )
    # The phase split runs two filter gradients (5x3 and 5x2 in phase
    # space) instead of one; the flipped input gradient is a forward
    # convolution.
    assert filter_grads == (2 if phase_split else 1)
    assert input_grads == (0 if flipped else 1)
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("shape", [(2, 8, 8, 4), (1, 9, 6, 3)])
def test_filter_gradient_equals_tensorflows(padding, shape):
    x = _random(shape, 2)
    out_rows = shape[1] - (4 if padding == "VALID" else 0)
    out_cols = shape[2] - (4 if padding == "VALID" else 0)
    dy = _random((shape[0], out_rows, out_cols, shape[3]), 3)
    expected = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
        input=x,
        filter_sizes=[5, 5, shape[3], 1],
        out_backprop=dy,
        strides=[1, 1, 1, 1],
        padding=padding,
    )
    got = phase_split_filter_grad(x, dy, padding)
    assert got.shape == (5, 5, shape[3], 1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_applies_to_even_known_widths_of_5x5_filters_only():
    assert phase_split_applies((2, 8, 8, 4), (5, 5, 4, 1))
    assert not phase_split_applies((2, 8, 7, 4), (5, 5, 4, 1))
    assert not phase_split_applies((2, 8, None, 4), (5, 5, 4, 1))
    assert not phase_split_applies((2, 8, 8, 4), (3, 3, 4, 1))
    # Depth multiplier 2.
    assert not phase_split_applies((2, 8, 8, 4), (5, 5, 4, 2))


def test_the_shifted_copy_waits_for_the_output_gradient():
    # Otherwise TensorFlow makes every layer's copy in the forward pass and
    # keeps it until that layer's backward pass.
    layer = PhaseSplitDepthwiseConv2D(5, padding="same", use_bias=False)
    layer.build((2, 8, 8, 4))

    @tf.function
    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, layer.kernel)

    graph = grads.get_concrete_function(tf.TensorSpec((2, 8, 8, 4))).graph
    (pad,) = [op for op in graph.get_operations() if op.type == "Pad"]
    ancestors, todo = set(), [pad]
    while todo:
        op = todo.pop()
        for parent in [t.op for t in op.inputs] + list(op.control_inputs):
            if parent not in ancestors:
                ancestors.add(parent)
                todo.append(parent)
    # The tape's ops for d loss / d output (the multiply by 2 * output).
    assert any(op.name.startswith("gradient_tape/") for op in ancestors)


def test_config_round_trip():
    layer = PhaseSplitDepthwiseConv2D(5, padding="same", dilation_rate=2)
    clone = assert_config_round_trip(layer)
    assert isinstance(clone, PhaseSplitDepthwiseConv2D)


def test_dilated_convs_of_one_input_share_its_space_to_batch():
    kwargs = dict(padding="same", dilation_rate=2, use_bias=False)
    shape = (2, 8, 8, 4)
    built_in = [keras.layers.DepthwiseConv2D(k, **kwargs) for k in (3, 5)]
    split = [PhaseSplitDepthwiseConv2D(k, **kwargs) for k in (3, 5)]
    for a, b in zip(built_in, split, strict=True):
        a.build(shape)
        b.build(shape)
        b.set_weights(a.get_weights())
    x, dy = _random(shape, 2), _random(shape, 3)

    def step(layers):
        @tf.function
        def run(x):
            with tf.GradientTape() as tape, sharing_space_to_batch():
                tape.watch(x)
                loss = sum(tf.reduce_sum(layer(x) * dy) for layer in layers)
            kernels = [layer.kernel for layer in layers]
            return loss, tape.gradient(loss, [x, *kernels])

        graph = run.get_concrete_function(x).graph
        types = [op.type for op in graph.get_operations()]
        return run(x), types.count("BatchToSpaceND")

    (expected, _), ((loss, grads), batch_to_space) = map(
        step, (built_in, split)
    )
    np.testing.assert_allclose(loss, expected[0], rtol=1e-5)
    for got, want in zip(grads, expected[1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # One per conv output, and one for the gradient of the one shared
    # space-to-batch (two, unshared).
    assert batch_to_space == 3
    # Outside a scope each call makes its own; the memo ends with it.
    pads = [[0, 0], [0, 0]]
    with sharing_space_to_batch():
        first = shared_space_to_batch(x, (2, 2), pads)
        assert shared_space_to_batch(x, (2, 2), pads) is first
    assert shared_space_to_batch(x, (2, 2), pads) is not first
