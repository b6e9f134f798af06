"""The resource penalty pushes α towards cheaper ops, under every estimator
(SNAS §2.4; docs/method.md §4), and only through the penalty.

A one-cell supernet (a reduction cell: docs/method.md §1 puts reductions at
L//3 and 2L//3) trains only α (the weight optimizer's learning rate is 0)
with plain SGD, no clipping and no weight decay, at λ = 1, for `STEPS`
steps with a large η; a control with η = 0 takes the same steps. In the
tiny op set `sep_conv_3x3` costs the most on every edge (size, FLOPs and
MAC) and `none` nothing.

The policy-gradient estimate has no baseline: its per-step α gradient has
about 15 times more noise than signal at λ = 1 (a numpy simulation of the
same cost table), so it needs a few hundred steps; η·lr is small enough for
the changes to stay in the linear regime.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import TINY_PRIMITIVES, tiny_data, tiny_supernet

from snas_tf.resource_cost import ESTIMATORS, expected_costs

STEPS = 400
ETA = 100.0
ARCH_LR = 1e-4  # η·lr = 0.01 per step
SEP = TINY_PRIMITIVES.index("sep_conv_3x3")
NONE = TINY_PRIMITIVES.index("none")


def _state(model):
    logits = keras.ops.convert_to_numpy(model.arch_logits_reduce)
    probs = keras.ops.softmax(logits, axis=-1)
    costs = sum(
        keras.ops.convert_to_numpy(expected_costs(probs, table))
        for table in model.cost_tables["reduce"]
    )
    return keras.ops.convert_to_numpy(probs), np.asarray(costs)


def _search(estimator, eta):
    """(probs, expected costs) before and after `STEPS` α-only steps."""
    model = tiny_supernet(
        num_cells=1, resource_estimator=estimator, penalty_strength=eta
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        arch_optimizer=keras.optimizers.SGD(ARCH_LR),
        weight_decay=0.0,
        arch_weight_decay=0.0,
        clipnorm=None,
        arch_clipnorm=None,
        jit_compile=False,
    )
    x, y = tiny_data(n=2)
    model.build(x.shape)
    assert set(model.cost_tables) == {"reduce"}
    assert float(keras.ops.convert_to_numpy(model.temperature)) == 1.0
    weights = [np.array(v) for v in model.weight_variables]
    before = _state(model)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, epochs=1, steps_per_epoch=STEPS, shuffle=False, verbose=0)
    for w, v in zip(weights, model.weight_variables, strict=True):
        np.testing.assert_array_equal(w, np.array(v), err_msg=v.path)
    return before, _state(model)


@pytest.fixture(scope="module")
def control():
    """α after the same steps with η = 0: cross-entropy alone."""
    return _search("reparametrization", 0.0)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_the_penalty_makes_alpha_cheaper(estimator, control):
    (p0, cost0), (p1, cost1) = _search(estimator, ETA)
    # The costliest op loses probability, the expected costs fall.
    sep_drop = p0[:, SEP].sum() - p1[:, SEP].sum()
    fall = (cost0 - cost1) / cost0
    assert sep_drop > 0.05, sep_drop
    assert np.all(fall > 0.02), fall
    if estimator != "policy_gradient":
        # Pathwise and exact gradients: `none` (cost 0) gains on every edge.
        assert np.all(p1[:, NONE] > p0[:, NONE]), (p0, p1)
    # The control moves α far less: the fall is the penalty's doing.
    (c0, ccost0), (c1, ccost1) = control
    assert abs(c0[:, SEP].sum() - c1[:, SEP].sum()) < 0.1 * sep_drop
    assert np.all(np.abs(ccost0 - ccost1) / ccost0 < 0.1 * fall)
