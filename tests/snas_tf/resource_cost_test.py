"""Tests for snas_tf.resource_cost (SNAS §2.4, App. F; docs/method.md §4)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from snas_tf.layers.gumbel_softmax import (
    concrete_log_density,
    gumbel_noise,
    relaxed_log_one_hot,
    relaxed_one_hot,
)
from snas_tf.ops import build_op
from snas_tf.resource_cost import (
    ESTIMATORS,
    OpCost,
    cell_cost_table,
    edge_log_costs,
    expected_costs,
    op_cost,
    resource_penalty,
)
from snas_tf.search_space import PRIMITIVES, SearchSpace

# docs/method.md §4 for C = 16, H = 32, worked by hand.
# Stride 1: y = 32, y² = 1024. Stride 2: y = 16, y² = 256.
#   pool:   FLOPs 9·y²·C; MAC 2·y²·C (s1), 5·y²·C (s2).
#   skip:   s1 MAC 2·C·H² = 32768; s2 FactorizedReduce size 2·16·8 = 256,
#           FLOPs 256·256, MAC 2·256·(64 + 8) + 256 = 37120.
#   sep k:  size 2·16·k² + 2·256 (800, 1312); MAC 8·y²·C (131072) or
#           11·y²·C (45056) + size.
#   dil k:  size 16·k² + 256 (400, 656); MAC 4·y²·C (65536) or
#           7·y²·C (28672) + size.
EXPECTED_C16_H32 = {
    1: {
        "none": (0, 0, 0),
        "max_pool_3x3": (0, 147456, 32768),
        "avg_pool_3x3": (0, 147456, 32768),
        "skip_connect": (0, 0, 32768),
        "sep_conv_3x3": (800, 819200, 131872),
        "sep_conv_5x5": (1312, 1343488, 132384),
        "dil_conv_3x3": (400, 409600, 65936),
        "dil_conv_5x5": (656, 671744, 66192),
    },
    2: {
        "none": (0, 0, 0),
        "max_pool_3x3": (0, 36864, 20480),
        "avg_pool_3x3": (0, 36864, 20480),
        "skip_connect": (256, 65536, 37120),
        "sep_conv_3x3": (800, 204800, 45856),
        "sep_conv_5x5": (1312, 335872, 46368),
        "dil_conv_3x3": (400, 102400, 29072),
        "dil_conv_5x5": (656, 167936, 29328),
    },
}

SMALL_SPACE = SearchSpace(
    primitives=("none", "max_pool_3x3", "sep_conv_3x3"), num_nodes=1
)


def _np_edge_log_costs(weights, table):
    costs = np.einsum("ek,ekc->ec", weights, table)
    return np.log(np.maximum(costs, 1.0)).mean(axis=-1)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("primitive", PRIMITIVES)
def test_op_cost_matches_table(primitive, stride):
    got = op_cost(primitive, channels=16, input_size=32, stride=stride)
    assert isinstance(got, OpCost)
    assert tuple(got) == EXPECTED_C16_H32[stride][primitive]


def _built_parameters(primitive, channels, stride):
    """Parameters of the op `build_op` makes, BatchNorm excluded (the
    cost table's convention, docs/method.md §4), counted from its built
    layers."""
    op = build_op(primitive, channels, stride, affine=True)
    if op is None:  # `none` is never built
        return 0
    op(keras.ops.zeros((1, 8, 8, channels)))
    return sum(
        int(np.prod(w.shape))
        for layer in op.layers
        if not isinstance(layer, keras.layers.BatchNormalization)
        for w in layer.weights
    )


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("primitive", PRIMITIVES)
def test_op_cost_size_is_the_parameter_count_of_the_built_op(primitive, stride):
    # C = 6: C² (36), 9C (54) and 25C (150) differ, so a wrong term shows.
    channels = 6
    size = op_cost(primitive, channels, input_size=8, stride=stride).size
    assert size == _built_parameters(primitive, channels, stride)


def test_op_cost_literal_sep_conv_check():
    cost = op_cost("sep_conv_3x3", 16, 32, 1)
    assert cost.size == 800
    assert cost.flops == 819_200


def test_op_cost_stride_two_odd_side_rounds_up():
    # A padded 3x3 stride-2 window on a 7-pixel side gives 4 outputs.
    assert op_cost("max_pool_3x3", 16, 7, 2).flops == 9 * 16 * 16


def test_op_cost_rejects_bad_input():
    with pytest.raises(ValueError, match="'conv_7x1_1x7'.*sep_conv_3x3"):
        op_cost("conv_7x1_1x7", 16, 32, 1)
    with pytest.raises(ValueError, match="stride 3"):
        op_cost("none", 16, 32, 3)


def test_cell_cost_table_normal_cell():
    table = cell_cost_table(16, 32, reduction=False)
    assert table.shape == (14, 8, 3)
    assert table.dtype == np.float32
    want = np.array([EXPECTED_C16_H32[1][p] for p in PRIMITIVES])
    np.testing.assert_array_equal(table, np.broadcast_to(want, (14, 8, 3)))


def test_cell_cost_table_reduction_strides():
    space = SearchSpace()
    table = cell_cost_table(16, 32, reduction=True, search_space=space)
    strided = np.array([EXPECTED_C16_H32[2][p] for p in PRIMITIVES])
    # Edge 0 leaves cell input 0: stride 2 at H = 32.
    np.testing.assert_array_equal(table[0], strided)
    # Node 3's edge from input 1 is strided too.
    np.testing.assert_array_equal(table[space.edge_index(3, 1)], strided)
    # Node 1's edge from node 2 (intermediate): stride 1 at H / 2 = 16.
    inner = np.array([op_cost(p, 16, 16, 1) for p in PRIMITIVES])
    np.testing.assert_array_equal(table[space.edge_index(1, 2)], inner)
    assert not np.array_equal(inner, strided)


def test_cell_cost_table_follows_primitive_order():
    table = cell_cost_table(8, 8, False, search_space=SMALL_SPACE)
    assert table.shape == (2, 3, 3)
    np.testing.assert_array_equal(table[1, 2], op_cost("sep_conv_3x3", 8, 8, 1))


def test_edge_log_costs_clamps_below_one():
    table = cell_cost_table(16, 32, False)
    weights = np.zeros((14, 8), np.float32)
    weights[:, 0] = 1.0  # all `none`: S = F = M = 0 -> log 1 = 0
    weights[1] = 0.0
    weights[1, PRIMITIVES.index("skip_connect")] = 1.0  # S = F = 0, M > 1
    got = keras.ops.convert_to_numpy(edge_log_costs(weights, table))
    assert got.shape == (14,)
    np.testing.assert_array_equal(np.delete(got, 1), 0.0)
    np.testing.assert_allclose(got[1], math.log(32768) / 3, rtol=1e-6)


def test_expected_costs_sums_edges():
    table = cell_cost_table(16, 32, False)
    weights = np.full((14, 8), 1 / 8, np.float32)
    got = keras.ops.convert_to_numpy(expected_costs(weights, table))
    np.testing.assert_allclose(got, table.sum(axis=(0, 1)) / 8, rtol=1e-6)


def test_discrete_is_exact_expectation_averaged_over_cells():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(14, 8)).astype(np.float32)
    z = np.full((14, 8), 1 / 8, np.float32)  # ignored by `discrete`
    tables = [cell_cost_table(16, 32, False), cell_cost_table(32, 16, False)]
    got = resource_penalty("discrete", z, logits, 1.0, tables)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    want = np.mean([_np_edge_log_costs(p, t).sum() for t in tables])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, 1e-5)


def test_reparametrization_on_one_hot_is_chosen_ops_cost():
    table = cell_cost_table(16, 32, False)
    z = np.zeros((14, 8), np.float32)
    z[:, PRIMITIVES.index("sep_conv_3x3")] = 1.0
    got = resource_penalty("reparametrization", z, z, 1.0, [table, table])
    want = 14 * np.log([800, 819200, 131872]).mean()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, 1e-5)


def test_estimators_run_compiled_with_a_temperature_variable():
    tables = [cell_cost_table(8, 8, True), cell_cost_table(16, 4, True)]
    logits = tf.Variable(tf.random.stateless_normal((14, 8), seed=(1, 2)))
    temperature = keras.Variable(0.7, trainable=False)
    noise = gumbel_noise(tf.random.stateless_uniform((14, 8), seed=(3, 4)))

    def penalties():
        z = relaxed_one_hot(logits, temperature, noise)
        log_z = relaxed_log_one_hot(logits, temperature, noise)
        return [
            resource_penalty(e, z, logits, temperature, tables, log_z=log_z)
            for e in ESTIMATORS
        ]

    np.testing.assert_allclose(tf.function(penalties)(), penalties(), rtol=1e-5)


def test_resource_penalty_rejects_bad_input():
    table = cell_cost_table(8, 8, False)
    z = np.full((14, 8), 1 / 8, np.float32)
    with pytest.raises(ValueError, match="'reinforce'.*policy_gradient"):
        resource_penalty("reinforce", z, z, 1.0, [table])
    with pytest.raises(ValueError, match="empty"):
        resource_penalty("discrete", z, z, 1.0, [])
    with pytest.raises(ValueError, match="does not match"):
        resource_penalty("discrete", z[:2], z[:2], 1.0, [table])
    # log(z) would be -inf where z rounds to 0: the caller passes log Z.
    with pytest.raises(ValueError, match="'policy_gradient' needs log_z"):
        resource_penalty("policy_gradient", z, z, 1.0, [table])


def _per_sample_gradients(logits, temperature, uniform, table):
    """Per-sample gradients of both estimators w.r.t. the logits.

    Tiles the logits once per sample: sample i's penalty depends only on
    row i, so the gradient of the summed penalties is the per-sample one.
    """
    n = uniform.shape[0]
    tiled = tf.tile(tf.constant(logits)[None], [n, 1, 1])
    noise = gumbel_noise(tf.constant(uniform))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(tiled)
        z = relaxed_one_hot(tiled, temperature, noise)
        costs = edge_log_costs(z, table)  # (n, E)
        reparam = tf.reduce_sum(costs, axis=-1)
        log_z = relaxed_log_one_hot(tiled, temperature, noise)
        log_p = concrete_log_density(
            tf.stop_gradient(log_z), tiled, temperature
        )
        surrogate = tf.reduce_sum(log_p * tf.stop_gradient(costs), axis=-1)
        # Summed inside the tape so the reductions are recorded.
        total_rep, total_pg = tf.reduce_sum(reparam), tf.reduce_sum(surrogate)
    g_rep = tape.gradient(total_rep, tiled).numpy()
    g_pg = tape.gradient(total_pg, tiled).numpy()
    return z.numpy(), reparam.numpy(), surrogate.numpy(), g_rep, g_pg


def _mean_and_se(x):
    return x.mean(axis=0), x.std(axis=0, ddof=1) / math.sqrt(x.shape[0])


@pytest.mark.parametrize(
    "temperature",
    [
        1.0,
        0.7,
        # At low λ many Z_k fall below the reference's 1e-4 clamp (12% at
        # λ = 0.3), whose density gave a biased score (~20 SE here); the
        # density of log Z computed from the noise is exact.
        0.3,
        0.1,
    ],
)
def test_reparametrization_and_policy_gradient_agree(temperature):
    """Both estimate ∇ E_Z[cost(Z)]: their mean gradients must agree."""
    table = cell_cost_table(4, 8, False, search_space=SMALL_SPACE)
    logits = np.array([[0.5, -0.3, 0.2], [-0.4, 0.3, 0.1]])  # float64
    uniform = np.random.default_rng(0).uniform(size=(40_000, 2, 3))
    z, reparam, surrogate, g_rep, g_pg = _per_sample_gradients(
        logits, temperature, uniform, table
    )

    # Paired samples: the SE of the mean difference is the right yardstick.
    diff_mean, diff_se = _mean_and_se(g_rep - g_pg)
    assert np.all(np.abs(diff_mean) < 4 * diff_se + 1e-3), (diff_mean, diff_se)
    # Not vacuous: the gradient is clearly nonzero and resolved.
    rep_mean, rep_se = _mean_and_se(g_rep)
    assert np.max(np.abs(rep_mean)) > 0.1
    assert np.max(diff_se) < 0.3 * np.max(np.abs(rep_mean))

    # The public API on one sample is the same composition, value and grad.
    var = tf.Variable(logits)
    for estimator, value, grad in (
        ("reparametrization", reparam, g_rep),
        ("policy_gradient", surrogate, g_pg),
    ):
        with tf.GradientTape() as tape:
            noise = gumbel_noise(uniform[0])
            z0 = relaxed_one_hot(var, temperature, noise)
            log_z0 = relaxed_log_one_hot(var, temperature, noise)
            got = resource_penalty(
                estimator, z0, var, temperature, [table], log_z=log_z0
            )
        np.testing.assert_allclose(got.numpy(), value[0], rtol=1e-6)
        np.testing.assert_allclose(
            tape.gradient(got, var).numpy(), grad[0], rtol=1e-6, atol=1e-9
        )


def test_concrete_score_has_zero_mean():
    """E[∇ log p(Z)] = 0: a sharper check of the density the PG uses."""
    logits = np.array([[0.5, -0.3, 0.2], [-0.4, 0.3, 0.1]])
    uniform = np.random.default_rng(3).uniform(size=(40_000, 2, 3))
    tiled = tf.tile(tf.constant(logits)[None], [40_000, 1, 1])
    with tf.GradientTape() as tape:
        tape.watch(tiled)
        noise = gumbel_noise(tf.constant(uniform))
        log_z = relaxed_log_one_hot(tiled, 1.0, noise)
        log_p = concrete_log_density(tf.stop_gradient(log_z), tiled, 1.0)
    score_mean, score_se = _mean_and_se(tape.gradient(log_p, tiled).numpy())
    assert np.all(np.abs(score_mean) < 4 * score_se + 1e-3)
