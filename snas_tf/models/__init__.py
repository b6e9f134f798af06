"""The search supernet (and, later, child networks)."""

from snas_tf.models.snas_supernet import SNASSupernet, default_search_optimizers

__all__ = ["SNASSupernet", "default_search_optimizers"]
