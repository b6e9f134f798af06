"""Collapse indicators: weightless ops of the derived cells, per epoch."""

import numpy as np
import pytest
from testing_utils import tiny_data

from snas_tf.callbacks import SearchMonitor
from snas_tf.collapse import count_weightless, holds_weights
from snas_tf.genotype import Genotype
from snas_tf.models.snas_supernet import SNASSupernet
from snas_tf.plots.curves import _panels
from snas_tf.plots.history import RunHistory
from snas_tf.search_space import PRIMITIVES, SearchSpace

# Two nodes: edges (node 0: sources 0, 1; node 1: sources 0, 1, 2).
GENOTYPE = Genotype(
    normal=[[("max_pool_3x3", 0), ("sep_conv_3x3", 1)], [("skip_connect", 2)]],
    reduce=[[("skip_connect", 0)], [("skip_connect", 2), ("avg_pool_3x3", 1)]],
)


@pytest.mark.parametrize(
    "op, cell, source, expected",
    [
        ("sep_conv_3x3", "normal", 0, True),
        ("dil_conv_5x5", "reduce", 3, True),
        ("max_pool_3x3", "reduce", 0, False),
        ("none", "normal", 1, False),
        ("skip_connect", "normal", 0, False),
        # A reduction cell's skip from a cell input is a FactorizedReduce.
        ("skip_connect", "reduce", 1, True),
        ("skip_connect", "reduce", 2, False),
    ],
)
def test_holds_weights(op, cell, source, expected):
    assert holds_weights(op, cell, source) is expected


def test_count_weightless_counts_dropped_edges_only_under_edge_all():
    # normal: pool and skip kept, 2 of 5 edges dropped (none).
    assert count_weightless(GENOTYPE, "normal", "edge_all") == 4
    assert count_weightless(GENOTYPE, "normal", "top2") == 2
    # reduce: the skip from input 0 holds weights; 2 edges dropped.
    assert count_weightless(GENOTYPE, "reduce", "edge_all") == 4
    assert count_weightless(GENOTYPE, "reduce", "top2") == 2


def test_search_monitor_logs_the_counts_of_the_derived_genotype():
    space = SearchSpace(PRIMITIVES, num_nodes=2)
    model = SNASSupernet(
        num_classes=3, channels=4, num_cells=1, num_nodes=2, seed=0
    )
    x, _ = tiny_data(n=2)
    model.build(x.shape)
    # Normal cell: every edge's argmax is max_pool (weightless) except the
    # first, sep_conv_3x3. Reduce: every edge's argmax is sep_conv_5x5.
    normal = np.zeros((space.num_edges, space.num_ops), "float32")
    normal[:, PRIMITIVES.index("max_pool_3x3")] = 5.0
    normal[0, PRIMITIVES.index("sep_conv_3x3")] = 9.0
    reduce = np.zeros_like(normal)
    reduce[:, PRIMITIVES.index("sep_conv_5x5")] = 5.0
    model.arch_logits_normal.assign(normal)
    model.arch_logits_reduce.assign(reduce)
    monitor = SearchMonitor()
    monitor.set_model(model)
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert logs["weightless_normal"] == space.num_edges - 1
    assert logs["weightless_reduce"] == 0
    assert monitor.records[0]["weightless_normal"] == space.num_edges - 1


def test_curves_plot_has_a_weightless_panel():
    history = RunHistory(
        path="history.json",
        epochs=tuple(
            {"epoch": e, "weightless_normal": 5 - e, "weightless_reduce": 1}
            for e in range(3)
        ),
    )
    panels = dict(_panels(history))
    assert panels["weightless ops in the derived cells"] == [
        "weightless_normal",
        "weightless_reduce",
    ]


def test_a_search_ending_without_parametric_normal_op_warns(capsys):
    from snas_tf.trainers.search import _warn_if_collapsed

    _warn_if_collapsed(GENOTYPE)
    assert capsys.readouterr().err == ""
    collapsed = Genotype(
        normal=[[("max_pool_3x3", 0)], [("skip_connect", 2)]],
        reduce=GENOTYPE.reduce,
    )
    _warn_if_collapsed(collapsed)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no parametric op" in err
