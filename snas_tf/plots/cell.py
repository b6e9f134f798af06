"""A derived cell drawn as an arc diagram (`cell_figure`, `plot_cell`)."""

import os
import textwrap

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path

from snas_tf.genotype import CELLS, Genotype, load_genotype
from snas_tf.plots._common import CELL_TITLES, INPUT_NAMES, save_png
from snas_tf.search_space import NUM_CELL_INPUTS, PRIMITIVES

_OUTPUT_NAME = "c_{k}"
# Arc height per unit of span in the cell diagram, in data units.
_ARC_STEP = 0.45
# The concat arcs below the line are flatter: they carry no label.
_CONCAT_STEP = 0.2
# Half the height of a node box, in data units: where arcs start and end.
_NODE_HALF = 0.2


def _op_color(op: str):
    index = PRIMITIVES.index(op) if op in PRIMITIVES else 0
    return colormaps["tab10"](index % 10)


def _arc(ax, x0, x1, y0, height, color, **style):
    """A quadratic Bézier arc from (x0, y0) to (x1, y0); apex at +height."""
    middle = (x0 + x1) / 2
    # A quadratic Bézier peaks halfway to its control point.
    path = Path(
        [(x0, y0), (middle, y0 + 2 * height), (x1, y0)],
        [Path.MOVETO, Path.CURVE3, Path.CURVE3],
    )
    ax.add_patch(
        FancyArrowPatch(
            path=path, arrowstyle="-|>", mutation_scale=12, color=color, **style
        )
    )
    return middle, y0 + height


def cell_figure(genotype: "Genotype | str | os.PathLike", cell: str) -> Figure:
    """Draws one cell of a derived genotype as an arc diagram.

    Nodes sit on a line: c_{k-2}, c_{k-1}, the intermediate nodes 0..n-1
    and the output c_{k}. Each kept edge is an arc above the line labelled
    with its op (text artist with gid `"edge <source>-><node>"`, sources
    and nodes numbered as in the genotype); dropped edges are not drawn.
    Dashed arcs below the line are the concat into c_{k}; an empty node
    (all its edges dropped) is grey and contributes zeros.

    Args:
        genotype: a `Genotype` or the path of a genotype.json.
        cell: `"normal"` or `"reduce"`.

    Returns:
        The figure.

    Raises:
        ValueError: for an unknown cell or a missing/malformed file.
    """
    genotype = load_genotype(genotype)
    edges = genotype.edges(cell)
    num_nodes = len(genotype.normal)
    output_x = NUM_CELL_INPUTS + num_nodes
    top = _ARC_STEP * (output_x - 1) + 0.5
    bottom = -(_CONCAT_STEP * num_nodes + 0.5)
    fig = Figure(
        figsize=(1.4 * (output_x + 1) + 0.5, 0.9 * (top - bottom) + 0.8),
        layout="constrained",
    )
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_xlim(-0.7, output_x + 0.7)
    ax.set_ylim(bottom, top)
    cell_string = genotype.to_string().split(";")[CELLS.index(cell)]
    # The compact string, wrapped at node boundaries to fit the figure.
    nodes = cell_string.split("=", 1)[-1].split("|")
    ax.set_title(
        "\n".join([CELL_TITLES[cell], *textwrap.wrap(" | ".join(nodes), 110)]),
        fontsize=9,
    )
    _draw_edges(ax, edges)
    _draw_nodes(ax, num_nodes, fed={node for node, _, _ in edges})
    return fig


def _draw_edges(ax, edges) -> None:
    """Op arcs above the line (labelled), concat arcs below (dashed)."""
    for node, source, op in edges:
        x0, x1 = source, node + NUM_CELL_INPUTS
        color = _op_color(op)
        x, y = _arc(ax, x0, x1, _NODE_HALF, _ARC_STEP * (x1 - x0), color)
        ax.text(
            x,
            y,
            op,
            ha="center",
            va="center",
            fontsize=8,
            gid=f"edge {source}->{node}",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": color},
        )


def _draw_nodes(ax, num_nodes: int, fed: set) -> None:
    """Node boxes on the line, then the concat of every intermediate node
    (an empty one too: it adds zeros) into c_{k}."""
    output_x = NUM_CELL_INPUTS + num_nodes
    for x in range(NUM_CELL_INPUTS, output_x):
        height = -_CONCAT_STEP * (output_x - x)
        _arc(ax, x, output_x, -_NODE_HALF, height, "0.6", linestyle="--")
    names = [*INPUT_NAMES, *map(str, range(num_nodes)), _OUTPUT_NAME]
    for x, name in enumerate(names):
        if x < NUM_CELL_INPUTS:
            fill = "#c6dbef"
        elif x == output_x:
            fill = "#c7e9c0"
        else:
            fill = "#fff3b0" if x - NUM_CELL_INPUTS in fed else "0.85"
        label = f"${name}$" if name.startswith("c_") else name
        ax.text(
            x,
            0,
            label,
            ha="center",
            va="center",
            fontsize=11,
            gid=f"node {name}",
            bbox={"boxstyle": "round,pad=0.4", "fc": fill, "ec": "black"},
        )


def plot_cell(genotype: "Genotype | str | os.PathLike", cell: str, path) -> str:
    """Saves `cell_figure(genotype, cell)` as a PNG at `path`; returns it."""
    return save_png(cell_figure(genotype, cell), path)
