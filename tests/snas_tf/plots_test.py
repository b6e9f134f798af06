"""Tests for snas_tf.plots: what each figure shows, atomic PNG writes and
one-line errors naming the bad file."""

import json

import numpy as np
import pytest
from matplotlib import image as mpimg
from matplotlib.figure import Figure

from snas_tf import plots
from snas_tf.genotype import get_genotype
from snas_tf.search_space import PRIMITIVES, SearchSpace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPACE = SearchSpace()
GENOTYPE = get_genotype("SNAS_moderate")


def _softmax(rng, shape):
    e = np.exp(rng.normal(size=shape))
    return e / e.sum(axis=-1, keepdims=True)


def _search_history(num_epochs, seed=0):
    """A history.json dict as `snas search` writes it, with random α."""
    rng = np.random.default_rng(seed)
    shape = (SPACE.num_edges, SPACE.num_ops)
    epochs = [
        {
            "epoch": e,
            "genotype": str(GENOTYPE),
            "temperature": 1.0 - 0.1 * e,
            "entropy_normal": 2.0 - 0.1 * e,
            "entropy_reduce": 2.0 - 0.05 * e,
            "expected_size": 1e6 - 1e4 * e,
            "expected_flops": 1e8 - 1e6 * e,
            "expected_mac": 5e7 - 1e5 * e,
            "loss": 2.0 - 0.1 * e,
            "accuracy": 0.3 + 0.05 * e,
            "val_accuracy": 0.3 + 0.04 * e,
            "val_child_accuracy": 0.2 + 0.04 * e,
            "alpha_normal": _softmax(rng, shape).tolist(),
            "alpha_reduce": _softmax(rng, shape).tolist(),
        }
        for e in range(num_epochs)
    ]
    return {
        "primitives": list(PRIMITIVES),
        "num_nodes": SPACE.num_nodes,
        "epochs": epochs,
        "history": {},
    }


def _write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _edge_texts(fig):
    return sorted(
        (t.get_gid(), t.get_text())
        for ax in fig.axes
        for t in ax.texts
        if (t.get_gid() or "").startswith("edge ")
    )


def _assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100


@pytest.mark.parametrize(
    "name, cell",
    [
        ("SNAS_moderate", "normal"),
        ("SNAS_moderate", "reduce"),
        # Nodes 2 and 3 are empty: only two labelled edges.
        ("SNAS_aggressive", "reduce"),
        # top2 order (strongest first) and an edge from node 0.
        ("DARTS_V2", "normal"),
    ],
)
def test_cell_figure_labels_exactly_the_kept_edges(name, cell):
    genotype = get_genotype(name)
    fig = plots.cell_figure(genotype, cell)
    expected = sorted(
        (f"edge {source}->{node}", op)
        for node, source, op in genotype.edges(cell)
    )
    assert _edge_texts(fig) == expected
    nodes = [t for t in fig.axes[0].texts if t.get_gid().startswith("node ")]
    # c_{k-2}, c_{k-1}, the intermediate nodes and c_{k}.
    assert len(nodes) == 2 + len(genotype.normal) + 1


def test_cell_figure_reads_a_genotype_file(tmp_path):
    path = _write(tmp_path / "genotype.json", GENOTYPE.to_json())
    from_file = _edge_texts(plots.cell_figure(path, "reduce"))
    assert from_file == _edge_texts(plots.cell_figure(GENOTYPE, "reduce"))


def test_plot_cell_writes_a_png(tmp_path):
    path = tmp_path / "out" / "cell.png"
    assert plots.plot_cell(GENOTYPE, "normal", path) == str(path)
    _assert_png(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["cell.png"]


def test_edge_labels_follow_the_logit_rows():
    labels = plots.edge_labels(SPACE)
    assert len(labels) == 14
    first = ["c_{k-2}→0", "c_{k-1}→0", "c_{k-2}→1", "c_{k-1}→1", "0→1"]
    assert labels[:5] == first
    assert labels[-1] == "2→3"


def test_alpha_figure_shows_the_last_epoch(tmp_path):
    data = _search_history(3)
    path = _write(tmp_path / "history.json", data)
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
    path = _write(tmp_path / "history.json", _search_history(1))
    _assert_png(plots.plot_alpha(path, tmp_path / "alpha.png"))


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
    data = _search_history(7)
    path = _write(tmp_path / "history.json", data)
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


def _panel_titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.lines]


def test_curves_show_search_metrics(tmp_path):
    path = _write(tmp_path / "history.json", _search_history(3))
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
    path = _write(tmp_path / "history.json", {"epochs": epochs})
    fig = plots.curves_figure(path)
    assert _panel_titles(fig) == ["accuracy", "loss"]
    (line,) = fig.axes[0].lines
    assert list(line.get_xdata()) == [0, 1, 2]


BAD_HISTORIES = {
    "not_json": "{epochs: ",
    "a_list": "[]",
    "no_epochs_key": {"primitives": list(PRIMITIVES)},
    "empty_epochs": {"epochs": []},
    "record_not_object": {"epochs": [1, 2]},
    "bad_primitives": {"epochs": [{"loss": 1.0}], "primitives": "none"},
}


@pytest.mark.parametrize("content", BAD_HISTORIES.values(), ids=BAD_HISTORIES)
def test_bad_history_is_a_one_line_error_naming_the_file(tmp_path, content):
    path = _write(tmp_path / "history.json", content)
    with pytest.raises(ValueError) as info:
        plots.curves_figure(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_empty_history_says_so(tmp_path):
    path = _write(tmp_path / "history.json", {"epochs": []})
    with pytest.raises(ValueError, match="no epochs"):
        plots.load_history(path)


def test_missing_history_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        plots.load_history(tmp_path / "history.json")


def test_alpha_of_the_wrong_shape_names_the_file(tmp_path):
    data = _search_history(2)
    data["epochs"][1]["alpha_reduce"] = data["epochs"][1]["alpha_reduce"][:3]
    path = _write(tmp_path / "history.json", data)
    with pytest.raises(ValueError, match=r"alpha_reduce of epoch 1.*\(3, 8\)"):
        plots.alpha_figure(path)
    with pytest.raises(ValueError, match="history.json"):
        plots.alpha_grid_figure(path)


def test_history_without_alpha_has_no_heatmap(tmp_path):
    path = _write(tmp_path / "history.json", {"epochs": [{"loss": 1.0}]})
    with pytest.raises(ValueError, match="no alpha_normal"):
        plots.alpha_figure(path)


@pytest.mark.parametrize(
    "content",
    [
        "[1]",
        '{"format_version": 1, "normal": [[["conv_9x9", 0]]], "reduce": [[]]}',
    ],
    ids=["not_a_dict", "unknown_op"],
)
def test_bad_genotype_file_names_the_file(tmp_path, content):
    path = _write(tmp_path / "genotype.json", content)
    with pytest.raises(ValueError) as info:
        plots.cell_figure(path, "normal")
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_failed_render_leaves_the_previous_png(tmp_path, monkeypatch):
    path = tmp_path / "cell.png"
    plots.plot_cell(GENOTYPE, "normal", path)
    before = path.read_bytes()

    def broken_savefig(self, fname, **kwargs):
        # Half a PNG, then a failure (a full disk, a font error, ...).
        if hasattr(fname, "write"):
            fname.write(PNG_MAGIC)
        else:
            with open(fname, "wb") as f:
                f.write(PNG_MAGIC)
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_cell(GENOTYPE, "reduce", path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cell.png"]


def test_failed_rename_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "cell.png"
    plots.plot_cell(GENOTYPE, "normal", path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(plots.os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        plots.plot_cell(GENOTYPE, "reduce", path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cell.png"]
