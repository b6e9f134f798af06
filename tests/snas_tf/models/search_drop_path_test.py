"""The search supernet's drop-path on every mixed-edge output, as the
authors' search applies it in training (docs/method.md §3)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import (
    TINY_SPACE,
    assert_config_round_trip,
    tiny_data,
    tiny_supernet,
)

from snas_tf.cells.search_cell import SearchCell
from snas_tf.config import SearchConfig
from snas_tf.search_space import SearchSpace

RATE = 0.3


def _seed_state(model):
    return np.array(model.drop_path_seed.state.numpy())


def _pair(num_cells=3):
    """Supernets at drop_path_prob RATE and 0 with the same weights and
    the same noise seed."""
    x, y = tiny_data(n=4)
    models = [
        tiny_supernet(num_cells=num_cells, drop_path_prob=p) for p in (RATE, 0)
    ]
    for model in models:
        model.build(x.shape)
    models[1].set_weights(models[0].get_weights())
    return *models, x, y


def test_defaults_follow_the_mode_and_round_trip():
    # SNAS's loop (and its noiseless ablation) drops as the authors'
    # search does; bi-level DARTS as DARTS's search does not.
    assert tiny_supernet().drop_path_prob == RATE
    assert SearchConfig().resolved_drop_path_prob == RATE
    assert tiny_supernet(mode="darts_single_level").drop_path_prob == RATE
    assert tiny_supernet(mode="darts").drop_path_prob == 0.0
    clone = assert_config_round_trip(tiny_supernet(drop_path_prob=0.2))
    assert clone.drop_path_prob == 0.2


@pytest.mark.parametrize("rate", [1.0, -0.1, True])
def test_bad_rate_names_the_value(rate):
    with pytest.raises(ValueError, match=rf"\[0, 1\), got {rate!r}"):
        tiny_supernet(drop_path_prob=rate)


def test_rate_zero_gives_exactly_the_outputs_without_drop_path():
    model = tiny_supernet(num_cells=3, drop_path_prob=0.0)
    x, y = tiny_data(n=4)
    model.build(x.shape)
    assert model.draw_drop_path(4) is None
    sample = model.sample_architecture(noise=model.draw_noise())
    plain = model.forward(x, sample, training=True)
    ones = tf.ones((3, TINY_SPACE.num_edges, 4))
    np.testing.assert_array_equal(
        model.forward(x, sample, True, drop_path=ones), plain
    )
    # No draw at all: the drop-path stream is left as it was.
    start = _seed_state(model)
    model.compile(jit_compile=False)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    np.testing.assert_array_equal(_seed_state(model), start)


def test_factors_drop_whole_examples_at_the_rate_and_rescale_the_rest():
    model = tiny_supernet(num_cells=2)
    num = 4000
    factors = keras.ops.convert_to_numpy(model.draw_drop_path(num))
    assert factors.shape == (2, TINY_SPACE.num_edges, num)
    kept = factors != 0
    np.testing.assert_allclose(factors[kept], 1 / (1 - RATE), rtol=1e-6)
    # 4 binomial standard errors over all draws.
    draws = factors.size
    se = np.sqrt(RATE * (1 - RATE) / draws)
    assert abs(np.mean(~kept) - RATE) < 4 * se
    # Each (cell, edge) draws its own examples.
    rows = kept.reshape(-1, num)
    assert len({row.tobytes() for row in rows}) == len(rows)
    # A fresh draw each step.
    again = keras.ops.convert_to_numpy(model.draw_drop_path(num))
    assert not np.array_equal(again, factors)


@pytest.mark.parametrize("fast_kernels", [True, False])
def test_cell_multiplies_each_edge_output_by_its_example_factor(fast_kernels):
    # One node: the cell's output is edge_0(s0) + edge_1(s1), so with
    # factors d it must be d_0[b] * edge_0(s0)[b] + d_1[b] * edge_1(s1)[b].
    space = SearchSpace(TINY_SPACE.primitives, num_nodes=1)
    cell = SearchCell(
        4,
        False,
        False,
        primitives=space.primitives,
        num_nodes=1,
        fast_kernels=fast_kernels,
    )
    s0 = tf.random.stateless_normal((4, 8, 8, 6), seed=(1, 1))
    s1 = tf.random.stateless_normal((4, 8, 8, 6), seed=(1, 2))
    z = tf.nn.softmax(tf.random.stateless_normal((2, space.num_ops), (1, 3)))
    keep = 1 / (1 - RATE)
    # Example 0 dropped on both edges, 1 on edge 0 only, 2 on edge 1 only.
    drop = np.array([[0, 0, keep, keep], [0, keep, 0, keep]], "float32")

    def run(factors):
        out = cell(s0, s1, z, None, tf.constant(factors), training=True)
        return keras.ops.convert_to_numpy(out)

    # Each edge's output alone: factor 1 on it, 0 on the other.
    basis = np.eye(2, dtype="float32")[:, :, None] * np.ones((1, 1, 4))
    edge = [run(basis[e]) for e in (0, 1)]
    got = run(drop)
    expected = sum(drop[e][:, None, None, None] * edge[e] for e in (0, 1))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.all(got[0] == 0)
    assert np.abs(got[3]).max() > 0.1
    # Without factors: both edges, unscaled.
    plain = keras.ops.convert_to_numpy(cell(s0, s1, z, training=True))
    np.testing.assert_allclose(plain, edge[0] + edge[1], rtol=1e-5, atol=1e-6)


def test_inference_and_evaluation_are_unaffected():
    dropping, plain, x, y = _pair()
    start = _seed_state(dropping)
    for arch_mode in ("snas", "argmax"):
        np.testing.assert_array_equal(
            dropping(x, training=False, arch_mode=arch_mode),
            plain(x, training=False, arch_mode=arch_mode),
        )
    for model in (dropping, plain):
        model.compile(jit_compile=False)
    logs = [
        m.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
        for m in (dropping, plain)
    ]
    assert logs[0] == logs[1]
    np.testing.assert_array_equal(_seed_state(dropping), start)
    # Training is not: the same noise, other outputs.
    noise = dropping.draw_noise()
    outs = [
        m.forward(x, m.sample_architecture(noise=noise), True)
        for m in (dropping, plain)
    ]
    assert not np.allclose(outs[0], outs[1])
    assert not np.array_equal(_seed_state(dropping), start)


@pytest.mark.slow
def test_xla_forward_drops_as_the_graph_forward_and_fit_draws_each_step():
    # XLA's stateless random kernels give other numbers than TensorFlow's
    # for the same seed, so the factors are compared as inputs: the same
    # factors, the same outputs.
    model = tiny_supernet(num_cells=2)
    x, y = tiny_data(n=4)
    model.build(x.shape)
    sample = model.sample_architecture(noise=model.draw_noise())
    factors = model.draw_drop_path(4)

    def forward(x, factors):
        return model.forward(x, sample, True, factors)

    xla = tf.function(forward, jit_compile=True)(x, factors)
    np.testing.assert_allclose(xla, forward(x, factors), rtol=1e-4, atol=1e-5)
    ones = tf.ones_like(factors)
    assert not np.allclose(xla, forward(x, ones), rtol=1e-3)
    # An XLA-compiled step draws once per step.
    model.compile(jit_compile=True)
    start = _seed_state(model)
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert _seed_state(model)[1] == start[1] + 2
    assert np.isfinite(history.history["loss"]).all()


def test_replicas_draw_their_own_factors(mirrored):
    with mirrored.scope():
        model = tiny_supernet()
    first, second = mirrored.experimental_local_results(
        mirrored.run(model.draw_drop_path, args=(64,))
    )
    assert first.shape == second.shape == (1, TINY_SPACE.num_edges, 64)
    assert not np.array_equal(first, second)
