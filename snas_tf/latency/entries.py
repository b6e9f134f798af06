"""The entries of a latency table: what is timed, and its id.

Every part of the target child network that runs on the device is one
entry, timed on its own as a tiny model (`snas_tf.latency.op_models`):

- `op`: a candidate op on an edge, `op-<op>-c<C>-h<side>-s<stride>`;
- `preprocess`: a cell input's 1x1 ReLU-Conv-BN or FactorizedReduce,
  `pre-rcb-i<C_in>-c<C>-h<side>` or `pre-fr-...`;
- `add`: the sum of two edges into a node, `add-c<C>-h<side>`;
- `concat`: the concatenation of a cell's nodes,
  `concat-n<nodes>-c<C>-h<side>`;
- `zeros`: the zeros of a node without edges, `zeros-c<C>-h<side>-s<s>`;
- `stem`: the stem, `stem-cifar-c<C>-h<image side>` (ImageNet:
  `stem0-imagenet-...` and `stem1-imagenet-...`);
- `head`: global average pool and classifier, `head-i<C_in>-h<side>-k<K>`.

`side` is always the input side. `none` is no entry and the stride-1
`skip_connect` (an identity) a `free` one: both cost 0 by definition (the
child network drops the one, and runs no layer for the other). Ids use only
`[a-z0-9_-]`, so they serve as file names of the exported op models. One
(op, channels, side, stride) that occurs in several cells is one entry.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.4 (a cost linear in the one-hot Z) [P].
"""

import dataclasses

from snas_tf.latency.target import (
    CellShape,
    TargetNetwork,
    cell_shapes,
    stem_outputs,
)
from snas_tf.search_space import NUM_CELL_INPUTS

KINDS = ("op", "preprocess", "add", "concat", "zeros", "stem", "head")
PREPROCESS_FORMS = {"relu_conv_bn": "rcb", "factorized_reduce": "fr"}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One timed part of the target network.

    Attributes:
        id: the entry's id (see the module docstring).
        kind: one of `KINDS`.
        params: what the tiny model is built from, as sorted
            `(name, value)` pairs (`op`, `channels`, `side`, `stride`,
            `in_channels`, `form`, `inputs`, `network`, `part`,
            `num_classes`, as the kind needs).
    """

    id: str
    kind: str
    params: tuple

    def __getitem__(self, name):
        return dict(self.params)[name]

    @property
    def free(self) -> bool:
        """True for the stride-1 `skip_connect`, an identity: no layer
        runs, so it costs 0 by definition and is never timed (its edge
        still feeds the node's Add)."""
        params = dict(self.params)
        return params.get("op") == "skip_connect" and params["stride"] == 1

    def to_dict(self) -> dict:
        return {"kind": self.kind, **dict(self.params)}


def _entry(entry_id, kind, **params) -> Entry:
    return Entry(entry_id, kind, tuple(sorted(params.items())))


def op_entry(op: str, channels: int, side: int, stride: int) -> Entry:
    """A candidate op (not `none`) on an edge of `channels` in and out."""
    if op == "none":
        raise ValueError("'none' has no entry: it costs 0 by definition.")
    return _entry(
        f"op-{op}-c{channels}-h{side}-s{stride}",
        "op",
        op=op,
        channels=channels,
        side=side,
        stride=stride,
    )


def preprocess_entry(form, in_channels, channels, side) -> Entry:
    """A cell input's preprocess: `relu_conv_bn` (1x1) or
    `factorized_reduce` (halves the side) from `in_channels` to `channels`."""
    short = PREPROCESS_FORMS[form]
    return _entry(
        f"pre-{short}-i{in_channels}-c{channels}-h{side}",
        "preprocess",
        form=form,
        in_channels=in_channels,
        channels=channels,
        side=side,
    )


def add_entry(channels: int, side: int) -> Entry:
    """A two-input Add; a node summing n edges costs n - 1 of them."""
    return _entry(
        f"add-c{channels}-h{side}", "add", channels=channels, side=side
    )


def concat_entry(inputs: int, channels: int, side: int) -> Entry:
    """The concatenation of `inputs` nodes of `channels` each."""
    return _entry(
        f"concat-n{inputs}-c{channels}-h{side}",
        "concat",
        inputs=inputs,
        channels=channels,
        side=side,
    )


def zeros_entry(channels: int, side: int, stride: int) -> Entry:
    """The zeros of a node without edges, made from the cell's c_{k-1}."""
    return _entry(
        f"zeros-c{channels}-h{side}-s{stride}",
        "zeros",
        channels=channels,
        side=side,
        stride=stride,
    )


def stem_entries(target: TargetNetwork) -> tuple:
    """The stem: one entry (CIFAR), or `stem0` (two stride-2 convs, to
    s0) and `stem1` (one more, to s1) for ImageNet, so that a network
    that never reads one of them need not pay for it."""
    c, s = target.channels, target.image_size
    if target.network == "cifar":
        return (
            _entry(
                f"stem-cifar-c{c}-h{s}",
                "stem",
                network="cifar",
                part="stem",
                channels=c,
                side=s,
            ),
        )
    s0 = stem_outputs(target)[0]
    return (
        _entry(
            f"stem0-imagenet-c{c}-h{s}",
            "stem",
            network="imagenet",
            part="stem0",
            channels=c,
            side=s,
        ),
        _entry(
            f"stem1-imagenet-c{c}-h{s0[1]}",
            "stem",
            network="imagenet",
            part="stem1",
            channels=c,
            side=s0[1],
        ),
    )


def head_entry(target: TargetNetwork) -> Entry:
    """Global average pooling and the classifier on the last cell."""
    last = cell_shapes(target)[-1]
    channels = target.num_nodes * last.channels
    side = last.node_side
    return _entry(
        f"head-i{channels}-h{side}-k{target.num_classes}",
        "head",
        in_channels=channels,
        side=side,
        num_classes=target.num_classes,
    )


@dataclasses.dataclass(frozen=True)
class CellEntries:
    """The entries of one cell of the target network.

    Attributes:
        shape: the cell's `CellShape`.
        preprocess0: entry of c_{k-2}'s preprocess.
        preprocess1: entry of c_{k-1}'s preprocess.
        edges: per edge (logit row), per op (logit column): the op's entry,
            or None for `none`.
        add: the two-input Add at the cell's node shape.
        concat: the concatenation of its nodes (None with one node).
        zeros: the zeros of an empty node.
    """

    shape: CellShape
    preprocess0: Entry
    preprocess1: Entry
    edges: tuple
    add: Entry
    concat: Entry | None
    zeros: Entry


def cell_entries(target: TargetNetwork, shape: CellShape) -> CellEntries:
    """The entries of cell `shape` of `target`."""
    c = shape.channels
    (c0, side0), (c1, side1) = shape.input0, shape.input1
    form = "factorized_reduce" if shape.reduction_prev else "relu_conv_bn"
    space = target.search_space
    edges = []
    for edge in space.edges:
        # docs/method.md §1: the edges leaving a reduction cell's inputs
        # have stride 2; every other edge works at the node side.
        if shape.reduction and edge.source < NUM_CELL_INPUTS:
            side, stride = side1, 2
        else:
            side, stride = shape.node_side, 1
        edges.append(
            tuple(
                None if op == "none" else op_entry(op, c, side, stride)
                for op in space.primitives
            )
        )
    n = target.num_nodes
    return CellEntries(
        shape=shape,
        preprocess0=preprocess_entry(form, c0, c, side0),
        preprocess1=preprocess_entry("relu_conv_bn", c1, c, side1),
        edges=tuple(edges),
        add=add_entry(c, shape.node_side),
        concat=concat_entry(n, c, shape.node_side) if n > 1 else None,
        zeros=zeros_entry(c, side1, 2 if shape.reduction else 1),
    )


def network_entries(target: TargetNetwork) -> tuple:
    """`CellEntries` of every cell of `target`, in order."""
    return tuple(cell_entries(target, s) for s in cell_shapes(target))


def required_entries(target: TargetNetwork) -> dict:
    """Every entry a table of `target` must hold, `{id: Entry}`, each once,
    in network order (stem, cells, head); `free` entries left out."""
    found = {e.id: e for e in stem_entries(target)}
    for cell in network_entries(target):
        parts = [cell.preprocess0, cell.preprocess1]
        parts += [e for ops in cell.edges for e in ops if e is not None]
        parts += [cell.add, cell.concat, cell.zeros]
        for entry in parts:
            if entry is not None and not entry.free:
                found.setdefault(entry.id, entry)
    head = head_entry(target)
    found[head.id] = head
    return found


__all__ = [
    "KINDS",
    "CellEntries",
    "Entry",
    "add_entry",
    "cell_entries",
    "concat_entry",
    "head_entry",
    "network_entries",
    "op_entry",
    "preprocess_entry",
    "required_entries",
    "stem_entries",
    "zeros_entry",
]
