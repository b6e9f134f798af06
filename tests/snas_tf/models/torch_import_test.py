"""The official state_dict converter checks every name and shape.

The numbers themselves are checked against the authors' code in
tests/reference/child_parity_test.py; here state_dicts are made from the
converter's own tensor map, so no fixture and no PyTorch is needed.
"""

import numpy as np
import pytest

from snas_tf.models.child_network import build_child_network
from snas_tf.models.torch_import import (
    genotype_from_torch,
    load_torch_state_dict,
    torch_tensor_map,
)

# SNAS_aggressive_edge_all of the authors' genotypes.py (official order).
AGGRESSIVE = {
    "normal": [
        ("sep_conv_5x5", 0),
        ("skip_connect", 1),
        ("skip_connect", 0),
        ("skip_connect", 1),
        ("none", 2),
        ("dil_conv_5x5", 1),
        ("skip_connect", 0),
        ("none", 2),
        ("none", 3),
        ("skip_connect", 0),
        ("dil_conv_5x5", 1),
        ("none", 2),
        ("none", 3),
        ("none", 4),
    ],
    "reduce": [("sep_conv_5x5", 0), ("none", 1), ("sep_conv_5x5", 0)]
    + [("none", s) for s in (1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4)],
}
# A DARTS-form (model.py) genotype: two edges per node.
DARTS_FORM = {
    "normal": [
        ("sep_conv_3x3", 0),
        ("skip_connect", 1),
        ("dil_conv_3x3", 1),
        ("none", 2),
        ("avg_pool_3x3", 0),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("sep_conv_5x5", 3),
    ],
    "reduce": [
        ("max_pool_3x3", 0),
        ("sep_conv_3x3", 1),
        ("skip_connect", 2),
        ("dil_conv_5x5", 0),
        ("avg_pool_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 3),
        ("none", 1),
    ],
}


def _model(torch_genotype=AGGRESSIVE, layout="edge_all", **kwargs):
    args = dict(channels=4, num_layers=4, num_classes=5, image_size=32)
    args.update(kwargs)
    return build_child_network(
        genotype_from_torch(torch_genotype, layout), **args
    )


def _state_dict(model, torch_genotype=AGGRESSIVE, layout="edge_all"):
    """A state_dict of the official layout with distinct values."""
    rng = np.random.default_rng(0)
    out = {}
    for name, layer, index, axes in torch_tensor_map(
        model, torch_genotype, layout
    ):
        shape = tuple(model.get_layer(layer).weights[index].shape)
        if axes is not None:
            shape = tuple(shape[a] for a in np.argsort(axes))
        out[name] = rng.standard_normal(shape).astype(np.float32)
    return out


def test_genotype_from_torch_drops_none_and_keeps_order():
    genotype = genotype_from_torch(AGGRESSIVE)
    # Node 2 lists source 1 before 0 in the official order; kept.
    assert genotype.normal[2] == (("dil_conv_5x5", 1), ("skip_connect", 0))
    assert genotype.reduce == (
        (("sep_conv_5x5", 0),),
        (("sep_conv_5x5", 0),),
        (),
        (),
    )
    darts = genotype_from_torch(DARTS_FORM, "darts")
    assert darts.normal[1] == (("dil_conv_3x3", 1),)


def test_names_and_layouts_of_the_official_code():
    model = _model()
    names = [e[0] for e in torch_tensor_map(model, AGGRESSIVE)]
    assert names[:2] == ["stem.0.weight", "stem.1.weight"]
    # Cell 1 is a reduction cell after a normal one; cell 2 follows it.
    assert "cells.1._ops.2.op.5.weight" in names  # second depthwise
    assert "cells.2.preprocess0.conv_2.weight" in names
    assert "auxiliary_head.features.6.running_var" in names
    assert names[-2:] == ["classifier.weight", "classifier.bias"]
    assert len(names) == len(set(names))


def test_load_transposes_every_kind_of_tensor():
    model = _model()
    state = _state_dict(model)
    load_torch_state_dict(model, state, AGGRESSIVE)
    conv = model.get_layer("stem_conv").kernel.numpy()
    np.testing.assert_array_equal(
        conv, state["stem.0.weight"].transpose(2, 3, 1, 0)
    )
    dw = model.get_layer("cell0_node0_edge0_sep_conv_5x5_dw1")
    np.testing.assert_array_equal(
        dw.weights[0].numpy(),
        state["cells.0._ops.0.op.1.weight"].transpose(2, 3, 0, 1),
    )
    dense = model.get_layer("classifier")
    np.testing.assert_array_equal(
        dense.kernel.numpy(), state["classifier.weight"].T
    )
    bn = model.get_layer("aux_bn2")
    for weight, name in zip(
        bn.weights,
        ("weight", "bias", "running_mean", "running_var"),
        strict=True,
    ):
        np.testing.assert_array_equal(
            weight.numpy(), state[f"auxiliary_head.features.6.{name}"]
        )


def test_darts_layout_loads():
    model = _model(DARTS_FORM, "darts")
    state = _state_dict(model, DARTS_FORM, "darts")
    assert "cells.0._ops.7.op.6.weight" in state  # sep_conv_5x5(3), node 3
    load_torch_state_dict(model, state, DARTS_FORM, "darts")


def test_another_width_names_the_first_tensor_and_both_shapes():
    state = _state_dict(_model(channels=6))
    model = _model()
    before = [w.numpy() for w in model.weights]
    with pytest.raises(
        ValueError,
        match=r"tensor 'stem\.0\.weight' has shape \(18, 3, 3, 3\) in the "
        r"state_dict; layer 'stem_conv' needs \(12, 3, 3, 3\)",
    ):
        load_torch_state_dict(model, state, AGGRESSIVE)
    for w, b in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), b)


def test_another_class_count_names_the_classifier():
    state = _state_dict(_model(num_classes=10))
    with pytest.raises(ValueError, match=r"auxiliary_head\.classifier\.weight"):
        load_torch_state_dict(_model(), state, AGGRESSIVE)


def test_more_cells_are_named_unused():
    # 6 and 7 cells have the same reduction cells (2 and 4) and aux head.
    state = _state_dict(_model(num_layers=7))
    with pytest.raises(
        ValueError, match=r"model 'child_cifar': tensor 'cells\.6\..*unused"
    ):
        load_torch_state_dict(_model(num_layers=6), state, AGGRESSIVE)


def test_fewer_cells_are_named_missing():
    state = _state_dict(_model(num_layers=6))
    with pytest.raises(
        ValueError,
        match=r"tensor 'cells\.6\.preprocess0\.op\.1\.weight' \(16, 64, 1, 1\)"
        r" for layer 'cell6_pre0_conv' is missing.*\d+ missing",
    ):
        load_torch_state_dict(_model(num_layers=7), state, AGGRESSIVE)


def test_another_genotype_names_the_tensor_without_a_place():
    other = {"normal": DARTS_FORM["normal"], "reduce": DARTS_FORM["reduce"]}
    model = _model()
    with pytest.raises(ValueError, match="has no place in the model"):
        load_torch_state_dict(
            model,
            _state_dict(_model(other, "darts"), other, "darts"),
            other,
            "darts",
        )


@pytest.mark.parametrize(
    "torch_genotype, layout, match",
    [
        (
            AGGRESSIVE,
            "model",
            r"Unknown layout 'model'.*\('edge_all', 'darts'\)",
        ),
        (AGGRESSIVE, "darts", r"normal cell has 14 edges; layout 'darts'"),
        (
            {"normal": AGGRESSIVE["normal"]},
            "edge_all",
            "no 'reduce' edge list",
        ),
        (
            {**AGGRESSIVE, "normal": [("sep_conv_7x7", 0)] * 14},
            "edge_all",
            "Unknown op 'sep_conv_7x7'",
        ),
    ],
)
def test_bad_genotypes_are_named(torch_genotype, layout, match):
    with pytest.raises(ValueError, match=match):
        genotype_from_torch(torch_genotype, layout)


@pytest.mark.parametrize("layout", ["edge_all", "darts"])
def test_imagenet_aux_head_batch_norm_follows_the_layout(layout):
    # model.py's AuxiliaryHeadImageNet keeps BatchNorm2d(768) after the
    # 768-channel conv; model_edge_all.py's does not.
    torch_genotype = AGGRESSIVE if layout == "edge_all" else DARTS_FORM
    model = build_child_network(
        genotype_from_torch(torch_genotype, layout),
        network="imagenet",
        channels=4,
        num_layers=4,
        num_classes=5,
        image_size=224,
        layout=layout,
    )
    has_bn = layout == "darts"
    assert ("aux_bn2" in {layer.name for layer in model.layers}) == has_bn
    tensors = [e[0] for e in torch_tensor_map(model, torch_genotype, layout)]
    assert ("auxiliary_head.features.6.weight" in tensors) == has_bn
    assert tensors[:2] == ["stem0.0.weight", "stem0.1.weight"]
    assert "cells.0.preprocess0.conv_1.weight" in tensors
    state = _state_dict(model, torch_genotype, layout)
    load_torch_state_dict(model, state, torch_genotype, layout)


def test_unknown_child_layout_is_named():
    with pytest.raises(
        ValueError, match=r"Unknown layout 'model'.*\('edge_all', 'darts'\)"
    ):
        build_child_network("SNAS_mild", layout="model")
