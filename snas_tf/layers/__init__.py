"""Keras layers and pure functions of the stochastic relaxation."""

from snas_tf.layers.drop_path import DropPath
from snas_tf.layers.stochastic_mixed_edge import StochasticMixedEdge

__all__ = ["DropPath", "StochasticMixedEdge"]
