"""Loads the authors' PyTorch child-network weights into our Keras child.

The authors' code (SNAS-Series, commit 9a43adb) retrains a derived cell
with `model_edge_all.NetworkCIFAR` / `NetworkImageNet` (SNAS `_edge_all`
genotypes: all 14 edges of a cell listed, `none` ones included) or with
`model.NetworkCIFAR` / `NetworkImageNet` (8-edge, DARTS-form genotypes).
`load_torch_state_dict` copies such a state_dict (a mapping of tensor name
to array; torch tensors convert with `numpy()`) into a model from
`build_child_network`, so that the two compute the same numbers
(docs/parity.md §1). PyTorch is not needed: the arrays are only
transposed.

- convolutions (O, I, kh, kw) -> (kh, kw, I, O); depthwise (C, 1, k, k)
  -> (k, k, C, 1); Linear (out, in) -> Dense (in, out);
- BatchNorm weight, bias, running_mean, running_var -> gamma, beta,
  moving_mean, moving_variance (`num_batches_tracked` has no counterpart
  and is skipped).

Which official tensor goes where depends on the edge order of the
official genotype (the `_ops.{j}` index of a tensor is the edge's position
in the official list), so the official edge lists are an argument;
`genotype_from_torch` turns them into our `Genotype` to build the model.
"""

import re

import numpy as np

from snas_tf.genotype import Genotype
from snas_tf.models.child_network import LAYOUTS
from snas_tf.search_space import NUM_CELL_INPUTS, reduction_cells

# Official module per layout, for messages.
_MODULES = {"edge_all": "model_edge_all", "darts": "model"}
_NUM_NODES = 4
_NONE = "none"
_POOLS = ("max_pool_3x3", "avg_pool_3x3")
_SEP = ("sep_conv_3x3", "sep_conv_5x5")
_DIL = ("dil_conv_3x3", "dil_conv_5x5")
_OPS = (_NONE, *_POOLS, "skip_connect", *_SEP, *_DIL)
_CELL_LAYER = re.compile(r"cell(\d+)_pre1_conv$")


def _check_layout(layout):
    if layout not in LAYOUTS:
        raise ValueError(
            f"Unknown layout {layout!r}. Expected one of {LAYOUTS}."
        )


def _cell_edges(torch_genotype, cell):
    """The official (op, source) list of one cell type."""
    if isinstance(torch_genotype, dict):
        edges = torch_genotype.get(cell)
    else:
        edges = getattr(torch_genotype, cell, None)
    if edges is None:
        raise ValueError(
            f"torch_genotype has no {cell!r} edge list; expected an object "
            "or dict with 'normal' and 'reduce' lists of (op, source)."
        )
    return [(str(op), int(source)) for op, source in edges]


def _edge_nodes(edges, layout, cell):
    """(node, op, source) per official edge, in the official order."""
    if layout == "edge_all":
        expected = sum(NUM_CELL_INPUTS + k for k in range(_NUM_NODES))
        nodes = [k for k in range(_NUM_NODES) for _ in range(k + 2)]
    else:
        expected = 2 * _NUM_NODES
        nodes = [k for k in range(_NUM_NODES) for _ in range(2)]
    if len(edges) != expected:
        raise ValueError(
            f"The {cell} cell has {len(edges)} edges; layout {layout!r} "
            f"({_MODULES[layout]}.py) expects {expected}."
        )
    out = []
    for node, (op, source) in zip(nodes, edges, strict=True):
        if op not in _OPS:
            raise ValueError(
                f"Unknown op {op!r} in the {cell} cell. Expected one of {_OPS}."
            )
        if not 0 <= source < NUM_CELL_INPUTS + node:
            raise ValueError(
                f"Input index {source} out of range for {cell} node {node}; "
                f"expected 0..{NUM_CELL_INPUTS + node - 1}."
            )
        out.append((node, op, source))
    return out


def genotype_from_torch(torch_genotype, layout: str = "edge_all") -> Genotype:
    """Our `Genotype` of an official genotype: `none` edges dropped.

    Args:
        torch_genotype: an official `Genotype` namedtuple, or anything with
            `normal` and `reduce` lists of `(op, source)` (attributes or
            dict keys); the `*_concat` fields are ignored (every node is
            concatenated, as in all published cells).
        layout: `"edge_all"` (model_edge_all.py: 14 edges per cell, node
            by node) or `"darts"` (model.py: 2 edges per node).

    Raises:
        ValueError: on an unknown layout or op, a wrong edge count, or an
            input index out of range.
    """
    _check_layout(layout)
    cells = {}
    for cell in ("normal", "reduce"):
        nodes = [[] for _ in range(_NUM_NODES)]
        edges = _cell_edges(torch_genotype, cell)
        for node, op, source in _edge_nodes(edges, layout, cell):
            if op != _NONE:
                nodes[node].append((op, source))
        cells[cell] = nodes
    return Genotype(**cells)


def _conv(torch_name, layer):
    return [(f"{torch_name}.weight", layer, 0, (2, 3, 1, 0))]


def _depthwise(torch_name, layer):
    return [(f"{torch_name}.weight", layer, 0, (2, 3, 0, 1))]


def _bn(torch_name, layer):
    names = ("weight", "bias", "running_mean", "running_var")
    return [(f"{torch_name}.{n}", layer, k, None) for k, n in enumerate(names)]


def _dense(torch_name, layer):
    return [
        (f"{torch_name}.weight", layer, 0, (1, 0)),
        (f"{torch_name}.bias", layer, 1, None),
    ]


def _factorized_reduce(torch_name, layer):
    return (
        _conv(f"{torch_name}.conv_1", f"{layer}_conv_1")
        + _conv(f"{torch_name}.conv_2", f"{layer}_conv_2")
        + _bn(f"{torch_name}.bn", f"{layer}_bn")
    )


def _edge(torch_name, layer, op, stride):
    if op in _POOLS:
        return _bn(f"{torch_name}.op.1", f"{layer}_bn")
    if op == "skip_connect":
        return _factorized_reduce(torch_name, layer) if stride == 2 else []
    if op in _SEP:
        out = []
        for i, base in ((1, 1), (2, 5)):
            out += _depthwise(f"{torch_name}.op.{base}", f"{layer}_dw{i}")
            out += _conv(f"{torch_name}.op.{base + 1}", f"{layer}_pw{i}")
            out += _bn(f"{torch_name}.op.{base + 2}", f"{layer}_bn{i}")
        return out
    return (
        _depthwise(f"{torch_name}.op.1", f"{layer}_dw")
        + _conv(f"{torch_name}.op.2", f"{layer}_pw")
        + _bn(f"{torch_name}.op.3", f"{layer}_bn")
    )


def _network_of(names):
    if "stem_conv" in names:
        return "cifar"
    if "stem0_1_conv" in names:
        return "imagenet"
    raise ValueError(
        "The model has neither 'stem_conv' (cifar) nor 'stem0_1_conv' "
        "(imagenet); expected a model from build_child_network."
    )


def torch_tensor_map(model, torch_genotype, layout: str = "edge_all"):
    """Where each official tensor goes in `model`.

    Returns:
        A list of `(torch_name, keras_layer_name, weight_index, axes)`, in
        the order of the official state_dict; `axes` is the transpose from
        the PyTorch layout to the Keras one, or None.

    Raises:
        ValueError: as `genotype_from_torch`, or if `model` is not a child
            network.
    """
    _check_layout(layout)
    names = {layer.name for layer in model.layers}
    network = _network_of(names)
    num_layers = 1 + max(
        (int(m.group(1)) for m in map(_CELL_LAYER.match, names) if m),
        default=-1,
    )
    cells = {
        cell: _edge_nodes(_cell_edges(torch_genotype, cell), layout, cell)
        for cell in ("normal", "reduce")
    }
    if network == "cifar":
        out = _conv("stem.0", "stem_conv") + _bn("stem.1", "stem_bn")
    else:
        out = (
            _conv("stem0.0", "stem0_1_conv")
            + _bn("stem0.1", "stem0_1_bn")
            + _conv("stem0.3", "stem0_2_conv")
            + _bn("stem0.4", "stem0_2_bn")
            + _conv("stem1.1", "stem1_conv")
            + _bn("stem1.2", "stem1_bn")
        )
    reductions = reduction_cells(num_layers)
    reduction_prev = network == "imagenet"
    for i in range(num_layers):
        reduction = i in reductions
        t = f"cells.{i}"
        if reduction_prev:
            out += _factorized_reduce(f"{t}.preprocess0", f"cell{i}_pre0")
        else:
            out += _conv(f"{t}.preprocess0.op.1", f"cell{i}_pre0_conv")
            out += _bn(f"{t}.preprocess0.op.2", f"cell{i}_pre0_bn")
        out += _conv(f"{t}.preprocess1.op.1", f"cell{i}_pre1_conv")
        out += _bn(f"{t}.preprocess1.op.2", f"cell{i}_pre1_bn")
        edges = cells["reduce" if reduction else "normal"]
        for j, (node, op, source) in enumerate(edges):
            if op == _NONE:
                continue
            stride = 2 if reduction and source < NUM_CELL_INPUTS else 1
            layer = f"cell{i}_node{node}_edge{source}_{op}"
            out += _edge(f"{t}._ops.{j}", layer, op, stride)
        reduction_prev = reduction
    if "aux_conv1" in names:
        a = "auxiliary_head"
        out += _conv(f"{a}.features.2", "aux_conv1")
        out += _bn(f"{a}.features.3", "aux_bn1")
        out += _conv(f"{a}.features.5", "aux_conv2")
        if network == "cifar" or layout == "darts":
            # model.py's ImageNet head keeps BatchNorm2d(768);
            # model_edge_all.py's does not: build_child_network(layout=).
            out += _bn(f"{a}.features.6", "aux_bn2")
        out += _dense(f"{a}.classifier", "aux_classifier")
    return out + _dense("classifier", "classifier")


def _shape(shape):
    return "(" + ", ".join(str(d) for d in shape) + ")"


def load_torch_state_dict(
    model, state_dict, torch_genotype, layout: str = "edge_all"
) -> None:
    """Copies an official child network's state_dict into `model`.

    Every name and shape is checked before anything is set, so on error
    `model` is unchanged.

    Args:
        model: a model from `build_child_network` for the same genotype
            (`genotype_from_torch(torch_genotype, layout)`), network,
            channels, cell count, class count and `layout`; with the
            auxiliary head if the state_dict has one.
        state_dict: mapping of official tensor name to array (torch
            tensors: `{k: v.numpy() for k, v in sd.items()}`).
        torch_genotype: the official genotype the network was built with
            (its `normal` and `reduce` edge lists, in the official order).
        layout: `"edge_all"` (model_edge_all.py) or `"darts"` (model.py).

    Raises:
        ValueError: naming the first tensor whose shape differs (with both
            shapes) or that is missing, and the count and first names of
            the missing and unused tensors; or naming a model layer that
            no tensor fills.
    """
    entries = torch_tensor_map(model, torch_genotype, layout)
    layers = {layer.name: layer for layer in model.layers}
    arrays = {
        k: np.asarray(v)
        for k, v in state_dict.items()
        if not k.endswith("num_batches_tracked")
    }
    values = {}
    problems, missing = [], []
    for torch_name, layer_name, index, axes in entries:
        layer = layers.get(layer_name)
        if layer is None or index >= len(layer.weights):
            problems.append(
                f"tensor {torch_name!r} has no place in the model (no layer "
                f"{layer_name!r} with weight {index}); is the model built "
                f"for the same genotype and layout ({_MODULES[layout]}.py)?"
            )
            continue
        weight = layer.weights[index]
        keras_shape = tuple(weight.shape)
        torch_shape = (
            keras_shape
            if axes is None
            else tuple(keras_shape[a] for a in np.argsort(axes))
        )
        if torch_name not in arrays:
            missing.append(torch_name)
            problems.append(
                f"tensor {torch_name!r} {_shape(torch_shape)} for layer "
                f"{layer_name!r} is missing from the state_dict"
            )
            continue
        array = arrays[torch_name]
        if tuple(array.shape) != torch_shape:
            problems.append(
                f"tensor {torch_name!r} has shape {_shape(array.shape)} in "
                f"the state_dict; layer {layer_name!r} needs "
                f"{_shape(torch_shape)}"
            )
            continue
        values[(layer_name, index)] = (
            array if axes is None else np.transpose(array, axes)
        )
    used = {e[0] for e in entries}
    unused = [k for k in arrays if k not in used]
    unfilled = [
        f"{layer.name}[{k}]"
        for layer in model.layers
        for k in range(len(layer.weights))
        if layer.weights and (layer.name, k) not in values
    ]
    if problems or unused or unfilled:
        first = problems[0] if problems else None
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} missing ({', '.join(missing[:3])}"
                f"{', ...' if len(missing) > 3 else ''})"
            )
        if unused:
            parts.append(
                f"{len(unused)} unused ({', '.join(unused[:3])}"
                f"{', ...' if len(unused) > 3 else ''})"
            )
        if first is None and unused:
            first = f"tensor {unused[0]!r} has no place in the model"
        if first is None:
            first = (
                f"model weight {unfilled[0]} gets no tensor from the "
                f"state_dict ({len(unfilled)} in all)"
            )
        detail = f"; {', '.join(parts)}" if parts else ""
        raise ValueError(
            f"The state_dict does not fit model {model.name!r}: {first}"
            f"{detail}."
        )
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(
                [values[(layer.name, k)] for k in range(len(layer.weights))]
            )


__all__ = [
    "LAYOUTS",
    "genotype_from_torch",
    "load_torch_state_dict",
    "torch_tensor_map",
]
