"""The target network's layout and the entries of its latency table."""

import re

import keras
import pytest
from latency_testing import TINY_TARGET

from snas_tf.config import RetrainConfig, load_config
from snas_tf.genotype import Genotype
from snas_tf.latency.entries import (
    cell_entries,
    op_entry,
    required_entries,
    stem_entries,
)
from snas_tf.latency.op_models import entry_model
from snas_tf.latency.target import (
    NETWORKS,
    TargetNetwork,
    cell_shapes,
    target_from_retrain_config,
)
from snas_tf.models import child_network
from snas_tf.models.child_network import build_child_network

# Every edge kept, with a convolution where the space has one.
_ALL_EDGES = [[("sep_conv_3x3", 0), ("skip_connect", 1)], [("sep_conv_3x3", 2)]]


@pytest.mark.parametrize("network, size", [("cifar", 8), ("imagenet", 33)])
def test_cell_shapes_are_the_child_networks(network, size):
    target = TargetNetwork(
        network, 4, 4, size, 10, TINY_TARGET.primitives, num_nodes=2
    )
    model = build_child_network(
        Genotype(normal=_ALL_EDGES, reduce=_ALL_EDGES),
        network=network,
        num_classes=10,
        channels=4,
        num_layers=4,
        image_size=size,
        auxiliary=False,
    )
    for shape in cell_shapes(target):
        i = shape.index
        for k, (channels, side) in enumerate((shape.input0, shape.input1)):
            # An ImageNet first cell's pre0 is a FactorizedReduce, whose
            # first layer is its ReLU as well.
            got = model.get_layer(f"cell{i}_pre{k}_relu").input.shape
            assert tuple(got[1:]) == (side, side, channels), (i, k)
        out = model.get_layer(f"cell{i}_concat").output.shape
        want = (shape.node_side, shape.node_side, 2 * shape.channels)
        assert tuple(out[1:]) == want, i


def test_target_networks_are_the_child_networks():
    assert NETWORKS == child_network.NETWORKS


def test_ids_are_unique_file_names_and_leave_out_free_ops():
    entries = required_entries(TINY_TARGET)
    assert len(set(entries)) == len(entries)
    for entry_id, entry in entries.items():
        assert entry.id == entry_id
        assert re.fullmatch(r"[a-z0-9_-]+", entry_id), entry_id
        assert not entry.free
    ops = [e for e in entries.values() if e.kind == "op"]
    assert {e["op"] for e in ops} == {"skip_connect", "sep_conv_3x3"}
    # skip_connect is timed only where it is a FactorizedReduce.
    assert all(e["stride"] == 2 for e in ops if e["op"] == "skip_connect")
    assert op_entry("skip_connect", 4, 8, 1).free
    with pytest.raises(ValueError, match="'none' has no entry"):
        op_entry("none", 4, 8, 1)


def test_every_op_shape_of_every_cell_is_an_entry():
    entries = required_entries(TINY_TARGET)
    for shape in cell_shapes(TINY_TARGET):
        cell = cell_entries(TINY_TARGET, shape)
        for ops in cell.edges:
            assert ops[0] is None  # none
            for entry in ops[1:]:
                assert entry.free or entry.id in entries
        for part in (cell.preprocess0, cell.preprocess1, cell.add, cell.zeros):
            assert part.id in entries


def test_mobile_target_from_its_config():
    config = load_config(["configs/imagenet_mobile.yaml"], (), RetrainConfig)
    target = target_from_retrain_config(config)
    assert (target.channels, target.num_layers, target.image_size) == (
        48,
        14,
        224,
    )
    assert target.num_classes == 1000
    entries = required_entries(target)
    assert [e.id for e in stem_entries(target)] == [
        "stem0-imagenet-c48-h224",
        "stem1-imagenet-c48-h56",
    ]
    # Normal cells at (C, side) 48@28, 96@14, 192@7; reductions from 28
    # and 14: each a stride-1 or -2 entry of the 6 timed ops (7 for s2).
    for c, side in ((48, 28), (96, 14), (192, 7)):
        assert f"op-sep_conv_5x5-c{c}-h{side}-s1" in entries
    for c, side in ((96, 28), (192, 14)):
        assert f"op-skip_connect-c{c}-h{side}-s2" in entries
        assert f"op-dil_conv_5x5-c{c}-h{side}-s2" in entries
    assert "pre-fr-i48-c48-h56" in entries
    assert "head-i768-h7-k1000" in entries


def test_entry_models_have_the_entry_shapes():
    for entry in required_entries(TINY_TARGET).values():
        model = entry_model(entry)
        assert isinstance(model, keras.Model)
        assert all(x.shape[0] == 1 for x in model.inputs)
        params = dict(entry.params)
        if entry.kind == "op":
            side = -(-params["side"] // params["stride"])
            assert tuple(model.output.shape) == (
                1,
                side,
                side,
                params["channels"],
            )
        if entry.kind == "head":
            assert tuple(model.output.shape) == (1, params["num_classes"])
        keras.backend.clear_session()
    free = op_entry("skip_connect", 4, 8, 1)
    with pytest.raises(ValueError, match="computes nothing"):
        entry_model(free)
