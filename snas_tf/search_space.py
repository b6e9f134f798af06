"""The SNAS / DARTS cell search space as pure data.

A cell is a DAG with two input nodes (the outputs of the two previous cells,
indices 0 and 1), `num_nodes` intermediate nodes (indices 2, 3, ...) and an
output that concatenates the intermediate nodes. Intermediate node `j` sums
one mixed edge from every earlier node, so a 4-node cell has
2 + 3 + 4 + 5 = 14 edges. Edges are numbered node by node, inputs in
ascending order; that numbering is the row order of the architecture logits.
A network stacks L cells; `reduction_cells` names the ones that halve the
resolution, in the supernet and in the child networks alike.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.1 and Appendix G.1.
"""

import dataclasses

# The order matters: it is the column order of the architecture logits and
# the tie-break order of argmax (SNAS §2.1, DARTS cell).
PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

NUM_CELL_INPUTS = 2


def check_primitive(name: str, primitives=PRIMITIVES) -> str:
    """Returns `name` if it is a known primitive.

    Raises:
        ValueError: naming the unknown primitive and the valid ones.
    """
    if name not in primitives:
        raise ValueError(
            f"Unknown primitive {name!r}. Expected one of {tuple(primitives)}."
        )
    return name


def reduction_cells(num_cells: int) -> tuple:
    """Indices of the reduction cells: L//3 and 2L//3, as the reference."""
    return tuple(sorted({num_cells // 3, 2 * num_cells // 3}))


@dataclasses.dataclass(frozen=True)
class Edge:
    """One edge of a cell.

    Attributes:
        index: row of this edge in the architecture logits.
        node: index of the intermediate node the edge feeds (0-based among
            intermediate nodes).
        source: index of the node the edge leaves (0, 1 = cell inputs,
            2.. = intermediate nodes).
    """

    index: int
    node: int
    source: int

    @property
    def from_cell_input(self) -> bool:
        """True when the edge leaves one of the two cell inputs."""
        return self.source < NUM_CELL_INPUTS


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The candidate operations and the cell topology.

    Attributes:
        primitives: candidate operation names, in logit-column order.
        num_nodes: intermediate nodes per cell (4 in SNAS and DARTS).
    """

    primitives: tuple = PRIMITIVES
    num_nodes: int = 4

    def __post_init__(self):
        object.__setattr__(self, "primitives", tuple(self.primitives))
        for name in self.primitives:
            check_primitive(name)
        if len(set(self.primitives)) != len(self.primitives):
            raise ValueError(
                f"Duplicate primitives in {self.primitives}; each op may "
                "appear once."
            )
        if not isinstance(self.num_nodes, int) or self.num_nodes < 1:
            raise ValueError(
                f"num_nodes must be a positive int, got {self.num_nodes!r}."
            )

    @property
    def num_ops(self) -> int:
        return len(self.primitives)

    @property
    def edges(self) -> tuple:
        """All edges, in logit-row order."""
        edges = []
        for node in range(self.num_nodes):
            for source in range(NUM_CELL_INPUTS + node):
                edges.append(Edge(len(edges), node, source))
        return tuple(edges)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def edge_index(self, node: int, source: int) -> int:
        """Row of the edge from `source` into intermediate node `node`."""
        if not 0 <= node < self.num_nodes:
            raise ValueError(
                f"Node {node} out of range; expected 0..{self.num_nodes - 1}."
            )
        if not 0 <= source < NUM_CELL_INPUTS + node:
            raise ValueError(
                f"Input {source} out of range for node {node}; expected "
                f"0..{NUM_CELL_INPUTS + node - 1}."
            )
        return sum(NUM_CELL_INPUTS + n for n in range(node)) + source
