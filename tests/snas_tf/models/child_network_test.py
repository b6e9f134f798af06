"""Tests of the child networks (SNAS §3.2-3.3, Tables 2-3; docs/method.md §5-6).

The paper figures are pinned on full-size builds made once per module;
behaviour is tested on tiny networks (4 channels, 3 cells).
"""

import keras
import numpy as np
import pytest

from snas_tf.genotype import Genotype
from snas_tf.layers import DropPath
from snas_tf.models.child_network import (
    build_child_network,
    cell_specs,
    copy_weights_by_name,
    count_parameters,
    inference_model,
    multiply_adds,
)

# Paper parameter counts (millions; auxiliary head excluded) and tolerance:
# SNAS Table 2 (CIFAR-10), DARTS Table 1 for DARTS_V2 (second order).
CIFAR_PARAMS = {
    "SNAS_moderate": (2.8, 0.1),
    "SNAS_aggressive": (2.3, 0.1),
    "DARTS_V2": (3.3, 0.1),
}
IMAGENET_MOBILE = dict(
    network="imagenet",
    num_classes=1000,
    channels=48,
    num_layers=14,
    image_size=224,
)

# Node 1 of the normal cell and node 2 of the reduction cell have no
# incoming edge; node 2 of the normal cell reads the empty node 1 (index 3).
EMPTY_NODES = Genotype(
    normal=[
        [("sep_conv_3x3", 0), ("skip_connect", 1)],
        [],
        [("skip_connect", 3), ("dil_conv_3x3", 0)],
    ],
    reduce=[
        [("dil_conv_5x5", 1)],
        [("max_pool_3x3", 0), ("avg_pool_3x3", 2)],
        [],
    ],
)
TINY = dict(channels=4, num_layers=3, image_size=32, num_classes=5)


@pytest.fixture(scope="module")
def cifar_models():
    return {name: build_child_network(name) for name in CIFAR_PARAMS}


@pytest.fixture(scope="module")
def tiny_model():
    model = build_child_network(EMPTY_NODES, **TINY)
    _randomize_bn(model)
    return model


def _randomize_bn(model, seed=0):
    # Non-trivial BN statistics, so inference outputs depend on all of them.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, w.shape).astype("float32")
                    if "variance" in w.name or "gamma" in w.name
                    else rng.normal(0.0, 0.1, w.shape).astype("float32")
                    for w in layer.weights
                ]
            )


def _images(n=2, size=32, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3))


@pytest.mark.parametrize("name", sorted(CIFAR_PARAMS))
def test_cifar_parameter_counts_match_the_papers(cifar_models, name):
    model = cifar_models[name]
    expected, tolerance = CIFAR_PARAMS[name]
    params = count_parameters(model)
    print(
        f"{name}: {params} params, {count_parameters(model, False)} with "
        f"aux, {multiply_adds(model, 32)} multiply-adds"
    )
    assert abs(params / 1e6 - expected) <= tolerance
    # The auxiliary head is trained but not counted [P Table 2].
    assert count_parameters(model, exclude_auxiliary=False) > params


def test_imagenet_mobile_matches_the_paper():
    model = build_child_network("SNAS_moderate", **IMAGENET_MOBILE)
    params, madds = count_parameters(model), multiply_adds(model, 224)
    print(f"ImageNet SNAS_moderate: {params} params, {madds} multiply-adds")
    # SNAS Table 3: 4.3M parameters, mobile setting (< 600M multiply-adds).
    assert abs(params / 1e6 - 4.3) <= 0.15
    assert madds < 600e6
    # DARTS AuxiliaryHeadImageNet has no BN after its 2x2 conv.
    names = {layer.name for layer in model.layers}
    assert "aux_bn1" in names and "aux_bn2" not in names
    assert model.get_layer("global_pool").input.shape[1:3] == (7, 7)


def test_counts_by_hand_on_a_one_cell_network():
    # L=1: cell 0 is a reduction cell (C=8 from the 12-channel stem) at 8x8.
    genotype = Genotype(
        normal=[[("skip_connect", 0)], [("sep_conv_3x3", 1)]],
        reduce=[[("skip_connect", 0)], [("sep_conv_3x3", 1)]],
    )
    model = build_child_network(
        genotype, channels=4, num_layers=1, image_size=8, num_classes=3,
        auxiliary=False,
    )  # fmt: skip
    stem = 8 * 8 * 9 * 3 * 12
    preprocess = 2 * 8 * 8 * 12 * 8
    factorized_reduce = 4 * 4 * 2 * 8 * 4
    sep_conv = 2 * (4 * 4 * 9 * 8 + 4 * 4 * 8 * 8)
    dense = 16 * 3
    assert multiply_adds(model) == (
        stem + preprocess + factorized_reduce + sep_conv + dense
    )
    # Kernels, plus BN scale and offset; moving statistics excluded.
    assert count_parameters(model) == (
        (27 * 12 + 2 * 12)
        + 2 * (12 * 8 + 2 * 8)
        + (2 * 8 * 4 + 2 * 8)
        + 2 * (9 * 8 + 8 * 8 + 2 * 8)
        + (16 * 3 + 3)
    )
    with pytest.raises(ValueError, match="built for 8x8"):
        multiply_adds(model, 32)


def test_cell_layout_follows_darts():
    specs = cell_specs("cifar", 36, 20)
    assert [s.index for s in specs if s.reduction] == [6, 13]
    assert [s.channels for s in specs][5:8] == [36, 72, 72]
    assert specs[-1].channels == 144
    assert [s.index for s in specs if s.reduction_prev] == [7, 14]
    # ImageNet: stem1 reduced, so cell 0 gets a FactorizedReduce.
    assert cell_specs("imagenet", 48, 14)[0].reduction_prev


def _assert_flat_builtin(model, namespace):
    for layer in model.layers:
        cls = type(layer)
        assert cls is getattr(namespace, cls.__name__, None), cls
        assert not isinstance(layer, keras.Model), layer.name


def test_only_builtin_keras_layers(cifar_models, tiny_model):
    for model in (cifar_models["SNAS_aggressive"], tiny_model):
        _assert_flat_builtin(model, keras.layers)
        assert all(
            type(layer).__module__.startswith("keras.")
            for layer in model.layers
        )


def test_names_are_deterministic(tiny_model):
    again = build_child_network(EMPTY_NODES, **TINY)
    assert [w.path for w in again.weights] == [
        w.path for w in tiny_model.weights
    ]
    assert "cell0_node0_edge0_sep_conv_3x3_dw1" in {
        layer.name for layer in again.layers
    }


@pytest.mark.parametrize(
    "cell, node, side", [("cell0", 1, 32), ("cell1", 2, 16)]
)
def test_empty_node_is_zeros_in_its_channel_slice(tiny_model, cell, node, side):
    c = 4 * (2 if cell == "cell1" else 1)
    concat = tiny_model.get_layer(f"{cell}_concat").output
    probe = keras.Model(tiny_model.input, concat)
    out = keras.ops.convert_to_numpy(probe(_images(), training=False))
    # Every node keeps its place: num_nodes * C channels.
    assert out.shape == (2, side, side, 3 * c)
    np.testing.assert_array_equal(out[..., node * c : (node + 1) * c], 0.0)
    assert np.all(np.abs(out[..., :c]).max(axis=(0, 1, 2)) > 0)
    # The zeros cost nothing: a slice, a pad, a slice, and no arithmetic.
    zeros = [
        type(layer).__name__
        for layer in tiny_model.layers
        if layer.name.startswith(f"{cell}_node{node}_zeros")
    ]
    assert zeros == ["Cropping2D", "ZeroPadding2D", "Cropping2D"]


def test_inference_model_drops_aux_head_and_shares_weights(tiny_model):
    x = _images(seed=1)
    assert len(tiny_model.outputs) == 2
    infer = inference_model(tiny_model)
    assert len(infer.outputs) == 1
    names = [layer.name for layer in tiny_model.layers]
    assert "aux_classifier" in names and "aux_bn2" in names
    assert not any(layer.name.startswith("aux_") for layer in infer.layers)
    ids = {id(w) for w in tiny_model.weights}
    assert all(id(w) in ids for w in infer.weights)
    logits, aux = tiny_model(x, training=False)
    assert aux.shape == (2, 5)
    np.testing.assert_array_equal(infer(x, training=False), logits)
    _assert_flat_builtin(infer, keras.layers)
    assert inference_model(infer) is infer


def test_training_model_trains_with_aux_loss():
    model = build_child_network(EMPTY_NODES, **TINY)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=[loss, loss],
        # SNAS §3.2 / DARTS: auxiliary weight 0.4.
        loss_weights=[1.0, 0.4],
        jit_compile=False,
    )
    y = np.array([0, 3])
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(_images(), [y, y])
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(before, model.get_weights(), strict=True)
    ]
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert sum(changed) > len(changed) // 2


def test_tf_keras_twin_takes_the_weights(tiny_model):
    import tf_keras

    twin = build_child_network(EMPTY_NODES, layers=tf_keras.layers, **TINY)
    assert isinstance(twin, tf_keras.Model)
    _assert_flat_builtin(twin, tf_keras.layers)
    # Same layers, same order: variable names differ between Keras 2
    # ("depthwise_kernel:0") and 3 ("kernel"), layer names and shapes not.
    assert [(w.name.split("/")[0], tuple(w.shape)) for w in twin.weights] == [
        (w.path.split("/")[0], tuple(w.shape)) for w in tiny_model.weights
    ]
    twin.set_weights(tiny_model.get_weights())
    x = _images(seed=2).astype("float32")
    for got, expected in zip(
        twin(x, training=False), tiny_model(x, training=False), strict=True
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(network="mnist"), "Unknown network 'mnist'"),
        (dict(channels=5), "channels must be even"),
        (dict(num_layers=0), "num_layers must be a positive int"),
        (dict(image_size=8), "auxiliary head needs"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    args = dict(TINY, **kwargs)
    with pytest.raises(ValueError, match=match):
        build_child_network("SNAS_moderate", **args)


# Identity edges (stride-1 skip_connect) and a stride-2 skip_connect, which
# is a FactorizedReduce. L=3 at 8x8: cell 0 normal, cells 1 and 2 reduce.
SKIP_EDGES = Genotype(
    normal=[
        [("skip_connect", 0), ("sep_conv_3x3", 1)],
        [("skip_connect", 2), ("max_pool_3x3", 0)],
    ],
    reduce=[
        [("skip_connect", 0), ("avg_pool_3x3", 1)],
        [("skip_connect", 2), ("dil_conv_3x3", 1)],
    ],
)
SMALL = dict(
    channels=4, num_layers=3, image_size=8, num_classes=3, auxiliary=False
)


def _drop_path_names(genotype, num_layers):
    """Names of the edges DARTS drops: every op but the identity."""
    names = set()
    for spec in cell_specs("cifar", 4, num_layers):
        nodes = genotype.reduce if spec.reduction else genotype.normal
        for j, node in enumerate(nodes):
            for op, source in node:
                stride = 2 if spec.reduction and source < 2 else 1
                if op != "skip_connect" or stride == 2:
                    names.add(
                        f"cell{spec.index}_node{j}_edge{source}_{op}_drop_path"
                    )
    return names


def _build_drop_path_model():
    model = build_child_network(SKIP_EDGES, drop_path=True, **SMALL)
    _randomize_bn(model)
    return model


@pytest.fixture(scope="module")
def drop_path_model():
    return _build_drop_path_model()


def test_drop_path_follows_every_non_identity_edge(drop_path_model):
    drops = [
        layer for layer in drop_path_model.layers if isinstance(layer, DropPath)
    ]
    # Normal cell: 2 of 4 edges; each reduction cell: 3 of 4 (the stride-2
    # skip_connect included, the stride-1 one from node 0 not).
    assert len(drops) == 2 + 3 + 3
    assert {d.name for d in drops} == _drop_path_names(SKIP_EDGES, 3)
    assert "cell1_node0_edge0_skip_connect_drop_path" in {d.name for d in drops}
    # Distinct seeds: every edge draws its own masks.
    assert len({d.seed for d in drops}) == len(drops)
    for layer in drops:
        assert float(keras.ops.convert_to_numpy(layer.rate)) == 0.0


def test_drop_path_leaves_the_other_layer_names_alone(drop_path_model):
    plain = build_child_network(SKIP_EDGES, **SMALL)
    # Same names; the functional graph may list them in another order, so
    # weights are copied by name, not with set_weights(get_weights()).
    assert sorted(layer.name for layer in plain.layers) == sorted(
        layer.name
        for layer in drop_path_model.layers
        if not isinstance(layer, DropPath)
    )


def test_copied_weights_give_the_same_inference_outputs():
    # Its own model: the training-mode calls below update BN statistics.
    drop_path_model = _build_drop_path_model()
    for layer in drop_path_model.layers:
        if isinstance(layer, DropPath):
            layer.rate.assign(0.2)
    plain = build_child_network(SKIP_EDGES, **SMALL)
    copy_weights_by_name(drop_path_model, plain)
    _assert_flat_builtin(plain, keras.layers)
    x = _images(size=8, seed=3)
    expected = drop_path_model(x, training=False)
    np.testing.assert_array_equal(plain(x, training=False), expected)
    # Training mode does drop: whole samples of some edges are zeroed.
    assert not np.allclose(
        drop_path_model(x, training=True), plain(x, training=True)
    )


def test_copy_weights_by_name_into_the_tf_keras_twin(drop_path_model):
    import tf_keras

    twin = build_child_network(SKIP_EDGES, layers=tf_keras.layers, **SMALL)
    copy_weights_by_name(drop_path_model, twin)
    x = _images(size=8, seed=4).astype("float32")
    np.testing.assert_allclose(
        twin(x, training=False),
        drop_path_model(x, training=False),
        rtol=1e-4,
        atol=1e-5,
    )


def test_copy_weights_by_name_checks_names_and_shapes(drop_path_model):
    with_aux = build_child_network(
        SKIP_EDGES, **dict(SMALL, image_size=32, auxiliary=True)
    )
    before = [w.copy() for w in with_aux.get_weights()]
    with pytest.raises(ValueError, match="'aux_conv1'.*no layer of that"):
        copy_weights_by_name(drop_path_model, with_aux)
    wider = build_child_network(SKIP_EDGES, **dict(SMALL, channels=6))
    with pytest.raises(ValueError, match="Layer 'stem_conv': weight shapes"):
        copy_weights_by_name(drop_path_model, wider)
    # Checked before copying: the failed target is untouched.
    for a, b in zip(before, with_aux.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_drop_path_needs_keras_3_layers():
    import tf_keras

    with pytest.raises(ValueError, match="drop_path=True needs layers="):
        build_child_network(
            SKIP_EDGES, layers=tf_keras.layers, drop_path=True, **SMALL
        )
