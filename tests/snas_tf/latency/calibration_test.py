"""The calibration helpers on made-up numbers: rank correlation,
percentage error, relative least-squares fits and leave-one-out."""

import math

import numpy as np
import pytest
from latency_testing import TINY_TARGET, hand_made_table

from snas_tf.config import RetrainConfig, load_config
from snas_tf.genotype import Genotype
from snas_tf.latency import calibration as cal


def test_spearman_of_orders_and_ties():
    assert cal.spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1)
    assert cal.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1)
    # Ranks with ties: x (1, 2.5, 2.5, 4) against y (1, 2, 3, 4).
    rx = np.array([1, 2.5, 2.5, 4]) - 2.5
    ry = np.array([1, 2, 3, 4]) - 2.5
    want = np.sum(rx * ry) / math.sqrt(np.sum(rx**2) * np.sum(ry**2))
    assert cal.spearman([5, 7, 7, 9], [1, 2, 3, 4]) == pytest.approx(want)
    assert math.isnan(cal.spearman([1, 1, 1], [1, 2, 3]))


def test_mape_is_relative_to_the_measurement():
    assert cal.mape([11, 8], [10, 10]) == pytest.approx(15.0)
    with pytest.raises(ValueError, match="> 0"):
        cal.mape([1, 2], [1, 0])
    with pytest.raises(ValueError, match="length >= 2"):
        cal.mape([1, 2], [1, 2, 3])


def test_fits_recover_an_exact_relation():
    x = np.array([1.0, 2.0, 5.0, 9.0])
    (a,) = cal.fit_scale(x, 1.7 * x)
    assert a == pytest.approx(1.7)
    a, b = cal.fit_affine(x, 1.3 * x + 4)
    assert (a, b) == pytest.approx((1.3, 4.0))
    assert cal.apply_fit((a, b), [2.0]) == pytest.approx([6.6])


def test_the_scale_minimises_the_relative_error():
    x, y = np.array([1.0, 2.0, 4.0]), np.array([2.0, 3.0, 9.0])
    (a,) = cal.fit_scale(x, y)

    def loss(s):
        return float(np.sum(((s * x - y) / y) ** 2))

    assert loss(a) < loss(a * 1.01) and loss(a) < loss(a * 0.99)


def test_leave_one_out_never_sees_the_scored_point():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([2.0, 4.0, 6.0, 80.0])  # the last is an outlier
    loo = cal.leave_one_out(cal.fit_scale, x, y)
    # The first three are predicted from a fit pulled up by the outlier;
    # the outlier itself from the others' exact slope 2.
    assert loo[3] == pytest.approx(8.0)
    assert np.all(loo[:3] > 2 * x[:3])


def test_the_summary_scores_each_predictor():
    rng = np.random.default_rng(0)
    madds = rng.uniform(1e8, 5e8, 12)
    measured = madds / 2e7 + rng.uniform(-0.5, 0.5, 12) + 3
    rows = [
        {"predicted_ms": m * 0.6, "measured_ms": m, "madds": d}
        for m, d in zip(measured, madds, strict=True)
    ]
    s = cal.calibration_summary(rows)
    assert s["n"] == 12 and s["table"]["spearman"] == pytest.approx(1)
    assert s["table"]["mape_pct"] == pytest.approx(40)
    # A scale fixes a table that is 40% low (from the other genotypes).
    assert s["table_scaled_loo"]["mape_pct"] == pytest.approx(0, abs=1e-9)
    assert s["madds_scaled_loo"]["mape_pct"] > 1
    with pytest.raises(ValueError, match=">= 3"):
        cal.calibration_summary(rows[:2])


def test_noise_floor_of_two_measurements():
    d = cal.disagreement([10.0, 20.0], [10.0, 30.0])
    assert d == {"median_pct": pytest.approx(20), "max_pct": pytest.approx(40)}


def test_table_target_for_model_checks_sizes_and_genotype():
    table = hand_made_table(TINY_TARGET)
    config = load_config(
        ["configs/digits_retrain.yaml"],
        ["child.network=cifar", "child.channels=4", "child.num_layers=3"]
        + ["data.image_size=8"],
        RetrainConfig,
    )
    good = Genotype(
        normal=[[("skip_connect", 0)], [("sep_conv_3x3", 2)]],
        reduce=[[("sep_conv_3x3", 1)], []],
    )
    assert cal.table_target_for_model(table, config, 10, good) == TINY_TARGET
    with pytest.raises(ValueError, match="num_classes is 10"):
        cal.table_target_for_model(table, config, 100, good)
    bad = Genotype(normal=[[("max_pool_3x3", 0)], []], reduce=[[], []])
    with pytest.raises(ValueError, match="outside its search space"):
        cal.table_target_for_model(table, config, 10, bad)


def test_linear_fit_recovers_a_sum_and_per_part_term():
    rng = np.random.default_rng(1)
    x = np.stack([rng.uniform(5, 9, 8), rng.integers(70, 90, 8)], axis=1)
    y = 0.9 * x[:, 0] - 0.01 * x[:, 1]
    assert cal.fit_linear(x, y) == pytest.approx((0.9, -0.01))
    loo = cal.leave_one_out(cal.fit_linear, x, y)
    assert loo == pytest.approx(y)


def test_part_count_counts_each_timed_part_the_network_runs():
    # The stem; cell 0 (normal): both preprocesses (its empty node's zeros
    # are made from c_{k-1}), one op and no Add (one edge), the zeros and
    # the concat; each reduce cell reads c_{k-1} only: 4 parts; the head.
    genotype = Genotype(
        normal=[[("sep_conv_3x3", 0)], []],
        reduce=[[("sep_conv_3x3", 1)], []],
    )
    assert cal.part_count(TINY_TARGET, genotype) == 1 + 5 + 2 * 4 + 1
