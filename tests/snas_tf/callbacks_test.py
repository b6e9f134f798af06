"""Tests for snas_tf.callbacks: the search's `SearchMonitor` and
`TemperatureScheduler`, the retraining's `DropPathScheduler`."""

import keras
import numpy as np
import pytest
from testing_utils import TINY_SPACE, tiny_data, tiny_supernet

from snas_tf.callbacks import (
    DropPathScheduler,
    SearchMonitor,
    TemperatureScheduler,
)
from snas_tf.genotype import Genotype, derive_genotype
from snas_tf.layers import DropPath
from snas_tf.models.child_network import build_child_network
from snas_tf.resource_cost import cell_cost_table

GENOTYPE = Genotype(
    normal=[[("skip_connect", 0), ("sep_conv_3x3", 1)]],
    reduce=[[("max_pool_3x3", 0), ("skip_connect", 1)]],
)


def _model(drop_path=True):
    return build_child_network(
        GENOTYPE,
        channels=4,
        num_layers=1,
        image_size=8,
        num_classes=3,
        auxiliary=False,
        drop_path=drop_path,
    )


def _rates(model):
    return [
        float(keras.ops.convert_to_numpy(layer.rate))
        for layer in model.layers
        if isinstance(layer, DropPath)
    ]


def test_rate_ramps_linearly_from_zero():
    model = _model()
    scheduler = DropPathScheduler(0.2, epochs=10)
    scheduler.set_model(model)
    # L=1: one reduction cell, both edges dropped (stride-2 skip included).
    for epoch, expected in [(0, 0.0), (3, 0.06), (9, 0.18)]:
        scheduler.on_epoch_begin(epoch)
        assert _rates(model) == pytest.approx([expected] * 2)


def test_fit_sets_the_rate_of_each_epoch():
    model = _model()
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(_rates(model))
    )
    x, y = tiny_data(n=2, size=8)
    history = model.fit(
        x,
        y,
        batch_size=2,
        epochs=2,
        callbacks=[DropPathScheduler(0.5, epochs=2), record],
        verbose=0,
    )
    assert np.isfinite(history.history["loss"]).all()
    assert seen == [[0.0, 0.0], [0.25, 0.25]]


def test_model_without_drop_path_raises_unless_the_rate_is_zero():
    model = _model(drop_path=False)
    scheduler = DropPathScheduler(0.0, epochs=2)
    scheduler.set_model(model)
    scheduler.on_epoch_begin(1)
    scheduler = DropPathScheduler(0.2, epochs=2)
    scheduler.set_model(model)
    with pytest.raises(ValueError, match="has no DropPath layer"):
        scheduler.on_epoch_begin(0)


@pytest.mark.parametrize(
    "prob, epochs, match",
    [
        (1.0, 10, "drop_path_prob must be .* got 1.0"),
        (-0.1, 10, "drop_path_prob must be .* got -0.1"),
        ("0.2", 10, "drop_path_prob must be .* got '0.2'"),
        (0.2, 0, "epochs must be an int >= 1, got 0"),
        (0.2, 2.5, "epochs must be an int >= 1, got 2.5"),
    ],
)
def test_bad_arguments_raise(prob, epochs, match):
    with pytest.raises(ValueError, match=match):
        DropPathScheduler(prob, epochs)


# --- SearchMonitor and TemperatureScheduler (docs/method.md §2-§3) ---------

# TINY_SPACE: 2 nodes, edges e0 (node 0, input 0), e1 (0, 1), e2 (1, 0),
# e3 (1, 1), e4 (1, 2); ops none, max_pool_3x3, skip_connect, sep_conv_3x3.
# Each edge's logit row peaks at the op given (column index).
NORMAL_PEAKS = [3, 2, 0, 1, 0]
REDUCE_PEAKS = [1, 0, 0, 0, 3]
# edge_all keeps each edge whose peak is not `none`, written by hand.
PEAKED_GENOTYPE = (
    "normal=sep_conv_3x3:0,skip_connect:1|max_pool_3x3:1;"
    "reduce=max_pool_3x3:0|sep_conv_3x3:2"
)


def _peaked_logits(peaks, seed):
    logits = np.random.default_rng(seed).normal(0.0, 0.3, (5, 4))
    logits[np.arange(5), peaks] += 2.0
    return logits.astype("float32")


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _mean_entropy(logits):
    p = _softmax(logits.astype("float64"))
    return float(np.mean(-(p * np.log(p)).sum(-1)))


def test_search_monitor_logs_the_state_of_known_logits():
    # 3 cells, 4 channels, 8x8 input: cell 0 normal (C 4, side 8), cells 1
    # and 2 reduce (C 8 at side 8, C 16 at side 4); docs/method.md §1.
    model = tiny_supernet(num_cells=3)
    model.build((2, 8, 8, 3))
    normal = _peaked_logits(NORMAL_PEAKS, seed=0)
    reduce = _peaked_logits(REDUCE_PEAKS, seed=1)
    model.arch_logits_normal.assign(normal)
    model.arch_logits_reduce.assign(reduce)
    model.temperature.assign(0.37)
    monitor = SearchMonitor()
    monitor.set_model(model)
    logs = {"loss": 1.25}
    monitor.on_epoch_end(4, logs)

    assert logs["temperature"] == pytest.approx(0.37)
    assert logs["entropy_normal"] == pytest.approx(_mean_entropy(normal))
    assert logs["entropy_reduce"] == pytest.approx(_mean_entropy(reduce))
    p_normal, p_reduce = _softmax(normal), _softmax(reduce)
    tables = [
        (p_normal, cell_cost_table(4, 8, False, TINY_SPACE)),
        (p_reduce, cell_cost_table(8, 8, True, TINY_SPACE)),
        (p_reduce, cell_cost_table(16, 4, True, TINY_SPACE)),
    ]
    expected = sum(np.einsum("ek,ekc->c", p, t) for p, t in tables)
    got = [logs[f"expected_{n}"] for n in ("size", "flops", "mac")]
    np.testing.assert_allclose(got, expected, rtol=1e-5)

    assert monitor.genotypes == [PEAKED_GENOTYPE]
    derived = derive_genotype(normal, reduce, "edge_all", TINY_SPACE)
    assert derived.to_string() == PEAKED_GENOTYPE
    (record,) = monitor.records
    assert record["epoch"] == 4 and record["genotype"] == PEAKED_GENOTYPE
    assert (
        record["loss"] == 1.25 and record["temperature"] == logs["temperature"]
    )
    np.testing.assert_allclose(record["alpha_normal"], p_normal, rtol=1e-5)
    np.testing.assert_allclose(record["alpha_reduce"], p_reduce, rtol=1e-5)


def test_search_monitor_top2_rule_keeps_two_edges_per_node():
    model = tiny_supernet(num_cells=1)
    model.build((2, 8, 8, 3))
    normal = _peaked_logits(NORMAL_PEAKS, seed=0)
    reduce = _peaked_logits(REDUCE_PEAKS, seed=1)
    model.arch_logits_normal.assign(normal)
    model.arch_logits_reduce.assign(reduce)
    monitor = SearchMonitor(rule="top2")
    monitor.set_model(model)
    monitor.on_epoch_end(0, {})
    derived = derive_genotype(normal, reduce, "top2", TINY_SPACE)
    assert monitor.genotypes == [derived.to_string()]
    genotype = Genotype.from_string(monitor.genotypes[0])
    assert [len(node) for node in genotype.normal] == [2, 2]
    assert [len(node) for node in genotype.reduce] == [2, 2]


class WithTemperature(keras.Model):
    """The smallest model with the `temperature` variable the scheduler
    assigns."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.temperature = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="temperature"
        )

    def call(self, x):
        return self.dense(x)


# 5 epochs from 1.0: linear to 0.2 steps -0.2 per epoch; exponential to
# 0.0625 halves per epoch (docs/method.md §2: epoch 0 initial, last final).
@pytest.mark.parametrize(
    "schedule, final, expected",
    [("linear", 0.2, [0.4, 0.2]), ("exponential", 0.0625, [0.125, 0.0625])],
)
def test_temperature_scheduler_resumed_at_epoch_3_sets_the_schedule(
    schedule, final, expected
):
    model = WithTemperature()
    model.compile(optimizer="sgd", loss="mse")
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(
            (epoch, float(keras.ops.convert_to_numpy(model.temperature)))
        )
    )
    scheduler = TemperatureScheduler(5, 1.0, final, schedule)
    x = np.ones((2, 3), "float32")
    model.fit(
        x,
        x[:, :1],
        epochs=5,
        initial_epoch=3,
        callbacks=[scheduler, record],
        verbose=0,
    )
    assert [epoch for epoch, _ in seen] == [3, 4]
    assert [t for _, t in seen] == pytest.approx(expected)
