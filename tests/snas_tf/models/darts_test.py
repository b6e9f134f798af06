"""Tests of the supernet's first-order bi-level DARTS mode: α from the
architecture batches, θ from the training batches, and the top2 child."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import (
    TINY_PRIMITIVES,
    TINY_SPACE,
    plain_compile,
    tiny_data,
    tiny_supernet,
    values,
)

from snas_tf.genotype import derive_genotype

ETA = 0.5
ARCH_LR = 50.0  # large, so that θ's gradient depends visibly on the new α


def _batches():
    """A training and an architecture batch with other images and labels."""
    x_train, y_train = tiny_data(n=2, seed=0)
    x_arch, _ = tiny_data(n=2, seed=1)
    y_arch = ((y_train + 1) % 3).astype("int32")
    return (x_train, y_train), (x_arch, y_arch)


def _paired(train, arch, repeat=1):
    (x_train, y_train), (x_arch, y_arch) = train, arch
    element = ((x_train, x_arch), (y_train, y_arch))
    return tf.data.Dataset.from_tensors(element).repeat(repeat)


def _gradients(model, x, y, variables):
    """Gradient of CE + η·penalty under softmax(α) on one batch."""
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        sample = model.sample_architecture("darts")
        logits = model.forward(x, sample, training=True)
        loss = ce(y, logits) + ETA * model.resource_penalty(sample)
    grads = tape.gradient(loss, variables)
    # One cell: the normal cells' α is unused (the step applies zeros).
    return [
        np.zeros(v.shape) if g is None else np.asarray(g)
        for g, v in zip(grads, variables, strict=True)
    ]


def _assert_update(before, after, grads, lr, variables):
    # Graph (fit) and eager replay differ by float noise (see
    # snas_supernet_test); a gradient of the wrong batch moves far more.
    for b, a, g, v in zip(before, after, grads, variables, strict=True):
        np.testing.assert_allclose(
            b - a, lr * g, rtol=1e-3, atol=5e-4, err_msg=v.path
        )


def _far(moved, grads, lr):
    """Whether `moved` (before - after) is far from lr * `grads`."""
    return max(
        float(np.max(np.abs(m - lr * g)))
        for m, g in zip(moved, grads, strict=True)
    )


def test_bilevel_step_moves_alpha_on_arch_batches_theta_on_train_batches():
    model = tiny_supernet(
        mode="darts", penalty_strength=ETA, resource_estimator="discrete"
    )
    plain_compile(model, arch_lr=ARCH_LR)
    train, arch = _batches()
    model.build(train[0].shape)
    weights, alphas = model.weight_variables, model.arch_variables
    before_w, before_a = values(weights), values(alphas)

    logs = model.fit(_paired(train, arch), epochs=1, verbose=0).history
    after_w, after_a = values(weights), values(alphas)
    assert {"loss", "arch_loss", "penalty", "accuracy"} <= set(logs)

    # First-order DARTS by hand from the same state: α steps on the
    # architecture batch with the current θ, then θ steps on the training
    # batch with the new α.
    for v, b in zip(weights + alphas, before_w + before_a, strict=True):
        v.assign(b)
    arch_grads = _gradients(model, *arch, alphas)
    wrong_arch = _gradients(model, *train, alphas)
    for v, b, g in zip(alphas, before_a, arch_grads, strict=True):
        v.assign(b - ARCH_LR * g)
    weight_grads = _gradients(model, *train, weights)
    wrong_weights = _gradients(model, *arch, weights)
    for v, b in zip(alphas, before_a, strict=True):
        v.assign(b)
    stale_alpha = _gradients(model, *train, weights)

    _assert_update(before_a, after_a, arch_grads, ARCH_LR, alphas)
    _assert_update(before_w, after_w, weight_grads, 1.0, weights)
    # The test can tell: α's gradient on the training batch, θ's on the
    # architecture batch and θ's with the old α are all far off.
    moved_a = [b - a for b, a in zip(before_a, after_a, strict=True)]
    moved_w = [b - a for b, a in zip(before_w, after_w, strict=True)]
    assert _far(moved_a, wrong_arch, ARCH_LR) > 1e-2
    assert _far(moved_w, wrong_weights, 1.0) > 1e-2
    assert _far(moved_w, stale_alpha, 1.0) > 1e-2


def test_bilevel_mode_refuses_unpaired_batches():
    model = tiny_supernet(mode="darts")
    plain_compile(model, arch_lr=ARCH_LR)
    x, y = tiny_data()
    with pytest.raises(ValueError, match="darts_single_level"):
        model.fit(x, y, batch_size=2, epochs=1, verbose=0)


def test_bilevel_mirrored_equals_one_device(mirrored):
    # Global batches whose two halves are equal: each replica's BatchNorm
    # statistics are the global ones, so two replicas must reproduce one
    # device, with weight decay, clipping and momentum on in both steps.
    (x_train, y_train), (x_arch, y_arch) = _batches()
    train = np.concatenate([x_train] * 2), np.concatenate([y_train] * 2)
    arch = np.concatenate([x_arch] * 2), np.concatenate([y_arch] * 2)
    initial = None

    def run(strategy):
        with strategy.scope():
            model = tiny_supernet(mode="darts", penalty_strength=ETA)
            model.compile(
                optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                arch_optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                jit_compile=False,
            )
            model.build(train[0].shape)
        if initial is not None:
            model.set_weights(initial)
        start = model.get_weights(), values(model.trainable_variables)
        model.fit(_paired(train, arch, repeat=3), epochs=1, verbose=0)
        return start, values(model.trainable_variables)

    (initial, before), single = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
    _, two = run(mirrored)
    moved = [np.abs(a - b).max() for a, b in zip(single, before, strict=True)]
    assert max(moved) > 1e-3
    for a, b in zip(single, two, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


# ------------------------------------------------------------- top2 child

NONE, MAX, SKIP, SEP = range(len(TINY_PRIMITIVES))
DROPPED = len(TINY_PRIMITIVES)
# TINY_SPACE edges: node 0 <- sources 0, 1 (edges 0, 1); node 1 <- sources
# 0, 1, 2 (edges 2, 3, 4).
KNOWN_ALPHA = {
    # Edge 0's `none` is strongest (edge_all would drop it); top2 keeps it
    # with its best other op. Node 1 drops its weakest edge, 3.
    "normal": [
        [5.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
        [0.0, 2.0, 0.0, 0.0],
        [0.0, 0.5, 0.4, 0.3],
        [0.0, 0.0, 0.0, 3.0],
    ],
    # Node 1: three equal edges; the lower sources win the tie.
    "reduce": [
        [0.0, 3.0, 0.0, 0.0],
        [0.0, 0.0, 2.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
        [0.0, 0.0, 0.0, 1.0],
        [0.0, 0.0, 0.0, 1.0],
    ],
}
EXPECTED_INDEX = {
    "normal": [SKIP, SEP, MAX, DROPPED, SEP],
    "reduce": [MAX, SKIP, SEP, SEP, DROPPED],
}


def _known_child_model(**kwargs):
    # 3 cells: a normal cell then two reduction cells.
    model = tiny_supernet(num_cells=3, mode="darts", **kwargs)
    x, _ = tiny_data()
    model.build(x.shape)
    for cell_type, alpha in KNOWN_ALPHA.items():
        model.arch_logits(cell_type).assign(np.array(alpha, "float32"))
    return model, x


def _child_by_hand(model, x, index):
    """The child network computed from the supernet's layers directly:
    each node sums the chosen op of its kept edges; nothing else runs."""
    s0 = s1 = model.stem_bn(model.stem_conv(x), training=False)
    for cell in model.cells:
        chosen = index["reduce" if cell.reduction else "normal"]
        states = [cell._pre0(s0), cell._pre1(s1)]
        for node in range(TINY_SPACE.num_nodes):
            terms = [
                cell.edges[e.index]._ops[chosen[e.index]](states[e.source])
                for e in TINY_SPACE.edges
                if e.node == node and chosen[e.index] != DROPPED
            ]
            states.append(sum(terms[1:], terms[0]))
        s0, s1 = s1, keras.ops.concatenate(states[2:], axis=-1)
    return model.classifier(model.global_pool(s1))


def test_top2_child_keeps_two_edges_per_node_with_their_best_op():
    model, x = _known_child_model()
    assert model.derivation_rule == "top2"
    sample = model.sample_architecture("argmax")
    for cell_type, expected in EXPECTED_INDEX.items():
        index = keras.ops.convert_to_numpy(
            getattr(sample, f"{cell_type}_index")
        )
        np.testing.assert_array_equal(index, expected, err_msg=cell_type)
        z = keras.ops.convert_to_numpy(getattr(sample, cell_type))
        np.testing.assert_array_equal(
            z, np.eye(DROPPED + 1)[expected][:, :DROPPED], err_msg=cell_type
        )
    # The edges the genotype of the top2 rule lists, and no others.
    genotype = derive_genotype(
        KNOWN_ALPHA["normal"], KNOWN_ALPHA["reduce"], "top2", TINY_SPACE
    )
    for cell_type, expected in EXPECTED_INDEX.items():
        active = {
            (e.node, e.source, TINY_PRIMITIVES[expected[e.index]])
            for e in TINY_SPACE.edges
            if expected[e.index] != DROPPED
        }
        assert set(genotype.edges(cell_type)) == active, cell_type


def test_top2_child_logits_equal_the_child_computed_by_hand():
    model, x = _known_child_model()
    child = model(x, training=False, arch_mode="argmax")
    by_hand = _child_by_hand(model, x, EXPECTED_INDEX)
    np.testing.assert_allclose(child, by_hand, rtol=1e-5, atol=1e-5)
    # The same child as a mixture whose dropped edges weigh zero.
    sample = model.sample_architecture("argmax")
    from snas_tf.models.snas_supernet import ArchSample

    mixed = model.forward(x, ArchSample(sample.normal, sample.reduce))
    np.testing.assert_allclose(child, mixed, rtol=1e-5, atol=1e-5)
    # edge_all on the same α is another network (edge 0 of the normal
    # cell drops out), so the mask matters.
    edge_all, _ = _known_child_model(derivation_rule="edge_all")
    assert not np.allclose(edge_all(x, arch_mode="argmax"), child, atol=1e-3)


def test_child_accuracy_of_darts_mode_uses_the_top2_child():
    model, x = _known_child_model()
    model.compile(jit_compile=False)
    y = np.argmax(
        keras.ops.convert_to_numpy(_child_by_hand(model, x, EXPECTED_INDEX)),
        axis=-1,
    ).astype("int32")
    logs = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    assert logs["child_accuracy"] == 1.0
    assert "arch_loss" not in logs
