"""Latency of the target network from a table: per-edge costs and a
genotype's prediction.

The search needs a cost linear in the op weights (SNAS §2.4), so
`latency_costs` turns a table into one (edges, ops) cost table per cell and
a constant:

- edge e of a cell, op k: latency(k at that edge's shape), plus one
  two-input Add at the node's shape when k is not `none` (a node summing n
  edges runs n - 1 Adds; counting one per kept edge and taking one per
  node back in the constant is exact for every node that keeps an edge);
- constant: the stem, every cell's two preprocesses and concatenation
  minus its `num_nodes` Adds, and the classifier head.

`predict_latency` prices one genotype exactly as the child network runs
it: n - 1 Adds per node, the zeros of an empty node, and no cost for a
part the network never reads (a preprocess no edge reads, a cell no later
cell reads: the functional model leaves them out).
"""

import dataclasses

import numpy as np

from snas_tf.config import RetrainConfig, load_config
from snas_tf.genotype import Genotype, get_genotype
from snas_tf.latency.entries import head_entry, network_entries, stem_entries
from snas_tf.latency.table import LatencyTable, check_table, load_table
from snas_tf.latency.target import TargetNetwork, target_from_retrain_config

CELL_TYPES = ("normal", "reduce")


@dataclasses.dataclass(frozen=True)
class LatencyCosts:
    """The target network's latency as a linear function of op weights.

    Attributes:
        tables: `{"normal": (n, E, K), "reduce": (m, E, K)}` float32 arrays
            in microseconds, one (edges, ops) table per cell of the type,
            in network order (a type without cells left out).
        constant_us: what does not depend on the op weights.
    """

    tables: dict
    constant_us: float

    def expected_us(self, weights: dict) -> float:
        """The latency under op weights `{type: (E, K)}` (NumPy)."""
        total = self.constant_us
        for cell_type, table in self.tables.items():
            total += float(np.sum(table * np.asarray(weights[cell_type])))
        return total

    def to_config(self) -> dict:
        """JSON-able form (a model's `get_config`)."""
        return {
            "tables": {t: v.tolist() for t, v in self.tables.items()},
            "constant_us": self.constant_us,
        }

    @classmethod
    def from_config(cls, config: dict) -> "LatencyCosts":
        tables = {
            t: np.asarray(v, dtype=np.float32)
            for t, v in config["tables"].items()
        }
        return cls(tables, float(config["constant_us"]))


def _latency(table: LatencyTable):
    """entry -> its timing in µs (calibrated: scaled, plus the per-part
    term); a `free` entry (identity) costs 0."""
    extra = table.per_part_us
    return lambda entry: (
        0.0 if entry.free else table.latency_us(entry.id) + extra
    )


def latency_costs(table: LatencyTable, target: TargetNetwork) -> LatencyCosts:
    """The per-edge latency tables and constant of a checked table
    (`check_table(table, target)` first)."""
    lat = _latency(table)
    tables = {t: [] for t in CELL_TYPES}
    constant = sum(lat(e) for e in stem_entries(target))
    constant += lat(head_entry(target))
    for cell in network_entries(target):
        add = lat(cell.add)
        costs = np.array(
            [
                [0.0 if e is None else lat(e) + add for e in ops]
                for ops in cell.edges
            ],
            dtype=np.float32,
        )
        tables["reduce" if cell.shape.reduction else "normal"].append(costs)
        constant += lat(cell.preprocess0) + lat(cell.preprocess1)
        constant += lat(cell.concat) if cell.concat else 0.0
        constant -= target.num_nodes * add
    return LatencyCosts(
        {t: np.stack(v) for t, v in tables.items() if v}, float(constant)
    )


def _reads(nodes) -> tuple:
    """(reads c_{k-2}, reads c_{k-1}) of a cell's nodes; an empty node's
    zeros are made from c_{k-1}."""
    sources = {source for node in nodes for _, source in node}
    return 0 in sources, 1 in sources or any(not n for n in nodes)


def predict_latency(
    table: LatencyTable, target: TargetNetwork, genotype
) -> dict:
    """The latency of a genotype's child network at the target's size.

    Args:
        table: a table checked against `target`.
        target: the target network.
        genotype: a `Genotype` or anything `get_genotype` resolves.

    Returns:
        `{"total_us": float, "stem_us", "cells_us" (one per cell),
        "head_us"}`; a part the network never reads costs 0.

    Raises:
        ValueError: for a genotype outside the target's search space.
    """
    genotype: Genotype = get_genotype(genotype)
    genotype.validate(target.search_space)
    lat = _latency(table)
    cells = network_entries(target)
    nodes = [
        genotype.reduce if c.shape.reduction else genotype.normal for c in cells
    ]
    reads = [_reads(n) for n in nodes]
    # Backwards from the head: cell i is computed when the head reads it
    # (the last cell), cell i+1 reads its c_{k-1} or cell i+2 its c_{k-2}.
    count = len(cells)
    live = [False] * count
    for i in reversed(range(count)):
        live[i] = i == count - 1 or (
            (live[i + 1] and reads[i + 1][1])
            or (i + 2 < count and live[i + 2] and reads[i + 2][0])
        )
    cells_us = []
    for i, cell in enumerate(cells):
        if not live[i]:
            cells_us.append(0.0)
            continue
        cost = lat(cell.preprocess0) if reads[i][0] else 0.0
        cost += lat(cell.preprocess1) if reads[i][1] else 0.0
        cost += lat(cell.concat) if cell.concat else 0.0
        space = target.search_space
        for j, node in enumerate(nodes[i]):
            if not node:
                cost += lat(cell.zeros)
            cost += max(len(node) - 1, 0) * lat(cell.add)
            for op, source in node:
                column = space.primitives.index(op)
                entry = cell.edges[space.edge_index(j, source)][column]
                cost += 0.0 if entry is None else lat(entry)
        cells_us.append(cost)
    stem = stem_entries(target)
    # The stem's outputs: cell 0 reads (s0, s1), cell 1 reads s1 as its
    # c_{k-2}. ImageNet's stem1 is computed from stem0's output.
    reads_s1 = (live[0] and reads[0][1]) or (
        count > 1 and live[1] and reads[1][0]
    )
    reads_s0 = live[0] and reads[0][0]
    stem_us = lat(stem[0]) if reads_s0 or reads_s1 else 0.0
    if len(stem) > 1 and reads_s1:
        stem_us += lat(stem[1])
    head_us = lat(head_entry(target))
    return {
        "total_us": stem_us + sum(cells_us) + head_us,
        "stem_us": stem_us,
        "cells_us": cells_us,
        "head_us": head_us,
    }


def search_latency_costs(config) -> LatencyCosts | None:
    """The latency costs a search config asks for, checked, or None.

    The target network is the one `search.latency_target_config` (a
    retrain config) describes, with the search's own primitives and nodes:
    the search network (few cells, small images) only trains α, while the
    latency that matters is the shipped child's, whose cells sit at other
    channel counts and resolutions. The table's metadata must name the
    same target, so a table built for another network is refused rather
    than silently priced.

    Args:
        config: a `snas_tf.config.Config`.

    Returns:
        `LatencyCosts` with `search.resource: latency`, else None.

    Raises:
        ValueError: one line, for a missing `search.latency_table` or
            `search.latency_target_config`, or any `check_table` refusal.
    """
    s = config.search
    if s.resource != "latency":
        return None
    for key in ("latency_table", "latency_target_config"):
        if getattr(s, key) is None:
            raise ValueError(
                f"search.resource is 'latency' but search.{key} is null; "
                "expected the path of "
                + (
                    "a table of `snas latency-table`."
                    if key == "latency_table"
                    else "the target network's retrain config."
                )
            )
    retrain = load_config([s.latency_target_config], (), RetrainConfig)
    named_by = f"search.latency_target_config {s.latency_target_config!r}"
    table, target = _checked(s.latency_table, retrain, config.model, named_by)
    return latency_costs(table, target)


def _checked(path, retrain, model, named_by):
    """(table, target): the table at `path` checked against the network of
    `retrain` over the search space of `model` (a `ModelConfig`)."""
    target = target_from_retrain_config(
        retrain, model.primitives, model.num_nodes
    )
    return check_table(load_table(path), target, named_by), target


def tuning_latency_table(config, retrain, max_latency_ms, latency_table):
    """The latency side of `snas tune`: `(table, target)` checked against
    the retraining's network (a `RetrainConfig`) and the search space of
    `config`, or `(None, None)` without a latency budget.

    Raises:
        ValueError: for a latency budget without a table, or a table that
            `check_table` refuses (one line naming the entry).
    """
    if max_latency_ms is None:
        return None, None
    if latency_table is None:
        raise ValueError(
            "--max-latency-ms needs --latency-table: the table of the "
            "retraining's network (snas latency-table --config "
            "RETRAIN_CONFIG)."
        )
    return _checked(
        latency_table, retrain, config.model, "the --retrain-config network"
    )


__all__ = [
    "LatencyCosts",
    "latency_costs",
    "predict_latency",
    "search_latency_costs",
    "tuning_latency_table",
]
