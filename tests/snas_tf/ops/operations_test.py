"""Tests for snas_tf.ops.operations.

SNAS §2.1, App. G.1; docs/method.md §1, §4.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from snas_tf.kernels import SharedPrefixes
from snas_tf.ops import Op, build_op, factorized_reduce
from snas_tf.search_space import PRIMITIVES

C = 4
BATCH = 2

# Conv-kernel parameter counts for C channels (docs/method.md §4, the
# "size" column).
# Strides change shapes, never kernel sizes, so the counts hold for both.
EXPECTED_CONV_PARAMS = {
    "none": 0,
    "max_pool_3x3": 0,
    "avg_pool_3x3": 0,
    "skip_connect": {1: 0, 2: 2 * C * (C // 2)},
    "sep_conv_3x3": 2 * (C * 3 * 3 + C * C),
    "sep_conv_5x5": 2 * (C * 5 * 5 + C * C),
    "dil_conv_3x3": C * 3 * 3 + C * C,
    "dil_conv_5x5": C * 5 * 5 + C * C,
}


def _input(size, seed=0, channels=C):
    return tf.random.stateless_normal(
        (BATCH, size, size, channels), seed=(seed, 1)
    )


def _layers_of(op, cls):
    return [layer for layer in op.layers if isinstance(layer, cls)]


def _convs(op):
    return _layers_of(op, keras.layers.Conv2D) + _layers_of(
        op, keras.layers.DepthwiseConv2D
    )


def _randomize_bn(op, seed=0):
    """Non-trivial moving statistics (and affine weights when present)."""
    rng = np.random.default_rng(seed)
    for bn in _layers_of(op, keras.layers.BatchNormalization):
        bn.set_weights(
            [
                rng.uniform(0.5, 2.0, w.shape).astype("float32")
                if "variance" in w.path or "gamma" in w.path
                else rng.normal(size=w.shape).astype("float32")
                for w in bn.weights
            ]
        )


def _bn_inference(y, bn):
    """BatchNorm in inference mode from the layer's variables."""
    weights = {w.path.split("/")[-1]: w.numpy() for w in bn.weights}
    return tf.nn.batch_normalization(
        y,
        weights["moving_mean"],
        weights["moving_variance"],
        weights.get("beta"),
        weights.get("gamma"),
        bn.epsilon,
    )


@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("primitive", PRIMITIVES)
def test_every_primitive_gives_the_right_shape(primitive, stride, size):
    op = build_op(primitive, C, stride=stride)
    if primitive == "none":
        assert op is None
        return
    out = op(_input(size))
    side = math.ceil(size / stride)
    assert tuple(out.shape) == (BATCH, side, side, C)


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        (dict(primitive="conv_7x7", channels=C), "'conv_7x7'"),
        (dict(primitive="sep_conv_3x3", channels=C, stride=3), "stride 3"),
        (dict(primitive="none", channels=C, stride=0), "stride 0"),
    ],
)
def test_build_op_rejects_bad_arguments_naming_them(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        build_op(**kwargs)


def test_factorized_reduce_rejects_odd_channels():
    with pytest.raises(ValueError, match="got 5"):
        factorized_reduce(5)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("primitive", PRIMITIVES[1:])
def test_no_conv_has_a_bias(primitive, stride):
    op = build_op(primitive, C, stride=stride)
    op(_input(8))
    for layer in _convs(op):
        assert layer.use_bias is False, layer.name
        assert len(layer.weights) == 1, layer.name


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize(
    "primitive, stride",
    [("avg_pool_3x3", 1), ("skip_connect", 2), ("sep_conv_3x3", 1)],
)
def test_batch_norm_affine_flag(primitive, stride, affine):
    op = build_op(primitive, C, stride=stride, affine=affine)
    op(_input(8))
    bns = _layers_of(op, keras.layers.BatchNormalization)
    assert bns
    for bn in bns:
        names = sorted(w.path.split("/")[-1] for w in bn.weights)
        expected = ["moving_mean", "moving_variance"]
        if affine:
            expected = sorted(expected + ["beta", "gamma"])
        assert names == expected
        assert len(bn.trainable_weights) == (2 if affine else 0)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("primitive", PRIMITIVES[1:])
def test_conv_parameter_counts_match_reference_formulas(primitive, stride):
    op = build_op(primitive, C, stride=stride)
    op(_input(8))
    expected = EXPECTED_CONV_PARAMS[primitive]
    if isinstance(expected, dict):
        expected = expected[stride]
    count = sum(int(np.prod(w.shape)) for c in _convs(op) for w in c.weights)
    assert count == expected


@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_stride_2_dil_conv_equals_the_strided_dilated_conv(kernel_size, size):
    # docs/method.md §1: the reference pads by 2 (3x3) or 4 (5x5) and runs a
    # dilation-2, stride-2 depthwise conv. TF refuses that combination, so
    # the reference here is the stride-1 dilated conv on the explicitly
    # padded input, subsampled afterwards: the same numbers.
    op = build_op(f"dil_conv_{kernel_size}x{kernel_size}", C, 2, affine=True)
    x = _input(size, seed=3)
    op(x)
    _randomize_bn(op)
    (dw,) = _layers_of(op, keras.layers.DepthwiseConv2D)
    (pw,) = [c for c in _convs(op) if c is not dw]
    (bn,) = _layers_of(op, keras.layers.BatchNormalization)

    pad = kernel_size - 1  # 2 for 3x3, 4 for 5x5: dilation * (k - 1) / 2.
    y = tf.pad(tf.nn.relu(x), [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    (dw_kernel,) = dw.get_weights()
    y = tf.nn.depthwise_conv2d(
        y, dw_kernel, strides=[1, 1, 1, 1], padding="VALID", dilations=[2, 2]
    )[:, ::2, ::2, :]
    (pw_kernel,) = pw.get_weights()
    y = tf.nn.conv2d(y, pw_kernel, strides=1, padding="VALID")
    expected = _bn_inference(y, bn)

    got = op(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_factorized_reduce_equals_reference():
    # Reference: BN(concat(conv_1(relu(x)), conv_2(relu(x)[:, 1:, 1:]))),
    # both 1x1 stride-2 "valid" convs (even sizes only in the reference).
    op = factorized_reduce(C, affine=True)
    x = _input(8, seed=4)
    op(x)
    _randomize_bn(op, seed=1)
    conv_1, conv_2 = _layers_of(op, keras.layers.Conv2D)
    (bn,) = _layers_of(op, keras.layers.BatchNormalization)

    r = tf.nn.relu(x)
    y = tf.concat(
        [
            tf.nn.conv2d(r, conv_1.get_weights()[0], 2, "VALID"),
            tf.nn.conv2d(r[:, 1:, 1:, :], conv_2.get_weights()[0], 2, "VALID"),
        ],
        axis=-1,
    )
    expected = _bn_inference(y, bn)
    np.testing.assert_allclose(op(x), expected, atol=1e-5)


@pytest.mark.parametrize("size", [8, 7])
def test_factorized_reduce_gradients_equal_a_float64_reference(size):
    # With oneDNN on (as `import snas_tf` and conftest set it), TF 2.21's
    # filter gradient of a plain 1x1 stride-2 conv with 4 input channels
    # was wrong in nearly every call of a tf.function (and could abort the
    # process with heap corruption). Repeated calls, because it was
    # intermittent; float64 runs TF's Eigen kernels, not oneDNN.
    op = factorized_reduce(C, affine=True)
    x = _input(size, seed=6)
    op(x)
    _randomize_bn(op, seed=3)
    conv_1, conv_2 = _layers_of(op, keras.layers.Conv2D)
    (bn,) = _layers_of(op, keras.layers.BatchNormalization)
    dy = tf.random.stateless_normal(op(x).shape, seed=(7, 1))

    weights = bn.trainable_weights + [conv_1.kernel, conv_2.kernel]

    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(op(x) * dy)
        return tape.gradient(loss, [x] + weights)

    sources = [tf.cast(v, tf.float64) for v in [x] + weights]
    with tf.GradientTape() as tape:
        tape.watch(sources)
        x64, gamma, beta, k1, k2 = sources
        r = tf.nn.relu(x64)
        shifted = tf.pad(r[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])
        y = tf.concat(
            [
                tf.nn.conv2d(r, k1, 2, "VALID"),
                tf.nn.conv2d(shifted, k2, 2, "VALID"),
            ],
            axis=-1,
        )
        mean, variance = (
            tf.cast(v, tf.float64) for v in (bn.moving_mean, bn.moving_variance)
        )
        y = tf.nn.batch_normalization(
            y, mean, variance, beta, gamma, bn.epsilon
        )
        loss = tf.reduce_sum(y * tf.cast(dy, tf.float64))
    expected = tape.gradient(loss, sources)

    for _ in range(10):
        for got, want in zip(gradients(), expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size, stride", [(8, 1), (7, 2)])
def test_avg_pool_excludes_padding(size, stride):
    op = build_op("avg_pool_3x3", C, stride=stride)
    pool = op.layers[0]
    assert isinstance(pool, keras.layers.AveragePooling2D)
    out = keras.ops.convert_to_numpy(pool(tf.ones((BATCH, size, size, C))))
    # Counting the padding would give 4/9 at a corner and 6/9 on an edge.
    np.testing.assert_array_equal(out[:, 0, 0, :], 1.0)
    np.testing.assert_array_equal(out, 1.0)


@pytest.mark.parametrize(
    "primitive, stride", [("sep_conv_3x3", 1), ("skip_connect", 2)]
)
def test_tf_keras_twin_matches_keras_3_op(primitive, stride):
    # tf_keras is a hard dependency (the TFMOT twin), so a missing install
    # fails here; imported lazily as only this test needs it.
    import tf_keras

    op = build_op(primitive, C, stride=stride, affine=True)
    twin = build_op(
        primitive, C, stride=stride, affine=True, layers=tf_keras.layers
    )
    x = _input(8, seed=5)
    op(x)
    twin(x)
    _randomize_bn(op, seed=2)
    assert len(op.layers) == len(twin.layers)
    for layer, twin_layer in zip(op.layers, twin.layers, strict=True):
        assert isinstance(twin_layer, tf_keras.layers.Layer)
        assert type(layer).__name__ == type(twin_layer).__name__
        twin_layer.set_weights(layer.get_weights())
    np.testing.assert_allclose(twin(x), op(x), atol=1e-5)


def _counting(layer, calls):
    """Wraps `layer.call` to count its calls (a Keras layer's `__call__`
    reaches it once per call)."""
    call = layer.call

    def counted(*args, **kwargs):
        calls.append(layer.name)
        return call(*args, **kwargs)

    layer.call = counted


@pytest.mark.parametrize(
    "primitives, stride, expected_calls",
    [
        # The pools of two edges leaving one node: one pooling each.
        (["max_pool_3x3", "max_pool_3x3", "avg_pool_3x3"], 1, 2),
        # ReLU shared by all three; the subsampling by the dilated two.
        (["sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5"], 2, 2),
    ],
)
def test_shared_prefixes_compute_each_prefix_once_with_the_same_output(
    primitives, stride, expected_calls
):
    ops_ = [build_op(p, C, stride=stride) for p in primitives]
    x = _input(8, seed=4)
    alone = [op(x) for op in ops_]
    calls = []
    for op in ops_:
        for layer in op.layers[: len(op.shared)]:
            _counting(layer, calls)
    prefixes = SharedPrefixes(x)
    for op, expected in zip(ops_, alone, strict=True):
        np.testing.assert_allclose(op(x, prefixes=prefixes), expected)
    assert len(calls) == expected_calls, calls


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("primitive", PRIMITIVES[1:])
def test_shared_layers_hold_no_weights(primitive, stride):
    # A layer with weights of its own must never stand in for another
    # op's layer.
    op = build_op(primitive, C, stride=stride)
    op(_input(8))
    for layer in op.layers[: len(op.shared)]:
        assert not layer.weights, layer.name


def test_op_must_keep_its_last_layer():
    with pytest.raises(ValueError, match="shares 1 of its 1 layers"):
        Op("max_pool_3x3", [keras.layers.MaxPooling2D(3)], shared=("max",))
