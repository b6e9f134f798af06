"""Concrete (Gumbel-softmax) sampling as pure functions.

SNAS relaxes the one-hot architecture sample of every edge into a Concrete
sample (Maddison et al. 2016; Jang et al. 2016) so that the loss is
differentiable in the architecture logits:

    Z = softmax((logits + G) / λ),   G = -log(-log U),   U ~ Uniform(0, 1).

Autodiff through this softmax gives exactly the paper's search gradient
(SNAS Eq. 6 and 27); nothing is hand-coded.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.2, Eq. 1-5 and 22.
"""

import math
from typing import NamedTuple

from keras import ops


class ArchSample(NamedTuple):
    """Op weights of both cell types for one forward pass.

    Attributes:
        normal: (num_edges, num_ops) weights Z of the normal cells.
        reduce: (num_edges, num_ops) weights Z of the reduction cells.
        normal_index: (num_edges,) the op each edge runs in argmax mode
            (`num_ops`: the edge is dropped), else None.
        reduce_index: same for the reduction cells.
        normal_log_z: log Z of the normal cells computed from the noise
            that made Z (`relaxed_log_one_hot`): exact where Z rounds to
            0; what the `policy_gradient` density reads. None in argmax
            mode.
        reduce_log_z: same for the reduction cells.
    """

    normal: object
    reduce: object
    normal_index: object = None
    reduce_index: object = None
    normal_log_z: object = None
    reduce_log_z: object = None


# Keeps -log(-log U) finite: U is clipped to [_LOW, _HIGH]; 1 - 1e-7 is
# still below 1.0 in float32 (1 - 1e-10 would round to 1.0).
_LOW = 1e-10
_HIGH = 1.0 - 1e-7


def gumbel_noise(uniform):
    """Turns Uniform(0, 1) draws into standard Gumbel noise.

    Args:
        uniform: tensor of Uniform(0, 1) samples.

    Returns:
        `-log(-log U)`, same shape, with U clipped away from 0 and 1.
    """
    u = ops.clip(uniform, _LOW, _HIGH)
    return -ops.log(-ops.log(u))


def relaxed_one_hot(logits, temperature, noise=None):
    """The Concrete sample `softmax((logits + noise) / temperature)`.

    Args:
        logits: (..., n) architecture logits (log α).
        temperature: positive scalar λ.
        noise: optional Gumbel noise shaped like `logits`; `None` gives the
            deterministic softmax (the DARTS relaxation).

    Returns:
        Tensor shaped like `logits` whose last axis sums to 1.
    """
    if noise is not None:
        logits = logits + noise
    return ops.softmax(logits / temperature, axis=-1)


def relaxed_log_one_hot(logits, temperature, noise=None):
    """log Z of `relaxed_one_hot(logits, temperature, noise)`, computed
    as `log_softmax((logits + noise) / temperature)`: finite (and exact)
    where Z itself rounds to 0 at a low temperature."""
    if noise is not None:
        logits = logits + noise
    return ops.log_softmax(logits / temperature, axis=-1)


def hard_one_hot(logits):
    """One-hot of argmax over the last axis (first index wins ties)."""
    return ops.one_hot(ops.argmax(logits, axis=-1), ops.shape(logits)[-1])


def entropy(logits):
    """Entropy in nats of the categorical `softmax(logits)`, last axis.

    Zero logits over n ops give `log n`.
    """
    log_p = ops.log_softmax(logits, axis=-1)
    return -ops.sum(ops.exp(log_p) * log_p, axis=-1)


def concrete_log_density(log_z, logits, temperature):
    """Log-density of a Concrete sample (Maddison et al. 2016, Eq. 11).

        log p(Z) = log((n-1)!) + (n-1) log λ + sum_k log α_k
                   - (λ+1) sum_k log Z_k - n log sum_k α_k Z_k^(-λ)

    with log α = `logits`. The last term is computed as a logsumexp, which
    is the stable form of the same expression. The sample comes as log Z
    (`relaxed_log_one_hot` of the noise that made Z): at low temperatures
    components of Z round to 0 (or, clamped at 1e-4 as in the reference
    code, bias the score; docs/decisions.md), while log Z stays exact.

    Args:
        log_z: (..., n) log of a Concrete sample (treat it as data: stop
            its gradient before calling when a score-function gradient is
            wanted).
        logits: (..., n) logits, broadcastable to `log_z`.
        temperature: positive scalar λ.

    Returns:
        Tensor of shape `log_z.shape[:-1]`.
    """
    n = ops.shape(log_z)[-1]
    log_lambda = ops.log(ops.convert_to_tensor(temperature, dtype=log_z.dtype))
    const = math.lgamma(n) + (n - 1) * log_lambda
    return (
        const
        + ops.sum(logits, axis=-1)
        - (temperature + 1.0) * ops.sum(log_z, axis=-1)
        - n * ops.logsumexp(logits - temperature * log_z, axis=-1)
    )
