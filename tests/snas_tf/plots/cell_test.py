"""Tests for snas_tf.plots.cell: the kept edges are drawn, PNGs are
written atomically and a bad genotype file is named."""

import os

import pytest
from matplotlib.figure import Figure
from plot_testing import GENOTYPE, PNG_MAGIC, assert_png, write

from snas_tf import plots
from snas_tf.genotype import get_genotype


def _edge_texts(fig):
    return sorted(
        (t.get_gid(), t.get_text())
        for ax in fig.axes
        for t in ax.texts
        if (t.get_gid() or "").startswith("edge ")
    )


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
    path = write(tmp_path / "genotype.json", GENOTYPE.to_json())
    from_file = _edge_texts(plots.cell_figure(path, "reduce"))
    assert from_file == _edge_texts(plots.cell_figure(GENOTYPE, "reduce"))


def test_plot_cell_writes_a_png(tmp_path):
    path = tmp_path / "out" / "cell.png"
    assert plots.plot_cell(GENOTYPE, "normal", path) == str(path)
    assert_png(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["cell.png"]


@pytest.mark.parametrize(
    "content",
    [
        "[1]",
        '{"format_version": 1, "normal": [[["conv_9x9", 0]]], "reduce": [[]]}',
    ],
    ids=["not_a_dict", "unknown_op"],
)
def test_bad_genotype_file_names_the_file(tmp_path, content):
    path = write(tmp_path / "genotype.json", content)
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

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        plots.plot_cell(GENOTYPE, "reduce", path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cell.png"]
