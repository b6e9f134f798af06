import keras
import numpy as np
import pytest
import tensorflow as tf

from snas_tf.config import SearchConfig
from snas_tf.optimizers import FusedSGD, default_search_optimizers


def _train(optimizer, steps=3):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)]
    )
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=steps, verbose=0, shuffle=False)
    return model


def test_same_weights_and_momentum_as_keras_sgd():
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 10)
    ref = _train(keras.optimizers.SGD(schedule, momentum=0.9))
    fused = _train(FusedSGD(schedule, momentum=0.9))
    for a, b in zip(ref.get_weights(), fused.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    for a, b in zip(
        ref.optimizer.variables, fused.optimizer.variables, strict=True
    ):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-7)
    assert int(fused.optimizer.iterations) == 6


def test_outside_a_strategy_only_one_op_per_variable_is_added():
    # The update loop reads the learning rate once, not per variable.
    variables = [keras.Variable(np.ones((3,), "float32")) for _ in range(4)]
    optimizer = FusedSGD(0.1, momentum=0.9)
    optimizer.build(variables)

    @tf.function
    def step(g):
        optimizer.apply_gradients(
            [(g * (i + 1), v) for i, v in enumerate(variables)]
        )

    graph = step.get_concrete_function(tf.TensorSpec((3,))).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("ResourceApplyKerasMomentum") == 4
    # The learning rate variable and the iteration counter: two reads.
    assert types.count("ReadVariableOp") <= 2
    assert "Identity" not in types
    step(tf.constant([1.0, 2.0, 3.0]))
    # m = -lr * g (first step), w = 1 + m.
    np.testing.assert_allclose(
        variables[1].numpy(), 1 - 0.1 * 2 * np.array([1, 2, 3]), rtol=1e-6
    )


def _fused_ops(step, signature):
    graph = step.get_concrete_function(*signature).graph
    return [
        op
        for op in graph.get_operations()
        if op.type == "ResourceApplyKerasMomentum"
    ]


def test_one_fused_op_per_variable_and_a_round_trip():
    v = keras.Variable(np.ones((3,), "float32"))
    optimizer = FusedSGD(0.1, momentum=0.9)
    optimizer.build([v])

    @tf.function
    def step(g):
        optimizer.apply_gradients([(g, v)])

    assert len(_fused_ops(step, [tf.TensorSpec((3,))])) == 1
    assert isinstance(
        keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)),
        FusedSGD,
    )


def _dense(i):
    return tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]) * (i + 1)


def _sparse(i):
    # Rows 2 and 0 only, as an embedding lookup's gradient.
    return tf.IndexedSlices(
        tf.constant([[1.0, -2.0], [0.5, 3.0]]) * (i + 1),
        tf.constant([2, 0]),
        tf.constant([3, 2]),
    )


# The documented fallbacks to the Keras computation: no momentum, Nesterov
# momentum, sparse gradients.
@pytest.mark.parametrize(
    "kwargs, gradient",
    [
        (dict(momentum=0.0), _dense),
        (dict(momentum=0.9, nesterov=True), _dense),
        (dict(momentum=0.9), _sparse),
    ],
    ids=["no_momentum", "nesterov", "sparse"],
)
def test_each_fallback_gives_keras_sgd_results_without_the_fused_op(
    kwargs, gradient
):
    def make_step(optimizer, w):
        @tf.function
        def step(i):
            optimizer.apply_gradients([(gradient(i), w)])

        return step

    results = []
    for cls in (keras.optimizers.SGD, FusedSGD):
        w = keras.Variable(np.ones((3, 2), "float32"))
        optimizer = cls(0.1, **kwargs)
        optimizer.build([w])
        step = make_step(optimizer, w)
        for i in range(3):
            step(tf.constant(float(i)))
        results.append(w.numpy())
        if cls is FusedSGD:
            assert not _fused_ops(step, [tf.TensorSpec(())])
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6)
    # Not vacuous: the weights moved, and rows without a sparse gradient
    # did not.
    assert np.abs(results[0] - 1.0).max() > 0.1
    if gradient is _sparse:
        np.testing.assert_array_equal(results[0][1], [1.0, 1.0])


def test_default_search_optimizers_take_the_search_config():
    search = SearchConfig(
        learning_rate=0.5,
        learning_rate_min=0.05,
        momentum=0.7,
        arch_learning_rate=0.01,
        arch_beta_1=0.6,
        arch_beta_2=0.9,
    )
    sgd, adam = default_search_optimizers(4, 5, search)
    assert float(sgd.learning_rate) == pytest.approx(0.5)
    sgd.iterations.assign(20)  # the end of the cosine decay
    assert float(sgd.learning_rate) == pytest.approx(0.05)
    assert sgd.momentum == pytest.approx(0.7)
    assert float(adam.learning_rate) == pytest.approx(0.01)
    assert (adam.beta_1, adam.beta_2) == (0.6, 0.9)


def test_default_search_optimizers_default_to_the_config_defaults():
    s = SearchConfig()
    sgd, adam = default_search_optimizers(1, 1)
    assert float(sgd.learning_rate) == pytest.approx(s.learning_rate)
    assert sgd.momentum == pytest.approx(s.momentum)
    assert float(adam.learning_rate) == pytest.approx(s.arch_learning_rate)
    assert (adam.beta_1, adam.beta_2) == (s.arch_beta_1, s.arch_beta_2)
