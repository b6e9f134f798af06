"""Tests for snas_tf.schedules (SNAS §2.2; docs/method.md §2, temperature)."""

import math
from itertools import pairwise

import pytest

from snas_tf.config import SearchConfig
from snas_tf.schedules import TEMPERATURE_SCHEDULES, temperature_at

# The configured defaults, which must be the reference's 1.0 -> 0.03.
PAPER = dict(
    initial=SearchConfig.temperature_initial,
    final=SearchConfig.temperature_final,
)


def test_linear_runs_from_1_to_0_03_over_the_search():
    epochs = 11
    values = [temperature_at(e, epochs, **PAPER) for e in range(epochs)]
    assert values[0] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.03)
    # Epoch 5 of 0..10 is halfway: (1.0 + 0.03) / 2.
    assert values[5] == pytest.approx(0.515)
    steps = [b - a for a, b in pairwise(values)]
    assert all(s < 0 for s in steps)
    assert steps == pytest.approx([(0.03 - 1.0) / (epochs - 1)] * 10)


def test_exponential_is_geometric():
    epochs = 11
    values = [
        temperature_at(e, epochs, schedule="exponential", **PAPER)
        for e in range(epochs)
    ]
    assert values[0] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.03)
    # Geometric midpoint sqrt(initial * final), and a constant ratio.
    assert values[5] == pytest.approx(math.sqrt(0.03))
    ratios = [b / a for a, b in pairwise(values)]
    assert ratios == pytest.approx([0.03 ** (1 / (epochs - 1))] * 10)


def test_custom_endpoints():
    assert temperature_at(0, 5, initial=2.0, final=0.5) == pytest.approx(2.0)
    assert temperature_at(2, 5, initial=2.0, final=0.5) == pytest.approx(1.25)
    assert temperature_at(
        2, 5, initial=2.0, final=0.5, schedule="exponential"
    ) == pytest.approx(1.0)


@pytest.mark.parametrize("schedule", TEMPERATURE_SCHEDULES)
def test_single_epoch_uses_the_initial_temperature(schedule):
    # With one epoch, epoch 0 is both first and last; the first wins.
    assert temperature_at(0, 1, schedule=schedule, **PAPER) == pytest.approx(
        1.0
    )
    assert temperature_at(1, 1, schedule=schedule, **PAPER) == pytest.approx(
        0.03
    )


@pytest.mark.parametrize("schedule", TEMPERATURE_SCHEDULES)
def test_epochs_outside_the_search_clamp(schedule):
    assert temperature_at(10, 10, schedule=schedule, **PAPER) == pytest.approx(
        0.03
    )
    assert temperature_at(500, 10, schedule=schedule, **PAPER) == pytest.approx(
        0.03
    )
    assert temperature_at(-3, 10, schedule=schedule, **PAPER) == pytest.approx(
        1.0
    )


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        (dict(schedule="cosine"), "'cosine'"),
        (dict(epochs=0), "got 0"),
        (dict(epochs=-2), "got -2"),
        (dict(initial=0.0), "initial=0.0"),
        (dict(final=-0.1), "final=-0.1"),
    ],
)
def test_bad_arguments_raise_naming_the_value(kwargs, bad):
    kwargs = dict(dict(epoch=0, epochs=10, **PAPER), **kwargs)
    with pytest.raises(ValueError, match=bad):
        temperature_at(**kwargs)
