"""Tests for snas_tf.layers.gumbel_softmax.

SNAS §2.2, Eq. 1-5; docs/method.md §2.

Stochastic code gets analytic assertions. Every draw comes from
`tf.random.stateless_uniform` with a fixed seed, so the tests are
deterministic; the tolerances are still derived from the sampling error
(stated at each use), so a correct sampler passes for any seed.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from snas_tf.layers.gumbel_softmax import (
    concrete_log_density,
    entropy,
    gumbel_noise,
    hard_one_hot,
    relaxed_log_one_hot,
    relaxed_one_hot,
)

EULER_GAMMA = 0.5772156649015329


def _uniform(num, n, seed=(1, 2)):
    return tf.random.stateless_uniform((num, n), seed=seed)


def _samples(logits, temperature, num, seed=(1, 2)):
    logits = tf.constant(logits, "float32")
    noise = gumbel_noise(_uniform(num, logits.shape[-1], seed))
    return ops.convert_to_numpy(relaxed_one_hot(logits, temperature, noise))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("n", [2, 4, 8])
def test_zero_logits_have_entropy_log_n(n):
    np.testing.assert_allclose(entropy(tf.zeros((3, n))), [math.log(n)] * 3)
    # Any other distribution has less entropy.
    assert float(entropy(tf.constant([0.0] * (n - 1) + [1.0]))) < math.log(n)


def test_gumbel_noise_has_gumbel_mean_and_variance():
    num = 20000
    g = ops.convert_to_numpy(gumbel_noise(_uniform(num, 1))).ravel()
    # Standard Gumbel: mean γ (Euler), variance π²/6. Tolerance: 4 standard
    # errors of the mean, σ/√N, and a loose 5% on the variance (its
    # standard error is about 2% here).
    sigma = math.pi / math.sqrt(6.0)
    assert abs(g.mean() - EULER_GAMMA) < 4 * sigma / math.sqrt(num)
    assert g.var() == pytest.approx(sigma**2, rel=0.05)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_zero_logits_give_uniform_mean_sample(temperature):
    n, num = 8, 4000
    z = _samples([0.0] * n, temperature, num)
    np.testing.assert_allclose(z.sum(axis=-1), 1.0, rtol=1e-5)
    mean = 1.0 / n
    # Each Z_k lies in [0, 1] with mean 1/n, so Var(Z_k) <= μ(1-μ)
    # (Bhatia-Davis); tolerance: 4 standard errors sqrt(μ(1-μ)/N) ≈ 0.021.
    tolerance = 4 * math.sqrt(mean * (1 - mean) / num)
    np.testing.assert_allclose(z.mean(axis=0), mean, atol=tolerance)


def test_argmax_frequencies_match_softmax():
    logits = np.array([1.0, 0.0, -1.0, 0.5, 2.0, -0.5], "float32")
    num = 5000
    p = np.exp(logits) / np.exp(logits).sum()
    z = _samples(logits, 0.5, num, seed=(3, 4))
    freq = np.bincount(z.argmax(axis=-1), minlength=len(logits)) / num
    # Gumbel-max: argmax(logits + G) ~ Categorical(softmax(logits)).
    # Tolerance: 4 binomial standard errors sqrt(p(1-p)/N) per op.
    np.testing.assert_array_less(
        np.abs(freq - p), 4 * np.sqrt(p * (1 - p) / num)
    )
    # The argmax does not depend on the temperature (same noise).
    z_cold = _samples(logits, 0.05, num, seed=(3, 4))
    np.testing.assert_array_equal(z_cold.argmax(-1), z.argmax(-1))


def _top_two_gap_below(delta, n):
    """P(G_(1) - G_(2) < delta) for n iid standard Gumbels.

    exp(-G) are iid Exp(1); the gap is log(E_(2) / E_(1)) with
    E_(1) ~ Exp(n) and E_(2) - E_(1) ~ Exp(n - 1) independent, which gives
    (n-1)c / (n + (n-1)c), c = exp(delta) - 1.
    """
    c = math.expm1(delta)
    return (n - 1) * c / (n + (n - 1) * c)


@pytest.mark.parametrize("temperature", [0.01, 0.001])
def test_low_temperature_gives_near_one_hot_samples(temperature):
    n, num, eps = 8, 4000, 0.01
    z = _samples([0.0] * n, temperature, num, seed=(5, 6))
    top = z.max(axis=-1)
    # max Z > 1 - eps whenever the top-two gap of (logits + G) exceeds
    # delta = λ log((n-1)(1-eps)/eps); zero logits are the worst case (the
    # gap is smallest). At λ = 0.01 up to 5.6% of draws fall short, at
    # λ = 0.001 up to 0.6%: the bound below, less 4 binomial standard errors.
    delta = temperature * math.log((n - 1) * (1 - eps) / eps)
    miss = _top_two_gap_below(delta, n)
    bound = 1 - miss - 4 * math.sqrt(miss * (1 - miss) / num)
    assert np.mean(top > 1 - eps) >= bound
    assert top.mean() > 0.99
    # And the sample approaches the one-hot of its argmax.
    one_hot = np.eye(n)[z.argmax(-1)]
    assert np.abs(z - one_hot).sum(axis=-1).mean() < 0.02


def test_fixed_seed_reproduces_the_noise():
    shape = (5, 8)
    a = gumbel_noise(tf.random.stateless_uniform(shape, seed=(7, 8)))
    b = gumbel_noise(tf.random.stateless_uniform(shape, seed=(7, 8)))
    c = gumbel_noise(tf.random.stateless_uniform(shape, seed=(7, 9)))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    logits = tf.zeros(shape)
    np.testing.assert_array_equal(
        relaxed_one_hot(logits, 0.5, a), relaxed_one_hot(logits, 0.5, b)
    )


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_relaxed_one_hot_without_noise_is_tempered_softmax(temperature):
    logits = np.random.default_rng(0).normal(size=(14, 8)).astype("float32")
    scaled = logits / temperature
    expected = np.exp(scaled - scaled.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    got = relaxed_one_hot(tf.constant(logits), temperature)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_relaxed_one_hot_adds_the_noise_before_tempering():
    logits = tf.constant([0.5, -0.2, 0.1])
    noise = tf.constant([0.3, 1.0, -0.4])
    np.testing.assert_allclose(
        relaxed_one_hot(logits, 0.5, noise),
        relaxed_one_hot(logits + noise, 0.5),
        rtol=1e-6,
    )


def test_hard_one_hot_picks_the_first_index_on_ties():
    logits = tf.constant(
        [[0.0, 2.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 3.0]]
    )
    expected = [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    np.testing.assert_array_equal(hard_one_hot(logits), expected)


def test_gumbel_noise_is_finite_at_the_ends_of_the_interval():
    u = tf.constant([0.0, 1.0 - 1e-12, 1.0, 0.5], "float32")
    g = ops.convert_to_numpy(gumbel_noise(u))
    assert np.all(np.isfinite(g))
    # Clipping keeps the order: U = 0 gives the smallest noise, U -> 1 the
    # largest; an interior U is untouched.
    assert g[0] < g[3] < g[1]
    assert g[3] == pytest.approx(-math.log(-math.log(0.5)), rel=1e-6)


def _log_density(log_z, logits, temperature):
    log_z = tf.constant(log_z, "float32")
    logits = tf.constant(logits, "float32")
    return ops.convert_to_numpy(
        concrete_log_density(log_z, logits, temperature)
    )


@pytest.mark.parametrize("logits", [(0.0, 0.0), (0.7, -0.4)])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_binary_concrete_density_integrates_to_its_cdf(logits, temperature):
    # Maddison et al.'s density is w.r.t. Lebesgue measure on the first
    # n - 1 coordinates: for n = 2, ∫ p([t, 1-t]) dt over (0, 1) is 1. The
    # binary Concrete has the closed-form CDF
    # F(t) = σ(λ logit(t) - (l1 - l2)), as Z1 = σ((l1 - l2 + L) / λ) with
    # L ~ Logistic. Integrate over [δ, 1 - δ] and compare with
    # F(1 - δ) - F(δ): with the tails' analytic mass this is "integrates to
    # 1". At λ = 0.5 the density behaves like t^(λ-1) at the ends and the
    # tails hold about 9% of the mass, so the bounds matter.
    delta = 2e-3
    # Substitute t = σ(u), dt = t(1-t) du: smooth integrand, fine grid.
    end = math.log((1 - delta) / delta)
    u = np.linspace(-end, end, 20001)
    t = _sigmoid(u)
    # log σ(u) and log(1 - σ(u)).
    log_z = np.stack([-np.logaddexp(0, -u), -np.logaddexp(0, u)], axis=-1)
    p = np.exp(_log_density(log_z, np.array(logits)[None], temperature))
    integral = np.trapezoid(p * t * (1 - t), u)

    def cdf(x):
        logit = math.log(x / (1 - x))
        return _sigmoid(temperature * logit - (logits[0] - logits[1]))

    expected = cdf(1 - delta) - cdf(delta)
    assert expected < 0.999
    assert integral == pytest.approx(expected, abs=1e-4)

    # The sampler agrees with the density: P(0.2 < Z1 <= 0.8) from 4000
    # draws is within 4 binomial standard errors of ∫ p over (0.2, 0.8].
    num = 4000
    z1 = _samples(logits, temperature, num, seed=(9, 9))[:, 0]
    mass = cdf(0.8) - cdf(0.2)
    freq = np.mean((z1 > 0.2) & (z1 <= 0.8))
    assert abs(freq - mass) < 4 * math.sqrt(mass * (1 - mass) / num)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_three_way_concrete_density_integrates_to_one(temperature):
    # n = 3 checks the (n-1)! and n·logsumexp terms. Integrate in log-ratio
    # coordinates u_i = log(z_i / z_3), where z = softmax(u1, u2, 0) and the
    # Jacobian of (u1, u2) -> (z1, z2) is z1 z2 z3; the density in u decays
    # like exp(-λ|u|), so [-25, 25]² holds all but a negligible mass.
    logits = np.array([[0.3, -0.5, 0.1]], "float32")
    grid = np.linspace(-25.0, 25.0, 501)
    u1, u2 = np.meshgrid(grid, grid, indexing="ij")
    u = np.stack([u1, u2, np.zeros_like(u1)], axis=-1).reshape(-1, 3)
    log_z = u - np.logaddexp.reduce(u, axis=-1, keepdims=True)
    z = np.exp(log_z)
    p = np.exp(_log_density(log_z, logits, temperature)) * z.prod(-1)
    step = grid[1] - grid[0]
    integral = np.trapezoid(
        np.trapezoid(p.reshape(u1.shape), dx=step, axis=1), dx=step
    )
    assert integral == pytest.approx(1.0, abs=1e-2)


def _clamped_log_density(z, logits, temperature):
    """The reference code's density: Maddison et al.'s Eq. 11 with Z
    clamped at 1e-4, in float64 (what snas-tf computed before log Z)."""
    n = z.shape[-1]
    log_z = np.log(np.maximum(z, 1e-4))
    return (
        math.lgamma(n)
        + (n - 1) * math.log(temperature)
        + logits.sum(-1)
        - (temperature + 1) * log_z.sum(-1)
        - n * np.logaddexp.reduce(logits - temperature * log_z, axis=-1)
    )


def test_density_equals_the_clamped_one_where_no_z_is_below_the_clamp():
    # The supernet's parity with the authors' code holds at temperatures
    # where every Z stays above their 1e-4 clamp: there the density of the
    # exact log Z must be the clamped density's value.
    logits = np.array([[0.5, -0.3, 0.2, 0.0], [1.0, 1.1, 0.9, 1.0]])
    noise = ops.convert_to_numpy(gumbel_noise(_uniform(2, 4, seed=(5, 6))))
    for temperature in (1.0, 0.7):
        log_z = ops.convert_to_numpy(
            relaxed_log_one_hot(
                tf.constant(logits, "float32"), temperature, noise
            )
        )
        z = np.exp(log_z.astype("float64"))
        assert z.min() > 1e-4
        np.testing.assert_allclose(
            _log_density(log_z, logits, temperature),
            _clamped_log_density(z, logits, temperature),
            rtol=1e-5,
        )


def test_density_stays_finite_and_exact_where_z_underflows():
    # At λ = 0.03 logits a few apart put Z_k far below float32's smallest
    # number: Z rounds to 0 (log Z = -inf, the density NaN) and the 1e-4
    # clamp moves the density by hundreds of nats; log Z from the noise
    # keeps it exact (float64 reference from the same noise).
    temperature = 0.03
    logits = np.array([[2.0, -1.0, 0.0], [0.3, -4.0, 1.0]])
    noise = np.array([[0.4, -0.5, 0.1], [0.2, 0.3, -0.6]])
    log_z = relaxed_log_one_hot(
        tf.constant(logits, "float32"),
        temperature,
        tf.constant(noise, "float32"),
    )
    z = relaxed_one_hot(
        tf.constant(logits, "float32"),
        temperature,
        tf.constant(noise, "float32"),
    )
    assert np.any(ops.convert_to_numpy(z) == 0.0)
    got = _log_density(ops.convert_to_numpy(log_z), logits, temperature)
    assert np.all(np.isfinite(got))
    scaled = (logits + noise) / temperature
    exact_log_z = scaled - np.logaddexp.reduce(scaled, axis=-1, keepdims=True)
    n = logits.shape[-1]
    expected = (
        math.lgamma(n)
        + (n - 1) * math.log(temperature)
        + logits.sum(-1)
        - (temperature + 1) * exact_log_z.sum(-1)
        - n * np.logaddexp.reduce(logits - temperature * exact_log_z, axis=-1)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    clamped = _clamped_log_density(np.exp(exact_log_z), logits, temperature)
    assert np.max(np.abs(clamped - expected)) > 100
