"""Tests for snas_tf.cells.search_cell.

SNAS §2.1, App. G.1; docs/method.md §1.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import TINY_SPACE, assert_config_round_trip

from snas_tf.cells.search_cell import SearchCell
from snas_tf.search_space import SearchSpace

C = 4
PREV_C = 6  # Channels of the previous cells' outputs, preprocessed to C.
NONE = TINY_SPACE.primitives.index("none")


def _cell(reduction=False, reduction_prev=False):
    return SearchCell(
        C,
        reduction,
        reduction_prev,
        primitives=TINY_SPACE.primitives,
        num_nodes=TINY_SPACE.num_nodes,
    )


def _states(size0=8, size1=8, seed=0):
    s0 = tf.random.stateless_normal((2, size0, size0, PREV_C), seed=(seed, 1))
    s1 = tf.random.stateless_normal((2, size1, size1, PREV_C), seed=(seed, 2))
    return s0, s1


def _z(seed=0):
    shape = (TINY_SPACE.num_edges, TINY_SPACE.num_ops)
    logits = tf.random.stateless_normal(shape, seed=(seed, 3))
    return tf.nn.softmax(logits)


def _randomize(cell, seed=0):
    """Random kernels and BN statistics, so zeros are not a coincidence."""
    rng = np.random.default_rng(seed)
    for w in cell.weights:
        value = rng.normal(size=w.shape)
        if "variance" in w.path:
            value = rng.uniform(0.5, 2.0, size=w.shape)
        w.assign(value.astype("float32"))


def _each_op_alone(cell, s0, s1, z):
    """The cell's output with every op of every edge applied on its own
    (its own first ReLU, pooling and space-to-batch): the reference."""
    space = cell.search_space
    states = [cell._pre0(s0), cell._pre1(s1)]
    for node in range(space.num_nodes):
        terms = [
            z[e.index, k] * op(states[e.source])
            for e in space.edges
            if e.node == node
            for k, op in enumerate(cell.edges[e.index]._ops)
            if op is not None
        ]
        states.append(tf.add_n(terms))
    return tf.concat(states[2:], axis=-1)


@pytest.mark.parametrize(
    "reduction, size, side", [(False, 8, 8), (True, 8, 4), (True, 7, 4)]
)
def test_output_shape(reduction, size, side):
    cell = _cell(reduction)
    out = cell(*_states(size, size), _z())
    expected = (2, side, side, TINY_SPACE.num_nodes * C)
    assert tuple(out.shape) == expected
    assert (
        cell.compute_output_shape(
            (2, size, size, PREV_C), (2, size, size, PREV_C)
        )
        == expected
    )


def test_reduction_prev_factorized_reduces_the_first_input():
    cell = _cell(reduction_prev=True)
    assert any(
        isinstance(layer, keras.layers.Cropping2D)
        for layer in cell._pre0.layers
    )
    s0, s1 = _states(16, 8)
    assert tuple(cell._pre0(s0).shape) == (2, 8, 8, C)
    assert tuple(cell(s0, s1, _z()).shape) == (2, 8, 8, 2 * C)
    # Without it the first input keeps its size and the node sums fail.
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        _cell()(s0, s1, _z())


@pytest.mark.parametrize("reduction", [False, True])
def test_edge_strides(reduction):
    cell = _cell(reduction)
    assert len(cell.edges) == TINY_SPACE.num_edges
    for e, edge in zip(TINY_SPACE.edges, cell.edges, strict=True):
        assert edge.stride == (2 if reduction and e.from_cell_input else 1)
        assert edge.primitives == TINY_SPACE.primitives


def test_full_space_has_14_edges_per_cell():
    cell = SearchCell(C, reduction=True, reduction_prev=False)
    assert len(cell.edges) == SearchSpace().num_edges == 14
    assert sum(edge.stride == 2 for edge in cell.edges) == 2 * 4


@pytest.mark.parametrize("reduction", [False, True])
def test_argmax_mode_equals_one_hot_mix(reduction):
    cell = _cell(reduction)
    s0, s1 = _states(seed=1)
    cell(s0, s1, _z())
    _randomize(cell, seed=1)
    # Every op appears at least once, including `none`.
    index = tf.constant([0, 1, 2, 3, 2], "int32")
    assert len(index) == TINY_SPACE.num_edges
    one_hot = tf.one_hot(index, TINY_SPACE.num_ops)
    expected = cell(s0, s1, one_hot)
    # In argmax mode z is ignored: pass a soft z, so only the index can
    # produce the one-hot mix.
    np.testing.assert_allclose(
        cell(s0, s1, _z(seed=1), index), expected, rtol=1e-5, atol=1e-5
    )
    # A different one-hot mix gives a different output (not vacuous).
    other = tf.one_hot([3, 3, 3, 3, 3], TINY_SPACE.num_ops)
    assert not np.allclose(cell(s0, s1, other), expected, atol=1e-3)


@pytest.mark.parametrize("reduction", [False, True])
def test_mixing_shares_relu_and_pools_per_node_with_the_same_output(
    reduction,
):
    cell = _cell(reduction)
    s0, s1 = _states(seed=3)
    z = _z(seed=3)
    cell(s0, s1, z)
    _randomize(cell, seed=3)
    expected = _each_op_alone(cell, s0, s1, z)
    np.testing.assert_allclose(cell(s0, s1, z), expected, rtol=1e-5, atol=1e-5)
    # The two preprocess ReLUs, one per node that edges leave (s0, s1,
    # node 0) and the inner ReLU of each edge's sep conv. One first ReLU per
    # op would make 12 (normal) or 16 (reduction, where FactorizedReduce
    # starts with one too).
    graph = tf.function(cell).get_concrete_function(s0, s1, z).graph
    relus = [op for op in graph.get_operations() if op.type == "Relu"]
    assert len(relus) == 2 + 3 + TINY_SPACE.num_edges
    # One 3x3 max pool per node that edges leave, not one per edge (5);
    # FactorizedReduce's 1x1 subsamplings are MaxPool ops too.
    pools = [
        op
        for op in graph.get_operations()
        if op.type == "MaxPool" and list(op.get_attr("ksize")) == [1, 3, 3, 1]
    ]
    assert len(pools) == 3


@pytest.mark.parametrize("reduction", [False, True])
def test_node_with_only_none_inputs_outputs_zeros(reduction):
    cell = _cell(reduction)
    s0, s1 = _states(seed=2)
    cell(s0, s1, _z())
    _randomize(cell, seed=2)
    sep = TINY_SPACE.primitives.index("sep_conv_3x3")
    index = np.full(TINY_SPACE.num_edges, sep, "int32")
    # Node 0's incoming edges all pick `none`.
    for source in range(2):
        index[TINY_SPACE.edge_index(0, source)] = NONE
    # z is ignored in argmax mode (a soft z here, so a zero slice can only
    # come from the index); the cell still takes one, as the supernet
    # always passes it.
    out = cell(s0, s1, _z(seed=2), tf.constant(index)).numpy()
    np.testing.assert_array_equal(out[..., :C], 0.0)
    assert np.abs(out[..., C:]).max() > 1e-3


def test_config_round_trip():
    cell = _cell(reduction=True, reduction_prev=True)
    clone = assert_config_round_trip(cell)
    assert (clone.reduction, clone.reduction_prev) == (True, True)
    assert clone.search_space == TINY_SPACE
    assert [e.stride for e in clone.edges] == [e.stride for e in cell.edges]


@pytest.mark.parametrize("reduction", [False, True])
def test_traced_mixing_with_every_primitive_equals_each_op_on_its_own(
    reduction,
):
    # Shared ReLUs, poolings, subsamplings and space-to-batches (caught
    # only in a traced graph): the same output and input gradients as
    # every op of every edge applied alone.
    space = SearchSpace(num_nodes=2)
    cell = SearchCell(C, reduction, False, num_nodes=space.num_nodes)
    s0, s1 = _states(seed=4)
    shape = (space.num_edges, space.num_ops)
    z = tf.nn.softmax(tf.random.stateless_normal(shape, seed=(4, 3)))
    cell(s0, s1, z)
    _randomize(cell, seed=4)

    def with_gradients(fn):
        @tf.function
        def run(s0, s1):
            with tf.GradientTape() as tape:
                tape.watch([s0, s1])
                out = fn(s0, s1)
                loss = tf.reduce_sum(out * out)
            return out, tape.gradient(loss, [s0, s1])

        graph = run.get_concrete_function(s0, s1).graph
        types = [op.type for op in graph.get_operations()]
        return run(s0, s1), types.count("SpaceToBatchND")

    (want, want_grads), _ = with_gradients(
        lambda s0, s1: _each_op_alone(cell, s0, s1, z)
    )
    (got, got_grads), space_to_batch = with_gradients(
        lambda s0, s1: cell(s0, s1, z)
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    for a, b in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # Forward: one per node that stride-1 dilated edges leave (3 in a
    # normal cell; 1 in a reduction cell, whose input edges subsample
    # instead); backward: one per dilated conv output (2 per edge).
    dilated_edges = sum(
        1 for e in space.edges if not (reduction and e.from_cell_input)
    )
    assert space_to_batch == (1 if reduction else 3) + 2 * dilated_edges
