"""The tiny Keras model of one latency-table entry.

Each model is built by the code that builds the child network
(`snas_tf.ops.build_op`, `relu_conv_bn`, `factorized_reduce`, and
`child_network.stem`, `node_zeros`, `classifier_head`; Add and
Concatenate are the same built-in layers the cell uses), on batch-1 inputs
of the entry's shape, so what is timed is what ships. BatchNorms are
affine, as in the child, and get random statistics: the converter folds
them into the convolutions either way, as it does in the exported child.
"""

import keras

from snas_tf.latency.entries import Entry
from snas_tf.models.child_network import classifier_head, node_zeros, stem
from snas_tf.ops import build_op, factorized_reduce, relu_conv_bn


def _input(side, channels, name="x"):
    return keras.Input((side, side, channels), batch_size=1, name=name)


def _stem_model(entry: Entry):
    network, part = entry["network"], entry["part"]
    side, channels = entry["side"], entry["channels"]
    if part == "stem1":
        # stem1 starts from stem0's output: a model between the two
        # tensors of the same stem build keeps stem1's layers only. Its
        # input side is `side`; stem0 halves twice.
        images = _input(4 * side, 3, "images")
        s0, s1 = stem(images, network, channels, keras.layers)
        return keras.Model(s0, s1, name=entry.id)
    images = _input(side, 3, "images")
    s0, s1 = stem(images, network, channels, keras.layers)
    return keras.Model(images, s0 if part == "stem0" else s1, name=entry.id)


def entry_model(entry: Entry) -> keras.Model:
    """A functional model computing the entry's part of the child network.

    Args:
        entry: an `Entry` of `snas_tf.latency.entries` (not an identity).

    Returns:
        A Keras model with batch-1 inputs (the two-input Add and the
        concatenation have one input per operand).

    Raises:
        ValueError: for an entry with nothing to compute (an identity).
    """
    kind, name = entry.kind, entry.id.replace("-", "_")
    if entry.free:
        raise ValueError(f"Entry {entry.id!r} computes nothing (identity).")
    if kind == "stem":
        return _stem_model(entry)
    if kind == "head":
        x = _input(entry["side"], entry["in_channels"])
        return keras.Model(
            x, classifier_head(x, entry["num_classes"], keras.layers)
        )
    if kind in ("add", "concat"):
        count = 2 if kind == "add" else entry["inputs"]
        xs = [
            _input(entry["side"], entry["channels"], f"x{i}")
            for i in range(count)
        ]
        layer = (
            keras.layers.Add(name=name)
            if kind == "add"
            else keras.layers.Concatenate(axis=-1, name=name)
        )
        return keras.Model(xs, layer(xs), name=entry.id)
    if kind == "preprocess":
        x = _input(entry["side"], entry["in_channels"])
        if entry["form"] == "factorized_reduce":
            op = factorized_reduce(entry["channels"], True, name)
        else:
            op = relu_conv_bn(entry["channels"], 1, 1, True, name)
        return keras.Model(x, op(x), name=entry.id)
    x = _input(entry["side"], entry["channels"])
    if kind == "zeros":
        y = node_zeros(x, entry["stride"], name, keras.layers)
        return keras.Model(x, y, name=entry.id)
    op = build_op(entry["op"], entry["channels"], entry["stride"], True, name)
    return keras.Model(x, op(x), name=entry.id)


__all__ = ["entry_model"]
