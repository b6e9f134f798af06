"""The budget side of `snas tune`: a trial's score and the smallest child.

A child network is measured at the retraining size of a `RetrainConfig`:
trainable parameters without the auxiliary head (the paper's convention)
and multiply-adds per image (`snas summary` counts the same way), and,
with a latency table, its predicted latency.

Objective (maximised): the child accuracy without retraining, i.e.
`val_child_accuracy` of the last search epoch (the supernet in argmax mode,
docs/method.md §6), when the child is within every given budget; otherwise
`-(max_k value_k / budget_k - 1)`, minus how far (as a fraction) the worst
metric overshoots its budget. An accuracy is in [0, 1] and an overshoot is
> 0, so every over-budget trial ranks below every in-budget one, and the
oracle still learns which over-budget trials came closest.

A budget below the smallest child the derivation rule can produce
(`smallest_network`) can never be met, so the tuning refuses it up front.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.4 (resource constraint) and §3.1 (derivation) [P].
"""

import keras

from snas_tf.config import RetrainConfig
from snas_tf.genotype import RULES, Genotype
from snas_tf.models import build_child_network, count_parameters, multiply_adds
from snas_tf.models.child_network import cell_specs
from snas_tf.ops import build_op
from snas_tf.search_space import NUM_CELL_INPUTS, SearchSpace


def budget_score(
    accuracy,
    params,
    madds,
    max_params=None,
    max_madds=None,
    latency_ms=None,
    max_latency_ms=None,
):
    """The objective of one trial (see the module docstring); the latency
    (predicted from a latency table, `snas_tf.latency.cost`) is one more
    metric with its budget.

    Returns:
        `(score, within_budget)`.
    """
    pairs = ((params, max_params), (madds, max_madds))
    pairs += ((latency_ms, max_latency_ms),)
    ratios = [value / budget for value, budget in pairs if budget is not None]
    overshoot = max(ratios) - 1.0
    if overshoot <= 0:
        return float(accuracy), True
    return -overshoot, False


def measure(genotype, retrain: RetrainConfig, num_classes: int):
    """(parameters without auxiliary head, multiply-adds per image) of the
    genotype's child network at the size of `retrain`."""
    model = build_child_network(
        genotype, auxiliary=False, **retrain.child_kwargs(num_classes)
    )
    return count_parameters(model), multiply_adds(model)


def _op_costs(primitives, channels):
    """{(op, stride): (params, madds)} of every op but `none`, measured on
    its own with the same 8x8 output for both strides."""
    costs = {}
    for op_name in primitives:
        for stride in (1, 2) if op_name != "none" else ():
            x = keras.Input((8 * stride, 8 * stride, channels))
            op = build_op(
                op_name, channels, stride, True, f"probe_{op_name}_{stride}"
            )
            model = keras.Model(x, op(x))
            costs[op_name, stride] = (
                count_parameters(model),
                multiply_adds(model),
            )
    return costs


def _cheapest_edges(j, count, input_stride, cheapest, exclude=()):
    """The `count` cheapest edges into node j (all of them for None) as
    (op, source) pairs; `cheapest(stride)` gives (cost, op)."""
    edges = []
    for source in range(NUM_CELL_INPUTS + j):
        if source in exclude:
            continue
        # docs/method.md §1: edges leaving a reduction cell's inputs have
        # stride 2.
        stride = input_stride if source < NUM_CELL_INPUTS else 1
        cost, op = cheapest(stride)
        edges.append((cost, source, op))
    kept = sorted(edges)[:count] if count else edges
    return sorted((op, source) for _, source, op in kept)


def _cheapest_cells(space: SearchSpace, rule: str, costs, k: int) -> dict:
    """The candidate cheapest cells for metric k (0 params, 1 madds).

    Which inputs a cell reads decides which earlier cells the child keeps
    at all: an unread cell output leaves the functional graph with its whole
    branch. So each cell type gets one candidate per way of reading its
    inputs. edge_all may drop any edge: reading input 1 only costs its
    preprocess alone (every node empty: zeros of c_{k-1}); reading input 0
    only needs one edge into every node (an empty node reads input 1);
    reading both costs more than input 1 only. Without `none` edge_all keeps
    every edge; top2 always reads both inputs (node 0 has only those two).

    Returns:
        {"normal": [nodes, ...], "reduce": [nodes, ...]}.
    """
    ops = [p for p in space.primitives if p != "none"]

    def cheapest(stride):
        # Metric k first, then the other metric, then primitive order.
        return min(
            ((costs[o, stride][k], costs[o, stride][1 - k], i), o)
            for i, o in enumerate(ops)
        )

    n = space.num_nodes
    cells = {}
    for cell, stride in (("normal", 1), ("reduce", 2)):
        empty = [[] for _ in range(n)]
        if not ops:
            cells[cell] = [empty]
        elif rule == "top2":
            cells[cell] = [
                [_cheapest_edges(j, 2, stride, cheapest) for j in range(n)]
            ]
        elif "none" not in space.primitives:
            cells[cell] = [
                [_cheapest_edges(j, None, stride, cheapest) for j in range(n)]
            ]
        else:
            only0 = [
                _cheapest_edges(j, 1, stride, cheapest, exclude=(1,))
                for j in range(n)
            ]
            cells[cell] = [empty, only0]
    return cells


def smallest_network(
    space: SearchSpace, rule: str, retrain: RetrainConfig, num_classes: int
) -> dict:
    """The smallest child networks the derivation rule can produce.

    The candidates of `_cheapest_cells`, with the cheapest op of each stride
    ranked at each channel count of the network, are built at the size of
    `retrain` and measured. With the SNAS primitives the cheapest ops
    (identity; a pool and its BatchNorm) win at every channel count, so the
    figures are exact minima; with an op set whose ranking changes with the
    channel count they are the best of those candidates.

    Returns:
        {"params": int, "params_genotype": str, "madds": int,
        "madds_genotype": str}: the fewest parameters and the fewest
        multiply-adds, each with a genotype that has them.

    Raises:
        ValueError: for an unknown rule or a bad retraining size.
    """
    if rule not in RULES:
        raise ValueError(
            f"Unknown search.derivation_rule {rule!r}. Expected one of {RULES}."
        )
    child = retrain.child
    specs = cell_specs(child.network, child.channels, child.num_layers)
    measured = {}
    for channels in sorted({spec.channels for spec in specs}):
        costs = _op_costs(space.primitives, channels)
        for k in (0, 1):
            cells = _cheapest_cells(space, rule, costs, k)
            for normal in cells["normal"]:
                for reduce in cells["reduce"]:
                    genotype = Genotype(normal=normal, reduce=reduce)
                    key = genotype.to_string()
                    if key not in measured:
                        measured[key] = measure(genotype, retrain, num_classes)
    by_params = min(measured.items(), key=lambda item: item[1])
    by_madds = min(measured.items(), key=lambda item: item[1][::-1])
    return {
        "params": by_params[1][0],
        "params_genotype": by_params[0],
        "madds": by_madds[1][1],
        "madds_genotype": by_madds[0],
    }


def check_budget(max_params, max_madds, smallest, retrain) -> None:
    """Raises if a budget is below the smallest derivable network."""
    child = retrain.child
    where = f"{child.num_layers} cells, {child.channels} channels"
    size = retrain.data.image_size
    if max_params is not None and max_params < smallest["params"]:
        raise ValueError(
            f"--max-params {max_params} is below the smallest derivable "
            f"network ({smallest['params']:,} parameters at {where})."
        )
    if max_madds is not None and max_madds < smallest["madds"]:
        raise ValueError(
            f"--max-madds {max_madds} is below the smallest derivable "
            f"network ({smallest['madds']:,} multiply-adds per {size}x{size} "
            f"image at {where})."
        )
