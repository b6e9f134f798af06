"""The stochastic mixed edge of SNAS.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.2, Eq. 1-5.
"""

import keras
import tensorflow as tf
from keras import ops

from snas_tf import kernels
from snas_tf.kernels import tracing
from snas_tf.ops import build_op
from snas_tf.search_space import PRIMITIVES, check_primitive


@keras.saving.register_keras_serializable(package="snas_tf")
class StochasticMixedEdge(keras.layers.Layer):
    """One edge of a search cell: `sum_k Z_k O_k(x)` over candidate ops.

    SNAS draws one relaxed one-hot sample Z per forward pass and cell type,
    shared by all cells of that type and the whole batch (reference code), so
    the sample is drawn by the supernet and passed in; this layer mixes.
    Every op is evaluated (no straight-through), except `none`, which is
    zero and so contributes nothing. With `index` given (the derived child:
    Z = one-hot argmax α) only the chosen op runs, through `ops.switch`.

    Args:
        channels: input = output channels of the edge.
        stride: 1, or 2 for reduction-cell edges leaving the cell inputs.
        primitives: candidate op names, in logit-column order.
        affine: whether BatchNorms learn scale and offset (search: False).
        fast_kernels: build the ops from `snas_tf.kernels`' faster stand-ins
            of the Keras layers (same math); False: plain `keras.layers`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        x: (batch, H, W, channels) input of the edge.
        z: (num_ops,) op weights, the edge's row of the cell type's Z.
        index: optional int scalar tensor; when given, the output is the
            output of op `index` alone and `z` is ignored; `index` equal
            to the number of primitives drops the edge (zeros), as the
            DARTS rule does with the edges it does not keep.
        prefixes: optional `snas_tf.kernels.SharedPrefixes` of `x` (mixing
            mode, fast kernels): the ops' shared leading layers (ReLU(x),
            the pooling of x, ...) computed once for all ops of the edge;
            made here when not given. A cell passes one per node, so that
            all the edges leaving a node share them.

    Example:

    >>> edge = StochasticMixedEdge(channels=4)
    >>> x = keras.random.normal((2, 8, 8, 4))
    >>> z = keras.ops.softmax(keras.ops.zeros((8,)))
    >>> edge(x, z).shape
    (2, 8, 8, 4)

    Reference:
        Xie et al., "SNAS: Stochastic Neural Architecture Search",
        ICLR 2019, Eq. 1-5.
    """

    def __init__(
        self,
        channels,
        stride=1,
        primitives=PRIMITIVES,
        affine=False,
        fast_kernels=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name in primitives:
            check_primitive(name)
        self.channels = int(channels)
        self.stride = int(stride)
        self.primitives = tuple(primitives)
        self.affine = bool(affine)
        self.fast_kernels = bool(fast_kernels)
        self._ops = [
            build_op(
                p,
                self.channels,
                self.stride,
                self.affine,
                layers=kernels.layers_namespace(self.fast_kernels),
            )
            for p in self.primitives
        ]
        # Tracked list of every sub-layer, so weights are found and saved.
        self.op_layers = [
            layer for op in self._ops if op is not None for layer in op.layers
        ]

    def build(self, input_shape):
        # Build every op outside any conditional (variables must not be
        # created inside the `ops.switch` branches of argmax mode) with one
        # eager pass on a one-image batch: much faster than a symbolic
        # trace. init_scope leaves any enclosing tf.function trace.
        if tracing.is_raised("built_by_mixing"):
            return
        _, h, w, c = input_shape
        with tf.init_scope():
            x = ops.zeros((1, h or 8, w or 8, c), dtype=self.compute_dtype)
            for op in self._ops:
                if op is not None:
                    op(x)

    def _zeros(self, x):
        if self.stride == 2:
            x = x[:, :: self.stride, :: self.stride, :]
        return ops.zeros_like(x)

    def call(self, x, z, index=None, prefixes=None):
        if index is not None:
            branches = [
                (lambda x, op=op: op(x)) if op is not None else self._zeros
                for op in self._ops
            ]
            # The last branch: a dropped edge.
            return ops.switch(index, branches + [self._zeros], x)
        # One unstack, not a strided slice (and its gradient) per op.
        z = ops.unstack(ops.cast(z, x.dtype), num=len(self._ops))
        if self.fast_kernels and prefixes is None:
            prefixes = kernels.SharedPrefixes(x)
        # SNAS Eq. 1: sum_k Z_k * O_k(x). `none` is zero: it adds nothing.
        terms = [
            self._weighted_op(op, x, z[k], prefixes)
            for k, op in enumerate(self._ops)
            if op is not None
        ]
        if not terms:
            return self._zeros(x)
        return sum(terms[1:], terms[0])

    def _weighted_op(self, op, x, z_k, prefixes):
        """Z_k * O_k(x); the fast kernels fold Z_k into O_k's last
        BatchNorm and take O_k's shared leading layers from `prefixes`."""
        if self.fast_kernels:
            return kernels.scaled_op(op, x, z_k, prefixes)
        return z_k * op(x)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        if self.stride == 2:
            h = None if h is None else (h + 1) // 2
            w = None if w is None else (w + 1) // 2
        return (b, h, w, self.channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            channels=self.channels,
            stride=self.stride,
            primitives=list(self.primitives),
            affine=self.affine,
            fast_kernels=self.fast_kernels,
        )
        return config
