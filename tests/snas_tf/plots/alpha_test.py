"""Tests for snas_tf.plots.alpha: the α heatmaps show the recorded
softmax(α) and name a history without (valid) α."""

import numpy as np
import pytest
from plot_testing import SPACE, assert_png, search_history, write

from snas_tf import plots


def test_edge_labels_follow_the_logit_rows():
    labels = plots.edge_labels(SPACE)
    assert len(labels) == 14
    first = ["c_{k-2}→0", "c_{k-1}→0", "c_{k-2}→1", "c_{k-1}→1", "0→1"]
    assert labels[:5] == first
    assert labels[-1] == "2→3"


def test_alpha_figure_shows_the_last_epoch(tmp_path):
    data = search_history(3)
    path = write(tmp_path / "history.json", data)
    fig = plots.alpha_figure(path)
    assert "epoch 2" in fig.get_suptitle()
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert len(heatmaps) == 2
    for ax, cell in zip(heatmaps, ("normal", "reduce"), strict=True):
        shown = np.asarray(ax.images[0].get_array())
        np.testing.assert_allclose(shown, data["epochs"][-1][f"alpha_{cell}"])
        rows = [t.get_text() for t in ax.get_yticklabels()]
        assert rows == plots.edge_labels(SPACE)


def test_plot_alpha_writes_a_png(tmp_path):
    path = write(tmp_path / "history.json", search_history(1))
    assert_png(plots.plot_alpha(path, tmp_path / "alpha.png"))


@pytest.mark.parametrize(
    "num_epochs, max_panels, expected",
    [(1, 12, [0]), (5, 12, [0, 1, 2, 3, 4]), (7, 3, [0, 3, 6])],
)
def test_select_epochs_small_cases(num_epochs, max_panels, expected):
    assert plots.select_epochs(num_epochs, max_panels) == expected


@pytest.mark.parametrize("num_epochs", [13, 30, 150])
def test_select_epochs_keeps_first_last_and_the_cap(num_epochs):
    chosen = plots.select_epochs(num_epochs, 12)
    assert len(chosen) == 12
    assert chosen[0] == 0 and chosen[-1] == num_epochs - 1
    assert all(a < b for a, b in zip(chosen, chosen[1:], strict=False))


def test_alpha_grid_picks_first_and_last_epoch(tmp_path):
    data = search_history(7)
    path = write(tmp_path / "history.json", data)
    fig = plots.alpha_grid_figure(path, max_panels=3)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == [
        f"epoch {e} {cell}" for e in (0, 3, 6) for cell in ("normal", "reduce")
    ]
    last = [ax for ax in fig.axes if ax.images][-1]
    np.testing.assert_allclose(
        np.asarray(last.images[0].get_array()),
        data["epochs"][6]["alpha_reduce"],
    )


def test_alpha_of_the_wrong_shape_names_the_file(tmp_path):
    data = search_history(2)
    data["epochs"][1]["alpha_reduce"] = data["epochs"][1]["alpha_reduce"][:3]
    path = write(tmp_path / "history.json", data)
    with pytest.raises(ValueError, match=r"alpha_reduce of epoch 1.*\(3, 8\)"):
        plots.alpha_figure(path)
    with pytest.raises(ValueError, match="history.json"):
        plots.alpha_grid_figure(path)


def test_history_without_alpha_has_no_heatmap(tmp_path):
    path = write(tmp_path / "history.json", {"epochs": [{"loss": 1.0}]})
    with pytest.raises(ValueError, match="no alpha_normal"):
        plots.alpha_figure(path)
