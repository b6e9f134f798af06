"""Tests of the retraining step (SNAS §3.2; docs/method.md §6)."""

import keras
import numpy as np
import pytest
from testing_utils import is_single_function

from snas_tf import training
from snas_tf.genotype import get_genotype
from snas_tf.models.child_network import build_child_network
from snas_tf.models.child_trainer import ChildTrainer

GENOTYPE = get_genotype("SNAS_moderate")


def _network(auxiliary=False, image_size=8):
    keras.utils.set_random_seed(0)
    return build_child_network(
        GENOTYPE,
        num_classes=3,
        channels=4,
        num_layers=3,
        image_size=image_size,
        auxiliary=auxiliary,
    )


def _batch(n=2, size=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 3)).astype("float32")
    return x, np.array([0, 2] * (n // 2), "int32")


def _weights(layer):
    return [np.array(w) for w in layer.get_weights()]


def test_label_smoothed_cross_entropy_matches_the_formula():
    trainer = ChildTrainer(_network(), 3, label_smoothing=0.1)
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], "float32")
    labels = np.array([0, 1], "int32")
    target = np.eye(3)[labels] * 0.9 + 0.1 / 3
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -(target * log_p).sum(-1).mean()
    got = float(trainer._cross_entropy(labels, logits))
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("weight, moves", [(0.0, False), (0.4, True)])
def test_the_auxiliary_loss_trains_the_auxiliary_head(weight, moves):
    network = _network(auxiliary=True, image_size=32)
    trainer = ChildTrainer(network, 3, auxiliary_weight=weight)
    trainer.compile(keras.optimizers.SGD(0.1), weight_decay=0.0)
    head = network.get_layer("aux_classifier")
    before = _weights(head)
    trainer.fit(*_batch(size=32), batch_size=2, epochs=1, verbose=0)
    changed = any(
        not np.array_equal(a, b)
        for a, b in zip(before, _weights(head), strict=True)
    )
    assert changed == moves


def test_the_step_clips_the_global_gradient_norm():
    trainer = ChildTrainer(_network(), 3)
    # Plain SGD with lr 1: the update is the clipped gradient itself.
    trainer.compile(keras.optimizers.SGD(1.0), weight_decay=0.0, clipnorm=1e-3)
    variables = trainer.network.trainable_variables
    before = [np.array(v) for v in variables]
    trainer.fit(*_batch(), batch_size=2, epochs=1, verbose=0)
    step = np.sqrt(
        sum(
            np.sum((np.array(v) - b) ** 2)
            for v, b in zip(variables, before, strict=True)
        )
    )
    assert step == pytest.approx(1e-3, rel=1e-3)


def test_coupled_weight_decay_shrinks_weights_without_a_gradient():
    trainer = ChildTrainer(_network(), 3)
    trainer.compile(keras.optimizers.SGD(0.5), weight_decay=0.1, clipnorm=0)
    # With clipnorm ~0 the gradient vanishes; only wd * w remains:
    # w <- w - lr * wd * w for each weight.
    trainer.clipnorm = 1e-30
    kernel = trainer.network.get_layer("classifier").kernel
    before = np.array(kernel)
    trainer.fit(*_batch(), batch_size=2, epochs=1, verbose=0)
    np.testing.assert_allclose(
        np.array(kernel), before * (1 - 0.5 * 0.1), rtol=1e-5, atol=1e-7
    )


def test_metrics_are_top1_and_top5_and_evaluate_ignores_the_aux_head():
    trainer = ChildTrainer(_network(auxiliary=True, image_size=32), 3)
    trainer.compile()
    logs = trainer.evaluate(
        *_batch(size=32), batch_size=2, verbose=0, return_dict=True
    )
    assert set(logs) == {"loss", "accuracy", "top5_accuracy"}
    # 3 classes: top-5 (k = min(5, classes)) is always right.
    assert logs["top5_accuracy"] == pytest.approx(1.0)
    x, _ = _batch(size=32)
    logits = trainer.network(x)[0]
    np.testing.assert_allclose(trainer(x), logits, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"auxiliary_weight": -0.1}, "auxiliary_weight"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChildTrainer(_network(), 3, **kwargs)


def test_an_optimizer_that_clips_by_itself_is_rejected():
    trainer = ChildTrainer(_network(), 3)
    with pytest.raises(ValueError, match="clipnorm"):
        trainer.compile(keras.optimizers.SGD(0.1, clipnorm=1.0))


def test_one_function_train_step_gives_keras_results():
    # _network() reseeds, so both trainers start from the same weights.
    results = []
    for nested in (False, True):
        trainer = ChildTrainer(_network(auxiliary=True, image_size=32), 3)
        trainer.compile()
        if nested:  # Keras' own: a tf.function per batch in one per iterator
            keras.Model.make_train_function(trainer, force=True)
        # Grappler off: the one function is not used with it on.
        with training.grappler(False):
            single = is_single_function(trainer.make_train_function())
            history = trainer.fit(
                *_batch(n=4, size=32), batch_size=2, epochs=2, verbose=0
            )
        results.append((single, history.history["loss"], _weights(trainer)))
    (single, loss, weights), (nested_single, nested_loss, nested_weights) = (
        results
    )
    assert single and not nested_single
    np.testing.assert_allclose(loss, nested_loss, rtol=1e-6)
    for a, b in zip(weights, nested_weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
