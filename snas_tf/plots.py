"""Plots of a search or retraining: cells, α heatmaps, per-epoch curves.

Reads what `snas search` and `snas retrain` write into their model_dir
(`genotype.json`, `history.json`) and draws PNGs with matplotlib's Agg
renderer. Figures are built on `matplotlib.figure.Figure` without pyplot,
so no display and no global backend switch are involved. Each `*_figure`
function builds a figure (what tests inspect); each `plot_*` function saves
one atomically (a temporary file in the same directory, then a rename) and
returns its path.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.1 (cell), §2.2 (temperature), §3.1 (search metrics, Fig. 3).
"""

import dataclasses
import io
import json
import math
import numbers
import os
import textwrap

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path
from matplotlib.ticker import MaxNLocator

from snas_tf.atomic_files import write_atomic
from snas_tf.genotype import CELLS, Genotype, load_genotype
from snas_tf.search_space import NUM_CELL_INPUTS, PRIMITIVES, SearchSpace

_INPUT_NAMES = ("c_{k-2}", "c_{k-1}")
_OUTPUT_NAME = "c_{k}"
_CELL_TITLES = {"normal": "Normal cell", "reduce": "Reduction cell"}
# Arc height per unit of span in the cell diagram, in data units.
_ARC_STEP = 0.45
# The concat arcs below the line are flatter: they carry no label.
_CONCAT_STEP = 0.2
# Half the height of a node box, in data units: where arcs start and end.
_NODE_HALF = 0.2
_DPI = 110


@dataclasses.dataclass(frozen=True)
class RunHistory:
    """A checked `history.json` of a search or a retraining.

    Attributes:
        path: the file it was read from (named in error messages).
        epochs: the per-epoch records (dicts), at least one.
        primitives: op names in α column order; None in a retrain history.
        num_nodes: intermediate nodes per cell; None in a retrain history.
    """

    path: str
    epochs: tuple
    primitives: tuple | None = None
    num_nodes: int | None = None

    def alpha_records(self) -> list[dict]:
        """The epoch records that hold both `alpha_normal` and
        `alpha_reduce`."""
        return [
            r
            for r in self.epochs
            if all(f"alpha_{cell}" in r for cell in CELLS)
        ]


def _malformed(path, why: str) -> ValueError:
    return ValueError(f"Malformed history file {path}: {why}")


def _read_json(path, kind: str):
    if not os.path.isfile(path):
        raise ValueError(f"{kind} file {path} does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"Malformed {kind.lower()} file {path}: {e}") from e


def load_history(history: "str | os.PathLike | RunHistory") -> RunHistory:
    """Reads and checks a `history.json`.

    Args:
        history: a path, or a `RunHistory` (returned as is).

    Returns:
        The `RunHistory`.

    Raises:
        ValueError: naming the file when it is missing, is not JSON, has no
            `epochs` list of records or an empty one, or has a bad
            `primitives` / `num_nodes`.
    """
    if isinstance(history, RunHistory):
        return history
    path = os.fspath(history)
    data = _read_json(path, "History")
    if not isinstance(data, dict) or not isinstance(data.get("epochs"), list):
        raise _malformed(path, "expected an object with an 'epochs' list.")
    epochs = data["epochs"]
    if not epochs:
        raise ValueError(
            f"History file {path} has no epochs; expected at least one "
            "epoch record."
        )
    if not all(isinstance(r, dict) for r in epochs):
        raise _malformed(path, "each entry of 'epochs' must be an object.")
    primitives = data.get("primitives")
    if primitives is not None:
        if not (
            isinstance(primitives, list)
            and primitives
            and all(isinstance(p, str) for p in primitives)
        ):
            raise _malformed(path, "'primitives' must be a list of op names.")
        primitives = tuple(primitives)
    num_nodes = data.get("num_nodes")
    if num_nodes is not None and (
        not isinstance(num_nodes, int)
        or isinstance(num_nodes, bool)
        or num_nodes < 1
    ):
        raise _malformed(path, "'num_nodes' must be an int >= 1.")
    return RunHistory(path, tuple(epochs), primitives, num_nodes)


def _save_atomic(fig: Figure, path) -> str:
    # Rendering to memory first: a drawing error never touches the disk.
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    write_atomic(path, buffer.getvalue())
    return os.fspath(path)


def _source_name(source: int) -> str:
    if source < NUM_CELL_INPUTS:
        return _INPUT_NAMES[source]
    return str(source - NUM_CELL_INPUTS)


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
        "\n".join([_CELL_TITLES[cell], *textwrap.wrap(" | ".join(nodes), 110)]),
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
    names = [*_INPUT_NAMES, *map(str, range(num_nodes)), _OUTPUT_NAME]
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
    return _save_atomic(cell_figure(genotype, cell), path)


def edge_labels(search_space: SearchSpace) -> list[str]:
    """Row labels of an α matrix, e.g. `"c_{k-2}→0"`, in logit-row order."""
    return [f"{_source_name(e.source)}→{e.node}" for e in search_space.edges]


def _alphas(history: RunHistory, record: dict) -> dict:
    """The record's softmax(α) per cell, checked against the history's
    primitives and node count."""
    if history.primitives is None or history.num_nodes is None:
        raise _malformed(
            history.path, "α heatmaps need 'primitives' and 'num_nodes'."
        )
    space = _search_space(history)
    expected = (space.num_edges, space.num_ops)
    out = {}
    for cell in CELLS:
        key = f"alpha_{cell}"
        try:
            alpha = np.asarray(record[key], dtype=np.float64)
        except (ValueError, TypeError) as e:
            raise _malformed(
                history.path, f"{key} of epoch {record.get('epoch')}: {e}"
            ) from e
        if alpha.shape != expected:
            raise _malformed(
                history.path,
                f"{key} of epoch {record.get('epoch')} has shape "
                f"{alpha.shape}; expected {expected} (edges, primitives).",
            )
        out[cell] = alpha
    return out


def _search_space(history: RunHistory) -> SearchSpace:
    try:
        return SearchSpace(history.primitives, history.num_nodes)
    except ValueError as e:
        raise _malformed(history.path, str(e)) from e


def _alpha_records(history: RunHistory) -> list[dict]:
    records = history.alpha_records()
    if not records:
        raise ValueError(
            f"History file {history.path} has no alpha_normal/alpha_reduce "
            "records; α heatmaps need the history.json of `snas search`."
        )
    return records


def _heatmap(ax, alpha, space, title, row_labels=True, col_labels=True):
    image = ax.imshow(alpha, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_title(title, fontsize=9)
    ax.set_yticks(range(space.num_edges))
    ax.set_yticklabels(edge_labels(space) if row_labels else [], fontsize=7)
    ax.set_xticks(range(space.num_ops))
    ax.set_xticklabels(
        space.primitives if col_labels else [], rotation=90, fontsize=7
    )
    return image


def alpha_figure(
    history: "RunHistory | str | os.PathLike", epoch_index: int = -1
) -> Figure:
    """softmax(α) of one epoch: normal and reduction cell side by side.

    Rows are edges (`"c_{k-2}→0"`, ...), columns ops; each cell shows the
    probability, the row's argmax in bold.

    Args:
        history: a `RunHistory` or the path of a search's history.json.
        epoch_index: index into the records that hold α (default: last).

    Returns:
        The figure.

    Raises:
        ValueError: naming the file if it holds no α or α of a wrong shape.
    """
    history = load_history(history)
    record = _alpha_records(history)[epoch_index]
    alphas = _alphas(history, record)
    space = _search_space(history)
    fig = Figure(
        figsize=(2 + 1.2 * space.num_ops, 1.5 + 0.35 * space.num_edges),
        layout="constrained",
    )
    fig.suptitle(f"softmax(α), epoch {record.get('epoch', '?')}")
    axes = fig.subplots(1, 2)
    for ax, cell in zip(axes, CELLS, strict=True):
        alpha = alphas[cell]
        image = _heatmap(ax, alpha, space, _CELL_TITLES[cell])
        for row, values in enumerate(alpha):
            best = int(np.argmax(values))
            for col, value in enumerate(values):
                ax.text(
                    col,
                    row,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="black" if value > 0.6 else "white",
                    fontweight="bold" if col == best else "normal",
                )
    fig.colorbar(image, ax=list(axes), shrink=0.6, label="probability")
    return fig


def plot_alpha(history: "RunHistory | str | os.PathLike", path) -> str:
    """Saves `alpha_figure(history)` (last epoch) as a PNG; returns `path`."""
    return _save_atomic(alpha_figure(history), path)


def select_epochs(num_epochs: int, max_panels: int = 12) -> list[int]:
    """Up to `max_panels` evenly spaced indices into `num_epochs` epochs,
    always the first and the last.

    Raises:
        ValueError: if `num_epochs` < 1 or `max_panels` < 2.
    """
    if num_epochs < 1 or max_panels < 2:
        raise ValueError(
            f"Need num_epochs >= 1 and max_panels >= 2, got {num_epochs} "
            f"and {max_panels}."
        )
    if num_epochs <= max_panels:
        return list(range(num_epochs))
    # Spacing > 1, so rounding keeps the indices distinct.
    return [int(i) for i in np.linspace(0, num_epochs - 1, max_panels).round()]


def alpha_grid_figure(
    history: "RunHistory | str | os.PathLike", max_panels: int = 12
) -> Figure:
    """Small multiples of softmax(α) over the search.

    One normal | reduction pair per selected epoch (`select_epochs`), three
    pairs to a row, one shared colour scale. Axes titles read
    `"epoch <e> normal"` / `"epoch <e> reduce"`.

    Args:
        history: a `RunHistory` or the path of a search's history.json.
        max_panels: most epochs to show.

    Returns:
        The figure.

    Raises:
        ValueError: naming the file if it holds no α or α of a wrong shape.
    """
    history = load_history(history)
    records = _alpha_records(history)
    chosen = [records[i] for i in select_epochs(len(records), max_panels)]
    space = _search_space(history)
    per_row = min(3, len(chosen))
    rows = math.ceil(len(chosen) / per_row)
    fig = Figure(
        figsize=(
            1.5 + 2 * per_row * (0.2 * space.num_ops + 0.4),
            1.2 + rows * (0.17 * space.num_edges + 1.2),
        ),
        layout="constrained",
    )
    fig.suptitle("softmax(α) over epochs")
    axes = fig.subplots(rows, 2 * per_row, squeeze=False)
    image = None
    for k, record in enumerate(chosen):
        alphas = _alphas(history, record)
        # Op names only where no heatmap sits below, edges only at the left.
        bottom = k + per_row >= len(chosen)
        for side, cell in enumerate(CELLS):
            ax = axes[k // per_row][2 * (k % per_row) + side]
            image = _heatmap(
                ax,
                alphas[cell],
                space,
                f"epoch {record.get('epoch', k)} {cell}",
                row_labels=(k % per_row == 0 and side == 0),
                col_labels=bottom,
            )
    for ax in axes.flat[2 * len(chosen) :]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.5)
    return fig


def plot_alpha_grid(
    history: "RunHistory | str | os.PathLike", path, max_panels: int = 12
) -> str:
    """Saves `alpha_grid_figure(history)` as a PNG; returns `path`."""
    return _save_atomic(alpha_grid_figure(history, max_panels), path)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _series(history: RunHistory, key: str):
    """(epochs, values) of `key` in the records that hold it as a number."""
    points = [
        (r.get("epoch", i), float(r[key]))
        for i, r in enumerate(history.epochs)
        if _is_number(r.get(key))
    ]
    return tuple(zip(*points, strict=True)) if points else ((), ())


def _panels(history: RunHistory) -> list[tuple[str, list[str]]]:
    """(title, keys) of each panel, in order; keys present only."""
    keys = []
    for record in history.epochs:
        for key, value in record.items():
            if key != "epoch" and _is_number(value) and key not in keys:
                keys.append(key)
    fixed = {
        "temperature λ": ["temperature"],
        "entropy of softmax(α) (nats)": ["entropy_normal", "entropy_reduce"],
        "accuracy": [],
        "expected cost (relative to first epoch)": [
            "expected_size",
            "expected_flops",
            "expected_mac",
        ],
        "loss": [],
    }
    taken = {k for group in fixed.values() for k in group}
    panels = {t: [k for k in group if k in keys] for t, group in fixed.items()}
    # The rest grouped by name without "val_": accuracy (supernet, child,
    # top-5...), loss, then one panel per other metric (penalty, ...).
    for key in keys:
        if key in taken:
            continue
        base = key.removeprefix("val_")
        base = next((s for s in ("accuracy", "loss") if base.endswith(s)), base)
        panels.setdefault(base, []).append(key)
    child = any("child" in key for key in panels["accuracy"])
    return [
        ("accuracy (supernet vs child)" if child and t == "accuracy" else t, g)
        for t, g in panels.items()
        if g
    ]


def curves_figure(history: "RunHistory | str | os.PathLike") -> Figure:
    """Per-epoch curves: temperature, entropies, accuracies (supernet,
    child; training and validation), losses, expected cost and any other
    numeric metric, one panel each; a panel whose keys are all missing is
    skipped. Expected costs are divided by their first-epoch value (the
    legend gives it), as size, FLOPs and MAC differ by orders of magnitude.

    Args:
        history: a `RunHistory` or the path of a history.json.

    Returns:
        The figure.

    Raises:
        ValueError: naming the file if no record holds a numeric metric.
    """
    history = load_history(history)
    panels = _panels(history)
    if not panels:
        raise _malformed(history.path, "no epoch record holds a metric.")
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (title, keys) in zip(axes, panels, strict=False):
        for key in keys:
            x, y = _series(history, key)
            label = key
            if key.startswith("expected_") and y[0] and math.isfinite(y[0]):
                label = f"{key} (first: {y[0]:.3g})"
                y = [v / y[0] for v in y]
            # Training dashed beside its validation twin.
            style = "--" if f"val_{key}" in keys else "-"
            ax.plot(x, y, style, marker="o", markersize=3, label=label)
        if title.startswith("entropy") and history.primitives:
            ax.axhline(
                math.log(len(history.primitives)),
                color="0.6",
                linestyle=":",
                label="uniform (log #ops)",
            )
        ax.set_title(title, fontsize=10)
        # Plain tick values: an offset ("1e-5+1.386") is hard to read.
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    return fig


def plot_curves(history: "RunHistory | str | os.PathLike", path) -> str:
    """Saves `curves_figure(history)` as a PNG; returns `path`."""
    return _save_atomic(curves_figure(history), path)


__all__ = [
    "RunHistory",
    "alpha_figure",
    "alpha_grid_figure",
    "cell_figure",
    "curves_figure",
    "edge_labels",
    "load_genotype",
    "load_history",
    "plot_alpha",
    "plot_alpha_grid",
    "plot_cell",
    "plot_curves",
    "select_epochs",
]
