"""Per-edge latency costs and a genotype's predicted latency, on a
hand-made table (made-up timings)."""

import numpy as np
import pytest
from latency_testing import TINY_TARGET, hand_made_table

from snas_tf.genotype import Genotype
from snas_tf.latency.cost import LatencyCosts, latency_costs, predict_latency
from snas_tf.latency.entries import network_entries
from snas_tf.models.child_network import build_child_network

TABLE = hand_made_table()
COSTS = latency_costs(TABLE, TINY_TARGET)
SPACE = TINY_TARGET.search_space
SEP = [[("sep_conv_3x3", 0), ("skip_connect", 1)], [("sep_conv_3x3", 2)]]


def _one_hot(genotype):
    weights = {}
    for cell in ("normal", "reduce"):
        w = np.zeros((SPACE.num_edges, SPACE.num_ops))
        w[:, 0] = 1.0  # none
        for j, node in enumerate(getattr(genotype, cell)):
            for op, source in node:
                row = SPACE.edge_index(j, source)
                w[row] = np.eye(SPACE.num_ops)[SPACE.primitives.index(op)]
        weights[cell] = w
    return weights


def test_linear_costs_price_a_child_as_its_prediction():
    """Every node keeps an edge and every input is read: the search's
    linear cost of the one-hot child equals the exact prediction."""
    genotype = Genotype(normal=SEP, reduce=SEP)
    predicted = predict_latency(TABLE, TINY_TARGET, genotype)
    np.testing.assert_allclose(
        COSTS.expected_us(_one_hot(genotype)), predicted["total_us"], rtol=1e-6
    )
    assert predicted["total_us"] == pytest.approx(
        predicted["stem_us"] + sum(predicted["cells_us"]) + predicted["head_us"]
    )


def test_a_node_of_three_edges_pays_two_adds():
    two = Genotype(normal=SEP, reduce=SEP)
    three = Genotype(
        normal=[SEP[0], [("sep_conv_3x3", 2), ("sep_conv_3x3", 0)]],
        reduce=SEP,
    )
    cell = network_entries(TINY_TARGET)[0]
    edge = cell.edges[SPACE.edge_index(1, 0)][2]
    gap = (
        predict_latency(TABLE, TINY_TARGET, three)["cells_us"][0]
        - predict_latency(TABLE, TINY_TARGET, two)["cells_us"][0]
    )
    assert gap == pytest.approx(
        TABLE.latency_us(edge.id) + TABLE.latency_us(cell.add.id)
    )


def _layers(model, prefix):
    return [layer for layer in model.layers if layer.name.startswith(prefix)]


@pytest.mark.parametrize(
    "normal, reduce",
    [
        # Reduction cells read only c_{k-2}: cell 1's output is never read.
        (SEP, [[("sep_conv_3x3", 0)], [("skip_connect", 0)]]),
        # Empty nodes: zeros from c_{k-1}; c_{k-2} is never read.
        ([[], [("sep_conv_3x3", 1)]], [[], []]),
    ],
)
def test_parts_the_child_never_computes_cost_nothing(normal, reduce):
    genotype = Genotype(normal=normal, reduce=reduce)
    model = build_child_network(
        genotype,
        network="cifar",
        num_classes=10,
        channels=4,
        num_layers=3,
        image_size=8,
        auxiliary=False,
    )
    predicted = predict_latency(TABLE, TINY_TARGET, genotype)
    for i, cell in enumerate(network_entries(TINY_TARGET)):
        # A cell is priced exactly when the child computes it, and its
        # c_{k-2} preprocess exactly when the child has that layer.
        assert (predicted["cells_us"][i] > 0) == bool(
            _layers(model, f"cell{i}_node")
        ), i
        pre0 = bool(_layers(model, f"cell{i}_pre0"))
        reads0 = any(
            s == 0
            for node in (reduce if cell.shape.reduction else normal)
            for _, s in node
        )
        assert pre0 == (reads0 and predicted["cells_us"][i] > 0), i


def test_costs_round_trip_through_their_config():
    again = LatencyCosts.from_config(COSTS.to_config())
    assert again.constant_us == COSTS.constant_us
    for t in COSTS.tables:
        np.testing.assert_array_equal(again.tables[t], COSTS.tables[t])


def test_a_genotype_outside_the_space_is_refused():
    genotype = Genotype(normal=[[("max_pool_3x3", 0)], []], reduce=SEP)
    with pytest.raises(ValueError, match="max_pool_3x3"):
        predict_latency(TABLE, TINY_TARGET, genotype)
