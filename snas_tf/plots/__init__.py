"""Plots of a search or retraining: cells, α heatmaps, per-epoch curves.

Reads what `snas search` and `snas retrain` write into their model_dir
(`genotype.json`, `history.json`) and draws PNGs with matplotlib's Agg
renderer. Figures are built on `matplotlib.figure.Figure` without pyplot,
so no display and no global backend switch are involved. Each `*_figure`
function builds a figure (what tests inspect); each `plot_*` function saves
one atomically (a temporary file in the same directory, then a rename) and
returns its path.

Modules: `history` (reading history.json), `cell` (cell diagrams),
`alpha` (α heatmaps), `curves` (per-epoch curves); every public name is
importable from `snas_tf.plots`.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.1 (cell), §2.2 (temperature), §3.1 (search metrics, Fig. 3).
"""

from snas_tf.genotype import load_genotype
from snas_tf.plots.alpha import (
    alpha_figure,
    alpha_grid_figure,
    edge_labels,
    plot_alpha,
    plot_alpha_grid,
    select_epochs,
)
from snas_tf.plots.cell import cell_figure, plot_cell
from snas_tf.plots.curves import curves_figure, plot_curves
from snas_tf.plots.history import RunHistory, load_history

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
