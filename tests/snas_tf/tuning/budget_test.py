"""The budget side of `snas tune`: scoring and the smallest child network.

`snas_tf.tuning.budget` measures children at the retraining size; these
tests build tiny ones (3 cells of 2 nodes, 4 channels, 8x8 digits).
"""

import random

import pytest
from testing_utils import TINY_RETRAIN

from snas_tf.config import RetrainConfig, load_config
from snas_tf.genotype import Genotype
from snas_tf.search_space import SearchSpace
from snas_tf.tuning.budget import budget_score, measure, smallest_network

PRIMITIVES = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
RETRAIN = list(TINY_RETRAIN)


def test_smallest_network_is_below_random_derivable_genotypes():
    retrain = load_config([], RETRAIN, RetrainConfig)
    space = SearchSpace(PRIMITIVES, 2)
    smallest = smallest_network(space, "edge_all", retrain, 10)
    for key in ("params", "madds"):
        genotype = Genotype.from_string(smallest[f"{key}_genotype"])
        assert measure(genotype, retrain, 10)[key == "madds"] == smallest[key]
    rng = random.Random(0)

    def random_cell():
        # edge_all: every edge is any op; `none` drops it.
        ops = [[rng.choice(PRIMITIVES) for _ in range(2 + j)] for j in (0, 1)]
        return [
            [(op, s) for s, op in enumerate(n) if op != "none"] for n in ops
        ]

    for _ in range(12):
        genotype = Genotype(normal=random_cell(), reduce=random_cell())
        params, madds = measure(genotype, retrain, 10)
        assert params >= smallest["params"] and madds >= smallest["madds"]


def test_score_ranks_every_over_budget_trial_below_in_budget_ones():
    assert budget_score(0.0, 100, 5, max_params=100) == (0.0, True)
    score, within = budget_score(1.0, 101, 5, max_params=100, max_madds=10)
    assert not within and score == pytest.approx(-0.01)
    # The worst overshoot counts.
    assert budget_score(1.0, 50, 30, 100, 10)[0] == pytest.approx(-2.0)
