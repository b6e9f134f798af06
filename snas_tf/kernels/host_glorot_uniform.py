"""Glorot-uniform kernels drawn by NumPy, for the search supernet.

Keras' `GlorotUniform` draws each kernel with eager TensorFlow ops seeded
from Keras' global seed generator: about eight eager ops per kernel, and
the supernet has hundreds of kernels, so seconds of its build. Drawing the
same distribution with NumPy takes microseconds.
"""

import math

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="snas_tf")
class HostGlorotUniform(keras.initializers.Initializer):
    """Glorot (Xavier) uniform: U(-l, l), `l = sqrt(6 / (fan_in + fan_out))`.

    The distribution and fan computation of `keras.initializers.
    GlorotUniform` (for a k x k kernel, the fans are k*k times the input
    and output channels), drawn on the host by NumPy.

    Args:
        seed: optional int. When given, every call draws the same values,
            as a seeded Keras initializer does. When None, values come
            from NumPy's global generator, which
            `keras.utils.set_random_seed` seeds (the search trainer does).
    """

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
        fan_in = (shape[-2] if len(shape) > 1 else shape[0]) * receptive
        fan_out = shape[-1] * receptive
        limit = math.sqrt(6.0 / max(1.0, fan_in + fan_out))
        rng = (
            np.random if self.seed is None else np.random.default_rng(self.seed)
        )
        values = rng.uniform(-limit, limit, size=shape)
        return ops.convert_to_tensor(values, dtype=dtype or "float32")

    def get_config(self):
        return {"seed": self.seed}
