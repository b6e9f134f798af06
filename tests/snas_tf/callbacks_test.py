"""Tests for snas_tf.callbacks.DropPathScheduler (retraining drop-path)."""

import keras
import numpy as np
import pytest
from testing_utils import tiny_data

from snas_tf.callbacks import DropPathScheduler
from snas_tf.genotype import Genotype
from snas_tf.layers import DropPath
from snas_tf.models.child_network import build_child_network

GENOTYPE = Genotype(
    normal=[[("skip_connect", 0), ("sep_conv_3x3", 1)]],
    reduce=[[("max_pool_3x3", 0), ("skip_connect", 1)]],
)


def _model(drop_path=True):
    return build_child_network(
        GENOTYPE,
        channels=4,
        num_layers=1,
        image_size=8,
        num_classes=3,
        auxiliary=False,
        drop_path=drop_path,
    )


def _rates(model):
    return [
        float(keras.ops.convert_to_numpy(layer.rate))
        for layer in model.layers
        if isinstance(layer, DropPath)
    ]


def test_rate_ramps_linearly_from_zero():
    model = _model()
    scheduler = DropPathScheduler(0.2, epochs=10)
    scheduler.set_model(model)
    # L=1: one reduction cell, both edges dropped (stride-2 skip included).
    for epoch, expected in [(0, 0.0), (3, 0.06), (9, 0.18)]:
        scheduler.on_epoch_begin(epoch)
        assert _rates(model) == pytest.approx([expected] * 2)


def test_fit_sets_the_rate_of_each_epoch():
    model = _model()
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(_rates(model))
    )
    x, y = tiny_data(n=2, size=8)
    history = model.fit(
        x,
        y,
        batch_size=2,
        epochs=2,
        callbacks=[DropPathScheduler(0.5, epochs=2), record],
        verbose=0,
    )
    assert np.isfinite(history.history["loss"]).all()
    assert seen == [[0.0, 0.0], [0.25, 0.25]]


def test_model_without_drop_path_raises_unless_the_rate_is_zero():
    model = _model(drop_path=False)
    scheduler = DropPathScheduler(0.0, epochs=2)
    scheduler.set_model(model)
    scheduler.on_epoch_begin(1)
    scheduler = DropPathScheduler(0.2, epochs=2)
    scheduler.set_model(model)
    with pytest.raises(ValueError, match="has no DropPath layer"):
        scheduler.on_epoch_begin(0)


@pytest.mark.parametrize(
    "prob, epochs, match",
    [
        (1.0, 10, "drop_path_prob must be .* got 1.0"),
        (-0.1, 10, "drop_path_prob must be .* got -0.1"),
        ("0.2", 10, "drop_path_prob must be .* got '0.2'"),
        (0.2, 0, "epochs must be an int >= 1, got 0"),
        (0.2, 2.5, "epochs must be an int >= 1, got 2.5"),
    ],
)
def test_bad_arguments_raise(prob, epochs, match):
    with pytest.raises(ValueError, match=match):
        DropPathScheduler(prob, epochs)
