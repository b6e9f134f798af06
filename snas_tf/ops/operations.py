"""Candidate operations of the SNAS / DARTS cell, from built-in layers only.

Every op is a small graph of built-in Keras layers wrapped in an `Op`: a
plain callable, not a `keras.layers.Layer`. Called on a tensor it applies its
layers, so the same builder serves the search supernet (inside a mixed-edge
layer) and the child network (called on symbolic tensors it leaves a flat
functional graph of built-in layers that SavedModel, TFLite, tf2onnx and
TFMOT take as is). Passing `layers=tf_keras.layers` builds the Keras 2 twin.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.1 and Appendix G.1; the DARTS operation set (Liu et al. 2019).
"""

import keras

from snas_tf.search_space import PRIMITIVES, check_primitive

# PyTorch BatchNorm2d defaults, as in the reference code: momentum 0.1 there
# is 0.9 here (Keras keeps `momentum` of the old value).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


class Op:
    """A candidate operation: built-in layers plus how to apply them.

    Args:
        primitive: the op's name (one of `PRIMITIVES`, or a helper name such
            as `"relu_conv_bn"`); kept as `self.primitive`.
        layers: its layers in creation order (for weight tracking), kept as
            `self.layers`; the last one is applied last.
        body: optional `body(x)` computing the op from the output of its
            shared layers (below) up to its last layer (default: the other
            layers in order).
        shared: one key per leading layer that holds no weights and depends
            only on its input (a ReLU, a pooling, a subsampling), naming
            what it computes: `("relu",)`, `("max_pool_3x3/s1",)`. Ops on
            one input with the same leading keys compute the same tensors,
            which a caller may compute once for all of them
            (`snas_tf.kernels.SharedPrefixes`); kept as `self.shared`.

    Raises:
        ValueError: if every layer would be shared (the last one is the
            op's own).
    """

    def __init__(self, primitive, layers, body=None, shared=()):
        self.primitive = primitive
        self.layers = list(layers)
        self._body = body
        self.shared = tuple(shared)
        if self.shared and len(self.shared) >= len(self.layers):
            raise ValueError(
                f"Op {primitive!r} shares {len(self.shared)} of its "
                f"{len(self.layers)} layers; its last layer must be its own."
            )

    def hidden(self, x, prefixes=None):
        """The input of the op's last layer: its other layers applied to x.

        `prefixes`, when given, is a `snas_tf.kernels.SharedPrefixes` of
        `x`: the op takes the output of its shared leading layers from it
        instead of applying them (a search cell with fast kernels shares
        them among all the ops of all the edges leaving one node).
        """
        n = len(self.shared)
        if prefixes is not None and n:
            x = prefixes(self)
        else:
            for layer in self.layers[:n]:
                x = layer(x)
        if self._body is not None:
            return self._body(x)
        for layer in self.layers[n:-1]:
            x = layer(x)
        return x

    def __call__(self, x, prefixes=None):
        """The op's output O(x) (`prefixes` as in `hidden`)."""
        if not self.layers:
            return x
        return self.layers[-1](self.hidden(x, prefixes))

    @property
    def is_identity(self) -> bool:
        return not self.layers


def batch_norm(affine, name, layers=keras.layers):
    """BatchNorm with the reference's momentum/epsilon; optional affine."""
    return layers.BatchNormalization(
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        center=affine,
        scale=affine,
        name=name,
    )


def _names(prefix):
    """Returns a function giving unique sub-layer names under `prefix`."""
    if prefix is None:
        return lambda suffix: None
    return lambda suffix: f"{prefix}_{suffix}"


def relu_conv_bn(
    channels, kernel_size=1, stride=1, affine=True, name=None, layers=None
):
    """ReLU, k x k convolution (no bias), BatchNorm: the cell preprocess."""
    layers = layers or keras.layers
    n = _names(name)
    return Op(
        "relu_conv_bn",
        [
            layers.ReLU(name=n("relu")),
            layers.Conv2D(
                channels,
                kernel_size,
                strides=stride,
                padding="same",
                use_bias=False,
                name=n("conv"),
            ),
            batch_norm(affine, n("bn"), layers),
        ],
        shared=("relu",),
    )


def factorized_reduce(channels, affine=True, name=None, layers=None):
    """Halves the resolution with two offset 1x1 stride-2 convolutions.

    ReLU; one 1x1 stride-2 conv of `channels // 2` filters on x, another on
    x shifted by one pixel; concatenated; BatchNorm. The shift crops the first
    row and column and pads one at the end, so odd sizes give the same
    `ceil(H / 2)` as the unshifted branch; for even sizes the padding is never
    sampled and this equals the reference's `x[:, :, 1:, 1:]`.

    Each 1x1 stride-2 conv is computed as a 1x1 max-pool with stride 2 (a
    subsampling) followed by a stride-1 1x1 conv: the same numbers and
    weights. With oneDNN on, TF 2.21's filter gradient of a 1x1 stride-2
    conv corrupts the heap for few input channels (wrong values or a glibc
    abort): the subsampled form is exact and about as fast. Checked in
    `tests/snas_tf/ops/operations_test.py`.

    Raises:
        ValueError: if `channels` is odd.
    """
    if channels % 2:
        raise ValueError(
            f"FactorizedReduce needs an even channel count, got {channels}."
        )
    layers = layers or keras.layers
    n = _names(name)
    relu = layers.ReLU(name=n("relu"))
    sub_1 = layers.MaxPooling2D(1, strides=2, name=n("subsample_1"))
    conv_1 = layers.Conv2D(channels // 2, 1, use_bias=False, name=n("conv_1"))
    shift = layers.Cropping2D(((1, 0), (1, 0)), name=n("shift"))
    pad = layers.ZeroPadding2D(((0, 1), (0, 1)), name=n("pad"))
    sub_2 = layers.MaxPooling2D(1, strides=2, name=n("subsample_2"))
    conv_2 = layers.Conv2D(channels // 2, 1, use_bias=False, name=n("conv_2"))
    concat = layers.Concatenate(axis=-1, name=n("concat"))
    bn = batch_norm(affine, n("bn"), layers)

    def body(x):
        return concat([conv_1(sub_1(x)), conv_2(sub_2(pad(shift(x))))])

    return Op(
        "skip_connect",
        [relu, sub_1, conv_1, shift, pad, sub_2, conv_2, concat, bn],
        body,
        shared=("relu",),
    )


def strided_padding(kernel_size, name, layers):
    """The reference's symmetric padding before a stride-2 convolution.

    PyTorch pads (k - 1) / 2 on every side, so output i is centred on
    input 2i; Keras' "same" pads an even input after only, which centres
    it on 2i + 1, a pixel off (docs/decisions.md). An explicit
    `ZeroPadding2D` and a "valid" stride-2 convolution give PyTorch's
    numbers with built-in layers, at any input size.
    """
    return layers.ZeroPadding2D((kernel_size - 1) // 2, name=name)


def _sep_conv(channels, kernel_size, stride, affine, n, layers):
    # SNAS App. G.1 / DARTS: (ReLU, depthwise, pointwise, BN) twice, the
    # stride only in the first depthwise.
    out = []
    for i, s in ((1, stride), (2, 1)):
        out.append(layers.ReLU(name=n(f"relu{i}")))
        if s == 2:
            out.append(strided_padding(kernel_size, n(f"pad{i}"), layers))
        out += [
            layers.DepthwiseConv2D(
                kernel_size,
                strides=s,
                padding="valid" if s == 2 else "same",
                use_bias=False,
                name=n(f"dw{i}"),
            ),
            layers.Conv2D(channels, 1, use_bias=False, name=n(f"pw{i}")),
            batch_norm(affine, n(f"bn{i}"), layers),
        ]
    return out


def _dil_conv(channels, kernel_size, stride, affine, n, layers):
    # TF refuses strides > 1 with dilation > 1. A stride-2, dilation-2 k x k
    # conv padded as the reference (2 for 3x3, 4 for 5x5) equals exactly an
    # undilated k x k "same" conv on x[:, ::2, ::2]: 4x less work. A 1x1
    # max-pool with stride 2 is that subsampling as a built-in layer.
    out = [layers.ReLU(name=n("relu"))]
    if stride == 2:
        out.append(layers.MaxPooling2D(1, strides=2, name=n("subsample")))
        dilation = 1
    else:
        dilation = 2
    out += [
        layers.DepthwiseConv2D(
            kernel_size,
            padding="same",
            dilation_rate=dilation,
            use_bias=False,
            name=n("dw"),
        ),
        layers.Conv2D(channels, 1, use_bias=False, name=n("pw")),
        batch_norm(affine, n("bn"), layers),
    ]
    return out


def build_op(
    primitive, channels, stride=1, affine=False, name=None, layers=None
):
    """Builds one candidate operation for an edge with `channels` in and out.

    Args:
        primitive: one of `PRIMITIVES`.
        channels: input = output channel count of the edge.
        stride: 1, or 2 on reduction-cell edges leaving the cell inputs.
        affine: whether BatchNorm layers learn scale and offset (False in
            the search network, True in the child).
        name: optional prefix for the layer names (unique names let a
            functional child share weights by name).
        layers: the layers namespace, `keras.layers` (default) or
            `tf_keras.layers` for the TFMOT twin.

    Returns:
        An `Op`, or `None` for `none`: a zero op contributes nothing to a
        weighted sum, so it is never evaluated (its weight's gradient,
        `O_none(x) = 0`, is zero either way).

    Raises:
        ValueError: for an unknown primitive or a stride other than 1 or 2.
    """
    check_primitive(primitive)
    if stride not in (1, 2):
        raise ValueError(f"Unknown stride {stride!r}. Expected one of (1, 2).")
    layers = layers or keras.layers
    n = _names(name)
    if primitive == "none":
        return None
    if primitive in ("max_pool_3x3", "avg_pool_3x3"):
        # "same" average pooling excludes the padding, like the reference's
        # count_include_pad=False. SNAS follows every pool with a BN.
        pool_cls = (
            layers.MaxPooling2D
            if primitive == "max_pool_3x3"
            else layers.AveragePooling2D
        )
        # A stride-1 "same" pool pads one pixel on every side (-inf for the
        # max, left out of the average) as the reference does; a stride-2
        # edge then keeps every second pixel, so output i is centred on
        # input 2i as in PyTorch (docs/decisions.md). A strided "same" pool
        # would centre it on 2i + 1 for even sizes.
        pool = pool_cls(3, strides=1, padding="same", name=n("pool"))
        pools = [pool]
        shared = [f"{primitive}/s1"]
        if stride == 2:
            pools.append(layers.MaxPooling2D(1, strides=2, name=n("subsample")))
            shared.append("subsample/s2")
        # The pooling of one input is the same for every edge leaving it.
        return Op(
            primitive,
            [*pools, batch_norm(affine, n("bn"), layers)],
            shared=tuple(shared),
        )
    if primitive == "skip_connect":
        if stride == 1:
            return Op(primitive, [])
        return factorized_reduce(channels, affine, name, layers)
    kernel_size = int(primitive[-1])
    if primitive.startswith("sep"):
        op_layers = _sep_conv(channels, kernel_size, stride, affine, n, layers)
        return Op(primitive, op_layers, shared=("relu",))
    op_layers = _dil_conv(channels, kernel_size, stride, affine, n, layers)
    # Both dilated convs of a stride-2 edge subsample the same ReLU(x).
    shared = ("relu", "subsample/s2") if stride == 2 else ("relu",)
    return Op(primitive, op_layers, shared=shared)


__all__ = [
    "PRIMITIVES",
    "Op",
    "batch_norm",
    "build_op",
    "factorized_reduce",
    "relu_conv_bn",
    "strided_padding",
]
