"""The search-supernet weight converter: every name, shape and layout.

The numbers themselves are checked against the authors' code in
tests/reference/supernet_parity_test.py (docs/parity.md §2); here a
synthetic state_dict in the official layout goes in and comes back."""

import keras
import numpy as np
import pytest

from snas_tf.models.snas_supernet import SNASSupernet
from snas_tf.models.torch_search_import import (
    load_torch_search_state_dict,
    torch_search_tensor_map,
)

DepthwiseConv = keras.layers.DepthwiseConv2D


@pytest.fixture(scope="module")
def model():
    # Reductions at cells 1 and 2: stride-2 edges, a FactorizedReduce
    # preprocess, and one of each cell type.
    model = SNASSupernet(num_classes=3, channels=4, num_cells=3, seed=0)
    model.build((None, 8, 8, 3))
    return model


def _official_state(model, seed=0):
    """A random state_dict in the official names and layouts."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, variable, axes in torch_search_tensor_map(model):
        shape = tuple(variable.shape)
        if axes is not None:
            shape = tuple(shape[a] for a in np.argsort(axes))
        out[name] = rng.normal(size=shape).astype("float32")
    return out


def test_names_follow_the_official_modules(model):
    names = [name for name, _, _ in torch_search_tensor_map(model)]
    assert len(names) == len(set(names))
    for name in (
        "stem.0.weight",
        "stem.1.weight",
        "stem.1.running_var",
        "cells.0.preprocess0.op.1.weight",
        "cells.2.preprocess0.conv_2.weight",  # after a reduction
        "cells.1._ops.0._ops.3.conv_1.weight",  # stride-2 skip_connect
        "cells.0._ops.13._ops.5.op.5.weight",  # sep_conv_5x5's 2nd dw
        "cells.0._ops.4._ops.7.op.3.running_mean",
        "cells.1._ops.1._ops.1.op.1.running_var",  # max pool's BN
        "classifier.weight",
        "normal_log_alpha",
        "reduce_log_alpha",
    ):
        assert name in names, name
    # The cells' BatchNorms are not affine: statistics only.
    assert "cells.0.preprocess1.op.2.weight" not in names
    filled = {id(v) for _, v, _ in torch_search_tensor_map(model)}
    left = [w.path for w in model.weights if id(w) not in filled]
    assert left == [model.temperature.path]


def test_round_trip_in_keras_layouts(model):
    state = _official_state(model)
    load_torch_search_state_dict(model, state)
    np.testing.assert_array_equal(
        model.stem_conv.kernel.numpy(),
        np.transpose(state["stem.0.weight"], (2, 3, 1, 0)),
    )
    sep_conv = model.cells[0].edges[0]._ops[4]
    dw = next(la for la in sep_conv.layers if isinstance(la, DepthwiseConv))
    np.testing.assert_array_equal(
        dw.kernel.numpy(),
        np.transpose(state["cells.0._ops.0._ops.4.op.1.weight"], (2, 3, 0, 1)),
    )
    np.testing.assert_array_equal(
        model.classifier.kernel.numpy(), state["classifier.weight"].T
    )
    np.testing.assert_array_equal(
        model.arch_logits_reduce.numpy(), state["reduce_log_alpha"]
    )


def test_wrong_shape_names_the_tensor_and_changes_nothing(model):
    state = _official_state(model, seed=1)
    before = model.stem_conv.kernel.numpy()
    state["cells.1._ops.0._ops.3.conv_2.weight"] = np.zeros((2, 9, 1, 1))
    with pytest.raises(
        ValueError,
        match=r"'cells.1._ops.0._ops.3.conv_2.weight' has shape "
        r"\(2, 9, 1, 1\) in the state_dict; .* needs \(4, 8, 1, 1\)",
    ):
        load_torch_search_state_dict(model, state)
    np.testing.assert_array_equal(model.stem_conv.kernel.numpy(), before)


def test_missing_and_unused_tensors_are_named(model):
    state = _official_state(model)
    del state["normal_log_alpha"]
    state["auxiliary_head.classifier.weight"] = np.zeros((3, 4))
    with pytest.raises(
        ValueError,
        match=r"'normal_log_alpha' \(14, 8\) .* missing .* 1 unused "
        r"\(auxiliary_head.classifier.weight\)",
    ):
        load_torch_search_state_dict(model, state)


def test_unbuilt_model_is_refused():
    with pytest.raises(ValueError, match="not built"):
        torch_search_tensor_map(SNASSupernet(num_classes=3, num_cells=1))
