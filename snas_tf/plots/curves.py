"""Per-epoch curves of a search or a retraining (`curves_figure`)."""

import math
import numbers
import os

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from snas_tf.plots._common import save_png
from snas_tf.plots.history import RunHistory, load_history, malformed


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
        "expected latency of the target network (ms)": ["expected_latency_ms"],
        "loss": [],
        "weightless ops in the derived cells": [
            "weightless_normal",
            "weightless_reduce",
        ],
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
    legend gives it), as size, FLOPs and MAC differ by orders of magnitude;
    the expected latency of a latency-aware search is in ms.

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
        raise malformed(history.path, "no epoch record holds a metric.")
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (title, keys) in zip(axes, panels, strict=False):
        for key in keys:
            x, y = _series(history, key)
            label = key
            relative = (
                key.startswith("expected_") and key != "expected_latency_ms"
            )
            if relative and y[0] and math.isfinite(y[0]):
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
    return save_png(curves_figure(history), path)
