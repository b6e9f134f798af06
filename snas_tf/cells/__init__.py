"""Search cells (and, later, child cells built from a genotype)."""

from snas_tf.cells.search_cell import SearchCell

__all__ = ["SearchCell"]
