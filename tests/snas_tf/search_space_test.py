"""Tests for snas_tf.search_space: where a network of L cells reduces."""

import pytest

from snas_tf.search_space import reduction_cells


@pytest.mark.parametrize(
    "num_cells, expected",
    [
        (8, (2, 5)),  # the search supernet
        (20, (6, 13)),  # the CIFAR child network
        (14, (4, 9)),  # the ImageNet mobile child network
        (3, (1, 2)),
        (2, (0, 1)),  # every cell reduces
        (1, (0,)),  # L//3 and 2L//3 coincide: listed once
    ],
)
def test_reduction_cells_are_at_a_third_and_two_thirds(num_cells, expected):
    assert reduction_cells(num_cells) == expected
