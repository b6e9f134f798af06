"""Child networks of a derived genotype, as flat functional Keras models.

The retrained network of SNAS §3.2-3.3 is DARTS's `NetworkCIFAR` /
`NetworkImageNet` [C model_edge_all.py] with the SNAS op set (a BatchNorm
after every pool). Here it is one flat functional model of built-in layers:
no custom layer and no nested model, so SavedModel, TFLite, tf2onnx and
TFMOT take it as is. `layers=tf_keras.layers` builds the Keras 2 twin (for
TFMOT) with the same layer names in the same order.

Layer names are deterministic: `stem_*`, `cell{i}_pre{0,1}_*`,
`cell{i}_node{j}_edge{source}_{op}_*`, `cell{i}_node{j}_add`,
`cell{i}_node{j}_zeros_*` (a node without edges), `cell{i}_concat`,
`global_pool`, `classifier`, and `aux_*` for the auxiliary head.

`drop_path=True` (retraining only) puts a `DropPath` layer named
`{edge}_drop_path` after every edge op but the identity. Every other name
is unchanged, so `copy_weights_by_name` moves the trained weights into a
`drop_path=False` build for export, which keeps no custom layer.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §3.2-3.3 and App. G [P]; the authors' model_edge_all.py [C], itself
    DARTS's model.py (Liu et al., ICLR 2019).
"""

import dataclasses
import importlib
import math
import zlib

import keras

from snas_tf.genotype import Genotype, get_genotype
from snas_tf.layers.drop_path import DropPath
from snas_tf.ops import (
    batch_norm,
    build_op,
    factorized_reduce,
    relu_conv_bn,
    strided_padding,
)
from snas_tf.search_space import NUM_CELL_INPUTS, reduction_cells

NETWORKS = ("cifar", "imagenet")
# The authors' retraining networks: model_edge_all.py (SNAS genotypes) and
# model.py (DARTS form). They differ only in the ImageNet auxiliary head.
LAYOUTS = ("edge_all", "darts")
# DARTS model.py: the CIFAR stem has 3C channels.
STEM_MULTIPLIER = 3
# DARTS AuxiliaryHead{CIFAR,ImageNet}: 5x5 average pool, stride 3 / 2.
_AUX_POOL_STRIDE = {"cifar": 3, "imagenet": 2}


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """Where one cell sits in the child network.

    Attributes:
        index: position of the cell, 0-based.
        channels: C of the cell (its output has `num_nodes * C` channels).
        reduction: whether the cell halves the resolution.
        reduction_prev: whether the cell's c_{k-2} input has twice the
            resolution of c_{k-1} (then preprocess0 is a FactorizedReduce).
    """

    index: int
    channels: int
    reduction: bool
    reduction_prev: bool


def cell_specs(network: str, channels: int, num_layers: int) -> tuple:
    """Lays out the cells as DARTS's NetworkCIFAR / NetworkImageNet do.

    Channels double at the reduction cells L//3 and 2L//3. The ImageNet
    stem1 already halves the resolution, so its first cell starts with
    `reduction_prev=True`.

    Returns:
        A tuple of `CellSpec`, one per cell.
    """
    reductions = reduction_cells(num_layers)
    reduction_prev = network == "imagenet"
    specs = []
    for i in range(num_layers):
        reduction = i in reductions
        if reduction:
            channels *= 2
        specs.append(CellSpec(i, channels, reduction, reduction_prev))
        reduction_prev = reduction
    return tuple(specs)


def _model_class(layers):
    # `keras.layers` -> keras.Model, `tf_keras.layers` -> tf_keras.Model.
    return importlib.import_module(layers.__name__.split(".")[0]).Model


def node_zeros(x, stride, name, layers):
    """Zeros shaped like a node computed from `x` with `stride`: no math.

    A node without incoming edges (SNAS edge_all: every edge's argmax is
    `none`) is zeros [C operations.Zero: `x[:, ::s, ::s].mul(0.)`]. A
    zero-multiply would still cost a multiply per element and keep a data
    dependence; here the zeros are pure data movement from built-in layers
    that every exporter maps to Slice / Pad: keep one row of `x` at the
    output width (Cropping2D), pad `out_h` zero rows above it
    (ZeroPadding2D), crop the data row away (Cropping2D). Every
    intermediate is about the output's size and none is empty.
    """
    h, w = x.shape[1], x.shape[2]
    out_h, out_w = math.ceil(h / stride), math.ceil(w / stride)
    x = layers.Cropping2D(((0, h - 1), (0, w - out_w)), name=f"{name}_take")(x)
    x = layers.ZeroPadding2D(((out_h, 0), (0, 0)), name=f"{name}_pad")(x)
    return layers.Cropping2D(((0, 1), (0, 0)), name=f"{name}_crop")(x)


def _drop_path(name):
    """A `DropPath` at rate 0 (set by `DropPathScheduler`), seeded from its
    name so that every edge draws its own masks, reproducibly."""
    return DropPath(seed=zlib.crc32(name.encode()) % 2**31, name=name)


def _cell(s0, s1, nodes, spec: CellSpec, layers, drop_path=False):
    """One child cell [C model_edge_all.Cell]: preprocess, nodes, concat.

    With `drop_path`, a `DropPath` follows every edge op but the identity
    (DARTS model.py: `if not isinstance(op, Identity)`); a stride-2
    `skip_connect` is a FactorizedReduce and gets one.
    """
    i, c = spec.index, spec.channels
    if spec.reduction_prev:
        pre0 = factorized_reduce(c, True, f"cell{i}_pre0", layers)
    else:
        pre0 = relu_conv_bn(c, 1, 1, True, f"cell{i}_pre0", layers)
    states = [
        pre0(s0),
        relu_conv_bn(c, 1, 1, True, f"cell{i}_pre1", layers)(s1),
    ]
    for j, node in enumerate(nodes):
        prefix = f"cell{i}_node{j}"
        branches = []
        for op_name, source in node:
            # Edges leaving the cell inputs of a reduction cell have stride 2.
            stride = 2 if spec.reduction and source < NUM_CELL_INPUTS else 1
            edge = f"{prefix}_edge{source}_{op_name}"
            op = build_op(
                op_name, c, stride, affine=True, name=edge, layers=layers
            )
            x = op(states[source])
            if drop_path and not op.is_identity:
                x = _drop_path(f"{edge}_drop_path")(x)
            branches.append(x)
        if not branches:
            stride = 2 if spec.reduction else 1
            states.append(
                node_zeros(states[1], stride, f"{prefix}_zeros", layers)
            )
        elif len(branches) == 1:
            states.append(branches[0])
        else:
            states.append(layers.Add(name=f"{prefix}_add")(branches))
    outputs = states[NUM_CELL_INPUTS:]
    if len(outputs) == 1:
        return outputs[0]
    return layers.Concatenate(axis=-1, name=f"cell{i}_concat")(outputs)


def _conv_bn(x, filters, stride, name, layers):
    """3x3 convolution (no bias) and BatchNorm, as in the DARTS stems; a
    stride-2 one padded symmetrically, as PyTorch does."""
    if stride == 2:
        x = strided_padding(3, f"{name}_pad", layers)(x)
    x = layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding="valid" if stride == 2 else "same",
        use_bias=False,
        name=f"{name}_conv",
    )(x)
    return batch_norm(True, f"{name}_bn", layers)(x)


def stem(images, network: str, channels: int, layers):
    """Returns (s0, s1), the first two cell inputs."""
    if network == "cifar":
        # NetworkCIFAR: 3x3 conv to 3C + BN; both cell inputs are its output.
        x = _conv_bn(images, STEM_MULTIPLIER * channels, 1, "stem", layers)
        return x, x
    # NetworkImageNet: three stride-2 3x3 convs (C/2, C, C); s0 is stem0's
    # output at 1/4 resolution, s1 is stem1's at 1/8.
    x = _conv_bn(images, channels // 2, 2, "stem0_1", layers)
    x = layers.ReLU(name="stem0_relu")(x)
    s0 = _conv_bn(x, channels, 2, "stem0_2", layers)
    x = layers.ReLU(name="stem1_relu")(s0)
    return s0, _conv_bn(x, channels, 2, "stem1", layers)


def classifier_head(x, num_classes: int, layers):
    """Global average pooling and the dense classifier: the logits.

    NetworkImageNet's AvgPool2d(7) on the final 7x7 map (224 input) is a
    global average; GlobalAveragePooling2D also holds at other sizes.
    """
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    return layers.Dense(num_classes, name="classifier")(x)


def _auxiliary_head(x, network: str, num_classes: int, layout, layers):
    """DARTS AuxiliaryHead{CIFAR,ImageNet}: logits from cell 2L//3."""
    stride = _AUX_POOL_STRIDE[network]
    x = layers.ReLU(name="aux_relu1")(x)
    # Valid padding: count_include_pad=False has nothing to exclude.
    x = layers.AveragePooling2D(5, strides=stride, name="aux_pool")(x)
    x = layers.Conv2D(128, 1, use_bias=False, name="aux_conv1")(x)
    x = batch_norm(True, "aux_bn1", layers)(x)
    x = layers.ReLU(name="aux_relu2")(x)
    x = layers.Conv2D(768, 2, use_bias=False, name="aux_conv2")(x)
    if network == "cifar" or layout == "darts":
        # DARTS left this BN out of the ImageNet head ("omitted ... due to a
        # typo", kept out for consistency with its experiments), and so
        # does the authors' model_edge_all.py; their model.py keeps it
        # (docs/decisions.md).
        x = batch_norm(True, "aux_bn2", layers)(x)
    x = layers.ReLU(name="aux_relu3")(x)
    x = layers.Flatten(name="aux_flatten")(x)
    return layers.Dense(num_classes, name="aux_classifier")(x)


def _check_args(network, num_classes, channels, num_layers, image_size, layout):
    if network not in NETWORKS:
        raise ValueError(
            f"Unknown network {network!r}. Expected one of {NETWORKS}."
        )
    if layout not in LAYOUTS:
        raise ValueError(
            f"Unknown layout {layout!r}. Expected one of {LAYOUTS}."
        )
    for arg, value in (
        ("num_classes", num_classes),
        ("channels", channels),
        ("num_layers", num_layers),
        ("image_size", image_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}.")
    if channels % 2:
        # FactorizedReduce and the ImageNet stem split C in halves.
        raise ValueError(f"channels must be even, got {channels}.")


def _check_aux_input(network: str, image_size: int, num_layers: int):
    """Checks, before building, that the auxiliary head fits its input."""
    # The ImageNet stem halves the side three times; each reduction cell up
    # to and including cell 2L//3 once more ("same" padding: ceil).
    side = image_size
    for _ in range(3 if network == "imagenet" else 0):
        side = math.ceil(side / 2)
    for spec in cell_specs(network, 2, num_layers)[: 2 * num_layers // 3 + 1]:
        side = math.ceil(side / 2) if spec.reduction else side
    stride = _AUX_POOL_STRIDE[network]
    # 5x5 valid pool, then a 2x2 valid conv: the pool must give 2x2 or more.
    if (side - 5) // stride + 1 < 2:
        raise ValueError(
            f"The auxiliary head needs a feature map of at least "
            f"{5 + stride} pixels per side after cell 2L//3; image_size="
            f"{image_size} gives {side}. Use a larger image_size or "
            "auxiliary=False."
        )


def build_child_network(
    genotype: "Genotype | str",
    network: str = "cifar",
    num_classes: int = 10,
    channels: int = 36,
    num_layers: int = 20,
    image_size: int = 32,
    auxiliary: bool = True,
    layers=None,
    name: str | None = None,
    drop_path: bool = False,
    layout: str = "edge_all",
):
    """Builds the retrained child network of a genotype [P §3.2-3.3].

    Args:
        genotype: a `Genotype`, or anything `get_genotype` resolves (a
            `GENOTYPES` name such as `"SNAS_moderate"`, JSON, compact string
            or JSON path).
        network: `"cifar"` (NetworkCIFAR: 3x3 conv stem to 3C) or
            `"imagenet"` (NetworkImageNet: three stride-2 3x3 convs).
        num_classes: classifier outputs.
        channels: C of the first cells (36 for CIFAR, 48 for ImageNet
            mobile); doubled at each of the reduction cells L//3 and 2L//3.
        num_layers: number of cells L (20 for CIFAR, 14 for ImageNet).
        image_size: side of the square RGB input (the graph is static).
        auxiliary: add the auxiliary head after cell 2L//3; the model then
            has outputs `[logits, aux_logits]`. Use `inference_model` for a
            logits-only model sharing the same layers.
        layers: layers namespace, `keras.layers` (default) or
            `tf_keras.layers` (the TFMOT twin: same names, same weight
            order, so `twin.set_weights(model.get_weights())` works).
        name: model name; defaults to `child_{network}`.
        drop_path: add a `DropPath` layer (rate 0 until
            `DropPathScheduler` ramps it) after every edge op but the
            identity, for retraining [C train.py: drop_path_prob 0.2].
            Keras 3 only. Build the model to export with `drop_path=False`
            and `copy_weights_by_name` into it.
        layout: which of the authors' retraining networks to follow:
            `"edge_all"` (model_edge_all.py, SNAS genotypes) or `"darts"`
            (model.py, 8-edge genotypes), whose ImageNet auxiliary head
            keeps a BatchNorm after its 768-channel conv. CIFAR networks
            are the same in both.

    Returns:
        A flat functional model of built-in layers (and, with `drop_path`,
        `DropPath` layers), mapping images
        `(batch, image_size, image_size, 3)` to logits (and aux logits).

    Raises:
        ValueError: on an unknown network, layout or genotype, a
            non-positive or odd
            size, a feature map too small for the auxiliary head, or
            `drop_path=True` with a `layers` namespace other than
            `keras.layers`.
    """
    genotype = get_genotype(genotype)
    _check_args(network, num_classes, channels, num_layers, image_size, layout)
    if auxiliary:
        _check_aux_input(network, image_size, num_layers)
    layers = layers or keras.layers
    if drop_path and layers is not keras.layers:
        raise ValueError(
            f"drop_path=True needs layers=keras.layers, got {layers!r}: "
            "DropPath is a Keras 3 layer and the tf_keras twin is for export "
            "and TFMOT. Build the twin with drop_path=False and copy the "
            "weights with copy_weights_by_name."
        )
    images = layers.Input((image_size, image_size, 3), name="images")
    s0, s1 = stem(images, network, channels, layers)
    aux_logits = None
    for spec in cell_specs(network, channels, num_layers):
        nodes = genotype.reduce if spec.reduction else genotype.normal
        s0, s1 = s1, _cell(s0, s1, nodes, spec, layers, drop_path)
        if auxiliary and spec.index == 2 * num_layers // 3:
            aux_logits = _auxiliary_head(
                s1, network, num_classes, layout, layers
            )
    logits = classifier_head(s1, num_classes, layers)
    outputs = logits if aux_logits is None else [logits, aux_logits]
    return _model_class(layers)(
        images, outputs, name=name or f"child_{network}"
    )


def inference_model(model):
    """The logits-only model over the same layers and weights.

    The `DropPath` layers of a `drop_path=True` build stay in it (they pass
    their input on at inference); for export, build with `drop_path=False`
    and `copy_weights_by_name` first.

    Args:
        model: a model from `build_child_network`.

    Returns:
        `model` itself when it has one output; otherwise a functional model
        from the same input to its first output (the logits). It shares
        every layer, so it stays flat and leaves the auxiliary head out.
    """
    if len(model.outputs) == 1:
        return model
    return type(model)(
        model.input, model.outputs[0], name=f"{model.name}_inference"
    )


def copy_weights_by_name(source, target) -> None:
    """Copies weights layer by layer, matching layers by name.

    Moves the weights of a `drop_path=True` training build into the
    `drop_path=False` build that is exported (or into the tf_keras twin):
    layer names are the same in all of them. Layers of `source` that
    `target` lacks (the auxiliary head, for a target built with
    `auxiliary=False`) are ignored, and so are the `DropPath` layers of
    `target`: their rate is set by `DropPathScheduler`, not learned. Every
    check runs before anything is copied, so on error `target` is unchanged.

    Args:
        source: a model from `build_child_network` (Keras 3 or tf_keras).
        target: a model from `build_child_network` with the same layer
            names for every layer that has weights.

    Raises:
        ValueError: naming the layer, if a target layer with weights has no
            same-named layer in `source`, or their weights differ in number
            or shape.
    """
    by_name = {layer.name: layer for layer in source.layers}
    pairs = []
    for layer in target.layers:
        if not layer.weights or isinstance(layer, DropPath):
            continue
        if layer.name not in by_name:
            raise ValueError(
                f"Layer {layer.name!r} of {target.name!r} has weights but "
                f"{source.name!r} has no layer of that name."
            )
        values = by_name[layer.name].get_weights()
        shapes = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != shapes:
            raise ValueError(
                f"Layer {layer.name!r}: weight shapes {shapes} in "
                f"{target.name!r}, {[v.shape for v in values]} in "
                f"{source.name!r}."
            )
        pairs.append((layer, values))
    for layer, values in pairs:
        layer.set_weights(values)


def count_parameters(model, exclude_auxiliary: bool = True) -> int:
    """Trainable parameters, the paper's convention [P Table 2, 3].

    BatchNorm scale and offset count; moving statistics do not.

    Args:
        model: a model from `build_child_network`.
        exclude_auxiliary: leave the auxiliary head out (as the paper does).

    Returns:
        The number of trainable scalars.
    """
    if exclude_auxiliary:
        model = inference_model(model)
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def multiply_adds(model, image_size: int | None = None) -> int:
    """Multiply-adds per image of the inference graph [P Table 3].

    Convolutions and dense layers only: `H_out * W_out * k * k * C_in *
    C_out` for a Conv2D, `H_out * W_out * k * k * C_in * depth_multiplier`
    for a DepthwiseConv2D and `in * out` for a Dense; the auxiliary head is
    left out.

    Args:
        model: a model from `build_child_network`.
        image_size: optional check: the input side the figure is for. The
            graph is static, so this must equal the model's input side.

    Returns:
        Multiply-adds for one image.

    Raises:
        ValueError: if `image_size` differs from the model's input side.
    """
    model = inference_model(model)
    side = model.inputs[0].shape[1]
    if image_size is not None and image_size != side:
        raise ValueError(
            f"The model was built for {side}x{side} images, not "
            f"{image_size}x{image_size}; build it with image_size="
            f"{image_size}."
        )
    total = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            kernel = getattr(layer, "depthwise_kernel", None)
        if kernel is None:
            continue
        # A kernel's size is the multiply-adds per output position: kxk x
        # C_in/groups x C_out (conv), kxk x C_in x multiplier (depthwise),
        # in x out (dense, whose output has no spatial positions).
        positions = math.prod(layer.output.shape[1:-1])
        total += math.prod(kernel.shape) * positions
    return total


__all__ = [
    "LAYOUTS",
    "NETWORKS",
    "CellSpec",
    "build_child_network",
    "cell_specs",
    "classifier_head",
    "copy_weights_by_name",
    "count_parameters",
    "inference_model",
    "multiply_adds",
    "node_zeros",
    "stem",
]
