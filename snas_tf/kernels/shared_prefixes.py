"""Weightless leading layers computed once for all the ops on one input."""


class SharedPrefixes:
    """The outputs of ops' shared leading layers on one input, each
    computed once.

    Several ops applied to the same tensor often start with the same
    weightless layers: every conv op with ReLU(x), both pool ops of every
    edge leaving a node with the same pooling of x (the BatchNorm after
    it is each op's own). Called with an `snas_tf.ops.Op`, returns the
    output of its `shared` layers on `x`, computing (with that op's
    layers) only the keys not computed before: the same values, fewer
    kernels and fewer gradients to sum (TensorFlow's runtime merges
    identical forward ops, but not their gradients).

    Args:
        x: the input shared by the ops.
    """

    def __init__(self, x):
        self.x = x
        self._outputs = {}

    def __call__(self, op):
        y = self.x
        for depth in range(1, len(op.shared) + 1):
            key = op.shared[:depth]
            if key not in self._outputs:
                self._outputs[key] = op.layers[depth - 1](y)
            y = self._outputs[key]
        return y
