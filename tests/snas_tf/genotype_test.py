"""Tests for snas_tf.genotype: derivation rules, registry, serialisation."""

import json

import numpy as np
import pytest

from snas_tf.genotype import (
    GENOTYPES,
    Genotype,
    derive_genotype,
    get_genotype,
    load_genotype,
)
from snas_tf.search_space import PRIMITIVES, SearchSpace

SPACE = SearchSpace()
K = {name: k for k, name in enumerate(PRIMITIVES)}


def _logits(winners):
    """Logits whose row for (node, source) peaks at winners[(node, source)].

    Edges not in `winners` peak at `none`.
    """
    logits = np.zeros((SPACE.num_edges, SPACE.num_ops))
    for edge in SPACE.edges:
        op, value = winners.get((edge.node, edge.source), ("none", 5.0))
        logits[edge.index, K[op]] = value
    return logits


def _valid_cell():
    return [
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
        [("skip_connect", 0), ("dil_conv_3x3", 2)],
        [],
        [("max_pool_3x3", 4)],
    ]


# --- derivation ------------------------------------------------------------


def test_edge_all_keeps_non_none_edges_and_empty_node():
    winners = {
        (0, 0): ("sep_conv_3x3", 2.0),
        (0, 1): ("skip_connect", 2.0),
        (1, 2): ("dil_conv_5x5", 1.0),
        # Node 2: every edge peaks at none -> empty node.
        (3, 1): ("max_pool_3x3", 3.0),
        (3, 4): ("avg_pool_3x3", 3.0),
    }
    logits = _logits(winners)
    genotype = derive_genotype(logits, logits, rule="edge_all")
    expected = (
        (("sep_conv_3x3", 0), ("skip_connect", 1)),
        (("dil_conv_5x5", 2),),
        (),
        (("max_pool_3x3", 1), ("avg_pool_3x3", 4)),
    )
    assert genotype.normal == expected
    assert genotype.reduce == expected


def test_edge_all_tie_goes_to_lowest_op_index():
    logits = np.zeros((SPACE.num_edges, SPACE.num_ops))
    # Edge (0, 0): sep_conv_5x5 and max_pool_3x3 tie; max_pool has index 1.
    logits[SPACE.edge_index(0, 0), [K["sep_conv_5x5"], K["max_pool_3x3"]]] = 1
    # Edge (0, 1): none ties with skip_connect; none (index 0) wins.
    logits[SPACE.edge_index(0, 1), [K["none"], K["skip_connect"]]] = 1
    genotype = derive_genotype(logits, logits)
    assert genotype.normal[0] == (("max_pool_3x3", 0),)
    # All-zero rows are a full tie, so `none` wins and the rest is empty.
    assert genotype.normal[1:] == ((), (), ())


def test_edge_all_without_none_keeps_every_edge():
    space = SearchSpace(primitives=("skip_connect", "sep_conv_3x3"))
    logits = np.zeros((space.num_edges, space.num_ops))
    logits[:, 1] = 1.0
    genotype = derive_genotype(logits, logits, search_space=space)
    assert [len(node) for node in genotype.normal] == [2, 3, 4, 5]
    assert {op for _, _, op in genotype.edges("normal")} == {"sep_conv_3x3"}


def test_top2_ranks_edges_and_ignores_none():
    logits = np.zeros((SPACE.num_edges, SPACE.num_ops))
    for edge in SPACE.edges:
        # `none` is strongest everywhere; top2 must still ignore it.
        logits[edge.index, K["none"]] = 10.0
    # Node 2 (inputs 0..3): strongest edge 3, then 1; edges 0 and 2 weaker.
    logits[SPACE.edge_index(2, 3), K["sep_conv_5x5"]] = 4.0
    logits[SPACE.edge_index(2, 1), K["dil_conv_3x3"]] = 3.0
    logits[SPACE.edge_index(2, 0), K["skip_connect"]] = 2.0
    genotype = derive_genotype(logits, logits, rule="top2")
    assert genotype.normal[2] == (("sep_conv_5x5", 3), ("dil_conv_3x3", 1))
    assert all(len(node) == 2 for node in genotype.normal)


def test_top2_ties_go_to_lowest_source_and_op():
    logits = np.zeros((SPACE.num_edges, SPACE.num_ops))
    genotype = derive_genotype(logits, logits, rule="top2")
    # Uniform logits: sources 0 and 1 win; op index 1 (max_pool) wins.
    for node in genotype.normal:
        assert node == (("max_pool_3x3", 0), ("max_pool_3x3", 1))


def test_unknown_rule():
    logits = np.zeros((SPACE.num_edges, SPACE.num_ops))
    with pytest.raises(ValueError, match="'top3'.*edge_all.*top2"):
        derive_genotype(logits, logits, rule="top3")


def test_wrong_logits_shape():
    good = np.zeros((14, 8))
    with pytest.raises(ValueError, match=r"\(14, 7\).*\(14, 8\)"):
        derive_genotype(good, np.zeros((14, 7)))


@pytest.mark.parametrize("rule", ["edge_all", "top2"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_are_a_value_error_naming_them(bad, rule):
    good = np.zeros((SPACE.num_edges, SPACE.num_ops))
    logits = good.copy()
    logits[SPACE.edge_index(1, 2), K["sep_conv_3x3"]] = bad
    # Edge (node 1, input 2) is row 2 + 2 = 4 (docs/method.md §1 numbering).
    match = r"reduce logits contain NaN or inf at edge 4, op 'sep_conv_3x3'"
    with pytest.raises(ValueError, match=match + rf": {bad}"):
        derive_genotype(good, logits, rule=rule)


def test_non_finite_logits_message_counts_the_rest():
    logits = np.full((SPACE.num_edges, SPACE.num_ops), np.nan)
    with pytest.raises(ValueError, match=r"normal logits .*and 108 more"):
        derive_genotype(logits, logits)


def test_a_space_of_only_none_drops_every_edge_and_top2_refuses():
    space = SearchSpace(("none",), num_nodes=2)
    logits = np.zeros((space.num_edges, space.num_ops))
    genotype = derive_genotype(logits, logits, "edge_all", space)
    assert genotype.normal == ((), ()) and genotype.reduce == ((), ())
    with pytest.raises(
        ValueError, match=r"'top2' needs an op other than 'none'.*\('none',\)"
    ):
        derive_genotype(logits, logits, "top2", space)


# --- registry --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GENOTYPES))
def test_registry_validates_and_round_trips(name):
    genotype = GENOTYPES[name]
    genotype.validate(SPACE)
    assert len(genotype.normal) == len(genotype.reduce) == 4
    assert Genotype.from_json(genotype.to_json()) == genotype
    assert Genotype.from_string(genotype.to_string()) == genotype
    assert Genotype.from_dict(json.loads(json.dumps(genotype.to_dict()))) == (
        genotype
    )
    assert str(genotype) == genotype.to_string()


def test_registry_spot_checks_match_published_table():
    mild = GENOTYPES["SNAS_mild"]
    assert mild.reduce[3] == (("max_pool_3x3", 0), ("dil_conv_5x5", 2))
    assert mild.normal[1] == (("skip_connect", 0), ("dil_conv_3x3", 1))
    moderate = GENOTYPES["SNAS_moderate"]
    assert moderate.normal[0] == (("dil_conv_5x5", 0), ("skip_connect", 1))
    aggressive = GENOTYPES["SNAS_aggressive"]
    assert aggressive.reduce == (
        (("sep_conv_5x5", 0),),
        (("sep_conv_5x5", 0),),
        (),
        (),
    )
    darts = GENOTYPES["DARTS_V2"]
    assert darts.normal[3] == (("skip_connect", 0), ("dil_conv_3x3", 2))
    assert (2, 2, "skip_connect") in darts.edges("reduce")


def test_compact_string_form_of_empty_nodes():
    text = GENOTYPES["SNAS_aggressive"].to_string()
    assert text.endswith(";reduce=sep_conv_5x5:0|sep_conv_5x5:0|-|-")


# --- validation ------------------------------------------------------------


def test_lists_are_normalised_to_tuples():
    genotype = Genotype(normal=_valid_cell(), reduce=_valid_cell())
    assert isinstance(genotype.normal[0][0], tuple)
    assert genotype.normal[2] == ()


def _with_edge(node, edge):
    cell = _valid_cell()
    cell[node] = cell[node] + [edge]
    return cell


@pytest.mark.parametrize(
    "normal, match",
    [
        (_with_edge(0, ("conv_7x7", 0)), "'conv_7x7'.*sep_conv_3x3"),
        (_with_edge(2, ("none", 1)), "'none' is not allowed"),
        (_with_edge(1, ("skip_connect", 3)), "Input index 3.*node 1.*0..2"),
        (_with_edge(1, ("skip_connect", -1)), "Input index -1"),
        (_with_edge(0, ("skip_connect", 1)), "Duplicate input 1"),
        (_valid_cell()[:3], "normal has 3 nodes.*reduce has 4"),
    ],
)
def test_invalid_genotype_raises_value_error(normal, match):
    with pytest.raises(ValueError, match=match):
        Genotype(normal=normal, reduce=_valid_cell())


def test_node_count_is_checked_against_search_space():
    three = [[("skip_connect", 0)], [("skip_connect", 1)], []]
    genotype = Genotype(normal=three, reduce=three)
    genotype.validate(SearchSpace(num_nodes=3))
    with pytest.raises(ValueError, match="3 nodes; expected 4"):
        genotype.validate(SPACE)


def test_ops_are_checked_against_search_space_subset():
    space = SearchSpace(primitives=("none", "skip_connect"))
    with pytest.raises(ValueError, match="'sep_conv_3x3'.*skip_connect"):
        GENOTYPES["DARTS_V2"].validate(space)


@pytest.mark.parametrize(
    "entry", [("skip_connect",), "skip_connect", ("skip_connect", "0"), 3]
)
def test_malformed_entry_raises_type_error(entry):
    cell = _valid_cell()
    cell[0] = [entry]
    with pytest.raises(TypeError, match="Malformed edge"):
        Genotype(normal=cell, reduce=_valid_cell())


def test_bad_format_version():
    data = GENOTYPES["DARTS_V2"].to_dict()
    data["format_version"] = 2
    with pytest.raises(ValueError, match="format_version 2"):
        Genotype.from_dict(data)
    del data["format_version"]
    with pytest.raises(ValueError, match="format_version None"):
        Genotype.from_dict(data)


def test_unknown_key_in_dict():
    data = GENOTYPES["DARTS_V2"].to_dict()
    data["concat"] = [2, 3, 4, 5]
    with pytest.raises(ValueError, match="concat"):
        Genotype.from_dict(data)


@pytest.mark.parametrize(
    "text",
    [
        "normal=skip_connect:0|-|-|-",
        "normal=skip_connect0|-|-|-;reduce=-|-|-|-",
        "normal=-|-|-|-;reduce=-|-|-|-;normal=-|-|-|-",
        "normal=skip_connect:x|-|-|-;reduce=-|-|-|-",
    ],
)
def test_malformed_compact_string(text):
    with pytest.raises(ValueError, match="Malformed.*genotype string"):
        Genotype.from_string(text)


# --- get_genotype ----------------------------------------------------------


def test_get_genotype_by_name():
    assert get_genotype("SNAS_mild") is GENOTYPES["SNAS_mild"]


def test_get_genotype_from_json_file_and_string(tmp_path):
    genotype = GENOTYPES["SNAS_aggressive"]
    path = tmp_path / "genotype.json"
    path.write_text(genotype.to_json(indent=2))
    assert get_genotype(str(path)) == genotype
    assert get_genotype(path) == genotype
    assert get_genotype(genotype.to_json()) == genotype


def test_get_genotype_from_compact_string():
    text = "normal=skip_connect:0|-|-|-;reduce=-|-|-|max_pool_3x3:4"
    genotype = get_genotype(text)
    assert genotype.normal[0] == (("skip_connect", 0),)
    assert genotype.reduce[3] == (("max_pool_3x3", 4),)


def test_get_genotype_unknown_name():
    with pytest.raises(ValueError, match="'SNAS_wild'.*SNAS_mild.*DARTS_V2"):
        get_genotype("SNAS_wild")


# --- load_genotype ---------------------------------------------------------


def test_load_genotype_reads_a_file_and_passes_a_genotype_through(tmp_path):
    genotype = GENOTYPES["SNAS_aggressive"]
    path = tmp_path / "genotype.json"
    path.write_text(genotype.to_json(indent=2))
    assert load_genotype(path) == genotype
    assert load_genotype(str(path)) == genotype
    assert load_genotype(genotype) is genotype


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "does not exist"),
        ('{"format_version": 1, "normal": [', "Invalid JSON"),
        (b"\xff\xfe", "Invalid JSON"),
        ("[1]", "Invalid genotype file"),
        ('{"format_version": 1, "normal": [[["x", 0]]]}', "Invalid genotype"),
        (
            '{"format_version": 1, "normal": [["sep_conv_3x3"]], "reduce": []}',
            "Invalid genotype file",
        ),
    ],
    ids=["missing", "not_json", "not_utf8", "a_list", "no_reduce", "bad_edge"],
)
def test_a_bad_genotype_file_is_a_value_error_naming_it(
    tmp_path, content, problem
):
    path = tmp_path / "runs" / "genotype.json"
    if content is not None:
        path.parent.mkdir()
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    for reader in (load_genotype, get_genotype):
        with pytest.raises(ValueError, match=problem) as info:
            reader(str(path))
        message = str(info.value)
        assert str(path) in message and "\n" not in message
