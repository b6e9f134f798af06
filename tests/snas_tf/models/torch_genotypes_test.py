"""The authors' edge lists, for importing their weights."""

import json
import pathlib

import numpy as np
import pytest

from snas_tf.genotype import GENOTYPES, Genotype
from snas_tf.models.torch_genotypes import (
    DARTS_FORM,
    official_edges,
    parse_official_text,
)
from snas_tf.models.torch_import import genotype_from_torch

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "reference/fixtures"
# As the official code prints a genotype (a log line of its search).
OFFICIAL_TEXT = (
    "genotype = Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), "
    "('none', 2), ('dil_conv_3x3', 0), ('max_pool_3x3', 1)], "
    "normal_concat=range(2, 4), reduce=[('avg_pool_3x3', 0), "
    "('sep_conv_5x5', 1), ('skip_connect', 2), ('none', 0), "
    "('dil_conv_5x5', 1)], reduce_concat=range(2, 4))"
)


def _meta(case):
    with np.load(FIXTURES / f"{case}.npz") as data:
        meta = json.loads(str(data["meta"]))
    return {c: [tuple(e) for e in meta[c]] for c in ("normal", "reduce")}


def test_published_lists_are_the_official_code_s():
    """The fixtures record the lists the official code built with."""
    assert official_edges("SNAS_moderate_edge_all") == _meta(
        "cifar_edge_all_moderate"
    )
    assert official_edges("SNAS_moderate", "darts") == _meta(
        "imagenet_darts_moderate"
    )


def _as_sets(genotype):
    return [
        [frozenset(node) for node in getattr(genotype, c)]
        for c in ("normal", "reduce")
    ]


@pytest.mark.parametrize(
    "name", ["SNAS_mild", "SNAS_moderate", "SNAS_aggressive"]
)
def test_edge_all_lists_are_our_published_cells(name):
    ours = genotype_from_torch(official_edges(name), "edge_all")
    assert official_edges(name) == official_edges(f"{name}_edge_all")
    assert _as_sets(ours) == _as_sets(GENOTYPES[name])


@pytest.mark.parametrize("name", list(DARTS_FORM))
def test_darts_form_lists_are_our_published_cells(name):
    ours = genotype_from_torch(official_edges(name, "darts"), "darts")
    assert _as_sets(ours) == _as_sets(GENOTYPES[name])


def test_darts_form_keeps_the_official_order_where_ours_differs():
    """SNAS_aggressive's node 2 lists dil_conv_5x5 first officially: its
    tensors are `_ops.4`, which our node order would put at `_ops.5`."""
    assert official_edges("SNAS_aggressive", "darts")["normal"][4] == (
        "dil_conv_5x5",
        1,
    )
    assert GENOTYPES["SNAS_aggressive"].normal[2][0] == ("skip_connect", 0)


def test_the_official_text_is_parsed_inline_and_from_a_file(tmp_path):
    edges = parse_official_text(OFFICIAL_TEXT.split(" = ", 1)[1])
    assert edges["normal"][2] == ("none", 2)
    assert len(edges["reduce"]) == 5
    path = tmp_path / "genotype.txt"
    path.write_text(OFFICIAL_TEXT + "\n")
    for spec in (OFFICIAL_TEXT, str(path)):
        for layout in ("edge_all", "darts"):
            assert official_edges(spec, layout) == edges


@pytest.mark.parametrize(
    "text",
    [
        "Genotype(normal=__import__('os').getcwd(), reduce=[])",
        "Genotype(normal=[('sep_conv_3x3', 0)])",
        "Genotype(normal=[('sep_conv_3x3',)], reduce=[])",
        "Genotype(normal=[",
    ],
)
def test_bad_official_text_is_refused_not_run(text):
    with pytest.raises(ValueError, match="genotype text"):
        official_edges(text)


def test_darts_layout_pads_our_genotypes_to_two_edges():
    genotype = Genotype(
        normal=[
            [("sep_conv_3x3", 1)],
            [],
            [("skip_connect", 0), ("sep_conv_5x5", 1)],
            [],
        ],
        reduce=[[("max_pool_3x3", 0), ("max_pool_3x3", 1)]] + [[]] * 3,
    )
    edges = official_edges(genotype.to_string(), "darts")
    assert edges["normal"][:2] == [("sep_conv_3x3", 1), ("none", 0)]
    assert len(edges["normal"]) == len(edges["reduce"]) == 8
    assert genotype_from_torch(edges, "darts") == genotype


def test_darts_layout_refuses_a_node_of_three_edges():
    genotype = Genotype(
        normal=[[("skip_connect", 0), ("skip_connect", 1)]] * 2
        + [[("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 2)]]
        + [[]],
        reduce=[[]] * 4,
    )
    with pytest.raises(ValueError, match="node 2 has 3 edges"):
        official_edges(genotype.to_string(), "darts")


def test_edge_all_needs_the_official_order():
    with pytest.raises(ValueError, match="official edge order"):
        official_edges(GENOTYPES["DARTS_V2"].to_string(), "edge_all")
    with pytest.raises(ValueError, match="layout edge_all"):
        official_edges("SNAS_mild_edge_all", "darts")
    with pytest.raises(ValueError, match="Unknown layout 'model'"):
        official_edges("SNAS_mild", "model")
