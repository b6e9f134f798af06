"""Genotypes: the discrete child architecture derived from the search.

A genotype lists, for the normal and the reduction cell, the edges kept in
each intermediate node as `(op_name, input_index)` pairs. Input 0 is
c_{k-2}, 1 is c_{k-1} and 2.. are the earlier intermediate nodes. The cell
output always concatenates every intermediate node, so there is no concat
field.

Two derivation rules turn architecture logits into a genotype:

- `"edge_all"` (SNAS): every edge keeps the argmax of softmax(α) over all
  ops, `none` included, and is dropped when that argmax is `none`
  [P §3.1; C model_search.genotype_edge_all]. A node may therefore keep
  any number of edges, including zero; an empty node still takes its place
  in the concat (as zeros), so channel counts do not change.
- `"top2"` (DARTS): each node keeps its two strongest incoming edges,
  `none` excluded, each with its strongest non-`none` op.

Serialised forms:

- JSON: `{"format_version": 1, "normal": [[["sep_conv_3x3", 0], ...], ...],
  "reduce": [...]}`; one list of `[op, input]` pairs per node.
- Compact one-line string, for logs and command lines::

      normal=sep_conv_3x3:0,skip_connect:1|-|...;reduce=max_pool_3x3:0|...

  Cells are `<cell>=<nodes>` joined by `;`, nodes are joined by `|`, edges
  in a node by `,`, and each edge is `<op>:<input>`. An empty node is `-`.
  Op names contain only `[a-z0-9_]`, so no separator is ambiguous.

Edge order inside a node is kept as given (edge_all: sources ascending;
top2: strongest first, as in DARTS), and genotypes compare equal only when
the order matches.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §3.1 [P]; the authors' code, model_search.genotype_edge_all [C].
"""

import dataclasses
import json
import numbers
import os

import numpy as np

from snas_tf.search_space import NUM_CELL_INPUTS, SearchSpace, check_primitive

FORMAT_VERSION = 1
RULES = ("edge_all", "top2")
CELLS = ("normal", "reduce")
_NONE = "none"
_EMPTY_NODE = "-"
# A module constant rather than a call in each default (ruff B008).
_DEFAULT_SPACE = SearchSpace()


def _is_sequence(value) -> bool:
    return isinstance(value, list | tuple)


def _normalise_cell(cell_name: str, cell) -> tuple:
    """Turns nested lists into nested tuples, checking only the structure."""
    if not _is_sequence(cell) or not all(_is_sequence(n) for n in cell):
        raise TypeError(
            f"Genotype.{cell_name} must be a sequence of nodes, each a "
            f"sequence of (op_name, input_index) pairs; got {cell!r}."
        )
    nodes = []
    for node_index, node in enumerate(cell):
        for entry in node:
            # bool is an int subclass, but True as an input index is a bug.
            if not (
                _is_sequence(entry)
                and len(entry) == 2
                and isinstance(entry[0], str)
                and isinstance(entry[1], numbers.Integral)
                and not isinstance(entry[1], bool)
            ):
                raise TypeError(
                    f"Malformed edge {entry!r} in {cell_name} node "
                    f"{node_index}; expected an (op_name: str, "
                    "input_index: int) pair."
                )
        nodes.append(tuple((op, int(source)) for op, source in node))
    return tuple(nodes)


@dataclasses.dataclass(frozen=True)
class Genotype:
    """The normal and reduction cells of a child network.

    Construction normalises lists to tuples and validates the genotype
    against the default primitives, with the node count taken from the
    genotype itself (so spaces with `num_nodes != 4` work). Call
    `validate(search_space)` to also check the node count and the ops of a
    specific search space.

    Attributes:
        normal: one tuple per intermediate node of `(op_name, input_index)`
            pairs; a node may be empty.
        reduce: the same for the reduction cell.

    Example:
        >>> g = Genotype(normal=[[("skip_connect", 0)], []],
        ...              reduce=[[("max_pool_3x3", 1)], [("skip_connect", 2)]])
        >>> str(g)
        'normal=skip_connect:0|-;reduce=max_pool_3x3:1|skip_connect:2'
    """

    normal: tuple
    reduce: tuple

    def __post_init__(self):
        for cell_name in CELLS:
            cell = _normalise_cell(cell_name, getattr(self, cell_name))
            object.__setattr__(self, cell_name, cell)
        if not self.normal or len(self.normal) != len(self.reduce):
            raise ValueError(
                f"Genotype.normal has {len(self.normal)} nodes and "
                f"Genotype.reduce has {len(self.reduce)}; both cells need the "
                "same number of nodes, at least 1."
            )
        # The node count comes from the genotype itself so that small search
        # spaces work; validate(search_space) pins it to a given space.
        self.validate(SearchSpace(num_nodes=len(self.normal)))

    def validate(self, search_space: SearchSpace = _DEFAULT_SPACE) -> None:
        """Checks the genotype against a search space.

        Args:
            search_space: gives the allowed ops and the number of nodes.

        Raises:
            ValueError: on a wrong node count, an op that is unknown or
                `none`, an input index out of range, or a duplicate input.
        """
        allowed = tuple(p for p in search_space.primitives if p != _NONE)
        for cell_name in CELLS:
            cell = getattr(self, cell_name)
            if len(cell) != search_space.num_nodes:
                raise ValueError(
                    f"Genotype.{cell_name} has {len(cell)} nodes; expected "
                    f"{search_space.num_nodes}."
                )
            for node_index, node in enumerate(cell):
                _validate_node(cell_name, node_index, node, allowed)

    def edges(self, cell: str) -> list[tuple[int, int, str]]:
        """Lists the kept edges of one cell.

        Args:
            cell: `"normal"` or `"reduce"`.

        Returns:
            `(node, source, op_name)` triples, node by node, in stored order.

        Raises:
            ValueError: if `cell` is not a cell name.
        """
        if cell not in CELLS:
            raise ValueError(f"Unknown cell {cell!r}. Expected one of {CELLS}.")
        return [
            (node_index, source, op)
            for node_index, node in enumerate(getattr(self, cell))
            for op, source in node
        ]

    def to_dict(self) -> dict:
        """Returns a JSON-able dict with a `format_version` key."""
        out = {"format_version": FORMAT_VERSION}
        for cell_name in CELLS:
            out[cell_name] = [
                [[op, source] for op, source in node]
                for node in getattr(self, cell_name)
            ]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Genotype":
        """Builds a genotype from `to_dict()` output.

        Raises:
            TypeError: if `data` is not a dict or an edge is not an
                `[op_name, input_index]` pair.
            ValueError: on a missing or unsupported `format_version`,
                missing or unknown keys, or an invalid genotype.
        """
        if not isinstance(data, dict):
            raise TypeError(f"Expected a dict, got {type(data).__name__}.")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"Unsupported genotype format_version {version!r}; expected "
                f"{FORMAT_VERSION}."
            )
        expected = {"format_version", *CELLS}
        if set(data) != expected:
            raise ValueError(
                f"Genotype dict has keys {sorted(data)}; expected exactly "
                f"{sorted(expected)}."
            )
        return cls(normal=data["normal"], reduce=data["reduce"])

    def to_json(self, indent: int | None = None) -> str:
        """Returns the `to_dict()` form as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "Genotype":
        """Parses `to_json()` output.

        Raises:
            ValueError: on invalid JSON or an invalid genotype dict.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"Invalid genotype JSON {text!r}: {e}") from e
        return cls.from_dict(data)

    def to_string(self) -> str:
        """Returns the compact one-line form described in the module doc."""
        cells = []
        for cell_name in CELLS:
            nodes = [
                ",".join(f"{op}:{source}" for op, source in node) or _EMPTY_NODE
                for node in getattr(self, cell_name)
            ]
            cells.append(f"{cell_name}={'|'.join(nodes)}")
        return ";".join(cells)

    @classmethod
    def from_string(cls, text: str) -> "Genotype":
        """Parses the compact one-line form; whitespace is ignored.

        Raises:
            ValueError: naming the text when it is not in the compact form,
                or when the genotype it describes is invalid.
        """
        cells = {}
        for part in "".join(text.split()).split(";"):
            name, sep, body = part.partition("=")
            if not sep or name not in CELLS or name in cells:
                raise ValueError(
                    f"Malformed genotype string {text!r}: bad cell {part!r}; "
                    f"expected '<cell>=<nodes>' once for each of {CELLS}."
                )
            cells[name] = [_parse_node(text, node) for node in body.split("|")]
        if set(cells) != set(CELLS):
            raise ValueError(
                f"Malformed genotype string {text!r}; expected both cells "
                f"{CELLS}."
            )
        return cls(**cells)

    def __str__(self) -> str:
        return self.to_string()


def _validate_node(cell_name: str, node_index: int, node, allowed) -> None:
    where = f"{cell_name} node {node_index}"
    num_inputs = NUM_CELL_INPUTS + node_index
    for op, source in node:
        if op == _NONE:
            # A `none` edge is absent in the derived child, not a zero op.
            raise ValueError(
                f"Primitive 'none' is not allowed in a genotype ({where}); "
                f"omit the edge instead. Expected one of {allowed}."
            )
        check_primitive(op, allowed)
        if not 0 <= source < num_inputs:
            raise ValueError(
                f"Input index {source} out of range for {where}; expected "
                f"0..{num_inputs - 1}."
            )
    sources = [source for _, source in node]
    for source in sources:
        if sources.count(source) > 1:
            raise ValueError(
                f"Duplicate input {source} in {where}: {node}; each input "
                "may feed a node once."
            )


def _parse_node(text: str, node: str) -> list:
    if node in ("", _EMPTY_NODE):
        return []
    pairs = []
    for edge in node.split(","):
        op, sep, source = edge.partition(":")
        if not sep or not op or not (source.isascii() and source.isdigit()):
            raise ValueError(
                f"Malformed edge {edge!r} in genotype string {text!r}; "
                "expected '<op>:<input>'."
            )
        pairs.append((op, int(source)))
    return pairs


def _softmax(logits: np.ndarray) -> np.ndarray:
    # Subtracting the row max keeps exp() finite for large logits.
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _check_logits(logits, search_space: SearchSpace, cell: str) -> np.ndarray:
    array = np.asarray(logits, dtype=np.float64)
    expected = (search_space.num_edges, search_space.num_ops)
    if array.shape != expected:
        raise ValueError(
            f"{cell} logits have shape {array.shape}; expected {expected} "
            "(num_edges, num_ops)."
        )
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        where = "; ".join(
            f"edge {e}, op {search_space.primitives[k]!r}: {array[e, k]}"
            for e, k in bad[:4]
        )
        more = f" (and {len(bad) - 4} more)" if len(bad) > 4 else ""
        raise ValueError(
            f"{cell} logits contain NaN or inf at {where}{more}; the "
            "architecture logits must be finite."
        )
    return array


def _derive_edge_all(weights: np.ndarray, search_space: SearchSpace):
    primitives = search_space.primitives
    nodes = [[] for _ in range(search_space.num_nodes)]
    for edge in search_space.edges:
        # SNAS §3.1: argmax over all ops; `none` winning drops the edge.
        best = int(np.argmax(weights[edge.index]))
        if primitives[best] != _NONE:
            nodes[edge.node].append((primitives[best], edge.source))
    return nodes


def _derive_top2(weights: np.ndarray, search_space: SearchSpace):
    primitives = search_space.primitives
    ops = [k for k, name in enumerate(primitives) if name != _NONE]
    if not ops:
        raise ValueError(
            f"Rule 'top2' needs an op other than 'none'; the search space "
            f"has {primitives}."
        )
    strength = weights[:, ops].max(axis=1)
    nodes = []
    for node in range(search_space.num_nodes):
        rows = [e for e in search_space.edges if e.node == node]
        # DARTS genotype(): sorted() is stable, so the lower source wins a
        # tie, and kept edges are listed strongest first.
        ranked = sorted(rows, key=lambda e: -strength[e.index])
        kept = []
        for edge in ranked[:2]:
            best = ops[int(np.argmax(weights[edge.index, ops]))]
            kept.append((primitives[best], edge.source))
        nodes.append(kept)
    return nodes


def derive_genotype(
    logits_normal,
    logits_reduce,
    rule: str = "edge_all",
    search_space: SearchSpace = _DEFAULT_SPACE,
) -> Genotype:
    """Derives the child genotype from architecture logits.

    Args:
        logits_normal: array-like of shape `(num_edges, num_ops)` for the
            normal cell; rows follow `search_space.edges`, columns follow
            `search_space.primitives`.
        logits_reduce: the same for the reduction cell.
        rule: `"edge_all"` (SNAS: keep each edge whose argmax over all ops
            is not `none`) or `"top2"` (DARTS: keep the two strongest
            non-`none` edges per node). Ties go to the lowest op index and,
            for top2, to the lowest source.
        search_space: the space the logits belong to. Without `none` in its
            primitives, edge_all keeps every edge.

    Returns:
        The derived `Genotype`.

    Raises:
        ValueError: on an unknown rule, logits of the wrong shape or with
            non-finite values.
    """
    if rule not in RULES:
        raise ValueError(f"Unknown rule {rule!r}. Expected one of {RULES}.")
    cells = {}
    for cell, logits in zip(CELLS, (logits_normal, logits_reduce), strict=True):
        array = _check_logits(logits, search_space, cell)
        weights = _softmax(array)
        if rule == "edge_all":
            cells[cell] = _derive_edge_all(weights, search_space)
        else:
            cells[cell] = _derive_top2(weights, search_space)
    genotype = Genotype(**cells)
    genotype.validate(search_space)
    return genotype


# Published cells. SNAS: docs/method.md §5 (edges not listed are `none`);
# DARTS_V2: Liu et al., "DARTS", ICLR 2019, genotypes.py.
GENOTYPES: dict[str, Genotype] = {
    "SNAS_mild": Genotype(
        normal=[
            [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
            [("skip_connect", 0), ("dil_conv_3x3", 1)],
            [("skip_connect", 0), ("skip_connect", 1)],
            [("skip_connect", 0), ("sep_conv_3x3", 1)],
        ],
        reduce=[
            [("max_pool_3x3", 0), ("max_pool_3x3", 1)],
            [("max_pool_3x3", 1), ("skip_connect", 2)],
            [("max_pool_3x3", 1), ("skip_connect", 2)],
            [("max_pool_3x3", 0), ("dil_conv_5x5", 2)],
        ],
    ),
    "SNAS_moderate": Genotype(
        normal=[
            [("dil_conv_5x5", 0), ("skip_connect", 1)],
            [("sep_conv_3x3", 0), ("skip_connect", 1)],
            [("skip_connect", 0), ("skip_connect", 1)],
            [("sep_conv_3x3", 0), ("dil_conv_5x5", 1)],
        ],
        reduce=[
            [("max_pool_3x3", 0), ("max_pool_3x3", 1)],
            [("sep_conv_5x5", 0), ("dil_conv_5x5", 1)],
            [("sep_conv_5x5", 0), ("sep_conv_5x5", 1)],
            [("sep_conv_5x5", 0), ("sep_conv_5x5", 1)],
        ],
    ),
    "SNAS_aggressive": Genotype(
        normal=[
            [("sep_conv_5x5", 0), ("skip_connect", 1)],
            [("skip_connect", 0), ("skip_connect", 1)],
            [("skip_connect", 0), ("dil_conv_5x5", 1)],
            [("skip_connect", 0), ("dil_conv_5x5", 1)],
        ],
        # Resource constraint pruned nodes 2 and 3 entirely (zeros).
        reduce=[[("sep_conv_5x5", 0)], [("sep_conv_5x5", 0)], [], []],
    ),
    "DARTS_V2": Genotype(
        normal=[
            [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
            [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
            [("sep_conv_3x3", 1), ("skip_connect", 0)],
            [("skip_connect", 0), ("dil_conv_3x3", 2)],
        ],
        reduce=[
            [("max_pool_3x3", 0), ("max_pool_3x3", 1)],
            [("skip_connect", 2), ("max_pool_3x3", 1)],
            [("max_pool_3x3", 0), ("skip_connect", 2)],
            [("skip_connect", 2), ("max_pool_3x3", 1)],
        ],
    ),
}


def load_genotype(path: "str | os.PathLike | Genotype") -> Genotype:
    """Reads a genotype.json (e.g. a search's output); the one reader of
    genotype files.

    Args:
        path: the file's path, or a `Genotype` (returned as is).

    Returns:
        The `Genotype`.

    Raises:
        ValueError: naming the file (not its contents) when it is missing,
            is not JSON or does not hold a valid genotype.
    """
    if isinstance(path, Genotype):
        return path
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Genotype file {path!r} does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"Invalid JSON in genotype file {path!r}: {e}") from e
    try:
        return Genotype.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"Invalid genotype file {path!r}: {e}") from e


def get_genotype(spec: "str | os.PathLike | Genotype") -> Genotype:
    """Resolves a genotype from a name, JSON, compact string or JSON file.

    Args:
        spec: a `GENOTYPES` name, a JSON string (starts with `{`), a compact
            string (contains `=`), a path to a JSON file, or a `Genotype`
            (returned as is).

    Returns:
        The `Genotype`.

    Raises:
        ValueError: if `spec` is none of the above, or what it names is not
            a valid genotype.
    """
    if isinstance(spec, Genotype):
        return spec
    if isinstance(spec, str) and spec in GENOTYPES:
        return GENOTYPES[spec]
    if isinstance(spec, os.PathLike) or (
        isinstance(spec, str)
        and (os.path.isfile(spec) or spec.endswith(".json"))
    ):
        return load_genotype(spec)
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        return Genotype.from_json(spec)
    if isinstance(spec, str) and "=" in spec:
        return Genotype.from_string(spec)
    raise ValueError(
        f"Unknown genotype {spec!r}. Expected one of {tuple(GENOTYPES)}, a "
        "JSON string, a compact 'normal=...;reduce=...' string or a path to "
        "a JSON file."
    )


__all__ = [
    "CELLS",
    "FORMAT_VERSION",
    "GENOTYPES",
    "RULES",
    "Genotype",
    "derive_genotype",
    "get_genotype",
    "load_genotype",
]
