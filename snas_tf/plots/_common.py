"""What the plot modules share: names of the cell's nodes and the atomic
PNG writer."""

import io
import os

from matplotlib.figure import Figure

from snas_tf.atomic_files import write_atomic
from snas_tf.search_space import NUM_CELL_INPUTS

INPUT_NAMES = ("c_{k-2}", "c_{k-1}")
CELL_TITLES = {"normal": "Normal cell", "reduce": "Reduction cell"}
_DPI = 110


def save_png(fig: Figure, path) -> str:
    """Saves `fig` as a PNG at `path` atomically; returns the path."""
    # Rendering to memory first: a drawing error never touches the disk.
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    write_atomic(path, buffer.getvalue())
    return os.fspath(path)


def source_name(source: int) -> str:
    """The name of a cell node by its genotype index: c_{k-2}, c_{k-1},
    then the intermediate nodes 0, 1, ..."""
    if source < NUM_CELL_INPUTS:
        return INPUT_NAMES[source]
    return str(source - NUM_CELL_INPUTS)
