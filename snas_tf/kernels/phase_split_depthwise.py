"""A `DepthwiseConv2D` whose gradients run on oneDNN's fast kernels.

Three changes to how TensorFlow computes the search supernet's
depthwise convolutions, each exact: the 5x5 filter gradient in phase
space (below), the input gradient of SAME convolutions as a forward
convolution (`depthwise_conv`), and the space-to-batch of dilated
convolutions shared by all those on one input (`dilated_depthwise_conv`,
`sharing_space_to_batch`).

oneDNN's depthwise kernel computes filter gradients for filters up to 3
wide only; TensorFlow hands a 5x5 one to oneDNN's generic convolution
kernel, much slower per multiply-add than a 3x3 one. In the search
supernet (`sep_conv_5x5` twice, `dil_conv_5x5` once per edge)
5x5 filter gradients were a large share of a step (profiles in
`benchmarks/README.md`).

The gradient is computed by splitting the width into even and odd
columns ("phases"). For channels-last data, reshaping `(N, H, W, C)` to
`(N, H, W / 2, 2C)` is free and puts column `2w + p` of channel `c` at
column `w`, channel `p * C + c`. A 5-wide filter tap at an even offset
(-2, 0, 2) pairs an output column with an input column of its own phase,
one phase column apart: in phase space it is a 5x3 depthwise filter. The
taps at odd offsets (-1, 1) pair each output phase with the other input
phase; shifting the input by one column first (one padding or slice
copy) makes them a 5x2 depthwise filter in phase space. Both run on the
depthwise kernel, and the two filter gradients, summed over the phases,
are the 5x5 one: the same sums in another order.

Only the search supernet uses it: the derived child keeps the built-in
layer for every export toolchain.
"""

import contextlib
import threading

import keras
import tensorflow as tf

_STRIDES = [1, 1, 1, 1]
# Filter columns that the phase-space filter columns stand for.
_EVEN_TAPS = 3  # offsets -2, 0, 2: columns 0, 2, 4
_ODD_TAPS = 2  # offsets -1, 1: columns 1, 3
# Columns of concat([even taps, odd taps]) in filter order 0..4.
_TAP_ORDER = [0, 3, 1, 4, 2]


def phase_split_applies(input_shape, kernel_shape) -> bool:
    """Whether `depthwise_conv` takes the phase-split gradient: a 5x5
    filter with depth multiplier 1 and an even, known input width."""
    width = input_shape[2]
    return (
        tuple(kernel_shape[:2]) == (5, 5)
        and kernel_shape[3] == 1
        and width is not None
        and width % 2 == 0
    )


def _depthwise_filter_grad(x, filter_shape, dy, padding):
    return tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
        input=x,
        filter_sizes=filter_shape,
        out_backprop=dy,
        strides=_STRIDES,
        padding=padding,
    )


def _to_phases(x):
    _, h, w, c = x.shape
    return tf.reshape(x, (-1, h, w // 2, 2 * c))


def phase_split_filter_grad(x, dy, padding):
    """Filter gradient of a stride-1 5x5 depthwise convolution.

    Args:
        x: (N, H, W, C) input of the convolution, W even.
        dy: gradient of its (N, H', W', C) output.
        padding: "SAME" or "VALID".

    Returns:
        (5, 5, C, 1), equal to `DepthwiseConv2dNativeBackpropFilter` up to
        float rounding.
    """
    channels = x.shape[-1]
    dy_phases = _to_phases(dy)
    even = _depthwise_filter_grad(
        _to_phases(x), [5, _EVEN_TAPS, 2 * channels, 1], dy_phases, padding
    )
    # Shifted one column: output column 2w + p meets input columns
    # 2w + p - 1 and 2w + p + 1 at phase-space columns w and w + 1. The
    # copy waits for dy: made as soon as x exists, every layer's copy would
    # live from the forward pass to its backward.
    with tf.control_dependencies([dy]):
        if padding == "SAME":
            shifted = tf.pad(x, [[0, 0], [2, 2], [1, 1], [0, 0]])
        else:
            shifted = x[:, :, 1:-1, :]
    odd = _depthwise_filter_grad(
        _to_phases(shifted),
        [5, _ODD_TAPS, 2 * channels, 1],
        dy_phases,
        "VALID",
    )
    # (5, 5, 2C, 1) -> (5, 5, C, 1): a filter tap serves both phases.
    taps = tf.reshape(tf.concat([even, odd], axis=1), (5, 5, 2, channels, 1))
    return tf.gather(tf.reduce_sum(taps, axis=2), _TAP_ORDER, axis=1)


def _symmetric_same(kernel_shape, padding) -> bool:
    """SAME padding of an odd filter: as many rows and columns padded
    before as after."""
    kh, kw = kernel_shape[:2]
    return padding == "SAME" and kh % 2 == 1 and kw % 2 == 1


def flipped_input_grad_applies(kernel_shape, padding) -> bool:
    """Whether `depthwise_conv` computes its input gradient as a forward
    convolution: SAME padding, an odd filter and depth multiplier 1."""
    return _symmetric_same(kernel_shape, padding) and kernel_shape[3] == 1


def depthwise_conv(x, kernel, padding):
    """Stride-1, undilated depthwise convolution of `x` with `kernel`
    ((kh, kw, C, M)) with faster gradients than TensorFlow's own op.

    - Input gradient, where `flipped_input_grad_applies`: with SAME
      padding and an odd filter the padding is symmetric, so the input
      gradient is the forward convolution of the output gradient with the
      filter rotated by 180 degrees (exact: the same products, summed in
      another order). oneDNN runs the forward kernel faster than its
      backward-data one at the supernet's shapes (`benchmarks/README.md`).
    - Filter gradient: `phase_split_filter_grad` where
      `phase_split_applies`.

    Anything else takes TensorFlow's gradients.
    """

    def forward(x, kernel):
        return tf.raw_ops.DepthwiseConv2dNative(
            input=x, filter=kernel, strides=_STRIDES, padding=padding
        )

    flip = flipped_input_grad_applies(kernel.shape, padding)
    split = phase_split_applies(x.shape, kernel.shape)
    if not (flip or split):
        return forward(x, kernel)

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            if flip:
                dx = forward(dy, tf.reverse(kernel, [0, 1]))
            else:
                dx = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
                    input_sizes=tf.shape(x),
                    filter=kernel,
                    out_backprop=dy,
                    strides=_STRIDES,
                    padding=padding,
                )
            if split:
                dw = phase_split_filter_grad(x, dy, padding)
            else:
                dw = _depthwise_filter_grad(x, list(kernel.shape), dy, padding)
            return dx, dw

        return forward(x, kernel), grad

    return conv(x, kernel)


# The memo of the innermost `sharing_space_to_batch` scope, per thread
# (MirroredStrategy traces each replica in a thread of its own).
_SHARING = threading.local()


@contextlib.contextmanager
def sharing_space_to_batch():
    """Inside, `shared_space_to_batch` makes one space-to-batch per input
    tensor (and graph); the memo is dropped on exit.

    A search cell opens one around its edges: both dilated convs of every
    edge leaving a node take the space-to-batch of the same ReLU(node)
    (an edge called on its own shares nothing).
    Shared, the forward pass makes one instead of up to ten, and the
    backward pass sums their gradients in that space before one
    `BatchToSpaceND` (TensorFlow's runtime merges identical forward ops,
    but not their gradients).
    """
    previous = getattr(_SHARING, "memo", None)
    _SHARING.memo = {}
    try:
        yield
    finally:
        _SHARING.memo = previous


def shared_space_to_batch(x, rate, pads):
    """`tf.space_to_batch(x, rate, pads)`, made once per input tensor
    inside a `sharing_space_to_batch` scope (a pure function of its
    arguments, so reusing it is exact); a new one outside."""
    memo = getattr(_SHARING, "memo", None)
    if memo is None:
        return tf.space_to_batch(x, rate, pads)
    graph = tf.compat.v1.get_default_graph()
    key = (id(graph), x.ref(), tuple(rate), tuple(map(tuple, pads)))
    if key not in memo:
        memo[key] = tf.space_to_batch(x, rate, pads)
    return memo[key]


def dilated_depthwise_conv(x, kernel, rate, padding):
    """`depthwise_conv` with dilation `rate` ((rh, rw)), as TensorFlow
    computes it: an undilated convolution of the input's space-to-batch.

    For SAME padding, an odd filter and a known size the space-to-batch
    is padded only up to a multiple of the rate, and the convolution in
    that space is SAME too: a SAME dilated filter's padding is
    symmetric, so each phase of the input meets exactly the phase of the
    output it does in the dilated convolution, and the cropped positions
    hold the zeros of SAME padding. So every stride-1 convolution takes
    `depthwise_conv`'s flipped input gradient, and inside a
    `sharing_space_to_batch` scope the dilated convs of one input share
    its space-to-batch (`shared_space_to_batch`).
    Anything else is `tf.nn.with_space_to_batch`, as TensorFlow's own
    layer.
    """
    _, h, w, _ = x.shape
    if _symmetric_same(kernel.shape, padding) and h and w:
        pads = [[0, -h % rate[0]], [0, -w % rate[1]]]
        phases = shared_space_to_batch(x, rate, pads)
        y = depthwise_conv(phases, kernel, "SAME")
        return tf.batch_to_space(y, rate, crops=pads)
    return tf.nn.with_space_to_batch(
        x,
        dilation_rate=list(rate),
        padding=padding,
        op=lambda x, _, padding: depthwise_conv(x, kernel, padding),
        filter_shape=list(kernel.shape[:2]),
    )


@keras.saving.register_keras_serializable(package="snas_tf")
class PhaseSplitDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with faster gradients.

    Same arguments, variables and config as the built-in layer; the output
    and gradients are equal up to float rounding. A stride-1, channels-last
    float32 convolution without bias or activation runs `depthwise_conv`
    (dilated ones `dilated_depthwise_conv`, on a space-to-batch of the
    input as TensorFlow's own depthwise convolution does), which splits
    the 5x5 filter gradients and computes SAME input gradients as forward
    convolutions; anything else the built-in computation.
    """

    def call(self, inputs):
        if (
            tuple(self.strides) != (1, 1)
            or self.data_format != "channels_last"
            or self.use_bias
            or self.activation is not keras.activations.linear
            or self.compute_dtype != "float32"
        ):
            return super().call(inputs)
        kernel = tf.convert_to_tensor(self.kernel)
        padding = self.padding.upper()
        if tuple(self.dilation_rate) == (1, 1):
            return depthwise_conv(inputs, kernel, padding)
        return dilated_depthwise_conv(
            inputs, kernel, tuple(self.dilation_rate), padding
        )
