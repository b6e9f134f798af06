"""Loads the authors' PyTorch search-supernet weights into `SNASSupernet`.

The authors' code (SNAS-Series, commit 9a43adb) searches with
`model_search.Network`. `load_torch_search_state_dict` copies its
state_dict (a mapping of tensor name to array) into a built
`SNASSupernet` of the same width, cell count, classes and search space,
so that the two compute the same numbers (docs/parity.md §2). PyTorch is
not needed. Layouts as in `torch_import`: convolutions (O, I, kh, kw) ->
(kh, kw, I, O), depthwise (C, 1, k, k) -> (k, k, C, 1), Linear (out, in)
-> (in, out); BatchNorm weight, bias, running_mean, running_var -> gamma,
beta, moving_mean, moving_variance (the cells' BatchNorms are not affine
and have the statistics only). `normal_log_alpha` and `reduce_log_alpha`
(log α, in the state_dict of the reference's `--distributed` runs) go to
`arch_logits_normal` and `arch_logits_reduce`.

Op `k` of edge `j` of cell `i` is `cells.{i}._ops.{j}._ops.{k}`: the
edges node by node, the ops in `PRIMITIVES` order, as ours.
"""

import keras
import numpy as np

# The official submodule names of an op's weighted layers, in the order
# our op creates them (operations.py of the reference).
_OP_TENSORS = {
    "max_pool_3x3": ("op.1",),
    "avg_pool_3x3": ("op.1",),
    "skip_connect": ("conv_1", "conv_2", "bn"),  # stride 2: FactorizedReduce
    "sep_conv_3x3": ("op.1", "op.2", "op.3", "op.5", "op.6", "op.7"),
    "sep_conv_5x5": ("op.1", "op.2", "op.3", "op.5", "op.6", "op.7"),
    "dil_conv_3x3": ("op.1", "op.2", "op.3"),
    "dil_conv_5x5": ("op.1", "op.2", "op.3"),
}
_RELU_CONV_BN = ("op.1", "op.2")
_FACTORIZED_REDUCE = ("conv_1", "conv_2", "bn")
_ARCH = (
    ("normal_log_alpha", "arch_logits_normal"),
    ("reduce_log_alpha", "arch_logits_reduce"),
)


def _layer_tensors(name, layer):
    """(torch name, variable, axes) of one weighted layer."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [(f"{name}.weight", layer.kernel, (2, 3, 0, 1))]
    if isinstance(layer, keras.layers.Conv2D):
        return [(f"{name}.weight", layer.kernel, (2, 3, 1, 0))]
    if isinstance(layer, keras.layers.Dense):
        return [
            (f"{name}.weight", layer.kernel, (1, 0)),
            (f"{name}.bias", layer.bias, None),
        ]
    if isinstance(layer, keras.layers.BatchNormalization):
        out = []
        if layer.scale:
            out.append((f"{name}.weight", layer.gamma, None))
        if layer.center:
            out.append((f"{name}.bias", layer.beta, None))
        return out + [
            (f"{name}.running_mean", layer.moving_mean, None),
            (f"{name}.running_var", layer.moving_variance, None),
        ]
    raise ValueError(
        f"No official counterpart for layer {layer.name!r} "
        f"({type(layer).__name__}) of {name!r}."
    )


def _op_tensors(name, op, submodules):
    weighted = [layer for layer in op.layers if layer.weights]
    if len(weighted) != len(submodules):
        raise ValueError(
            f"Op {op.primitive!r} at {name!r} has {len(weighted)} weighted "
            f"layers; the official one has {len(submodules)} "
            f"({', '.join(submodules)})."
        )
    out = []
    for sub, layer in zip(submodules, weighted, strict=True):
        out += _layer_tensors(f"{name}.{sub}", layer)
    return out


def torch_search_tensor_map(model):
    """Where each official tensor goes in a built `SNASSupernet`.

    Returns:
        A list of `(torch_name, variable, axes)` in the order of the
        official state_dict; `axes` is the transpose from the PyTorch
        layout to ours, or None.

    Raises:
        ValueError: if the model is not built, or one of its ops has no
            official counterpart.
    """
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built; call "
            "model.build((None, H, W, 3)) first."
        )
    out = _layer_tensors("stem.0", model.stem_conv)
    out += _layer_tensors("stem.1", model.stem_bn)
    for i, cell in enumerate(model.cells):
        t = f"cells.{i}"
        pre0 = _FACTORIZED_REDUCE if cell.reduction_prev else _RELU_CONV_BN
        out += _op_tensors(f"{t}.preprocess0", cell._pre0, pre0)
        out += _op_tensors(f"{t}.preprocess1", cell._pre1, _RELU_CONV_BN)
        for j, edge in enumerate(cell.edges):
            for k, op in enumerate(edge._ops):
                if op is None or not op.layers:  # none, identity
                    continue
                names = _OP_TENSORS.get(op.primitive)
                if names is None:
                    raise ValueError(
                        f"Op {op.primitive!r} has no official counterpart; "
                        f"expected one of {tuple(_OP_TENSORS)}."
                    )
                out += _op_tensors(f"{t}._ops.{j}._ops.{k}", op, names)
    out += _layer_tensors("classifier", model.classifier)
    for torch_name, attribute in _ARCH:
        out.append((torch_name, getattr(model, attribute), None))
    return out


def _shape(shape):
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _listed(names):
    return f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"


def load_torch_search_state_dict(model, state_dict) -> None:
    """Copies an official `model_search.Network` state_dict into `model`.

    Every name and shape is checked before anything is set, so on error
    `model` is unchanged.

    Args:
        model: a built `SNASSupernet` with the official network's C, cell
            count, classes, 4 nodes and the 8 SNAS primitives in their
            order (BatchNorm statistics included).
        state_dict: mapping of official tensor name to array, with
            `normal_log_alpha` and `reduce_log_alpha` (the reference's
            single-GPU run keeps log α outside its state_dict: add them).

    Raises:
        ValueError: naming the first tensor that is missing or whose shape
            differs (with both shapes), and the count and first names of
            the missing and unused tensors.
    """
    entries = torch_search_tensor_map(model)
    arrays = {
        k: np.asarray(v)
        for k, v in state_dict.items()
        if not k.endswith("num_batches_tracked")
    }
    values, problems, missing = [], [], []
    for torch_name, variable, axes in entries:
        shape = tuple(variable.shape)
        torch_shape = (
            shape if axes is None else tuple(shape[a] for a in np.argsort(axes))
        )
        if torch_name not in arrays:
            missing.append(torch_name)
            problems.append(
                f"tensor {torch_name!r} {_shape(torch_shape)} for "
                f"{variable.path!r} is missing from the state_dict"
            )
            continue
        array = arrays[torch_name]
        if tuple(array.shape) != torch_shape:
            problems.append(
                f"tensor {torch_name!r} has shape {_shape(array.shape)} in "
                f"the state_dict; {variable.path!r} needs "
                f"{_shape(torch_shape)}"
            )
            continue
        values.append(
            (variable, array if axes is None else np.transpose(array, axes))
        )
    used = {e[0] for e in entries}
    unused = [k for k in arrays if k not in used]
    if problems or unused:
        first = (
            problems[0]
            if problems
            else (f"tensor {unused[0]!r} has no place in the model")
        )
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_listed(missing)})")
        if unused:
            parts.append(f"{len(unused)} unused ({_listed(unused)})")
        detail = f"; {', '.join(parts)}" if parts else ""
        raise ValueError(
            f"The state_dict does not fit model {model.name!r}: {first}"
            f"{detail}."
        )
    for variable, value in values:
        variable.assign(value.astype(variable.dtype))


__all__ = ["load_torch_search_state_dict", "torch_search_tensor_map"]
