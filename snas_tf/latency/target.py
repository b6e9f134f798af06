"""The target network of a latency table: its sizes and cell shapes.

A latency table is measured for one *target* network, the child network a
retrain config describes (`RetrainConfig`: network family, channels, cells,
image size, classes) with one search space (primitives, nodes per cell).
`TargetNetwork` holds those sizes as plain data and `cell_shapes` lays its
cells out exactly as `snas_tf.models.child_network` builds them: the
channels and sides of each cell's two inputs, its own channels and the
side of its nodes. Imports no TensorFlow, so a table is checked against a
config before any search step.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §3.2-3.3 (the retraining networks) [P].
"""

import dataclasses
import math

from snas_tf.search_space import PRIMITIVES, SearchSpace, reduction_cells

NETWORKS = ("cifar", "imagenet")
# The child network's CIFAR stem has 3C channels (DARTS model.py).
STEM_MULTIPLIER = 3
# Classes of the data sets whose count is known without reading them; any
# other data set takes its network family's default (10, or 1000 for
# imagenet), as `snas export` does for a fresh network.
KNOWN_CLASSES = {
    "digits": 10,
    "cifar10": 10,
    "cifar100": 100,
    "imagenet2012": 1000,
}


@dataclasses.dataclass(frozen=True)
class TargetNetwork:
    """The child network a latency table is for.

    Attributes:
        network: "cifar" or "imagenet" (the child network's family).
        channels: C of the first cells.
        num_layers: cells L; reductions at L//3 and 2L//3.
        image_size: side of the square RGB input.
        num_classes: classifier outputs.
        primitives: the search space's candidate ops, in logit order.
        num_nodes: intermediate nodes per cell.
    """

    network: str
    channels: int
    num_layers: int
    image_size: int
    num_classes: int
    primitives: tuple = PRIMITIVES
    num_nodes: int = 4

    def __post_init__(self):
        object.__setattr__(self, "primitives", tuple(self.primitives))
        if self.network not in NETWORKS:
            raise ValueError(
                f"Unknown network {self.network!r}. Expected one of {NETWORKS}."
            )
        for name in ("num_layers", "image_size", "num_classes", "num_nodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}.")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}.")
        if self.channels < 2 or self.channels % 2:
            raise ValueError(
                f"channels must be an even int >= 2, got {self.channels!r}."
            )
        # Checks the op names.
        SearchSpace(self.primitives, self.num_nodes)

    @property
    def search_space(self) -> SearchSpace:
        return SearchSpace(self.primitives, self.num_nodes)

    @property
    def reduction_cells(self) -> tuple:
        return reduction_cells(self.num_layers)

    def to_dict(self) -> dict:
        """The sizes as JSON-able data (a table's `target` metadata)."""
        data = dataclasses.asdict(self)
        data["primitives"] = list(self.primitives)
        data["reduction_cells"] = list(self.reduction_cells)
        return data


@dataclasses.dataclass(frozen=True)
class CellShape:
    """The shapes one cell of the target network works at.

    Attributes:
        index: the cell's position.
        reduction: whether it halves the resolution.
        reduction_prev: whether its c_{k-2} input has twice the side of
            c_{k-1} (its preprocess0 is then a FactorizedReduce).
        channels: C of its edges; its output has `num_nodes * C`.
        input0: (channels, side) of c_{k-2}.
        input1: (channels, side) of c_{k-1}; the edges leaving the cell
            inputs work at this side.
        node_side: side of its intermediate nodes and of its output.
    """

    index: int
    reduction: bool
    reduction_prev: bool
    channels: int
    input0: tuple
    input1: tuple
    node_side: int


def halve(side: int) -> int:
    """The side after a stride-2 op (padded as PyTorch pads: ceil)."""
    return math.ceil(side / 2)


def stem_outputs(target: TargetNetwork) -> tuple:
    """(channels, side) of the stem's two outputs, (s0, s1).

    CIFAR: one 3x3 conv to 3C, both cell inputs are its output. ImageNet:
    three stride-2 3x3 convs (C/2, C, C); s0 is the second's output, s1
    the third's (`child_network.stem`).
    """
    s, c = target.image_size, target.channels
    if target.network == "cifar":
        return (STEM_MULTIPLIER * c, s), (STEM_MULTIPLIER * c, s)
    quarter = halve(halve(s))
    return (c, quarter), (c, halve(quarter))


def cell_shapes(target: TargetNetwork) -> tuple:
    """The `CellShape` of every cell, laid out as the child network's
    `cell_specs`: C doubles at each reduction cell, the ImageNet network's
    first cell has a reduced c_{k-2}."""
    reductions = target.reduction_cells
    input0, input1 = stem_outputs(target)
    reduction_prev = target.network == "imagenet"
    channels = target.channels
    shapes = []
    for i in range(target.num_layers):
        reduction = i in reductions
        if reduction:
            channels *= 2
        side = halve(input1[1]) if reduction else input1[1]
        shapes.append(
            CellShape(
                i, reduction, reduction_prev, channels, input0, input1, side
            )
        )
        input0, input1 = input1, (target.num_nodes * channels, side)
        reduction_prev = reduction
    return tuple(shapes)


def target_from_retrain_config(
    config, primitives=PRIMITIVES, num_nodes: int = 4
) -> TargetNetwork:
    """The target network of a `RetrainConfig` with a search space.

    Args:
        config: a `snas_tf.config.RetrainConfig`.
        primitives: the search space's ops.
        num_nodes: intermediate nodes per cell.

    Returns:
        The `TargetNetwork`; classes from `KNOWN_CLASSES` (else 10, or 1000
        for the imagenet family).
    """
    child = config.child
    default = 1000 if child.network == "imagenet" else 10
    return TargetNetwork(
        network=child.network,
        channels=child.channels,
        num_layers=child.num_layers,
        image_size=config.data.image_size,
        num_classes=KNOWN_CLASSES.get(config.data.dataset, default),
        primitives=tuple(primitives),
        num_nodes=num_nodes,
    )


__all__ = [
    "KNOWN_CLASSES",
    "CellShape",
    "TargetNetwork",
    "cell_shapes",
    "halve",
    "stem_outputs",
    "target_from_retrain_config",
]
