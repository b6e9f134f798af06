"""Collapse indicators: how much of a derived cell holds no weights.

Differentiable NAS is known to collapse to parameter-free cells (pools and
skips); SNAS's search reports, per epoch, how many edges of each derived
cell hold no weights, and warns when a derived normal cell has none.
"""

from snas_tf.genotype import Genotype
from snas_tf.search_space import NUM_CELL_INPUTS, SearchSpace

_WEIGHTLESS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect")


def holds_weights(op: str, cell: str, source: int) -> bool:
    """Whether a child op holds weights: convolutions do; pools, `none` and
    the identity do not. A reduction cell's skip from a cell input is a
    FactorizedReduce (two 1x1 convs); every other skip is the identity."""
    if op == "skip_connect":
        return cell == "reduce" and source < NUM_CELL_INPUTS
    return op not in _WEIGHTLESS


def count_weightless(genotype: Genotype, cell: str, rule: str) -> int:
    """Edges of `cell` whose derived op holds no weights: a collapse
    indicator (a normal cell of pools and skips is the parameter-free
    collapse of differentiable NAS).

    Under `edge_all` every edge of the cell is derived, so each dropped
    edge chose `none` and counts; under `top2` only the kept edges do.
    """
    kept = genotype.edges(cell)
    weightless = sum(
        not holds_weights(op, cell, source) for _, source, op in kept
    )
    if rule == "edge_all":
        num_edges = SearchSpace(num_nodes=len(genotype.normal)).num_edges
        weightless += num_edges - len(kept)
    return weightless
