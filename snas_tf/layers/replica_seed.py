"""Per-replica random draws from a Keras seed generator.

Under a `tf.distribute` strategy a layer's `keras.random.SeedGenerator`
state is a mirrored variable: every replica reads the same seed and would
draw the same numbers (the same Gumbel noise, the same drop-path masks).
Folding the replica id into the seed gives each replica its own stream
while the generator stays one variable (docs/method.md §2 decision); without a
strategy, or on one replica, the seed is used as is.
"""

import tensorflow as tf
from keras import ops


def replica_seed(seed_generator):
    """The generator's next seed, made distinct per replica.

    Args:
        seed_generator: a `keras.random.SeedGenerator`; its state advances.

    Returns:
        An int64 `(2,)` seed for the `tf.random.stateless_*` functions.
    """
    seed = ops.cast(seed_generator.next(), "int64")
    ctx = tf.distribute.get_replica_context()
    if ctx is not None:
        seed = tf.random.experimental.stateless_fold_in(
            seed, ctx.replica_id_in_sync_group
        )
    return seed


def replica_uniform(shape, seed_generator, dtype="float32"):
    """Uniform(0, 1) samples from `replica_seed(seed_generator)`.

    Args:
        shape: shape of the sample (ints or scalar tensors).
        seed_generator: a `keras.random.SeedGenerator`; its state advances.
        dtype: float dtype of the sample.

    Returns:
        A tensor of `shape` with Uniform[0, 1) entries.
    """
    return tf.random.stateless_uniform(
        shape, replica_seed(seed_generator), dtype=dtype, alg="philox"
    )
