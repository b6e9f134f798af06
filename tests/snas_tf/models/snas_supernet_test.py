"""Tests of the SNAS supernet: one loss, one backward pass, two optimizers."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import (
    TINY_PRIMITIVES,
    assert_config_round_trip,
    is_single_function,
    plain_compile,
    tiny_data,
    tiny_supernet,
    values,
)

from snas_tf import resource_cost, training
from snas_tf.models import snas_supernet
from snas_tf.models.snas_supernet import SNASSupernet
from snas_tf.search_space import PRIMITIVES


def test_fit_step_applies_the_gradient_of_one_combined_loss():
    eta = 0.5
    model = tiny_supernet(num_cells=3, penalty_strength=eta)
    plain_compile(model)
    x, y = tiny_data(n=2)
    model.build(x.shape)
    variables = model.weight_variables + model.arch_variables
    before = values(variables)
    # The default search drops edge outputs (drop_path_prob 0.3).
    assert model.drop_path_prob > 0
    seeds = (model.noise_seed, model.drop_path_seed)
    seed_states = [np.array(s.state.numpy()) for s in seeds]

    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
    after = values(variables)

    # Replay the step by hand from the same state, noise and drop-path.
    for v, b in zip(variables, before, strict=True):
        v.assign(b)
    for seed, state in zip(seeds, seed_states, strict=True):
        seed.state.assign(state)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        sample = model.sample_architecture()
        logits = model.forward(x, sample, training=True)
        loss = ce(y, logits) + eta * model.resource_penalty(sample)
    grads = tape.gradient(loss, variables)

    # Graph (fit) and eager replay differ by float noise: oneDNN's
    # convolution backprop reduces over threads in no fixed order, and a
    # batch of 2 under BatchNorm amplifies it (seen: 1.1e-4 on a kernel,
    # once in a parallel test run). A wrong loss moves far more.
    for b, a, g, v in zip(before, after, grads, variables, strict=True):
        np.testing.assert_allclose(
            b - a, g, rtol=1e-3, atol=5e-4, err_msg=v.path
        )
    for i in (-2, -1):  # both α tensors moved
        assert np.abs(after[i] - before[i]).max() > 1e-6
    assert (
        max(np.abs(a - b).max() for a, b in zip(after, before, strict=True))
        > 1e-4
    )


@pytest.mark.parametrize("frozen", ["weights", "arch"])
def test_each_optimizer_updates_only_its_variables(frozen):
    model = tiny_supernet()
    plain_compile(
        model,
        lr=0.0 if frozen == "weights" else 0.1,
        arch_lr=0.0 if frozen == "arch" else 0.1,
    )
    x, y = tiny_data()
    model.build(x.shape)
    weights, arch = (
        values(model.weight_variables),
        values(model.arch_variables),
    )
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    w_moved = any(
        not np.array_equal(a, b)
        for a, b in zip(weights, values(model.weight_variables), strict=True)
    )
    a_moved = any(
        not np.array_equal(a, b)
        for a, b in zip(arch, values(model.arch_variables), strict=True)
    )
    assert w_moved == (frozen != "weights")
    assert a_moved == (frozen != "arch")


def test_evaluate_reports_supernet_and_child_accuracy():
    model = tiny_supernet()
    model.compile(jit_compile=False)
    x, y = tiny_data(n=6)
    logs = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    child = keras.ops.convert_to_numpy(
        model(x, training=False, arch_mode="argmax")
    )
    expected = np.mean(np.argmax(child, axis=-1) == y)
    assert logs["child_accuracy"] == pytest.approx(expected)
    assert {"loss", "accuracy", "child_accuracy"} <= set(logs)


def test_argmax_mode_equals_a_one_hot_mixture():
    model = tiny_supernet(num_cells=3)
    x, _ = tiny_data()
    model.build(x.shape)
    hard = model.sample_architecture("argmax")
    from snas_tf.models.snas_supernet import ArchSample

    mixed = model.forward(x, ArchSample(hard.normal, hard.reduce))
    switched = model(x, arch_mode="argmax")
    np.testing.assert_allclose(switched, mixed, atol=1e-5)


def test_noise_is_reproducible_from_the_seed_and_fresh_each_draw():
    a, b, c = (tiny_supernet(seed=s) for s in (3, 3, 4))
    first, second = a.draw_noise(), a.draw_noise()
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(b.draw_noise(), first)
    assert not np.allclose(c.draw_noise(), first)
    assert first.shape == (2,) + tuple(a.arch_logits_normal.shape)


def test_policy_gradient_score_stays_finite_at_the_final_temperature():
    # At λ = 0.03 components of Z round to 0 in float32; the sample
    # carries log Z from its noise, so the density and its gradient stay
    # finite (log Z itself would be -inf).
    model = tiny_supernet(num_cells=3, resource_estimator="policy_gradient")
    model.build((2, 8, 8, 3))
    model.temperature.assign(0.03)
    noise = model.draw_noise() * 20.0  # spread: some Z underflow
    with tf.GradientTape() as tape:
        sample = model.sample_architecture(noise=noise)
        penalty = model.resource_penalty(sample)
    grads = tape.gradient(penalty, model.arch_variables)
    for z, log_z in (
        (sample.normal, sample.normal_log_z),
        (sample.reduce, sample.reduce_log_z),
    ):
        np.testing.assert_allclose(np.exp(log_z), z, rtol=1e-5, atol=1e-30)
    assert np.any(np.asarray(sample.normal) == 0)
    assert np.isfinite(float(penalty))
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert max(float(np.abs(g).max()) for g in grads) > 0


def test_arch_logits_init_and_variable_split():
    model = tiny_supernet(num_cells=3)
    model.build((2, 8, 8, 3))
    alpha = np.concatenate(values(model.arch_variables))
    assert abs(alpha.mean() - 1.0) < 0.01
    assert 0.003 < alpha.std() < 0.02
    ids = {id(v) for v in model.weight_variables}
    assert not ids & {id(v) for v in model.arch_variables}
    assert len(ids) + 2 == len(model.trainable_variables)
    assert id(model.temperature) not in {
        id(v) for v in model.trainable_variables
    }


def test_penalty_is_averaged_over_the_actual_cell_counts():
    model = tiny_supernet(num_cells=3, resource_estimator="discrete")
    model.build((2, 8, 8, 3))
    tables = model.cost_tables
    assert tables["normal"].shape[0] == 1 and tables["reduce"].shape[0] == 2
    sample = model.sample_architecture("darts")
    expected = 0.0
    for kind in ("normal", "reduce"):
        probs = keras.ops.softmax(model.arch_logits(kind), axis=-1)
        per_cell = [
            float(keras.ops.sum(resource_cost.edge_log_costs(probs, t)))
            for t in tables[kind]
        ]
        expected += np.mean(per_cell)
    assert float(model.resource_penalty(sample)) == pytest.approx(
        expected, rel=1e-5
    )
    # The reduction cells run at 8 then 4 pixels with 8 then 16 channels.
    sep = TINY_PRIMITIVES.index("sep_conv_3x3")
    sizes = tables["reduce"][:, 0, sep, 0]
    np.testing.assert_allclose(sizes, [2 * c * 9 + 2 * c * c for c in (8, 16)])


def test_bad_arguments_name_the_bad_value():
    with pytest.raises(ValueError, match="'gumbel'"):
        tiny_supernet(mode="gumbel")
    with pytest.raises(ValueError, match="'reinforce'"):
        tiny_supernet(resource_estimator="reinforce")
    model = tiny_supernet()
    with pytest.raises(ValueError, match="'sampled'"):
        model.sample_architecture("sampled")
    with pytest.raises(ValueError, match="clipnorm"):
        model.compile(optimizer=keras.optimizers.SGD(0.1, clipnorm=1.0))


def test_config_and_keras_file_round_trip(tmp_path):
    model = tiny_supernet(mode="darts", penalty_strength=0.25)
    x, _ = tiny_data()
    model(x)
    model.temperature.assign(0.5)
    clone = assert_config_round_trip(model)
    assert clone.penalty_strength == 0.25 and clone.mode == "darts"
    path = tmp_path / "supernet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SNASSupernet)
    for mode in ("darts", "argmax"):
        np.testing.assert_allclose(
            loaded(x, arch_mode=mode), model(x, arch_mode=mode), atol=1e-5
        )
    assert float(loaded.temperature) == 0.5


# ---------------------------------------------------------------- strategy


def test_mirrored_alpha_stays_identical_while_noise_differs(mirrored):
    strategy = mirrored
    with strategy.scope():
        model = tiny_supernet()
        model.compile(jit_compile=False)
    x, y = tiny_data(n=8)
    init = values(model.arch_variables)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for var, start in zip(model.arch_variables, init, strict=True):
        first, second = strategy.experimental_local_results(var.value)
        np.testing.assert_array_equal(first, second)
        assert not np.allclose(first, start)
    noise = strategy.experimental_local_results(strategy.run(model.draw_noise))
    assert len(noise) == 2 and not np.allclose(noise[0], noise[1])


def test_mirrored_equals_one_device_on_the_same_global_batch(mirrored):
    # Deterministic relaxation (darts_single_level: SNAS's one-batch step
    # with softmax(α)) and a global batch whose two halves are equal, so
    # each replica's BatchNorm statistics equal the global ones: two
    # replicas must then reproduce one device exactly,
    # with the penalty counted once and weight decay and momentum on.
    # Drop-path off: each replica would drop other examples.
    x, y = tiny_data(n=2)
    x, y = np.concatenate([x, x]), np.concatenate([y, y])
    initial = None

    def train(strategy):
        with strategy.scope():
            model = tiny_supernet(
                mode="darts_single_level",
                penalty_strength=0.5,
                resource_estimator="discrete",
                drop_path_prob=0.0,
            )
            # SGD for α too: Adam's first steps are nearly sign(g), which
            # turns float noise on tiny gradients into ±lr differences.
            model.compile(
                optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                arch_optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                jit_compile=False,
            )
            model.build(x.shape)
        if initial is not None:
            model.set_weights(initial)
        start = model.get_weights(), values(model.trainable_variables)
        model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)
        return start, values(model.trainable_variables)

    (initial, before), single = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
    _, mirrored_weights = train(mirrored)
    moved = [np.abs(a - b).max() for a, b in zip(single, before, strict=True)]
    assert max(moved) > 1e-3
    for a, b in zip(single, mirrored_weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_one_function_train_step_gives_keras_results(mirrored):
    # Stochastic (snas) mode under two replicas: the single tf.function
    # (used with Grappler off) must draw the same noise and reduce the
    # same logs as Keras' nested train function.
    x, y = tiny_data(n=4)
    initial = None

    def train(nested):
        with mirrored.scope():
            model = tiny_supernet()
            model.compile(jit_compile=False)
            model.build(x.shape)
        if initial is not None:
            model.set_weights(initial)
        start = model.get_weights()
        if nested:
            keras.Model.make_train_function(model, force=True)
        with training.grappler(False):
            history = model.fit(
                x, y, batch_size=4, epochs=2, shuffle=False, verbose=0
            )
        single = is_single_function(model.train_function)
        weights = values(model.trainable_variables)
        return start, single, history.history["loss"], weights

    initial, single, loss, weights = train(nested=False)
    _, nested_single, nested_loss, nested_weights = train(nested=True)
    assert single and not nested_single
    np.testing.assert_allclose(loss, nested_loss, rtol=1e-6)
    for a, b in zip(weights, nested_weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    "grappler, kwargs",
    [
        (False, {"steps_per_execution": 2}),
        (False, {"run_eagerly": True}),
        # One function had the slower first step with Grappler on.
        (True, {}),
    ],
)
def test_keras_train_function_where_one_function_does_not_apply(
    grappler, kwargs
):
    model = tiny_supernet()
    model.compile(jit_compile=False, **kwargs)
    x, y = tiny_data(n=4)
    with training.grappler(grappler):
        assert not is_single_function(model.make_train_function())
        history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.slow
def test_xla_under_mirrored_compiles_the_per_replica_pass(mirrored):
    with mirrored.scope():
        model = tiny_supernet()
        model.compile(jit_compile=True)
    assert model.jit_compile is False  # Keras' whole-step XLA fails here
    assert model._gradient_fn.function_spec.jit_compile is True
    x, y = tiny_data(n=4)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    first, second = mirrored.experimental_local_results(
        model.arch_logits_reduce.value
    )
    np.testing.assert_array_equal(first, second)


def test_default_search_optimizers_follow_the_paper():
    from snas_tf.models import default_search_optimizers

    sgd, adam = default_search_optimizers(epochs=10, steps_per_epoch=5)
    # The learning rate is evaluated at the optimizer's step counter.
    assert float(sgd.learning_rate) == pytest.approx(0.025)
    sgd.iterations.assign(50)
    assert float(sgd.learning_rate) == pytest.approx(0.001)
    assert sgd.momentum == pytest.approx(0.9)
    assert float(adam.learning_rate) == pytest.approx(3e-4)
    assert (adam.beta_1, adam.beta_2) == (0.5, 0.999)


def test_fit_traces_the_train_step_once():
    # A step that creates variables (optimizer slots, metric state) on its
    # first call is traced twice; fit builds everything beforehand.
    model = tiny_supernet()
    model.compile(jit_compile=False)
    traces = []
    original = model.train_step

    def counting(data):
        traces.append(1)
        return original(data)

    model.train_step = counting
    x, y = tiny_data(n=4)
    model.fit(x, y, batch_size=2, epochs=2, verbose=0)
    assert len(traces) == 1


def test_build_gives_tf_variables_short_names_and_keeps_keras_paths():
    # A scoped TF name made each variable's handle op miss TensorFlow's
    # eager kernel cache (about 1 ms a variable): the build names the TF
    # variables by the last word of their Keras names only.
    model = tiny_supernet(num_cells=2)
    model.compile(jit_compile=False)
    model.build((2, 8, 8, 3))
    built = [v for cell in model.cells for v in cell.weights]
    # The optimizer's momentum slots; its step counter and learning rate
    # are made before the build.
    built += model.optimizer.variables[2:]
    short = {"kernel", "gamma", "beta", "mean", "variance", "momentum"}
    assert {v.value.name for v in built} <= {f"{name}:0" for name in short}
    assert any(v.value.name == "momentum:0" for v in built)
    paths = [v.path for v in model.weights + model.optimizer.variables]
    assert len(set(paths)) == len(paths)
    assert model.cells[0].weights[0].path.startswith(f"{model.name}/cell_0/")


def _assert_recompute_gives_the_same_step(recomputes, epochs, **overrides):
    """Trains from the same weights without recompute and with each of
    `recomputes`; the trained weights must move and agree."""
    x, y = tiny_data(n=4)
    results = []
    for recompute in (False, *recomputes):
        model = tiny_supernet(recompute=recompute, **overrides)
        plain_compile(model, lr=0.1, arch_lr=0.1)
        model.build(x.shape)
        if results:
            model.set_weights(results[0][0])
        start = [np.array(w) for w in model.get_weights()]
        model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, shuffle=False)
        results.append((start, model.get_weights()))
    (start, plain), *recomputed = results
    moved = max(
        float(np.max(np.abs(a - b))) for a, b in zip(plain, start, strict=True)
    )
    assert moved > 1e-3
    for _, weights in recomputed:
        for a, b in zip(plain, weights, strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_recompute_gives_the_same_training_step():
    # tf.recompute_grad per cell: the same gradients and moving statistics
    # (the recomputed BatchNorms must not update them a second time).
    _assert_recompute_gives_the_same_step((True, 1), epochs=2, num_cells=2)
    assert tiny_supernet(recompute=True).get_config()["recompute"] is True
    assert tiny_supernet(recompute=1).get_config()["recompute"] == 1


def test_recompute_gives_the_same_step_with_every_primitive():
    # The shared poolings and space-to-batches of the dilated convs are
    # made again in the recomputed backward pass, not taken from the
    # forward one (whose gradient would then be lost).
    _assert_recompute_gives_the_same_step(
        (True,), epochs=1, num_cells=3, num_nodes=2, primitives=PRIMITIVES
    )


@pytest.mark.parametrize("recompute, expected", [(False, 0), (1, 1), (True, 2)])
def test_recompute_wraps_the_first_cells_in_training_only(
    monkeypatch, recompute, expected
):
    # An int recomputes the leading cells (highest resolution: the most
    # memory); True every cell; inference and argmax mode none.
    wrapped = []
    original = snas_supernet._recomputed

    def spy(cell):
        wrapped.append(cell)
        return original(cell)

    monkeypatch.setattr(snas_supernet, "_recomputed", spy)
    model = tiny_supernet(num_cells=2, recompute=recompute)
    x, _ = tiny_data()
    model(x, training=True)
    assert wrapped == model.cells[:expected]
    model(x, training=False)
    model(x, training=True, arch_mode="argmax")
    assert len(wrapped) == expected


@pytest.mark.parametrize("recompute", [3, -1, 1.5, "all"])
def test_bad_recompute_names_the_value_and_the_choices(recompute):
    with pytest.raises(ValueError, match=f"num_cells=2, got {recompute!r}"):
        tiny_supernet(num_cells=2, recompute=recompute)
