"""Tests for snas_tf.layers.stochastic_mixed_edge (SNAS Eq. 1-5)."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from testing_utils import (
    TINY_PRIMITIVES,
    assert_config_round_trip,
    assert_keras_file_round_trip,
)

from snas_tf.kernels.fused_batch_norm import FusedBatchNormalization
from snas_tf.kernels.tracing import built_by_mixing
from snas_tf.layers.stochastic_mixed_edge import StochasticMixedEdge

C = 4
NUM_OPS = len(TINY_PRIMITIVES)


def _input(size=8, seed=0):
    return tf.random.stateless_normal((2, size, size, C), seed=(seed, 7))


def _z(seed=0):
    logits = tf.random.stateless_normal((NUM_OPS,), seed=(seed, 3))
    return tf.nn.softmax(logits)


def _edge(stride=1, seed=0):
    """A built edge with random (non-default) weights and BN statistics."""
    edge = StochasticMixedEdge(C, stride=stride, primitives=TINY_PRIMITIVES)
    edge(_input(), _z())
    rng = np.random.default_rng(seed)
    for w in edge.weights:
        value = rng.normal(size=w.shape)
        if "variance" in w.path:
            value = rng.uniform(0.5, 2.0, size=w.shape)
        w.assign(value.astype("float32"))
    return edge


@pytest.mark.parametrize("stride", [1, 2])
def test_output_is_the_z_weighted_sum_of_the_ops(stride):
    edge = _edge(stride)
    x, z = _input(seed=1), _z(seed=1)
    expected = sum(
        z[k] * op(x) for k, op in enumerate(edge._ops) if op is not None
    )
    assert edge._ops[TINY_PRIMITIVES.index("none")] is None
    got = edge(x, z)
    assert tuple(got.shape) == edge.compute_output_shape(x.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_argmax_mode_equals_the_chosen_op(stride):
    edge = _edge(stride)
    x = _input(seed=2)
    argmax = tf.function(lambda x, i: edge(x, None, i))
    side = 8 // stride
    for k, op in enumerate(edge._ops):
        got = argmax(x, tf.constant(k))
        assert tuple(got.shape) == (2, side, side, C)
        if op is None:
            np.testing.assert_array_equal(got, 0.0)
        else:
            np.testing.assert_allclose(got, op(x), rtol=1e-5, atol=1e-5)
    # One trace served every index: the choice is a runtime branch.
    assert argmax.experimental_get_tracing_count() == 1


def test_argmax_mode_only_evaluates_the_chosen_op_in_a_graph():
    edge = _edge()
    graph = (
        tf.function(lambda x, i: edge(x, None, i))
        .get_concrete_function(
            tf.TensorSpec((2, 8, 8, C)), tf.TensorSpec((), tf.int32)
        )
        .graph
    )
    types = {op.type for op in graph.get_operations()}
    # The ops live in the branches of one Case op, which runs only the
    # branch its index selects; none of their compute is in the outer graph.
    assert types & {"Case", "StatelessCase"}
    compute = {"MaxPool", "DepthwiseConv2dNative", "Conv2D", "Relu"}
    assert not types & compute
    branch_types = {
        node.op
        for fn in graph.as_graph_def().library.function
        for node in fn.node_def
    }
    assert compute <= branch_types


def _count_op_calls(edge):
    """Wraps the edge's ops so each call appends the op's index to the
    returned list; also returns the original ops."""
    calls, original = [], list(edge._ops)

    class Counting:
        # Stands in for an `Op`: a call runs the op, and so does `hidden`
        # (the fast kernels apply the op's last layer themselves).
        def __init__(self, k, op):
            self.k, self.op = k, op
            self.layers, self.shared = op.layers, op.shared

        def hidden(self, *args, **kwargs):
            calls.append(self.k)
            return self.op.hidden(*args, **kwargs)

        def __call__(self, *args, **kwargs):
            calls.append(self.k)
            return self.op(*args, **kwargs)

    edge._ops = [
        op if op is None else Counting(k, op) for k, op in enumerate(original)
    ]
    return calls, original


def test_argmax_mode_eagerly_runs_only_the_chosen_op():
    edge = _edge()
    calls, ops_ = _count_op_calls(edge)
    chosen = TINY_PRIMITIVES.index("sep_conv_3x3")
    out = edge(_input(), None, tf.constant(chosen))
    assert calls == [chosen]
    np.testing.assert_allclose(out, ops_[chosen](_input()), atol=1e-6)


@pytest.mark.parametrize("by_mixing", [False, True])
def test_build_pass_is_skipped_only_when_built_by_mixing(by_mixing):
    edge = StochasticMixedEdge(C, primitives=TINY_PRIMITIVES)
    calls, _ = _count_op_calls(edge)
    scope = built_by_mixing() if by_mixing else contextlib.nullcontext()
    with scope:
        edge(_input(), _z())
    # Every op runs in the call; the build pass runs them once more
    # unless the mixing call itself builds them.
    assert len(calls) == (NUM_OPS - 1) * (1 if by_mixing else 2)
    assert edge.weights and all(layer.built for layer in edge.op_layers)


def test_gradient_wrt_z_is_zero_exactly_for_none():
    edge = _edge()
    x = _input(seed=3)
    z = tf.Variable(_z(seed=3))
    weights = tf.random.stateless_normal((2, 8, 8, C), seed=(4, 4))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(edge(x, z) * weights)
    grad = ops.convert_to_numpy(tape.gradient(loss, z))
    assert np.all(np.isfinite(grad))
    # d loss / d z_k = <O_k(x), weights>: zero for `none`, not for the rest.
    for k, primitive in enumerate(TINY_PRIMITIVES):
        if primitive == "none":
            assert grad[k] == 0.0
        else:
            assert abs(grad[k]) > 1e-3, primitive
            expected = tf.reduce_sum(edge._ops[k](x) * weights)
            np.testing.assert_allclose(grad[k], expected, rtol=1e-4)


class _WeightedSum(keras.layers.Layer):
    """sum_k z_k * O_k(x) with an explicit multiply per op (the reference
    computation), sharing the edge's ops."""

    def __init__(self, edge):
        super().__init__()
        self.edge = edge

    def call(self, x, z):
        return sum(z[k] * op(x) for k, op in enumerate(self.edge._ops) if op)


@pytest.mark.parametrize("stride", [1, 2])
def test_training_gradients_equal_the_explicit_weighted_sum(stride):
    # The edge folds z_k into each op's final BatchNorm; in training mode
    # (batch statistics) outputs and gradients wrt x, z and every weight
    # must equal those of sum_k z_k * O_k(x).
    edge = _edge(stride)
    x, upstream = _input(seed=6), None
    z = tf.Variable(_z(seed=6))
    results = []
    for layer in (edge, _WeightedSum(edge)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, z, training=True)
            if upstream is None:
                upstream = tf.random.stateless_normal(out.shape, seed=(6, 6))
            loss = tf.reduce_sum(out * upstream)
        grads = tape.gradient(loss, [x, z] + edge.trainable_weights)
        results.append([out] + grads)
    assert len(results[0]) > 3
    for got, expected in zip(*results, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    z_grad = ops.convert_to_numpy(results[0][2])
    assert np.count_nonzero(np.abs(z_grad) > 1e-4) == NUM_OPS - 1


def test_all_none_edge_gives_strided_zeros():
    edge = StochasticMixedEdge(C, stride=2, primitives=("none",))
    out = edge(_input(size=7), tf.ones((1,)))
    assert tuple(out.shape) == (2, 4, 4, C)
    np.testing.assert_array_equal(out, 0.0)


def test_config_round_trip_and_weight_transfer():
    edge = _edge(stride=2)
    clone = assert_config_round_trip(edge)
    assert clone.stride == 2 and clone.primitives == TINY_PRIMITIVES
    x, z = _input(seed=5), _z(seed=5)
    clone(x, z)
    clone.set_weights(edge.get_weights())
    np.testing.assert_allclose(clone(x, z), edge(x, z), atol=1e-6)


@keras.saving.register_keras_serializable(package="snas_tf_tests")
class _FixedZEdgeModel(keras.Model):
    """An edge fed a fixed z, so it can be saved as a .keras file.

    z is a non-batched call argument, which neither a functional model nor
    `Sequential` can feed; a subclassed model holding z in its config can.
    """

    def __init__(self, z, primitives=TINY_PRIMITIVES, stride=1, **kwargs):
        super().__init__(**kwargs)
        self.z = [float(v) for v in z]
        self.primitives = tuple(primitives)
        self.stride = stride
        self.edge = StochasticMixedEdge(C, stride, self.primitives)

    def call(self, x):
        return self.edge(x, ops.convert_to_tensor(self.z))

    def get_config(self):
        config = super().get_config()
        config.update(
            z=self.z, primitives=list(self.primitives), stride=self.stride
        )
        return config


def test_keras_file_round_trip(tmp_path):
    model = _FixedZEdgeModel(ops.convert_to_numpy(_z(seed=6)), stride=2)
    x = _input(seed=6)
    model(x)
    rng = np.random.default_rng(6)
    for w in model.weights:
        w.assign(rng.uniform(0.5, 1.5, size=w.shape).astype("float32"))
    loaded = assert_keras_file_round_trip(model, x, tmp_path)
    bns = [
        layer
        for layer in loaded.edge.op_layers
        if isinstance(layer, FusedBatchNormalization)
    ]
    assert bns, "BatchNorms must load as the fused layer"
    for saved, restored in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(saved, restored)
