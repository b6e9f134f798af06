"""The supernet with `resource="latency"`: its penalty is the latency
penalty of the target network, it round-trips through its config, the
search logs the expected latency, and it runs end to end (slow)."""

import json

import keras
import numpy as np
import pytest
from latency_testing import (
    TINY_TARGET,
    TINY_TARGET_OVERRIDES,
    hand_made_table,
)
from testing_utils import tiny_data, tiny_supernet

from snas_tf.callbacks import SearchMonitor
from snas_tf.config import RetrainConfig, load_config, save_config
from snas_tf.latency.cost import latency_costs
from snas_tf.latency.penalty import latency_penalty
from snas_tf.models.snas_supernet import SNASSupernet
from snas_tf.resource_cost import ESTIMATORS

COSTS = latency_costs(hand_made_table(), TINY_TARGET)


def _model(**overrides):
    kwargs = dict(
        num_cells=2,
        primitives=TINY_TARGET.primitives,
        resource="latency",
        latency_costs=COSTS,
    )
    kwargs.update(overrides)
    model = tiny_supernet(**kwargs)
    model.build(tiny_data(n=2)[0].shape)
    return model


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_the_penalty_is_the_target_networks_latency_penalty(estimator):
    model = _model(resource_estimator=estimator, latency_target_ms=0.5)
    sample = model.sample_architecture()
    got = model.resource_penalty(sample)
    want = latency_penalty(
        estimator,
        {"normal": sample.normal, "reduce": sample.reduce},
        {t: model.arch_logits(t) for t in ("normal", "reduce")},
        model.temperature,
        COSTS.tables,
        COSTS.constant_us,
        500.0,
        log_z={"normal": sample.normal_log_z, "reduce": sample.reduce_log_z},
    )
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)


def test_config_round_trip_keeps_the_costs():
    model = _model(latency_target_ms=2.0)
    clone = SNASSupernet.from_config(model.get_config())
    assert clone.resource == "latency" and clone.latency_target_ms == 2.0
    assert clone.latency_costs.constant_us == COSTS.constant_us
    for t in COSTS.tables:
        np.testing.assert_array_equal(
            clone.latency_costs.tables[t], COSTS.tables[t]
        )


def test_monitor_logs_the_expected_latency_under_softmax_alpha():
    model = _model()
    monitor = SearchMonitor()
    monitor.set_model(model)
    logs = {}
    monitor.on_epoch_end(0, logs)
    probs = {
        t: keras.ops.convert_to_numpy(
            keras.ops.softmax(model.arch_logits(t), axis=-1)
        )
        for t in ("normal", "reduce")
    }
    assert logs["expected_latency_ms"] == pytest.approx(
        COSTS.expected_us(probs) / 1e3
    )
    plain = tiny_supernet(num_cells=2, primitives=TINY_TARGET.primitives)
    plain.build(tiny_data(n=2)[0].shape)
    monitor.set_model(plain)
    monitor.on_epoch_end(0, logs := {})
    assert "expected_latency_ms" not in logs


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(latency_costs=None), "latency_costs must be given exactly"),
        (
            dict(resource="size_flops_mac"),
            "latency_costs must be given exactly",
        ),
        (dict(resource="bogus"), "Unknown resource 'bogus'"),
        (dict(latency_target_ms=0.0), "latency_target_ms must be > 0"),
    ],
)
def test_bad_latency_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _model(**kwargs)


@pytest.mark.slow
def test_a_latency_search_runs_and_logs_its_expected_latency(tmp_path):
    from snas_tf.trainers.search import run_search

    table = tmp_path / "table.json"
    hand_made_table(path=table)
    target = tmp_path / "target.yaml"
    save_config(load_config([], TINY_TARGET_OVERRIDES, RetrainConfig), target)
    config = load_config(
        [],
        [
            "model.channels=4",
            "model.num_cells=2",
            "model.num_nodes=2",
            "model.primitives=[none, skip_connect, sep_conv_3x3]",
            "search.epochs=2",
            "search.batch_size=16",
            "search.resource=latency",
            f"search.latency_table={table}",
            f"search.latency_target_config={target}",
            "data.dataset=digits",
            "data.image_size=8",
            "data.max_examples=64",
            "runtime.verbose=0",
        ],
    )
    run_search(config, tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    latencies = history["history"]["expected_latency_ms"]
    assert len(latencies) == 2 and all(v > 0 for v in latencies)
    assert (tmp_path / "run" / "plots" / "curves.png").is_file()
