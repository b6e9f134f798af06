"""Drop-path, as in DARTS and SNAS: the retrained child's `DropPath`
layer and the factors the search supernet applies to its edge outputs.

DARTS's `drop_path(x, p)` (utils.py), applied by the retrained network
after every edge op but the identity, zeroes the whole output of the op
for a random subset of the samples and rescales the rest:
`x / (1 - p) * mask`, `mask ~ Bernoulli(1 - p)` of shape (batch, 1, 1, 1).
The probability is ramped linearly over training by `DropPathScheduler`.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §3.2 (drop-path probability 0.2 [C train.py]); Liu et al., "DARTS:
    Differentiable Architecture Search", ICLR 2019; Larsson et al.,
    "FractalNet", ICLR 2017 (drop-path).
"""

import keras
from keras import ops

from snas_tf.layers.replica_seed import replica_uniform

# Keeps x / keep finite if the rate is ever assigned 1 (every mask is then
# zero, so the output is zero).
_MIN_KEEP = 1e-7


def drop_path_scale(uniform, rate):
    """Per-sample factors of drop-path from Uniform(0, 1) draws.

    `floor(keep + U) / keep` with keep = 1 - `rate`: 0 with probability
    `rate`, else `1 / keep` (exactly 1 at rate 0). Multiplying an output by
    its sample's factor is DARTS's `x / keep * mask`.

    Args:
        uniform: Uniform(0, 1) draws, one per sample (any shape).
        rate: drop probability in [0, 1), a float or scalar tensor of
            `uniform`'s dtype.

    Returns:
        A tensor shaped like `uniform`.
    """
    keep = 1.0 - rate
    return ops.floor(keep + uniform) / ops.maximum(keep, _MIN_KEEP)


def drop_path(x, scale):
    """`x` (batch, ...) times its per-sample `scale` ((batch,) or
    broadcastable (batch, 1, ...))."""
    shape = (-1,) + (1,) * (len(x.shape) - 1)
    return x * ops.reshape(ops.cast(scale, x.dtype), shape)


def _check_rate(rate):
    if isinstance(rate, bool) or not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate!r}.")


@keras.saving.register_keras_serializable(package="snas_tf")
class DropPath(keras.layers.Layer):
    """Drops the whole input of a sample with probability `rate`.

    In training each sample is kept with probability `1 - rate` and scaled
    by `1 / (1 - rate)`, or zeroed; at inference (and at rate 0) the input
    passes unchanged. The rate lives in a non-trainable scalar variable,
    `rate`, read by the compiled step: assigning it (as
    `DropPathScheduler` does every epoch) changes the behaviour without
    retracing. Under a distribution strategy each replica draws its own
    masks.

    Args:
        rate: initial drop probability, in [0, 1).
        seed: seed of the layer's `keras.random.SeedGenerator`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: (batch, ...) tensor.
        training: whether to drop; `None` or `False` passes `inputs` on.

    Example:

    >>> layer = DropPath(rate=0.5, seed=1)
    >>> x = keras.ops.ones((4, 2, 2, 3))
    >>> y = layer(x, training=True)  # each sample all 0 or all 2
    >>> bool(keras.ops.all(layer(x) == x))
    True

    Reference:
        Xie et al., "SNAS: Stochastic Neural Architecture Search",
        ICLR 2019, §3.2; DARTS utils.drop_path (Liu et al., ICLR 2019).
    """

    def __init__(self, rate=0.0, seed=0, **kwargs):
        super().__init__(**kwargs)
        _check_rate(rate)
        self.seed = int(seed)
        self.rate = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(float(rate)),
            trainable=False,
            name="rate",
        )
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        # One draw per sample, broadcast over the other axes.
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        uniform = replica_uniform(shape, self.seed_generator, inputs.dtype)
        rate = ops.cast(self.rate, inputs.dtype)
        return drop_path(inputs, drop_path_scale(uniform, rate))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        # The current rate: a clone starts where this layer is now.
        config.update(
            rate=float(ops.convert_to_numpy(self.rate)), seed=self.seed
        )
        return config
