"""The plot job: `run_plot(model_dir)`.

Reads a `snas search` or `snas retrain` output directory and writes PNGs
into `model_dir/plots/`: `cell_normal.png` and `cell_reduce.png` (from
`genotype.json`), `curves.png` (per-epoch metrics from `history.json`)
and, for a search, `alpha.png` (softmax(α) of the last epoch) and
`alpha_epochs.png` (softmax(α) over the epochs).
"""

import os

from snas_tf import plots
from snas_tf.genotype import CELLS, load_genotype

_EXPECTED = (
    "expected a `snas search` or `snas retrain` output directory holding "
    "genotype.json and/or history.json."
)


def run_plot(model_dir) -> list[str]:
    """Writes every plot that `model_dir`'s files allow.

    Args:
        model_dir: output directory of `snas search` or `snas retrain`.

    Returns:
        The paths written, in order: cells, curves, α heatmaps.

    Raises:
        ValueError: naming the path if `model_dir` is missing or holds
            neither genotype.json nor history.json, or naming the file that
            is malformed.
    """
    if not os.path.isdir(model_dir):
        raise ValueError(f"Model directory {model_dir} not found; {_EXPECTED}")
    genotype_path = os.path.join(model_dir, "genotype.json")
    history_path = os.path.join(model_dir, "history.json")
    has_genotype = os.path.isfile(genotype_path)
    if not has_genotype and not os.path.isfile(history_path):
        raise ValueError(
            f"{model_dir} has neither genotype.json nor history.json; "
            f"{_EXPECTED}"
        )
    # Both files are read and checked before anything is written: a
    # malformed one fails the job with no plots half made.
    genotype = load_genotype(genotype_path) if has_genotype else None
    history = None
    if os.path.isfile(history_path):
        history = plots.load_history(history_path)
    out = os.path.join(model_dir, "plots")
    written = []
    if genotype is not None:
        for cell in CELLS:
            path = os.path.join(out, f"cell_{cell}.png")
            written.append(plots.plot_cell(genotype, cell, path))
    if history is not None:
        written.append(
            plots.plot_curves(history, os.path.join(out, "curves.png"))
        )
        if history.alpha_records():
            written.append(
                plots.plot_alpha(history, os.path.join(out, "alpha.png"))
            )
            written.append(
                plots.plot_alpha_grid(
                    history, os.path.join(out, "alpha_epochs.png")
                )
            )
    return written


__all__ = ["run_plot"]
