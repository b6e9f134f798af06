"""softmax(α) heatmaps of a search: one epoch (`alpha_figure`) or small
multiples over the epochs (`alpha_grid_figure`)."""

import math
import os

import numpy as np
from matplotlib.figure import Figure

from snas_tf.genotype import CELLS
from snas_tf.plots._common import CELL_TITLES, save_png, source_name
from snas_tf.plots.history import RunHistory, load_history, malformed
from snas_tf.search_space import SearchSpace


def edge_labels(search_space: SearchSpace) -> list[str]:
    """Row labels of an α matrix, e.g. `"c_{k-2}→0"`, in logit-row order."""
    return [f"{source_name(e.source)}→{e.node}" for e in search_space.edges]


def _alphas(history: RunHistory, record: dict) -> dict:
    """The record's softmax(α) per cell, checked against the history's
    primitives and node count."""
    if history.primitives is None or history.num_nodes is None:
        raise malformed(
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
            raise malformed(
                history.path, f"{key} of epoch {record.get('epoch')}: {e}"
            ) from e
        if alpha.shape != expected:
            raise malformed(
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
        raise malformed(history.path, str(e)) from e


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
        image = _heatmap(ax, alpha, space, CELL_TITLES[cell])
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
    return save_png(alpha_figure(history), path)


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
    return save_png(alpha_grid_figure(history, max_panels), path)
