"""Keras layers and pure functions of the stochastic relaxation."""

from snas_tf.layers.fused_batch_norm import FusedBatchNormalization
from snas_tf.layers.stochastic_mixed_edge import StochasticMixedEdge

__all__ = ["FusedBatchNormalization", "StochasticMixedEdge"]
