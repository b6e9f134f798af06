"""The latency penalty under the three estimators, on a hand-made table
(made-up timings: no test measures anything)."""

import numpy as np
import pytest
import tensorflow as tf
from latency_testing import TINY_TARGET, hand_made_table

from snas_tf.latency.cost import latency_costs
from snas_tf.latency.penalty import expected_latency_us, latency_penalty
from snas_tf.layers.gumbel_softmax import (
    gumbel_noise,
    relaxed_log_one_hot,
    relaxed_one_hot,
)
from snas_tf.resource_cost import ESTIMATORS

TYPES = ("normal", "reduce")
COSTS = latency_costs(hand_made_table(), TINY_TARGET)
SHAPE = COSTS.tables["normal"].shape[1:]  # (edges, ops)
LOGITS = {
    t: np.random.default_rng(i).normal(0, 0.5, size=SHAPE)
    for i, t in enumerate(TYPES)
}


def _penalty(estimator, logits, z, temperature=1.0, target_us=None, log_z=None):
    return latency_penalty(
        estimator,
        z,
        logits,
        temperature,
        COSTS.tables,
        COSTS.constant_us,
        target_us,
        log_z,
    )


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_discrete_is_the_log_of_the_exact_expected_latency():
    variables = {t: tf.Variable(v) for t, v in LOGITS.items()}
    with tf.GradientTape() as tape:
        value = _penalty("discrete", variables, None)
    probs = {t: _softmax(v) for t, v in LOGITS.items()}
    total = COSTS.expected_us(probs)
    np.testing.assert_allclose(value.numpy(), np.log(total), rtol=1e-5)
    grads = tape.gradient(value, variables)
    for t in TYPES:
        # d log T / d logit_ek = p_ek (L_ek - sum_j p_ej L_ej) / T, with L
        # summed over the cells of the type.
        lat = COSTS.tables[t].sum(0)
        p = probs[t]
        mean = (p * lat).sum(-1, keepdims=True)
        want = p * (lat - mean) / total
        np.testing.assert_allclose(grads[t].numpy(), want, rtol=1e-4)
        # Descent moves every edge away from its costliest op and towards
        # `none`, which costs 0.
        g = grads[t].numpy()
        assert np.all(g[np.arange(len(g)), lat.argmax(-1)] > 0)
        assert np.all(g[:, 0] < 0)


def test_reparametrization_on_a_one_hot_prices_that_child():
    one_hot = {
        t: np.eye(SHAPE[1])[np.arange(SHAPE[0]) % SHAPE[1]] for t in TYPES
    }
    value = _penalty("reparametrization", LOGITS, one_hot)
    np.testing.assert_allclose(
        value.numpy(), np.log(COSTS.expected_us(one_hot)), rtol=1e-5
    )


def _per_sample(estimator, uniform, temperature, target_us=None):
    """(values, gradients) of each sample's penalty, batched."""
    n = uniform.shape[1]
    tiled = {t: tf.Variable(np.tile(LOGITS[t][None], (n, 1, 1))) for t in TYPES}
    with tf.GradientTape() as tape:
        noise = {t: gumbel_noise(uniform[i]) for i, t in enumerate(TYPES)}
        z = {t: relaxed_one_hot(tiled[t], temperature, noise[t]) for t in TYPES}
        log_z = {
            t: relaxed_log_one_hot(tiled[t], temperature, noise[t])
            for t in TYPES
        }
        values = _penalty(estimator, tiled, z, temperature, target_us, log_z)
        total = tf.reduce_sum(values)
    grads = tape.gradient(total, tiled)
    return values.numpy(), np.concatenate(
        [grads[t].numpy().reshape(n, -1) for t in TYPES], axis=1
    )


def _mean_and_se(samples):
    return samples.mean(0), samples.std(0, ddof=1) / np.sqrt(len(samples))


@pytest.mark.parametrize("target_us", [None, 2000.0])
def test_reparametrization_and_policy_gradient_agree(target_us):
    """Both estimate ∇ E_Z[penalty(T(Z))]; paired samples.

    log T hardly varies between samples, so the score-function estimate
    without a baseline is mostly noise; the test subtracts the mean
    penalty times the score (a baseline: E[score] = 0), which changes its
    variance and not its mean, so that 20,000 samples resolve it.
    """
    uniform = tf.constant(
        np.random.default_rng(0).uniform(size=(2, 20_000, *SHAPE))
    )
    f, g_rep = _per_sample("reparametrization", uniform, 1.0, target_us)
    _, g_pg = _per_sample("policy_gradient", uniform, 1.0, target_us)
    # Per sample the surrogate's gradient is f(Z) * ∇ log p(Z).
    score = g_pg / f[:, None]
    g_pg = g_pg - f.mean() * score
    diff_mean, diff_se = _mean_and_se(g_rep - g_pg)
    assert np.all(np.abs(diff_mean) < 4.5 * diff_se + 1e-4), diff_mean
    rep_mean, _ = _mean_and_se(g_rep)
    # Not vacuous: the gradient is resolved well above the noise.
    assert np.max(np.abs(rep_mean)) > 5 * np.max(diff_se)


def test_a_target_latency_pulls_from_both_sides():
    """TuNAS's |T/T0 - 1|: below the target the gradient favours costlier
    ops, above it cheaper ones."""
    variables = {t: tf.Variable(v) for t, v in LOGITS.items()}
    probs = {t: _softmax(v) for t, v in LOGITS.items()}
    total = COSTS.expected_us(probs)
    signs = []
    for target in (0.5 * total, 2.0 * total):
        with tf.GradientTape() as tape:
            value = _penalty("discrete", variables, None, target_us=target)
        np.testing.assert_allclose(
            value.numpy(), abs(total / target - 1), rtol=1e-5
        )
        g = tape.gradient(value, variables)["normal"].numpy()
        signs.append(np.sign(g[:, 0]))  # `none`, the cheapest op
    np.testing.assert_array_equal(signs[0], -signs[1])


def test_expected_latency_counts_every_cell_of_a_type():
    uniform = {t: np.full(SHAPE, 1.0 / SHAPE[1]) for t in TYPES}
    got = expected_latency_us(uniform, COSTS.tables, COSTS.constant_us)
    want = COSTS.constant_us + sum(
        COSTS.tables[t].sum() / SHAPE[1] for t in TYPES
    )
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    assert COSTS.tables["reduce"].shape[0] == 2  # cells 1 and 2


def test_bad_estimator_and_target_are_refused():
    with pytest.raises(ValueError, match="Unknown estimator 'bogus'"):
        _penalty("bogus", LOGITS, LOGITS)
    with pytest.raises(ValueError, match="target_us must be > 0"):
        _penalty("discrete", LOGITS, LOGITS, target_us=0.0)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_every_estimator_runs_compiled(estimator):
    variables = {t: tf.Variable(v, dtype=tf.float32) for t, v in LOGITS.items()}
    temperature = tf.Variable(0.5)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            noise = {
                t: gumbel_noise(tf.random.uniform(SHAPE, seed=i))
                for i, t in enumerate(TYPES)
            }
            z = {
                t: relaxed_one_hot(variables[t], temperature, noise[t])
                for t in TYPES
            }
            log_z = {
                t: relaxed_log_one_hot(variables[t], temperature, noise[t])
                for t in TYPES
            }
            value = _penalty(estimator, variables, z, temperature, log_z=log_z)
        return value, tape.gradient(value, list(variables.values()))

    value, grads = step()
    assert np.isfinite(value.numpy())
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert any(np.any(g.numpy() != 0) for g in grads)


def test_policy_gradient_needs_the_samples_log():
    with pytest.raises(ValueError, match="needs log_z"):
        _penalty("policy_gradient", LOGITS, LOGITS)
