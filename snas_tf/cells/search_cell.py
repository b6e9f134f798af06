"""The search cell: a DAG of stochastic mixed edges.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.1 and Appendix G.1.
"""

import keras
from keras import ops

from snas_tf import kernels
from snas_tf.layers.drop_path import drop_path
from snas_tf.layers.stochastic_mixed_edge import StochasticMixedEdge
from snas_tf.ops import factorized_reduce, relu_conv_bn
from snas_tf.search_space import PRIMITIVES, SearchSpace


@keras.saving.register_keras_serializable(package="snas_tf")
class SearchCell(keras.layers.Layer):
    """A normal or reduction cell of the SNAS supernet.

    The two inputs (outputs of the two previous cells) are preprocessed to
    `channels` channels (a 1x1 ReLU-Conv-BN, or a FactorizedReduce when the
    previous cell halved the resolution). Intermediate node j sums one
    `StochasticMixedEdge` from every earlier node; the output concatenates
    the intermediate nodes (`num_nodes * channels` channels). In a reduction
    cell the edges leaving the two inputs have stride 2.

    Args:
        channels: channels of every node of the cell.
        reduction: whether this cell halves the resolution.
        reduction_prev: whether the previous cell halved the resolution (the
            first input then arrives at twice this cell's input side).
        primitives: candidate op names (logit-column order).
        num_nodes: intermediate nodes.
        affine: whether BatchNorms learn scale and offset (search: False).
        fast_kernels: build from `snas_tf.kernels` (same math, faster) or
            from plain `keras.layers`.
        **kwargs: base `Layer` arguments.

    Call arguments:
        s0: output of the cell before the previous one.
        s1: output of the previous cell.
        z: (num_edges, num_ops) op weights shared by all cells of this type.
        index: optional (num_edges,) int tensor: argmax mode, where each edge
            runs only its chosen op.
        drop: optional (num_edges, batch) drop-path factors (0 or
            1 / (1 - p)), each edge's output multiplied by its example's
            factor, as the authors' search cell does in training.

    Example:

    >>> cell = SearchCell(channels=4, reduction=False, reduction_prev=False)
    >>> s = keras.random.normal((2, 8, 8, 6))
    >>> z = keras.ops.softmax(keras.ops.zeros((14, 8)))
    >>> cell(s, s, z).shape
    (2, 8, 8, 16)

    Reference:
        Xie et al., "SNAS: Stochastic Neural Architecture Search",
        ICLR 2019, §2.1.
    """

    def __init__(
        self,
        channels,
        reduction,
        reduction_prev,
        primitives=PRIMITIVES,
        num_nodes=4,
        affine=False,
        fast_kernels=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.reduction = bool(reduction)
        self.reduction_prev = bool(reduction_prev)
        self.search_space = SearchSpace(tuple(primitives), int(num_nodes))
        self.affine = bool(affine)
        self.fast_kernels = bool(fast_kernels)
        layers = kernels.layers_namespace(self.fast_kernels)
        if self.reduction_prev:
            self._pre0 = factorized_reduce(
                self.channels, self.affine, layers=layers
            )
        else:
            self._pre0 = relu_conv_bn(
                self.channels, affine=self.affine, layers=layers
            )
        self._pre1 = relu_conv_bn(
            self.channels, affine=self.affine, layers=layers
        )
        self.preprocess_layers = self._pre0.layers + self._pre1.layers
        self.edges = [
            StochasticMixedEdge(
                self.channels,
                stride=2 if self.reduction and e.from_cell_input else 1,
                primitives=self.search_space.primitives,
                affine=self.affine,
                fast_kernels=self.fast_kernels,
                name=f"edge_{e.index}",
            )
            for e in self.search_space.edges
        ]

    def build(self, s0_shape, s1_shape, *args, **kwargs):
        # The sub-layers build on the first call; without this method Keras
        # would trace the whole cell symbolically just to build it.
        self.built = True

    def call(self, s0, s1, z, index=None, drop=None):
        states = [self._pre0(s0), self._pre1(s1)]
        edges = self.search_space.edges
        # One unstack (its gradient is one stack) instead of a strided
        # slice per edge, whose gradients are full-size tensors to sum.
        rows = ops.unstack(z, num=len(edges), axis=0)
        if drop is not None:
            drop = ops.unstack(drop, num=len(edges), axis=0)
        # With fast kernels, the ReLU and poolings of each node are
        # computed once for all the ops of all the edges leaving it (mixing
        # mode; argmax mode runs one op per edge), and so are the
        # space-to-batches of the dilated convs.
        prefixes = self._prefixes(states)
        with kernels.cell_scope(self.fast_kernels):
            for node in range(self.search_space.num_nodes):
                total = None
                for e in edges:
                    if e.node != node:
                        continue
                    x, i, p = states[e.source], None, prefixes[e.source]
                    if index is not None:
                        i, p = index[e.index], None
                    out = self.edges[e.index](x, rows[e.index], i, prefixes=p)
                    if drop is not None:
                        out = drop_path(out, drop[e.index])
                    total = out if total is None else total + out
                states.append(total)
                prefixes += self._prefixes([total])
        return ops.concatenate(states[2:], axis=-1)

    def _prefixes(self, states):
        """A `SharedPrefixes` per state with fast kernels, else None each."""
        if self.fast_kernels:
            return [kernels.SharedPrefixes(s) for s in states]
        return [None] * len(states)

    def compute_output_shape(self, s0_shape, s1_shape, *args, **kwargs):
        b, h, w, _ = s1_shape
        if self.reduction:
            h = None if h is None else (h + 1) // 2
            w = None if w is None else (w + 1) // 2
        return (b, h, w, self.search_space.num_nodes * self.channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            channels=self.channels,
            reduction=self.reduction,
            reduction_prev=self.reduction_prev,
            primitives=list(self.search_space.primitives),
            num_nodes=self.search_space.num_nodes,
            affine=self.affine,
            fast_kernels=self.fast_kernels,
        )
        return config
