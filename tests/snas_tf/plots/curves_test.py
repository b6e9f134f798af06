"""Tests for snas_tf.plots.curves: one panel per metric group present."""

import pytest
from plot_testing import search_history, write

from snas_tf import plots


def _panel_titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.lines]


def test_curves_show_search_metrics(tmp_path):
    path = write(tmp_path / "history.json", search_history(3))
    fig = plots.curves_figure(path)
    assert _panel_titles(fig) == [
        "temperature λ",
        "entropy of softmax(α) (nats)",
        "accuracy (supernet vs child)",
        "expected cost (relative to first epoch)",
        "loss",
    ]
    accuracy = fig.axes[2]
    assert sorted(line.get_label() for line in accuracy.lines) == [
        "accuracy",
        "val_accuracy",
        "val_child_accuracy",
    ]
    cost = fig.axes[3].lines[0]
    # Normalised by the first epoch's value.
    assert cost.get_ydata()[0] == pytest.approx(1.0)


def test_curves_skip_missing_panels(tmp_path):
    epochs = [
        {"epoch": e, "loss": 1.0 / (e + 1), "val_accuracy": 0.1 * e}
        for e in range(3)
    ]
    path = write(tmp_path / "history.json", {"epochs": epochs})
    fig = plots.curves_figure(path)
    assert _panel_titles(fig) == ["accuracy", "loss"]
    (line,) = fig.axes[0].lines
    assert list(line.get_xdata()) == [0, 1, 2]
