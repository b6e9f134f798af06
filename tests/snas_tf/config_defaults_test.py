"""The models' compile defaults are the config dataclasses' defaults (the
one place the paper's values are written)."""

import pytest
from testing_utils import tiny_supernet

from snas_tf.config import SearchConfig, TrainConfig
from snas_tf.genotype import get_genotype
from snas_tf.models.child_network import build_child_network
from snas_tf.models.child_trainer import ChildTrainer


def test_supernet_compile_defaults_are_the_search_config_defaults():
    s = SearchConfig()
    model = tiny_supernet()
    model.compile(jit_compile=False)
    assert float(model.optimizer.learning_rate) == pytest.approx(
        s.learning_rate
    )
    assert model.optimizer.momentum == pytest.approx(s.momentum)
    adam = model.arch_optimizer
    assert float(adam.learning_rate) == pytest.approx(s.arch_learning_rate)
    assert (adam.beta_1, adam.beta_2) == (s.arch_beta_1, s.arch_beta_2)
    assert (model.weight_decay, model.arch_weight_decay) == (
        s.weight_decay,
        s.arch_weight_decay,
    )
    assert (model.clipnorm, model.arch_clipnorm) == (
        s.clipnorm,
        s.arch_clipnorm,
    )


def test_child_trainer_defaults_are_the_train_config_defaults():
    t = TrainConfig()
    network = build_child_network(
        get_genotype("SNAS_mild"),
        num_classes=3,
        channels=4,
        num_layers=3,
        image_size=8,
        auxiliary=False,
    )
    trainer = ChildTrainer(network, 3)
    trainer.compile(jit_compile=False)
    assert trainer.auxiliary_weight == t.auxiliary_weight
    assert float(trainer.optimizer.learning_rate) == pytest.approx(
        t.learning_rate
    )
    assert trainer.optimizer.momentum == pytest.approx(t.momentum)
    assert (trainer.weight_decay, trainer.clipnorm) == (
        t.weight_decay,
        t.clipnorm,
    )
