"""The authors' edge lists of a genotype, for importing their weights.

An official checkpoint names each edge's tensors by the edge's position in
the official genotype's list (`cells.{i}._ops.{j}`), and an `_edge_all`
list orders each node's edges by the strength of their α (the reference's
`genotype_edge_all`), which our `Genotype` does not keep (it drops `none`
edges and lists a node's edges by source). `official_edges(spec, layout)`
returns the lists in the official order, from:

- a published name: with layout `edge_all`, `SNAS_mild_edge_all`,
  `SNAS_moderate_edge_all`, `SNAS_aggressive_edge_all` (`EDGE_ALL`; the
  names without `_edge_all` mean the same there); with layout `darts`,
  `SNAS_mild`, `SNAS_moderate`, `SNAS_aggressive`, `DARTS_V2`
  (`DARTS_FORM`, whose order within a node is not always ours);
- the official text `Genotype(normal=[('sep_conv_3x3', 0), ...],
  normal_concat=..., reduce=[...], reduce_concat=...)` as the reference
  prints and lists it, inline or in a file (read as literals, never run);
- with layout `darts` only, any of our genotype forms (`get_genotype`)
  with at most two edges per node: its nodes in order, each padded with
  `none` edges to two.

Reference: SNAS-Series/SNAS-Series, `SNAS/genotypes.py` (commit 9a43adb),
the published cells in the order the official code builds them.
"""

import ast
import os

from snas_tf.genotype import get_genotype
from snas_tf.models.child_network import LAYOUTS

_N, _SKIP, _MAX = "none", "skip_connect", "max_pool_3x3"
_S3, _S5 = "sep_conv_3x3", "sep_conv_5x5"
_D3, _D5 = "dil_conv_3x3", "dil_conv_5x5"
# 14 edges per cell, node by node (2, 3, 4, 5 edges), each node's edges by
# decreasing strength, as published.
EDGE_ALL = {
    "SNAS_mild_edge_all": {
        "normal": [
            (_S3, 0), (_S3, 1),
            (_SKIP, 0), (_D3, 1), (_N, 2),
            (_SKIP, 0), (_SKIP, 1), (_N, 3), (_N, 2),
            (_SKIP, 0), (_S3, 1), (_N, 4), (_N, 3), (_N, 2),
        ],
        "reduce": [
            (_MAX, 0), (_MAX, 1),
            (_N, 0), (_MAX, 1), (_SKIP, 2),
            (_N, 0), (_MAX, 1), (_SKIP, 2), (_N, 3),
            (_MAX, 0), (_D5, 2), (_N, 1), (_N, 3), (_N, 4),
        ],
    },
    "SNAS_moderate_edge_all": {
        "normal": [
            (_D5, 0), (_SKIP, 1),
            (_S3, 0), (_SKIP, 1), (_N, 2),
            (_SKIP, 0), (_N, 3), (_N, 2), (_SKIP, 1),
            (_S3, 0), (_D5, 1), (_N, 4), (_N, 3), (_N, 2),
        ],
        "reduce": [
            (_MAX, 0), (_MAX, 1),
            (_S5, 0), (_N, 2), (_D5, 1),
            (_N, 3), (_N, 2), (_S5, 0), (_S5, 1),
            (_N, 4), (_N, 3), (_N, 2), (_S5, 0), (_S5, 1),
        ],
    },
    "SNAS_aggressive_edge_all": {
        "normal": [
            (_S5, 0), (_SKIP, 1),
            (_SKIP, 0), (_SKIP, 1), (_N, 2),
            (_D5, 1), (_SKIP, 0), (_N, 2), (_N, 3),
            (_SKIP, 0), (_D5, 1), (_N, 2), (_N, 3), (_N, 4),
        ],
        "reduce": [
            (_S5, 0), (_N, 1),
            (_S5, 0), (_N, 1), (_N, 2),
            (_N, 0), (_N, 1), (_N, 2), (_N, 3),
            (_N, 0), (_N, 1), (_N, 2), (_N, 3), (_N, 4),
        ],
    },
}  # fmt: skip
# 8 edges per cell, two per node, as published (model.py).
DARTS_FORM = {
    "SNAS_mild": {
        "normal": [
            (_S3, 0), (_S3, 1),
            (_SKIP, 0), (_D3, 1),
            (_SKIP, 0), (_SKIP, 1),
            (_SKIP, 0), (_S3, 1),
        ],
        "reduce": [
            (_MAX, 0), (_MAX, 1),
            (_MAX, 1), (_SKIP, 2),
            (_MAX, 1), (_SKIP, 2),
            (_MAX, 0), (_D5, 2),
        ],
    },
    "SNAS_moderate": {
        "normal": [
            (_D5, 0), (_SKIP, 1),
            (_S3, 0), (_SKIP, 1),
            (_SKIP, 0), (_SKIP, 1),
            (_S3, 0), (_D5, 1),
        ],
        "reduce": [
            (_MAX, 0), (_MAX, 1),
            (_S5, 0), (_D5, 1),
            (_S5, 0), (_S5, 1),
            (_S5, 0), (_S5, 1),
        ],
    },
    "SNAS_aggressive": {
        "normal": [
            (_S5, 0), (_SKIP, 1),
            (_SKIP, 0), (_SKIP, 1),
            (_D5, 1), (_SKIP, 0),
            (_SKIP, 0), (_D5, 1),
        ],
        "reduce": [
            (_S5, 0), (_N, 1),
            (_S5, 0), (_N, 1),
            (_N, 1), (_N, 0),
            (_N, 1), (_N, 0),
        ],
    },
    "DARTS_V2": {
        "normal": [
            (_S3, 0), (_S3, 1),
            (_S3, 0), (_S3, 1),
            (_S3, 1), (_SKIP, 0),
            (_SKIP, 0), (_D3, 2),
        ],
        "reduce": [
            (_MAX, 0), (_MAX, 1),
            (_SKIP, 2), (_MAX, 1),
            (_MAX, 0), (_SKIP, 2),
            (_SKIP, 2), (_MAX, 1),
        ],
    },
}  # fmt: skip
_EDGE_ALL_SUFFIX = "_edge_all"
_CELLS = ("normal", "reduce")
_EDGES_PER_NODE = 2
_CALL = "Genotype("


def _published(spec, layout):
    """The published lists `spec` names in `layout`, or None."""
    if layout == "darts":
        if spec in EDGE_ALL:
            raise ValueError(
                f"{spec!r} is an edge_all genotype (model_edge_all.py): use "
                "--layout edge_all."
            )
        return DARTS_FORM.get(spec)
    return EDGE_ALL.get(spec) or EDGE_ALL.get(spec + _EDGE_ALL_SUFFIX)


def parse_official_text(text: str) -> dict:
    """The `normal` and `reduce` lists of an official `Genotype(...)`
    text, read as literals (`ast.literal_eval`; nothing is run).

    Raises:
        ValueError: if the text is not such a call with `normal=` and
            `reduce=` lists of (op, source) pairs.
    """
    try:
        call = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"Cannot parse the genotype text: {e.msg}.") from e
    keywords = (
        {k.arg: k.value for k in call.keywords}
        if isinstance(call, ast.Call)
        else {}
    )
    out = {}
    for cell in _CELLS:
        try:
            edges = ast.literal_eval(keywords[cell])
            out[cell] = [(str(op), int(src)) for op, src in edges]
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(
                f"The genotype text has no valid {cell}= list; expected "
                "Genotype(normal=[('op', source), ...], reduce=[...]) as "
                "the official code prints it."
            ) from e
    return out


def _padded(genotype):
    """Our genotype as 8-edge DARTS-form lists: each node's edges in order,
    padded with `none` (no tensors) to two."""
    out = {}
    for cell in _CELLS:
        edges = []
        for k, node in enumerate(getattr(genotype, cell)):
            if len(node) > _EDGES_PER_NODE:
                raise ValueError(
                    f"The {cell} cell's node {k} has {len(node)} edges; the "
                    f"darts layout (model.py) has {_EDGES_PER_NODE} per node. "
                    "Use --layout edge_all with the official edge list."
                )
            edges += list(node)
            edges += [(_N, 0)] * (_EDGES_PER_NODE - len(node))
        out[cell] = edges
    return out


def _official_text(spec):
    """The official `Genotype(...)` text that `spec` is or names (a file,
    or a line such as the reference's `genotype = Genotype(...)` log
    line), from `Genotype(` on; or None."""
    text = spec
    path = os.path.expanduser(spec)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            raise ValueError(f"Genotype file {spec!r} is not text.") from e
    start = text.find(_CALL)
    return None if start < 0 else text[start:]


def official_edges(spec, layout: str = "edge_all") -> dict:
    """The official `normal` / `reduce` edge lists of `spec`.

    Args:
        spec: a published name, the official `Genotype(...)` text or a file
            holding it, or (layout `darts`) any `get_genotype` form
            (module docstring).
        layout: `"edge_all"` (model_edge_all.py) or `"darts"` (model.py).

    Returns:
        `{"normal": [(op, source), ...], "reduce": [...]}`, for
        `torch_import.genotype_from_torch` and `load_torch_state_dict`
        (which check the edge counts, ops and sources).

    Raises:
        ValueError: for an unknown layout or name, unreadable text, or
            (edge_all) a genotype of ours, which does not keep the
            official order.
    """
    if layout not in LAYOUTS:
        raise ValueError(
            f"Unknown layout {layout!r}. Expected one of {LAYOUTS}."
        )
    spec = os.fspath(spec)
    published = _published(spec, layout)
    if published is not None:
        return {c: list(published[c]) for c in _CELLS}
    text = _official_text(spec)
    if text is not None:
        return parse_official_text(text)
    if layout == "darts":
        return _padded(get_genotype(spec))
    raise ValueError(
        f"The edge_all layout needs the official edge order of "
        f"{spec!r}, which our genotype forms do not keep: give one of "
        f"{tuple(EDGE_ALL)} or the official Genotype(normal=[...], "
        "reduce=[...]) text (inline or a file)."
    )


__all__ = [
    "DARTS_FORM",
    "EDGE_ALL",
    "official_edges",
    "parse_official_text",
]
