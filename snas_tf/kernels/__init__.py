"""Same math, faster TensorFlow CPU kernels: the search supernet's speed path.

Everything here computes what the plain Keras layers compute, up to float
rounding, with fewer or faster TensorFlow kernels and a smaller graph:

- `FusedBatchNormalization`: one fused kernel instead of twenty-odd ops,
  with an edge's op weight Z_k folded into its scale (`scaled_op`);
- `PhaseSplitDepthwiseConv2D`: depthwise convolutions whose 5x5 filter
  gradients and SAME input gradients run on oneDNN's fast kernels, and
  dilated ones that share one space-to-batch per input
  (`sharing_space_to_batch`);
- `SliceCropping2D`: a crop whose gradient is one `Pad`;
- `HostGlorotUniform`: the Glorot-uniform distribution drawn by NumPy;
- `SharedPrefixes`: the ReLU and poolings of a node computed once for all
  the edges leaving it;
- `tracing`: trace-time flags and short variable names for the build.

One switch turns all of it on or off: the supernet's `fast_kernels`
argument (`runtime.fast_kernels` in the config, on by default). Off, the
supernet is built from `keras.layers` and an edge computes SNAS Eq. 1,
sum_k Z_k * O_k(x), literally; `tests/snas_tf/kernels/switch_test.py`
checks both paths give the same outputs, gradients and updates. Two
differences are by design: the fused BatchNorm updates its moving variance
with the unbiased batch variance, as PyTorch and the authors' code do
(Keras' built-in layer uses the biased one), and its epsilon is at least
cuDNN's floor, `EPSILON_FLOOR` (1.001e-5 against the reference's 1e-5).
Child networks never use this package: they stay built-in layers for
every export toolchain.
"""

import contextlib

import keras

from snas_tf.kernels.fused_batch_norm import FusedBatchNormalization
from snas_tf.kernels.phase_split_depthwise import sharing_space_to_batch
from snas_tf.kernels.search_layers import SEARCH_LAYERS
from snas_tf.kernels.shared_prefixes import SharedPrefixes


def layers_namespace(fast: bool):
    """The layers the search supernet builds its ops from: the fast
    stand-ins (`SEARCH_LAYERS`) or `keras.layers`."""
    return SEARCH_LAYERS if fast else keras.layers


def cell_scope(fast: bool):
    """Entered around a search cell's edges: with fast kernels, the
    dilated convolutions of one input share its space-to-batch."""
    return sharing_space_to_batch() if fast else contextlib.nullcontext()


def scaled_op(op, x, weight, prefixes=None):
    """`weight * op(x)` (one term of SNAS Eq. 1), with the scalar weight
    folded into the op's final `FusedBatchNormalization` where it ends in
    one: the same value without a separate multiply of the whole output
    and its gradient ops. `prefixes` as in `snas_tf.ops.Op.hidden`."""
    last = op.layers[-1] if op.layers else None
    if isinstance(last, FusedBatchNormalization):
        return last(op.hidden(x, prefixes), output_scale=weight)
    return weight * op(x, prefixes)


__all__ = [
    "FusedBatchNormalization",
    "SEARCH_LAYERS",
    "SharedPrefixes",
    "cell_scope",
    "layers_namespace",
    "scaled_op",
]
